"""A forked child that makes no progress counts as hung before its deadline; one that works
or is scheduled does not (sandbox/forked.py's stall detection, used by the fork probes)."""

from __future__ import annotations

import os
import time

from pytest_runtimeconflict.sandbox import forked


def _fork(body) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_a_sleeping_child_is_a_stall_long_before_the_deadline():
    pid = _fork(lambda: time.sleep(30))
    began = time.monotonic()
    try:
        assert forked.wait_for(pid, 20.0, stall=0.5) is None
        waited = time.monotonic() - began
    finally:
        forked.kill(pid)
    assert waited < 10.0


def test_a_working_child_is_waited_for_until_it_ends():
    pid = _fork(lambda: _busy(1.5))
    status = forked.wait_for(pid, 20.0, stall=0.5)
    assert status == 0


def test_without_a_stall_window_only_the_deadline_counts():
    pid = _fork(lambda: time.sleep(30))
    began = time.monotonic()
    try:
        assert forked.wait_for(pid, 1.0) is None
    finally:
        forked.kill(pid)
    assert time.monotonic() - began >= 1.0


def test_the_stall_window_grows_with_what_the_steps_waited_in_the_parent():
    assert forked.stall_window(3.0, 3.2) == forked.STALL_MIN
    assert forked.stall_window(5.0, 1.0) == forked.STALL_MIN + 8.0


def test_a_running_process_gives_no_progress_mark():
    assert forked.progress_mark(os.getpid()) is None  # this thread runs
    pid = _fork(lambda: time.sleep(30))
    try:
        time.sleep(0.3)
        mark = forked.progress_mark(pid)
        assert mark is not None and mark == forked.progress_mark(pid)
    finally:
        forked.kill(pid)
