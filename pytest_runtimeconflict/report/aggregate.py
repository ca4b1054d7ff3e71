"""Aggregation over a session's collected runs: the JSON report, the coverage of the plan
and the terminal summary (conflicts grouped by root cause, latent runtime sets, coverage)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from pytest_runtimeconflict.model.plan import Coverage
from pytest_runtimeconflict.planning.coverage import coverage_from_entries
from pytest_runtimeconflict.planning.workloads import is_workload, probe_label, step_label
from pytest_runtimeconflict.report import latent
from pytest_runtimeconflict.report.display import (
    DETAIL_WIDTH,
    HEADLINE_WIDTH,
    clip,
    one_line,
    runtime_message,
    short_path,
)
from pytest_runtimeconflict.vocabulary import REPORT_SCHEMA, JsonObject

Collected = Sequence[tuple[str, JsonObject]]
SEEN_IN_SHOWN = 3


def insert_in_order(
    collected: list[tuple[str, JsonObject]], nodeid: str, entry: JsonObject
) -> None:
    """Add a run's entry to ``collected`` in plan order (scenario-file items after, by node
    id), whatever order xdist workers report in; an item's own entries keep their order, so
    the report and summary do not depend on the workers' timing."""
    key = _order_key(nodeid, entry)
    at = len(collected)
    while at and _order_key(*collected[at - 1]) > key:
        at -= 1
    collected.insert(at, (nodeid, entry))


def _order_key(nodeid: str, entry: JsonObject) -> tuple[int, int, str]:
    plan = entry.get("plan")
    if isinstance(plan, dict) and isinstance(plan.get("index"), int):
        return (0, plan["index"], nodeid)
    return (1, 0, nodeid)


def report_json(collected: Collected) -> JsonObject:
    """The JSON report: every run plus the plan's coverage. The entry that owns a conflict
    (its group's first diagnosed run) carries ``failing_orders``: every distinct minimal order
    and load mode the conflict's runs failed in, shortest first."""
    owners = {
        id(members[0][1]): failing_orders(members)
        for members in conflict_groups(collected).values()
        if "verdict" in members[0][1]
    }
    scenarios = []
    for nodeid, entry in collected:
        out = dict(entry, nodeid=nodeid)
        out.pop("failing_orders", None)  # a merged report's entry: recomputed here
        if id(entry) in owners:
            out["failing_orders"] = owners[id(entry)]
        scenarios.append(out)
    data: JsonObject = {"schema": REPORT_SCHEMA, "scenarios": scenarios}
    by_purpose = child_runs_by_purpose(collected)
    if by_purpose:
        data["child_runs"] = {"total": child_runs(collected), "by_purpose": by_purpose}
    covered = coverage(collected)
    if covered is not None:
        data["coverage"] = covered.to_json()
    return data


def coverage(collected: Collected) -> Coverage | None:
    """Ordered tuples exercised by the plan's runs (plain imports, per variant, targeted),
    and those blocked by a named conflict or masked by an earlier module's library copy."""
    return coverage_from_entries([e["plan"] for _, e in collected if "plan" in e])


def summary_lines(collected: Collected) -> list[str]:
    """Terminal summary: conflicts grouped by root cause, latent findings, coverage."""
    if not collected:
        return []
    groups = conflict_groups(collected)
    lines = ["", "=" * 20 + " runtime conflicts " + "=" * 20]
    lines.append(
        f"{len(groups)} distinct conflict(s) in {child_runs(collected)} child run(s)"
        + purposes_text(child_runs_by_purpose(collected))
    )
    for key, members in sorted(groups.items()):
        lines += _conflict_lines(key, members)
    latent = latent_sets(e for _, e in collected if e.get("outcome") == "latent")
    if latent:
        lines.append(
            "latent: runtimes mapped more than once without a crash "
            "(a warning; --rc-fail-on=latent fails on it):"
        )
        for family, files in latent:
            line = f"- {family}: " + ", ".join(files)
            fits = len(line) <= DETAIL_WIDTH
            lines += [line] if fits else [f"- {family}:", *(f"    {f}" for f in files)]
    lines += static_lines(e for _, e in collected)
    covered = coverage(collected)
    if covered is not None:
        lines.append(covered.describe())
        lines += covered.detail_lines()
    return [clip(line, DETAIL_WIDTH) if len(line) > DETAIL_WIDTH else line for line in lines]


