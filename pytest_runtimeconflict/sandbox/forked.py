"""Helpers of the child's ``fork-after-workload`` probe (see ``child.py``): the process's
threads, a forked child waited for with a deadline, and gdb's view of a process that hangs.

Loaded by ``child.py`` by path, in the *target* interpreter: standard library only, Python 3.8
syntax, never imports the plugin.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

GDB_TIMEOUT = 30.0  # seconds gdb may take to attach and walk the stacks
GDB_MIN = 3.0  # below this much time left for it, gdb is not started
# seconds a forked child may sit without CPU time and without a runnable thread (beyond what
# the steps waited in the parent) before it counts as hung
STALL_MIN = 2.0
# glibc's own objects: a thread waiting in a futex there says nothing about whose lock it is.
LIBC_NAMES = re.compile(r"^(libc|libpthread|libdl|ld-linux[-\w]*|librt|libm)[.-]")
_FRAME = re.compile(
    r"^#\d+\s+(?:0x[0-9a-fA-F]+ in )?(?P<func>\S+?) \(.*?\)(?: from (?P<lib>/\S+))?"
)
_THREAD = re.compile(r"^Thread \d+ .*?\(LWP (?P<tid>\d+)\)")
# The thread-creation frames below a thread's start routine.
_START_FRAMES = ("start_thread", "clone", "clone3", "__clone", "__clone3")
PR_SET_PTRACER, PR_SET_PTRACER_ANY = 0x59616D61, -1


def threads_now() -> list:
    """``[{"tid": 12, "comm": "worker"}, ...]`` for every thread of this process now."""
    out = []  # type: list
    try:
        tids = sorted(os.listdir("/proc/self/task"), key=int)
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as fh:
                comm = fh.read().strip()
        except OSError:
            continue  # the thread ended meanwhile
        out.append({"tid": int(tid), "comm": comm})
    return out


def allow_tracing(ctypes: Any) -> None:
    """Let any process of this user attach (Yama ``ptrace_scope`` 1 allows only ancestors):
    the gdb that reads a hanging forked child is its sibling."""
    if ctypes is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0)


def wait_for(pid: int, deadline: float, stall: float = 0.0) -> int | None:
    """The wait status of the child ``pid``, or None when it has not ended within
    ``deadline`` seconds, or (``stall`` > 0) when it made no progress for ``stall`` seconds in
    a row: its CPU time unchanged and none of its threads runnable or in an uninterruptible
    wait (:func:`progress_mark`). The child is left running."""
    now = time.monotonic()
    end, mark, since = now + deadline, progress_mark(pid), now
    while now < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
        now = time.monotonic()
        if stall > 0:
            seen = progress_mark(pid)
            if seen is None or seen != mark:
                mark, since = seen, now
            elif now - since >= stall:
                return None
    return None


def progress_mark(pid: int) -> tuple | None:
    """``(cpu ticks,)`` of the process ``pid`` (all threads), or None while one of its
    threads is running, runnable or in an uninterruptible wait (state R or D) or it cannot be
    read: two equal marks over a span mean no progress in between."""
    ticks = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        seen = task_stat(f"/proc/{pid}/task/{tid}")
        if seen is None or seen[0] in ("R", "D"):
            return None
        ticks += seen[1]
    return (ticks,)


def task_stat(task: str) -> tuple | None:
    """``(state, cpu ticks)`` of the thread whose ``/proc`` directory is ``task``, or None
    when it cannot be read (it ended)."""
    try:
        with open(f"{task}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def stall_window(elapsed: float, cpu: float) -> float:
    """How long a forked child re-running the steps may sit without progress before it counts
    as hung: ``STALL_MIN`` plus twice the time the steps spent blocked in the parent (their
    wall time ``elapsed`` less their CPU time ``cpu``), so a step that waits (I/O, sleep, a
    subprocess) waits as long again in the forked child."""
    return STALL_MIN + 2 * max(0.0, elapsed - cpu)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def status_text(status: int) -> str:
    """``killed by SIGSEGV`` / ``exited with status 3``."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}"


def gdb_stacks(pid: int, timeout: float = GDB_TIMEOUT) -> str:
    """gdb's ``thread apply all bt`` of the live process ``pid`` (attached, then detached);
    empty without gdb or when it cannot attach. The text goes through a file, not a pipe:
    when ``pid`` is this process, its threads are stopped while gdb writes."""
    return gdb_stacks_of([pid], timeout)[0]


