"""A planned run's report entry (:class:`~..model.entry.RunEntry`) as the run leaves it: its
plan record (item, variant, executed imports, masked pairs), the workloads it skipped; whether
its load mode was usable, and the minimal load mode of a conflict found under a variant. No
pytest import."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from pytest_runtimeconflict.engine.repeats import signature_of
from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec
from pytest_runtimeconflict.model.entry import LoadMode, PlanRecord, RunEntry
from pytest_runtimeconflict.model.plan import (
    Plan,
    PlanContext,
    PlannedItem,
    PlannedRun,
    Variant,
    order_text,
)
from pytest_runtimeconflict.planning.workloads import skipped_notes
from pytest_runtimeconflict.vocabulary import is_import_step


def planned_entry(
    result: RunResult,
    plan: Plan,
    index: int,
    item: PlannedItem,
    planned: PlannedRun,
    order: tuple[str, ...],
    executed: tuple[str, ...],
) -> RunEntry:
    """A planned run's report entry: the run, its plan record, the workloads it skipped."""
    masked = tuple((a, b, name) for (a, b), name in masked_pairs(executed, plan.context))
    record = PlanRecord(
        index=index,
        item=item.name,
        kind=item.kind,
        sequence=tuple(planned.order),
        order=tuple(order),
        modules=tuple(plan.modules),
        strength=plan.strength,
        executed=tuple(executed),
        variant=planned.variant,
        masked=masked,
    )
    skipped = tuple(skipped_notes(result.stdout_tail or ""))
    return RunEntry(result, plan=record, workloads_skipped=skipped)


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
) -> tuple[LoadMode, RunSpec]:
    """The smallest load mode under which the minimal order still fails the same way: each
    RTLD_GLOBAL import, preload, LD_PRELOAD entry and environment setting of the minimal run
    is dropped in turn when the run fails the same way without it (one child run each).
    Returns the report's ``load_mode`` and the minimal run's spec in that mode."""
    spec = diagnosis.minimal_result.spec
    reference = signature_of(diagnosis.minimal_result)
    spec = dataclasses.replace(
        spec, global_imports=tuple(g for g in spec.global_imports if g in spec.steps)
    )
    runs = 0
    for field_name in ("global_imports", "preload", "ld_preload", "env"):
        for value in getattr(spec, field_name):
            rest: Any = tuple(v for v in getattr(spec, field_name) if v != value)
            candidate = dataclasses.replace(spec, **{field_name: rest})
            runs += 1
            if signature_of(run(dataclasses.replace(candidate, backtrace=False))) == reference:
                spec = candidate
    imports = [s for s in spec.steps if is_import_step(s) and " " not in s.strip()]
    return LoadMode.of(spec, order_text(tuple(imports), _as_variant(spec)), runs), spec


def _as_variant(spec: RunSpec) -> Variant:
    return Variant(global_imports=spec.global_imports)