def skipped_lines(reasons: dict[str, str]) -> list[str]:
    """The plan items pytest skipped, each with its reason (shown without ``-rs``)."""
    if not reasons:
        return []
    lines = [f"skipped plan items ({len(reasons)}):"]
    return lines + [clip(f"- {node}: {why}", DETAIL_WIDTH) for node, why in sorted(reasons.items())]


def conflict_groups(collected: Sequence[tuple[str, Any]]) -> dict[str, list[tuple[str, Any]]]:
    """Runs that did not pass, by conflict key: a diagnosed run by its verdict's key (or, when
    an earlier item owns it, ``duplicate_of``, by that item's one conflict key: the owner's
    diagnosis ran the counter-experiments this one skipped), a run that an earlier item showed
    the same way (``same_failure_as``: not diagnosed there) by the key of that item's run that
    failed the same way at the same step, or of the run named. Each group's diagnosed runs
    come first."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for nodeid, entry in collected:
        key = _conflict_key(collected, entry)
        if key is not None:
            groups.setdefault(key, []).append((nodeid, entry))
    return {k: sorted(m, key=lambda m: "verdict" not in m[1]) for k, m in groups.items()}


def _conflict_key(collected: Sequence[tuple[str, Any]], entry: Any, depth: int = 0) -> str | None:
    if entry.get("outcome") not in ("crashed", "failed", "hung"):
        return None
    if entry.get("verdict"):
        return _owners_key(collected, entry) or str(entry["verdict"]["key"])
    prior = entry.get("same_failure_as")
    if not prior or depth > len(collected):
        return None
    for nodeid, other in collected:
        if (
            nodeid == prior["item"]
            and other is not entry
            and other.get("outcome") == entry.get("outcome")
            and (_failed_step(other) == prior["step"] or other.get("id") == prior.get("run"))
        ):
            key = _conflict_key(collected, other, depth + 1)
            if key is not None:
                return key
    return None


def _owners_key(collected: Sequence[tuple[str, Any]], entry: Any) -> str | None:
    """The one conflict key of the item that owns ``entry``'s failure (``duplicate_of``),
    when that item diagnosed exactly one conflict of the same outcome."""
    owner = entry.get("duplicate_of")
    if not owner:
        return None
    keys = {
        str(other["verdict"]["key"])
        for nodeid, other in collected
        if nodeid == owner
        and other.get("verdict")
        and other.get("outcome") == entry.get("outcome")
        and not other.get("duplicate_of")
    }
    return keys.pop() if len(keys) == 1 else None


def _failed_step(entry: Any) -> str | None:
    steps, at = entry.get("steps") or [], entry.get("failed_step")
    return str(steps[at]) if isinstance(at, int) and 0 <= at < len(steps) else None


def child_runs(collected: Collected) -> int:
    """The child interpreters the collected items started (their entries' ``child_runs``,
    diagnosis and re-runs included); an entry without the count (a report from before it was
    recorded) counts its own run and its diagnosis's."""
    if any("child_runs" in entry for _, entry in collected):
        # An item's first entry counts the whole item; its further entries count nothing.
        return sum(int(entry.get("child_runs") or 0) for _, entry in collected)
    return sum(1 + int(entry.get("runs_used") or 0) for _, entry in collected)


