"""Post-mortem of real native crashes: core notes, thread PCs, gdb, the loader's init log."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cbuild import compile_shared, extension_suffix, python_extension_flags

from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

# An extension whose crash() starts a helper thread (parked in nanosleep, i.e. in libc) and
# then writes through a NULL pointer in a function of its own.
CRASHER = r"""
#include <Python.h>
#include <pthread.h>
#include <time.h>

static void *rc_sleeper(void *arg) {
    struct timespec ts = {100, 0};
    (void)arg;
    for (;;) nanosleep(&ts, NULL);
    return NULL;
}

__attribute__((noinline)) void rc_crash_now(volatile int *where) { *where = 42; }

static PyObject *crash(PyObject *self, PyObject *args) {
    pthread_t t;
    struct timespec ts = {0, 50 * 1000 * 1000};
    pthread_create(&t, NULL, rc_sleeper, NULL);
    nanosleep(&ts, NULL);
    rc_crash_now((volatile int *)0);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"crash", crash, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "rc_crasher", NULL, -1, methods};
PyMODINIT_FUNC PyInit_rc_crasher(void) { return PyModule_Create(&mod); }
"""

# A library whose ELF constructor crashes: the loader was "calling init" on it.
BAD_INIT = r"""
__attribute__((noinline)) void rc_bad_init_body(volatile int *p) { *p = 1; }
__attribute__((constructor)) static void rc_bad_init(void) { rc_bad_init_body((volatile int *)0); }
"""


@pytest.fixture(scope="module")
def crasher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crasher")
    compile_shared(
        CRASHER,
        "rc_crasher" + extension_suffix(),
        flags=(*python_extension_flags(), "-pthread", "-g"),
        outdir=out,
    )
    return out


def _run_crasher(crasher_dir: Path, workdir: Path) -> RunResult:
    spec = RunSpec(
        steps=("json", "rc_crasher", "rc_crasher.crash()"),
        env=(("PYTHONPATH", str(crasher_dir)),),
        timeout=60,
    )
    return run_spec(spec, workdir=str(workdir))


def test_core_attributes_each_thread_and_is_removed(
    crasher_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    runs = tmp_path / "runs"
    runs.mkdir()
    result = _run_crasher(crasher_dir, runs)
    ext = str(crasher_dir / ("rc_crasher" + extension_suffix()))
    assert (result.outcome, result.signal, result.failed_step) == ("crashed", "SIGSEGV", 2)
    assert result.core_found, "no core file: is core_pattern a pipe here?"
    assert result.crash_library == ext
    assert result.threads[0]["library"] == ext
    assert result.threads[0]["symbol"] == "rc_crash_now"
    assert len(result.threads) >= 2
    assert any(t["library"] and "libc.so" in t["library"] for t in result.threads[1:])
    assert ext in result.step_libraries[1]
    assert result.gdb_backtrace is None
    assert os.listdir(runs) == [] and os.listdir(cwd) == []  # run dir, core: all gone


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_gdb_backtrace_of_every_thread(crasher_dir: Path, tmp_path: Path) -> None:
    result = _run_crasher(crasher_dir, tmp_path)
    assert result.gdb_backtrace is not None
    assert "rc_crash_now" in result.gdb_backtrace
    assert "rc_sleeper" in result.gdb_backtrace
    assert result.gdb_backtrace.count("Thread ") >= 2
    assert os.listdir(tmp_path) == []


def test_crash_in_a_library_initialiser_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    lib = compile_shared(BAD_INIT, "librcbadinit.so", outdir=tmp_path / "lib")
    result = run_spec(
        RunSpec(steps=("json", f"import ctypes; ctypes.CDLL({str(lib)!r})"), timeout=60)
    )
    assert (result.outcome, result.signal, result.failed_step) == ("crashed", "SIGSEGV", 1)
    assert result.init_library == str(lib)
    assert result.crash_library == str(lib)
    assert result.threads[0]["symbol"] == "rc_bad_init_body"
    assert str(lib) in result.step_libraries[1]


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_init_library_confirmed_by_gdb(tmp_path: Path) -> None:
    lib = compile_shared(BAD_INIT, "librcbadinit.so", outdir=tmp_path / "lib")
    result = run_spec(RunSpec(steps=(f"import ctypes; ctypes.CDLL({str(lib)!r})",)))
    assert result.gdb_backtrace and "_dl_init" in result.gdb_backtrace
    assert result.init_library == str(lib)


def test_no_init_library_when_the_crash_is_elsewhere(
    crasher_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    result = _run_crasher(crasher_dir, tmp_path)
    assert result.outcome == "crashed"
    assert result.init_library is None
