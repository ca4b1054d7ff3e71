"""The progress line on stderr: shown on a terminal (a real pseudo-terminal here), never in a
pipe or a file, never on stdout."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SLOW_STEPS = ("json", "import time; time.sleep(0.6)", "import os, signal; os.kill(os.getpid(), 11)")


def _start(tmp_path: Path, stderr: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEST_RUNTIMECONFLICT_NO_GDB="1")
    return subprocess.Popen(
        [sys.executable, "-m", "pytest_runtimeconflict", "run", "--json", "out.json",
         "--max-runs", "5", *SLOW_STEPS],
        stdout=subprocess.PIPE, stderr=stderr, cwd=tmp_path, env=env,
    )  # fmt: skip


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side of the pty is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_progress_line_on_a_terminal_counts_child_runs_and_steps(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = _start(tmp_path, slave)
    os.close(slave)
    shown = _read_all(master).decode("utf-8", "replace")  # until the child closes its end
    os.close(master)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "\rchild run 1 of at most 6\x1b[K" in shown
    assert "child run 1 of at most 6: step 1 of 3: import time; time.sleep(0.6)" in shown
    assert "child run 2 of at most 6" in shown  # the diagnosis's runs are counted too
    assert shown.endswith("\r\x1b[K")  # erased before the report
    assert b"child run 1 of" not in stdout and b"\r" not in stdout


def test_no_progress_line_in_a_pipe(tmp_path: Path) -> None:
    proc = _start(tmp_path, subprocess.PIPE)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert b"child run 1 of" not in stderr and b"\r" not in stderr
    assert b"\r" not in (tmp_path / "out.json").read_bytes()
