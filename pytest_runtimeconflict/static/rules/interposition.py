"""Rules about exported symbols two distributions share (see :mod:`..interpose`): C functions
and data that interpose once either object is in the global scope, and GNU_UNIQUE objects that
the loader merges process-wide whatever the load mode."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pytest_runtimeconflict.model import Finding, ObjectInfo
from pytest_runtimeconflict.static.elfbytes import symbol_objects
from pytest_runtimeconflict.static.interpose import SharedSymbols, sharing_pairs
from pytest_runtimeconflict.static.rules.common import (
    IDENTICAL_NOTE,
    describe,
    dists,
    identical_copies,
    libs,
)
from pytest_runtimeconflict.static.rules.registry import Rule, register

# So many shared C functions mean two copies of one library's internals (two OpenBLAS builds
# share thousands), which bite under RTLD_GLOBAL/LD_PRELOAD even without shared data.
LARGE_OVERLAP = 100

_last: tuple[tuple[ObjectInfo, ...], list[SharedSymbols]] | None = None


def pairs_of(objects: Sequence[ObjectInfo]) -> list[SharedSymbols]:
    """:func:`sharing_pairs`, computed once for the objects both rules of this theme see (the
    same objects, not equal paths: a later scan describes changed files anew)."""
    global _last
    if (
        _last is None
        or len(_last[0]) != len(objects)
        or any(a is not b for a, b in zip(_last[0], objects))
    ):
        _last = (tuple(objects), sharing_pairs(objects))
    return _last[1]


def _same_runtime_family(shared: SharedSymbols) -> bool:
    kinds = (shared.first.kind, shared.second.kind)
    return all(kinds) and kinds[0].family == kinds[1].family  # type: ignore[union-attr]


def _interposition(objects: Sequence[ObjectInfo]) -> list[Finding]:
    """C functions and data exported by objects of two distributions (runtime copies of one
    family are the family rules' business; their texts name the shared symbols too). Pairs of
    the same two file names (one library shipped by several packages) are one finding."""
    groups: dict[tuple[str, str], list[SharedSymbols]] = {}
    for shared in pairs_of(objects):
        if not (shared.data or shared.functions) or _same_runtime_family(shared):
            continue
        names = (os.path.basename(shared.first.path), os.path.basename(shared.second.path))
        groups.setdefault(names, []).append(shared)
    return [_interposition_finding(members) for _names, members in sorted(groups.items())]


def _interposition_finding(members: list[SharedSymbols]) -> Finding:
    shared = members[0]
    pair = [shared.first, shared.second]
    involved = [o for m in members for o in (m.first, m.second)]
    at_load = any(o.facts.has_initializers for o in pair) and len(shared.functions) > 1
    identical = identical_copies(pair)
    biting = not identical and (
        bool(shared.data) or at_load or len(shared.functions) >= LARGE_OVERLAP
    )
    c_only = SharedSymbols(shared.first, shared.second, (), shared.data, shared.functions)
    also = f" (and {len(members) - 1} more copies of the pair)" if len(members) > 1 else ""
    return Finding(
        rule="symbol-interposition",
        family="symbols",
        severity="warning" if biting else "info",
        title=f"{os.path.basename(pair[0].path)} and {os.path.basename(pair[1].path)} "
        f"export {c_only.describe().split(' (')[0]} in common"
        + (": identical copies" if identical else ""),
        detail=f"{describe(pair[0])} and {describe(pair[1])}{also} both define "
        f"{c_only.describe()}. Loaded RTLD_GLOBAL or LD_PRELOADed, the first one's "
        "definitions serve every later reference to those names, including the other "
        "object's own calls: one copy's code ends in the other's functions and state"
        + (" (one runs initializers, so it bites at load time)" if at_load else "")
        + "."
        + (IDENTICAL_NOTE if identical else ""),
        libraries=libs(involved),
        distributions=dists(involved),
        advice="Package authors: build the bundled library with hidden visibility "
        "(-fvisibility=hidden, -Wl,--exclude-libs,ALL or a version script) or rename "
        "its symbols. Users: do not load either RTLD_GLOBAL or with LD_PRELOAD.",
    )


def harmless_unique(first: ObjectInfo, second: ObjectInfo, names: Sequence[str]) -> list[str]:
    """Of the GNU_UNIQUE objects ``names`` both files define, those whose merging cannot
    matter: the same size and bytes (and the same dynamic relocations) in both, in a section
    the process cannot write once loaded (``.rodata``, ``.data.rel.ro`` under RELRO). Which
    copy's object wins, both read the same constants."""
    a, b = symbol_objects(first.path, names), symbol_objects(second.path, names)
    return [
        n
        for n in names
        if n in a and n in b and not a[n].writable and not b[n].writable and a[n] == b[n]
    ]


def _unique_shared(objects: Sequence[ObjectInfo]) -> list[Finding]:
    out = []
    for shared in pairs_of(objects):
        if shared.unique:
            pair = (shared.first, shared.second)
            harmless = harmless_unique(*pair, shared.unique)
            if len(harmless) == len(shared.unique):
                out.append(_identical_constants(pair, shared.unique))
            else:
                out.append(_unique_finding(pair, shared.unique, harmless))
    return out


def _identical_constants(pair: tuple[ObjectInfo, ObjectInfo], names: Sequence[str]) -> Finding:
    a, b = (os.path.basename(o.path) for o in pair)
    return Finding(
        rule="gnu-unique-shared",
        family="symbols",
        severity="info",
        title=f"{len(names)} STB_GNU_UNIQUE objects shared by {a} and {b} are identical "
        "constants: harmless",
        detail=f"{describe(pair[0])} and {describe(pair[1])} both define the STB_GNU_UNIQUE "
        f"objects {', '.join(names[:4])}. The loader merges them process-wide, but each has "
        "the same bytes (and relocations) in both files and sits in a section that is "
        "read-only once loaded, so whichever copy wins, both read the same constants.",
        libraries=libs(pair),
        distributions=dists(pair),
        advice="Nothing to do.",
    )


def _unique_finding(
    pair: tuple[ObjectInfo, ObjectInfo], names: Sequence[str], harmless: Sequence[str]
) -> Finding:
    biting = [n for n in names if n not in harmless]
    also = f" ({len(harmless)} more are identical constants)" if harmless else ""
    return Finding(
        rule="gnu-unique-shared",
        family="symbols",
        severity="error",
        title=f"{len(names)} STB_GNU_UNIQUE objects shared by "
        f"{os.path.basename(pair[0].path)} and {os.path.basename(pair[1].path)}",
        detail=f"{describe(pair[0])} and {describe(pair[1])} both define the "
        f"STB_GNU_UNIQUE objects {', '.join(biting[:4])}{also}, with different contents or "
        "in a writable section. The loader merges such objects process-wide even under "
        "RTLD_LOCAL, so both use the object of the one loaded first: a registry filled "
        "twice (a second registration aborts, like protobuf's 'File already exists in "
        "database'), or a static of another version's layout.",
        libraries=libs(pair),
        distributions=dists(pair),
        advice="Package authors: give the header-only registry internal linkage or "
        "hide it (-fvisibility=hidden, -fno-gnu-unique, a version script), or depend on "
        "one shared library that owns it. Users: keep the two packages in separate "
        "processes.",
    )


register(
    Rule(
        id="symbol-interposition",
        family="symbols",
        severity="warning",
        summary="C functions or data exported by objects of two distributions",
        scope="every-object",
        detect=lambda objects, mapped: _interposition(objects),
        markers=(),
        cause=(
            "{libs} export the same C symbols; with one of them in the global scope "
            "(RTLD_GLOBAL or LD_PRELOAD) the other's references bind to its definitions"
        ),
        author_advice=(
            "build the bundled library with hidden visibility (-fvisibility=hidden, "
            "-Wl,--exclude-libs,ALL or a version script) or rename its symbols; exported "
            "internals of one build serve every later object once loaded globally"
        ),
        experiments=("drop-global",),
        marks_latent=True,
        untried_hint="try importing without RTLD_GLOBAL (no sys.setdlopenflags) and no LD_PRELOAD",
    )
)
register(
    Rule(
        id="gnu-unique-shared",
        family="symbols",
        severity="error",
        summary="STB_GNU_UNIQUE objects (outside std) defined by objects of two distributions",
        scope="every-object",
        detect=lambda objects, mapped: _unique_shared(objects),
        markers=("terminate:",),
        cause=(
            "{libs} define the same STB_GNU_UNIQUE objects, which the loader merges "
            "process-wide even under RTLD_LOCAL: both run on the first one's object"
        ),
        author_advice=(
            "give the header-only registry internal linkage or hide it (-fvisibility=hidden, "
            "-fno-gnu-unique, a version script), or depend on one shared library that owns it"
        ),
        untried_hint="keep the two packages in separate processes",
    )
)
