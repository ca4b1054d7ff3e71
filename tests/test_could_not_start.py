"""A run whose child cannot start with its settings (an LD_PRELOAD whose dependencies the
loader cannot find) is an outcome, ``could-not-start``, not an error that ends the run; the
diagnosis records such an experiment and goes on."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec


@pytest.fixture(scope="module")
def unloadable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A shared library that needs ``libzz_absent.so``, which exists nowhere."""
    work = tmp_path_factory.mktemp("unloadable")
    (work / "stub.c").write_text("int zz_absent(void) { return 1; }\n")
    (work / "lib.c").write_text("int zz_absent(void);\nint zz_user(void) { return zz_absent(); }\n")
    cc = ["gcc", "-shared", "-fPIC"]
    subprocess.run([*cc, "-o", work / "libzz_absent.so", "-Wl,-soname,libzz_absent.so", work / "stub.c"], check=True)  # fmt: skip
    subprocess.run([*cc, "-o", work / "libzz_user.so", work / "lib.c", work / "libzz_absent.so"], check=True)  # fmt: skip
    (work / "libzz_absent.so").unlink()
    return work / "libzz_user.so"


def test_an_unstartable_child_is_an_outcome(unloadable: Path) -> None:
    result = run_spec(RunSpec(steps=("json",), ld_preload=(str(unloadable),)))
    assert result.outcome == "could-not-start"
    assert "libzz_absent.so" in result.message
    assert result.to_json()["outcome"] == "could-not-start"


def test_an_experiment_that_cannot_start_does_not_end_the_diagnosis(unloadable: Path) -> None:
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    spec = RunSpec(steps=("json", "csv", crash), python=sys.executable)
    result = run_spec(spec)
    assert result.outcome == "crashed"

    def run(candidate: RunSpec) -> RunResult:
        # every child after the first also preloads the unloadable library: none can start
        return run_spec(dataclasses.replace(candidate, ld_preload=(str(unloadable),)))

    diagnosis = diagnose(spec, result, run=run, max_runs=8)
    assert diagnosis.minimal_result.outcome == "crashed"  # the real crash stays in the report
    data = diagnosis.to_json()
    started = [e for e in data["experiments"] if e["outcome"] == "could-not-start"]
    assert started, data["experiments"]  # the reversed order was tried and could not start
    assert all(e["effect"].startswith("could-not-start:") for e in started)
    assert "libzz_absent.so" in started[0]["effect"]
    assert not any(e["avoided"] for e in started)
    # the failure text says why it could not start, not only that
    from pytest_runtimeconflict.report.text import format_failure

    lines = [ln for ln in format_failure(result, diagnosis).splitlines() if "could-not-start" in ln]
    assert lines and all("libzz_absent.so" in ln for ln in lines), lines
