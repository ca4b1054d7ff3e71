"""Rules about exported C++ libraries: the same C++ symbols defined by two distributions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pytest_runtimeconflict.model import Finding, ObjectInfo
from pytest_runtimeconflict.static.rules.common import (
    IDENTICAL_NOTE,
    describe,
    dists,
    identical_copies,
    libs,
)
from pytest_runtimeconflict.static.rules.registry import Rule, register
from pytest_runtimeconflict.static.symbols import leading_namespace

# One shared non-weak C++ definition is already an interposition hazard under RTLD_GLOBAL;
# none appear across numpy, scipy, scikit-learn and torch, so the rule stays quiet there.
CXX_DUPLICATE_THRESHOLD = 1


def _shared_symbols(infos: Sequence[ObjectInfo]) -> set[str]:
    """C++ symbols exported by objects of two or more distributions (set operations: torch
    alone exports tens of thousands, a per-symbol loop costs a warm scan 0.1 s)."""
    by_dist: dict[str, set[str]] = defaultdict(set)
    for info in infos:
        if info.distribution:
            by_dist[info.distribution].update(info.facts.cxx_exports)
    seen: set[str] = set()
    shared: set[str] = set()
    for symbols in by_dist.values():
        shared |= seen & symbols
        seen |= symbols
    return shared


def _cxx_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    shared = _shared_symbols(infos)
    owners: dict[str, dict[str, ObjectInfo]] = defaultdict(dict)  # symbol -> dist -> object
    for info in infos:
        if info.distribution and shared:
            for sym in shared.intersection(info.facts.cxx_exports):
                owners[sym].setdefault(info.distribution, info)
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for sym, by_dist in owners.items():
        if len(by_dist) < 2:
            continue
        objs = sorted(by_dist.values(), key=lambda i: i.path)
        ns = leading_namespace(sym) or ""
        for a_idx, a in enumerate(objs):
            for b in objs[a_idx + 1 :]:
                groups[(a.path, b.path, ns)].append(sym)
    by_path = {i.path: i for i in infos}
    out = []
    for (a_path, b_path, ns), syms in sorted(groups.items()):
        if len(syms) < CXX_DUPLICATE_THRESHOLD:
            continue
        pair = [by_path[a_path], by_path[b_path]]
        label = f"namespace {ns}" if ns else "the global namespace"
        identical = identical_copies(pair)
        out.append(
            Finding(
                rule="cxx-symbol-duplicate",
                family="c++",
                severity="info" if identical else "warning",
                title=f"{len(syms)} C++ symbols of {label} exported by two distributions"
                + (": identical copies" if identical else ""),
                detail=f"{describe(pair[0])} and {describe(pair[1])} both define "
                f"{len(syms)} global symbols of {label} (e.g. {', '.join(sorted(syms)[:3])}): "
                "two copies of one C++ library; with different versions, objects built by one "
                "reach code of the other (ODR violation: crashes in call_once, descriptor "
                "registration, static initialisers)." + (IDENTICAL_NOTE if identical else ""),
                libraries=libs(pair),
                distributions=dists(pair),
                advice="Package authors: hide the bundled library (-fvisibility=hidden, "
                "-Wl,--exclude-libs,ALL, a version script) or depend on a shared wheel of it. "
                "Users: avoid importing both in one process or use matching versions.",
            )
        )
    return out


register(
    Rule(
        id="cxx-symbol-duplicate",
        family="c++",
        severity="warning",
        summary="the same C++ symbols exported by objects of two distributions",
        scope="every-object",
        detect=lambda objects, mapped: _cxx_duplicate(objects),
        markers=("terminate:", "undefined:"),
        cause=(
            "{libs} export the same C++ symbols (two copies of one C++ library), so calls and "
            "static state mix between copies"
        ),
        author_advice=(
            "hide the bundled C++ library's symbols (-fvisibility=hidden, "
            "-Wl,--exclude-libs,ALL) or link the shared library both packages use; two exported "
            "copies of one C++ library violate the one-definition rule"
        ),
        order_unsafe=True,
        experiments=("drop-global",),
    )
)
