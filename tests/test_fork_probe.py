"""The fork-after-workload probe on real C builds and real child interpreters: a library whose
own pthread pool (started by its first computation, workers waiting on a condition) does not
survive fork hangs the forked child's second computation; a library that joins its threads
before returning passes. The parent's threads at fork are named, the verdict comes from the
forked child's stack, and the advice is checked with the real workload (the spawn start method
avoids it; OMP_NUM_THREADS=1, tried because the library maps libgomp, does not)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from cbuild import compile_shared, extension_suffix, python_extension_flags
from test_repro_kinds import check_reproducer
from test_rules import SYSTEM_LIBGOMP

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.signature import failure_signature
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.model.plan import PlanContext, RuntimeLibrary
from pytest_runtimeconflict.planning.targets import fork_items
from pytest_runtimeconflict.sandbox.forked import gdb_budget, workload_deadline
from pytest_runtimeconflict.sandbox.runner import run_spec

# A worker pool of its own, sized by the OpenMP runtime's default team (the library maps
# libgomp, but runs no parallel region): the first computation starts it; its workers wait
# on a condition for tasks. A forked child inherits "started" but no worker, so its next
# computation waits for results nobody computes.
POOL = r"""
#define _GNU_SOURCE
#include <Python.h>
#include <pthread.h>
#include <omp.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int started = 0, pending = 0, finished = 0;
static void *pool_worker(void *arg) {
    pthread_setname_np(pthread_self(), "rcpool-worker");
    pthread_mutex_lock(&lock);
    for (;;) {
        while (pending == 0) pthread_cond_wait(&work, &lock);
        pending--; finished++;
        pthread_cond_broadcast(&done);
    }
    return arg;
}
static PyObject *compute(PyObject *self, PyObject *args) {
    int n = omp_get_max_threads() > 2 ? 2 : omp_get_max_threads();
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&lock);
    if (!started) {
        for (int i = 0; i < n; i++) { pthread_t t; pthread_create(&t, 0, pool_worker, 0); }
        started = 1;
    }
    finished = 0; pending = 4;
    pthread_cond_broadcast(&work);
    while (finished < 4) pthread_cond_wait(&done, &lock);
    pthread_mutex_unlock(&lock);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(finished);
}
static PyMethodDef methods[] = {{"compute", compute, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", "", -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""
# Each computation starts its threads and joins them: nothing outlives the call.
CALM = r"""
#include <Python.h>
#include <pthread.h>
static void *add(void *arg) { *(long *)arg += 1; return arg; }
static PyObject *compute(PyObject *self, PyObject *args) {
    long values[2] = {0, 0}; pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], 0, add, &values[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], 0);
    return PyLong_FromLong(values[0] + values[1]);
}
static PyMethodDef methods[] = {{"compute", compute, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", "", -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""
# A library whose fork handler starts an idle thread in the child (as OpenBLAS restarts its
# thread server): the forked child then has two threads, and only the one that forked shows
# where the steps wait.
IDLE_AFTER_FORK = r"""
#include <pthread.h>
#include <unistd.h>
static void *idle_loop(void *arg) { for (;;) pause(); return arg; }
static void restart(void) { pthread_t t; pthread_create(&t, 0, idle_loop, 0); }
__attribute__((constructor)) static void setup(void) { pthread_atfork(0, 0, restart); }
"""
PROBE = "fork-after-workload"


def build_pool(outdir: Path, name: str = "rcpool") -> Path:
    """The pool extension ``name`` under ``outdir`` (linked with -fopenmp: it maps libgomp)."""
    source = POOL % {"name": name}
    flags = (*python_extension_flags(), "-fopenmp", "-pthread")
    return compile_shared(source, name + extension_suffix(), flags=flags, outdir=outdir)


def build_calm(outdir: Path, name: str = "rccalm") -> Path:
    flags = (*python_extension_flags(), "-pthread")
    return compile_shared(
        CALM % {"name": name}, name + extension_suffix(), flags=flags, outdir=outdir
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    where = tmp_path_factory.mktemp("forkprobe")
    build_pool(where)
    build_calm(where)
    return where


def spec_of(built: Path, module: str, *probes: str) -> RunSpec:
    workload = f"# workload {module}:user\n{module}.compute()"
    return RunSpec(
        steps=(module, workload),
        probes=probes or (PROBE,),
        env=(("PYTHONPATH", str(built)),),
        timeout=90,
    )


def test_a_pool_that_does_not_survive_fork_hangs_the_forked_child(built: Path) -> None:
    result = run_spec(spec_of(built, "rcpool"))
    ext = str(built / ("rcpool" + extension_suffix()))
    assert (result.outcome, result.phase) == ("hung", "exercise")
    assert result.message.startswith(f"{PROBE} probe: the forked child did not finish")
    assert "rcpool-worker" in result.message
    probe = result.exercised[0]
    assert (probe["kind"], probe["status"], probe["path"]) == (PROBE, "hung", ext)
    assert any(frame.startswith("compute in ") for frame in probe["frames"])
    workers = [t for t in result.threads_at_fork if t["comm"] == "rcpool-worker"]
    assert len(workers) == 2
    assert {(t["start_routine"], t["library"]) for t in workers} == {("pool_worker", ext)}
    assert result.to_json()["threads_at_fork"][0]["tid"] > 0
    # a probe's hang is not the same failure as a run that times out
    assert failure_signature(result) == ("hung", "fork-child:did-not-finish")


def test_the_forked_childs_own_thread_names_where_it_waits(built: Path) -> None:
    idle = compile_shared(IDLE_AFTER_FORK, "librcidle.so", flags=("-pthread",))
    base = spec_of(built, "rcpool")
    spec = dataclasses.replace(
        base, steps=(f"import ctypes; ctypes.CDLL({str(idle)!r})", *base.steps)
    )
    result = run_spec(spec)
    assert result.outcome == "hung"
    probe = result.exercised[0]
    assert probe["path"] == str(built / ("rcpool" + extension_suffix()))
    assert not any("idle_loop" in frame for frame in probe["frames"])


def test_the_reproducer_forks_after_the_steps(tmp_path: Path, built: Path) -> None:
    """Written from the run's entry, verified by the tool and run as a user would: it runs
    the steps, forks, runs them again in the forked child and reports its hang."""
    data = check_reproducer(tmp_path, spec_of(built, "rcpool"), "hang")
    assert [PROBE, str(built / ("rcpool" + extension_suffix()))] in data["probes"]


def test_without_gdb_the_hang_is_still_named(built: Path) -> None:
    """No stack and no start routines (gdb unavailable or out of time): the run still hangs
    in the probe, with the threads' names."""
    base = spec_of(built, "rcpool")
    spec = dataclasses.replace(base, env=(*base.env, ("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")))
    result = run_spec(spec)
    assert (result.outcome, result.phase) == ("hung", "exercise")
    assert "it waits in" not in result.message and "rcpool-worker" in result.message
    assert result.exercised[0]["path"] == ""
    assert all(t["library"] is None for t in result.threads_at_fork)


def test_gdb_gets_what_the_run_timeout_leaves() -> None:
    assert workload_deadline(6.0, 1.0) == 8.0 and workload_deadline(6.0, 40.0) == 30.0
    assert gdb_budget(60.0, 10.0, 26.0) == 60.0 - 10.0 - 26.0 - 8.0
    assert gdb_budget(30.0, 10.0, 26.0) == 0.0


def test_a_library_that_joins_its_threads_passes(built: Path) -> None:
    result = run_spec(spec_of(built, "rccalm"))
    assert result.outcome == "passed", result.message
    assert [(e["kind"], e["status"]) for e in result.exercised][:1] == [(PROBE, "ok")]
    assert [t["comm"] for t in result.threads_at_fork] != []
    assert all("rcpool" not in t["comm"] for t in result.threads_at_fork)


def test_without_the_probe_the_pool_passes(built: Path) -> None:
    result = run_spec(spec_of(built, "rcpool", "spawn-after-workload"))
    assert result.outcome == "passed", result.message
    assert ("spawn-after-workload", "ok") in [(e["kind"], e["status"]) for e in result.exercised]
    assert result.threads_at_fork == ()


def test_a_crash_in_the_forked_child_fails_the_run(tmp_path: Path) -> None:
    mark = "import os; os.environ.setdefault('RC_FIRST_PID', str(os.getpid()))"
    crash = (
        "import os, signal\n"
        "if os.environ['RC_FIRST_PID'] != str(os.getpid()):\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)"
    )
    result = run_spec(RunSpec(steps=(mark, crash), probes=(PROBE,), timeout=60))
    assert (result.outcome, result.phase) == ("failed", "exercise")
    assert "the forked child killed by SIGSEGV" in result.message
    assert failure_signature(result) == ("failed", "?", "fork-child:killed-by-SIGSEGV")


@pytest.mark.slow
def test_the_verdict_names_the_threads_and_spawn_is_verified(built: Path) -> None:
    """Both fork probes of a planned fork item; the failure is the library's pool, not
    OpenMP's: OMP_NUM_THREADS=1 (libgomp is mapped) is tried with the real workload and does
    not avoid it; the spawn start method does."""
    spec = spec_of(built, "rcpool", PROBE, "fork-after-parallel")
    result = run_spec(spec)
    assert result.outcome == "hung"
    assert [e["kind"] for e in result.exercised if e["kind"].startswith("fork")] == [PROBE]
    diagnosis = diagnose(spec, result)
    assert diagnosis.rule == "fork-unsafe-threads"
    assert "rcpool started threads of its own (2 x rcpool-worker (pool_worker in" in diagnosis.cause
    assert diagnosis.minimal_steps == spec.steps  # the workload is what the fork needs
    tried = {e.change: e for e in diagnosis.experiments}
    omp = tried["set OMP_NUM_THREADS=1 in the environment"]
    assert (omp.outcome, omp.avoided) == ("hung", False)
    spawn = next(e for e in diagnosis.experiments if e.kind == "start_method")
    assert (spawn.outcome, spawn.avoided) == ("passed", True)
    assert "get_context('spawn')" in diagnosis.user_advice
    assert "found to avoid it" in diagnosis.user_advice
    assert "OMP_NUM_THREADS" not in diagnosis.user_advice


@pytest.mark.slow
def test_a_forked_child_waiting_in_openmp_keeps_the_openmp_rule() -> None:
    """The workload runs a real libgomp parallel region: the forked child waits in libgomp
    (its stack says so), so the verdict is openmp-fork-hang, and OMP_NUM_THREADS=1 is
    verified with that same workload."""
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    region = (
        f"import ctypes; g = ctypes.CDLL({SYSTEM_LIBGOMP!r}); "
        "g.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, "
        "ctypes.c_uint]; g.GOMP_parallel(ctypes.cast(ctypes.CDLL(None).free, "
        "ctypes.c_void_p), None, 0, 0)"
    )
    spec = RunSpec(steps=(region,), probes=(PROBE,), timeout=60)
    result = run_spec(spec)
    assert result.outcome == "hung"
    assert "libgomp" in result.exercised[0]["path"]
    diagnosis = diagnose(spec, result)
    assert diagnosis.rule == "openmp-fork-hang"
    avoided = {e.change for e in diagnosis.experiments if e.avoided}
    assert "set OMP_NUM_THREADS=1 in the environment" in avoided


def _context(modules: list[str], **kwargs: object) -> PlanContext:
    return PlanContext(modules=tuple(modules), scanned=True, **kwargs)  # type: ignore[arg-type]


def test_one_fork_item_per_module_with_a_workload_or_openmp() -> None:
    libs = (RuntimeLibrary("/a/libgomp.so", "openmp", "libgomp", ("a",), "a"),)
    context = _context(
        ["a", "b", "c", "d"], runtimes=libs, openmp_maps=(("d", ("/x/libgomp.so",)),)
    )
    items = fork_items(context, ["b", "a", "z"])
    assert [(i.name, i.probes, i.runs[0].order) for i in items] == [
        ("fork:a", (PROBE, "fork-after-parallel"), ("a",)),
        ("fork:b", (PROBE,), ("b",)),
        ("fork:d", ("fork-after-parallel",), ("d",)),
    ]
