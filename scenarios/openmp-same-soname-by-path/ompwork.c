/* An extension whose function runs an OpenMP parallel region. Compiled with gcc -fopenmp
 * (calls GOMP_parallel from libgomp.so.1); build.py points it at a vendored OpenMP runtime. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <omp.h>

static PyObject *parallel_sum(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    double total = 0.0;
    int threads = 0;
#pragma omp parallel reduction(+ : total)
    {
#pragma omp single
        threads = omp_get_num_threads();
#pragma omp for
        for (long i = 0; i < n; i++) total += (double)i;
    }
    return Py_BuildValue("(di)", total, threads);
}

static PyObject *max_threads(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(omp_get_max_threads());
}

static PyMethodDef methods[] = {
    {"parallel_sum", parallel_sum, METH_O, "Sum 0..n-1 in an OpenMP parallel region."},
    {"max_threads", max_threads, METH_NOARGS, "omp_get_max_threads() of the bound runtime."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
