"""Merging the JSON reports of a plan's shards (``--rc-shard=K/N`` jobs) into one report.

Each report says which plan it belongs to (``plan.id``) and which shard it is (``shard``; a
report without one is the whole plan, shard 1 of 1; a merged report covers the shards it lists
under ``merged``). The merged report has the same schema, every run of every shard, the
coverage recomputed over all of them, pytest's item outcomes of all shards, the baseline's
known/new/fixed over all shards, and ``merged``: which shards it holds and which are missing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.options import MAX_SHARDS
from pytest_runtimeconflict.report import aggregate
from pytest_runtimeconflict.report.baseline import BaselineStatus, status_of
from pytest_runtimeconflict.vocabulary import REPORT_SCHEMA, JsonObject

Collected = list[tuple[str, JsonObject]]


@dataclass(frozen=True)
class ShardReport:
    """One report file: its path, data, and the shards (1-based indices of ``count``) it holds."""

    path: str
    data: Mapping[str, Any]
    indices: tuple[int, ...]
    count: int


def load_report(path: str) -> ShardReport:
    """Read one report; UsageError (one line: the file, what is wrong, the fix) on bad input."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read report {path!r}: {exc.strerror}") from None
    except ValueError as exc:  # not UTF-8
        raise UsageError(f"report {path!r} is not JSON text ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"report {path!r} is not JSON ({exc}); give the files written by --rc-report"
        ) from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != REPORT_SCHEMA:
        raise UsageError(
            f"report {path!r} has schema {schema!r}, not {REPORT_SCHEMA!r}; give the files "
            "written by pytest --runtime-conflicts --rc-report"
        )
    if not isinstance(data.get("plan"), dict) or "id" not in data["plan"]:
        raise UsageError(
            f'report {path!r} does not name its plan (no "plan" key: written by an older '
            "version?); re-run that shard with this version"
        )
    _check_shape(data, path)
    indices, count = _shards_of(data, path)
    return ShardReport(path, data, indices, count)


def _check_shape(data: Mapping[str, Any], path: str) -> None:
    """The keys merging reads have the types --rc-report writes (else one UsageError)."""
    plan = data["plan"]
    wrong = (
        "plan" if not isinstance(plan.get("id"), str) or not isinstance(plan.get("items"), int)
        else "scenarios" if not isinstance(data.get("scenarios", []), list)
        or not all(isinstance(s, dict) for s in data.get("scenarios", []))
        else "item_outcomes" if not isinstance(data.get("item_outcomes", {}), dict)
        else ""
    )  # fmt: skip
    if wrong:
        raise UsageError(
            f"report {path!r} has a malformed {wrong!r} key; give the files written by "
            "pytest --runtime-conflicts --rc-report"
        )


def _shards_of(data: Mapping[str, Any], path: str) -> tuple[tuple[int, ...], int]:
    try:
        if "merged" in data:
            indices = tuple(int(i) for i in data["merged"]["shards"])
            count = int(data["merged"]["count"])
        elif "shard" in data:
            indices, count = (int(data["shard"]["index"]),), int(data["shard"]["count"])
        else:
            return (1,), 1
    except (KeyError, TypeError, ValueError):
        raise UsageError(f'report {path!r} has a malformed "shard" key') from None
    if not (1 <= count <= MAX_SHARDS and all(1 <= i <= count for i in indices)):
        raise UsageError(
            f"report {path!r}: shard numbers out of range (count {count}, shards "
            f"{list(indices)[:5]}): expected 1 <= K <= N <= {MAX_SHARDS}; is it a report?"
        )
    return indices, count


@dataclass(frozen=True)
class Merged:
    """The merged report, the runs as (node id, entry) and which shards are missing."""

    data: JsonObject
    collected: Collected
    count: int
    present: tuple[int, ...]
    missing: tuple[int, ...]
    baseline: BaselineStatus | None


