"""Engine-side orchestration of one pytest session (no pytest import here).

``RCState`` turns settings into a plan (once per session, shared by xdist workers through a
locked file), runs plan and scenario items through the sandbox, asks the diagnosis for a
verdict, and aggregates results (coverage, conflicts grouped by root cause) for the report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.locking import file_lock
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.options import Settings
from pytest_runtimeconflict.vocabulary import PLAN_NODE, REPORT_SCHEMA, fails, is_import_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """Planned import sequences over ``modules`` covering every ordered ``strength``-tuple."""

    modules: tuple[str, ...]
    strength: int
    sequences: tuple[tuple[str, ...], ...]


@dataclass
class ItemVerdict:
    """What an item should do after its runs: fail, xfail, skip, warn, or pass."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    xfail: str | None = None
    skip: str | None = None
    warning: str | None = None


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

    def fails(self, outcome: str) -> bool:
        return fails(outcome, self.settings.fail_on)

    def _diagnose(self, spec: RunSpec, result: Any, *, experiments: bool = True) -> Any:
        from pytest_runtimeconflict.diagnosis import diagnose
        from pytest_runtimeconflict.sandbox.runner import run_spec

        return diagnose(
            spec, result, max_runs=self.settings.max_runs, experiments=experiments, run=run_spec
        )

    def run_plan_item(self, index: int, sequence: tuple[str, ...]) -> ItemVerdict:
        """Run one planned sequence, and around each conflict that stops it, the sequence
        without the failing step and without its partners, so every tuple of the sequence is
        exercised or blocked by a named conflict.
        """
        from pytest_runtimeconflict.plan import tuples_covered

        strength = self.plan().strength
        wanted = tuples_covered(sequence, strength)
        exercised: set[tuple[str, ...]] = set()
        outcome = _PlanOutcome(fail_latent=self.fails("latent"))
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
                outcome.add(self, entry, diagnosis)
            if cut is not None:
                after_steps = len(entry["plan"]["executed"]) == len(steps)
                work.extend((r, after_steps) for r in _repairs(steps, cut, diagnosis))
        return outcome.verdict()

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
        cut = _cut_step(result)
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
        diagnosis = self._diagnose(spec, result)
        entry.update(diagnosis.to_json())
        entry["plan"]["conflict"] = diagnosis.key
        if cut is None:
            # Every step ran and the conflict struck after them (runtime exercising, exit):
            # the step that brought the conflict in is the last import of the minimal order.
            cut = _last_minimal_step(steps, diagnosis.minimal_steps)
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
            diagnosis = self._diagnose(spec, result)
            entry.update(diagnosis.to_json())
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
                verdict.warning = _latent_text(result)
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

    # ------------------------------------------------------------ aggregation

    def report_json(self) -> dict[str, Any]:
        """The JSON report: every run plus the plan's coverage."""
        data: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "scenarios": [dict(entry, nodeid=nodeid) for nodeid, entry in self.collected],
        }
        coverage = self.coverage()
        if coverage is not None:
            data["coverage"] = coverage
        return data

    def coverage(self) -> dict[str, Any] | None:
        """Ordered tuples exercised by the runs, and those blocked by a named conflict."""
        from pytest_runtimeconflict.plan import ordered_tuples, tuples_covered

        plan_entries = [e["plan"] for _, e in self.collected if "plan" in e]
        if not plan_entries:
            return None
        modules = plan_entries[0]["modules"]
        strength = plan_entries[0]["strength"]
        exercised: set[tuple[str, ...]] = set()
        for p in plan_entries:
            exercised |= tuples_covered(tuple(p["executed"]), strength)
        blocked: dict[tuple[str, ...], str] = {}
        for p in plan_entries:
            if p.get("conflict"):
                for tup in tuples_covered(tuple(p["sequence"]), strength):
                    if tup not in exercised:
                        blocked.setdefault(tup, p["conflict"])
        total = ordered_tuples(modules, strength)
        return {
            "modules": modules,
            "strength": strength,
            "tuples_total": len(total),
            "tuples_exercised": len(exercised & total),
            "blocked": [{"tuple": list(t), "conflict": c} for t, c in sorted(blocked.items())],
            "not_run": len(total - exercised - set(blocked)),
        }

    def summary_lines(self) -> list[str]:
        """Terminal summary: conflicts grouped by root cause, latent findings, coverage."""
        groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for nodeid, entry in self.collected:
            verdict = entry.get("verdict")
            if verdict and entry.get("outcome") in ("crashed", "failed", "hung"):
                groups.setdefault(verdict["key"], []).append((nodeid, entry))
        latent = _latent_families(e for _, e in self.collected if e.get("outcome") == "latent")
        if not self.collected:
            return []
        lines = ["", "=" * 20 + " runtime conflicts " + "=" * 20]
        lines.append(f"{len(groups)} distinct conflict(s) in {len(self.collected)} child run(s)")
        for key, members in sorted(groups.items()):
            verdict = members[0][1]["verdict"]
            nodes = sorted({n for n, _ in members})
            lines.append(f"- {verdict.get('rule') or 'unattributed'}: {verdict.get('cause', key)}")
            minimal = members[0][1].get("minimal_steps")
            if minimal:
                lines.append(f"    minimal order: {' > '.join(minimal)}")
            if verdict.get("user_advice"):
                lines.append(f"    avoid: {verdict['user_advice']}")
            lines.append(f"    seen in: {', '.join(nodes)}")
        if latent:
            lines.append(
                "latent: runtimes mapped more than once without a crash "
                "(a warning; --rc-fail-on=latent fails on it):"
            )
            for family, runtimes in sorted(latent.items()):
                lines.append(f"- {family}: " + ", ".join(sorted(runtimes)))
        coverage = self.coverage()
        if coverage is not None:
            name = {2: "pairs", 3: "triples"}.get(
                coverage["strength"], f"{coverage['strength']}-tuples"
            )
            lines.append(
                f"ordered {name} exercised: {coverage['tuples_exercised']}/{coverage['tuples_total']}"
                f" (blocked by a conflict: {len(coverage['blocked'])}, not run: {coverage['not_run']})"
            )
        return lines


