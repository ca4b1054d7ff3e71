"""Covering-sequence items: a sequence run through, repaired around each conflict that stops
it, so that every tuple of it is exercised or blocked by a named conflict. No pytest import."""

from __future__ import annotations

from pytest_runtimeconflict.engine.planned_runs import PlannedRunner
from pytest_runtimeconflict.engine.repeats import ItemFailures
from pytest_runtimeconflict.engine.verdicts import (
    ItemVerdict,
    Pair,
    PlanOutcome,
    partners,
    repairs,
)
from pytest_runtimeconflict.model.entry import RunEntry
from pytest_runtimeconflict.model.plan import PlannedItem
from pytest_runtimeconflict.planning.sequences import tuples_covered

MAX_VARIANT_CONFLICTS = 6  # conflicts diagnosed in one covering item under a variant
HANG_NOTE = (
    "hung under this load mode: reported as it happened, not minimised (each further run could "
    "wait the whole timeout); the ordered tuples it had not exercised yet are counted as not run"
)
CAP_NOTE = (
    f"stopped after {MAX_VARIANT_CONFLICTS} conflicts under this load mode; the ordered tuples "
    "it had not exercised yet are counted as not run"
)


def run_sequence_item(runner: PlannedRunner, index: int, item: PlannedItem) -> ItemVerdict:
    """A covering sequence, repaired around each conflict that stops it, so that every
    tuple of it is exercised or blocked by a named conflict."""
    host = runner.host
    planned = item.runs[0]
    failures = ItemFailures()
    strength = host.plan.strength
    wanted = tuples_covered(planned.order, strength)
    exercised: set[tuple[str, ...]] = set()
    outcome = host.outcome()
    # (order, forced): a repair after a conflict that struck once every import had run
    # (workloads, runtime exercising) is forced, since it may hide a further conflict
    # although every tuple was imported.
    work: list[tuple[tuple[str, ...], bool]] = [(planned.order, True)]
    budget = 2 * len(planned.order) + 2
    # Under a load mode that conflicts with many modules (every import global, a preloaded
    # runtime) each conflict costs a diagnosis of a long sequence: stop after a few.
    conflicts = 0 if planned.variant.is_plain else MAX_VARIANT_CONFLICTS
    while work and budget > 0:
        order, forced = work.pop(0)
        if not forced and not (tuples_covered(order, strength) & wanted) - exercised:
            continue
        budget -= 1
        entry, cut, pair = runner.run_planned(
            index, item, planned, order, failures, experiments=False
        )
        assert entry.plan is not None
        executed = entry.plan.executed
        exercised |= tuples_covered(executed, strength)
        conflicts, stop = _settle(runner, outcome, item, entry, pair, conflicts)
        entry = outcome.entries[-1]  # with the marks recording it added
        if stop:
            break
        if cut is not None:
            after_steps = len(executed) == len(order)
            # Once every import ran, each tuple has met: the repair only looks for a
            # further conflict among the rest (dropping the partners would meet the same
            # conflict again with the next partner).
            same = failures.by_id(entry.same_conflict_as)
            involved = partners(entry, pair, after_steps, same.minimal if same else ())
            found = repairs(order, cut, involved)
            # forced only after a new conflict: one an earlier run or item names is known,
            # and its repairs run only for tuples not yet exercised
            new = pair is not None and entry.duplicate_of is None
            work.extend((r, after_steps and new) for r in found)
    return outcome.verdict(host.settings)


def _settle(
    runner: PlannedRunner,
    outcome: PlanOutcome,
    item: PlannedItem,
    entry: RunEntry,
    pair: Pair | None,
    conflicts: int,
) -> tuple[int, bool]:
    """Record one run of a covering item; (conflicts left, whether the item stops): at an
    unusable load mode, at a hang under a variant, or at the variant's conflict cap."""
    if entry.variant_unusable:
        outcome.entries.append(entry)
        outcome.notes.append(entry.variant_unusable)
        return conflicts, True
    if pair is None:
        if entry.same_failure_as is not None:
            outcome.add_owned(entry)
        else:
            outcome.entries.append(entry)
        return conflicts, False
    if entry.outcome == "hung" and conflicts:
        outcome.add(entry, pair, lambda *_: None, runner.host.fails)
        outcome.notes.append(f"{item.name}: {HANG_NOTE}")
        return conflicts, True
    outcome.add(entry, pair, runner.earlier_owner, runner.host.fails, runner.complete)
    if conflicts == 1:
        outcome.notes.append(f"{item.name}: {CAP_NOTE}")
    return conflicts - 1, conflicts == 1
