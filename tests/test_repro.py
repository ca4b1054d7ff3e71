"""Reproducer export (``run --repro FILE``, ``--rc-repro-dir DIR``): each exported script runs in
a venv without this package and does what the sandbox saw, with the run's load mode."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_repro_kinds import script_spec
from venvs import make_venv
from zoo_support import SCENARIOS_DIR, ZooVenv

ROOT = Path(__file__).resolve().parent.parent
GOMP = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
# A clean environment: nothing of this project reachable, nothing that hides a conflict.
CLEAN_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def rc_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEST_RUNTIMECONFLICT_NO_GDB="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "run", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


def run_script(python: str, script: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The reproducer, as a user runs it: the venv's python, no PYTHONPATH to this project."""
    return subprocess.run(
        [python, str(script)], capture_output=True, text=True, cwd=script.parent,
        env=dict(CLEAN_ENV, **env), timeout=120,
    )  # fmt: skip


@pytest.fixture
def bare_python(tmp_path: Path) -> str:
    """A venv that cannot import this package (the reproducer must not need it)."""
    python, _site = make_venv(tmp_path / "bare")
    probe = subprocess.run(
        [python, "-c", "import pytest_runtimeconflict"],
        env=CLEAN_ENV, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    assert probe.returncode != 0
    return python


def test_crash_reproducer_runs_without_the_plugin(tmp_path: Path, bare_python: str) -> None:
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    proc = rc_run("--python", bare_python, "--repro", "crash.py", "json", "csv", kill,
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    script = tmp_path / "crash.py"
    assert f"reproducer: crash.py\n  run it: {bare_python} crash.py" in proc.stdout
    assert "  verified: reproduced SIGSEGV in " in proc.stdout
    source = script.read_text()
    assert "pytest_runtimeconflict" not in source.split("# Exit status")[1]
    # Minimised: csv and json are not needed for the crash.
    assert [s["code"] for s in script_spec(script)["steps"]] == [kill]
    first_lines = source.splitlines()[:8]
    assert first_lines[2] == f"# Run:  {bare_python} crash.py"
    assert first_lines[7].startswith("# Verified: reproduced SIGSEGV in ")
    done = run_script(bare_python, script)
    assert done.returncode == 1, done.stderr
    assert done.stdout == "[repro] reproduced: SIGSEGV\n"
    assert "[repro] expected: crash with SIGSEGV at step 0 of 1: import os, signal" in done.stderr
    # In this process (for gdb): the crash's own status.
    here = subprocess.run([bare_python, str(script), "--in-process"], capture_output=True,
                          env=CLEAN_ENV, cwd=tmp_path, timeout=60)  # fmt: skip
    assert here.returncode == -signal.SIGSEGV


def test_environment_ld_preload_and_preload_mode_are_reproduced(
    tmp_path: Path, bare_python: str
) -> None:
    """The crash needs the run's variable, its LD_PRELOAD and its RTLD_GLOBAL preload, and
    happens only without OMP_NUM_THREADS (a variable the sandbox scrubs)."""
    if not os.path.exists(GOMP):
        pytest.skip("no system libgomp")
    step = (
        "import ctypes, os, signal\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert os.environ.get('RC_REPRO_X') == '1' and 'OMP_NUM_THREADS' not in os.environ\n"
        "assert 'libgomp' in maps and 'libz.so' in maps\n"
        "ctypes.CDLL(None).inflateEnd  # in the global scope only after an RTLD_GLOBAL preload\n"
        "os.kill(os.getpid(), signal.SIGABRT)"
    )
    proc = rc_run("--python", bare_python, "--repro", "env.py", "--env", "RC_REPRO_X=1",
                  "--ld-preload", GOMP, "--preload", "libz.so.1", "--preload-mode", "global",
                  "--no-diagnose", step, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "CRASHED" in proc.stdout, proc.stdout
    script = tmp_path / "env.py"
    source = script.read_text()
    assert f"# Run:  LD_PRELOAD={GOMP} RC_REPRO_X=1 {bare_python} env.py" in source
    data = script_spec(script)
    assert (data["preload"], data["preload_mode"]) == (["libz.so.1"], "global")
    # Run without the variable and the preload, with a variable that would hide the crash:
    # the script runs the conflict with the run's environment.
    done = run_script(bare_python, script, OMP_NUM_THREADS="1")
    assert done.returncode == 1 and done.stdout == "[repro] reproduced: SIGABRT\n", done.stderr


def test_failed_step_reproducer_shows_the_traceback(tmp_path: Path, bare_python: str) -> None:
    proc = rc_run("--python", bare_python, "--repro", "fail.py", "json",
                  "import rc_no_such_module_q", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    done = run_script(bare_python, tmp_path / "fail.py")
    assert done.returncode == 1
    assert done.stdout == (
        "[repro] reproduced: exit 1: ModuleNotFoundError: No module named 'rc_no_such_module_q'\n"
    )
    assert "expected: fail with ModuleNotFoundError: No module named 'rc_no_such_module_q'" in (
        done.stderr
    )
    assert "Traceback (most recent call last)" in done.stderr


def test_hang_reproducer_stops_after_the_tool_s_timeout(tmp_path: Path, bare_python: str) -> None:
    proc = rc_run("--python", bare_python, "--repro", "hang.py", "--timeout", "2",
                  "--no-diagnose", "import time; time.sleep(600)", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1 and "HUNG" in proc.stdout
    done = run_script(bare_python, tmp_path / "hang.py")
    assert done.returncode == 1 and done.stdout == "[repro] reproduced: hang\n"
    assert "expected: hang at step 0 of 1: import time; time.sleep(600)" in done.stderr
    # Every thread's stack before the kill: the step that waits.
    assert 'File "<step 0>", line 1' in done.stderr


def test_reproducer_says_when_it_does_not_reproduce(tmp_path: Path, bare_python: str) -> None:
    flag = tmp_path / "crash-once"
    flag.write_text("")
    step = (
        f"import os, signal, pathlib; p = pathlib.Path({str(flag)!r})\n"
        "if p.exists(): p.unlink(); os.kill(os.getpid(), signal.SIGSEGV)"
    )
    proc = rc_run("--python", bare_python, "--repro", "once.py", "--no-diagnose",
                  "--json", "out.json", step, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    # The tool's own check ran the script once: the crash did not happen again.
    assert "  verified: not reproduced (observed passed) in " in proc.stdout
    (entry,) = json.loads((tmp_path / "out.json").read_text())["scenarios"]
    assert (entry["reproduces"], entry["reproduce_observed"]) == (False, "passed")
    done = run_script(bare_python, tmp_path / "once.py")
    assert done.returncode == 0 and done.stdout == "[repro] not reproduced: passed\n"
    assert "[repro] every step ran" in done.stderr


def test_passed_run_writes_no_reproducer(tmp_path: Path) -> None:
    proc = rc_run("--repro", "none.py", "json", cwd=tmp_path)
    assert proc.returncode == 0
    assert not (tmp_path / "none.py").exists()
    assert "--repro none.py: not written, the run passed" in proc.stderr


def test_repro_path_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    proc = rc_run("--repro", str(tmp_path), "json", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"--repro {str(tmp_path)!r} is a directory; give a file name" in proc.stderr


def test_reproducer_json_has_the_minimal_run(tmp_path: Path, bare_python: str) -> None:
    """The report keeps how the minimal order failed, which the reproducer is written from."""
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    proc = rc_run("--python", bare_python, "--json", "out.json", "--repro", "r.py", "json", kill,
                  cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    (entry,) = json.loads((tmp_path / "out.json").read_text())["scenarios"]
    assert (entry["reproduces"], entry["reproduce_observed"]) == (True, "SIGSEGV")
    assert entry["reproducer"] == "r.py"
    minimal = entry["minimal_run"]
    assert minimal["steps"] == [kill] and minimal["failed_step"] == 0
    assert (minimal["outcome"], minimal["signal"], minimal["phase"]) == (
        "crashed", "SIGSEGV", "step",
    )  # fmt: skip


def test_ini_repro_dir_writes_the_plugin_s_reproducers(
    pytester: pytest.Pytester, bare_python: str
) -> None:
    pytester.makeini("[pytest]\nruntime_conflicts_repro_dir = out/repro\n")
    (pytester.path / "kill.scenario.toml").write_text(
        "[scenario]\nname = 'kill'\ndescription = 'a crash'\n"
        "[[run]]\nid = 'segv'\n"
        "steps = ['json', 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)']\n"
        "[run.expect]\noutcome = 'crashed'\nsignal = 'SIGSEGV'\n"
    )
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={bare_python}", "--rc-modules=none",
        "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(xfailed=1)
    (script,) = (pytester.path / "out" / "repro").iterdir()
    result.stdout.fnmatch_lines([f"  {bare_python} {script}  # verified: reproduced SIGSEGV in *"])
    done = run_script(bare_python, script)
    assert done.returncode == 1 and done.stdout == "[repro] reproduced: SIGSEGV\n", done.stderr


@pytest.mark.parametrize("where", ["command line", "ini file"])
def test_repro_dir_that_is_a_file_is_a_usage_error(pytester: pytest.Pytester, where: str) -> None:
    (pytester.path / "taken").write_text("")
    args = ["--rc-repro-dir=taken"] if where == "command line" else []
    ini = "" if args else "runtime_conflicts_repro_dir = taken"
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess("--runtime-conflicts", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*invalid --rc-repro-dir 'taken' (from {where}): it exists and is not a directory*"]
    )
    assert "Traceback" not in result.stderr.str()


# ---------------------------------------------------------------- the zoo's real conflicts


@pytest.mark.slow
def test_plugin_writes_one_reproducer_per_conflict_that_crashes_without_it(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    """Under xdist the controller writes the reproducers from the workers' reports; the
    minimal order of a-then-b drops the parallel_sum steps (the runtime exercising crashes
    first), so the script must call into both runtimes as the sandbox did."""
    zoo_venv.wheels.check("openmp-duplicate")
    shutil.copytree(SCENARIOS_DIR / "openmp-duplicate", pytester.path / "openmp-duplicate")
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={zoo_venv.python}", "--rc-modules=none",
        "--rc-repro-dir=repro", "-p", "no:cacheprovider", "-n", "2",
        "-k", "a-then-b or b-then-a or imports-only",
    )  # fmt: skip
    result.assert_outcomes(xfailed=3)
    scripts = sorted((pytester.path / "repro").iterdir())
    assert len(scripts) == 1 and scripts[0].name.startswith("openmp-duplicate-")
    result.stdout.fnmatch_lines(
        [
            "reproducers (one per distinct conflict), run with:",
            f"  {zoo_venv.python} {scripts[0]}  # verified: reproduced SIGABRT in *",
        ]
    )
    done = run_script(zoo_venv.python, scripts[0])
    assert done.returncode == 1 and done.stdout == "[repro] reproduced: SIGABRT\n", done.stderr
    assert "OMP: Error #15" in done.stderr
    assert done.stderr.count("[repro] calling into the openmp runtime") == 2


@pytest.mark.slow
def test_setdlopenflags_steps_are_reproduced(tmp_path: Path, zoo_venv: ZooVenv) -> None:
    zoo_venv.wheels.check("cxx-odr-global")
    run = next(r for r in zoo_venv.scenarios["cxx-odr-global"].runs if r.id == "v1-global-then-v2")
    proc = rc_run("--python", zoo_venv.python, "--repro", "odr.py", *run.spec.steps, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    codes = [s["code"] for s in script_spec(tmp_path / "odr.py")["steps"]]
    load_mode = next(i for i, c in enumerate(codes) if "sys.setdlopenflags(" in c)
    assert load_mode < codes.index("zoo_odr_v1") < codes.index("zoo_odr_v2")
    done = run_script(zoo_venv.python, tmp_path / "odr.py")
    assert done.returncode == 1 and done.stdout.startswith("[repro] reproduced: exit 1: ")
    assert "AssertionError: zoo_odr_v2 ran zoolib 1: scaled(10) == 20" in done.stderr
