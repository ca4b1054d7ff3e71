/* An extension computing through its package's vendored libzpool (its own pthread pool). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

double zpool_sum(long n);
int zpool_threads(void);

static PyObject *compute(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    double total;
    Py_BEGIN_ALLOW_THREADS
    total = zpool_sum(n);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(total);
}

static PyObject *threads(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(zpool_threads());
}

static PyMethodDef methods[] = {
    {"compute", compute, METH_O, "Sum 0..n-1 on libzpool's worker threads."},
    {"threads", threads, METH_NOARGS, "libzpool's worker count (0 before the first compute)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
