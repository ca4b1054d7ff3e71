"""A persistent cache of :class:`ElfFacts`, so a second scan of an unchanged environment only
stats its files.

Layout: ``<root>/facts-<key>/<sha of directory>.marshal``, one shard per directory of
objects (or per wheel), holding ``{name: (size, mtime_ns, inode, ctime_ns, facts fields)}``.
The long symbol-name lists (:data:`JOINED`: C functions, C data, C++ exports, protected
names; most of the bytes) are stored as one newline-joined string each and split only when
read (:class:`CachedFacts`): a warm scan whose interposition analysis is cached never reads
most of them, and loading a few large strings is a copy, not half a million objects.
``<key>`` changes with the cache format, the Python version (marshal) and the fact extraction
(:data:`~pytest_runtimeconflict.static.elffacts.FACTS_VERSION`, the symbol names the registry keeps), so
an upgrade never reads old facts. An entry is used only when the file's size, mtime, inode
and ctime all match, so a rewritten or touched file is read again.

Trust: the cache folder is used only when the current user owns it and no one else can write
to it (else one warning and no cache, :func:`~pytest_runtimeconflict.files.atomic.checked_cache_dir`);
a shard carries the sha256 of its content and one that does not match is ignored (its objects
are read again); shards are written 0600 through a random temporary name, never through a link.

Concurrency (pytest-xdist workers, parallel CI jobs sharing a home): readers never lock; they
see a complete old or new shard because writers write a temporary file and ``os.replace`` it.
Writers merge under an ``fcntl.flock`` on ``<shard>.lock`` so no worker's entries are lost.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.families import identity_symbol_names
from pytest_runtimeconflict.files.atomic import checked_cache_dir, seal, unseal
from pytest_runtimeconflict.files.locking import file_lock, replace_atomically
from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.elffacts import FACTS_VERSION, LIBSTDCXX_MARKERS
from pytest_runtimeconflict.vocabulary import env_setting

log = logging.getLogger(__name__)

FORMAT = 4
ENV_VAR = "PYTEST_RUNTIMECONFLICT_FACTS_CACHE"
_FIELDS = tuple(f.name for f in fields(ElfFacts))
_NFIELDS = len(_FIELDS)

Entry = tuple[int, int, int, int, tuple[Any, ...]]
JOINED = ("c_functions", "c_data", "cxx_exports", "protected")
_JOINED_AT = frozenset(_FIELDS.index(name) for name in JOINED)


class _Joined:
    """One field of :data:`JOINED` on :class:`CachedFacts`: split from its stored string at
    the first read, then kept in the instance (which Python looks at first from then on)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        text = obj.__dict__["_joined"][self.name]
        value = tuple(text.split("\n")) if text else ()
        obj.__dict__[self.name] = value
        return value


class CachedFacts(ElfFacts):
    """:class:`ElfFacts` read from the cache: each field of :data:`JOINED` stays one string
    until first read (then it is the same tuple a fresh read gives); equal to and hashed like
    the :class:`ElfFacts` of the same values."""

    c_functions = _Joined("c_functions")  # type: ignore[assignment]
    c_data = _Joined("c_data")  # type: ignore[assignment]
    cxx_exports = _Joined("cxx_exports")  # type: ignore[assignment]
    protected = _Joined("protected")  # type: ignore[assignment]

    def count_prefixed(self, prefix: str) -> int:
        """Counted in the stored string, not split: names start it or follow a newline."""
        if "c_functions" in self.__dict__ or not prefix:
            return super().count_prefixed(prefix)
        text: str = self.__dict__["_joined"]["c_functions"]
        return text.startswith(prefix) + text.count("\n" + prefix)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ElfFacts):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = ElfFacts.__hash__


def default_cache_dir() -> Path | None:
    """The user-level cache: ``$PYTEST_RUNTIMECONFLICT_FACTS_CACHE`` (``0`` disables; the old
    name ``$RC_FACTS_CACHE`` still works), else ``$XDG_CACHE_HOME/pytest-runtimeconflict``, else
    ``~/.cache/pytest-runtimeconflict``."""
    configured = env_setting("FACTS_CACHE")
    if configured == "0":
        return None
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-runtimeconflict"


