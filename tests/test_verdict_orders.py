"""A conflict lists every distinct failing order and load mode seen under it: one conflict key
per library pair may be reached as ``global(a) > b`` with b's workload and as
``global(b) > a``; the summary shows the shortest (and says the others exist), the JSON
report's owning entry lists all (``failing_orders``), the keys it had before unchanged."""

from __future__ import annotations

import json
from typing import Any

from pytest_runtimeconflict.report import aggregate

WORKLOAD_B = "# workload b:user\nimport b; b.work()"


def _diagnosed(index: int, order: list[str], global_imports: list[str], steps: list[str]) -> Any:
    return {
        "outcome": "crashed",
        "steps": steps,
        "minimal_steps": steps,
        "load_mode": {
            "global_imports": global_imports,
            "preload": [],
            "ld_preload": [],
            "env": {},
            "order": ">".join(f"global({m})" if m in global_imports else m for m in order),
            "runs": 1,
        },
        "minimal_run": {"phase": "step", "exercised": []},
        "verdict": {"key": "symbol-interposition:a.libs/x.so,b.libs/x.so", "rule": "r"},
        "run": index,
    }


def _collected() -> list[tuple[str, dict[str, Any]]]:
    first = _diagnosed(0, ["a", "b"], ["a"], ["a", "b", WORKLOAD_B])
    second = _diagnosed(1, ["b", "a"], ["b"], ["b", "a"])
    again = _diagnosed(2, ["a", "b"], ["a"], ["a", "b", WORKLOAD_B])
    return [
        ("runtime-conflicts::global:a>b", first),
        ("runtime-conflicts::global:b>a", second),
        ("runtime-conflicts::global:a>b>c", again),
    ]


def test_the_summary_shows_the_shortest_order_and_says_there_are_others() -> None:
    lines = aggregate.summary_lines(_collected())
    assert "1 distinct conflict(s)" in "\n".join(lines)
    assert "    minimal order: global(b) > a" in lines, lines
    assert (
        "    also fails as: global(a) > b > workload b:user "
        "(every one: failing_orders in the JSON report)"
    ) in lines, lines


def test_the_owning_entry_lists_every_distinct_failing_order_with_its_load_mode() -> None:
    data = json.loads(json.dumps(aggregate.report_json(_collected())))
    owner, second, again = data["scenarios"]
    assert "failing_orders" not in second and "failing_orders" not in again
    orders = owner["failing_orders"]
    assert [o["order"] for o in orders] == ["global(b) > a", "global(a) > b > workload b:user"]
    assert orders[0]["load_mode"] == {
        "global_imports": ["b"],
        "preload": [],
        "ld_preload": [],
        "env": {},
    }
    assert orders[1]["steps"] == ["a", "b", WORKLOAD_B]
    assert orders[1]["nodeids"] == [
        "runtime-conflicts::global:a>b",
        "runtime-conflicts::global:a>b>c",
    ]
    # the keys an entry had are all still there
    assert set(_collected()[0][1]) | {"nodeid", "failing_orders"} == set(owner)


def test_a_merged_report_recomputes_the_orders() -> None:
    """Entries read back from a report (a shard's) carry the key; it is rebuilt, never
    doubled or left on an entry that no longer owns the conflict."""
    collected = _collected()
    data = aggregate.report_json(collected)
    reread = [(e.pop("nodeid"), e) for e in json.loads(json.dumps(data))["scenarios"]]
    again = aggregate.report_json(reread[1:])
    owner = again["scenarios"][0]
    assert [o["order"] for o in owner["failing_orders"]] == [
        "global(b) > a",
        "global(a) > b > workload b:user",
    ]
    assert "failing_orders" not in again["scenarios"][1]
