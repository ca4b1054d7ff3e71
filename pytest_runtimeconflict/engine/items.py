"""The engine side of planned items beyond covering sequences: target and fork items (each
planned run once, a static finding judged against what the runs showed), and what every
planned run's report entry carries (its item, variant, executed imports, masked pairs, skipped
workloads), the minimal load mode of a conflict found under a variant, and which earlier
planned run can own a conflict. No pytest import."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from pytest_runtimeconflict.engine.verdicts import ItemVerdict, PlanOutcome
from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec
from pytest_runtimeconflict.model.plan import Plan, PlanContext, PlannedItem, PlannedRun, order_text
from pytest_runtimeconflict.planning.targets import not_reproduced_text, reproduces
from pytest_runtimeconflict.planning.workloads import skipped_notes
from pytest_runtimeconflict.vocabulary import PLAN_NODE, is_import_step


def run_target_item(state: Any, index: int, item: PlannedItem) -> ItemVerdict:
    """Every planned run of a target or fork item once; a failure seen again in another
    order of the same modules is not diagnosed twice, and the counter-experiments run once per
    conflict (on its first run that no earlier item owns), as for covering sequences. Each
    static finding of the item that no run reproduced is reported: it fails the item when it
    is an ``error`` and ``--rc-fail-on`` fails on errors, else it is a warning."""
    outcome = state.outcome()
    known = ItemFailures()
    for planned in item.runs:
        entry, _cut, pair = state.run_planned(
            index, item, planned, planned.order, known, experiments=False
        )
        outcome.entries.append(entry)
        if entry.get("variant_unusable"):
            outcome.notes.append(entry["variant_unusable"])
        elif entry.get("same_failure_as"):
            outcome.add_owned(entry)
        elif pair is not None:
            # a hang under a load mode is reported as it happened (every run waits it out)
            hang = entry["outcome"] == "hung" and not planned.variant.is_plain
            outcome.add(
                entry, pair, state.earlier_owner, state.fails, None if hang else state.complete
            )
    judge_findings(item, outcome, state.fails("failed"))
    return outcome.verdict(state.settings)


def judge_findings(item: PlannedItem, outcome: PlanOutcome, fail_errors: bool) -> None:
    """Record on the item's last entry which findings its runs reproduced; report the rest."""
    if not item.findings or not outcome.entries:
        return
    tried = [e["id"] for e in outcome.entries]
    judged = []
    for finding in item.findings:
        hits = [e["outcome"] for e in outcome.entries if reproduces(finding, e)]
        hit = bool(hits)
        text = "" if hit else not_reproduced_text(finding, tried)
        how = next((o for o in hits if o != "latent"), hits[0] if hits else None)
        judged.append(dict(finding.to_json(), reproduced=hit, reproduced_as=how, text=text))
        if hit:
            continue
        if finding.severity == "error" and fail_errors:
            if outcome.is_known_finding(outcome.entries[-1], finding):
                outcome.known.setdefault(f"static:{finding.rule}", text.splitlines()[0])
            else:
                outcome.failures.setdefault(f"static:{finding.rule}", text)
        else:
            outcome.notes.append(text)
    outcome.entries[-1]["target"] = {"item": item.name, "findings": judged}


def annotate(
    entry: dict[str, Any],
    plan: Plan,
    index: int,
    item: PlannedItem,
    planned: PlannedRun,
    order: tuple[str, ...],
    executed: tuple[str, ...],
) -> None:
    """The ``plan`` record of a planned run's report entry, and the workloads it skipped."""
    entry["plan"] = {
        "index": index,
        "item": item.name,
        "kind": item.kind,
        "sequence": list(planned.order),
        "order": list(order),
        "modules": list(plan.modules),
        "strength": plan.strength,
        "executed": list(executed),
        "cut": len(executed) < len(order),
        "variant": planned.variant.to_json(),
        "masked": [[a, b, name] for (a, b), name in masked_pairs(executed, plan.context)],
    }
    skipped = skipped_notes(entry.get("stdout_tail", ""))
    if skipped:
        entry["workloads_skipped"] = skipped


def masked_pairs(
    order: Sequence[str], context: PlanContext | None
) -> list[tuple[tuple[str, str], str]]:
    """Ordered pairs (a, b) of ``order`` where an earlier module already loaded another file
    under a SONAME a needs, so a's own copy never loaded when a met b (with that SONAME)."""
    if context is None or not context.closures:
        return []
    out = []
    for i, module in enumerate(order):
        own = dict(context.closure(module))
        shadowed = None
        for earlier in order[:i]:
            for name, path in context.closure(earlier):
                if name in own and not _same_file(own[name], path):
                    shadowed = name
                    break
            if shadowed:
                break
        if shadowed:
            out += [((module, later), shadowed) for later in order[i + 1 :]]
    return out


