"""Diagnosis records: the evidence of one failing run, the verdict drawn from it, the
counter-experiments tried, and the whole :class:`Diagnosis`. All frozen, built complete."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pytest_runtimeconflict.model.facts import Finding, ObjectInfo
from pytest_runtimeconflict.model.run import Binding, RunResult, RunSpec
from pytest_runtimeconflict.vocabulary import JsonObject

KINDS = ("order", "load_mode", "preload", "ld_preload", "env", "start_method")
CONFIDENCES = ("high", "medium", "low")


@dataclass(frozen=True)
class AvoidedBy:
    """One counter-experiment and what it did to the failure.

    ``avoided`` is True when the change made the failure go away (the run passed, or for a
    crash/error/hang, survived with at most a latent duplicate). ``unsafe`` marks changes that
    hide the conflict instead of removing it (``KMP_DUPLICATE_LIB_OK=TRUE``). ``effect`` says
    what the change did in words when it did more than fail the same way (``could-not-start``
    with the loader's message, or "this change makes it crash: SIGSEGV in ...").
    """

    change: str
    kind: str
    outcome: str
    unsafe: bool = False
    avoided: bool = False
    signal: str | None = None
    effect: str = ""
    workloads: tuple[str, ...] = ()  # workloads the run ran beyond the minimal order's steps

    def to_json(self) -> JsonObject:
        return {
            "change": self.change,
            "kind": self.kind,
            "outcome": self.outcome,
            "unsafe": self.unsafe,
            "avoided": self.avoided,
            "signal": self.signal,
            "effect": self.effect,
            "workloads": list(self.workloads),
        }


@dataclass(frozen=True)
class LibraryRole:
    """A library the verdict blames, where it came from and what part it plays."""

    path: str
    distribution: str | None
    family: str | None
    runtime: str | None
    role: str

    def to_json(self) -> JsonObject:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Experiment:
    """A planned counter-experiment: the readable change and the spec that applies it."""

    change: str
    kind: str
    spec: RunSpec
    unsafe: bool = False
    workloads: tuple[str, ...] = ()  # workload steps added to the minimal order's steps
    # the change of an earlier experiment this one is another route to: not run when that one
    # avoided the failure (LD_PRELOAD of a library whose ctypes preload avoided it)
    alternative_to: str = ""


@dataclass(frozen=True)
class Evidence:
    """What one failing run shows, with the static description of every mapped object."""

    result: RunResult
    outcome: str
    signal: str | None
    text: str
    markers: tuple[str, ...]
    failing_libraries: tuple[str, ...]
    init_library: str | None
    crash_library: str | None
    frame_library: str | None
    thread_libraries: Mapping[str, int]
    load_order: Mapping[str, int]
    necessary: frozenset[str]
    objects: Mapping[str, ObjectInfo]
    findings: tuple[Finding, ...]
    runtimes: Mapping[str, tuple[str, str]]
    bindings: tuple[Binding, ...] = ()
    frame_libraries: tuple[str, ...] = ()
    # How the traced re-run that gave ``bindings`` ended when not like the minimal run (a
    # flaky crash that did not recur): the bindings hold, the failure was not seen with them.
    trace_outcome: str | None = None

    @property
    def active(self) -> set[str]:
        """Libraries the run's own evidence points at (not just "mapped")."""
        found = set(self.failing_libraries) | set(self.thread_libraries)
        found.update(p for p in (self.init_library, self.crash_library, self.frame_library) if p)
        return {os.path.realpath(p) for p in found}

    def duplicated_families(self) -> set[str]:
        """Families with two or more distinct mapped files."""
        by_family: dict[str, set[str]] = {}
        for path, (family, _runtime) in self.runtimes.items():
            by_family.setdefault(family, set()).add(path)
        return {family for family, paths in by_family.items() if len(paths) > 1}

    def order_of(self, path: str) -> int:
        """Load position of ``path`` (unknown files last)."""
        return self.load_order.get(os.path.realpath(path), 1 << 30)


@dataclass(frozen=True)
class Verdict:
    """The attribution before experiments: rule, libraries, evidence score and texts."""

    rule: str | None
    libraries: tuple[LibraryRole, ...]
    findings: tuple[Finding, ...]
    score: int
    cause: str
    author_advice: str
    key: str
    families: tuple[str, ...]
    soname: str | None = None
    version: str | None = None
    needer: str | None = None


def _advice_rank(experiment: AvoidedBy) -> tuple[int, int]:
    return (1 if experiment.unsafe else 0, KINDS.index(experiment.kind))


@dataclass(frozen=True)
class Diagnosis:
    """The outcome of a diagnosis.

    ``experiments`` holds every counter-experiment tried, with its outcome; ``avoided_by`` the
    subset that avoided the failure (the JSON key ``avoided_by`` lists exactly those, the key
    ``experiments`` all of them).
    """

    minimal_steps: tuple[str, ...]
    minimal_result: RunResult
    runs_used: int
    cap_hit: bool
    experiments: tuple[AvoidedBy, ...] = ()
    libraries: tuple[LibraryRole, ...] = ()
    findings: tuple[Finding, ...] = ()
    rule: str | None = None
    confidence: str = "low"
    cause: str = ""
    author_advice: str = ""
    user_advice: str = ""
    key: str = ""
    evidence_lines: tuple[str, ...] = field(default=())

    @property
    def avoided_by(self) -> list[AvoidedBy]:
        """The experiments that avoided the failure, safe ones first."""
        return sorted((e for e in self.experiments if e.avoided), key=_advice_rank)

    def verdict_json(self) -> JsonObject:
        return {
            "rule": self.rule,
            "confidence": self.confidence,
            "cause": self.cause,
            "author_advice": self.author_advice,
            "user_advice": self.user_advice,
            "key": self.key,
        }

    def to_json(self) -> JsonObject:
        return {
            "minimal_steps": list(self.minimal_steps),
            "runs_used": self.runs_used,
            "cap_hit": self.cap_hit,
            "avoided_by": [e.to_json() for e in self.avoided_by],
            "experiments": [e.to_json() for e in self.experiments],
            "libraries": [lib.path for lib in self.libraries],
            "library_details": [lib.to_json() for lib in self.libraries],
            "findings": [f.to_json() for f in self.findings],
            "verdict": self.verdict_json(),
            "evidence": list(self.evidence_lines),
            "minimal_run": self.minimal_run_json(),
        }

    def minimal_run_json(self) -> JsonObject:
        """How the minimal order's own run failed (where, and which runtimes it called into):
        what a reproducer of that order needs, beyond the original run's keys."""
        result = self.minimal_result
        return {
            "steps": list(result.spec.steps),
            "outcome": result.outcome,
            "signal": result.signal,
            "phase": result.phase,
            "failed_step": result.failed_step,
            "message": result.message,
            "exercise": result.spec.exercise,
            "exercised": [dict(e) for e in result.exercised],
        }
