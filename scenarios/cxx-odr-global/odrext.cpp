// An extension using its own copy of zoolib. Calls go through the PLT (the symbols are
// exported and interposable), so an earlier RTLD_GLOBAL copy of zoolib wins.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace zoolib {
int version();
int scale(int value);
}  // namespace zoolib

static PyObject *zoolib_version(PyObject *, PyObject *) {
    return PyLong_FromLong(zoolib::version());
}

static PyObject *scaled(PyObject *, PyObject *arg) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) return nullptr;
    return PyLong_FromLong(zoolib::scale(static_cast<int>(value)));
}

static PyMethodDef methods[] = {
    {"zoolib_version", zoolib_version, METH_NOARGS, "The zoolib version this module calls."},
    {"scaled", scaled, METH_O, "zoolib::scale(value)."},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, nullptr, -1, methods};

extern "C" PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
