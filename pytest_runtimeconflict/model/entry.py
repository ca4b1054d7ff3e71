"""Report entries: one child run as the engine records it, typed, and its JSON at the boundary.

A :class:`RunEntry` is built by the engine from a :class:`~.run.RunResult` and grows by
``dataclasses.replace`` (never by patching): its plan record, the diagnosis, ownership marks,
the minimal load mode, a target item's judgement of its findings, the baseline's mark. The
plugin sends ``to_json()`` to the report (through pytest's report on an xdist worker); from
there on, entries are JSON (merge, baseline, reproducers and annotations read them from files
too). The keys of ``to_json()`` are the report's contract.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_runtimeconflict.vocabulary import JsonObject

if TYPE_CHECKING:
    from pytest_runtimeconflict.model.diagnosis import Diagnosis
    from pytest_runtimeconflict.model.facts import Finding
    from pytest_runtimeconflict.model.plan import Variant
    from pytest_runtimeconflict.model.run import RunResult, RunSpec


@dataclass(frozen=True)
class PlanRecord:
    """Where a planned run sits in the plan: its item, variant, order and what it executed."""

    index: int
    item: str
    kind: str
    sequence: tuple[str, ...]
    order: tuple[str, ...]
    modules: tuple[str, ...]
    strength: int
    executed: tuple[str, ...]
    variant: Variant
    masked: tuple[tuple[str, str, str], ...] = ()
    # the conflict key the run met (or "as <run> (<item>)" for a failure owned earlier)
    conflict: str | None = None

    @property
    def cut(self) -> bool:
        return len(self.executed) < len(self.order)

    def to_json(self) -> JsonObject:
        out = {
            "index": self.index,
            "item": self.item,
            "kind": self.kind,
            "sequence": list(self.sequence),
            "order": list(self.order),
            "modules": list(self.modules),
            "strength": self.strength,
            "executed": list(self.executed),
            "cut": self.cut,
            "variant": self.variant.to_json(),
            "masked": [list(m) for m in self.masked],
        }
        if self.conflict is not None:
            out["conflict"] = self.conflict
        return out


@dataclass(frozen=True)
class SameFailure:
    """An earlier item's planned run that fails the same way at the same step: that item owns
    the failure (``same_failure_as``)."""

    item: str
    run: str
    modules: tuple[str, ...]
    step: str

    def to_json(self) -> JsonObject:
        return {
            "item": self.item,
            "run": self.run,
            "modules": list(self.modules),
            "step": self.step,
        }


@dataclass(frozen=True)
class LoadMode:
    """The smallest load mode under which a conflict found under a variant still fails."""

    global_imports: tuple[str, ...]
    preload: tuple[str, ...]
    ld_preload: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    order: str
    runs: int

    @classmethod
    def of(cls, spec: RunSpec, order: str, runs: int) -> LoadMode:
        return cls(spec.global_imports, spec.preload, spec.ld_preload, spec.env, order, runs)

    def to_json(self) -> JsonObject:
        return {
            "global_imports": list(self.global_imports),
            "preload": list(self.preload),
            "ld_preload": list(self.ld_preload),
            "env": dict(self.env),
            "order": self.order,
            "runs": self.runs,
        }


@dataclass(frozen=True)
class JudgedFinding:
    """A target item's static finding, and whether (and how) one of its runs reproduced it."""

    finding: Finding
    reproduced_as: str | None
    text: str

    def to_json(self) -> JsonObject:
        return dict(
            self.finding.to_json(),
            reproduced=self.reproduced_as is not None,
            reproduced_as=self.reproduced_as,
            text=self.text,
        )


@dataclass(frozen=True)
class TargetRecord:
    """What a target item's last entry says of the item's findings."""

    item: str
    findings: tuple[JudgedFinding, ...]

    def to_json(self) -> JsonObject:
        return {"item": self.item, "findings": [f.to_json() for f in self.findings]}


@dataclass(frozen=True)
class ScenarioRecord:
    """Which scenario file and ``[[run]]`` an entry ran, what it expected, whether it matched."""

    file: str
    name: str
    run: str
    expected: JsonObject
    matched: bool

    def to_json(self) -> JsonObject:
        return {
            "file": self.file,
            "name": self.name,
            "run": self.run,
            "expected": dict(self.expected),
            "matched": self.matched,
        }


@dataclass(frozen=True)
class BaselineMark:
    """The baseline's word on an entry: ``known`` when every conflict of it is recorded."""

    status: str
    conflicts: tuple[JsonObject, ...]

    def to_json(self) -> JsonObject:
        return {"status": self.status, "conflicts": [dict(c) for c in self.conflicts]}


@dataclass(frozen=True)
class RunEntry:
    """One child run as the report records it."""

    result: RunResult
    plan: PlanRecord | None = None
    workloads_skipped: tuple[str, ...] = ()
    variant_unusable: str | None = None
    diagnosis: Diagnosis | None = None
    headline: str | None = None
    # runs of a diagnosis completed later (minimisation + counter-experiments)
    runs_used: int | None = None
    load_mode: LoadMode | None = None
    same_conflict_as: str | None = None
    duplicate_of: str | None = None
    same_failure_as: SameFailure | None = None
    target: TargetRecord | None = None
    scenario: ScenarioRecord | None = None
    child_runs: int | None = None
    child_runs_by_purpose: dict[str, int] | None = None
    baseline: BaselineMark | None = None

    @property
    def id(self) -> str:
        return self.result.spec.id

    @property
    def outcome(self) -> str:
        return self.result.outcome

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The findings the report shows: the diagnosis's when there is one, else the run's."""
        return self.diagnosis.findings if self.diagnosis is not None else self.result.findings

    @property
    def rule(self) -> str | None:
        """The verdict's rule (None without a diagnosis or when unattributed)."""
        return self.diagnosis.rule if self.diagnosis is not None else None

    def replace(self, **changes: Any) -> RunEntry:
        """This entry with ``changes`` (the record itself never changes)."""
        return dataclasses.replace(self, **changes)

    def with_plan(self, **changes: Any) -> RunEntry:
        """This entry with its plan record changed (``conflict=...``)."""
        assert self.plan is not None
        return self.replace(plan=dataclasses.replace(self.plan, **changes))

    def to_json(self) -> JsonObject:
        """The report's entry: the run's keys, overlaid by the diagnosis's (whose
        ``libraries`` and ``findings`` replace the sandbox's), then the engine's records."""
        out = self.result.to_json()
        if self.plan is not None:
            out["plan"] = self.plan.to_json()
        if self.workloads_skipped:
            out["workloads_skipped"] = list(self.workloads_skipped)
        if self.variant_unusable is not None:
            out["variant_unusable"] = self.variant_unusable
        if self.load_mode is not None:
            out["load_mode"] = self.load_mode.to_json()
        if self.diagnosis is not None:
            out.update(self.diagnosis.to_json())
            out["headline"] = self.headline
        if self.runs_used is not None:
            out["runs_used"] = self.runs_used
        optional: dict[str, Any] = {
            "same_conflict_as": self.same_conflict_as,
            "duplicate_of": self.duplicate_of,
            "same_failure_as": self.same_failure_as,
            "target": self.target,
            "scenario": self.scenario,
            "child_runs": self.child_runs,
            "child_runs_by_purpose": self.child_runs_by_purpose,
            "baseline": self.baseline,
        }
        for key, value in optional.items():
            if value is not None:
                out[key] = value.to_json() if hasattr(value, "to_json") else value
        return out