def resolve_cache_dir(cache_dir: Path | str | None) -> Path | None:
    """``cache_dir`` if given, else :func:`default_cache_dir`; None when ``RC_FACTS_CACHE=0``
    (the switch wins everywhere, for benchmarks and debugging)."""
    if env_setting("FACTS_CACHE") == "0":
        return None
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def cache_key() -> str:
    """What cached facts depend on besides the file: format, Python, extraction, kept names."""
    kept = "\n".join(sorted(identity_symbol_names() | LIBSTDCXX_MARKERS))
    digest = hashlib.sha256(f"{FACTS_VERSION}\n{kept}".encode()).hexdigest()[:12]
    return f"facts-{FORMAT}-py{sys.version_info[0]}{sys.version_info[1]}-{digest}"


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


class FactsCache:
    """Facts by (container, name, stat stamp). ``container`` is the directory of a plain file
    or the path of a wheel; ``name`` the file name or the wheel member."""

    def __init__(self, root: Path | str | None) -> None:
        checked = checked_cache_dir(root, "facts cache") if root is not None else None
        self.root = checked / cache_key() if checked is not None else None
        self._shards: dict[str, dict[str, Entry]] = {}
        self._dirty: dict[str, dict[str, Entry]] = {}
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def get(self, container: str, name: str, st: os.stat_result) -> ElfFacts | None:
        """Cached facts of ``name`` in ``container`` when its stamp still matches ``st``."""
        if self.root is None:
            return None
        entry = self._shard(container).get(name)
        if entry is None or entry[:4] != _stamp(st) or len(entry[4]) != _NFIELDS:
            self.misses += 1
            return None
        self.hits += 1
        return _facts_from_fields(entry[4])

    def put(self, container: str, name: str, st: os.stat_result, facts: ElfFacts) -> None:
        """Remember ``facts`` (written by :meth:`flush`)."""
        if self.root is None:
            return
        values = tuple(
            "\n".join(getattr(facts, f)) if i in _JOINED_AT else getattr(facts, f)
            for i, f in enumerate(_FIELDS)
        )
        entry: Entry = (*_stamp(st), values)
        self._shard(container)[name] = entry
        self._dirty.setdefault(container, {})[name] = entry

    def flush(self) -> None:
        """Write the new entries, merged into what other processes wrote meanwhile."""
        if self.root is None or not self._dirty:
            return
        try:
            self.root.mkdir(mode=0o700, exist_ok=True)
            for container, entries in self._dirty.items():
                self._write_shard(container, entries)
        except OSError as exc:
            log.debug("cannot write the facts cache under %s: %s", self.root, exc)
        self._dirty.clear()

    def _shard_path(self, container: str) -> Path:
        assert self.root is not None
        return self.root / (hashlib.sha256(os.fsencode(container)).hexdigest()[:32] + ".marshal")

    def _shard(self, container: str) -> dict[str, Entry]:
        shard = self._shards.get(container)
        if shard is None:
            shard = self._shards[container] = _load(self._shard_path(container), container)
        return shard

    def _write_shard(self, container: str, entries: dict[str, Entry]) -> None:
        path = self._shard_path(container)
        with file_lock(path.with_suffix(".lock")):
            merged = _load(path, container)
            merged.update(entries)
            replace_atomically(path, seal(marshal.dumps((container, merged))), 0o600)
        self._shards[container] = merged


def _facts_from_fields(values: tuple[Any, ...]) -> ElfFacts:
    # every field is a str/int/bool/None or nested tuples of them: marshal returns them as is
    facts = object.__new__(CachedFacts)
    fields_ = facts.__dict__
    joined = {}
    for i, (name, value) in enumerate(zip(_FIELDS, values)):
        if i in _JOINED_AT:
            joined[name] = value
        else:
            fields_[name] = value
    fields_["_joined"] = joined
    return facts


def _load(path: Path, container: str) -> dict[str, Entry]:
    try:
        body = unseal(path.read_bytes())
        if body is None:
            log.debug("ignoring facts cache shard %s: its checksum does not match", path)
            return {}
        data = marshal.loads(body)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, EOFError, TypeError) as exc:
        log.debug("ignoring unreadable facts cache shard %s: %s", path, exc)
        return {}
    if not (isinstance(data, tuple) and len(data) == 2 and data[0] == container):
        return {}  # a hash collision or a foreign file: treat as empty
    return data[1] if isinstance(data[1], dict) else {}
