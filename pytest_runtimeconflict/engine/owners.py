"""Who owns a failure: the earlier plan item that meets it too and so reports it.

Before a failed planned run is diagnosed, earlier items' planned runs that are sub-experiments
of it are re-run (:func:`owned_by_sub_run`); after a conflict is diagnosed, earlier planned
runs that import its modules under its load mode are re-run and compared with it
(:func:`earlier_owner`). Deterministic without talking to other xdist workers. No pytest import.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from pytest_runtimeconflict.engine.host import ItemHost, node_id
from pytest_runtimeconflict.engine.repeats import signature_of
from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec
from pytest_runtimeconflict.model.entry import LoadMode, RunEntry, SameFailure
from pytest_runtimeconflict.model.plan import PlannedItem, PlannedRun, Variant

# An earlier run's prefix of at most this many imports is minimised to compare conflict keys;
# a longer one is compared by failure signature and the conflict's libraries (one child run).
SHORT_PREFIX = 4
OWNER_TRIES = 3  # earlier planned runs re-run to find the owner of a conflict
SUB_RUN_TRIES = 2  # earlier planned runs re-run before a failure is diagnosed


def owned_by_sub_run(
    host: ItemHost,
    index: int,
    item: PlannedItem,
    planned: PlannedRun,
    spec: RunSpec,
    result: RunResult,
    executed: Sequence[str],
) -> SameFailure | None:
    """Before a failed planned run is diagnosed: whether an earlier item's planned run, cut
    after the module whose import or workload failed and loaded as planned, is a
    sub-experiment of it (:func:`sub_runs`) that fails the same way at the same step. That
    item then meets the failure itself and reports it, so this run is not minimised again.
    At most ``SUB_RUN_TRIES`` child runs, in :func:`sub_runs`' order. Returns the report's
    ``same_failure_as`` record (owner node id, the earlier run, its modules, the step) or
    None. Hangs are left to the diagnosis (each re-run could wait the whole timeout)."""
    if result.outcome == "hung" or result.failed_step is None or index == 0:
        return None
    plan = host.plan
    step = spec.steps[result.failed_step]
    module = plan.modules_of([step])
    if not module:
        return None
    earlier = host.earlier_items(index)
    reference = signature_of(result)
    for owner, run, prefix in sub_runs(earlier, item, module[0], executed, planned.variant)[
        :SUB_RUN_TRIES
    ]:
        sub = run.variant.apply(host.spec(plan.steps_for(prefix), probes=owner.probes))
        sub = dataclasses.replace(
            sub,
            global_imports=tuple(g for g in sub.global_imports if g in prefix),
            backtrace=False,
        )
        again = host.run(sub)
        if again.failed_step is None or sub.steps[again.failed_step] != step:
            continue
        if signature_of(again) == reference:
            return SameFailure(
                node_id(owner.name), PlannedRun(prefix, run.variant).describe(), prefix, step
            )
    return None


def earlier_owner(host: ItemHost, entry: RunEntry, diagnosis: Diagnosis) -> str | None:
    """The node id of an earlier item that reproduces the same conflict, or None.

    Deterministic without talking to other workers: the earlier planned runs that import
    the conflict's modules are candidates, those in the conflict's minimal load mode first
    (then the others, in plan order: the same conflict may show under another mode); at
    most ``OWNER_TRIES`` of them are re-run here, each only up to the last of those modules,
    and compared with the conflict.
    """
    assert entry.plan is not None
    plan, index = host.plan, entry.plan.index
    # the modules of the minimal order, a workload's module included (so the re-run
    # reaches the workload that showed the conflict)
    wanted = list(plan.modules_of(diagnosis.minimal_steps))
    if not wanted:
        return None
    mode = entry.load_mode
    candidates = owner_candidates(host.earlier_items(index), plan.items[index], wanted, mode)
    for earlier, planned in candidates[:OWNER_TRIES]:
        end = max(planned.order.index(m) for m in wanted) + 1
        base = host.spec(plan.steps_for(planned.order[:end]), probes=earlier.probes)
        spec = planned.variant.apply(base)
        result = host.run(dataclasses.replace(spec, backtrace=False))
        if result.outcome in ("passed", "latent", "could-not-start"):
            continue
        if end <= SHORT_PREFIX:
            # Minimised like the conflict it is compared with, so the keys compare.
            same = host.diagnose(spec, result, experiments=False).key == diagnosis.key
        else:
            same = same_failure(result, diagnosis)
        if same:
            return node_id(earlier.name)
    return None


def same_failure(result: RunResult, diagnosis: Diagnosis) -> bool:
    """Whether ``result`` fails the way the diagnosed conflict does, with the conflict's
    libraries mapped."""
    if signature_of(result) != signature_of(diagnosis.minimal_result):
        return False
    mapped = {os.path.realpath(p) for p in result.mapped}
    return all(os.path.realpath(lib.path) in mapped for lib in diagnosis.libraries)


def compatible_run(planned: PlannedRun, wanted: Sequence[str], mode: LoadMode | None) -> bool:
    """Whether ``planned`` imports every module of ``wanted`` (in any order: a conflict's key
    does not depend on the order, and the re-run decides), loaded as the conflict's minimal
    load mode ``mode`` (plain when empty)."""
    if not set(wanted) <= set(planned.order):
        return False
    variant = planned.variant
    wanted_set = set(wanted)
    if mode is None:
        return not (set(variant.global_imports) & wanted_set) and not (
            variant.preload or variant.ld_preload or variant.env
        )
    if set(variant.global_imports) & wanted_set != set(mode.global_imports):
        return False
    return (
        set(variant.preload) == set(mode.preload)
        and set(variant.ld_preload) == set(mode.ld_preload)
        and dict(variant.env) == dict(mode.env)
    )


def owner_candidates(
    earlier: Sequence[PlannedItem],
    item: PlannedItem,
    wanted: Sequence[str],
    mode: LoadMode | None,
) -> list[tuple[PlannedItem, PlannedRun]]:
    """Earlier planned runs that import every module of ``wanted`` with the same extra probes
    as ``item``: those loaded as the conflict's minimal ``mode`` first, then, when that mode is
    not plain, every run under another load mode (a preload of numpy's OpenBLAS and numpy
    imported RTLD_GLOBAL give one conflict), then the others; each group in plan order, one
    run per item except the second (one importing ``wanted`` in that order if any)."""
    needs_mode = mode is not None and any(
        (mode.global_imports, mode.preload, mode.ld_preload, mode.env)
    )
    matching, moded, others = [], [], []
    for candidate in earlier:
        if candidate.probes != item.probes:
            continue
        runs = [r for r in candidate.runs if set(wanted) <= set(r.order)]
        runs.sort(key=lambda r: not _in_order(r.order, wanted))  # the conflict's order first
        same = [r for r in runs if compatible_run(r, wanted, mode)]
        if same:
            matching.append((candidate, same[0]))
            continue
        if needs_mode:
            moded += [(candidate, r) for r in runs if not r.variant.is_plain]
        if runs:
            others.append((candidate, runs[0]))
    return list(dict.fromkeys(matching + moded + others))


def _in_order(order: Sequence[str], wanted: Sequence[str]) -> bool:
    positions = [order.index(m) for m in wanted]
    return positions == sorted(positions)


def sub_runs(
    earlier: Sequence[PlannedItem],
    item: PlannedItem,
    module: str,
    executed: Sequence[str],
    variant: Variant,
) -> list[tuple[PlannedItem, PlannedRun, tuple[str, ...]]]:
    """Earlier planned runs whose prefix up to ``module`` is a sub-experiment of a run that
    failed at ``module`` (its import or workload): every module of the prefix was imported in
    that run (``executed``), and each condition the earlier run loads them under (RTLD_GLOBAL
    imports among them, preloads, LD_PRELOAD entries, environment settings) was there too.
    One per item, with the same extra probes as ``item``: those loaded under more of the
    failed run's conditions first (the failure may need them), then shorter prefixes, then
    in plan order. Returns (item, run, prefix) triples."""
    have = set(executed)
    found = []
    for position, candidate in enumerate(earlier):
        if candidate.probes != item.probes:
            continue
        prefixes = [
            (run, tuple(run.order[: run.order.index(module) + 1]))
            for run in candidate.runs
            if module in run.order
        ]
        eligible = [
            ((-len(_conditions(run.variant, set(prefix))), len(prefix), position), run, prefix)
            for run, prefix in prefixes
            if set(prefix) <= have and _loaded_within(run.variant, variant, set(prefix))
        ]
        if eligible:
            rank, run, prefix = min(eligible, key=lambda e: e[0])
            found.append((rank, (candidate, run, prefix)))
    return [triple for _, triple in sorted(found, key=lambda f: f[0])]


def _conditions(variant: Any, modules: set[str] | None = None) -> set[tuple[str, Any]]:
    """The load conditions ``variant`` puts on a run: its RTLD_GLOBAL imports (among
    ``modules`` when given), preloads, LD_PRELOAD entries and environment settings."""
    imported = (
        set(variant.global_imports) if modules is None else set(variant.global_imports) & modules
    )
    return (
        {("global", g) for g in imported}
        | {("preload", p) for p in variant.preload}
        | {("ld_preload", p) for p in variant.ld_preload}
        | {("env", kv) for kv in variant.env}
    )


def _loaded_within(inner: Any, outer: Any, modules: set[str]) -> bool:
    """Whether every load condition of ``inner`` (for ``modules``) is one of ``outer``'s."""
    return _conditions(inner, modules) <= _conditions(outer)
