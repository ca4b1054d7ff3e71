"""SIGTERM and SIGHUP end a run like Ctrl-C; a child cannot take the tool down by killing its
parent; daemons that leave the session and drop the run's marker are still swept.

Real processes throughout: the ``run`` CLI and a serial pytest session receive real signals,
children really call ``os.kill(os.getppid(), SIGKILL)`` and really daemonize with an empty
environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

pytest_plugins = ["pytester"]

SIGNALS = [(signal.SIGTERM, 143), (signal.SIGHUP, 129)]


TOKEN_VAR = "RC_HARDENING_TOKEN"


def _with_token(token: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line carries ``token``, and sandbox children
    whose environment does."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = proc.info["cmdline"] or []
            child = any("child.py" in part for part in cmdline)
            carries = token in " ".join(cmdline) or (
                child and proc.environ().get(TOKEN_VAR) == token
            )
            if carries and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _survivors(token: str) -> list[psutil.Process]:
    """The processes carrying ``token`` after a short grace (killed: nothing leaks)."""
    time.sleep(0.3)
    left = _with_token(token)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return left


def _start(args: list[str], cwd: Path, tmpdir: Path, token: str) -> subprocess.Popen[str]:
    """The tool as CI starts it, its run folders under ``tmpdir``; the signals at their
    default disposition whatever this test process inherited."""

    def reset() -> None:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)

    env = {**os.environ, "TMPDIR": str(tmpdir), TOKEN_VAR: token}
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
        preexec_fn=reset,
    )  # fmt: skip


def _sleeping(token: str) -> bool:
    """A child carrying ``token`` has run for 3 s (not a quick run that is about to end)."""
    return any(time.time() - p.create_time() > 3 for p in _with_token(token))


def _signal_when_sleeping(popen: subprocess.Popen[str], token: str, number: int) -> str:
    """Wait for the sleeping child carrying ``token``, send ``number`` to the tool; its output."""
    deadline = time.monotonic() + 60
    while not _sleeping(token) and time.monotonic() < deadline and popen.poll() is None:
        time.sleep(0.1)
    assert _sleeping(token), popen.communicate(timeout=30)
    popen.send_signal(number)
    try:
        out, err = popen.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.communicate()
        raise
    return out + err


@pytest.mark.parametrize(("number", "code"), SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_termination_of_the_run_cli(tmp_path: Path, number: int, code: int) -> None:
    token = uuid.uuid4().hex
    (tmp_path / "tmp").mkdir()
    step = "import time; time.sleep(60)"
    popen = _start(
        [sys.executable, "-m", "pytest_runtimeconflict", "run", step],
        tmp_path,
        tmp_path / "tmp",
        token,
    )
    out = _signal_when_sleeping(popen, token, number)
    assert popen.returncode == code, out
    assert f"terminated by {signal.Signals(number).name}" in out and "Traceback" not in out
    assert _survivors(token) == []
    assert list((tmp_path / "tmp").iterdir()) == []  # the run folder is removed


SCENARIO = """
[scenario]
name = "sleepy"
description = "one quick run, then one that sleeps"
[[run]]
id = "quick"
steps = ["json"]
[[run]]
id = "sleep"
steps = ["import time; time.sleep(60)"]
"""


@pytest.mark.parametrize(("number", "code"), SIGNALS, ids=["SIGTERM", "SIGHUP"])
def test_termination_of_a_serial_pytest_session(
    pytester: pytest.Pytester, number: int, code: int
) -> None:
    token = uuid.uuid4().hex
    (pytester.path / "sleepy.scenario.toml").write_text(SCENARIO)
    (pytester.path / "tmp").mkdir()
    args = [sys.executable, "-m", "pytest", "--runtime-conflicts", "--rc-modules=none",
            "-p", "no:cacheprovider", "-p", "no:randomly", "--rc-report=report.json"]  # fmt: skip
    popen = _start(args, pytester.path, pytester.path / "tmp", token)
    out = _signal_when_sleeping(popen, token, number)
    assert popen.returncode == code, out
    assert "INTERNALERROR" not in out
    assert _survivors(token) == []
    assert list((pytester.path / "tmp").iterdir()) == []
    report = json.loads((pytester.path / "report.json").read_text())
    assert [s["id"] for s in report["scenarios"]] == ["sleepy::quick"]  # the partial report


# ---------------------------------------------------------------- a child kills its parent

KILL_PARENT = "import os, signal; os.kill(os.getppid(), signal.SIGKILL)"


def test_child_killing_its_parent_does_not_take_the_tool_down(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    steps = (KILL_PARENT, "import time; time.sleep(60)")
    spec = RunSpec(steps=steps, timeout=30, env=((TOKEN_VAR, token),))
    result = run_spec(spec, workdir=str(tmp_path))
    # still here: this test process is the tool
    assert result.outcome == "crashed" and result.signal == "SIGKILL"
    assert "parent process was killed by SIGKILL" in result.stderr_tail
    assert _survivors(token) == []
    assert list(tmp_path.iterdir()) == []


def test_child_killing_its_parent_through_the_cli_still_reports(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    args = [sys.executable, "-m", "pytest_runtimeconflict", "run", "--no-diagnose",
            "--json", str(report), KILL_PARENT, "import time; time.sleep(60)"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    (entry,) = json.loads(report.read_text())["scenarios"]
    assert entry["outcome"] == "crashed" and entry["signal"] == "SIGKILL"


# ---------------------------------------------------------------- daemons without the marker

DAEMONS = {
    "popen-empty-env": (
        "import subprocess, sys; subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(300)', 'TOKEN'], env={}, start_new_session=True)"
    ),
    "double-fork-execve": textwrap.dedent(
        """
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(300)',
                          'TOKEN'], {})
            os._exit(0)
        """
    ),
    "re-forking": textwrap.dedent(
        """
        import subprocess, sys
        chain = 'import os, time\\nwhile True:\\n    time.sleep(0.005)\\n    if os.fork():\\n        os._exit(0)\\n'
        subprocess.Popen([sys.executable, '-c', chain, 'TOKEN'], env={}, start_new_session=True)
        """
    ),
}


@pytest.mark.parametrize("name", list(DAEMONS))
def test_daemons_that_drop_the_marker_are_swept(tmp_path: Path, name: str) -> None:
    token = uuid.uuid4().hex
    step = DAEMONS[name].replace("TOKEN", token)
    result = run_spec(RunSpec(steps=(step, "import time; time.sleep(0.3)"), timeout=30))
    assert result.outcome == "passed", result.to_json()
    assert _survivors(token) == []
