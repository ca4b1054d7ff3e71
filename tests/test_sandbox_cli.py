"""``python -m pytest_runtimeconflict run`` end to end, in a subprocess (exit codes, JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOMP = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"


def rc_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEST_RUNTIMECONFLICT_NO_GDB="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "run", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
    )  # fmt: skip


def test_passed_exit_0_and_json(tmp_path: Path) -> None:
    proc = rc_run("--json", "out.json", "--env", "RC_X=1", "--id", "ok", "json",
                  "import os; assert os.environ['RC_X'] == '1'", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "scenario ok: PASSED" in proc.stdout
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["schema"] == "pytest-runtimeconflict/report/1"
    (scenario,) = data["scenarios"]
    assert scenario["outcome"] == "passed" and scenario["env"] == {"RC_X": "1"}
    assert scenario["steps"] == ["json", "import os; assert os.environ['RC_X'] == '1'"]


def test_crash_exit_1_with_report(tmp_path: Path) -> None:
    proc = rc_run("--json", "out.json", "json",
                  "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert "CRASHED: SIGSEGV (signal 11)" in proc.stdout
    assert "step 1: import os, signal" in proc.stdout and "<-- here" in proc.stdout
    # diagnosed: the steps, then the diagnosis with its evidence (each fact once)
    assert "Python traceback" in proc.stdout and proc.stdout.count("step 1: import os") == 1
    assert proc.stdout.count("CRASHED") == 1 and proc.stdout.count("SIGSEGV (signal 11)") == 1
    scenario = json.loads((tmp_path / "out.json").read_text())["scenarios"][0]
    assert (scenario["outcome"], scenario["signal"], scenario["failed_step"]) == (
        "crashed", "SIGSEGV", 1,
    )  # fmt: skip
    assert sorted(os.listdir(tmp_path)) == ["out.json"]  # no core in the user's cwd


def test_failed_and_hung_exit_1(tmp_path: Path) -> None:
    failed = rc_run("rc_no_such_module_q", cwd=tmp_path)
    assert failed.returncode == 1 and "No module named 'rc_no_such_module_q'" in failed.stdout
    hung = rc_run("--timeout", "1", "import time; time.sleep(60)", cwd=tmp_path)
    assert hung.returncode == 1 and "HUNG" in hung.stdout and "timed out after 1 s" in hung.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--timeout", "abc", "json"], "invalid --timeout 'abc' (from command line)"),
        (["--env", "NOEQUALS", "json"], "invalid --env 'NOEQUALS'"),
        (["--python", "/nonexistent/python", "json"], "not an executable file"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = rc_run(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_latent_passes_unless_fail_on_latent(tmp_path: Path) -> None:
    if not os.path.exists(GOMP):
        pytest.skip("no system libgomp")
    import shutil

    from cbuild import patchelf

    copies = []
    for tag in ("aaaa1111", "bbbb2222"):
        dest = tmp_path / f"libgomp-{tag}.so"
        shutil.copy2(GOMP, dest)
        subprocess.run([patchelf(), "--set-soname", dest.name, str(dest)], check=True)
        copies.append(str(dest))
    steps = [f"import ctypes; ctypes.CDLL({c!r})" for c in copies]
    default = rc_run(*steps, cwd=tmp_path)
    assert default.returncode == 0 and "LATENT" in default.stdout, default.stdout
    assert "(libgomp)" in default.stdout
    strict = rc_run("--fail-on", "latent", *steps, cwd=tmp_path)
    assert strict.returncode == 1
