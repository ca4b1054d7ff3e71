"""The matrix's records and what is made of them: rows, the JSON file, the terminal table,
the verdict against a baseline, and the merge of the files of a sharded matrix.

The JSON file is ``{"candidate": [...], "rows": [{"partner", "version", "outcome",
"conflicts": [{"rule", "libraries", "minimal_order", "reproduces"}], "latent": [...],
"error", "child_runs", "seconds"}]}``; the file of one shard (``--shard K/N``) also has
``"shard": {"index", "count", "partners"}`` (every partner of the whole matrix, in order), so
that ``merge`` can put the rows back in order and name a missing shard.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.planning.shards import Shard
from pytest_runtimeconflict.report.baseline import Conflict
from pytest_runtimeconflict.vocabulary import JsonObject

OUTCOMES = ("clean", "latent", "conflict", "error")


@dataclass(frozen=True)
class RowConflict:
    """One distinct conflict of a row: its stable identity (the baseline's), the minimal
    import order that shows it, whether its reproducer script reproduced it (None: not run)."""

    conflict: Conflict
    minimal_order: tuple[str, ...]
    reproduces: bool | None

    @property
    def key(self) -> str:
        return self.conflict.key

    @classmethod
    def from_entry(cls, conflict: Conflict, entry: Mapping[str, Any]) -> RowConflict:
        from pytest_runtimeconflict.planning.workloads import step_label

        steps = entry.get("minimal_steps") or entry.get("steps") or ()
        order = tuple(step_label(str(s)) for s in steps)
        reproduces = entry.get("reproduces")
        return cls(conflict, order, None if reproduces is None else bool(reproduces))

    def involves(self, distributions: Iterable[str], modules: Iterable[str]) -> bool:
        """Whether a candidate takes part: one of its libraries, or one of its modules in the
        minimal order."""
        mine = set(distributions)
        tops = {m.split(".")[0] for m in modules}
        return any(d in mine for d, _ in self.conflict.libraries) or any(
            s.split(".")[0] in tops for s in self.minimal_order
        )

    def to_json(self) -> JsonObject:
        data = self.conflict.to_json()
        return {
            "rule": data["rule"],
            "libraries": data["libraries"],
            "minimal_order": list(self.minimal_order),
            "reproduces": self.reproduces,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RowConflict:
        libraries = [(lib.get("distribution"), str(lib["file"])) for lib in data["libraries"]]
        order = tuple(map(str, data.get("minimal_order") or ()))
        reproduces = data.get("reproduces")
        return cls(Conflict.of(str(data["rule"]), libraries, order), order, reproduces)


@dataclass(frozen=True)
class Row:
    """One partner's row. ``reused``: its environment came from the cache (not in the JSON)."""

    partner: str
    version: str | None
    outcome: str
    conflicts: tuple[RowConflict, ...] = ()
    latent: tuple[JsonObject, ...] = ()
    error: str | None = None
    child_runs: int = 0
    seconds: float = 0.0
    reused: bool = False

    def to_json(self) -> JsonObject:
        return {
            "partner": self.partner,
            "version": self.version,
            "outcome": self.outcome,
            "conflicts": [c.to_json() for c in self.conflicts],
            "latent": [dict(x) for x in self.latent],
            "error": self.error,
            "child_runs": self.child_runs,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        return cls(
            partner=str(data["partner"]),
            version=data.get("version"),
            outcome=str(data["outcome"]),
            conflicts=tuple(RowConflict.from_json(c) for c in data.get("conflicts") or ()),
            latent=tuple(dict(x) for x in data.get("latent") or ()),
            error=data.get("error"),
            child_runs=int(data.get("child_runs") or 0),
            seconds=float(data.get("seconds") or 0.0),
        )


@dataclass(frozen=True)
class Matrix:
    """A matrix run (or one shard of it): the candidates and the rows, in partner order."""

    candidate: tuple[str, ...]
    rows: tuple[Row, ...]
    shard: Shard | None = None
    partners: tuple[str, ...] = ()  # every partner of the whole matrix (for a shard)

    def to_json(self) -> JsonObject:
        data: JsonObject = {
            "candidate": list(self.candidate),
            "rows": [row.to_json() for row in self.rows],
        }
        if self.shard is not None:
            data["shard"] = dict(self.shard.to_json(), partners=list(self.partners))
        return data


def candidate_part(row: Row, distributions: Sequence[str], modules: Sequence[str]) -> Row:
    """``row`` with only the conflicts and latent sets the candidate takes part in: a planned
    run that imports both sides can still minimise to a conflict among the partner's own
    packages (scipy's OpenBLAS with numpy's), which is not the candidate's to fix."""
    if row.outcome == "error":
        return row
    conflicts = tuple(c for c in row.conflicts if c.involves(distributions, modules))
    latent = tuple(
        x
        for x in row.latent
        if any(lib.get("distribution") in distributions for lib in x["libraries"])
    )
    outcome = "conflict" if conflicts else "latent" if latent else "clean"
    return replace(row, outcome=outcome, conflicts=conflicts, latent=latent)


def new_conflicts(rows: Iterable[Row], known: frozenset[str]) -> list[str]:
    """Keys of the rows' conflicts that the baseline does not hold."""
    return sorted({c.key for row in rows for c in row.conflicts if c.key not in known})


def exit_code(rows: Sequence[Row], known: frozenset[str], missing: bool = False) -> int:
    """2 when a pairing could not be built (an ``error`` row) or a shard is missing, else 1
    when a row has a conflict the baseline does not know, else 0."""
    if missing or any(row.outcome == "error" for row in rows):
        return 2
    return int(bool(new_conflicts(rows, known)))


def table_lines(rows: Sequence[Row], known: frozenset[str]) -> list[str]:
    """The terminal table: partner, resolved version, outcome, rules, child runs, seconds;
    then one line per conflict (its libraries and minimal order) and per error."""
    header = ("partner", "version", "outcome", "rules", "child runs", "seconds")
    cells = [header] + [_cells(row, known) for row in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cells[0], widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)).rstrip() for cell in cells[1:]]
    for row in rows:
        lines += detail_lines(row, known)
    return lines


