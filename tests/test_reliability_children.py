"""Hostile children never take the parent down or leave anything behind.

Real child interpreters through ``sandbox.run_scenario``, the ``run`` CLI and the plugin. Every
child gets a unique marker in its environment (inherited by anything it starts, daemons
included), so the process tree is checked with psutil: no process carrying the marker may
survive the run. The run directory (and with it any core file) must be gone.
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
from cbuild import compile_shared, extension_suffix, python_extension_flags

from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

pytest_plugins = ["pytester"]

MARKER_VAR = "RC_RELIABILITY_MARKER"

DEADLOCK_SOURCE = r"""
#include <Python.h>
#include <pthread.h>
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static PyObject *lock_twice(PyObject *self, PyObject *args) {
    pthread_mutex_lock(&lock);
    pthread_mutex_lock(&lock); /* a default mutex: self-deadlock, GIL held */
    Py_RETURN_NONE;
}
static PyMethodDef methods[] = {{"lock_twice", lock_twice, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "rcdeadlock", NULL, -1, methods};
PyMODINIT_FUNC PyInit_rcdeadlock(void) { return PyModule_Create(&module); }
"""


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment or command line carries ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            carries = marker in " ".join(proc.info["cmdline"] or [])
            carries = carries or proc.environ().get(MARKER_VAR) == marker
            if carries and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def reap(marker: str) -> list[psutil.Process]:
    """The marked survivors (killed, so a failing test leaves nothing either)."""
    time.sleep(0.2)
    left = marked(marker)
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return left


def run(
    tmp_path: Path, steps: tuple[str, ...], timeout: float = 30, **kw: object
) -> tuple[object, str]:
    """Run ``steps`` with a marker; assert the run directory is gone and nothing survives."""
    marker = uuid.uuid4().hex
    env = (*kw.pop("env", ()), (MARKER_VAR, marker))  # type: ignore[misc]
    workdir = tmp_path / "runs"
    workdir.mkdir(exist_ok=True)
    before = set(os.listdir(os.getcwd()))
    result = run_spec(RunSpec(steps=steps, timeout=timeout, env=env, **kw), workdir=str(workdir))  # type: ignore[arg-type]
    assert os.listdir(workdir) == [], "the run directory (and any core in it) must be removed"
    assert not {n for n in set(os.listdir(os.getcwd())) - before if n.startswith("core")}
    assert reap(marker) == [], "a process of the run survived it"
    return result, marker


@pytest.mark.parametrize(
    ("step", "outcome", "signal_name"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashed", "SIGSEGV"),
        ("import ctypes; ctypes.string_at(0)", "crashed", "SIGSEGV"),
        ("import faulthandler; faulthandler._sigabrt()", "crashed", "SIGABRT"),
        ("import os; os.abort()", "crashed", "SIGABRT"),
        ("import os; os._exit(3)", "failed", None),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "crashed", "SIGKILL"),
    ],
    ids=["sigsegv", "null-deref", "sigabrt", "abort", "os-exit-3", "sigkill"],
)
def test_dying_child(tmp_path: Path, step: str, outcome: str, signal_name: str | None) -> None:
    result, _ = run(tmp_path, ("json", step))
    assert result.outcome == outcome, result.message
    assert result.signal == signal_name
    assert result.failed_step == 1
    if step.endswith("os._exit(3)"):
        assert result.returncode == 3 and "status 3" in result.message


def test_core_file_is_found_and_removed(tmp_path: Path) -> None:
    result, _ = run(tmp_path, ("import os; os.abort()",))
    assert result.outcome == "crashed"
    # core_pattern "core" here: the dump lands in the run directory, is read, then removed.
    if Path("/proc/sys/kernel/core_pattern").read_text().strip().startswith("core"):
        assert result.core_found
    assert not list(tmp_path.rglob("core*"))


def test_hang_is_killed_with_its_stack(tmp_path: Path) -> None:
    started = time.monotonic()
    result, _ = run(tmp_path, ("import time", "time.sleep(600)"), timeout=1.5)
    assert time.monotonic() - started < 15
    assert result.outcome == "hung" and result.failed_step == 1
    assert "timed out after 1.5 s in step 1" in result.message


def test_deadlock_in_a_c_extension(tmp_path: Path) -> None:
    ext = compile_shared(
        DEADLOCK_SOURCE,
        "rcdeadlock" + extension_suffix(),
        flags=(*python_extension_flags(), "-pthread"),
        outdir=tmp_path / "ext",
    )
    started = time.monotonic()
    result, _ = run(
        tmp_path,
        ("rcdeadlock", "rcdeadlock.lock_twice()"),
        timeout=1.5,
        env=(("PYTHONPATH", str(ext.parent)),),
    )
    assert time.monotonic() - started < 15
    assert result.outcome == "hung", result.message
    assert result.failed_step == 1
    # faulthandler's SIGUSR1 dump works with the GIL held in C: the stack names the step.
    assert result.python_traceback and "<step 1>" in result.python_traceback


def test_grandchildren_in_the_session_are_killed(tmp_path: Path) -> None:
    """Children and grandchildren that keep running after the child itself has exited."""
    step = textwrap.dedent(
        """
        import subprocess, sys
        code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); time.sleep(300)"
        subprocess.Popen([sys.executable, "-c", code])
        """
    )
    result, _ = run(tmp_path, (step, "import time; time.sleep(0.5)"))
    assert result.outcome == "passed"


def test_grandchild_of_a_crashed_child_is_killed(tmp_path: Path) -> None:
    step = (
        "import subprocess, sys, os, signal\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    result, _ = run(tmp_path, (step,))
    assert result.outcome == "crashed" and result.signal == "SIGSEGV"


DAEMON_STEP = """
import os, sys
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)"])
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_daemonized_grandchild_is_killed(tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    started = time.monotonic()
    try:
        result = run_spec(
            RunSpec(steps=(DAEMON_STEP,), timeout=30, env=((MARKER_VAR, marker),)),
            workdir=str(tmp_path),
        )
    finally:
        left = reap(marker)
    assert result.outcome == "passed"
    assert left == [], "the daemon outlived the run"
    # The daemon holds the child's stdout/stderr pipes: the run must not wait on them.
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------- floods and OOM

# The driver's peak RSS is VmHWM (its own address space since exec). ru_maxrss is not: Linux
# carries it across exec from the forked parent, a pytest worker that may hold 200 MB.
FLOOD_DRIVER = """
import json, re, sys
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec
r = run_spec(RunSpec(steps=(sys.argv[1],), timeout=120))
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
print(json.dumps({"outcome": r.outcome, "maxrss_kb": hwm,
                  "stdout_tail": len(r.stdout_tail), "stderr_tail": len(r.stderr_tail),
                  "tail_end": r.stdout_tail[-20:] + r.stderr_tail[-20:]}))
"""
GIB = 1 << 30


@pytest.mark.parametrize(
    "step",
    [
        "import os\nb = b'x' * (1 << 20)\nfor _ in range(2048): os.write(1, b)",
        "import sys\nb = 'y' * (1 << 20)\nfor _ in range(2048): sys.stderr.write(b)\nsys.stderr.write('END')",
    ],
    ids=["2GiB-stdout", "2GiB-stderr"],
)
def test_flood_of_output_keeps_parent_memory_bounded(step: str) -> None:
    """2 GiB written by the child; the parent (a fresh interpreter; its peak RSS, VmHWM)
    must keep only the capped tail."""
    proc = subprocess.run(
        [sys.executable, "-c", FLOOD_DRIVER, step], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.splitlines()[-1])
    assert data["outcome"] == "passed"
    assert data["maxrss_kb"] * 1024 < 200 * 1024 * 1024, data  # 2 GiB went through
    assert 0 < data["stdout_tail"] + data["stderr_tail"] <= 2 * 64 * 1024


def test_allocation_until_oom_is_bounded(tmp_path: Path) -> None:
    """RLIMIT_AS is set inside the step, so the child hits the wall at 1 GiB, not the machine."""
    step = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({GIB}, {GIB}))\n"
        "hoard = []\n"
        "while True:\n"
        "    hoard.append(bytearray(16 << 20))\n"
    )
    result, _ = run(tmp_path, ("json", step))
    assert result.outcome in ("failed", "crashed"), result.message
    assert result.failed_step == 1
    if result.outcome == "failed":
        assert result.exception_type == "MemoryError"


