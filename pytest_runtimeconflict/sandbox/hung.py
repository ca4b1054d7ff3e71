"""A run that timed out, read before it is killed: the processes its child forked and where
they wait.

A step that forks by itself (``os.fork()``, a fork-started pool) and then waits for a forked
child that hangs leaves the run's own process in ``waitpid``: its stack says nothing about the
hang. The forked child's does: gdb reads the stacks of the child's live descendants (their
main thread: the one that forked and went on), and of the child itself for its threads'
start routines (the pools that were running when it forked). The records have the shape of
the ``fork-after-workload`` probe's (``kind`` :data:`FORKED_CHILD`), so the diagnosis reads
both the same way. :class:`TreeWatch` stops a run deadlocked on a fork (its child and every
process it forked blocked with nothing left to wake them) before ``--rc-timeout``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field

import psutil

from pytest_runtimeconflict.sandbox import forked
from pytest_runtimeconflict.sandbox.postmortem import is_elf
from pytest_runtimeconflict.vocabulary import FORKED_CHILD, JsonObject

MAX_EXAMINED = 2  # forked processes read with gdb (the oldest first)
BUDGET = 30.0  # seconds gdb may take for one timed-out run (its processes read side by side)
# Seconds a run's child and the processes it forked may all sit blocked (see TreeWatch)
# before the run counts as hung, ahead of --rc-timeout.
TREE_STALL = 12.0
# System call numbers (``/proc/PID/task/TID/syscall``): futex, and the waits for a child.
_SYSCALLS = {
    "x86_64": ({202}, {61, 247}),
    "aarch64": ({98}, {260, 95}),
}


@dataclass
class Hung:
    """What a timed-out run's processes showed before they were killed."""

    records: list[JsonObject] = field(default_factory=list)  # one per forked process read
    threads: list[JsonObject] = field(default_factory=list)  # the child's, when it forked
    mapped: list[str] = field(default_factory=list)  # ELF objects the child had mapped


def examine(child_pid: int | None) -> Hung:
    """The ELF objects the run's child ``child_pid`` has mapped (those of the step that hangs
    included: its progress line never got written), one ``hung`` record per live descendant
    (its stack's innermost library outside glibc as ``path``, its first frames) and, when it
    has descendants, the child's own threads (tid, comm, start routine and library)."""
    if child_pid is None:
        return Hung()
    try:
        process = psutil.Process(child_pid)
        out = Hung(mapped=_mapped(process))
        descendants = [p for p in process.children(recursive=True) if p.name() != "gdb"]
    except psutil.Error:
        return Hung()
    if not descendants:
        return out
    descendants.sort(key=lambda p: _created(p))
    examined = [p.pid for p in descendants[:MAX_EXAMINED]]
    texts = forked.gdb_stacks_of([*examined, child_pid], BUDGET)  # side by side
    out.records = [_record(pid, text) for pid, text in zip(examined, texts)]
    out.threads = _threads(process, texts[-1])
    return out


def _mapped(process: psutil.Process) -> list[str]:
    paths = dict.fromkeys(m.path for m in process.memory_maps(grouped=True))
    return [os.path.realpath(p) for p in paths if os.path.isabs(p) and is_elf(p)]


def _created(process: psutil.Process) -> float:
    with contextlib.suppress(psutil.Error):
        return float(process.create_time())
    return 0.0


def _record(pid: int, text: str) -> JsonObject:
    """The ``forked-child`` record of the process ``pid`` from gdb's ``text`` of it."""
    stacks = forked.thread_frames(text)
    frames: list = stacks.get(pid) or next(iter(stacks.values()), [])
    waiting = forked.waiting_library(frames)
    inside = f" (it waits in {waiting})" if waiting else ""
    return {
        "kind": FORKED_CHILD,
        "status": "hung",
        "path": waiting or "",
        "frames": forked.frame_lines(frames),
        "detail": (
            f"a process the steps forked (pid {pid}) had not finished when the run timed "
            f"out{inside}; it was killed"
        ),
    }


def _threads(process: psutil.Process, text: str) -> list[JsonObject]:
    """The child's threads now (after the fork: those a pool started before it are there),
    with their start routines from gdb's ``text`` of it."""
    threads = []
    for tid in sorted(t.id for t in _safe_threads(process)):
        try:
            with open(f"/proc/{process.pid}/task/{tid}/comm", encoding="utf-8") as fh:
                threads.append({"tid": tid, "comm": fh.read().strip()})
        except OSError:
            continue
    return forked.with_start_routines(threads, text)


def _safe_threads(process: psutil.Process) -> list:
    with contextlib.suppress(psutil.Error):
        return list(process.threads())
    return []


def child_pid(run_dir: str, name: str) -> int | None:
    """The pid the intermediate wrote to ``name`` in ``run_dir``, or None."""
    with contextlib.suppress(OSError, ValueError), open(os.path.join(run_dir, name)) as fh:
        return int(fh.read())
    return None


class TreeWatch:
    """Whether a run is deadlocked on a fork: its child has forked processes, none of the
    tree's threads has used CPU time, run, been runnable or in an uninterruptible wait for
    ``window`` seconds, every thread of the forked processes waits on a futex (a lock or a
    condition) and the child's threads wait on a futex or for a child process. Nothing in the
    tree can then wake them: a sleep, a poll, a read from a pipe or a socket, or any running
    thread keeps the run going until ``--rc-timeout``. Off on machines whose system call
    numbers it does not know."""

    def __init__(self, run_dir: str, pid_file: str, window: float = TREE_STALL) -> None:
        self.run_dir, self.pid_file, self.window = run_dir, pid_file, window
        self.pid: int | None = None
        self.mark: tuple | None = None
        self.since = time.monotonic()
        self.numbers = _SYSCALLS.get(platform.machine())
        self.fired = False  # stalled() said so

    def stalled(self) -> bool:
        """True once the tree has been deadlocked for ``window`` seconds."""
        if self.numbers is None:
            return False
        if self.pid is None:
            self.pid = child_pid(self.run_dir, self.pid_file)
        mark = tree_mark(self.pid, *self.numbers) if self.pid is not None else None
        now = time.monotonic()
        if mark is None or mark != self.mark:
            self.mark, self.since = mark, now
            return False
        self.fired = now - self.since >= self.window
        return self.fired


def tree_mark(pid: int, futex: set[int], waits: set[int]) -> tuple | None:
    """``(cpu ticks, pids)`` of ``pid`` and its descendants when all of them are blocked as
    :class:`TreeWatch` describes, else None."""
    try:
        process = psutil.Process(pid)
        kids = [p.pid for p in process.children(recursive=True) if p.name() != "gdb"]
    except psutil.Error:
        return None
    if not kids:
        return None
    ticks = 0
    for member, allowed in ((pid, futex | waits), *((k, futex) for k in kids)):
        try:
            tids = os.listdir(f"/proc/{member}/task")
        except OSError:
            return None
        for tid in tids:
            used = _blocked_ticks(f"/proc/{member}/task/{tid}", allowed)
            if used is None:
                return None
            ticks += used
    return (ticks, tuple(sorted(kids)))


def _blocked_ticks(task: str, allowed: set[int]) -> int | None:
    """The CPU ticks of the thread ``task`` when it sleeps in one of the ``allowed`` system
    calls, else None."""
    seen = forked.task_stat(task)
    try:
        with open(f"{task}/syscall", encoding="ascii", errors="replace") as fh:
            call = fh.read().split()
    except OSError:
        return None
    if seen is None or seen[0] != "S" or not call or not call[0].isdigit():
        return None
    return seen[1] if int(call[0]) in allowed else None
