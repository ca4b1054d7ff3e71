"""Scenario-file items: one ``[[run]]`` of a scenario file run in a child and compared with
its expectation. No pytest import."""

from __future__ import annotations

import dataclasses

from pytest_runtimeconflict.engine.host import ItemHost
from pytest_runtimeconflict.engine.planned_runs import fill
from pytest_runtimeconflict.engine.verdicts import ItemVerdict, known_text, latent_warnings
from pytest_runtimeconflict.model import Diagnosis
from pytest_runtimeconflict.scenario import Scenario, ScenarioRun


def run_scenario_item(host: ItemHost, scenario: Scenario, run: ScenarioRun) -> ItemVerdict:
    """Run one ``[[run]]`` of a scenario file and compare with its expectation."""
    from pytest_runtimeconflict.report.text import format_failure, format_summary_line
    from pytest_runtimeconflict.sandbox.runner import children_started

    spec = dataclasses.replace(
        run.spec,
        python=host.settings.python,
        exercise=run.spec.exercise and host.settings.exercise,
        id=f"{scenario.name}::{run.id}",
    )
    before = children_started()
    result = host.run(spec)
    entry = result.to_json()
    diagnosis: Diagnosis | None = None
    if result.outcome != "passed":
        diagnosis = host.diagnose(spec, result)
        fill(entry, result, diagnosis)
    entry["child_runs"] = children_started() - before
    text = f"{result.message}\n{result.stderr_tail}"
    matched, why = run.expect.matches(result.outcome, result.signal, result.failed_step, text)
    entry["scenario"] = {
        "file": str(scenario.path),
        "name": scenario.name,
        "run": run.id,
        "expected": dataclasses.asdict(run.expect),
        "matched": matched,
    }
    verdict = ItemVerdict(entries=[entry])
    expected = run.expect.outcome
    if expected == "passed":
        if result.outcome == "latent" and not host.fails("latent"):
            verdict.warnings = latent_warnings(entry)
        elif diagnosis is not None and host.is_known(entry):
            verdict.xfail = known_text(host.settings, [format_summary_line(diagnosis)])
        elif result.outcome != "passed":
            verdict.failure = format_failure(result, diagnosis)
    elif matched:
        reason = format_summary_line(diagnosis) if diagnosis else result.outcome
        verdict.xfail = f"known conflict reproduced ({expected}): {reason}"
    elif result.outcome == "passed":
        verdict.failure = (
            f"[XPASS(strict)] {scenario.name}::{run.id}: expected {expected} but the run "
            "passed: the conflict no longer happens; update the scenario's [run.expect]"
        )
    else:
        verdict.failure = f"expected {expected} but {why}\n\n" + format_failure(result, diagnosis)
    return verdict
