/* An extension compiled against one version of libzimg's header (ZIMG_CALLER_VERSION): decode()
 * creates a decoder, passing that version, and raises OSError with the library's message when
 * the libzimg its calls bind to is another build (as Pillow turns libjpeg's error into OSError). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

int zimg_create(int caller_version, char *error, size_t size);
long zimg_decode(long n);
int zimg_library_version(void);

static PyObject *decode(PyObject *self, PyObject *unused) {
    char error[200];
    if (zimg_create(ZIMG_CALLER_VERSION, error, sizeof error) != 0) {
        PyErr_SetString(PyExc_OSError, error);
        return NULL;
    }
    return PyLong_FromLong(zimg_decode(10));
}

static PyObject *library_version(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(zimg_library_version());
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_NOARGS, "Create a decoder and decode (10 * library version)."},
    {"library_version", library_version, METH_NOARGS, "The version of the bound libzimg."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
