"""Item verdicts: what a plan or scenario item does after its runs (fail, xfail, skip, warn or
pass), the conflicts gathered over one plan item's runs, and the repairs around a conflict
that cut a sequence short. No pytest import: the plugin applies the verdicts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pytest_runtimeconflict.model import Diagnosis, Finding, RunResult
from pytest_runtimeconflict.model.entry import RunEntry
from pytest_runtimeconflict.report.latent import latent_text_json, latent_warnings
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.vocabulary import JsonObject, is_import_step


@dataclass(frozen=True)
class ItemVerdict:
    """What an item should do after its runs: fail, xfail, skip, warn, or pass."""

    entries: tuple[RunEntry, ...] = ()
    failure: str | None = None
    xfail: str | None = None
    skip: str | None = None
    # One message per distinct latent runtime set (the same text for the same files, whatever
    # the order that mapped them), so each is warned once, not once per sequence.
    warnings: tuple[str, ...] = ()

    def entries_json(self) -> list[JsonObject]:
        """The entries as the report records them."""
        return [entry.to_json() for entry in self.entries]


# (result, diagnosis) of a newly diagnosed conflict
Pair = tuple[RunResult, Diagnosis]
# Whether an entry's conflict is known (in the baseline), and the entry with the baseline's mark.
KnownJudge = Callable[[RunEntry], "tuple[bool, RunEntry]"]
FindingJudge = Callable[[RunEntry, Finding], "tuple[bool, RunEntry]"]


def _never_known(entry: RunEntry) -> tuple[bool, RunEntry]:
    return False, entry


def _no_known_finding(entry: RunEntry, finding: Finding) -> tuple[bool, RunEntry]:
    return False, entry


def known_text(settings: _BaselineSettings, conflicts: Sequence[str]) -> str:
    """The xfail reason of an item whose only failing conflicts are in the baseline."""
    where = f"in the baseline {settings.baseline}"
    if settings.update_baseline:
        where = f"recorded into the baseline {settings.baseline}"
    return f"known conflict ({where}): " + "; ".join(dict.fromkeys(conflicts))


class _BaselineSettings(Protocol):
    @property
    def baseline(self) -> str: ...

    @property
    def update_baseline(self) -> bool: ...


@dataclass
class PlanOutcome:
    """Failures, duplicates, known conflicts (in the --rc-baseline file) and latent warnings
    gathered over the runs of one plan item: an accumulator while the item runs; its
    :meth:`verdict` is the frozen result."""

    entries: list[RunEntry] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, str] = field(default_factory=dict)
    latent: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # warnings that are not conflicts
    seen: dict[str, str] = field(default_factory=dict)  # conflict key -> first run id
    fail_latent: bool = False
    known: dict[str, str] = field(default_factory=dict)
    is_known: KnownJudge = _never_known
    # (entry, static finding no run reproduced) -> in the baseline
    is_known_finding: FindingJudge = _no_known_finding

    def add(
        self,
        entry: RunEntry,
        pair: Pair,
        earlier_owner: Callable[[RunEntry, Diagnosis], str | None],
        fails: Callable[[str], bool],
        complete: Callable[[RunEntry, Pair], tuple[RunEntry, Pair]] | None = None,
    ) -> None:
        """Record one diagnosed conflict of the item (once per conflict key) with its entry.
        ``complete`` finishes the diagnosis (counter-experiments) of a conflict no earlier
        item owns."""
        result, diagnosis = pair
        key = diagnosis.key
        if key in self.seen:
            self.entries.append(entry.replace(same_conflict_as=self.seen[key]))
            return
        self.seen[key] = entry.id
        owner = earlier_owner(entry, diagnosis)
        if owner is not None:
            self.entries.append(entry.replace(duplicate_of=owner))
            self.duplicates[key] = f"{key} (reported by {owner})"
            return
        if complete is not None:
            entry, (result, diagnosis) = complete(entry, pair)
        known = False
        if fails(result.outcome):
            known, entry = self.is_known(entry)
        self.entries.append(entry)
        if fails(result.outcome) and known:
            self.known[key] = format_failure(result, diagnosis).splitlines()[0]
        elif fails(result.outcome):
            self.failures[key] = format_failure(result, diagnosis)
        else:
            self.latent.append(format_failure(result, diagnosis).splitlines()[0])

    def add_owned(self, entry: RunEntry) -> None:
        """Record a failure that an earlier item's planned run showed again the same way (a
        sub-experiment of this run: :func:`~.owners.owned_by_sub_run`); not diagnosed here,
        that item reports it."""
        from pytest_runtimeconflict.planning.workloads import step_label

        prior = entry.same_failure_as
        assert prior is not None
        what = (
            f"{entry.outcome} at {step_label(prior.step)} as its earlier run "
            f"{prior.run} does, not diagnosed again"
        )
        self.entries.append(entry)
        self.duplicates.setdefault(what, f"{what} (reported by {prior.item})")

    def verdict(self, settings: _BaselineSettings | None = None) -> ItemVerdict:
        """What the item does: fail on a new conflict, xfail when every failing conflict is
        known (``settings`` names the baseline), skip when all were reported earlier."""
        self.entries = [self._judge_latent(entry) for entry in self.entries]
        failure = xfail = skip = None
        if self.failures:
            failure = "\n\n".join(self.failures.values())
        elif self.known and settings is not None:
            xfail = known_text(settings, list(self.known.values()))
        elif self.duplicates:
            skip = "same conflict as an earlier sequence: " + "; ".join(self.duplicates.values())
        return ItemVerdict(
            entries=tuple(self.entries),
            failure=failure,
            xfail=xfail,
            skip=skip,
            warnings=tuple(dict.fromkeys([*self.latent, *self.notes])),
        )

    def _judge_latent(self, entry: RunEntry) -> RunEntry:
        """A latent run's warnings; with --rc-fail-on=latent, a failure unless known."""
        if entry.outcome != "latent":
            return entry
        data = entry.to_json()
        self.latent.extend(latent_warnings(data))
        if not self.fail_latent:
            return entry
        known, entry = self.is_known(entry)
        if known:
            self.known.setdefault("latent", latent_text_json(data))
        else:
            self.failures.setdefault("latent", latent_text_json(data))
        return entry