def gdb_stacks_of(pids: list, timeout: float = GDB_TIMEOUT) -> list:
    """:func:`gdb_stacks` of each of ``pids``, one gdb per process side by side (reading a
    large library's symbols takes seconds; two processes take that time once)."""
    gdb = shutil.which("gdb")
    if gdb is None or os.environ.get("PYTEST_RUNTIMECONFLICT_NO_GDB") or timeout < GDB_MIN:
        return ["" for _ in pids]
    env = dict(os.environ)
    env.pop("DEBUGINFOD_URLS", None)  # never download symbols from a probe
    cmd = [gdb, "-batch", "-nx", "-ex", "set pagination off", "-ex", "thread apply all bt"]
    with contextlib.ExitStack() as stack:
        outs, procs = [], []  # type: list, list
        for pid in pids:
            out = stack.enter_context(tempfile.TemporaryFile("w+", errors="replace"))
            outs.append(out)
            try:
                procs.append(
                    subprocess.Popen(
                        [*cmd, "-p", str(pid)],
                        stdout=out,
                        stderr=subprocess.DEVNULL,
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                )
            except OSError:
                procs.append(None)
        end = time.monotonic() + timeout
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        texts = []
        for out in outs:
            out.seek(0)
            texts.append(out.read())
        return texts


def thread_frames(text: str) -> dict:
    """``{tid: [(function, library or None), ...]}`` (innermost frame first) from gdb's text."""
    threads = {}  # type: dict
    current = None  # type: list | None
    for line in text.splitlines():
        head = _THREAD.match(line)
        if head:
            current = threads.setdefault(int(head.group("tid")), [])
            continue
        frame = _FRAME.match(line)
        if frame and current is not None:
            lib = frame.group("lib")
            current.append((frame.group("func"), os.path.realpath(lib) if lib else None))
    return threads


def waiting_library(frames: list) -> str | None:
    """The innermost library outside glibc on a stack: whose code the thread waits in."""
    for _func, lib in frames:
        if lib and not LIBC_NAMES.match(os.path.basename(lib)):
            return lib
    return None


def start_routine(frames: list) -> tuple:
    """(function, library) of the frame just inside the thread-creation frames: the routine
    the thread was started with; (None, None) for the main thread or an unreadable stack."""
    for index, (func, _lib) in enumerate(frames):
        if func in _START_FRAMES and index > 0:
            return frames[index - 1]
    return (None, None)


def with_start_routines(threads: list, text: str) -> list:
    """``threads`` (from :func:`threads_now`) with each one's start routine and its library,
    where gdb's stacks show them."""
    stacks = thread_frames(text)
    out = []
    for thread in threads:
        func, lib = start_routine(stacks.get(thread["tid"], []))
        out.append(dict(thread, start_routine=func, library=lib))
    return out


def frame_lines(frames: list, limit: int = 12) -> list:
    """``["pool_wait in /x/libpool.so", ...]``: the first ``limit`` frames, for the report."""
    return [f"{func} in {lib}" if lib else func for func, lib in frames[:limit]]


FORK_WORKLOAD, SPAWN_WORKLOAD = "fork-after-workload", "spawn-after-workload"
DEADLINE_CAP = 30.0
RUN_MARGIN = 8.0  # seconds of the run's timeout kept for what follows the probe


def workload_deadline(base: float, elapsed: float) -> float:
    """How long a re-run of the steps may take: ``base`` plus twice what the steps took in
    the parent (imports included), at most ``DEADLINE_CAP``."""
    return min(base + 2 * elapsed, DEADLINE_CAP)


def gdb_budget(timeout: float | None, elapsed: float, deadline: float) -> float:
    """The seconds left for gdb after a hang (the forked child's stack, then the parent's
    threads), so that the run ends before its own timeout: what the run's ``timeout`` leaves
    after ``elapsed`` and the probe's ``deadline``, with a margin for the probes after it."""
    if not timeout:
        return 2 * GDB_TIMEOUT
    return max(0.0, timeout - elapsed - deadline - RUN_MARGIN)


def _in_forked_child(spec: dict, report_fd: int, rerun: Callable, describe: Callable) -> None:
    """The forked child of the fork-after-workload probe: the steps again, then ``_exit``
    (0 when they returned; 3 with the exception's text on ``report_fd`` when one raised)."""
    code = 3
    try:
        allow_tracing(sys.modules.get("ctypes"))
        try:
            import resource

            hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # no core beside the run's own
        except (ImportError, ValueError, OSError):
            pass
        rerun(spec["steps"], tuple(spec.get("global_imports", ())))
        code = 0
    except BaseException as exc:
        os.write(report_fd, describe(exc)["message"][:2000].encode("utf-8", "replace"))
    finally:
        os._exit(code)


def fork_probe(
    spec: dict, write: Callable, deadline: float, rerun: Callable, describe: Callable
) -> bool:
    """Fork after the run's steps and run them again in the forked child (``rerun``), as a
    pool of fork-started workers does. The parent's threads at fork time are recorded
    (event ``fork``); a forked child that has not finished within ``deadline`` is read with
    gdb (which library it waits in) and killed; on any failure the parent's threads get their
    start routines (gdb). Status ``hung``, ``crashed`` or ``failed`` fails the run; returns
    whether the forked child finished."""
    import ctypes

    allow_tracing(ctypes)  # the gdb that reads this process is its own descendant
    threads = threads_now()
    write(event="fork", probe=FORK_WORKLOAD, threads=threads)
    write(event="exercise", path="", kind=FORK_WORKLOAD, status="begin")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _in_forked_child(spec, write_end, rerun, describe)
    os.close(write_end)
    began = time.monotonic()
    status = wait_for(pid, deadline, stall=spec.get("stall", 0.0))
    ended = time.monotonic()
    at_fork = f"{len(threads)} thread(s) in the parent at fork: " + ", ".join(
        t["comm"] for t in threads
    )
    end = {"event": "exercise", "path": "", "kind": FORK_WORKLOAD}  # type: dict
    if status == 0:
        os.close(read_end)
        write(status="ok", detail=f"the steps ran again in a forked child ({at_fork})", **end)
        return True
    parent = ""  # this process's stacks, read beside the hung child's
    if status is None:
        hang, parent = _hang(pid, ended - began, at_fork, spec.get("gdb_budget", GDB_TIMEOUT))
        end.update(hang)
    else:
        raised = os.read(read_end, 4000).decode("utf-8", "replace")
        end["status"] = "crashed" if os.WIFSIGNALED(status) else "failed"
        end["detail"] = (
            f"{FORK_WORKLOAD} probe: the forked child {status_text(status)} running the steps "
            f"again{': ' + raised if raised else ''}; {at_fork}"
        )
    os.close(read_end)
    left = spec.get("gdb_budget", GDB_TIMEOUT) - (time.monotonic() - ended)
    parent = parent or gdb_stacks(os.getpid(), min(left, GDB_TIMEOUT))
    described = with_start_routines(threads, parent)
    write(event="fork", probe=FORK_WORKLOAD, threads=described)
    write(**end)
    return False


def _hang(pid: int, waited: float, at_fork: str, budget: float) -> tuple:
    """The end event's fields for the hung forked child ``pid`` (its stack from gdb; it is
    killed) and this process's stacks, read side by side. The child's stack is its main
    thread's (the one that forked and ran the steps again): a library's fork handler may have
    started new threads in the child, idle ones."""
    texts = gdb_stacks_of([pid, os.getpid()], min(GDB_TIMEOUT, 0.6 * budget))
    stacks = thread_frames(texts[0])
    frames = stacks.get(pid) or next(iter(stacks.values()), [])  # type: list
    kill(pid)
    waiting = waiting_library(frames)
    inside = f" (it waits in {waiting})" if waiting else ""
    fields = {
        "status": "hung",
        "path": waiting or "",
        "frames": frame_lines(frames),
        "detail": (
            f"{FORK_WORKLOAD} probe: the forked child did not finish running the steps again "
            f"(no progress after {waited:.1f} s){inside}; {at_fork}; the child was killed"
        ),
    }
    return fields, texts[1]


def spawn_probe(spec: dict, write: Callable, deadline: float, target: Callable) -> None:
    """The counter-experiment of the fork probe: the run's steps again in a process of
    ``multiprocessing.get_context("spawn")`` (a fresh interpreter, not a fork) running
    ``target`` (a function of the child script, so that the spawned process finds it)."""
    import multiprocessing

    write(event="exercise", path="", kind=SPAWN_WORKLOAD, status="begin")
    keep = ("steps", "global_imports", "preload", "preload_mode")
    proc = multiprocessing.get_context("spawn").Process(
        target=target, args=({k: spec.get(k) for k in keep},)
    )
    proc.start()
    proc.join(deadline)
    end = {"event": "exercise", "path": "", "kind": SPAWN_WORKLOAD}  # type: dict
    if proc.is_alive():
        proc.kill()
        proc.join()
        detail = f"the spawned process did not finish within {deadline:.1f} s (killed)"
        write(status="hung", detail=f"{SPAWN_WORKLOAD} probe: {detail}", **end)
    elif proc.exitcode != 0:
        detail = f"the spawned process ended with exit code {proc.exitcode}"
        write(status="failed", detail=f"{SPAWN_WORKLOAD} probe: {detail}", **end)
    else:
        write(status="ok", detail="the steps ran again in a spawned process", **end)
