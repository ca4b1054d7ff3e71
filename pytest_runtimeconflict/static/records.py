"""The one reader of ``*.dist-info/RECORD`` files: which distribution installed which file.

:func:`parse_record` is the line parser; :mod:`.discover` runs its very source inside the
target interpreter (standard library only, Python 3.8 syntax), and :func:`distributions_of`
uses it on disk for files seen in a live process (no interpreter needed, so it works for any
target venv). RECORD paths may leave site-packages (``../../../lib/libiomp5.so``: the ``mkl``
and ``intel-openmp`` wheels install into ``<prefix>/lib``); they are resolved like any other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

log = logging.getLogger(__name__)


def parse_record(text):  # type: ignore[no-untyped-def]  # runs in the target: 3.8 syntax
    """The paths of a RECORD text: lines are ``path,hash,size``; a path holding a comma or a
    quote is CSV-quoted (``"a,b.py",sha256=...,12``)."""
    out = []
    for line in text.splitlines():
        rel = line.rsplit(",", 2)[0] if line.count(",") >= 2 else line
        if rel.startswith('"') and rel.endswith('"'):
            rel = rel[1:-1].replace('""', '"')
        if rel and "\0" not in rel:  # a NUL is no file name: the line is damaged
            out.append(rel)
    return out


_OWNERS: dict[str, dict[str, list[tuple[str, str]]]] = {}


def distributions_of(paths: Iterable[str]) -> dict[str, str]:
    """Owning distribution of each path, from the RECORDs of the site directories above it
    (or, for files installed outside site-packages, of the prefix's site directories)."""
    owners: dict[str, str] = {}
    for path in paths:
        real = os.path.realpath(path)
        for site in _site_dirs_near(real):
            owner = _owner_in(site, real)
            if owner:
                owners[path] = owner
                break
    return owners


def _site_dirs_near(path: str) -> list[str]:
    """Directories holding ``*.dist-info`` above ``path`` (nearest first), then the
    ``lib/python*/site-packages`` of each ancestor (a file under ``<prefix>/lib``)."""
    found: list[str] = []
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if parent in _OWNERS or _has_dist_info(parent):
            found.append(parent)
        found += [s for s in _prefix_site_dirs(parent) if s not in found]
        parent = os.path.dirname(parent)
    return found


def _prefix_site_dirs(prefix: str) -> list[str]:
    lib = os.path.join(prefix, "lib")
    try:
        names = sorted(n for n in os.listdir(lib) if n.startswith("python"))
    except OSError:
        return []
    sites = [os.path.join(lib, n, "site-packages") for n in names]
    return [s for s in sites if _has_dist_info(s)]


def _has_dist_info(directory: str) -> bool:
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(directory))
    except OSError:
        return False


def _owner_in(site: str, real: str) -> str | None:
    """The distribution whose RECORD under ``site`` lists the file ``real`` (a realpath).

    Only the RECORD entries with ``real``'s file name are resolved: resolving all of them costs
    one lstat per path component per entry (seconds for a base interpreter with 40k files).
    """
    for rel, name in reversed(_record_index(site).get(os.path.basename(real), ())):
        if os.path.realpath(os.path.join(site, rel)) == real:
            return name  # reversed: a file in two RECORDs belongs to the last (as before)
    return None


def _record_index(site: str) -> dict[str, list[tuple[str, str]]]:
    """file name -> (RECORD path, distribution) for every file in the RECORDs under
    ``site``; pure string work, no system call per entry."""
    if site in _OWNERS:
        return _OWNERS[site]
    index: dict[str, list[tuple[str, str]]] = {}
    for entry in sorted(os.listdir(site)):
        if not entry.endswith(".dist-info"):
            continue
        name = dist_name(os.path.join(site, entry))
        try:
            with open(os.path.join(site, entry, "RECORD"), encoding="utf-8") as fh:
                rels = parse_record(fh.read())
        except OSError:
            continue
        except ValueError as exc:  # not UTF-8: this distribution alone is skipped
            log.warning("%s: RECORD skipped, it cannot be decoded (%s)", entry, exc)
            continue
        for rel in rels:
            index.setdefault(rel.rpartition("/")[2], []).append((rel, name))
    _OWNERS[site] = index
    return index


def dist_name(dist_info: str) -> str:
    """The ``Name:`` of a dist-info's METADATA (falls back to the directory name)."""
    try:
        with open(os.path.join(dist_info, "METADATA"), encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("name:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except (OSError, ValueError):  # unreadable or not UTF-8: the directory name serves
        pass
    return os.path.basename(dist_info).split("-")[0]
