"""Rules about the C++ runtime: shared copies under different SONAMEs and statically linked
copies, exported or hidden."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pytest_runtimeconflict.model import Finding, ObjectInfo
from pytest_runtimeconflict.static.rules.common import (
    describe,
    distinct_copies,
    dists,
    how_loaded,
    libs,
)
from pytest_runtimeconflict.static.rules.registry import Rule, register
from pytest_runtimeconflict.static.symbols import is_libstdcxx_unique


def _libstdcxx_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    """Two shared libstdc++ files under different SONAMEs (e.g. a vendored, renamed copy):
    both load, and their STB_GNU_UNIQUE symbols bind process-wide to the first copy."""
    copies = distinct_copies(i for i in infos if i.kind and i.kind.runtime == "libstdc++")
    if len(copies) < 2:
        return []
    return [
        Finding(
            rule="libstdcxx-duplicate",
            family="libstdc++",
            severity="error",
            title=f"{len(copies)} shared libstdc++ copies can be loaded into one process",
            detail=f"{how_loaded(copies)}: "
            + "; ".join(describe(c) for c in copies)
            + ". libstdc++'s STB_GNU_UNIQUE symbols (std::locale::id of every facet) are "
            "merged process-wide even under RTLD_LOCAL, so the second copy runs on the first "
            "one's locale tables: std::bad_cast from std::regex, empty stream output, crashes.",
            libraries=libs(copies),
            distributions=dists(copies),
            advice="Package authors: do not vendor libstdc++ (auditwheel's policies keep it "
            "external for this reason); build with the oldest toolchain the target needs or "
            "the manylinux devtoolset. Users: preload the newest shared libstdc++ before the "
            "imports: LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6), or "
            "ctypes.CDLL('libstdc++.so.6', os.RTLD_GLOBAL).",
        )
    ]


_STATIC_ADVICE = (
    "Package authors: link with -static-libstdc++ together with -Wl,--exclude-libs,ALL (or a "
    "version script) so libstdc++ stays hidden, or link the shared libstdc++. Users: import "
    "the package that uses the shared libstdc++ first or preload it: "
    "LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6)."
)


def _libstdcxx_static(infos: Sequence[ObjectInfo], need_other: bool) -> list[Finding]:
    """Objects exporting a statically linked libstdc++ (with another copy when ``need_other``)."""
    shared = [i for i in infos if i.kind and i.kind.runtime == "libstdc++"]
    exporters = [
        i
        for i in infos
        if (not i.kind or i.kind.runtime != "libstdc++") and i.static_libstdcxx == "exported"
    ]
    out = []
    for info in exporters:
        others = shared + [e for e in exporters if e is not info]
        if need_other and not others:
            continue
        uniq = [u for u in info.facts.unique_symbols if is_libstdcxx_unique(u)]
        other_txt = "; other copies: " + ", ".join(o.path for o in others) if others else ""
        out.append(
            Finding(
                rule="libstdcxx-static-exported",
                family="libstdc++",
                severity="error",
                title=f"{os.path.basename(info.path)} statically links libstdc++ and exports it",
                detail=f"{describe(info)} defines libstdc++'s own symbols ({len(uniq)} GNU_UNIQUE "
                "facet ids such as std::locale::id of the facets, core symbols like "
                "std::locale::classic). GNU_UNIQUE symbols are merged process-wide even under "
                "RTLD_LOCAL, so together with any other libstdc++ copy the locale machinery "
                "breaks: empty ostringstream output, std::bad_cast from std::regex, SIGSEGV in "
                "std::codecvt" + other_txt,
                libraries=libs([info, *others]),
                distributions=dists([info, *others]),
                advice=_STATIC_ADVICE,
            )
        )
    return out


def _libstdcxx_hidden(infos: Sequence[ObjectInfo]) -> list[Finding]:
    """Objects carrying a private (hidden) static libstdc++: worth knowing, harmless alone."""
    out = []
    for info in infos:
        if info.static_libstdcxx == "hidden":
            out.append(
                Finding(
                    rule="libstdcxx-static-hidden",
                    family="libstdc++",
                    severity="info",
                    title=f"{os.path.basename(info.path)} carries a hidden static libstdc++",
                    detail=f"{describe(info)} contains libstdc++ code but exports none of it; "
                    "it coexists with other copies. Objects passed across the boundary "
                    "(std::string, exceptions) must not mix with other libstdc++ copies.",
                    libraries=(info.path,),
                    distributions=dists([info]),
                    advice="No action needed; keep -Wl,--exclude-libs,ALL in the link flags.",
                )
            )
    return out


register(
    Rule(
        id="libstdcxx-duplicate",
        family="libstdc++",
        severity="error",
        summary="two shared libstdc++ copies under different SONAMEs",
        scope="reachable",
        detect=lambda objects, mapped: _libstdcxx_duplicate(objects),
        markers=("terminate:",),
        roles="copies",
        cause=(
            "two shared libstdc++ copies are loaded ({libs}) under different SONAMEs: their "
            "STB_GNU_UNIQUE symbols (locale facet ids) bind process-wide to the first copy, so "
            "the second copy runs on the other's tables"
        ),
        author_advice=(
            "do not vendor libstdc++ (auditwheel keeps it external for this reason): link the "
            "shared system libstdc++.so.6 built by the oldest toolchain you target, or the "
            "manylinux devtoolset; a renamed copy loads beside every other libstdc++ and their "
            "STB_GNU_UNIQUE symbols merge"
        ),
        untried_hint="try preloading the shared libstdc++.so.6 with ctypes.CDLL(..., RTLD_GLOBAL)",
        duplicated_family="libstdc++",
    )
)
register(
    Rule(
        id="libstdcxx-static-exported",
        family="libstdc++",
        severity="error",
        summary="an object links libstdc++ statically and exports it",
        scope="every-object",
        detect=lambda objects, mapped: _libstdcxx_static(objects, need_other=mapped),
        markers=("terminate:",),
        roles="static-libstdcxx",
        cause=(
            "{exporter} exports the libstdc++ it links statically, and {other} is a second "
            "libstdc++ in the same process: their STB_GNU_UNIQUE symbols (locale facet ids) "
            "merge across copies, so one copy runs on the other's tables"
        ),
        author_advice=(
            "link the extension with -Wl,--exclude-libs,ALL (or a version script) so the static "
            "libstdc++ it carries stays private, or link the shared libstdc++.so.6; an exported "
            "static libstdc++ merges its STB_GNU_UNIQUE symbols with every other copy in the "
            "process"
        ),
        untried_hint="try preloading the shared libstdc++.so.6 with ctypes.CDLL(..., RTLD_GLOBAL)",
    )
)
register(
    Rule(
        id="libstdcxx-static-hidden",
        family="libstdc++",
        severity="info",
        summary="an object carries a private static libstdc++",
        scope="every-object",
        detect=lambda objects, mapped: _libstdcxx_hidden(objects),
        markers=("terminate:",),
        roles="static-libstdcxx",
        cause=(
            "{exporter} carries a private static libstdc++ while {other} is also loaded: C++ "
            "objects crossing between the two copies break"
        ),
        author_advice=(
            "prefer the shared libstdc++.so.6; a hidden static copy is private, but C++ objects "
            "(exceptions, locales, streams) must not cross into another copy's code"
        ),
        untried_hint="try preloading the shared libstdc++.so.6 with ctypes.CDLL(..., RTLD_GLOBAL)",
    )
)
