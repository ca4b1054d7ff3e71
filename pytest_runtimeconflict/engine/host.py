"""What the session hands an item run: a small interface, never the session itself.

An item run (a covering sequence, a target or fork item, a scenario run) gets an
:class:`ItemHost`: the plan, how to build a spec and run it in a child, how to diagnose a
failure, and how the session judges outcomes (``--rc-fail-on``, the baseline). It returns an
:class:`~.verdicts.ItemVerdict` whose entries the session then records; it never calls back
into the session's state.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_runtimeconflict.engine.verdicts import FindingJudge, KnownJudge, PlanOutcome
from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec
from pytest_runtimeconflict.model.plan import Plan, PlannedItem
from pytest_runtimeconflict.options import Settings
from pytest_runtimeconflict.vocabulary import PLAN_NODE, fails, is_import_step


def _named_files(result: RunResult) -> set[str]:
    """The files a failure after the steps names: its crash library, and every copy of a
    runtime family the run mapped twice."""
    twice = set(result.duplicated_families())
    files = {r.path for r in result.loaded_runtimes if r.family in twice}
    if result.crash_library:
        files.add(result.crash_library)
    return {os.path.realpath(f) for f in files}


def node_id(name: str) -> str:
    """The node id of a plan item (``runtime-conflicts::a>b>c``, ``...::seq-01[17 modules]``)."""
    return f"{PLAN_NODE}::{name}"


@dataclass(frozen=True)
class ItemHost:
    """The interface an item run receives.

    ``run`` runs one spec in a child interpreter (the sandbox's ``run_spec``); ``is_known``
    and ``is_known_finding`` say whether a conflict's entry (or a static finding no run
    reproduced) is in the baseline, and mark the entry; ``not_run`` names plan items
    deselected in this job (never owners of a conflict).
    """

    plan: Plan
    settings: Settings
    run: Callable[[RunSpec], RunResult]
    is_known: KnownJudge
    is_known_finding: FindingJudge
    not_run: frozenset[str] = frozenset()

    def outcome(self) -> PlanOutcome:
        """An empty outcome of one plan item, judging latent runs and known conflicts."""
        return PlanOutcome(
            fail_latent=self.fails("latent"),
            is_known=self.is_known,
            is_known_finding=self.is_known_finding,
        )

    def spec(self, steps: Sequence[str], **changes: Any) -> RunSpec:
        """A RunSpec for ``steps`` with the session's interpreter, timeout, exercising and
        memory limit."""
        base = RunSpec(
            steps=tuple(steps),
            python=self.settings.python,
            timeout=self.settings.timeout,
            exercise=self.settings.exercise,
            memory_limit=self.settings.memory_limit,
        )
        return dataclasses.replace(base, **changes)

    def fails(self, outcome: str) -> bool:
        """Whether ``outcome`` fails an item under ``--rc-fail-on``."""
        return fails(outcome, self.settings.fail_on)

    def diagnose(
        self,
        spec: RunSpec,
        result: RunResult,
        *,
        experiments: bool = True,
        max_runs: int | None = None,
        minimal: bool = False,
    ) -> Diagnosis:
        """Minimise, attribute and (with ``experiments``) counter-experiment a failing run,
        within ``--rc-max-runs`` child runs unless ``max_runs`` says otherwise; the
        experiments run the plan's workloads of every module of their order. A hang of one
        module (its import and its workloads) is not minimised: each candidate that still
        hangs waits the whole deadline, and the module is what the hang needs; nor is a run
        the caller knows is ``minimal`` already."""
        from pytest_runtimeconflict.diagnosis import diagnose

        budget = self.settings.max_runs if max_runs is None else max_runs
        if result.memory_limit_hit:  # out of memory is no conflict: reported as it happened
            budget, experiments = 0, False
        return diagnose(
            spec,
            result,
            max_runs=budget,
            experiments=experiments,
            run=self.run,
            workloads=self.plan.workloads,
            guess=self.related_steps,
            search=not minimal
            and not (result.outcome == "hung" and len(self.plan.modules_of(spec.steps)) <= 1),
        )

    def related_steps(self, steps: Sequence[str], result: RunResult) -> list[int] | None:
        """The minimisation's first guess, by the scan (:mod:`..planning.links`): the steps
        whose modules a conflict of the failing step's module can involve (their imports, and
        the workloads of the failing step's module); for a failure
        after the steps (a runtime probe, exit), those of the modules that link the crash's
        library or a runtime copy of a family mapped twice. Steps of no planned module, and of
        modules the scan knows nothing of, stay. None when the scan does not say."""
        plan, context = self.plan, self.plan.context
        if context is None or not context.links_known:
            return None
        failed = result.failed_step
        own: set[str] = set()  # the failing step's module: its workloads stay too
        if isinstance(failed, int) and 0 <= failed < len(steps):
            module = plan.modules_of([steps[failed]])
            near = context.related_to(module[0]) if module else None
            keep = {module[0], *near} if module and near is not None else None
            own = set(module[:1])
        else:
            keep = set(context.modules_mapping(_named_files(result))) or None
        if keep is None:
            return None
        return [
            i
            for i, step in enumerate(steps)
            if not (mods := plan.modules_of([step]))
            or (set(mods) <= keep and (is_import_step(step) or not own or set(mods) <= own))
            or any(context.related_to(m) is None for m in mods)
        ]

    def earlier_items(self, index: int) -> list[PlannedItem]:
        """The plan items before ``index`` that run in this job (owner candidates)."""
        return [i for i in self.plan.items[:index] if node_id(i.name) not in self.not_run]
