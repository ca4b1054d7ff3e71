"""One planned run of an item, end to end: the child run, its report entry, whether the item or
an earlier item already has its failure, the diagnosis, and the counter-experiments once no
earlier item owns the conflict. Works through the :class:`~.host.ItemHost` it is given; no
pytest import."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pytest_runtimeconflict.engine import owners
from pytest_runtimeconflict.engine.entries import planned_entry, reduce_load_mode, unusable
from pytest_runtimeconflict.engine.host import ItemHost
from pytest_runtimeconflict.engine.repeats import ItemFailures
from pytest_runtimeconflict.engine.verdicts import Pair, cut_step, last_minimal_step
from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec
from pytest_runtimeconflict.model.entry import RunEntry, SameFailure
from pytest_runtimeconflict.model.plan import PlannedItem, PlannedRun
from pytest_runtimeconflict.sandbox.runner import purpose
from pytest_runtimeconflict.vocabulary import is_import_step


def with_diagnosis(entry: RunEntry, result: RunResult, diagnosis: Diagnosis) -> RunEntry:
    """The entry with its diagnosis and the failure's first three lines (``headline``: what
    CI annotations and merged reports show)."""
    from pytest_runtimeconflict.report.text import headline

    return entry.replace(diagnosis=diagnosis, headline=headline(result, diagnosis))


class PlannedRunner:
    """Runs the planned runs of plan items for one session, through ``host``."""

    def __init__(self, host: ItemHost) -> None:
        self.host = host

    def earlier_owner(self, entry: RunEntry, diagnosis: Diagnosis) -> str | None:
        """The node id of an earlier item that reproduces the same conflict, or None."""
        with purpose("owner checks"):
            return owners.earlier_owner(self.host, entry, diagnosis)

    def run_planned(
        self,
        index: int,
        item: PlannedItem,
        planned: PlannedRun,
        order: tuple[str, ...],
        known: ItemFailures | None = None,
        experiments: bool = True,
    ) -> tuple[RunEntry, int | None, Pair | None]:
        """One child run of ``order`` (imports, then workloads) loaded as the planned run's
        variant; diagnosed when it did not pass, unless ``known`` (the item's
        :class:`~.repeats.ItemFailures`) already has it or an earlier item owns it
        (:func:`~.owners.owned_by_sub_run`). Returns the report entry, the index in ``order``
        of the import that stopped it (None when every import ran) and the (result,
        diagnosis) pair of a newly diagnosed conflict."""
        spec, result, entry, cut = self._run_once(index, item, planned, order)
        if entry.variant_unusable:
            return entry, None, None
        if result.outcome in ("passed", "latent"):
            return entry, cut, None
        same = known.match(spec, result, order) if known is not None else None
        if same is not None:
            entry = entry.with_plan(conflict=same.key).replace(same_conflict_as=same.run_id)
            if cut is None:
                cut = self._struck_after_imports(order, same.minimal)
            return entry, cut, None
        assert entry.plan is not None
        with purpose("owner checks"):
            prior = owners.owned_by_sub_run(
                self.host, index, item, planned, spec, result, entry.plan.executed
            )
        if prior is not None:
            return self._owned_earlier(entry, prior, order, cut)
        if result.outcome == "hung" and not planned.variant.is_plain:
            # Every further run of a hang under a load mode may wait the whole timeout: it is
            # reported as it happened, not minimised, and the item stops (_settle).
            diagnosis = self.host.diagnose(spec, result, experiments=False, max_runs=0)
            entry = with_diagnosis(entry, result, diagnosis).with_plan(conflict=diagnosis.key)
            return entry, None, (result, diagnosis)
        diagnosis = self.host.diagnose(spec, result, experiments=experiments)
        entry, diagnosis = self._record(entry, result, diagnosis, planned)
        if known is not None:
            known.add(spec, result, order, diagnosis)
        if cut is None:
            cut = self._struck_after_imports(order, diagnosis.minimal_steps)
        return entry, cut, (result, diagnosis)

    def _run_once(
        self, index: int, item: PlannedItem, planned: PlannedRun, order: tuple[str, ...]
    ) -> tuple[RunSpec, RunResult, RunEntry, int | None]:
        """The child run itself: its spec, result, entry and cut import."""
        plan = self.host.plan
        base = self.host.spec(plan.steps_for(order), probes=item.probes)
        run_id = PlannedRun(order, planned.variant).describe()
        spec = planned.variant.apply(dataclasses.replace(base, id=run_id))
        result = self.host.run(spec)
        cut = cut_step(result)
        if cut is not None and cut >= len(order):
            cut = None  # a workload failed: every import ran
        problem = unusable(result)
        executed = () if problem else order if cut is None else order[: cut + 1]
        entry = planned_entry(result, plan, index, item, planned, order, executed)
        if problem:
            entry = entry.replace(variant_unusable=f"{item.name}: {problem}")
        return spec, result, entry, cut

    def _record(
        self, entry: RunEntry, result: RunResult, diagnosis: Diagnosis, planned: PlannedRun
    ) -> tuple[RunEntry, Diagnosis]:
        """The diagnosis in the entry; under a variant, the minimal load mode too, which the
        returned diagnosis's minimal run then carries (its headline names only what the
        failure needs, not every preload of the variant)."""
        if not planned.variant.is_plain:
            with purpose("load-mode reduction"):
                load_mode, spec = reduce_load_mode(diagnosis, self.host.run)
            entry = entry.replace(load_mode=load_mode)
            minimal = dataclasses.replace(diagnosis.minimal_result, spec=spec)
            diagnosis = dataclasses.replace(diagnosis, minimal_result=minimal)
        entry = with_diagnosis(entry, result, diagnosis).with_plan(conflict=diagnosis.key)
        return entry, diagnosis

    def complete(self, entry: RunEntry, pair: Pair) -> tuple[RunEntry, Pair]:
        """The counter-experiments of a conflict first found in a covering sequence (deferred
        until no earlier item owns it), run on its minimal order."""
        result, diagnosis = pair
        minimal = diagnosis.minimal_result
        # a minimal run that ran with exactly the minimal steps is not searched again
        ran_as_is = tuple(minimal.spec.steps) == tuple(diagnosis.minimal_steps)
        full = self.host.diagnose(minimal.spec, minimal, minimal=ran_as_is)
        completed = dataclasses.replace(full, minimal_steps=diagnosis.minimal_steps)
        entry = with_diagnosis(entry, result, completed)
        entry = entry.replace(runs_used=diagnosis.runs_used + full.runs_used)
        return entry, (result, completed)

    def _owned_earlier(
        self, entry: RunEntry, prior: SameFailure, order: tuple[str, ...], cut: int | None
    ) -> tuple[RunEntry, int | None, None]:
        """Mark a failure an earlier item's sub-run showed; where to cut the sequence."""
        entry = entry.replace(same_failure_as=prior, duplicate_of=prior.item)
        entry = entry.with_plan(conflict=f"as {prior.run} ({prior.item})")
        if cut is None:
            cut = last_minimal_step(order, self.host.plan.modules_of([prior.step]))
        return entry, cut, None

    def _struck_after_imports(self, order: tuple[str, ...], minimal: Sequence[str]) -> int | None:
        """Where to cut a sequence whose conflict struck once every import had run (workloads,
        runtime exercising, exit): at the module whose workload the minimal order keeps, when
        it keeps one (the workload shows the conflict; the other module may come with many
        others: numpy, imported by torch and scikit-learn too), else at the minimal order's
        last module."""
        plan = self.host.plan
        shown_by = plan.modules_of([s for s in minimal if not is_import_step(s)])
        return last_minimal_step(order, shown_by or plan.modules_of(minimal))
