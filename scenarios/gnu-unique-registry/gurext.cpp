// An extension carrying zreg (compiled in, default visibility) and "generated code" that
// registers its files when the object is loaded (a static initializer, as protobuf's generated
// AddDescriptors does): its own ZOO_NAME/model.proto and zoo/common.proto, a file both packages
// bundle (as two wheels each shipping the same generated .proto module would).
// ZOO_GUR_SKIP_COMMON=1 in the environment skips the shared file (to show the merged registry).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstdlib>

#include "zreg.h"

namespace {
struct AddDescriptors {
    AddDescriptors() {
        zreg::InternalAddGeneratedFile(ZOO_NAME "/model.proto");
        const char *skip = std::getenv("ZOO_GUR_SKIP_COMMON");
        if (!(skip && skip[0] == '1')) zreg::InternalAddGeneratedFile("zoo/common.proto");
    }
} add_descriptors;
}  // namespace

static PyObject *registered(PyObject *, PyObject *) {
    std::vector<std::string> names = zreg::GeneratedDatabase::Names();
    PyObject *list = PyList_New(0);
    if (list == nullptr) return nullptr;
    for (const std::string &name : names) {
        PyObject *item = PyUnicode_FromString(name.c_str());
        if (item == nullptr || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(list);
            return nullptr;
        }
        Py_DECREF(item);
    }
    return list;
}

static PyMethodDef methods[] = {
    {"registered", registered, METH_NOARGS, "Files in the zreg registry this module sees."},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, nullptr, -1, methods};

extern "C" PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