def merge_reports(reports: Sequence[ShardReport]) -> Merged:
    """Merge the reports of one plan; UsageError when they belong to different plans or
    runs, or hold the same shard twice."""
    first = reports[0]
    _check_same(reports, "plan id", lambda r: r.data["plan"]["id"])
    _check_same(reports, "shard count (N of --rc-shard=K/N)", lambda r: r.count)
    _check_same(reports, "--rc-fail-on", lambda r: r.data.get("fail_on"))
    holder: dict[int, str] = {}
    for report in reports:
        for index in report.indices:
            if index in holder:
                raise UsageError(
                    f"shard {index}/{report.count} is in both {holder[index]!r} and "
                    f"{report.path!r}; give each shard's report once"
                )
            holder[index] = report.path
    ordered = sorted(reports, key=lambda r: r.indices)
    collected: Collected = [
        (str(e.get("nodeid", "")), dict(e)) for r in ordered for e in r.data.get("scenarios", [])
    ]
    present = tuple(sorted(holder))
    missing = tuple(i for i in range(1, first.count + 1) if i not in holder)
    baseline = _baseline(ordered, collected, complete=not missing)
    data = _merged_data(ordered, collected, present, missing, baseline)
    return Merged(data, collected, first.count, present, missing, baseline)


def _check_same(reports: Sequence[ShardReport], what: str, get: Any) -> None:
    values: dict[str, str] = {}
    for report in reports:
        values.setdefault(json.dumps(get(report)), report.path)
    if len(values) > 1:
        found = "; ".join(f"{path!r}: {value}" for value, path in values.items())
        raise UsageError(
            f"the reports are not shards of one run: different {what} ({found}); merge the "
            "reports of one CI run (same plan and options)"
        )


def _baseline(
    reports: Sequence[ShardReport], collected: Collected, complete: bool
) -> BaselineStatus | None:
    given = [r.data["baseline"] for r in reports if "baseline" in r.data]
    if not given:
        return None
    entries = {k for b in given for k in b.get("conflicts", [])}
    marks = [e["baseline"] for _, e in collected if "baseline" in e]
    return status_of(str(given[0].get("file", "")), entries, marks, judge_fixed=complete)


def _merged_data(
    reports: Sequence[ShardReport],
    collected: Collected,
    present: tuple[int, ...],
    missing: tuple[int, ...],
    baseline: BaselineStatus | None,
) -> JsonObject:
    first = reports[0].data
    data = aggregate.report_json(collected)
    outcomes: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for report in reports:
        outcomes.update(report.data.get("item_outcomes", {}))
        reasons.update(report.data.get("item_skip_reasons", {}))
    data["fail_on"] = first.get("fail_on")
    data["item_outcomes"] = dict(sorted(outcomes.items()))
    if reasons:
        data["item_skip_reasons"] = dict(sorted(reasons.items()))
    data["plan"] = dict(first["plan"])
    data["merged"] = {
        "count": reports[0].count,
        "shards": list(present),
        "missing": list(missing),
        "files": [r.path for r in reports],
    }
    if baseline is not None:
        data["baseline"] = baseline.to_json()
    return data


def exit_code(merged: Merged) -> int:
    """2 when a shard is missing, 1 when an item failed (pytest's verdict under the shards'
    --rc-fail-on and baseline), else 0."""
    if merged.missing:
        return 2
    failing = ("failed", "error")
    return int(any(o in failing for o in merged.data["item_outcomes"].values()))


def summary_lines(merged: Merged) -> list[str]:
    """The merged summary: shards, distinct conflicts, latent sets, coverage, items, baseline,
    and a last line naming the missing shards."""
    from pytest_runtimeconflict.report.ci import outcome_counts

    count = merged.count
    shards = ", ".join(f"{i}/{count}" for i in merged.present)
    plan = merged.data["plan"]
    lines = ["=" * 20 + " runtime conflicts (merged) " + "=" * 20]
    lines.append(f"merged shard(s) {shards} of plan {plan['id']} ({plan['items']} item(s))")
    # Without the blank line and the banner: the conflicts, latent sets and coverage.
    lines += aggregate.summary_lines(merged.collected)[2:] or ["no child runs in these reports"]
    outcomes = outcome_counts(merged.data["item_outcomes"])
    lines.append(f"items: {outcomes} (--rc-fail-on={merged.data['fail_on']})")
    if merged.baseline is not None:
        lines += merged.baseline.lines()
    if merged.missing:
        lines.append(
            f"MISSING shard(s) {', '.join(f'{i}/{count}' for i in merged.missing)}: no report "
            "given for them, so this result is incomplete; pass every shard's --rc-report file"
        )
    return lines
