"""Environment changes as run evidence: the child records, per step, which variables the step
set, changed or removed, in Python's ``os.environ`` and in the C-level ``environ`` that native
code writes with ``setenv`` (real child runs, a real C extension)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cbuild import compile_shared, extension_suffix, python_extension_flags

from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.model.run import EnvChange
from pytest_runtimeconflict.sandbox.runner import run_spec

# Sets a variable in its PyInit (as a package pointing a library at its bundled plugins does)
# and offers setenv/unsetenv to later steps; os.environ never hears of either.
_EXT = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>

static PyObject *set(PyObject *self, PyObject *args) {
    const char *name, *value;
    if (!PyArg_ParseTuple(args, "ss", &name, &value)) return NULL;
    setenv(name, value, 1);
    Py_RETURN_NONE;
}

static PyObject *unset(PyObject *self, PyObject *arg) {
    const char *name = PyUnicode_AsUTF8(arg);
    if (name == NULL) return NULL;
    unsetenv(name);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"set", set, METH_VARARGS, "setenv(name, value, 1)"},
    {"unset", unset, METH_O, "unsetenv(name)"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "envset", NULL, -1, methods};

PyMODINIT_FUNC PyInit_envset(void) {
    setenv("RC_TEST_PLUGIN_PATH", "/opt/bundled/plugins", 1);
    return PyModule_Create(&def);
}
"""


@pytest.fixture(scope="module")
def envset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("envset")
    compile_shared(_EXT, "envset" + extension_suffix(), flags=python_extension_flags(), outdir=root)
    return root


def _spec(*steps: str, **kw: object) -> RunSpec:
    return RunSpec(steps=tuple(steps), python=sys.executable, **kw)  # type: ignore[arg-type]


def _env(root: Path, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"PYTHONPATH": str(root), **extra}.items()))


def test_setenv_in_native_code_is_recorded_per_step(envset_dir: Path) -> None:
    spec = _spec(
        "envset",
        "x = 1",
        "envset.set('RC_TEST_THREADS', '3')",
        "envset.unset('RC_TEST_REMOVED')",
        env=_env(envset_dir, RC_TEST_REMOVED="gone", RC_TEST_THREADS="1"),
    )
    result = run_spec(spec)
    assert result.outcome == "passed", result.message
    assert result.env_changes == (
        EnvChange(0, "RC_TEST_PLUGIN_PATH", None, "/opt/bundled/plugins", "c"),
        EnvChange(2, "RC_TEST_THREADS", "1", "3", "c"),
        EnvChange(3, "RC_TEST_REMOVED", "gone", None, "c"),
    )
    data = json.loads(json.dumps(result.to_json()))
    assert data["env_changes"][0] == {
        "step": 0,
        "name": "RC_TEST_PLUGIN_PATH",
        "before": None,
        "after": "/opt/bundled/plugins",
        "view": "c",
    }
    # the sandbox's own ctypes (used to read the C environ) is not reported as the step's
    assert not any("_ctypes" in os.path.basename(p) for s in result.step_libraries for p in s)


def test_os_environ_changes_are_recorded_without_ctypes() -> None:
    spec = _spec(
        "os",
        "os.environ['RC_TEST_DATA_DIR'] = '/srv/data'",
        "os.environ['RC_TEST_DATA_DIR'] = '/srv/other'",
        "del os.environ['RC_TEST_DATA_DIR']",
        "import sys; assert 'ctypes' not in sys.modules",
    )
    result = run_spec(spec)
    assert result.outcome == "passed", result.message
    assert result.env_changes == (
        EnvChange(1, "RC_TEST_DATA_DIR", None, "/srv/data", "both"),
        EnvChange(2, "RC_TEST_DATA_DIR", "/srv/data", "/srv/other", "both"),
        EnvChange(3, "RC_TEST_DATA_DIR", "/srv/other", None, "both"),
    )


def test_changes_before_a_crash_survive_it(envset_dir: Path) -> None:
    spec = _spec(
        "envset",
        "import os; os.environ['RC_TEST_LIBRARY_PATH'] = '/x'",
        "import os; os.kill(os.getpid(), 11)",
        env=_env(envset_dir),
    )
    result = run_spec(spec)
    assert result.outcome == "crashed" and result.failed_step == 2
    assert [(c.step, c.name, c.view) for c in result.env_changes] == [
        (0, "RC_TEST_PLUGIN_PATH", "c"),
        (1, "RC_TEST_LIBRARY_PATH", "both"),
    ]


def test_os_putenv_shows_in_the_c_view_only(envset_dir: Path) -> None:
    spec = _spec("envset", "import os; os.putenv('RC_TEST_HOME', '/h')", env=_env(envset_dir))
    result = run_spec(spec)
    assert result.outcome == "passed", result.message
    assert EnvChange(1, "RC_TEST_HOME", None, "/h", "c") in result.env_changes
