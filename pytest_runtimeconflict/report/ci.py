"""The report keys and summary lines of a CI run: the plan's identity and this
job's shard, pytest's outcome of each plan and scenario item, and the baseline's verdict.

Keys added to ``pytest-runtimeconflict/report/1`` (none renamed):

- ``fail_on``: the run's --rc-fail-on;
- ``plan``: ``{"id": <hash of modules, strength and item node ids>, "items": <count>}``;
- ``shard``: ``{"index": K, "count": N, "items": [node ids run by this shard]}`` (with
  --rc-shard only);
- ``item_outcomes``: node id -> ``passed``, ``failed``, ``skipped``, ``xfailed``, ``xpassed``
  or ``error`` for every plan and scenario item that ran;
- ``baseline``: ``{"file", "conflicts", "known", "new", "fixed"}`` (with --rc-baseline;
  ``fixed`` only when the run covers the whole plan).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from pytest_runtimeconflict.planning.shards import ShardScope
from pytest_runtimeconflict.report.baseline import BaselineStatus
from pytest_runtimeconflict.vocabulary import JsonObject


def report_keys(
    fail_on: str,
    item_outcomes: Mapping[str, str],
    scope: ShardScope | None,
    baseline: BaselineStatus | None,
) -> JsonObject:
    """The CI keys of one run's report."""
    data: JsonObject = {
        "fail_on": fail_on,
        "item_outcomes": dict(sorted(item_outcomes.items())),
    }
    if scope is not None:
        data.update(scope.to_json())
    if baseline is not None:
        data["baseline"] = baseline.to_json()
    return data


def summary_lines(scope: ShardScope | None, baseline: BaselineStatus | None) -> list[str]:
    """The shard line (when sharded) and the baseline section (with a baseline)."""
    lines = []
    if scope is not None and scope.shard is not None:
        lines.append(scope.describe())
    if baseline is not None:
        lines += baseline.lines()
    return lines


def item_outcome(previous: str | None, when: str, outcome: str, wasxfail: bool) -> str | None:
    """An item's outcome after one phase report (``when``: setup, call, teardown; ``outcome``:
    passed, failed, skipped), or None to keep ``previous``: a failure in the call is
    ``failed``, outside it ``error``, and stays; else the call's outcome (``xfailed`` and
    ``xpassed`` for expected failures) or a skip in setup."""
    if previous in ("failed", "error"):
        return None
    if outcome == "failed":
        return "failed" if when == "call" else "error"
    if when == "call" or outcome == "skipped":
        if wasxfail:
            return {"skipped": "xfailed", "passed": "xpassed"}.get(outcome, outcome)
        return outcome
    return None


def outcome_counts(item_outcomes: Mapping[str, str]) -> str:
    """``2 failed, 3 passed, 1 skipped`` (most telling first)."""
    order = ("failed", "error", "xpassed", "passed", "xfailed", "skipped")
    counts = Counter(item_outcomes.values())
    parts = [f"{counts[o]} {o}" for o in order if counts.get(o)]
    parts += [f"{n} {o}" for o, n in sorted(counts.items()) if o not in order]
    return ", ".join(parts) or "no items"
