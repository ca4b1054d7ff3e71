/* An extension calling its package's BLAS-like library through the public API only:
 * zblasa_ddot (ZBLAS_FLAVOR 'A') or zblasb_ddot64_ ('B'). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if ZBLAS_FLAVOR == 'A'
double zblasa_ddot(const int *n, const double *x, const int *incx, const double *y,
                   const int *incy);
const char *zblasa_get_corename(void);
#else
double zblasb_ddot64_(const long *n, const double *x, const long *incx, const double *y,
                      const long *incy);
const char *zblasb_get_corename64_(void);
#endif

/* ddot(n): x . y with x = y = (1, 2, ..., n), i.e. n(n+1)(2n+1)/6. */
static PyObject *ddot(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0 || n > 4096) return PyErr_Format(PyExc_ValueError, "n out of range: %ld", n);
    double x[4096];
    for (long i = 0; i < n; i++) x[i] = (double)(i + 1);
#if ZBLAS_FLAVOR == 'A'
    int count = (int)n, inc = 1;
    double result = zblasa_ddot(&count, x, &inc, x, &inc);
#else
    long inc = 1;
    double result = zblasb_ddot64_(&n, x, &inc, x, &inc);
#endif
    return PyFloat_FromDouble(result);
}

static PyObject *corename(PyObject *self, PyObject *unused) {
#if ZBLAS_FLAVOR == 'A'
    return PyUnicode_FromString(zblasa_get_corename());
#else
    return PyUnicode_FromString(zblasb_get_corename64_());
#endif
}

static PyMethodDef methods[] = {
    {"ddot", ddot, METH_O, "Dot product of (1..n) with itself through the vendored BLAS."},
    {"corename", corename, METH_NOARGS, "The vendored BLAS's core name."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
