/* An extension calling OpenBLAS's (prefixed) dgemm; built twice, once against the LP64
 * scipy-openblas32 library and once against the ILP64 scipy-openblas64 one. BLAS_INT, BLAS()
 * and BLAS_CONFIG are given on the command line. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

#define BLAS_CAT(a, b) a##b
#define BLAS_NAME(a, b) BLAS_CAT(a, b)

void BLAS(dgemm)(const char *ta, const char *tb, const BLAS_INT *m, const BLAS_INT *n,
                 const BLAS_INT *k, const double *alpha, const double *a, const BLAS_INT *lda,
                 const double *b, const BLAS_INT *ldb, const double *beta, double *c,
                 const BLAS_INT *ldc);
char *BLAS_CONFIG(void);

/* C = A @ B for n x n matrices of ones: every entry of C is n. Large enough that OpenBLAS
 * starts its thread server. */
static PyObject *matmul_ones(PyObject *self, PyObject *arg) {
    BLAS_INT n = (BLAS_INT)PyLong_AsLong(arg);
    if (n <= 0) return PyErr_Format(PyExc_ValueError, "n must be > 0");
    double *a = malloc(sizeof(double) * n * n), *c = malloc(sizeof(double) * n * n);
    if (!a || !c) { free(a); free(c); return PyErr_NoMemory(); }
    for (BLAS_INT i = 0; i < n * n; i++) { a[i] = 1.0; c[i] = 0.0; }
    double one = 1.0, zero = 0.0;
    BLAS(dgemm)("N", "N", &n, &n, &n, &one, a, &n, a, &n, &zero, c, &n);
    double corner = c[n * n - 1];
    free(a); free(c);
    return PyFloat_FromDouble(corner);
}

static PyObject *config(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(BLAS_CONFIG());
}

static PyMethodDef methods[] = {
    {"matmul_ones", matmul_ones, METH_O, "dgemm of two n x n matrices of ones; returns C[-1,-1]."},
    {"config", config, METH_NOARGS, "openblas_get_config() of the bound OpenBLAS."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
