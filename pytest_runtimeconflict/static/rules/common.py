"""Helpers the rule detectors share: naming objects, their distributions, distinct copies."""

from __future__ import annotations

import os
from collections.abc import Iterable

from pytest_runtimeconflict.model import ObjectInfo
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
    """One object per SONAME (the loader keeps one file per SONAME), distinct files only."""
    by_name: dict[str, ObjectInfo] = {}
    seen_files: set[str] = set()
    for info in sorted(infos, key=lambda i: i.path):
        if file_key(info.path) in seen_files:
            continue
        seen_files.add(file_key(info.path))
        by_name.setdefault(load_name(info), info)
    return list(by_name.values())


def unique_by_path(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """``infos`` without repeated paths, first occurrence kept."""
    seen: dict[str, ObjectInfo] = {}
    for info in infos:
        seen.setdefault(info.path, info)
    return list(seen.values())
