/* An extension that uses its package's vendored libzhelper (DT_NEEDED libzhelper-<sha8>.so,
 * found through a $ORIGIN RUNPATH). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int zhelper_version(void);
double zhelper_value(int index);

static PyObject *helper_version(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(zhelper_version());
}

static PyObject *value(PyObject *self, PyObject *arg) {
    long index = PyLong_AsLong(arg);
    if (index == -1 && PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(zhelper_value((int)index));
}

static PyMethodDef methods[] = {
    {"helper_version", helper_version, METH_NOARGS, "The libzhelper version this module calls."},
    {"value", value, METH_O, "Entry `index` of libzhelper's default table (filled at load)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
