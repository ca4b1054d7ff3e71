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
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_runtimeconflict import aggregate
from pytest_runtimeconflict.baseline import Baseline, BaselineStatus
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.locking import file_lock
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.model.plan import Plan
from pytest_runtimeconflict.options import Settings
from pytest_runtimeconflict.shard import ShardScope
from pytest_runtimeconflict.verdicts import (
    ItemVerdict,
    PlanOutcome,
    cut_step,
    known_text,
    last_minimal_step,
    latent_warnings,
    repairs,
)
from pytest_runtimeconflict.vocabulary import PLAN_NODE, fails, is_import_step

log = logging.getLogger(__name__)


def node_id(sequence: Sequence[str]) -> str:
    """The node id of a plan item (``runtime-conflicts::a>b>c``)."""
    return f"{PLAN_NODE}::{'>'.join(sequence)}"


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

    # ------------------------------------------------------------ planning

    def plan(self) -> Plan:
        """The session's plan; computed once, identically on every xdist worker."""
        if self._plan is None:
            from pytest_runtimeconflict.plan import plan_sequences

            modules = self.settings.modules
            if modules is None:
                try:
                    modules = self._default_modules()
                except InterpreterError as exc:
                    # The scan names its own option; here the interpreter came from --rc-python.
                    text = str(exc)
                    if text.startswith("--python "):
                        text = "--rc-python " + text[len("--python ") :]
                    raise UsageError(text) from None
            elif modules:
                missing = missing_modules(self.settings.python, modules)
                if missing:
                    raise UsageError(
                        f"invalid --rc-modules: {', '.join(missing)} cannot be imported by "
                        f"{self.settings.python}; install it there or remove it from the list"
                    )
            modules = tuple(sorted(dict.fromkeys(modules)))
            strength = min(self.settings.strength, len(modules)) if modules else 0
            sequences = plan_sequences(modules, strength) if strength else []
            self._plan = Plan(modules, strength, tuple(tuple(s) for s in sequences))
        return self._plan

    def _default_modules(self) -> tuple[str, ...]:
        """Top-level names of distributions shipping ELF objects, plus the project under test.

        Scanned once per session: the first xdist worker writes the result under a lock, the
        others read it.
        """
        path = self.cache_dir / f"modules-{self.run_id}.json"
        with file_lock(self.cache_dir / "modules.lock"):
            if path.exists():
                return tuple(json.loads(path.read_text()))
            modules = discover_modules(
                self.settings.python, self.rootdir, cache_dir=self.cache_dir / "facts"
            )
            for old in self.cache_dir.glob("modules-*.json"):
                if time.time() - old.stat().st_mtime > 86400:
                    old.unlink(missing_ok=True)
            path.write_text(json.dumps(list(modules)))
        return modules

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
        from pytest_runtimeconflict.baseline import status_of

        if self.baseline is None:
            return None
        marks = [entry["baseline"] for _, entry in self.collected if "baseline" in entry]
        whole = self.settings.shard is None
        return status_of(self.baseline.path, self.baseline.keys, marks, judge_fixed=whole)

    def write_baseline(self) -> str | None:
        """With --rc-update-baseline: the run's conflicts become the baseline file."""
        from pytest_runtimeconflict.baseline import conflicts_from_marks, write_baseline

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

    def fails(self, outcome: str) -> bool:
        return fails(outcome, self.settings.fail_on)

    def _diagnose(self, spec: RunSpec, result: Any, *, experiments: bool = True) -> Any:
        from pytest_runtimeconflict.diagnosis import diagnose
        from pytest_runtimeconflict.sandbox.runner import run_spec

        return diagnose(
            spec, result, max_runs=self.settings.max_runs, experiments=experiments, run=run_spec
        )

    def _diagnosed(self, spec: RunSpec, result: Any, entry: dict[str, Any]) -> Any:
        """Diagnose a failing run into its report entry, with the failure's first three lines
        (``headline``: what CI annotations and merged reports show)."""
        from pytest_runtimeconflict.report.text import headline

        diagnosis = self._diagnose(spec, result)
        entry.update(diagnosis.to_json())
        entry["headline"] = headline(result, diagnosis)
        return diagnosis

    def run_plan_item(self, index: int, sequence: tuple[str, ...]) -> ItemVerdict:
        """Run one planned sequence, and around each conflict that stops it, the sequence
        without the failing step and without its partners, so every tuple of the sequence is
        exercised or blocked by a named conflict.
        """
        from pytest_runtimeconflict.plan import tuples_covered

        strength = self.plan().strength
        wanted = tuples_covered(sequence, strength)
        exercised: set[tuple[str, ...]] = set()
        outcome = PlanOutcome(fail_latent=self.fails("latent"), is_known=self.known_conflict)
        # (steps, forced): a repair after a conflict that struck once every step had run
        # (runtime exercising) is forced, since it may hide a further conflict although
        # every tuple was imported.
        work: list[tuple[tuple[str, ...], bool]] = [(tuple(sequence), True)]
        budget = 2 * len(sequence) + 2
        while work and budget > 0:
            steps, forced = work.pop(0)
            if not forced and not (tuples_covered(steps, strength) & wanted) - exercised:
                continue
            budget -= 1
            entry, cut, diagnosis = self._run_plan_steps(index, sequence, steps)
            exercised |= tuples_covered(tuple(entry["plan"]["executed"]), strength)
            outcome.entries.append(entry)
            if diagnosis is not None:
                outcome.add(entry, diagnosis, self.earlier_owner, self.fails)
            if cut is not None:
                after_steps = len(entry["plan"]["executed"]) == len(steps)
                work.extend((r, after_steps) for r in repairs(steps, cut, diagnosis))
        return outcome.verdict(self.settings)

    def _run_plan_steps(
        self,
        index: int,
        sequence: tuple[str, ...],
        steps: tuple[str, ...],
    ) -> tuple[dict[str, Any], int | None, Any]:
        """One child run of ``steps``; diagnosed when it did not pass."""
        from pytest_runtimeconflict.sandbox.runner import run_spec

        spec = self.spec(steps, id=">".join(steps))
        result = run_spec(spec)
        entry = result.to_json()
        cut = cut_step(result)
        entry["plan"] = {
            "index": index,
            "sequence": list(sequence),
            "modules": list(self.plan().modules),
            "strength": self.plan().strength,
            "executed": list(steps if cut is None else steps[: cut + 1]),
            "cut": cut is not None,
        }
        if result.outcome in ("passed", "latent"):
            return entry, cut, None
        diagnosis = self._diagnosed(spec, result, entry)
        entry["plan"]["conflict"] = diagnosis.key
        if cut is None:
            # Every step ran and the conflict struck after them (runtime exercising, exit):
            # the step that brought the conflict in is the last import of the minimal order.
            cut = last_minimal_step(steps, diagnosis.minimal_steps)
        return entry, cut, (result, diagnosis)

    def earlier_owner(self, index: int, diagnosis: Any) -> str | None:
        """The node id of the first earlier sequence that reproduces the same conflict.

        Deterministic without talking to other workers: the earlier sequence's shortest prefix
        holding the conflict's modules is re-run here and diagnosed (one extra child run).
        """
        from pytest_runtimeconflict.sandbox.runner import run_spec

        wanted = {s for s in diagnosis.minimal_steps if is_import_step(s) and " " not in s}
        if not wanted:
            return None
        for earlier in self.plan().sequences[:index]:
            if not wanted <= set(earlier):
                continue
            end = max(earlier.index(m) for m in wanted) + 1
            spec = self.spec(earlier[:end])
            result = run_spec(spec)
            if result.outcome in ("passed", "latent"):
                return None
            # Minimised like the conflict it is compared with, so the keys are comparable.
            if self._diagnose(spec, result, experiments=False).key == diagnosis.key:
                return node_id(earlier)
            return None
        return None

    def run_scenario_item(self, scenario: Any, run: Any) -> ItemVerdict:
        """Run one ``[[run]]`` of a scenario file and compare with its expectation."""
        from pytest_runtimeconflict.report.text import format_failure, format_summary_line
        from pytest_runtimeconflict.sandbox.runner import run_spec

        spec = dataclasses.replace(
            run.spec,
            python=self.settings.python,
            exercise=run.spec.exercise and self.settings.exercise,
            id=f"{scenario.name}::{run.id}",
        )
        result = run_spec(spec)
        entry = result.to_json()
        diagnosis = None
        if result.outcome != "passed":
            diagnosis = self._diagnosed(spec, result, entry)
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


def discover_modules(python: str, rootdir: Path, cache_dir: Path | None = None) -> tuple[str, ...]:
    """Import names worth planning: distributions that ship ELF objects, plus the project."""
    from pytest_runtimeconflict.static.scan import scan_environment

    result = scan_environment(python=python, cache_dir=cache_dir)
    with_elf = {o.distribution for o in result.objects if o.distribution}
    names: set[str] = set()
    for dist, tops in result.distributions.items():
        if dist in with_elf:
            public = [t for t in tops if is_import_step(t) and not t.startswith("_")]
            names.update(public or [t for t in tops if is_import_step(t)])
    names.update(_project_modules(rootdir))
    return tuple(sorted(names))


def _project_modules(rootdir: Path) -> list[str]:
    """The import package of the project under test, from ``pyproject.toml`` [project].name."""
    pyproject = rootdir / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name", "")
    except (OSError, ValueError):
        return []
    module = re.sub(r"[-.]+", "_", str(name)).lower()
    for base in (rootdir, rootdir / "src"):
        if (base / module / "__init__.py").is_file() or (base / f"{module}.py").is_file():
            return [module]
    return []