def repairs(
    steps: tuple[str, ...], cut: int, involved: Sequence[str] = ()
) -> list[tuple[str, ...]]:
    """Sequences to run after ``steps`` stopped at ``cut``: without the failing step, and
    without the failing step's partners among the steps ``involved`` in the failure (so
    tuples that start with the failing module still get their turn)."""
    without_failing = steps[:cut] + steps[cut + 1 :]
    repairs = [without_failing]
    others = {s for s in involved if s != steps[cut]} & set(steps[:cut])
    if others:
        repairs.append(tuple(s for s in steps if s not in others))
    return [r for r in repairs if r]


def partners(
    entry: RunEntry,
    pair: Pair | None,
    after_steps: bool,
    known_minimal: Sequence[str] = (),
) -> Sequence[str]:
    """The steps a repair of ``entry``'s failure leaves out besides the failing one: the
    modules of the earlier sub-run that showed the same failure (not minimised here: any of
    them may be the partner), else the minimal reproducer's steps (this run's, or
    ``known_minimal``: that of the item's earlier run with the same conflict), but none once
    every import had run (each tuple has met; dropping the partners would meet the same
    conflict again with the next partner)."""
    prior = entry.same_failure_as
    if prior is not None:
        return tuple(prior.modules)
    if after_steps:
        return ()
    return tuple(pair[1].minimal_steps) if pair is not None else tuple(known_minimal)


def last_minimal_step(steps: Sequence[str], minimal: Sequence[str]) -> int | None:
    """Index in ``steps`` of the last import step of the minimal reproducer."""
    positions = [steps.index(s) for s in minimal if s in steps and is_import_step(s)]
    return max(positions) if positions else None


def cut_step(result: RunResult) -> int | None:
    """Index of the step that stopped the run (None when every step ran)."""
    if result.outcome in ("passed", "latent"):
        return None
    if result.failed_step is None:
        return None
    return int(result.failed_step)
