"""Item verdicts: what a plan or scenario item does after its runs (fail, xfail, skip, warn or
pass), the conflicts gathered over one plan item's runs, and the repairs around a conflict
that cut a sequence short. No pytest import: the plugin applies the verdicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_runtimeconflict.model import Diagnosis, RunResult
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.vocabulary import is_import_step


@dataclass
class ItemVerdict:
    """What an item should do after its runs: fail, xfail, skip, warn, or pass."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None
    xfail: str | None = None
    skip: str | None = None
    warning: str | None = None


@dataclass
class PlanOutcome:
    """Failures, duplicates and latent warnings gathered over the runs of one plan item."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    latent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings that are not conflicts
    seen: dict[str, str] = field(default_factory=dict)  # conflict key -> first run id
    fail_latent: bool = False

    def add(
        self,
        entry: dict[str, Any],
        pair: tuple[RunResult, Diagnosis],
        earlier_owner: Callable[[dict[str, Any], Diagnosis], str | None],
        fails: Callable[[str], bool],
        complete: Callable[[dict[str, Any], Any], Any] | None = None,
    ) -> None:
        """Record one diagnosed conflict of the item (once per conflict key). ``complete``
        finishes the diagnosis (counter-experiments) of a conflict no earlier item owns."""
        result, diagnosis = pair
        key = diagnosis.key
        if key in self.seen:
            entry["same_conflict_as"] = self.seen[key]
            return
        self.seen[key] = str(entry.get("id", ""))
        owner = earlier_owner(entry, diagnosis)
        if owner is not None:
            entry["duplicate_of"] = owner
            self.duplicates[key] = f"{key} (reported by {owner})"
            return
        if complete is not None:
            result, diagnosis = complete(entry, pair)
        if fails(result.outcome):
            self.failures[key] = format_failure(result, diagnosis)
        else:
            self.latent.append(format_failure(result, diagnosis).splitlines()[0])

    def verdict(self) -> ItemVerdict:
        verdict = ItemVerdict(entries=self.entries)
        for entry in self.entries:
            if entry.get("outcome") == "latent":
                self.latent.append(latent_text_json(entry))
                if self.fail_latent:  # --rc-fail-on=latent
                    self.failures.setdefault("latent", latent_text_json(entry))
        if self.failures:
            verdict.failure = "\n\n".join(self.failures.values())
        elif self.duplicates:
            verdict.skip = "same conflict as an earlier sequence: " + "; ".join(
                self.duplicates.values()
            )
        warnings = [*self.latent, *self.notes]
        if warnings:
            verdict.warning = "\n".join(dict.fromkeys(warnings))
        return verdict


def repairs(steps: tuple[str, ...], cut: int, pair: Any) -> list[tuple[str, ...]]:
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


def last_minimal_step(steps: Sequence[str], minimal: Sequence[str]) -> int | None:
    """Index in ``steps`` of the last import step of the minimal reproducer."""
    positions = [steps.index(s) for s in minimal if s in steps and is_import_step(s)]
    return max(positions) if positions else None


def cut_step(result: Any) -> int | None:
    """Index of the step that stopped the run (None when every step ran)."""
    if result.outcome in ("passed", "latent"):
        return None
    if result.failed_step is None:
        return None
    return int(result.failed_step)


def latent_text(result: Any) -> str:
    return latent_text_json(result.to_json())


def latent_text_json(entry: dict[str, Any]) -> str:
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
