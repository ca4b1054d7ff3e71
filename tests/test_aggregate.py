"""The session's collected runs are in plan order whatever order xdist workers report in, so
the JSON report and the terminal summary are the same with ``-n 2`` as serially."""

from __future__ import annotations

import itertools
from typing import Any

from pytest_runtimeconflict.report import aggregate


def _entry(index: int | None, run: int, key: str = "k1") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "run": run,
        "outcome": "crashed",
        "verdict": {"key": key, "rule": "openmp-duplicate", "cause": f"cause {index}/{run}"},
    }
    if index is not None:
        entry["plan"] = {
            "index": index,
            "kind": "sequence",
            "sequence": ["a", "b"],
            "executed": ["a", "b"],
            "modules": ["a", "b"],
            "strength": 2,
            "variant": {},
            "masked": [],
        }
    return entry


ARRIVALS = [
    ("runtime-conflicts::b>a", _entry(1, 0)),
    ("runtime-conflicts::b>a", _entry(1, 1)),
    ("runtime-conflicts::a>b", _entry(0, 0)),
    ("tests/x.toml::run0", _entry(None, 0, "k2")),
    ("runtime-conflicts::global:a>b", _entry(2, 0)),
]


def _collect(arrivals: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    collected: list[tuple[str, dict[str, Any]]] = []
    for nodeid, entry in arrivals:
        aggregate.insert_in_order(collected, nodeid, entry)
    return collected


def test_plan_order_whatever_the_arrival_order() -> None:
    collected = _collect(ARRIVALS)
    order = [(e["plan"]["index"] if "plan" in e else None, e["run"]) for _, e in collected]
    assert order == [(0, 0), (1, 0), (1, 1), (2, 0), (None, 0)]
    # Every interleaving of the items (an item's own entries in their order) gives one result.
    items: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for nodeid, entry in ARRIVALS:
        items.setdefault(nodeid, []).append((nodeid, entry))
    results = set()
    for perm in itertools.permutations(items):
        collected = _collect([x for nodeid in perm for x in items[nodeid]])
        results.add(repr(collected))
        summary = aggregate.summary_lines(collected)
        assert "cause 0/0" in "\n".join(summary)  # the first item in plan order speaks
    assert len(results) == 1


def test_minimal_order_names_the_probe_a_failure_needs() -> None:
    """A crash in the exercise phase (the tool's own BLAS probe, after every step) is not
    reproduced by the imports alone: the minimal order says which probe ran."""
    entry = _entry(0, 0)
    entry["minimal_steps"] = ["import a", "import b"]
    entry["minimal_run"] = {
        "phase": "exercise",
        "exercised": [
            {"path": "/s/a.libs/libgomp-1.so", "kind": "openmp", "status": "ok"},
            {"path": "/s/b.libs/libopenblas-2.so", "kind": "blas", "status": "crashed"},
        ],
    }
    lines = aggregate.summary_lines([("runtime-conflicts::a>b", entry)])
    assert (
        "    minimal order: import a > import b > exercise (blas probe of libopenblas-2.so)"
        in lines
    )
    entry["minimal_run"] = {"phase": "step", "exercised": []}
    lines = aggregate.summary_lines([("runtime-conflicts::a>b", entry)])
    assert "    minimal order: import a > import b" in lines
