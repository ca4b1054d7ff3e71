"""The sandbox with real child interpreters: outcomes, signals, steps, environment, preloads."""

from __future__ import annotations

import os
import signal
import sys

import psutil
import pytest
from cbuild import compile_shared

from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox.runner import TAIL_BYTES, run_spec

CONTRACT_KEYS = {
    "id", "steps", "preload", "env", "outcome", "signal", "returncode", "failed_step",
    "message", "duration_s", "stderr_tail", "libraries", "loaded_runtimes", "findings",
}  # fmt: skip


def run(*steps: str, **kwargs: object) -> RunResult:
    kwargs.setdefault("timeout", 30.0)
    return run_spec(RunSpec(steps=steps, **kwargs))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_gdb(monkeypatch: pytest.MonkeyPatch) -> None:
    """gdb is slow; the core tests in test_sandbox_core.py exercise it."""
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")


def test_passing_run_records_libraries_per_step() -> None:
    result = run("json", "decimal", id="plain")
    assert result.outcome == "passed", result.message
    assert result.returncode == 0 and result.failed_step is None and result.signal is None
    assert len(result.step_libraries) == 2
    assert any("_decimal" in p for p in result.step_libraries[1])
    assert not any("_decimal" in p for p in result.step_libraries[0])
    assert all(os.path.isabs(p) for p in result.mapped)
    assert any(os.path.basename(p).startswith("libc.so") for p in result.mapped)
    data = result.to_json()
    assert set(data) >= CONTRACT_KEYS
    assert data["id"] == "plain" and data["steps"] == ["json", "decimal"]


def test_statements_share_one_namespace() -> None:
    result = run("os.path", "assert os.path.sep == '/'", "x = 41", "assert x + 1 == 42")
    assert result.outcome == "passed", result.message


def test_failing_statement_is_failed_with_exception_message() -> None:
    result = run("x = 1", "assert x == 2, 'x is not two'")
    assert result.outcome == "failed"
    assert result.failed_step == 1
    assert result.message == "AssertionError: x is not two"
    assert result.python_traceback and "<step 1>" in result.python_traceback


def test_sigsegv_is_crashed_at_the_right_step() -> None:
    kill = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    result = run("json", kill, "decimal")
    assert result.outcome == "crashed"
    assert result.signal == "SIGSEGV" and result.signum == signal.SIGSEGV
    assert result.returncode == -signal.SIGSEGV
    assert result.failed_step == 1
    assert "SIGSEGV" in result.message and "step 1" in result.message
    assert result.python_traceback and 'File "<step 1>"' in result.python_traceback
    assert len(result.step_libraries) == 2  # up to the failing step, not beyond


def test_sigabrt_is_crashed() -> None:
    result = run("import faulthandler; faulthandler._sigabrt()")
    assert (result.outcome, result.signal, result.failed_step) == ("crashed", "SIGABRT", 0)
    assert "Fatal Python error: Aborted" in (result.python_traceback or "")


def test_missing_module_is_failed_with_import_error() -> None:
    result = run("json", "rc_no_such_module_xyz")
    assert result.outcome == "failed"
    assert result.failed_step == 1
    assert result.message == "ModuleNotFoundError: No module named 'rc_no_such_module_xyz'"
    assert result.exception_type == "ModuleNotFoundError"


def test_exit_status_without_exception_is_failed_with_returncode() -> None:
    result = run("json", "import os; os._exit(3)")
    assert result.outcome == "failed"
    assert result.returncode == 3 and result.failed_step == 1
    assert "status 3" in result.message


def test_crash_at_interpreter_exit_has_no_failed_step() -> None:
    step = "import atexit, os, signal; atexit.register(os.kill, os.getpid(), signal.SIGSEGV)"
    result = run(step)
    assert (result.outcome, result.signal) == ("crashed", "SIGSEGV")
    assert result.failed_step is None and result.phase == "exit"
    assert "interpreter exit" in result.message


def test_hang_is_killed_with_python_stacks_and_no_process_left(tmp_path: os.PathLike) -> None:
    pid_file = os.path.join(str(tmp_path), "grandchild.pid")
    fork = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        f"open({pid_file!r}, 'w').write(str(p.pid))"
    )
    # Processes an earlier test left (the tool is its process's subreaper: under xdist a
    # worker adopts other tests' orphans, such as a browser's crash handler) are not this run's.
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    result = run(fork, "import time\ndef wait_forever():\n    time.sleep(300)\nwait_forever()",
                 timeout=2.0)  # fmt: skip
    assert result.outcome == "hung"
    assert result.failed_step == 1
    assert "timed out after 2 s" in result.message
    assert "wait_forever" in (result.python_traceback or "")
    assert result.duration_s < 15
    with open(pid_file) as fh:
        grandchild = int(fh.read())
    assert [p for p in psutil.Process().children(recursive=True) if p.pid not in before] == []
    if psutil.pid_exists(grandchild):  # a non-reaping init may keep the zombie around
        assert psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_conflict_hiding_variables_are_not_inherited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMP_DUPLICATE_LIB_OK", "TRUE")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    monkeypatch.setenv("RC_SANDBOX_MARKER", "kept")
    check = (
        "import os; e = os.environ; "
        "assert 'KMP_DUPLICATE_LIB_OK' not in e and 'OMP_NUM_THREADS' not in e, dict(e); "
        "assert 'PYTHONWARNINGS' not in e and 'LD_DEBUG' not in e; "
        "assert e['RC_SANDBOX_MARKER'] == 'kept'"
    )
    assert run(check).outcome == "passed"
    asked = run(
        "import os; assert os.environ['KMP_DUPLICATE_LIB_OK'] == 'TRUE'",
        env=(("KMP_DUPLICATE_LIB_OK", "TRUE"),),
    )
    assert asked.outcome == "passed", asked.message


