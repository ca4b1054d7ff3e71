"""A progress line on stderr for long work: ``child run 3 of at most 41: step 2 of 4: import b``.

Shown only while a :func:`progress_line` is open and only when stderr is a terminal: a pipe, a
file, a CI log and pytest's output capture never see it. It goes to stderr, so ``--json -`` on
stdout stays clean; it is rewritten in place (``\\r``) and erased when the work is done, before
the report is printed. The sandbox's parent reports the child's current step through
:func:`wait_child` (the child's progress file says which step began last).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pytest_runtimeconflict.model import RunResult, RunSpec

POLL_S = 0.1
STALL_POLL_S = 0.5  # how often a run is checked for a deadlock (sandbox/hung.py)


class ProgressLine:
    """One self-overwriting status line: a ``prefix`` (which child run) and a ``detail``
    (which step of it)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.prefix = ""
        self._shown = ""

    def show(self, prefix: str | None = None, detail: str = "") -> None:
        """Replace the line's text (a new ``prefix`` also clears the detail)."""
        if prefix is not None:
            self.prefix = prefix
        text = self.prefix + (f": {detail}" if detail else "")
        width = max(20, _columns(self.stream) - 1)
        text = text.replace("\n", " ")[:width]
        if text != self._shown:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
            self._shown = text

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = ""


_active: ProgressLine | None = None


@contextmanager
def progress_line(stream: TextIO | None = None) -> Iterator[ProgressLine | None]:
    """The progress line for the work in the block, or None when ``stream`` (default: stderr)
    is not a terminal. Erased at the end of the block, also on an error."""
    global _active
    stream = stream if stream is not None else sys.stderr
    if not _is_terminal(stream):
        yield None
        return
    line = ProgressLine(stream)
    previous, _active = _active, line
    try:
        yield line
    finally:
        line.clear()
        _active = previous


def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (stdout may be a pipe meanwhile)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        columns = 0
    return columns or shutil.get_terminal_size().columns  # 0: a terminal that sets no size


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ChildRuns:
    """Wraps a run function (``run_spec``) to count child runs on the progress line:
    ``child run i of at most N: STEPS``."""

    def __init__(
        self, run: Callable[..., RunResult], line: ProgressLine | None, limit: int
    ) -> None:
        self.run = run
        self.line = line
        self.limit = limit
        self.count = 0

    def __call__(self, spec: RunSpec, **options: Any) -> RunResult:
        self.count += 1
        if self.line is not None:
            self.line.show(f"child run {self.count} of at most {max(self.limit, self.count)}")
        return self.run(spec, **options)


def wait_child(
    proc: subprocess.Popen[bytes],
    timeout: float,
    events: str,
    steps: Sequence[str],
    stalled: Callable[[], bool] | None = None,
) -> int:
    """``proc.wait(timeout)`` (raising ``TimeoutExpired`` the same way, also as soon as
    ``stalled()`` says the run can no longer progress, checked every ``STALL_POLL_S``);
    while a progress line is open, it shows the step the child began last, read from its
    progress file ``events``."""
    line = _active
    deadline = time.monotonic() + timeout
    offset, shown, checked = 0, "", time.monotonic()
    while True:
        step = POLL_S if line is not None else STALL_POLL_S
        try:
            return proc.wait(timeout=min(step, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise
        if stalled is not None and time.monotonic() - checked >= STALL_POLL_S:
            checked = time.monotonic()
            if stalled():
                raise subprocess.TimeoutExpired(proc.args, timeout)
        if line is None:
            continue
        offset, current = _last_begin(events, offset, steps)
        if current and current != shown:
            line.show(detail=current)
            shown = current


def _last_begin(path: str, offset: int, steps: Sequence[str]) -> tuple[int, str]:
    """New complete lines of the progress file after ``offset``: the last thing begun."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset, ""
    end = data.rfind(b"\n") + 1
    current = ""
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        current = _describe(event, steps) or current
    return offset + end, current


def _describe(event: dict[str, object], steps: Sequence[str]) -> str:
    if event.get("status") != "begin":
        return ""
    kind = event.get("event")
    index = event.get("index")
    if kind == "step" and isinstance(index, int) and 0 <= index < len(steps):
        step = steps[index].strip().splitlines()[0] if steps[index].strip() else ""
        return f"step {index} of {len(steps)}: {step}"
    if kind == "preload":
        return f"preloading {os.path.basename(str(event.get('lib', '')))}"
    if kind == "exercise":
        return f"calling into {os.path.basename(str(event.get('path', '')))}"
    return ""
