"""Target and fork items: each planned run once, a static finding judged against what the
runs showed. No pytest import."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

from pytest_runtimeconflict.engine.planned_runs import PlannedRunner
from pytest_runtimeconflict.engine.repeats import ItemFailures
from pytest_runtimeconflict.engine.verdicts import ItemVerdict, PlanOutcome
from pytest_runtimeconflict.model.entry import JudgedFinding, RunEntry, TargetRecord
from pytest_runtimeconflict.model.plan import PlannedItem, PlannedRun
from pytest_runtimeconflict.planning.targets import not_reproduced_text, reproduces


def run_target_item(runner: PlannedRunner, index: int, item: PlannedItem) -> ItemVerdict:
    """Every planned run of a target or fork item once; a failure seen again in another
    order of the same modules is not diagnosed twice, and the counter-experiments run once per
    conflict (on its first run that no earlier item owns), as for covering sequences. Each
    static finding of the item that no run reproduced is reported: it fails the item when it
    is an ``error`` and ``--rc-fail-on`` fails on errors, else it is a warning."""
    host = runner.host
    outcome = host.outcome()
    known = ItemFailures(by_libraries=True)
    queue = list(item.runs)
    while queue:
        planned = queue.pop(0)
        entry, _cut, pair = runner.run_planned(
            index, item, planned, planned.order, known, experiments=False
        )
        queue += unreached_pairs(planned, entry, queue)
        if entry.variant_unusable:
            outcome.entries.append(entry)
            outcome.notes.append(entry.variant_unusable)
        elif entry.same_failure_as is not None:
            outcome.add_owned(entry)
        elif pair is not None:
            # a hang under a load mode is reported as it happened (every run waits it out)
            hang = entry.outcome == "hung" and not planned.variant.is_plain
            outcome.add(
                entry, pair, runner.earlier_owner, host.fails, None if hang else runner.complete
            )
        else:
            outcome.entries.append(entry)
    judge_findings(item, outcome, host.fails("failed"))
    return outcome.verdict(host.settings)


def unreached_pairs(
    planned: PlannedRun, entry: RunEntry, queue: Sequence[PlannedRun]
) -> list[PlannedRun]:
    """After a sweep (three or more modules in one run) that did not run through: its ordered
    pairs, each as a run of its own (as the plan would have had them without the sweep; one
    that meets the sweep's conflict again is recognised as it, not diagnosed twice)."""
    if len(planned.order) < 3 or entry.outcome in ("passed", "latent"):
        return []
    pairs = [PlannedRun(p, planned.variant) for p in combinations(planned.order, 2)]
    return [p for p in pairs if p not in queue]


def judge_findings(item: PlannedItem, outcome: PlanOutcome, fail_errors: bool) -> None:
    """Record on the item's last entry which findings its runs reproduced; report the rest."""
    if not item.findings or not outcome.entries:
        return
    tried = [e.id for e in outcome.entries]
    last = outcome.entries[-1]
    judged = []
    for finding in item.findings:
        hits = [e.outcome for e in outcome.entries if reproduces(finding, e)]
        text = "" if hits else not_reproduced_text(finding, tried)
        how = next((o for o in hits if o != "latent"), hits[0] if hits else None)
        judged.append(JudgedFinding(finding, how, text))
        if hits:
            continue
        if finding.severity == "error" and fail_errors:
            known, last = outcome.is_known_finding(last, finding)
            if known:
                outcome.known.setdefault(f"static:{finding.rule}", text.splitlines()[0])
            else:
                outcome.failures.setdefault(f"static:{finding.rule}", text)
        else:
            outcome.notes.append(text)
    outcome.entries[-1] = last.replace(target=TargetRecord(item.name, tuple(judged)))
