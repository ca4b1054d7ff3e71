"""gdb runs only where the evidence is read: minimisation probes, experiments and the binding
trace go without it (``RunSpec.backtrace``), the minimal order's run has it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.minimise import Runner
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

CRASH = "import ctypes; ctypes.string_at(0)"


def _result(spec: RunSpec, outcome: str = "crashed") -> RunResult:
    return RunResult(spec=spec, outcome=outcome, signal="SIGSEGV" if outcome == "crashed" else None)


def test_runner_searches_without_backtrace_and_reruns_the_minimal_order_with_it() -> None:
    made: list[RunSpec] = []

    def run(spec: RunSpec) -> RunResult:
        made.append(spec)
        return _result(spec)

    runner = Runner(run, 10)
    spec = RunSpec(steps=("json", CRASH))
    probe = runner(spec)
    assert not made[-1].backtrace and not probe.spec.backtrace
    full = runner.full(spec)
    assert made[-1].backtrace and full.spec.backtrace
    assert runner.full(spec) is full and len(made) == 2  # cached from now on
    assert runner.used == 2


def test_a_minimal_rerun_that_does_not_fail_the_same_way_keeps_the_probe() -> None:
    outcomes = iter(["crashed", "passed"])  # a crash that does not recur every time

    def run(spec: RunSpec) -> RunResult:
        return _result(spec, next(outcomes))

    runner = Runner(run, 10)
    spec = RunSpec(steps=(CRASH,))
    probe = runner(spec)
    assert runner.full(spec) is probe


@pytest.mark.skipif(shutil.which("gdb") is None, reason="needs gdb")
def test_real_diagnosis_has_a_backtrace_only_on_the_runs_it_reads() -> None:
    made: list[RunSpec] = []

    def run(spec: RunSpec) -> RunResult:
        made.append(spec)
        return run_spec(spec)

    spec = RunSpec(steps=("json", "import os", CRASH, "import sys"), timeout=30)
    original = run_spec(spec)
    assert original.outcome == "crashed" and original.gdb_backtrace
    d = diagnose(spec, original, run=run)
    assert d.minimal_steps == (CRASH,)
    assert d.minimal_result.gdb_backtrace  # the evidence's run: re-run with gdb
    with_gdb = [s for s in made if s.backtrace]
    assert [s.steps for s in with_gdb] == [(CRASH,)]  # nothing else ran gdb
    assert len(made) > len(with_gdb)
    assert d.minimal_result.spec.backtrace


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb is not installed")
def test_an_interpreter_behind_a_wrapper_script_still_gets_its_backtrace(tmp_path: Path) -> None:
    """``--rc-python`` may be a script that execs the interpreter (pyenv shims, a counting
    wrapper): gdb reads the core with the executable the process ran, not with the script."""
    import sys

    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    result = run_spec(RunSpec(steps=(CRASH,), python=str(wrapper), exercise=False))
    assert result.outcome == "crashed", result.message
    assert result.gdb_backtrace and "#0 " in result.gdb_backtrace, result.gdb_backtrace