def test_pythonpath_is_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike) -> None:
    (tmp_path / "rc_sandbox_probe.py").write_text("VALUE = 7\n")  # type: ignore[operator]
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    assert run("rc_sandbox_probe", "assert rc_sandbox_probe.VALUE == 7").outcome == "passed"


def test_preload_global_libstdcxx_is_mapped_and_global() -> None:
    lookup = "import ctypes; ctypes.CDLL(None)['_ZSt9terminatev']"
    result = run(lookup, preload=("libstdc++.so.6",))
    assert result.outcome == "passed", result.message
    assert any(os.path.basename(p).startswith("libstdc++.so.6") for p in result.preload_libraries)
    assert any(os.path.basename(p).startswith("libstdc++.so.6") for p in result.mapped)
    local = run(lookup, preload=("libstdc++.so.6",), preload_mode="local")
    assert local.outcome == "failed" and local.exception_type == "AttributeError"


def test_preload_that_fails_is_failed_without_step() -> None:
    result = run("json", preload=("librc_does_not_exist.so",))
    assert result.outcome == "failed"
    assert result.failed_step is None and result.phase == "preload"
    assert result.message.startswith("preload 'librc_does_not_exist.so' failed: OSError")


def test_ld_preload_is_mapped_from_the_start() -> None:
    lib = compile_shared("int rc_ld_preload_probe(void) { return 5; }\n", "librcldpre.so")
    probe = "import ctypes; assert ctypes.CDLL(None).rc_ld_preload_probe() == 5"
    result = run(probe, ld_preload=(str(lib),))
    assert result.outcome == "passed", result.message
    assert str(lib) in result.mapped
    assert all(str(lib) not in step for step in result.step_libraries)


def test_output_is_captured_but_bounded() -> None:
    chatty = (
        "import sys\nfor i in range(2000):\n    sys.stdout.write('x' * 4095 + '\\n')\nprint('END')"
    )
    result = run(chatty, "import sys; sys.stderr.write('to stderr\\n')")
    assert result.outcome == "passed"
    assert len(result.stdout_tail.encode()) <= TAIL_BYTES
    assert result.stdout_tail.rstrip().endswith("END")
    assert "to stderr" in result.stderr_tail


def test_run_directory_is_removed(tmp_path: os.PathLike) -> None:
    run_spec(RunSpec(steps=("json",)), workdir=str(tmp_path))
    assert os.listdir(str(tmp_path)) == []


def test_other_interpreter_and_bad_interpreters(tmp_path: os.PathLike) -> None:
    other = "/usr/bin/python3"
    if os.path.exists(other):
        result = run("import sys; print(sys.executable)", python=other)
        assert result.outcome == "passed", result.message
        assert (
            result.stdout_tail.strip() == os.path.realpath(other) or "python3" in result.stdout_tail
        )
    with pytest.raises(InterpreterError, match="not an executable file"):
        run("json", python=str(tmp_path / "nope"))
    with pytest.raises(InterpreterError, match="before running the sandbox script"):
        run("json", python="/bin/true")


def test_invalid_specs_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="timeout"):
        run("json", timeout=0)
    with pytest.raises(UsageError, match="at least one step"):
        run_spec(RunSpec(steps=()))
    with pytest.raises(UsageError, match="preload mode"):
        run("json", preload_mode="sideways")


def test_sandbox_script_dir_is_not_importable() -> None:
    # child.py runs by path; its directory (the package) must not shadow user modules.
    result = run("import sys; assert 'postmortem' not in sys.modules", "postmortem")
    assert result.outcome == "failed" and result.failed_step == 1


def test_target_needs_no_plugin() -> None:
    result = run("import sys; assert 'pytest_runtimeconflict' not in sys.modules")
    assert result.outcome == "passed", result.message


@pytest.mark.skipif(sys.platform != "linux", reason="Linux /proc and ELF")
def test_step_names_decide_import_or_statement() -> None:
    from pytest_runtimeconflict.sandbox.child import is_module_name

    assert is_module_name("numpy") and is_module_name("scipy.linalg")
    assert not is_module_name("pass") and not is_module_name("import numpy")
    assert not is_module_name("x = 1") and not is_module_name("os.path.join('a')")
