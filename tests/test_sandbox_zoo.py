"""Every run of every zoo scenario through ``run_scenario``: outcome, signal, failed step, and
``libraries`` naming the scenario's objects (its ``libraries`` fnmatch patterns)."""

from __future__ import annotations

import dataclasses
import fnmatch
import os

import pytest
from zoo_support import SCENARIOS_DIR, ZooVenv

from pytest_runtimeconflict.model import RunResult
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.scenario import load_scenarios
from pytest_runtimeconflict.static.rules import rule_of

pytestmark = pytest.mark.slow

RUNS = [(s.name, r.id) for s in load_scenarios(SCENARIOS_DIR) for r in s.runs]


def _matching(result: RunResult, pattern: str) -> list[str]:
    return [p for p in result.libraries if fnmatch.fnmatch(os.path.basename(p), pattern)]


def _explain(result: RunResult) -> str:
    data = result.to_json()
    keys = ("outcome", "signal", "failed_step", "phase", "message", "libraries", "stderr_tail")
    return "\n".join(f"{k}: {data[k]}" for k in keys)


@pytest.mark.parametrize("scenario_name, run_id", RUNS, ids=[f"{s}::{r}" for s, r in RUNS])
def test_zoo_run(zoo_venv: ZooVenv, scenario_name: str, run_id: str,
                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    zoo_venv.wheels.check(scenario_name)
    scenario = zoo_venv.scenarios[scenario_name]
    run = next(r for r in scenario.runs if r.id == run_id)
    spec = dataclasses.replace(run.spec, python=zoo_venv.python, id=f"{scenario_name}::{run_id}")
    result = run_spec(spec)
    if run.expect.outcome == "latent" and result.phase == "exercise":
        # Exercising (on by default) drives a latent duplicate to the crash it would
        # cause in use (two libiomp5: OMP Error #15). Without it the manifest's "latent" holds.
        assert result.outcome == "crashed" and result.failed_step is None, _explain(result)
        assert scenario.rule in [f.rule for f in result.findings], _explain(result)
        result = run_spec(dataclasses.replace(spec, exercise=False))
    ok, why = run.expect.matches(
        result.outcome, result.signal, result.failed_step, result.message + result.stderr_tail
    )
    assert ok, f"{why}\n{_explain(result)}"
    rule = rule_of(scenario.rule)
    # a rule named only by the diagnosis (from experiments) has no static finding to show
    if result.outcome in ("crashed", "latent") and rule is not None and not rule.verdict_only:
        assert scenario.rule in [f.rule for f in result.findings], _explain(result)
        for pattern in scenario.libraries:
            assert _matching(result, pattern), f"{pattern} not blamed\n{_explain(result)}"