def child_runs_by_purpose(collected: Collected) -> dict[str, int]:
    """The child runs of the collected items by purpose (plan items, owner checks,
    minimisation, binding traces, counter-experiments, load-mode reduction), largest first;
    empty for a report from before they were recorded."""
    total: dict[str, int] = {}
    for _, entry in collected:
        for name, count in (entry.get("child_runs_by_purpose") or {}).items():
            total[str(name)] = total.get(str(name), 0) + int(count)
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def purposes_text(by_purpose: dict[str, int]) -> str:
    """`` (plan items 40, minimisation 21, ...)``, or nothing."""
    if not by_purpose:
        return ""
    return " (" + ", ".join(f"{name} {count}" for name, count in by_purpose.items()) + ")"


def static_lines(entries: Iterable[JsonObject]) -> list[str]:
    """Static findings no targeted run reproduced, load modes that could not be used, and
    catalogue workloads that were skipped."""
    entries = list(entries)
    missed = {
        (f["rule"], tuple(f["libraries"])): f
        for e in entries
        for f in (e.get("target") or {}).get("findings", [])
        if not f.get("reproduced")
    }
    latent_only = {
        (f["rule"], tuple(f["libraries"])): f
        for e in entries
        for f in (e.get("target") or {}).get("findings", [])
        if f.get("reproduced_as") == "latent"
    }
    lines = []
    if latent_only:
        lines.append("static conflicts reproduced as latent co-loading (no crash):")
        lines += [
            f"- [{f['severity']}] {f['rule']}: {f['title']}" for _, f in sorted(latent_only.items())
        ]
    if missed:
        lines.append("static conflicts not reproduced at run time (see the items' reports):")
        lines += [
            f"- [{f['severity']}] {f['rule']}: {f['title']}" for _, f in sorted(missed.items())
        ]
    unusable = sorted({e["variant_unusable"] for e in entries if e.get("variant_unusable")})
    lines += [f"load mode not usable: {u}" for u in unusable]
    skipped = sorted({s for e in entries for s in e.get("workloads_skipped", [])})
    if skipped:
        lines.append("workloads skipped: " + "; ".join(skipped))
    return lines


def minimal_order(entry: JsonObject, shorten: bool = False) -> str:
    """A diagnosed entry's minimal order in words, with its load mode and the probe its
    failure needs: ``global(a) > b > workload b:user (preload libx.so)`` (library paths as
    ``<site>/...`` with ``shorten``)."""
    show = short_path if shorten else str
    minimal = entry.get("minimal_steps") or []
    mode = entry.get("load_mode") or {}
    order = " > ".join(step_label(s) for s in minimal)
    if mode.get("order"):
        order = mode["order"].replace(">", " > ") + "".join(
            f" > {step_label(s)}" for s in minimal if is_workload(s)
        )
    # the load mode shows even when no import is left in the order (a preload and a workload)
    order += "".join(f" (preload {show(x)})" for x in mode.get("preload", []))
    order += "".join(f" (LD_PRELOAD {show(x)})" for x in mode.get("ld_preload", []))
    order += "".join(f" ({k}={v})" for k, v in sorted((mode.get("env") or {}).items()))
    run = entry.get("minimal_run") or {}
    probe = probe_label(run.get("phase"), run.get("exercised") or ())
    return order + (f" > {probe}" if probe else "")


def failing_orders(members: Sequence[tuple[str, JsonObject]]) -> list[JsonObject]:
    """Every distinct minimal order (with its load mode) the diagnosed runs of one conflict
    failed in, shortest first: ``order`` (in words), ``steps``, ``load_mode`` (RTLD_GLOBAL
    imports, preloads, LD_PRELOAD, environment) and the ``nodeids`` that showed it."""
    found: dict[str, JsonObject] = {}
    for nodeid, entry in members:
        if not entry.get("minimal_steps"):
            continue
        mode = entry.get("load_mode") or {}
        record = found.setdefault(
            minimal_order(entry),
            {
                "order": minimal_order(entry),
                "steps": list(entry["minimal_steps"]),
                "load_mode": {
                    k: mode.get(k) or ({} if k == "env" else [])
                    for k in ("global_imports", "preload", "ld_preload", "env")
                },
                "nodeids": [],
            },
        )
        if nodeid not in record["nodeids"]:
            record["nodeids"].append(nodeid)
    return sorted(found.values(), key=lambda r: (len(r["steps"]), r["order"]))


