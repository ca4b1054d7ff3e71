"""Describing ELF objects: facts (read once, cached), runtime kind, owning distribution.

Every stage that needs to know what a file is (the scan, the sandbox's post-mortem, the
diagnosis) asks :func:`describe_paths`; nothing else reads facts or classifies objects.
"""

from __future__ import annotations

import logging
import os
import stat
import zipfile
from collections.abc import Iterable, Mapping

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.families import classify
from pytest_runtimeconflict.model import ElfFacts, ObjectInfo, RuntimeKind
from pytest_runtimeconflict.static.discover import WHEEL_SEP
from pytest_runtimeconflict.static.elffacts import read_elf_facts
from pytest_runtimeconflict.static.factcache import FactsCache, resolve_cache_dir
from pytest_runtimeconflict.static.symbols import exports_libstdcxx
from pytest_runtimeconflict.static.wheelmember import read_wheel_member_facts

log = logging.getLogger(__name__)


class FactsReader:
    """Reads (and caches) facts of plain files and of wheel members (``x.whl!/member``).

    ``cache`` is the persistent :class:`FactsCache` (default: the user-level one); call
    :meth:`close` to write its new entries."""

    def __init__(self, cache: FactsCache | None = None) -> None:
        self._memo: dict[str, ElfFacts | None] = {}
        self._zips: dict[str, zipfile.ZipFile] = {}
        self.errors: dict[str, str] = {}
        self.cache = cache if cache is not None else FactsCache(resolve_cache_dir(None))

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()
        self.cache.flush()

    def __call__(self, path: str) -> ElfFacts | None:
        """Facts of ``path`` or None (missing, not ELF: the reason is kept in ``errors``)."""
        if path not in self._memo:
            try:
                self._memo[path] = self.read(path)
            except ElfReadError as exc:
                self.errors[path] = str(exc)
                self._memo[path] = None
        return self._memo[path]

    def read(self, path: str) -> ElfFacts | None:
        """Facts of ``path``; None when it does not exist; ElfReadError when not ELF."""
        if WHEEL_SEP in path:
            return self._read_member(path)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        directory, name = os.path.split(os.path.abspath(path))
        facts = self.cache.get(directory, name, st)
        if facts is None or facts.path != path:
            facts = read_elf_facts(path)
            self.cache.put(directory, name, st, facts)
        return facts

    def _read_member(self, path: str) -> ElfFacts | None:
        wheel, member = path.split(WHEEL_SEP, 1)
        try:
            st = os.stat(wheel)
            zf = self._zips.get(wheel) or self._zips.setdefault(wheel, zipfile.ZipFile(wheel))
            info = zf.getinfo(member)
        except (OSError, KeyError, zipfile.BadZipFile):
            return None
        container = os.path.abspath(wheel)
        facts = self.cache.get(container, member, st)
        if facts is None or facts.path != path:
            facts = read_wheel_member_facts(zf, wheel, info, path)
            self.cache.put(container, member, st, facts)
        return facts


def _is_extension(facts: ElfFacts) -> bool:
    return any(s.startswith("PyInit_") for s in facts.defined_symbols)


def static_libstdcxx(facts: ElfFacts, kind: RuntimeKind | None) -> str | None:
    """``"exported"``, ``"hidden"`` or None: how a non-libstdc++ object carries libstdc++."""
    if kind is not None and kind.family == "libstdc++":
        return None
    if exports_libstdcxx(facts.defined_symbols, facts.unique_symbols):
        return "exported"
    return "hidden" if facts.static_libstdcxx_hidden else None


def info_of(facts: ElfFacts, distribution: str | None) -> ObjectInfo:
    """Classify ``facts`` into an :class:`ObjectInfo`."""
    kind = classify(facts)
    return ObjectInfo(
        facts, distribution, kind, _is_extension(facts), static_libstdcxx(facts, kind)
    )


def describe_paths(
    paths: Iterable[str],
    dist_of: Mapping[str, str] | None = None,
    *,
    reader: FactsReader | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[ObjectInfo]:
    """Facts + runtime kind of each ELF file in ``paths`` (plain or ``x.whl!/member``).

    Non-ELF, corrupt and missing files are skipped with a logged warning (and appended to
    ``skipped`` as ``(path, reason)`` when given). ``dist_of`` maps paths to distributions.
    """
    own = reader is None
    reader = reader or FactsReader()
    dist_of = dist_of or {}
    out: list[ObjectInfo] = []
    try:
        for path in paths:
            facts = reader(path)
            if facts is None:
                reason = reader.errors.get(path) or f"{path}: no such file; skipped"
                log.warning("%s", reason)
                if skipped is not None:
                    skipped.append((path, reason))
                continue
            out.append(info_of(facts, dist_of.get(path)))
    finally:
        if own:
            reader.close()
    return out


# --- the scan -----------------------------------------------------------------------------
