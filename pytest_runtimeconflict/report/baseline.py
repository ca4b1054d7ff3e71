"""Baselines: conflicts a project already knows about, so that only new ones fail.

A conflict's stable identity is its rule plus its libraries, each named by the distribution
that ships it and its file name with what changes between builds removed: auditwheel's hash
suffix (``libgomp-a34b3233.so.1.0.0``), minor version numbers (``.so.1.0.0`` -> ``.so.1``) and
the Python ABI tag of extension modules (``_core.cpython-311-x86_64-linux-gnu.so`` ->
``_core.so``). The same conflict therefore keeps its key across rebuilds, Python versions and
machines, while two different copies of one runtime stay apart (by distribution).

The file (schema ``pytest-runtimeconflict/baseline/1``) is plain JSON, one record per conflict::

    {"schema": "pytest-runtimeconflict/baseline/1",
     "conflicts": [{"rule": "openmp-duplicate",
                    "libraries": [{"distribution": "zoo-iomp-a", "file": "libiomp5.so"},
                                  {"distribution": "zoo-iomp-b", "file": "libiomp5.so"}],
                    "note": "CRASHED: SIGABRT ... (ignored when read)"}]}

The same format serves ``pytest --rc-baseline`` (reproduced conflicts) and ``scan --baseline``
(static findings); keep one file for each, since each lists as fixed what it no longer sees.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.files.atomic import write_atomically
from pytest_runtimeconflict.model.entry import BaselineMark, RunEntry
from pytest_runtimeconflict.model.facts import Finding
from pytest_runtimeconflict.vocabulary import BASELINE_SCHEMA, JsonObject

_HASH_SUFFIX = re.compile(r"(?:-[0-9a-f]{8})+(?=\.so(?:\.|$))")
_ABI_TAG = re.compile(r"\.(?:cpython-|pypy)[^/]*?(?=\.so$)|\.abi3(?=\.so$)")
_MINOR_VERSIONS = re.compile(r"(\.so\.\d+)(?:\.\d+)+$")


def stable_file_name(path: str) -> str:
    """The file name of ``path`` without hash suffix, ABI tag and minor versions."""
    name = os.path.basename(path.rstrip("/"))
    name = _HASH_SUFFIX.sub("", name)
    name = _ABI_TAG.sub("", name)
    return _MINOR_VERSIONS.sub(r"\1", name)


def normalise_distribution(name: str | None) -> str | None:
    """PEP 503 form (``Zoo_IOMP.a`` -> ``zoo-iomp-a``); None for files of no distribution."""
    return re.sub(r"[-_.]+", "-", name).lower() if name else None


@dataclass(frozen=True)
class Conflict:
    """One conflict by its stable identity. ``steps`` only when no library is named."""

    rule: str
    libraries: tuple[tuple[str | None, str], ...]
    steps: tuple[str, ...] = ()
    note: str = field(default="", compare=False)

    @classmethod
    def of(
        cls,
        rule: str,
        libraries: Iterable[tuple[str | None, str]],
        steps: Sequence[str] = (),
        note: str = "",
    ) -> Conflict:
        """From (distribution, path) pairs: names made stable, sorted, de-duplicated."""
        libs = sorted(
            {(normalise_distribution(d), stable_file_name(p)) for d, p in libraries},
            key=lambda lib: (lib[0] or "", lib[1]),
        )
        return cls(rule, tuple(libs), () if libs else tuple(steps), note)

    @property
    def key(self) -> str:
        """``openmp-duplicate: zoo-iomp-a/libiomp5.so + zoo-iomp-b/libiomp5.so``."""
        parts = [f"{dist or '(system)'}/{name}" for dist, name in self.libraries]
        if not parts:
            parts = [" > ".join(self.steps) or "(no steps)"]
        return f"{self.rule}: {' + '.join(parts)}"

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "rule": self.rule,
            "libraries": [{"distribution": d, "file": f} for d, f in self.libraries],
        }
        if self.steps:
            data["steps"] = list(self.steps)
        if self.note:
            data["note"] = self.note
        return data


@dataclass(frozen=True)
class Baseline:
    """The conflicts of a baseline file (``path``); empty when the file is to be created."""

    path: str
    conflicts: tuple[Conflict, ...] = ()

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(c.key for c in self.conflicts)

    def mark(self, entry: RunEntry) -> tuple[bool, RunEntry]:
        """Whether ``entry``'s conflicts are all known, and the entry with the baseline's
        mark (``known`` or ``new``, and each conflict's key)."""
        found = conflicts_of(entry.to_json())
        known = bool(found) and all(c.key in self.keys for c in found)
        conflicts = tuple(dict(c.to_json(), key=c.key) for c in found)
        return known, entry.replace(baseline=BaselineMark("known" if known else "new", conflicts))

    def mark_finding(self, entry: RunEntry, finding: Finding) -> tuple[bool, RunEntry]:
        """Whether the baseline records a static finding that no run reproduced, and the entry
        with the finding added to its mark."""
        from pytest_runtimeconflict.static.records import distributions_of

        conflict = finding_conflict(finding, distributions_of(finding.libraries))
        known = conflict.key in self.keys
        mark = entry.baseline or BaselineMark("known", ())
        mark = BaselineMark(
            mark.status if known else "new",
            (*mark.conflicts, dict(conflict.to_json(), key=conflict.key)),
        )
        return known, entry.replace(baseline=mark)


def conflicts_of(entry: Mapping[str, Any]) -> list[Conflict]:
    """The conflicts of one report entry: its diagnosed conflict, or for a latent run one per
    runtime family mapped more than once."""
    verdict = entry.get("verdict")
    headline = entry.get("headline") or [""]
    if entry.get("outcome") == "latent":
        return _latent_conflicts(entry)
    if verdict:
        rule = verdict.get("rule") or str(verdict.get("key", "unattributed")).split(":")[0]
        libraries = [
            (lib.get("distribution"), str(lib["path"])) for lib in entry.get("library_details", [])
        ]
        return [Conflict.of(rule, libraries, entry.get("minimal_steps", ()), headline[0])]
    return []


def _latent_conflicts(entry: Mapping[str, Any]) -> list[Conflict]:
    from pytest_runtimeconflict.static.records import distributions_of

    by_family: dict[str, set[str]] = {}
    for rt in entry.get("loaded_runtimes", []):
        by_family.setdefault(str(rt.get("family")), set()).add(str(rt.get("path")))
    duplicated = {f: sorted(paths) for f, paths in by_family.items() if len(paths) > 1}
    owners = distributions_of(p for paths in duplicated.values() for p in paths)
    return [
        Conflict.of(f"latent-{family}", [(owners.get(p), p) for p in paths])
        for family, paths in sorted(duplicated.items())
    ]


def finding_conflict(finding: Finding, owners: Mapping[str, str | None]) -> Conflict:
    """A static finding of ``scan`` (rule, library paths) as a conflict; ``owners`` maps a
    path to its distribution."""
    libraries = [(owners.get(path), path) for path in finding.libraries]
    return Conflict.of(finding.rule, libraries, note=f"[{finding.severity}] {finding.title}")


# ---------------------------------------------------------------- the file


def load_baseline(path: str, option: str = "--rc-baseline", *, create: bool = False) -> Baseline:
    """Read a baseline file; with ``create`` a missing file is an empty baseline.

    Bad input raises UsageError naming the option, the file and the fix.
    """
    where = f"{option} {path!r}"
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        if create:
            return Baseline(path)
        raise UsageError(
            f"invalid {where}: no such file; create it with the update option "
            "(--rc-update-baseline, or scan --update-baseline)"
        ) from None
    except OSError as exc:
        raise UsageError(f"invalid {where}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:  # not UTF-8
        raise UsageError(f"invalid {where}: not JSON text ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"invalid {where}: not JSON ({exc}); write it with the update option"
        ) from None
    return Baseline(path, _parse(data, where))


def _parse(data: Any, where: str) -> tuple[Conflict, ...]:
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UsageError(
            f"invalid {where}: schema {found!r} is not {BASELINE_SCHEMA!r}; "
            "a baseline is written by the update option"
        )
    records = data.get("conflicts")
    if not isinstance(records, list):
        raise UsageError(f'invalid {where}: "conflicts" must be a list of conflicts')
    return tuple(_conflict(record, number, where) for number, record in enumerate(records, 1))


def _conflict(record: Any, number: int, where: str) -> Conflict:
    fix = 'each needs "rule" (a string) and "libraries" (a list of {"distribution", "file"})'
    if not isinstance(record, dict) or not isinstance(record.get("rule"), str):
        raise UsageError(f'invalid {where}: conflict {number} has no "rule"; {fix}')
    libraries = record.get("libraries", [])
    if not isinstance(libraries, list) or not all(
        isinstance(lib, dict) and isinstance(lib.get("file"), str) for lib in libraries
    ):
        raise UsageError(f'invalid {where}: conflict {number} has bad "libraries"; {fix}')
    pairs = [(lib.get("distribution"), lib["file"]) for lib in libraries]
    note = str(record.get("note", ""))
    return Conflict.of(record["rule"], pairs, tuple(record.get("steps", ())), note)


def conflicts_from_marks(marks: Iterable[Mapping[str, Any]]) -> list[Conflict]:
    """The conflicts recorded in report entries' ``baseline`` marks."""
    return [
        _conflict(record, number, "report entry")
        for mark in marks
        for number, record in enumerate(mark.get("conflicts", []), 1)
    ]


def write_baseline(path: str, conflicts: Iterable[Conflict], option: str) -> int:
    """Write ``conflicts`` (de-duplicated by key, sorted) to ``path``; returns how many."""
    unique = {c.key: c for c in conflicts}
    data = {
        "schema": BASELINE_SCHEMA,
        "comment": "Known runtime conflicts: reported as known, not failures. Remove a record "
        "to make its conflict fail again; records no longer seen are listed as fixed.",
        "conflicts": [unique[k].to_json() for k in sorted(unique)],
    }
    try:
        write_atomically(path, (json.dumps(data, indent=2) + "\n").encode())
    except OSError as exc:
        raise UsageError(f"cannot write {option} {path!r}: {exc.strerror}") from None
    return len(unique)


# ---------------------------------------------------------------- what changed


@dataclass(frozen=True)
class BaselineStatus:
    """Known (in the baseline and seen), new (seen, not in it), fixed (in it, not seen)."""

    path: str
    known: tuple[str, ...]
    new: tuple[str, ...]
    fixed: tuple[str, ...] | None  # None: not judged (one shard sees part of the plan)
    entries: tuple[str, ...]

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "file": self.path,
            "conflicts": list(self.entries),
            "known": list(self.known),
            "new": list(self.new),
        }
        if self.fixed is not None:
            data["fixed"] = list(self.fixed)
        return data

    def lines(self) -> list[str]:
        """The summary section: counts, then each new, known and fixed conflict."""
        fixed = "not judged in one shard" if self.fixed is None else str(len(self.fixed))
        lines = [
            f"baseline {self.path}: {len(self.known)} known, {len(self.new)} new, {fixed} fixed"
        ]
        lines += [f"- new (fails): {key}" for key in self.new]
        lines += [f"- known: {key}" for key in self.known]
        lines += [
            f"- fixed (no longer seen; remove it from the baseline): {key}"
            for key in self.fixed or ()
        ]
        return lines


def status_of(
    path: str,
    entries: Iterable[str],
    seen: Iterable[Mapping[str, Any]],
    judge_fixed: bool = True,
) -> BaselineStatus:
    """Known/new/fixed from the baseline's keys and the ``baseline`` marks of report entries."""
    baseline = sorted(set(entries))
    known: set[str] = set()
    new: set[str] = set()
    for mark in seen:
        keys = {c["key"] for c in mark.get("conflicts", [])}
        known |= keys & set(baseline)
        new |= keys - set(baseline)
    fixed = tuple(k for k in baseline if k not in known) if judge_fixed else None
    return BaselineStatus(path, tuple(sorted(known)), tuple(sorted(new)), fixed, tuple(baseline))
