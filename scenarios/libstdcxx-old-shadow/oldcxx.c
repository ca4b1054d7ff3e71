/* The extension of the package that vendors an old libstdc++.so.6 (build.py adds the
 * DT_NEEDED entry and the $ORIGIN RUNPATH that make the loader pick the vendored copy). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *answer(PyObject *self, PyObject *unused) { return PyLong_FromLong(42); }

static PyMethodDef methods[] = {
    {"answer", answer, METH_NOARGS, "Return 42."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
