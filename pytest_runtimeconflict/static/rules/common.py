"""Helpers the rule detectors share: naming objects, their distributions, distinct copies."""

from __future__ import annotations

import os
from collections.abc import Iterable

from pytest_runtimeconflict.families import is_layered
from pytest_runtimeconflict.model import ObjectInfo
from pytest_runtimeconflict.static.elfbytes import same_mapped_bytes
from pytest_runtimeconflict.static.loader import file_key


def load_name(info: ObjectInfo) -> str:
    """The name the loader keys the object by: its SONAME, else its file name."""
    return info.facts.soname or os.path.basename(info.path)


def dists(infos: Iterable[ObjectInfo]) -> tuple[str, ...]:
    """The distributions of ``infos``, sorted."""
    return tuple(sorted({i.distribution for i in infos if i.distribution}))


def libs(infos: Iterable[ObjectInfo]) -> tuple[str, ...]:
    """The paths of ``infos``, sorted."""
    return tuple(sorted({i.path for i in infos}))


def describe(info: ObjectInfo) -> str:
    """``path (distribution, SONAME x)`` for a finding's detail."""
    owner = info.distribution or "no distribution"
    return f"{info.path} ({owner}, SONAME {info.facts.soname or '-'})"


def distinct_copies(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """Distinct files (by path and inode), whatever their SONAMEs: two files of one runtime are
    two copies. A DT_NEEDED lookup reuses a loaded SONAME, but a load by path maps a second
    file even when its SONAME is already loaded (see :func:`how_loaded`)."""
    seen_files: dict[str, ObjectInfo] = {}
    for info in sorted(infos, key=lambda i: i.path):
        seen_files.setdefault(_copy_key(info), info)
    return list(seen_files.values())


def _copy_key(info: ObjectInfo) -> str:
    """A file, or for a layered runtime (MKL's core, interface and thread libraries) the
    directory of its installation: its layers are one copy."""
    if info.kind is not None and is_layered(info.kind):
        return f"layers:{info.kind.runtime}:{os.path.dirname(os.path.realpath(info.path))}"
    return file_key(info.path)


def how_loaded(copies: Iterable[ObjectInfo]) -> str:
    """How the loader can keep ``copies`` side by side, in words."""
    names = [load_name(c) for c in copies]
    if len(set(names)) == len(names):
        return "Different SONAMEs, so the loader keeps all of them"
    shared = sorted({n for n in names if names.count(n) > 1})
    return (
        f"Some share the SONAME {', '.join(shared)}: a DT_NEEDED lookup reuses whichever copy "
        "loaded first, but a load by path (ctypes.CDLL('/abs/path'), dlopen with a slash) "
        "maps a second file anyway"
    )


def unique_by_path(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """``infos`` without repeated paths, first occurrence kept."""
    seen: dict[str, ObjectInfo] = {}
    for info in infos:
        seen.setdefault(info.path, info)
    return list(seen.values())


def identical_copies(infos: Iterable[ObjectInfo]) -> bool:
    """Whether different files are identical copies as loaded: every allocated section (code,
    data, dynamic symbols, relocations) equal; only debug information, ``.symtab`` or notes
    (a build id) differ. Whichever of them serves, the same code runs."""
    return same_mapped_bytes([i.path for i in infos])


IDENTICAL_NOTE = (
    " They are identical copies, though: every section the loader maps (code, data, dynamic "
    "symbols) is the same in both, only debug information or notes differ, so whichever serves, "
    "the same code runs."
)