def _conflict_lines(key: str, members: list[tuple[str, JsonObject]]) -> list[str]:
    """One conflict: a headline (rule, the libraries by short name, what happened with the
    runtime's own message, how often), then indented details, each on one line."""
    first = members[0][1]
    verdict = first["verdict"]
    nodes = sorted({n for n, _ in members})
    lines = [_headline(first, verdict, len(nodes))]
    details = [("why", verdict.get("cause") or key)]
    libraries = "; ".join(_library(lib) for lib in first.get("library_details") or [])
    details.append(("libraries", libraries))
    orders = failing_orders(members)
    short = {minimal_order(e): minimal_order(e, shorten=True) for _, e in members}
    if orders:
        details.append(("minimal order", short[orders[0]["order"]]))
    if len(orders) > 1:
        shown = "; ".join(short[o["order"]] for o in orders[1:3])
        more = f" and {len(orders) - 3} more" if len(orders) > 3 else ""
        also = f"{shown}{more} (every one: failing_orders in the JSON report)"
        details.append(("also fails as", also))
    details.append(("avoid", verdict.get("user_advice") or ""))
    lines += [clip(f"    {name}: {text}", DETAIL_WIDTH) for name, text in details if text]
    # One node id a line, the first few only: plan node ids of long sequences are long.
    more = f" (first {SEEN_IN_SHOWN})" if len(nodes) > SEEN_IN_SHOWN else ""
    lines.append(f"    seen in {len(nodes)} item(s){more}:")
    lines += [clip(f"      {node}", DETAIL_WIDTH) for node in nodes[:SEEN_IN_SHOWN]]
    return lines


def _headline(entry: JsonObject, verdict: JsonObject, items: int) -> str:
    """``- rule: liba.so vs libb.so: crashed SIGABRT: OMP: Error #15 ... [2 items]``, at most
    ``HEADLINE_WIDTH`` characters (the happening is what gets clipped)."""
    names = [
        os.path.basename(str(lib.get("path", ""))) for lib in entry.get("library_details") or []
    ]
    shown = " vs ".join(dict.fromkeys(names[:2])) + (
        f" +{len(names) - 2}" if len(names) > 2 else ""
    )
    head = f"- {verdict.get('rule') or 'unattributed'}" + (f": {shown}" if shown else "")
    tail = f" [{items} item{'s' if items != 1 else ''}]"
    room = HEADLINE_WIDTH - len(head) - len(tail) - 2
    return f"{head}: {clip(_happened(entry), max(room, 20))}{tail}"


def _happened(entry: JsonObject) -> str:
    """What the run did, with the runtime's own words: the signal and the telling stderr line
    of a crash, the error of a failure, the probe or step a hang waited in."""
    outcome = str(entry.get("outcome"))
    said = runtime_message(str(entry.get("stderr_tail") or ""))
    if outcome == "crashed":
        what = f"crashed {entry.get('signal') or 'signal ' + str(entry.get('signum'))}"
        return what + (f": {said}" if said else "")
    message = one_line(str(entry.get("message") or ""))
    return f"{outcome}: {message or said or outcome}"


def _library(lib: JsonObject) -> str:
    where = ", ".join(str(x) for x in (lib.get("distribution"), lib.get("role")) if x)
    return short_path(str(lib.get("path", ""))) + (f" ({where})" if where else "")


def latent_sets(entries: Iterable[JsonObject]) -> list[tuple[str, tuple[str, ...]]]:
    """Every distinct set of one family's files mapped at once, over every latent run."""
    return sorted({found for entry in entries for found in latent.latent_sets(entry)})
