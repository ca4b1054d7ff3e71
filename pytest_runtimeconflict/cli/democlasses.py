"""The demo's closing note on part 2: for each conflict class of the zoo (a scenario with a
rule), what the planned run without manifests made of it, read from the run's JSON report.

A class counts as *reproduced* when a diagnosed conflict of the report between the scenario's
own modules blames libraries matching every pattern of the scenario's ``libraries`` (the
scenario's rule named, or another rule or none); as *latent* when a run mapped such libraries
without a crash and a static finding of the scenario's rule covered them; as *related* when
only a conflict involving other modules blames such libraries; as *static* when a target item reports the
scenario's rule as "not reproduced at run time"; else as *not found*.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_runtimeconflict.vocabulary import JsonObject

CONFLICT = ("crashed", "failed", "hung")


def _matches(patterns: Sequence[str], paths: Iterable[str]) -> bool:
    names = [os.path.basename(p) for p in paths]
    return bool(patterns) and all(any(fnmatch.fnmatch(n, pat) for n in names) for pat in patterns)


def classify(scenario: Any, entries: Sequence[JsonObject]) -> tuple[str, str]:
    """(status, detail) of one zoo class in the planned run's report entries."""
    patterns, rule = scenario.libraries, scenario.rule
    own = {s for run in scenario.runs for s in run.spec.steps}  # the scenario's own modules

    def own_only(e: JsonObject) -> bool:
        return set(e.get("minimal_steps") or e["steps"]) <= own

    conflicts = [
        e for e in entries if e.get("outcome") in CONFLICT and _matches(patterns, e.get("libraries", []))
    ]  # fmt: skip
    conflicts.sort(key=lambda e: ((e.get("verdict") or {}).get("rule") != rule, len(e["steps"])))
    mine = [e for e in conflicts if own_only(e)]
    if mine:
        return "reproduced", _conflict_detail(mine[0])
    latent = [
        e
        for e in entries
        if e.get("outcome") == "latent"
        and any(f.get("rule") == rule for f in e.get("findings", []))
        and _matches(patterns, [*e.get("mapped", []), *(r["path"] for r in e.get("loaded_runtimes", []))])
    ]  # fmt: skip
    latent.sort(key=lambda e: (not own_only(e), len(e["steps"])))
    if latent:
        return "latent", f"two copies mapped without a crash ({rule}), in {latent[0]['nodeid']}"
    if conflicts:
        detail = _conflict_detail(conflicts[0])
        return "related", detail + " (not between the scenario's own modules)"
    for e in entries:
        for f in (e.get("target") or {}).get("findings", []):
            if f.get("rule") == rule and not f.get("reproduced"):
                return "static", f"[{f['severity']}] {rule}: not reproduced at run time"
    return "not found", "no run or static finding of the planned run matches it"


def _conflict_detail(e: JsonObject) -> str:
    verdict = (e.get("verdict") or {}).get("rule") or "unattributed"
    how = " ".join(x for x in (e["outcome"], e.get("signal") or "") if x)
    order = (e.get("load_mode") or {}).get("order") or " > ".join(
        s for s in e.get("minimal_steps", []) if "\n" not in s
    )
    variant = ((e.get("plan") or {}).get("variant") or {}).get("label", "plain")
    mode = "" if variant == "plain" or variant.startswith("global") else f", under {variant}"
    return f"{how} ({verdict}), minimal order {order}{mode}, in {e['nodeid']}"


def class_lines(scenarios: Sequence[Any], report: JsonObject) -> list[str]:
    """The closing note: one line per zoo class, then the counts."""
    entries = report.get("scenarios", [])
    rows = [(s.name, *classify(s, entries)) for s in scenarios if s.rule]
    lines = ["conflict classes of the zoo (scenarios with a rule) in the planned run:"]
    lines += [f"  {status:11} {name}: {detail}" for name, status, detail in sorted(rows)]
    counts: dict[str, int] = {}
    for _, status, _ in rows:
        counts[status] = counts.get(status, 0) + 1
    lines.append("  " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    return lines
