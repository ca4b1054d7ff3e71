"""Candidate copies of a library on disk: the newest copy of a SONAME among the mapped
objects, the loader's search paths and the system loader cache (what a preload should use)."""

from __future__ import annotations

import os
import re

from pytest_runtimeconflict.diagnosis.evidence import describe
from pytest_runtimeconflict.diagnosis.signature import _VERSION_NOT_FOUND
from pytest_runtimeconflict.model import Evidence
from pytest_runtimeconflict.static.loader import system_ld_cache

_VERSION_NUMBER = re.compile(r"^([A-Z_]+?)_?(\d+(?:\.\d+)*)$")


def system_libraries(soname: str) -> list[str]:
    """Paths the system loader cache knows for ``soname`` (this machine's architecture)."""
    return list(system_ld_cache().get(soname, ()))


def dedupe(items) -> list[str]:  # type: ignore[no-untyped-def]
    """``items`` without repeats, first occurrence kept."""
    return list(dict.fromkeys(items))


def newest_candidate(soname: str, version: str | None, evidence: Evidence) -> str | None:
    """The copy of ``soname`` defining the highest version of its series (and ``version``,
    when given) among the mapped objects and the system's loader cache."""
    paths = [p for p, o in evidence.objects.items() if o.facts.soname == soname]
    paths += _search_path_copies(soname, evidence)
    paths += system_libraries(soname)
    infos = describe(dedupe(os.path.realpath(p) for p in paths))
    best: tuple[tuple[int, ...], str] | None = None
    for info in infos:
        defs = tuple(info.facts.version_defs)
        if version and version not in defs:
            continue
        rank = max((_version_tuple(v) for v in defs), default=())
        if best is None or rank > best[0]:
            best = (rank, info.facts.path)
    if best is None:
        return None
    for path in system_libraries(soname):  # name it as the user would write it
        if os.path.realpath(path) == os.path.realpath(best[1]):
            return path
    return best[1]


def _search_path_copies(soname: str, evidence: Evidence) -> list[str]:
    """Files named ``soname`` in the RUNPATH/RPATH directories of the mapped objects (and of
    the object named by a version error): where the loader would have looked for them."""
    owners = list(evidence.objects.values())
    match = _VERSION_NOT_FOUND.search(evidence.text)
    if match and match.group("by"):
        owners += describe([match.group("by").strip()])
    found = []
    for info in owners:
        origin = os.path.dirname(info.facts.path)
        for entry in (*info.facts.runpath, *info.facts.rpath):
            directory = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
            candidate = os.path.join(directory, soname)
            if os.path.isfile(candidate):
                found.append(os.path.normpath(candidate))
    return found


def _version_tuple(version: str) -> tuple[int, ...]:
    match = _VERSION_NUMBER.match(version)
    if not match:
        return ()
    return tuple(int(x) for x in match.group(2).split("."))