# ---------------------------------------------------------------- Ctrl-C


def _children_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _wait_for_child_script(
    popen: subprocess.Popen[str], timeout: float = 60
) -> list[psutil.Process]:
    pid = popen.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and popen.poll() is None:
        kids = [k for k in _children_of(pid) if any("child.py" in part for part in _cmdline(k))]
        if kids:
            return _children_of(pid)
        time.sleep(0.1)
    raise AssertionError(f"the sandbox child never started: {popen.communicate(timeout=30)}")


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    """The process a user presses Ctrl-C in: SIGINT at its default disposition even when this
    test process ignores it (xdist workers and shells' background jobs do, and a child
    inherits an ignored signal, so Python would install no KeyboardInterrupt handler)."""
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _interrupt(popen: subprocess.Popen[str]) -> tuple[str, str, float, list[psutil.Process]]:
    kids = _wait_for_child_script(popen)
    started = time.monotonic()
    popen.send_signal(signal.SIGINT)
    try:
        out, err = popen.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # leave no process behind for later tests
        for proc in [*_children_of(popen.pid), psutil.Process(popen.pid)]:
            proc.kill()
        popen.communicate()
        raise
    elapsed = time.monotonic() - started
    time.sleep(0.2)
    alive = [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    for k in alive:
        k.kill()
    return out, err, elapsed, alive


def test_ctrl_c_during_run_cli(tmp_path: Path) -> None:
    popen = _start(
        [sys.executable, "-m", "pytest_runtimeconflict", "run", "import time; time.sleep(60)"],
        tmp_path,
    )
    out, err, elapsed, alive = _interrupt(popen)
    # the child sleeps 60 s (the default child timeout): returning well before proves Ctrl-C
    # ended the run; the margin absorbs a loaded CI machine
    assert elapsed < 30
    assert popen.returncode == 130
    assert "pytest-runtimeconflict: interrupted" in err and "Traceback" not in err
    assert alive == []
    assert not list(tmp_path.iterdir())


def test_ctrl_c_during_a_pytest_session(pytester: pytest.Pytester) -> None:
    (pytester.path / "sleepy.scenario.toml").write_text(
        textwrap.dedent(
            """
            [scenario]
            name = "sleepy"
            description = "a child that sleeps"
            [[run]]
            id = "sleep"
            steps = ["import time; time.sleep(60)"]
            """
        )
    )
    popen = _start(
        [sys.executable, "-m", "pytest", "--runtime-conflicts", "--rc-modules=none", "-p",
         "no:cacheprovider"],
        pytester.path,
    )  # fmt: skip
    out, err, elapsed, alive = _interrupt(popen)
    # the child sleeps 60 s (the default child timeout): returning well before proves Ctrl-C
    # ended the run; the margin absorbs a loaded CI machine
    assert elapsed < 30
    assert popen.returncode == pytest.ExitCode.INTERRUPTED, (out, err)
    assert "KeyboardInterrupt" in out or "Interrupted" in out
    assert "INTERNALERROR" not in out + err
    assert alive == []


# ---------------------------------------------------------------- through the plugin

HOSTILE_SCENARIO = """
[scenario]
name = "hostile"
description = "children that die in every way"

[[run]]
id = "segv"
steps = ["json", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
expect = { outcome = "crashed", signal = "SIGSEGV", failed_step = 1 }

[[run]]
id = "abort"
steps = ["import os; os.abort()"]
expect = { outcome = "crashed", signal = "SIGABRT" }

[[run]]
id = "exit"
steps = ["import os; os._exit(3)"]
expect = { outcome = "failed" }

[[run]]
id = "hang"
steps = ["import time; time.sleep(600)"]
timeout = 1.5
expect = { outcome = "hung" }

[[run]]
id = "grandchild"
steps = ["import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])"]
expect = { outcome = "passed" }
"""


def test_hostile_children_through_the_plugin(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = uuid.uuid4().hex
    monkeypatch.setenv(MARKER_VAR, marker)  # inherited by pytest and every child it starts
    (pytester.path / "hostile.scenario.toml").write_text(HOSTILE_SCENARIO)
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts",
        "--rc-modules=none",
        "--rc-max-runs=2",
        f"--rc-report={report}",
        "-p",
        "no:cacheprovider",
        "-rA",
    )
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stderr.str() and "INTERNALERROR" not in out
    result.assert_outcomes(passed=1, xfailed=4)
    entries = json.loads(report.read_text())["scenarios"]
    assert sorted(e["scenario"]["run"] for e in entries if "scenario" in e) == [
        "abort",
        "exit",
        "grandchild",
        "hang",
        "segv",
    ]
    assert not [p for p in pytester.path.rglob("core*")]
    # The pytest process itself carried the marker: only it (gone by now) and no child remains.
    assert reap(marker) == []
