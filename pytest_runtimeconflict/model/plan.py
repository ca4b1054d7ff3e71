"""Plan records: the planned import sequences of a session and the coverage its runs
reached."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Tuple = tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Planned import sequences over ``modules`` covering every ordered ``strength``-tuple."""

    modules: tuple[str, ...]
    strength: int
    sequences: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class BlockedTuple:
    """An ordered tuple that could not run because a named conflict cut its sequence."""

    tuple: Tuple
    conflict: str

    def to_json(self) -> dict[str, Any]:
        return {"tuple": list(self.tuple), "conflict": self.conflict}


@dataclass(frozen=True)
class Coverage:
    """How much of the plan's ordered tuples the runs exercised, and what blocked the rest."""

    modules: Tuple
    strength: int
    tuples_total: int
    tuples_exercised: int
    blocked: tuple[BlockedTuple, ...] = ()

    @property
    def not_run(self) -> int:
        """Tuples neither exercised nor blocked: 0 when the plan ran to completion."""
        return self.tuples_total - self.tuples_exercised - len(self.blocked)

    def describe(self) -> str:
        """The summary line: ``ordered pairs exercised: 56/56 (blocked by a conflict: 0, not
        run: 0)``."""
        name = {2: "pairs", 3: "triples"}.get(self.strength, f"{self.strength}-tuples")
        return (
            f"ordered {name} exercised: {self.tuples_exercised}/{self.tuples_total}"
            f" (blocked by a conflict: {len(self.blocked)}, not run: {self.not_run})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "modules": list(self.modules),
            "strength": self.strength,
            "tuples_total": self.tuples_total,
            "tuples_exercised": self.tuples_exercised,
            "blocked": [b.to_json() for b in self.blocked],
            "not_run": self.not_run,
        }
