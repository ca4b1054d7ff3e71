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


def test_a_preload_whose_dependency_lies_beside_it_gets_that_directory(
    tmp_path: Path, unloadable: Path
) -> None:
    """auditwheel vendors a wheel's libraries side by side without RUNPATHs of their own (only
    the extension's RUNPATH leads there): preloaded alone, such a library cannot load. The
    preload experiments put its directory on LD_LIBRARY_PATH, so they can run (and be a
    workaround the user can apply); a dependency found nowhere stays could-not-start."""
    from pytest_runtimeconflict.diagnosis.experiments import _preloads

    (tmp_path / "dep.c").write_text("int zz_dep(void) { return 1; }\n")
    (tmp_path / "lib.c").write_text("int zz_dep(void);\nint zz_top(void) { return zz_dep(); }\n")
    cc = ["gcc", "-shared", "-fPIC"]
    subprocess.run([*cc, "-o", tmp_path / "libzz_dep.so", "-Wl,-soname,libzz_dep.so", tmp_path / "dep.c"], check=True)  # fmt: skip
    subprocess.run([*cc, "-o", tmp_path / "libzz_top.so", tmp_path / "lib.c", tmp_path / "libzz_dep.so"], check=True)  # fmt: skip
    top = str(tmp_path / "libzz_top.so")
    spec = RunSpec(steps=("json",), python=sys.executable, exercise=False)
    alone = run_spec(dataclasses.replace(spec, ld_preload=(top,)))
    assert alone.outcome == "could-not-start" and "libzz_dep.so" in alone.message
    preload, ld_preload = _preloads(spec, [top])
    assert dict(ld_preload.spec.env)["LD_LIBRARY_PATH"].split(":")[0] == str(tmp_path)
    assert ld_preload.change == f"start Python with LD_LIBRARY_PATH={tmp_path} LD_PRELOAD={top}"
    assert preload.change.endswith(f"(with LD_LIBRARY_PATH={tmp_path})")
    assert run_spec(ld_preload.spec).outcome == "passed"
    assert run_spec(preload.spec).outcome == "passed"
    # nothing beside it to find: unchanged
    absent = _preloads(spec, [str(unloadable)])
    assert all("LD_LIBRARY_PATH" not in dict(e.spec.env) for e in absent)