def _latent_families(entries: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """Family -> the files (``dir/name`` and runtime) of every family mapped more than once."""
    out: dict[str, set[str]] = {}
    for entry in entries:
        by_family: dict[str, set[tuple[str, str]]] = {}
        for rt in entry.get("loaded_runtimes", []):
            path = str(rt.get("path", ""))
            parts = Path(path).parts
            # dist/lib/x.so reads better than lib/x.so; pkg.libs/x.so is already clear
            short = "/".join(parts[-3:] if len(parts) > 2 and parts[-2] == "lib" else parts[-2:])
            by_family.setdefault(str(rt.get("family")), set()).add((short, str(rt.get("runtime"))))
        for family, files in by_family.items():
            if len(files) > 1:
                out.setdefault(family, set()).update(f"{f} ({r})" for f, r in files)
    return out


@dataclass
class _PlanOutcome:
    """Failures, duplicates and latent warnings gathered over the runs of one plan item."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    latent: list[str] = field(default_factory=list)
    fail_latent: bool = False

    def add(self, state: RCState, entry: dict[str, Any], pair: tuple[Any, Any]) -> None:
        from pytest_runtimeconflict.report.text import format_failure

        result, diagnosis = pair
        key = diagnosis.key
        if key in self.failures or key in self.duplicates:
            return
        owner = state.earlier_owner(entry["plan"]["index"], diagnosis)
        if owner is not None:
            entry["duplicate_of"] = owner
            self.duplicates[key] = f"{key} (reported by {owner})"
        elif state.fails(result.outcome):
            self.failures[key] = format_failure(result, diagnosis)
        else:
            self.latent.append(format_failure(result, diagnosis).splitlines()[0])

    def verdict(self) -> ItemVerdict:
        verdict = ItemVerdict(entries=self.entries)
        for entry in self.entries:
            if entry.get("outcome") == "latent":
                self.latent.append(_latent_text_json(entry))
                if self.fail_latent:  # --rc-fail-on=latent
                    self.failures.setdefault("latent", _latent_text_json(entry))
        if self.failures:
            verdict.failure = "\n\n".join(self.failures.values())
        elif self.duplicates:
            verdict.skip = "same conflict as an earlier sequence: " + "; ".join(
                self.duplicates.values()
            )
        if self.latent:
            verdict.warning = "\n".join(dict.fromkeys(self.latent))
        return verdict


def _repairs(steps: tuple[str, ...], cut: int, pair: Any) -> list[tuple[str, ...]]:
    """Sequences to run after ``steps`` stopped at ``cut``: without the failing step, and
    without the failing step's partners in the minimal reproducer (so tuples that start with
    the failing module still get their turn)."""
    without_failing = steps[:cut] + steps[cut + 1 :]
    repairs = [without_failing]
    if pair is not None:
        partners = {s for s in pair[1].minimal_steps if s != steps[cut]} & set(steps[:cut])
        if partners:
            repairs.append(tuple(s for s in steps if s not in partners))
    return [r for r in repairs if r]


def _last_minimal_step(steps: Sequence[str], minimal: Sequence[str]) -> int | None:
    """Index in ``steps`` of the last import step of the minimal reproducer."""
    positions = [steps.index(s) for s in minimal if s in steps and is_import_step(s)]
    return max(positions) if positions else None


def _cut_step(result: Any) -> int | None:
    """Index of the step that stopped the run (None when every step ran)."""
    if result.outcome in ("passed", "latent"):
        return None
    if result.failed_step is None:
        return None
    return int(result.failed_step)


def _latent_text(result: Any) -> str:
    return _latent_text_json(result.to_json())


def _latent_text_json(entry: dict[str, Any]) -> str:
    """One line naming the runtime families mapped more than once, and their files."""
    by_family: dict[str, list[dict[str, Any]]] = {}
    for rt in entry.get("loaded_runtimes", []):
        by_family.setdefault(str(rt.get("family")), []).append(rt)
    parts = [
        f"{family}: " + ", ".join(f"{rt.get('runtime')} {rt.get('path')}" for rt in rts)
        for family, rts in sorted(by_family.items())
        if len({rt.get("path") for rt in rts}) > 1
    ]
    order = " > ".join(entry.get("steps", []))
    return f"latent runtime conflict in {order}: " + "; ".join(parts)


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
