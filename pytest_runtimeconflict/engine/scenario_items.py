"""Scenario-file items: one ``[[run]]`` of a scenario file run in a child and compared with
its expectation. No pytest import."""

from __future__ import annotations

import dataclasses

from pytest_runtimeconflict.engine.host import ItemHost
from pytest_runtimeconflict.engine.planned_runs import with_diagnosis
from pytest_runtimeconflict.engine.verdicts import ItemVerdict, known_text
from pytest_runtimeconflict.model import Diagnosis
from pytest_runtimeconflict.model.entry import RunEntry, ScenarioRecord
from pytest_runtimeconflict.report.latent import latent_warnings
from pytest_runtimeconflict.scenario import Scenario, ScenarioRun


def run_scenario_item(host: ItemHost, scenario: Scenario, run: ScenarioRun) -> ItemVerdict:
    """Run one ``[[run]]`` of a scenario file and compare with its expectation."""
    from pytest_runtimeconflict.sandbox.runner import children_by_purpose, children_started

    spec = dataclasses.replace(
        run.spec,
        python=host.settings.python,
        exercise=run.spec.exercise and host.settings.exercise,
        id=f"{scenario.name}::{run.id}",
    )
    before, before_by = children_started(), children_by_purpose()
    result = host.run(spec)
    entry = RunEntry(result)
    diagnosis: Diagnosis | None = None
    if result.outcome != "passed":
        diagnosis = host.diagnose(spec, result)
        entry = with_diagnosis(entry, result, diagnosis)
    text = f"{result.message}\n{result.stderr_tail}"
    matched, why = run.expect.matches(result.outcome, result.signal, result.failed_step, text)
    record = ScenarioRecord(
        str(scenario.path), scenario.name, run.id, dataclasses.asdict(run.expect), matched
    )
    entry = entry.replace(
        child_runs=children_started() - before,
        child_runs_by_purpose=children_by_purpose(before_by),
        scenario=record,
    )
    if run.expect.outcome == "passed":
        return _expected_to_pass(host, entry, diagnosis)
    return _expected_to_fail(scenario, run, entry, diagnosis, why)


def _expected_to_pass(host: ItemHost, entry: RunEntry, diagnosis: Diagnosis | None) -> ItemVerdict:
    """A control run: a latent run warns, a known conflict xfails, any other failure fails."""
    from pytest_runtimeconflict.report.text import format_failure, format_summary_line

    result = entry.result
    if result.outcome == "latent" and not host.fails("latent"):
        return ItemVerdict((entry,), warnings=tuple(latent_warnings(entry.to_json())))
    known = False
    if diagnosis is not None:
        known, entry = host.is_known(entry)
    if known and diagnosis is not None:
        xfail = known_text(host.settings, [format_summary_line(diagnosis)])
        return ItemVerdict((entry,), xfail=xfail)
    if result.outcome != "passed":
        return ItemVerdict((entry,), failure=format_failure(result, diagnosis))
    return ItemVerdict((entry,))


def _expected_to_fail(
    scenario: Scenario, run: ScenarioRun, entry: RunEntry, diagnosis: Diagnosis | None, why: str
) -> ItemVerdict:
    """A run expected to crash, fail or hang: xfail when it did as expected."""
    from pytest_runtimeconflict.report.text import format_failure, format_summary_line

    result, expected = entry.result, run.expect.outcome
    if entry.scenario is not None and entry.scenario.matched:
        reason = format_summary_line(diagnosis) if diagnosis else result.outcome
        return ItemVerdict((entry,), xfail=f"known conflict reproduced ({expected}): {reason}")
    if result.outcome == "passed":
        failure = (
            f"[XPASS(strict)] {scenario.name}::{run.id}: expected {expected} but the run "
            "passed: the conflict no longer happens; update the scenario's [run.expect]"
        )
    else:
        failure = f"expected {expected} but {why}\n\n" + format_failure(result, diagnosis)
    return ItemVerdict((entry,), failure=failure)
