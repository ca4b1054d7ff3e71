// One extension source, built twice: with -static-libstdc++ (exporting libstdc++'s symbols,
// among them the STB_GNU_UNIQUE std::locale facet ids) and against the shared libstdc++.so.6.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <regex>
#include <sstream>
#include <string>

// Character classes and icase make std::regex fetch the ctype/collate facets of the locale.
static PyObject *use_regex(PyObject *, PyObject *) {
    std::regex pattern("[a-z]+ \\w+ \\d", std::regex::ECMAScript | std::regex::icase);
    return PyBool_FromLong(std::regex_search(std::string("Hello World 42"), pattern));
}

// Stream formatting goes through the num_put facet; a broken facet table yields "".
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
