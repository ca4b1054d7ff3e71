"""Engine-side orchestration of one pytest session (no pytest import here).

``RCState`` turns settings into a plan (once per session, shared by xdist workers through a
locked file) and runs plan and scenario items through the sandbox and the diagnosis. What an
item then does is :mod:`.verdicts`; the report and terminal summary over every collected run
are :mod:`.aggregate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.engine.verdicts import (
    ItemVerdict,
    PlanOutcome,
    cut_step,
    known_text,
    last_minimal_step,
    latent_warnings,
    partners,
    repairs,
)
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.files.locking import file_lock, replace_atomically
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.model.plan import Plan, PlanContext, PlannedItem, PlannedRun
from pytest_runtimeconflict.options import Settings
from pytest_runtimeconflict.planning.shards import ShardScope
from pytest_runtimeconflict.report import aggregate
from pytest_runtimeconflict.report.baseline import Baseline, BaselineStatus
from pytest_runtimeconflict.vocabulary import PLAN_NODE, fails, is_import_step

log = logging.getLogger(__name__)

# An earlier run's prefix of at most this many imports is minimised to compare conflict keys;
# a longer one is compared by failure signature and the conflict's libraries (one child run).
SHORT_PREFIX = 4
OWNER_TRIES = 3  # earlier planned runs re-run to find the owner of a conflict
MAX_VARIANT_CONFLICTS = 6  # conflicts diagnosed in one covering item under a variant
HANG_NOTE = (
    "hung under this load mode: reported as it happened, not minimised (each further run could "
    "wait the whole timeout); the ordered tuples it had not exercised yet are counted as not run"
)
CAP_NOTE = (
    f"stopped after {MAX_VARIANT_CONFLICTS} conflicts under this load mode; the ordered tuples "
    "it had not exercised yet are counted as not run"
)


def node_id(name: str) -> str:
    """The node id of a plan item (``runtime-conflicts::a>b>c``, ``...::seq-01[17 modules]``)."""
    return f"{PLAN_NODE}::{name}"


@dataclass
class RCState:
    """Per-session state of the plugin (stored in ``config.stash``)."""

    settings: Settings
    rootdir: Path
    cache_dir: Path
    run_id: str
    collected: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _plan: Plan | None = None
    # CI (issue 15): this job's share of the plan, pytest's outcome of each plan or scenario
    # item (what ``merge`` judges by), the --rc-baseline file.
    scope: ShardScope | None = None
    item_outcomes: dict[str, str] = field(default_factory=dict)
    baseline: Baseline | None = None
    baseline_note: str | None = None
    # Plan items of this job's share that run nowhere (deselected with -k or -m): never the
    # owner of a conflict, or a conflict they would report would be reported by no item.
    not_run: frozenset[str] = frozenset()

    def record(self, nodeid: str, entry: dict[str, Any]) -> None:
        """Collect a run's report entry, in plan order (then scenario items by node id),
        whatever order xdist workers report in; an item's own entries keep their order."""
        aggregate.insert_in_order(self.collected, nodeid, entry)

    # ------------------------------------------------------------ planning

    def plan(self) -> Plan:
        """The session's plan; computed once, identically on every xdist worker."""
        if self._plan is None:
            from pytest_runtimeconflict.planning.from_scan import build_plan
            from pytest_runtimeconflict.planning.workloads import pyproject_workloads

            workloads = (*self.settings.workloads, *pyproject_workloads(self.rootdir))
            self._plan = build_plan(
                self._context(),
                self.settings.strength,
                self.settings.variants,
                workloads,
                exercise=self.settings.exercise,
            )
        return self._plan

    def _context(self) -> PlanContext:
        """What the planner knows: the scan of the environment (also with ``--rc-modules``
        and ``--rc-variants none``: the coverage reports masked pairs from it)."""
        modules = self.settings.modules
        if modules:
            missing = missing_modules(self.settings.python, modules)
            if missing:
                raise UsageError(
                    f"invalid --rc-modules: {', '.join(missing)} cannot be imported by "
                    f"{self.settings.python}; install it there or remove it from the list"
                )
            modules = tuple(sorted(dict.fromkeys(modules)))
        if modules == ():
            return PlanContext(())
        try:
            return self._scanned_context(modules)
        except InterpreterError as exc:
            # The scan names its own option; here the interpreter came from --rc-python.
            text = str(exc)
            if text.startswith("--python "):
                text = "--rc-python " + text[len("--python ") :]
            raise UsageError(text) from None

    def _scanned_context(self, modules: tuple[str, ...] | None) -> PlanContext:
        """Scanned once per session: the first xdist worker writes the planner's context under
        a lock, the others read it."""
        from pytest_runtimeconflict.planning.from_scan import context_from_scan, default_modules
        from pytest_runtimeconflict.static.scan import scan_environment

        path = self.cache_dir / f"plan-context-{self.run_id}.json"
        with file_lock(self.cache_dir / "modules.lock"):
            if path.exists():
                return PlanContext.from_json(json.loads(path.read_text()))
            result = scan_environment(
                python=self.settings.python, cache_dir=self.cache_dir / "facts"
            )
            planned = modules if modules is not None else default_modules(result, self.rootdir)
            context = context_from_scan(result, planned, self.cache_dir / "facts")
            for old in self.cache_dir.glob("plan-context-*.json"):
                if time.time() - old.stat().st_mtime > 86400:
                    old.unlink(missing_ok=True)
            replace_atomically(path, json.dumps(context.to_json()).encode())
        return context

    # ------------------------------------------------------------ running

    def spec(self, steps: Sequence[str], **changes: Any) -> RunSpec:
        """A RunSpec for ``steps`` with the session's interpreter, timeout and exercising."""
        base = RunSpec(
            steps=tuple(steps),
            python=self.settings.python,
            timeout=self.settings.timeout,
            exercise=self.settings.exercise,
        )
        return dataclasses.replace(base, **changes)

    def report_json(self) -> dict[str, Any]:
        """The JSON report of the runs collected so far."""
        from pytest_runtimeconflict.report import ci

        data = aggregate.report_json(self.collected)
        status = self.baseline_status()
        data.update(ci.report_keys(self.settings.fail_on, self.item_outcomes, self.scope, status))
        return data

    def summary_lines(self) -> list[str]:
        """The terminal summary of the runs collected so far."""
        from pytest_runtimeconflict.report import ci

        lines = aggregate.summary_lines(self.collected)
        lines += ci.summary_lines(self.scope, self.baseline_status())
        return lines + ([self.baseline_note] if self.baseline_note else [])

    def baseline_status(self) -> BaselineStatus | None:
        """Known, new and fixed conflicts against --rc-baseline (None without it); fixed ones
        only when the run covers the whole plan (not one shard)."""
        from pytest_runtimeconflict.report.baseline import status_of

        if self.baseline is None:
            return None
        marks = [entry["baseline"] for _, entry in self.collected if "baseline" in entry]
        whole = self.settings.shard is None
        return status_of(self.baseline.path, self.baseline.keys, marks, judge_fixed=whole)

    def write_baseline(self) -> str | None:
        """With --rc-update-baseline: the run's conflicts become the baseline file."""
        from pytest_runtimeconflict.report.baseline import conflicts_from_marks, write_baseline

        if self.baseline is None or not self.settings.update_baseline:
            return None
        marks = [entry["baseline"] for _, entry in self.collected if "baseline" in entry]
        count = write_baseline(self.baseline.path, conflicts_from_marks(marks), "--rc-baseline")
        return f"baseline {self.baseline.path} updated: {count} known conflict(s)"

    def known_conflict(self, entry: dict[str, Any]) -> bool:
        """Whether ``entry``'s conflict is in the baseline (or being written to it with
        --rc-update-baseline); marks the entry either way. False without --rc-baseline."""
        if self.baseline is None:
            return False
        return self.baseline.mark(entry) or self.settings.update_baseline

    def outcome(self) -> PlanOutcome:
        """An empty outcome of one plan item, judging latent runs and known conflicts."""
        return PlanOutcome(
            fail_latent=self.fails("latent"),
            is_known=self.known_conflict,
            is_known_finding=self.known_finding,
        )

    def known_finding(self, entry: dict[str, Any], finding: Any) -> bool:
        """Whether a static finding no run reproduced is in the baseline (marks the entry)."""
        if self.baseline is None:
            return False
        return self.baseline.mark_finding(entry, finding) or self.settings.update_baseline

    def fails(self, outcome: str) -> bool:
        return fails(outcome, self.settings.fail_on)

    def _diagnose(
        self, spec: RunSpec, result: Any, *, experiments: bool = True, max_runs: int | None = None
    ) -> Any:
        from pytest_runtimeconflict.diagnosis import diagnose
        from pytest_runtimeconflict.sandbox.runner import run_spec

        budget = self.settings.max_runs if max_runs is None else max_runs
        return diagnose(spec, result, max_runs=budget, experiments=experiments, run=run_spec)

    @staticmethod
    def fill(entry: dict[str, Any], result: Any, diagnosis: Any) -> None:
        """A diagnosis into its report entry, with the failure's first three lines
        (``headline``: what CI annotations and merged reports show)."""
        from pytest_runtimeconflict.report.text import headline

        entry.update(diagnosis.to_json())
        entry["headline"] = headline(result, diagnosis)

    def run_plan_item(self, index: int, item: PlannedItem) -> ItemVerdict:
        """Run one planned item: a covering sequence (with repairs around each conflict that
        stops it), or a target / fork item (each of its planned runs once). Its first entry
        counts the child interpreters the item started (``child_runs``: runs, diagnosis,
        counter-experiments and re-runs)."""
        from pytest_runtimeconflict.sandbox.runner import children_started

        before = children_started()
        if item.kind != "sequence":
            from pytest_runtimeconflict.engine.items import run_target_item

            verdict = run_target_item(self, index, item)
        else:
            verdict = self._run_sequence_item(index, item)
        if verdict.entries:
            verdict.entries[0]["child_runs"] = children_started() - before
        return verdict

    def _run_sequence_item(self, index: int, item: PlannedItem) -> ItemVerdict:
        """A covering sequence, repaired around each conflict that stops it, so that every
        tuple of it is exercised or blocked by a named conflict."""
        from pytest_runtimeconflict.engine.items import ItemFailures
        from pytest_runtimeconflict.planning.sequences import tuples_covered

        planned = item.runs[0]
        failures = ItemFailures()
        strength = self.plan().strength
        wanted = tuples_covered(planned.order, strength)
        exercised: set[tuple[str, ...]] = set()
        outcome = self.outcome()
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
            entry, cut, diagnosis = self.run_planned(
                index, item, planned, order, failures, experiments=False
            )
            exercised |= tuples_covered(tuple(entry["plan"]["executed"]), strength)
            outcome.entries.append(entry)
            conflicts, stop = self._settle(outcome, item, entry, diagnosis, conflicts)
            if stop:
                break
            if cut is not None:
                after_steps = len(entry["plan"]["executed"]) == len(order)
                # Once every import ran, each tuple has met: the repair only looks for a
                # further conflict among the rest (dropping the partners would meet the same
                # conflict again with the next partner).
                same = failures.by_id(entry.get("same_conflict_as"))
                involved = partners(entry, diagnosis, after_steps, same.minimal if same else ())
                found = repairs(order, cut, involved)
                work.extend((r, after_steps) for r in found)
        return outcome.verdict(self.settings)

    def _run_once(
        self, index: int, item: PlannedItem, planned: PlannedRun, order: tuple[str, ...]
    ) -> tuple[RunSpec, Any, dict[str, Any], int | None]:
        """The child run itself: its spec, result, annotated entry and cut import."""
        from pytest_runtimeconflict.engine.items import annotate, unusable
        from pytest_runtimeconflict.sandbox.runner import run_spec

        base = self.spec(self.plan().steps_for(order), probes=item.probes)
        run_id = PlannedRun(order, planned.variant).describe()
        spec = planned.variant.apply(dataclasses.replace(base, id=run_id))
        result = run_spec(spec)
        entry = result.to_json()
        cut = cut_step(result)
        if cut is not None and cut >= len(order):
            cut = None  # a workload failed: every import ran
        problem = unusable(result)
        executed = () if problem else order if cut is None else order[: cut + 1]
        annotate(entry, self.plan(), index, item, planned, order, executed)
        if problem:
            entry["variant_unusable"] = f"{item.name}: {problem}"
        return spec, result, entry, cut

    def _settle(
        self,
        outcome: PlanOutcome,
        item: PlannedItem,
        entry: dict[str, Any],
        diagnosis: Any,
        conflicts: int,
    ) -> tuple[int, bool]:
        """Record one run of a covering item; (conflicts left, whether the item stops): at an
        unusable load mode, at a hang under a variant, or at the variant's conflict cap."""
        if entry.get("variant_unusable"):
            outcome.notes.append(entry["variant_unusable"])
            return conflicts, True
        if diagnosis is None:
            if entry.get("same_failure_as"):
                outcome.add_owned(entry)
            return conflicts, False
        if entry["outcome"] == "hung" and conflicts:
            outcome.add(entry, diagnosis, lambda *_: None, self.fails)
            outcome.notes.append(f"{item.name}: {HANG_NOTE}")
            return conflicts, True
        outcome.add(entry, diagnosis, self.earlier_owner, self.fails, self.complete)
        if conflicts == 1:
            outcome.notes.append(f"{item.name}: {CAP_NOTE}")
        return conflicts - 1, conflicts == 1

    def _record(
        self, entry: dict[str, Any], result: Any, diagnosis: Any, planned: PlannedRun
    ) -> Any:
        """The diagnosis in the entry; under a variant, the minimal load mode too, which the
        returned diagnosis's minimal run then carries (its headline names only what the
        failure needs, not every preload of the variant)."""
        from pytest_runtimeconflict.engine.items import reduce_load_mode
        from pytest_runtimeconflict.sandbox.runner import run_spec

        if not planned.variant.is_plain:
            entry["load_mode"], spec = reduce_load_mode(diagnosis, run_spec)
            minimal = dataclasses.replace(diagnosis.minimal_result, spec=spec)
            diagnosis = dataclasses.replace(diagnosis, minimal_result=minimal)
        self.fill(entry, result, diagnosis)
        entry["plan"]["conflict"] = diagnosis.key
        return diagnosis

    def complete(self, entry: dict[str, Any], pair: Any) -> Any:
        """The counter-experiments of a conflict first found in a covering sequence (deferred
        until no earlier item owns it), run on its minimal order."""
        result, diagnosis = pair
        minimal = diagnosis.minimal_result
        full = self._diagnose(minimal.spec, minimal)
        completed = dataclasses.replace(full, minimal_steps=diagnosis.minimal_steps)
        self.fill(entry, result, completed)
        entry["runs_used"] = diagnosis.runs_used + full.runs_used
        return result, completed

    def run_planned(
        self,
        index: int,
        item: PlannedItem,
        planned: PlannedRun,
        order: tuple[str, ...],
        known: Any = None,
        experiments: bool = True,
    ) -> tuple[dict[str, Any], int | None, Any]:
        """One child run of ``order`` (imports, then workloads) loaded as the planned run's
        variant; diagnosed when it did not pass, unless ``known`` (the item's
        :class:`planruns.ItemFailures`) already has it or an earlier item owns it
        (:func:`planruns.owned_by_sub_run`). Returns the report entry, the index in ``order``
        of the import that stopped it (None when every import ran) and the (result,
        diagnosis) pair of a newly diagnosed conflict."""
        from pytest_runtimeconflict.engine.items import owned_by_sub_run

        spec, result, entry, cut = self._run_once(index, item, planned, order)
        if entry.get("variant_unusable"):
            return entry, None, None
        if result.outcome in ("passed", "latent"):
            return entry, cut, None
        same = known.match(spec, result, order) if known is not None else None
        if same is not None:
            entry["plan"]["conflict"], entry["same_conflict_as"] = same.key, same.run_id
            if cut is None:
                cut = self._struck_after_imports(order, same.minimal)
            return entry, cut, None
        prior = owned_by_sub_run(
            self, index, item, planned, spec, result, entry["plan"]["executed"]
        )
        if prior is not None:
            return entry, self._owned_earlier(entry, prior, order, cut), None
        if result.outcome == "hung" and not planned.variant.is_plain:
            # Every further run of a hang under a load mode may wait the whole timeout: it is
            # reported as it happened, not minimised, and the item stops (_settle).
            diagnosis = self._diagnose(spec, result, experiments=False, max_runs=0)
            self.fill(entry, result, diagnosis)
            entry["plan"]["conflict"] = diagnosis.key
            return entry, None, (result, diagnosis)
        diagnosis = self._diagnose(spec, result, experiments=experiments)
        diagnosis = self._record(entry, result, diagnosis, planned)
        if known is not None:
            known.add(spec, result, order, diagnosis)
        if cut is None:
            cut = self._struck_after_imports(order, diagnosis.minimal_steps)
        return entry, cut, (result, diagnosis)

    def _owned_earlier(
        self, entry: dict[str, Any], prior: dict[str, Any], order: tuple[str, ...], cut: Any
    ) -> int | None:
        """Mark a failure an earlier item's sub-run showed; where to cut the sequence."""
        entry["same_failure_as"], entry["duplicate_of"] = prior, prior["item"]
        entry["plan"]["conflict"] = f"as {prior['run']} ({prior['item']})"
        if cut is None:
            cut = last_minimal_step(order, self.plan().modules_of([prior["step"]]))
        return cut

    def _struck_after_imports(self, order: tuple[str, ...], minimal: Sequence[str]) -> int | None:
        """Where to cut a sequence whose conflict struck once every import had run (workloads,
        runtime exercising, exit): at the module whose workload the minimal order keeps, when
        it keeps one (the workload shows the conflict; the other module may come with many
        others: numpy, imported by torch and scikit-learn too), else at the minimal order's
        last module."""
        plan = self.plan()
        shown_by = plan.modules_of([s for s in minimal if not is_import_step(s)])
        return last_minimal_step(order, shown_by or plan.modules_of(minimal))

    def earlier_owner(self, entry: dict[str, Any], diagnosis: Any) -> str | None:
        """The node id of an earlier item that reproduces the same conflict, or None.

        Deterministic without talking to other workers: the earlier planned runs that import
        the conflict's modules are candidates, those in the conflict's minimal load mode first
        (then the others, in plan order: the same conflict may show under another mode); at
        most ``OWNER_TRIES`` of them are re-run here, each only up to the last of those modules,
        and compared with the conflict.
        """
        from pytest_runtimeconflict.engine.items import owner_candidates
        from pytest_runtimeconflict.sandbox.runner import run_spec

        plan, index = self.plan(), entry["plan"]["index"]
        # the modules of the minimal order, a workload's module included (so the re-run
        # reaches the workload that showed the conflict)
        wanted = list(plan.modules_of(diagnosis.minimal_steps))
        if not wanted:
            return None
        mode = entry.get("load_mode") or {}
        earlier_items = [i for i in plan.items[:index] if node_id(i.name) not in self.not_run]
        candidates = owner_candidates(earlier_items, plan.items[index], wanted, mode)
        for earlier, planned in candidates[:OWNER_TRIES]:
            end = max(planned.order.index(m) for m in wanted) + 1
            base = self.spec(plan.steps_for(planned.order[:end]), probes=earlier.probes)
            spec = planned.variant.apply(base)
            result = run_spec(dataclasses.replace(spec, backtrace=False))
            if result.outcome in ("passed", "latent", "could-not-start"):
                continue
            if end <= SHORT_PREFIX:
                # Minimised like the conflict it is compared with, so the keys compare.
                same = self._diagnose(spec, result, experiments=False).key == diagnosis.key
            else:
                same = same_failure(result, diagnosis)
            if same:
                return node_id(earlier.name)
        return None

    def run_scenario_item(self, scenario: Any, run: Any) -> ItemVerdict:
        """Run one ``[[run]]`` of a scenario file and compare with its expectation."""
        from pytest_runtimeconflict.report.text import format_failure, format_summary_line
        from pytest_runtimeconflict.sandbox.runner import children_started, run_spec

        spec = dataclasses.replace(
            run.spec,
            python=self.settings.python,
            exercise=run.spec.exercise and self.settings.exercise,
            id=f"{scenario.name}::{run.id}",
        )
        before = children_started()
        result = run_spec(spec)
        entry = result.to_json()
        diagnosis = None
        if result.outcome != "passed":
            diagnosis = self._diagnose(spec, result)
            self.fill(entry, result, diagnosis)
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
            if result.outcome == "latent" and not self.fails("latent"):
                verdict.warnings = latent_warnings(entry)
            elif diagnosis is not None and self.known_conflict(entry):
                verdict.xfail = known_text(self.settings, [format_summary_line(diagnosis)])
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
            verdict.failure = f"expected {expected} but {why}\n\n" + format_failure(
                result, diagnosis
            )
        return verdict


def missing_modules(python: str, modules: Sequence[str]) -> list[str]:
    """Top-level packages of ``modules`` the target interpreter cannot find (nothing is
    imported: ``importlib.util.find_spec`` of a top-level name only searches ``sys.path``)."""
    import subprocess

    tops = sorted({m.split(".")[0] for m in modules})
    code = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))"
    )
    try:
        proc = subprocess.run(
            [python, "-c", code, *tops], capture_output=True, text=True, timeout=60
        )
        return list(json.loads(proc.stdout))
    except (OSError, ValueError, subprocess.SubprocessError):
        raise UsageError(
            f"--rc-python {python}: not a working Python interpreter (it could not look up "
            "modules); give the path of an environment's python, e.g. .venv/bin/python"
        ) from None


def same_failure(result: Any, diagnosis: Any) -> bool:
    """Whether ``result`` fails the way the diagnosed conflict does, with the conflict's
    libraries mapped."""
    from pytest_runtimeconflict.diagnosis.signature import failure_signature

    if failure_signature(result) != failure_signature(diagnosis.minimal_result):
        return False
    mapped = {os.path.realpath(p) for p in result.mapped}
    return all(os.path.realpath(lib.path) in mapped for lib in diagnosis.libraries)
