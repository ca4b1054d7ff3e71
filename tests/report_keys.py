"""The shape of a JSON report's entries, by kind: what a behaviour-preserving change must keep.

An entry's kind is what it is (plan item kind or scenario run, outcome) and which optional
records it carries (a verdict, ownership marks, a minimal load mode, a target judgement, ...);
for each kind, the keys it has and the keys of its nested records. Two runs of one plan may
meet different kinds (xdist finishes items in any order, so which item owns a conflict
varies), but a kind both runs meet must have the same keys.
"""

from __future__ import annotations

from typing import Any

MARKERS = (
    "verdict",
    "same_conflict_as",
    "duplicate_of",
    "same_failure_as",
    "load_mode",
    "variant_unusable",
    "target",
    "scenario",
    "baseline",
    "workloads_skipped",
    "child_runs",
)


def entry_kind(entry: dict[str, Any]) -> str:
    plan = entry.get("plan") or {}
    kind = plan.get("kind", "scenario" if "scenario" in entry else "other")
    marks = [m for m in MARKERS if m in entry]
    return "|".join([kind, str(entry.get("outcome")), *marks])


def shape(entry: dict[str, Any]) -> dict[str, list[str]]:
    """The entry's keys, and the keys of each nested record (``plan.variant`` included)."""
    out = {"": sorted(entry)}
    for key, value in entry.items():
        if isinstance(value, dict):
            out[key] = sorted(value)
            for inner, sub in value.items():
                if isinstance(sub, dict) and key in ("plan", "verdict", "scenario"):
                    out[f"{key}.{inner}"] = sorted(sub)
    return out


def entry_shapes(report: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Kind -> shape, over every entry of a report (the union of the shapes of one kind)."""
    shapes: dict[str, dict[str, set[str]]] = {}
    for entry in report.get("scenarios", []):
        merged = shapes.setdefault(entry_kind(entry), {})
        for part, keys in shape(entry).items():
            merged.setdefault(part, set()).update(keys)
    return {k: {p: sorted(v) for p, v in parts.items()} for k, parts in sorted(shapes.items())}
