"""Coverage of a session's planned runs, from their report entries (so the xdist controller,
which never planned, can compute it): ordered tuples exercised with Python's default imports,
per load-mode variant, in short targeted sequences vs only inside long ones, and the tuples
that a conflict blocked or an earlier module's copy of a library masked."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

from pytest_runtimeconflict.model.plan import Coverage, VariantCoverage
from pytest_runtimeconflict.planning.sequences import coverage_of, tuples_covered
from pytest_runtimeconflict.vocabulary import JsonObject

Pair = tuple[str, str]


def coverage_from_entries(plan_entries: Sequence[JsonObject]) -> Coverage | None:
    """The coverage of the planned runs whose ``plan`` records are ``plan_entries``."""
    if not plan_entries:
        return None
    modules, strength = plan_entries[0]["modules"], plan_entries[0]["strength"]
    plain = [p for p in plan_entries if _is_plain(p)]
    executed = [tuple(p["executed"]) for p in plain]
    blocked: dict[tuple[str, ...], str] = {}
    for p in plain:
        if p.get("conflict") and strength:
            for tup in tuples_covered(tuple(p["sequence"]), strength):
                blocked.setdefault(tup, p["conflict"])
    base = coverage_of(modules, strength, executed, blocked)
    targeted = _pairs(tuple(p["executed"]) for p in plan_entries if p.get("kind") == "target")
    everywhere = _pairs(tuple(p["executed"]) for p in plan_entries)
    return Coverage(
        modules=base.modules,
        strength=base.strength,
        tuples_total=base.tuples_total,
        tuples_exercised=base.tuples_exercised,
        blocked=base.blocked,
        targeted=len(targeted),
        long_only=len(everywhere - targeted),
        masked=_masked(plan_entries),
        variants=tuple(_variant_coverage(plan_entries)),
    )


def _is_plain(p: JsonObject) -> bool:
    variant = p.get("variant") or {}
    return not (
        variant.get("global_imports")
        or variant.get("preload")
        or variant.get("ld_preload")
        or variant.get("env")
    )


def _pairs(orders: Iterable[tuple[str, ...]]) -> set[Pair]:
    out: set[Pair] = set()
    for order in orders:
        out.update((a, b) for a, b in combinations(order, 2))
    return out


def _variant_coverage(plan_entries: Sequence[JsonObject]) -> list[VariantCoverage]:
    """Per variant label of the covering (``sequence``) items: ordered pairs (a, b) with a
    imported RTLD_GLOBAL before b, or modules imported under a preload / environment."""
    labels: dict[str, list[JsonObject]] = {}
    for p in plan_entries:
        if p.get("kind") == "sequence" and not _is_plain(p):
            labels.setdefault(p["variant"]["label"], []).append(p)
    out = []
    for label, entries in sorted(labels.items()):
        globals_ = {g for p in entries for g in p["variant"].get("global_imports", [])}
        planned = {m for p in entries for m in p["sequence"]}
        if globals_:
            total = {(a, b) for a in globals_ for b in planned if a != b}
            done = {x for x in _pairs(tuple(p["executed"]) for p in entries) if x[0] in globals_}
            cut = {
                x
                for p in entries
                if p.get("conflict")
                for x in _pairs([tuple(p["sequence"])])
                if x[0] in globals_
            }
            out.append(VariantCoverage(label, "pairs", len(total), len(done), len(cut - done)))
        else:
            done_modules = {m for p in entries for m in p["executed"]}
            out.append(VariantCoverage(label, "modules", len(planned), len(done_modules)))
    return out


def _masked(plan_entries: Sequence[JsonObject]) -> tuple[tuple[tuple[str, ...], str], ...]:
    """Pairs masked in every run that exercised them."""
    masked: dict[Pair, str] = {}
    clean: set[Pair] = set()
    for p in plan_entries:
        here = {(a, b): name for a, b, name in p.get("masked", [])}
        for pair in _pairs([tuple(p["executed"])]):
            if pair in here:
                masked.setdefault(pair, here[pair])
            else:
                clean.add(pair)
    return tuple(sorted((pair, name) for pair, name in masked.items() if pair not in clean))
