"""Engine-side orchestration of one pytest session (no pytest import here).

``RCState`` holds a session's settings, its plan (computed once per session, shared by xdist
workers through a locked file), the entries recorded so far, the CI scope and the baseline. It
runs an item by handing an :class:`~.host.ItemHost` (the plan, how to run and diagnose a spec,
how outcomes are judged) to the item's runner: :mod:`.sequence_items`, :mod:`.target_items`,
:mod:`.scenario_items`; they return an :class:`~.verdicts.ItemVerdict` and never call back. The
report and terminal summary over every collected run are :mod:`~..report.aggregate`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_runtimeconflict.engine.host import ItemHost, node_id
from pytest_runtimeconflict.engine.verdicts import ItemVerdict, PlanOutcome
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.files.locking import file_lock, replace_atomically
from pytest_runtimeconflict.model import Finding, RunResult, RunSpec
from pytest_runtimeconflict.model.entry import RunEntry
from pytest_runtimeconflict.model.plan import Plan, PlanContext, PlannedItem
from pytest_runtimeconflict.options import Settings
from pytest_runtimeconflict.planning.shards import ShardScope
from pytest_runtimeconflict.report import aggregate
from pytest_runtimeconflict.report.baseline import Baseline, BaselineStatus
from pytest_runtimeconflict.scenario.manifest import Scenario, ScenarioRun
from pytest_runtimeconflict.vocabulary import JsonObject, fails

log = logging.getLogger(__name__)

__all__ = ["RCState", "missing_modules", "node_id"]


@dataclass
class RCState:
    """Per-session state of the plugin (stored in ``config.stash``)."""

    settings: Settings
    rootdir: Path
    cache_dir: Path
    run_id: str
    collected: list[tuple[str, JsonObject]] = field(default_factory=list)
    _plan: Plan | None = None
    # CI: this job's share of the plan, pytest's outcome of each plan or scenario
    # item (what ``merge`` judges by), the --rc-baseline file.
    scope: ShardScope | None = None
    item_outcomes: dict[str, str] = field(default_factory=dict)
    # why pytest skipped a plan item (an earlier item reports its conflict, deselection)
    skip_reasons: dict[str, str] = field(default_factory=dict)
    baseline: Baseline | None = None
    baseline_note: str | None = None
    # Plan items of this job's share that run nowhere (deselected with -k or -m): never the
    # owner of a conflict, or a conflict they would report would be reported by no item.
    not_run: frozenset[str] = frozenset()

    def record(self, nodeid: str, entry: JsonObject) -> None:
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
                between=self.settings.pairs_between,
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
            context = context_from_scan(
                result,
                planned,
                self.cache_dir / "facts",
                python=self.settings.python,
                timeout=self.settings.timeout,
            )
            for old in self.cache_dir.glob("plan-context-*.json"):
                if time.time() - old.stat().st_mtime > 86400:
                    old.unlink(missing_ok=True)
            replace_atomically(path, json.dumps(context.to_json()).encode())
        return context

    def _written_context(self) -> PlanContext | None:
        """The planner's context: this process's, else the one an xdist worker wrote."""
        if self._plan is not None:
            return self._plan.context
        path = self.cache_dir / f"plan-context-{self.run_id}.json"
        try:
            return PlanContext.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError):
            return None

    def report_json(self) -> JsonObject:
        """The JSON report of the runs collected so far."""
        from pytest_runtimeconflict.report import ci

        data = aggregate.report_json(self.collected)
        context = self._written_context()
        if context is not None and context.not_importable:
            data["not_importable"] = dict(context.not_importable)
        ruled_out = self.ruled_out_lines(context)
        if ruled_out:
            data["load_modes_ruled_out"] = ruled_out
        if self.skip_reasons:
            data["item_skip_reasons"] = dict(sorted(self.skip_reasons.items()))
        status = self.baseline_status()
        data.update(ci.report_keys(self.settings.fail_on, self.item_outcomes, self.scope, status))
        return data

    def summary_lines(self) -> list[str]:
        """The terminal summary of the runs collected so far."""
        from pytest_runtimeconflict.planning.from_scan import not_importable_lines
        from pytest_runtimeconflict.report import ci

        lines = aggregate.summary_lines(self.collected)
        context = self._written_context()
        if self.collected:
            lines += [f"ruled out by the scan: {line}" for line in self.ruled_out_lines(context)]
        lines += aggregate.skipped_lines(self.skip_reasons)
        lines += not_importable_lines(context)
        lines += ci.summary_lines(self.scope, self.baseline_status())
        return lines + ([self.baseline_note] if self.baseline_note else [])

    def ruled_out_lines(self, context: PlanContext | None) -> list[str]:
        """The load-mode variants the scan showed cannot change a binding (not planned)."""
        from pytest_runtimeconflict.planning.variants import ruled_out

        return ruled_out(context, self.settings.variants)

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

    def known_conflict(self, entry: RunEntry) -> tuple[bool, RunEntry]:
        """Whether ``entry``'s conflict is in the baseline (or being written to it with
        --rc-update-baseline), and the entry with the baseline's mark. False without
        --rc-baseline."""
        if self.baseline is None:
            return False, entry
        known, entry = self.baseline.mark(entry)
        return known or self.settings.update_baseline, entry

    def known_finding(self, entry: RunEntry, finding: Finding) -> tuple[bool, RunEntry]:
        """Whether a static finding no run reproduced is in the baseline (marks the entry)."""
        if self.baseline is None:
            return False, entry
        known, entry = self.baseline.mark_finding(entry, finding)
        return known or self.settings.update_baseline, entry

    def fails(self, outcome: str) -> bool:
        return fails(outcome, self.settings.fail_on)

    # ------------------------------------------------------------ running items

    def host(self, run: Callable[[RunSpec], RunResult] | None = None) -> ItemHost:
        """The interface an item run receives (see :mod:`.host`); ``run`` runs a spec in a
        child (default: the sandbox's ``run_spec``)."""
        from pytest_runtimeconflict.sandbox.runner import run_spec

        return ItemHost(
            plan=self.plan(),
            settings=self.settings,
            run=run or run_spec,
            is_known=self.known_conflict,
            is_known_finding=self.known_finding,
            not_run=self.not_run,
        )

    def outcome(self) -> PlanOutcome:
        """An empty outcome of one plan item, judging latent runs and known conflicts."""
        return self.host().outcome()

    def run_plan_item(self, index: int, item: PlannedItem) -> ItemVerdict:
        """Run one planned item: a covering sequence (with repairs around each conflict that
        stops it), or a target / fork item (each of its planned runs once). Its first entry
        counts the child interpreters the item started (``child_runs``: runs, diagnosis,
        counter-experiments and re-runs)."""
        from pytest_runtimeconflict.engine.planned_runs import PlannedRunner
        from pytest_runtimeconflict.engine.reuse import ItemRuns
        from pytest_runtimeconflict.engine.sequence_items import run_sequence_item
        from pytest_runtimeconflict.engine.target_items import run_target_item
        from pytest_runtimeconflict.sandbox.runner import (
            children_by_purpose,
            children_started,
            run_spec,
        )

        before, before_by = children_started(), children_by_purpose()
        runs = ItemRuns(run_spec)  # each spec once per item
        runner = PlannedRunner(self.host(runs))
        if item.kind != "sequence":
            verdict = run_target_item(runner, index, item)
        else:
            verdict = run_sequence_item(runner, index, item)
        log.debug("%s: %d run(s) answered by the item's earlier runs", item.name, runs.reused)
        if not verdict.entries:
            return verdict
        first = verdict.entries[0].replace(
            child_runs=children_started() - before,
            child_runs_by_purpose=children_by_purpose(before_by),
        )
        return dataclasses.replace(verdict, entries=(first, *verdict.entries[1:]))

    def run_scenario_item(self, scenario: Scenario, run: ScenarioRun) -> ItemVerdict:
        """Run one ``[[run]]`` of a scenario file and compare with its expectation."""
        from pytest_runtimeconflict.engine.scenario_items import run_scenario_item

        return run_scenario_item(self.host_for_scenarios(), scenario, run)

    def host_for_scenarios(self) -> ItemHost:
        """A host without a plan: scenario files run with or without planned items."""
        from pytest_runtimeconflict.sandbox.runner import run_spec

        return ItemHost(
            plan=Plan((), 0, ()),
            settings=self.settings,
            run=run_spec,
            is_known=self.known_conflict,
            is_known_finding=self.known_finding,
        )


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