def _cells(row: Row, known: frozenset[str]) -> tuple[str, ...]:
    return (
        row.partner,
        row.version or "-",
        row.outcome,
        rules_text(row, known) or "-",
        str(row.child_runs),
        f"{row.seconds:.1f}" + (" (reused env)" if row.reused else ""),
    )


def rules_text(row: Row, known: frozenset[str]) -> str:
    """``openmp-duplicate (known), latent-openmp``: the row's rules, each conflict marked
    known when the baseline holds it."""
    rules = [c.conflict.rule + (" (known)" if c.key in known else "") for c in row.conflicts]
    rules += [str(x["rule"]) for x in row.latent]
    return ", ".join(dict.fromkeys(rules))


def detail_lines(row: Row, known: frozenset[str]) -> list[str]:
    """What a reader needs to act on a row: each conflict's key and order, or the error."""
    lines = []
    for c in row.conflicts:
        mark = "known" if c.key in known else "NEW"
        repro = {True: "reproduces", False: "did not reproduce", None: "not checked"}
        lines.append(f"{row.partner}: {mark} {c.key}")
        lines.append(f"    minimal order: {' > '.join(c.minimal_order) or '-'}; "
                     f"reproducer script {repro[c.reproduces]}")  # fmt: skip
    if row.error:
        lines.append(f"{row.partner}: error: {row.error}")
    return lines


# ---------------------------------------------------------------- files and merge


def is_matrix_data(data: Any) -> bool:
    """Whether parsed JSON is a matrix file (not a run report)."""
    return isinstance(data, dict) and "rows" in data and "candidate" in data


def load_matrix(path: str) -> Matrix:
    """Read a matrix file; UsageError (the file, what is wrong, the fix) on bad input."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise UsageError(f"cannot read matrix file {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(
            f"matrix file {path!r} is not JSON ({exc}); give matrix --json files"
        ) from None
    if not is_matrix_data(data):
        raise UsageError(f'{path!r} is not a matrix file (no "candidate" and "rows")')
    try:
        rows = tuple(Row.from_json(r) for r in data["rows"])
        shard = data.get("shard")
        index = Shard(int(shard["index"]), int(shard["count"])) if shard else None
        partners = tuple(map(str, shard["partners"])) if shard else tuple(r.partner for r in rows)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"matrix file {path!r} has a malformed row or shard ({exc!r})") from None
    return Matrix(tuple(map(str, data["candidate"])), rows, index, partners)


def merge_matrices(files: Sequence[tuple[str, Matrix]]) -> tuple[Matrix, tuple[int, ...]]:
    """The matrix of all shards' rows in partner order, and the missing shard indices;
    UsageError when the files are not shards of one matrix or hold a shard twice."""
    first_path, first = files[0]
    count = first.shard.count if first.shard else 1
    holder: dict[int, str] = {}
    for path, part in files:
        if (part.candidate, part.partners) != (first.candidate, first.partners) or (
            (part.shard.count if part.shard else 1) != count
        ):
            raise UsageError(
                f"{path!r} and {first_path!r} are not shards of one matrix (different "
                "candidates, partners or shard count); merge the files of one matrix run"
            )
        index = part.shard.index if part.shard else 1
        if index in holder:
            raise UsageError(f"shard {index}/{count} is in both {holder[index]!r} and {path!r}")
        holder[index] = path
    by_partner = {row.partner: row for _, part in files for row in part.rows}
    rows = tuple(by_partner[p] for p in first.partners if p in by_partner)
    missing = tuple(i for i in range(1, count + 1) if i not in holder)
    return Matrix(first.candidate, rows), missing
