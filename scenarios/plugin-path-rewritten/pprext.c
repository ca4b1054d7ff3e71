/* An extension that renders through its package's libzplug, loading the "codec" plugin from
 * its bundled plugins directory (passed by __init__.py) unless ZPLUG_PLUGIN_PATH names another.
 * Built with -DZPPR_SET_PATH, its PyInit points ZPLUG_PLUGIN_PATH at the package's own plugins
 * with the C library's setenv (os.environ does not see it), as packages bundling a toolkit do. */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <dlfcn.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>

int zplug_run(const char *name, const char *bundled);
int zplug_library_abi(void);

static PyObject *render(PyObject *self, PyObject *arg) {
    const char *bundled = PyUnicode_AsUTF8(arg);
    if (bundled == NULL) return NULL;
    return PyLong_FromLong(zplug_run("codec", bundled));
}

static PyObject *library_abi(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(zplug_library_abi());
}

static PyMethodDef methods[] = {
    {"_render", render, METH_O, "Run the codec plugin (bundled directory as argument)."},
    {"library_abi", library_abi, METH_NOARGS, "The ABI of the libzplug this module calls."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, NULL, -1, methods};

PyMODINIT_FUNC ZOO_INIT(void) {
#ifdef ZPPR_SET_PATH
    Dl_info info;
    if (dladdr((void *)render, &info) && info.dli_fname) {
        char here[4096], plugins[4200];
        snprintf(here, sizeof here, "%s", info.dli_fname);
        snprintf(plugins, sizeof plugins, "%s/plugins", dirname(here));
        setenv("ZPLUG_PLUGIN_PATH", plugins, 1);
    }
#endif
    return PyModule_Create(&module);
}
