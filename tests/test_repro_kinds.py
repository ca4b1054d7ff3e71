"""One verified reproducer of each kind, from real C builds and real child interpreters: the
conflict needs an RTLD_GLOBAL import, a ctypes preload, LD_PRELOAD, an environment setting, a
workload step, or the fork probe; each is written from the run's report entry, checked by the
tool (``reproduces: true``) and reproduces again when a user runs it in a clean environment.

The conflict: ``rcx_init`` / ``rcx_call`` call their own ``rcx_value`` (2) through the PLT; a
copy that comes first in the global scope (``rcx_provider`` imported with RTLD_GLOBAL, or
``librcx_value.so`` preloaded) serves 1 instead, and they abort."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cbuild import compile_shared, extension_suffix, python_extension_flags

from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.report.jsonreport import report_json
from pytest_runtimeconflict.report.repro_verify import write_verified
from pytest_runtimeconflict.sandbox.runner import run_spec

CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
VALUE = "__attribute__((noinline)) int rcx_value(void) { return %d; }\n"
MODULE = """
#include <Python.h>
#include <stdlib.h>
%(value)s
static int rcx_check(void) {
    const char *env = getenv("RCX_ABORT");
    if (rcx_value() != 2 || (env && env[0] == '1')) abort();
    return 0;
}
static PyObject *check(PyObject *self, PyObject *args) { rcx_check(); Py_RETURN_NONE; }
static PyMethodDef methods[] = {{"check", check, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", "", -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { %(at_import)s return PyModule_Create(&def); }
"""
# A parallel-region entry point whose pool keeps a lock held by its own thread: a forked
# child, where that thread does not exist, waits for the lock forever.
FAKE_OMP = r"""
#include <pthread.h>
#include <unistd.h>
static pthread_mutex_t pool = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t ready = PTHREAD_MUTEX_INITIALIZER;
static pid_t started_in = 0;
static void *keeper(void *arg) {
    pthread_mutex_lock(&pool);
    pthread_mutex_unlock(&ready);
    for (;;) pause();
    return arg;
}
void GOMP_parallel(void (*fn)(void *), void *data, unsigned n, unsigned flags) {
    if (started_in == 0) {
        pthread_t thread;
        pthread_mutex_lock(&ready);
        pthread_create(&thread, 0, keeper, 0);
        pthread_mutex_lock(&ready);  /* the keeper holds the pool's lock now */
        started_in = getpid();
    } else if (getpid() != started_in) {
        pthread_mutex_lock(&pool);  /* rejoin the pool after fork: its holder is gone */
        pthread_mutex_unlock(&pool);
    }
    fn(data);
}
"""


def _module(name: str, value: int, at_import: bool, outdir: Path) -> None:
    source = MODULE % {
        "value": VALUE % value,
        "name": name,
        "at_import": "rcx_check();" if at_import else "",
    }
    compile_shared(source, name + extension_suffix(), flags=python_extension_flags(), outdir=outdir)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rcx")
    _module("rcx_provider", 1, False, root)
    _module("rcx_init", 2, True, root)
    _module("rcx_call", 2, False, root)
    compile_shared(VALUE % 1, "librcx_value.so", outdir=root)
    compile_shared(FAKE_OMP, "librcx_omp.so", flags=("-pthread",), outdir=root)
    return root


def entry_of(spec: RunSpec) -> dict[str, Any]:
    """The report entry of one real child run of ``spec``."""
    return dict(report_json([(run_spec(spec), None)])["scenarios"][0])


def script_spec(script: Path) -> dict[str, Any]:
    """The script's data literal, read without running it."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SPEC":
            return dict(json.loads(ast.literal_eval(node.value.args[0])))  # type: ignore[attr-defined]
    raise AssertionError("no SPEC in the script")


def as_user(script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=script.parent,
        env=dict(CLEAN_ENV, **env), timeout=120,
    )  # fmt: skip


def check_reproducer(tmp_path: Path, spec: RunSpec, observed: str) -> dict[str, Any]:
    """Run ``spec`` (it must fail), write and verify its reproducer, run it as a user would
    (a clean environment, with OMP_NUM_THREADS=1 that the script must drop); the script's
    data."""
    entry = entry_of(spec)
    assert entry["outcome"] != "passed", entry["message"]
    script = tmp_path / "repro.py"
    written = write_verified(script, entry, "--repro", sys.executable)
    assert written.verification.observed == observed
    assert written.verification.reproduces and entry["reproduces"] is True
    assert entry["reproduce_observed"] == observed
    header = script.read_text().splitlines()[7]
    assert header.startswith(f"# Verified: reproduced {observed} in ")
    done = as_user(script, OMP_NUM_THREADS="1")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[-1] == f"[repro] reproduced: {observed}"
    return script_spec(script)


def base_spec(built: Path, steps: tuple[str, ...], **changes: Any) -> RunSpec:
    env = (("PYTHONPATH", str(built)),) + tuple(changes.pop("env", ()))
    return RunSpec(steps=steps, env=env, python=sys.executable, timeout=60, **changes)


def test_global_import(tmp_path: Path, built: Path) -> None:
    spec = base_spec(built, ("rcx_provider", "rcx_init"), global_imports=("rcx_provider",))
    data = check_reproducer(tmp_path, spec, "SIGABRT")
    assert [s["global"] for s in data["steps"]] == [True, False]
    # The load mode is what matters: imported plainly, the same order passes.
    plain = run_spec(RunSpec(steps=spec.steps, env=spec.env, python=sys.executable))
    assert plain.outcome == "passed"


def test_ctypes_preload(tmp_path: Path, built: Path) -> None:
    spec = base_spec(built, ("rcx_init",), preload=(str(built / "librcx_value.so"),))
    data = check_reproducer(tmp_path, spec, "SIGABRT")
    assert data["preload"] == [str(built / "librcx_value.so")]
    assert data["preload_mode"] == "global"


def test_ld_preload(tmp_path: Path, built: Path) -> None:
    spec = base_spec(built, ("rcx_init",), ld_preload=(str(built / "librcx_value.so"),))
    data = check_reproducer(tmp_path, spec, "SIGABRT")
    assert data["environment"]["LD_PRELOAD"] == str(built / "librcx_value.so")


def test_environment_setting(tmp_path: Path, built: Path) -> None:
    spec = base_spec(built, ("rcx_call", "rcx_call.check()"), env=(("RCX_ABORT", "1"),))
    data = check_reproducer(tmp_path, spec, "SIGABRT")
    assert data["environment"]["RCX_ABORT"] == "1"


def test_workload_step(tmp_path: Path, built: Path) -> None:
    spec = base_spec(
        built, ("rcx_provider", "rcx_call", "rcx_call.check()"), global_imports=("rcx_provider",)
    )
    data = check_reproducer(tmp_path, spec, "SIGABRT")
    assert data["steps"][2] == {
        "code": "rcx_call.check()", "module": None, "global": False, "shown": "rcx_call.check()",
    }  # fmt: skip
    assert data["expected"]["failed_step"] == 2


def test_fork_probe(tmp_path: Path, built: Path) -> None:
    """The fork probe forks after the workload's parallel region and reports the hang of the
    forked child (it never falls through to another runtime's probe)."""
    lib = str(built / "librcx_omp.so")
    workload = (
        f"import ctypes; omp = ctypes.CDLL({lib!r}); "
        "omp.GOMP_parallel(ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p), None, 2, 0)"
    )
    spec = base_spec(built, (workload,), probes=("fork-after-parallel",))
    data = check_reproducer(tmp_path, spec, "hang")
    assert ["fork", lib] in data["probes"]
    done = as_user(tmp_path / "repro.py")
    assert f"[repro] calling into the fork runtime {lib}" in done.stderr
    assert "[repro] hang: the forked child's parallel region did not finish" in done.stderr
    # judged by its lack of progress (1.5 s), not by the 6 s deadline
    waited = re.search(r"no progress after ([\d.]+) s; killed", done.stderr)
    assert waited is not None and float(waited.group(1)) < 6.0, done.stderr
    assert "cblas_dgemm" not in done.stderr


def test_a_script_that_does_not_reproduce_is_recorded(tmp_path: Path, built: Path) -> None:
    """The run crashed under LD_PRELOAD; the entry, edited to lose it, makes a script that
    passes: the check says so (``reproduces: false``, observed ``passed``), as does the
    script's exit status 0."""
    spec = base_spec(built, ("rcx_init",), ld_preload=(str(built / "librcx_value.so"),))
    entry = entry_of(spec)
    assert entry["signal"] == "SIGABRT"
    entry["ld_preload"] = []
    script = tmp_path / "repro.py"
    written = write_verified(script, entry, "--repro", sys.executable)
    assert (written.verification.reproduces, written.verification.observed) == (False, "passed")
    assert (entry["reproduces"], entry["reproduce_observed"]) == (False, "passed")
    assert "# Verified: not reproduced (observed passed) in " in script.read_text()
    done = as_user(script)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[repro] not reproduced: passed"
