// A normal C++ extension built with g++ 12 against the system libstdc++. std::condition_variable
// ::wait(unique_lock&) is versioned GLIBCXX_3.4.30 in GCC 12's libstdc++, so the extension needs
// that version (check with: objdump -T _zoo_newcxx*.so | grep GLIBCXX_3.4.30).
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <condition_variable>
#include <mutex>
#include <thread>

static PyObject *handshake(PyObject *, PyObject *) {
    std::mutex mutex;
    std::condition_variable ready;
    bool done = false;
    std::thread worker([&] {
        std::lock_guard<std::mutex> lock(mutex);
        done = true;
        ready.notify_one();
    });
    {
        std::unique_lock<std::mutex> lock(mutex);
        while (!done) ready.wait(lock);
    }
    worker.join();
    return PyBool_FromLong(done);
}

static PyMethodDef methods[] = {
    {"handshake", handshake, METH_NOARGS, "Wait on a condition variable set by a thread."},
    {nullptr, nullptr, 0, nullptr},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, ZOO_NAME, nullptr, -1, methods};

extern "C" PyMODINIT_FUNC ZOO_INIT(void) { return PyModule_Create(&module); }
