"""A step that forks by itself and waits for a forked child that hangs: the run times out in
the parent's ``waitpid``, whose stack says nothing. Before the run is killed, the processes
its child forked are read with gdb (where they wait) and so are the child's threads (the
pools running when it forked): real C builds, real child interpreters."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from cbuild import extension_suffix
from test_fork_probe import build_pool
from test_rules import SYSTEM_LIBGOMP

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.hung import _SYSCALLS, TREE_STALL, tree_mark
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.vocabulary import FORKED_CHILD

FORK_AND_WAIT = (
    "{work}\npid = os.fork()\nif pid == 0:\n    {work}\n    os._exit(0)\n"
    "assert os.waitpid(pid, 0)[1] == 0"
)
REGION = (
    f"g = ctypes.CDLL({SYSTEM_LIBGOMP!r}); "
    "g.GOMP_parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, "
    "ctypes.c_uint]; g.GOMP_parallel(ctypes.cast(ctypes.CDLL(None).free, ctypes.c_void_p), "
    "None, 0, 0)"
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    where = tmp_path_factory.mktemp("forkinstep")
    build_pool(where, "rcstep")
    return where


def _no_process_left(marker: str) -> None:
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        assert marker not in " ".join(proc.info["cmdline"] or ()), proc


def test_a_forked_pool_that_hangs_is_read_before_the_run_is_killed(pool: Path) -> None:
    step = "# workload rcstep:user\nimport os\n" + FORK_AND_WAIT.format(work="rcstep.compute()")
    spec = RunSpec(
        steps=("rcstep", step), env=(("PYTHONPATH", str(pool)),), timeout=8, exercise=False
    )
    result = run_spec(spec)
    ext = str(pool / ("rcstep" + extension_suffix()))
    assert (result.outcome, result.failed_step) == ("hung", 1)
    record = next(e for e in result.exercised if e["kind"] == FORKED_CHILD)
    assert (record["status"], record["path"]) == ("hung", ext)
    assert any(frame.startswith("compute in ") for frame in record["frames"])
    workers = [t for t in result.threads_at_fork if t["comm"] == "rcpool-worker"]
    assert {(t["start_routine"], t["library"]) for t in workers} == {("pool_worker", ext)}
    diagnosis = diagnose(spec, result, search=False, experiments=False)
    assert diagnosis.rule == "fork-unsafe-threads"
    assert ext in [lib.path for lib in diagnosis.libraries]
    assert "rcpool-worker" in diagnosis.cause
    _no_process_left(str(pool))


def test_a_forked_child_waiting_in_openmp_gets_the_openmp_rule() -> None:
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    step = "import ctypes, os\n" + FORK_AND_WAIT.format(work=REGION)
    spec = RunSpec(steps=(step,), timeout=8, exercise=False)
    result = run_spec(spec)
    assert result.outcome == "hung"
    record = next(e for e in result.exercised if e["kind"] == FORKED_CHILD)
    assert os.path.basename(record["path"]).startswith("libgomp")
    diagnosis = diagnose(spec, result, search=False)
    assert diagnosis.rule == "openmp-fork-hang"
    assert any("libgomp" in lib.path for lib in diagnosis.libraries)
    avoided = {e.change for e in diagnosis.experiments if e.avoided}
    assert "set OMP_NUM_THREADS=1 in the environment" in avoided


def test_a_run_that_hangs_without_forking_has_no_forked_record() -> None:
    result = run_spec(RunSpec(steps=("import time; time.sleep(30)",), timeout=2, exercise=False))
    assert result.outcome == "hung"
    assert not [e for e in result.exercised if e["kind"] == FORKED_CHILD]


def test_a_run_deadlocked_on_a_fork_stops_before_its_timeout() -> None:
    """The forked child waits on a futex nobody will release, its parent waits for it: no
    thread of the two can run again, so the run is stopped after TREE_STALL seconds, long
    before its timeout, and says why."""
    step = (
        "import os, threading\nlock = threading.Lock(); lock.acquire()\npid = os.fork()\n"
        "if pid == 0:\n    lock.acquire()\n    os._exit(0)\nos.waitpid(pid, 0)"
    )
    began = time.monotonic()
    result = run_spec(RunSpec(steps=(step,), timeout=120, exercise=False))
    assert result.outcome == "hung"
    assert time.monotonic() - began < 60
    assert result.message.startswith(f"stopped after {TREE_STALL:g} s without progress")
    assert next(e for e in result.exercised if e["kind"] == FORKED_CHILD)["status"] == "hung"


def _start(code: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", code])
    time.sleep(1.0)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(psutil.Error):
        for kid in psutil.Process(proc.pid).children(recursive=True):
            kid.kill()
    proc.kill()
    proc.wait()


def test_only_a_tree_blocked_on_futexes_and_waits_counts_as_deadlocked() -> None:
    """A forked child blocked on a lock while its parent waits: deadlocked. A forked child
    that sleeps, or a process blocked on a lock without any forked child: not."""
    if platform.machine() not in _SYSCALLS:
        pytest.skip("system call numbers unknown here")
    numbers = _SYSCALLS[platform.machine()]
    fork_then = (
        "import os, threading, time\nlock = threading.Lock(); lock.acquire()\n"
        "pid = os.fork()\nif pid == 0:\n    {}\n    os._exit(0)\nos.waitpid(pid, 0)"
    )
    cases = (
        (fork_then.format("lock.acquire()"), True),
        (fork_then.format("time.sleep(60)"), False),
        ("import threading\nlock = threading.Lock(); lock.acquire(); lock.acquire()", False),
    )
    for code, deadlocked in cases:
        proc = _start(code)
        try:
            assert (tree_mark(proc.pid, *numbers) is not None) is deadlocked, code
        finally:
            _stop(proc)
