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
    # the sandbox's own ctypes (used to read the C environ) is mapped, but not as a step's
    assert any("_ctypes" in os.path.basename(p) for p in result.mapped)
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


# ---------------------------------------------------------------- which changes count


@pytest.mark.parametrize(
    ("name", "after", "read"),
    [
        ("QT_PLUGIN_PATH", "/x/plugins", True),
        ("LD_LIBRARY_PATH", None, True),
        ("GDAL_DATA_DIR", "/x", True),
        ("MYLIB_HOME", "/x", True),
        ("OMP_NUM_THREADS", "1", True),
        ("KMP_AFFINITY", "compact", False),
        ("FEATURE_FLAG", "1", False),
        ("FEATURE_FLAG", None, False),
    ],
)
def test_read_by_libraries_by_name(name: str, after: str | None, read: bool) -> None:
    from pytest_runtimeconflict.static.rules.environment import read_by_libraries

    assert read_by_libraries(name, after) is read


def test_read_by_libraries_by_a_value_inside_a_distribution(tmp_path: Path) -> None:
    from pytest_runtimeconflict.static.rules.environment import read_by_libraries

    inside, outside = tmp_path / "pkg" / "fonts", tmp_path / "elsewhere"

    def owner_of(path: str) -> str | None:
        return "pkg-dist" if path.startswith(str(tmp_path / "pkg")) else None

    assert read_by_libraries("FONTCONFIG_FILE", f"{outside}:{inside}", owner_of)
    assert not read_by_libraries("FONTCONFIG_FILE", str(outside), owner_of)
    assert not read_by_libraries("FONTCONFIG_FILE", "relative/pkg", owner_of)


def test_restore_statement_puts_both_views_back() -> None:
    from pytest_runtimeconflict.static.rules.environment import restore_statement

    code = "\n".join(
        [
            "import os",
            "os.environ['RC_A'] = 'new'",
            "os.putenv('RC_B', 'native')",  # C environ only, like setenv in a library
            restore_statement("RC_A", "old"),
            restore_statement("RC_B", None),
            "assert os.environ['RC_A'] == 'old'",
            "import ctypes; getenv = ctypes.CDLL(None).getenv",
            "getenv.restype = ctypes.c_char_p",
            "assert getenv(b'RC_A') == b'old' and getenv(b'RC_B') is None",
        ]
    )
    result = run_spec(_spec(code))
    assert result.outcome == "passed", result.message + result.stderr_tail


# ---------------------------------------------------------------- the restore experiment


def test_restoring_the_variable_names_the_environment_rule() -> None:
    from pytest_runtimeconflict.diagnosis import diagnose

    spec = _spec(
        "import os; os.environ['RC_TEST_PLUGIN_PATH'] = '/a/plugins'; os.environ['RC_FLAG'] = '1'",
        "x = 1",
        "import os; assert os.environ.get('RC_TEST_PLUGIN_PATH') != '/a/plugins', 'wrong plugins'",
    )
    result = run_spec(spec)
    assert result.outcome == "failed" and result.failed_step == 2
    d = diagnose(spec, result)
    assert d.rule == "environment-rewritten", d.cause
    assert "RC_TEST_PLUGIN_PATH" in d.cause and "'/a/plugins'" in d.cause and "unset" in d.cause
    assert d.user_advice.startswith("restore RC_TEST_PLUGIN_PATH right after")
    assert d.confidence == "high"
    restores = [e for e in d.experiments if e.change.startswith("restore ")]
    # RC_FLAG is no variable libraries read: no run is spent restoring it
    assert [e.avoided for e in restores] == [True]
    assert restores[0].change.startswith("restore RC_TEST_PLUGIN_PATH right after")
    assert d.key.startswith("environment-rewritten:")


def test_a_restore_that_does_not_avoid_it_leaves_the_verdict() -> None:
    from pytest_runtimeconflict.diagnosis import diagnose

    spec = _spec(
        "import os; os.environ['RC_TEST_DATA_DIR'] = '/a/data'",
        "import os; raise RuntimeError('broken ' + os.environ.get('RC_TEST_DATA_DIR', 'x'))",
    )
    result = run_spec(spec)
    assert result.outcome == "failed"
    d = diagnose(spec, result)
    assert d.rule != "environment-rewritten"
    tried = [e for e in d.experiments if "RC_TEST_DATA_DIR" in e.change]
    assert tried and not tried[0].avoided
    assert not d.user_advice.startswith("restore")
