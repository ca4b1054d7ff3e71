"""A persistent cache of the interposition analysis (:mod:`.interpose`), so a warm scan of an
unchanged environment does not intersect half a million exported names again.

What two objects share is a function of their facts, which are a function of the files: the
cache is valid for one exact set of objects, identified by each file's path, size, mtime,
inode and ctime (the facts cache's stamp) and the facts format. One file per environment
(``<facts cache>/interpose-<hash of the paths>.marshal``, sealed with a checksum of its
content, in a folder the user owns: :mod:`pytest_runtimeconflict.files.atomic`) holds that identity and the shared
names by pair, as indices into one name table; a changed, added or removed file changes the
identity, and the next scan recomputes and replaces the file. Objects that are not plain files
(wheel members) switch the cache off for that scan.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import marshal
import operator
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from pytest_runtimeconflict.files.atomic import checked_cache_dir, seal, unseal
from pytest_runtimeconflict.files.locking import replace_atomically
from pytest_runtimeconflict.model import ObjectInfo
from pytest_runtimeconflict.static.factcache import cache_key

log = logging.getLogger(__name__)

FORMAT = 2
# The names two objects share, by kind, in interpose.KINDS order.
Shared = tuple[tuple[str, ...], ...]


class Store:
    """The shared names computed (or loaded) during one scan."""

    def __init__(self, path: Path | None, identity: str) -> None:
        self.path = path
        self.identity = identity
        self.entries: dict[tuple[str, str], Shared] = {}
        self.pair_list: list[tuple[str, str]] | None = None
        self.dirty = False

    def load(self) -> None:
        if self.path is None:
            return
        try:
            body = unseal(self.path.read_bytes())
            if body is None:
                log.debug("ignoring interposition cache %s: checksum mismatch", self.path)
                return
            identity, names, entries, pair_list = marshal.loads(body)
            if identity != self.identity:
                return
            loaded = {
                pair: tuple(_lookup(names, kind) for kind in shared)
                for pair, shared in entries.items()
            }
            listed = [(a, b) for a, b in pair_list] if pair_list is not None else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, EOFError, TypeError, IndexError, AttributeError) as exc:
            log.debug("ignoring unreadable interposition cache %s: %s", self.path, exc)
            return
        self.entries, self.pair_list = loaded, listed

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        table: dict[str, int] = {}
        entries = {
            pair: tuple(tuple(table.setdefault(n, len(table)) for n in kind) for kind in shared)
            for pair, shared in self.entries.items()
        }
        data = (self.identity, tuple(table), entries, self.pair_list)
        try:
            replace_atomically(self.path, seal(marshal.dumps(data)), 0o600)
        except OSError as exc:
            log.debug("cannot write the interposition cache %s: %s", self.path, exc)


def _lookup(names: tuple[str, ...], indices: tuple[int, ...]) -> tuple[str, ...]:
    """``names`` at ``indices`` (itemgetter: one C call, not one Python step per name)."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)(names)  # type: ignore[no-any-return]
    return (names[indices[0]],) if indices else ()


_CURRENT: contextvars.ContextVar[Store | None] = contextvars.ContextVar(
    "interpose_store", default=None
)


def current() -> Store | None:
    """The store of the scan in progress (None outside :func:`persisted`)."""
    return _CURRENT.get()


def _identity(objects: Sequence[ObjectInfo]) -> tuple[str, str] | None:
    """(hash of the paths, hash of the paths with their stamps), None if one is not a file."""
    paths = hashlib.sha256(cache_key().encode())
    stamps = hashlib.sha256(f"{FORMAT}".encode())
    for info in sorted(objects, key=lambda o: o.path):
        try:
            st = os.stat(info.path)
        except OSError:
            return None
        line = f"{info.path}\0{info.distribution}\n"
        paths.update(os.fsencode(line))
        stamps.update(
            f"{line}{st.st_size} {st.st_mtime_ns} {st.st_ino} {st.st_ctime_ns}\n".encode(
                errors="surrogateescape"
            )
        )
    return paths.hexdigest()[:24], stamps.hexdigest()


@contextlib.contextmanager
def persisted(root: Path | None, objects: Sequence[ObjectInfo]) -> Iterator[None]:
    """Within the block, :mod:`.interpose` reads and records shared names in a cache under
    ``root`` (the facts cache's directory) valid for exactly ``objects``; written at the end.
    ``root`` None: no cache."""
    root = checked_cache_dir(root, "facts cache") if root is not None else None
    identity = _identity(objects) if root is not None else None
    if root is None or identity is None:
        yield
        return
    store = Store(Path(root) / cache_key() / f"interpose-{identity[0]}.marshal", identity[1])
    store.load()
    token = _CURRENT.set(store)
    try:
        yield
    finally:
        _CURRENT.reset(token)
        store.save()
