"""A runtime that refuses to run in a forked child (real C builds, real child interpreters):
its fork handler prints why and raises SIGTERM, as GNU-OpenMP-based thread layers do. The
words become a failure marker; the diagnosis names the fork rule (``openmp-fork-hang`` when
the words say OpenMP, else ``fork-unsafe-threads``) and the library whose data holds them,
never the C++ exports or bindings that happen to be mapped. A step that forks after a pool
started and hangs is replayed with the fork probe, which names the pool's threads and its
own thread variable."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from cbuild import compile_shared
from test_rules import SYSTEM_LIBGOMP

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.signature import failure_markers, failure_signature
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.vocabulary import FORKED_CHILD

# A pool thread started on demand; a fork handler that refuses to run in the child. The
# message is one literal (the words the diagnosis looks for in the library's data).
GUARD = r"""
#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static void *idle(void *arg) { for (;;) pause(); return arg; }
static void refuse(void) {
    fputs("Terminating: fork() called from a process already using " WHAT ", this is unsafe.\n",
          stderr);
    raise(SIGTERM);
}
int guard_start(void) {
    pthread_t t;
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    pthread_atfork(0, 0, refuse);
    return pthread_create(&t, 0, idle, 0) == 0 ? n : -1;
}
"""
# A pool whose size comes from its own variable; the child's next use waits for workers
# fork did not copy.
POOL = r"""
#include <pthread.h>
#include <stdlib.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int started, workers, pending;
static void *pool_worker(void *arg) {
    pthread_mutex_lock(&lock);
    for (;;) {
        while (pending == 0) pthread_cond_wait(&work, &lock);
        pending--;
        pthread_cond_broadcast(&done);
    }
    return arg;
}
int pool_compute(void) {
    pthread_mutex_lock(&lock);
    if (!started) {
        const char *text = getenv("RCREF_NUM_THREADS");
        workers = text ? atoi(text) : 2;
        for (int i = 0; workers > 1 && i < workers; i++) {
            pthread_t t; pthread_create(&t, 0, pool_worker, 0);
        }
        started = 1;
    }
    if (workers > 1) {
        pending = workers;
        pthread_cond_broadcast(&work);
        while (pending > 0) pthread_cond_wait(&done, &lock);
    }
    pthread_mutex_unlock(&lock);
    return workers;
}
"""


def _build(source: str, name: str, *flags: str) -> Path:
    return compile_shared(source, name, flags=("-pthread", *flags))


@pytest.fixture(scope="module")
def guards() -> dict[str, Path]:
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    return {
        "openmp": _build(GUARD, "librcguard_omp.so", "-fopenmp", '-DWHAT="GNU OpenMP"'),
        "threads": _build(GUARD, "librcguard.so", "-fopenmp", '-DWHAT="the rcguard pool"'),
    }


def _forking_step(library: Path, start: str) -> str:
    """One step, as a package's workload: start the library's threads, fork, use it in the
    child, and check how the child ended."""
    return (
        f"import ctypes, os\nlib = ctypes.CDLL({str(library)!r})\nassert lib.{start}() > 0\n"
        "pid = os.fork()\nif pid == 0:\n    lib." + start + "()\n    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "assert status == 0, f'forked child ended with status {status}'"
    )


def test_refusal_words_are_a_marker() -> None:
    said = "Terminating: fork() called from a process already using GNU OpenMP, this is unsafe."
    assert failure_markers(said) == ("fork-refused:openmp",)
    assert failure_markers("this pool is not supported after fork()") == ("fork-refused:threads",)
    # a warning about what fork may do, and the probes' own texts, refuse nothing
    assert failure_markers("use of fork() may lead to deadlocks in the child") == ()
    assert failure_markers("the forked child did not finish running the steps again") == ()


@pytest.mark.parametrize(
    ("kind", "rule"), [("openmp", "openmp-fork-hang"), ("threads", "fork-unsafe-threads")]
)
def test_a_runtime_that_refuses_to_run_after_fork(
    guards: dict[str, Path], kind: str, rule: str
) -> None:
    library = guards[kind]
    spec = RunSpec(steps=(_forking_step(library, "guard_start"),), timeout=60)
    result = run_spec(spec)
    assert result.outcome == "failed" and "status 15" in result.message, result.message
    assert f"fork-refused:{kind}" in failure_signature(result)
    d = diagnose(spec, result)
    assert d.rule == rule, d.cause
    roles = {os.path.basename(lib.path): lib.role for lib in d.libraries}
    assert roles[library.name].startswith("refused to run in the forked child"), roles
    assert "this is unsafe" in d.cause
    if kind == "openmp":
        gomp = [n for n in roles if n.startswith("libgomp")]
        assert gomp and roles[gomp[0]] == "OpenMP runtime whose pool does not survive fork"
        assert any("OMP_NUM_THREADS" in e.change for e in d.experiments)
    else:
        assert "rcguard pool" in d.cause and not any(n.startswith("libgomp") for n in roles)


def test_a_step_that_forks_after_the_pool_started_is_read_or_replayed_with_the_probe() -> None:
    """The hung run's forked child is read before the run is killed (where it waits, the
    parent's threads); a run without that record (the forked child gone) is replayed with
    the fork probe. Both give the same verdict and advice."""
    library = _build(POOL, "librcrefpool.so")
    steps = (
        "import ctypes, os",
        f"lib = ctypes.CDLL({str(library)!r})",
        "assert lib.pool_compute() > 0",
        "pid = os.fork()\nif pid == 0:\n    lib.pool_compute()\n    os._exit(0)",
        "os.waitpid(pid, 0)",
    )
    spec = RunSpec(steps=steps, timeout=8)
    result = run_spec(spec)
    assert result.outcome == "hung"
    forked = [e for e in result.exercised if e["kind"] == FORKED_CHILD]
    assert forked and forked[0]["path"] == str(library)
    unread = dataclasses.replace(result, exercised=(), threads_at_fork=())
    for run in (result, unread):
        d = diagnose(spec, run)
        assert d.rule == "fork-unsafe-threads", d.cause
        assert [os.path.basename(lib.path) for lib in d.libraries] == [library.name]
        assert "2 x " in d.cause and f"pool_worker in {library.name}" in d.cause
        avoided = [e.change for e in d.avoided_by]
        assert "set RCREF_NUM_THREADS=1 in the environment" in avoided, d.experiments
