// One C++ extension source, built twice: zoo_sxd_system links the system libstdc++.so.6,
// zoo_sxd_vendored links a renamed copy of it (libstdc++-<sha8>.so.6, auditwheel-style).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <regex>
#include <sstream>
#include <string>

// A bracket character class with icase makes std::regex fetch the ctype and collate facets
// of the global locale through std::use_facet.
static PyObject *use_regex(PyObject *, PyObject *) {
    std::regex pattern("[[:alpha:]]+[0-9]", std::regex::icase);
    return PyBool_FromLong(std::regex_search(std::string("Hello World42"), pattern));
}

// Stream formatting goes through the num_put facet.
static PyObject *format_long(PyObject *, PyObject *arg) {
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred()) return nullptr;
    std::ostringstream out;
    out << value;
    return PyUnicode_FromString(out.str().c_str());
}

static PyMethodDef methods[] = {
    {"use_regex", use_regex, METH_NOARGS, "Compile and search a std::regex."},
    {"format_long", format_long, METH_O, "Format an integer with std::ostringstream."},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, nullptr, -1, methods};

extern "C" PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
