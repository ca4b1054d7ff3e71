"""Aggregation over a session's collected runs: the JSON report, the coverage of the plan
and the terminal summary (conflicts grouped by root cause, latent runtime sets, coverage)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pytest_runtimeconflict import verdicts
from pytest_runtimeconflict.model.plan import Coverage
from pytest_runtimeconflict.plan import coverage_of, tuples_covered
from pytest_runtimeconflict.vocabulary import REPORT_SCHEMA

Collected = Sequence[tuple[str, dict[str, Any]]]
SEEN_IN_SHOWN = 3


def report_json(collected: Collected) -> dict[str, Any]:
    """The JSON report: every run plus the plan's coverage."""
    data: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "scenarios": [dict(entry, nodeid=nodeid) for nodeid, entry in collected],
    }
    covered = coverage(collected)
    if covered is not None:
        data["coverage"] = covered.to_json()
    return data


def coverage(collected: Collected) -> Coverage | None:
    """Ordered tuples exercised by the plan's runs, and those blocked by a named conflict."""
    plan_entries = [e["plan"] for _, e in collected if "plan" in e]
    if not plan_entries:
        return None
    modules, strength = plan_entries[0]["modules"], plan_entries[0]["strength"]
    executed = [tuple(p["executed"]) for p in plan_entries]
    blocked: dict[tuple[str, ...], str] = {}
    for p in plan_entries:
        if p.get("conflict"):
            for tup in tuples_covered(tuple(p["sequence"]), strength):
                blocked.setdefault(tup, p["conflict"])
    return coverage_of(modules, strength, executed, blocked)


def summary_lines(collected: Collected) -> list[str]:
    """Terminal summary: conflicts grouped by root cause, latent findings, coverage."""
    if not collected:
        return []
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for nodeid, entry in collected:
        verdict = entry.get("verdict")
        if verdict and entry.get("outcome") in ("crashed", "failed", "hung"):
            groups.setdefault(verdict["key"], []).append((nodeid, entry))
    lines = ["", "=" * 20 + " runtime conflicts " + "=" * 20]
    lines.append(f"{len(groups)} distinct conflict(s) in {len(collected)} child run(s)")
    for key, members in sorted(groups.items()):
        lines += _conflict_lines(key, members)
    latent = latent_sets(e for _, e in collected if e.get("outcome") == "latent")
    if latent:
        lines.append(
            "latent: runtimes mapped more than once without a crash "
            "(a warning; --rc-fail-on=latent fails on it):"
        )
        lines += [f"- {family}: " + ", ".join(files) for family, files in latent]
    covered = coverage(collected)
    if covered is not None:
        lines.append(covered.describe())
    return lines


def _conflict_lines(key: str, members: list[tuple[str, dict[str, Any]]]) -> list[str]:
    verdict = members[0][1]["verdict"]
    nodes = sorted({n for n, _ in members})
    lines = [f"- {verdict.get('rule') or 'unattributed'}: {verdict.get('cause', key)}"]
    minimal = members[0][1].get("minimal_steps")
    if minimal:
        lines.append(f"    minimal order: {' > '.join(minimal)}")
    if verdict.get("user_advice"):
        lines.append(f"    avoid: {verdict['user_advice']}")
    # One node id a line, the first few only: plan node ids of long sequences are long.
    more = f" (first {SEEN_IN_SHOWN})" if len(nodes) > SEEN_IN_SHOWN else ""
    lines.append(f"    seen in {len(nodes)} item(s){more}:")
    lines += [f"      {node}" for node in nodes[:SEEN_IN_SHOWN]]
    return lines


def latent_sets(entries: Iterable[dict[str, Any]]) -> list[tuple[str, tuple[str, ...]]]:
    """Every distinct set of one family's files mapped at once, over every latent run."""
    return sorted({found for entry in entries for found in verdicts.latent_sets(entry)})