def _same_file(a: str, b: str) -> bool:
    """One file, or two copies with one name and size (auditwheel names a vendored library
    after its content hash, so two wheels' ``libgfortran-83c28eba.so.5.0.0`` are one build)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.basename(a) == os.path.basename(b) and (
            os.path.getsize(a) == os.path.getsize(b)
        )
    except OSError:
        return False


def unusable(result: RunResult) -> str | None:
    """Why a run's load mode could not be used at all (not a conflict between the modules):
    the interpreter did not start with its ``LD_PRELOAD``, or a preload failed to load."""
    if result.outcome == "could-not-start":
        return result.message
    if result.outcome == "failed" and result.phase == "preload":
        return result.message
    return None


def reduce_load_mode(
    diagnosis: Diagnosis, run: Callable[[RunSpec], RunResult]
) -> tuple[dict[str, Any], RunSpec]:
    """The smallest load mode under which the minimal order still fails the same way: each
    RTLD_GLOBAL import, preload, LD_PRELOAD entry and environment setting of the minimal run
    is dropped in turn when the run fails the same way without it (one child run each).
    Returns the report's ``load_mode`` and the minimal run's spec in that mode."""
    spec = diagnosis.minimal_result.spec
    reference = _signature(diagnosis.minimal_result)
    spec = dataclasses.replace(
        spec, global_imports=tuple(g for g in spec.global_imports if g in spec.steps)
    )
    runs = 0
    for field_name in ("global_imports", "preload", "ld_preload", "env"):
        for value in getattr(spec, field_name):
            rest: Any = tuple(v for v in getattr(spec, field_name) if v != value)
            candidate = dataclasses.replace(spec, **{field_name: rest})
            runs += 1
            if _signature(run(dataclasses.replace(candidate, backtrace=False))) == reference:
                spec = candidate
    imports = [s for s in spec.steps if is_import_step(s) and " " not in s.strip()]
    mode = {
        "global_imports": list(spec.global_imports),
        "preload": list(spec.preload),
        "ld_preload": list(spec.ld_preload),
        "env": dict(spec.env),
        "order": order_text(tuple(imports), _as_variant(spec)),
        "runs": runs,
    }
    return mode, spec


def _as_variant(spec: RunSpec) -> Any:
    from pytest_runtimeconflict.model.plan import Variant

    return Variant(global_imports=spec.global_imports)


def compatible_run(planned: PlannedRun, wanted: Sequence[str], mode: dict[str, Any]) -> bool:
    """Whether ``planned`` imports every module of ``wanted`` (in any order: a conflict's key
    does not depend on the order, and the re-run decides), loaded as the conflict's minimal
    load mode ``mode`` (plain when empty)."""
    if not set(wanted) <= set(planned.order):
        return False
    variant = planned.variant
    wanted_set = set(wanted)
    if set(variant.global_imports) & wanted_set != set(mode.get("global_imports", ())):
        return False
    return (
        set(variant.preload) == set(mode.get("preload", ()))
        and set(variant.ld_preload) == set(mode.get("ld_preload", ()))
        and dict(variant.env) == dict(mode.get("env", {}))
    )


def owner_candidates(
    earlier: Sequence[PlannedItem], item: PlannedItem, wanted: Sequence[str], mode: dict[str, Any]
) -> list[tuple[PlannedItem, PlannedRun]]:
    """Earlier planned runs that import every module of ``wanted`` with the same extra probes
    as ``item``: those loaded as the conflict's minimal ``mode`` first, then, when that mode is
    not plain, every run under another load mode (a preload of numpy's OpenBLAS and numpy
    imported RTLD_GLOBAL give one conflict), then the others; each group in plan order, one
    run per item except the second (one importing ``wanted`` in that order if any)."""
    needs_mode = any(mode.get(k) for k in ("global_imports", "preload", "ld_preload", "env"))
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
    variant: Any,
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


SUB_RUN_TRIES = 2  # earlier planned runs re-run before a failure is diagnosed


def owned_by_sub_run(
    state: Any,
    index: int,
    item: PlannedItem,
    planned: PlannedRun,
    spec: RunSpec,
    result: RunResult,
    executed: Sequence[str],
) -> dict[str, Any] | None:
    """Before a failed planned run is diagnosed: whether an earlier item's planned run, cut
    after the module whose import or workload failed and loaded as planned, is a
    sub-experiment of it (:func:`sub_runs`) that fails the same way at the same step. That
    item then meets the failure itself and reports it, so this run is not minimised again.
    At most ``SUB_RUN_TRIES`` child runs, in :func:`sub_runs`' order. Returns the report's
    ``same_failure_as`` record (owner node id, the earlier run, its modules, the step) or
    None. Hangs are left to the diagnosis (each re-run could wait the whole timeout)."""
    from pytest_runtimeconflict.sandbox.runner import run_spec

    if result.outcome == "hung" or result.failed_step is None or index == 0:
        return None
    plan = state.plan()
    step = spec.steps[result.failed_step]
    module = plan.modules_of([step])
    if not module:
        return None
    earlier = [i for i in plan.items[:index] if f"{PLAN_NODE}::{i.name}" not in state.not_run]
    reference = _signature(result)
    for owner, run, prefix in sub_runs(earlier, item, module[0], executed, planned.variant)[
        :SUB_RUN_TRIES
    ]:
        sub = run.variant.apply(state.spec(plan.steps_for(prefix), probes=owner.probes))
        sub = dataclasses.replace(
            sub,
            global_imports=tuple(g for g in sub.global_imports if g in prefix),
            backtrace=False,
        )
        again = run_spec(sub)
        if again.failed_step is None or sub.steps[again.failed_step] != step:
            continue
        if _signature(again) == reference:
            return {
                "item": f"{PLAN_NODE}::{owner.name}",
                "run": PlannedRun(prefix, run.variant).describe(),
                "modules": list(prefix),
                "step": step,
            }
    return None


@dataclasses.dataclass(frozen=True)
class Diagnosed:
    """A failure one item diagnosed: what a later run of the item is compared with."""

    signature: tuple[str, ...]
    place: str
    modules: frozenset[str]
    loads: tuple[Any, ...]
    minimal: tuple[str, ...]
    key: str
    run_id: str


@dataclasses.dataclass
class ItemFailures:
    """The failures an item diagnosed. A later run of the item that fails the same way (the
    same failure signature) is that conflict again, not diagnosed twice, when it imported the
    same modules under the same RTLD_GLOBAL imports (another order of them), or when it holds
    an earlier run's minimal order (as a subsequence of its steps, loaded the same way) and
    failed at the same place (the same step, or the same runtime probe after the steps): a
    repair of a sequence meets a conflict that strikes after the imports again and again."""

    found: list[Diagnosed] = dataclasses.field(default_factory=list)

    def add(self, spec: RunSpec, result: RunResult, order: Sequence[str], diagnosis: Any) -> None:
        self.found.append(
            Diagnosed(
                _signature(result), failure_place(spec, result), frozenset(order),
                _loads(spec), tuple(diagnosis.minimal_steps), diagnosis.key, str(spec.id),
            )
        )  # fmt: skip

    def match(self, spec: RunSpec, result: RunResult, order: Sequence[str]) -> Diagnosed | None:
        signature, place, loads = (
            _signature(result),
            failure_place(spec, result),
            _loads(spec),
        )
        for earlier in self.found:
            if earlier.signature != signature:
                continue
            same_globals = earlier.loads[0] == loads[0]  # _loads: global imports first
            if earlier.modules == frozenset(order) and same_globals:
                return earlier
            held = earlier.loads == loads and _subsequence(earlier.minimal, spec.steps)
            if held and earlier.place == place:
                return earlier
        return None

    def by_id(self, run_id: Any) -> Diagnosed | None:
        return next((d for d in self.found if d.run_id == run_id), None)


def _signature(result: RunResult) -> tuple[str, ...]:
    """What "fails the same way" compares (imported on first use: the diagnosis package
    brings the sandbox with it)."""
    from pytest_runtimeconflict.diagnosis.signature import failure_signature

    return failure_signature(result)


def failure_place(spec: RunSpec, result: RunResult) -> str:
    """Where a run failed: its failing step, else the phase (and the runtime probe running)."""
    from pytest_runtimeconflict.planning.workloads import probe_label

    if result.failed_step is not None and 0 <= result.failed_step < len(spec.steps):
        return spec.steps[result.failed_step]
    return f"{result.phase}: {probe_label(result.phase, result.exercised)}"


def _loads(spec: RunSpec) -> tuple[Any, ...]:
    return (
        frozenset(spec.global_imports),
        tuple(spec.preload),
        tuple(spec.ld_preload),
        tuple(spec.env),
    )


def _subsequence(part: Sequence[str], whole: Sequence[str]) -> bool:
    rest = iter(whole)
    return all(any(step == s for s in rest) for step in part)
