// An extension built on zcore: at import it creates a 2x3 tensor of ones with zcore's
// constructor (a call through the PLT to the exported _ZN5zcore6TensorC1ERKNS_5ShapeE). The
// Shape argument is built here, inline, in the layout of the zcore version this extension was
// compiled against.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "zcore.h"

static const std::int64_t dims[] = {2, 3};
static zcore::Tensor *ones;

static PyObject *zcore_version(PyObject *, PyObject *) {
    return PyLong_FromLong(zcore::Tensor::version());
}

static PyObject *ones_sum(PyObject *, PyObject *) { return PyFloat_FromDouble(ones->sum()); }

static PyMethodDef methods[] = {
    {"zcore_version", zcore_version, METH_NOARGS, "The zcore version this module calls."},
    {"ones_sum", ones_sum, METH_NOARGS, "Sum of the 2x3 tensor of ones made at import (6.0)."},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, nullptr, -1, methods};

extern "C" PyMODINIT_FUNC ZOO_INIT(void) {
    zcore::Shape shape{};
    shape.dims = dims;
    shape.ndim = 2;
    ones = new zcore::Tensor(shape);
    return PyModule_Create(&module);
}
