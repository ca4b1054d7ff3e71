"""Symbol interposition analysis: which exported names two objects share, by kind.

Under ``RTLD_GLOBAL`` or ``LD_PRELOAD`` an object's exported symbols join the global scope,
which the loader searches before a later object's own dependencies: every later reference to a
shared name binds to the first definition. ``STB_GNU_UNIQUE`` objects are merged process-wide
even under ``RTLD_LOCAL``. So what two objects can do to each other follows from the names they
both export:

- ``unique``: GNU_UNIQUE objects outside ``std`` (a registry, a template's static member):
  always merged;
- ``data``: C data objects (``gotoblas``): one copy's code runs on the other's state;
- ``functions``: C functions; they bite at load time when the object has initializers;
- ``cxx``: C++ functions and objects outside ``std`` (two copies of one C++ library).

libstdc++'s own header-template statics and instantiations (``_ZZNSt...``, ``_ZGVZNSt...``,
``_ZNSt...``) are left out: every C++ object carries them, and they are the C++ runtime's
concern (the libstdc++ rules), not another library's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from pytest_runtimeconflict.model import ObjectInfo
from pytest_runtimeconflict.static import interpose_cache
from pytest_runtimeconflict.static.symbols import leading_namespace

KINDS = ("unique", "data", "functions", "cxx")


@dataclass(frozen=True)
class SharedSymbols:
    """The exported names ``first`` and ``second`` both define, by kind (sorted)."""

    first: ObjectInfo
    second: ObjectInfo
    unique: tuple[str, ...] = ()
    data: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()
    cxx: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return len(self.unique) + len(self.data) + len(self.functions) + len(self.cxx)

    def examples(self, limit: int = 4) -> list[str]:
        """The names most likely to bite first: unique, data, then functions, then C++."""
        names = [*self.unique, *self.data, *self.functions, *self.cxx]
        return names[:limit]

    def describe(self) -> str:
        """``13 data objects, 6179 functions (e.g. gotoblas, ...)``."""
        counts = [
            (len(self.unique), "GNU_UNIQUE objects"),
            (len(self.data), "C data objects"),
            (len(self.functions), "C functions"),
            (len(self.cxx), "C++ symbols"),
        ]
        parts = [f"{n} {what}" for n, what in counts if n]
        return ", ".join(parts) + f" (e.g. {', '.join(self.examples())})" if parts else "nothing"


def unique_outside_std(names: Iterable[str]) -> set[str]:
    """GNU_UNIQUE names that are not the C++ runtime's own (libstdc++ header statics)."""
    return {n for n in names if leading_namespace(n) != "std"}


def _names(info: ObjectInfo) -> dict[str, Collection[str]]:
    facts = info.facts
    return {
        "unique": unique_outside_std(facts.unique_symbols),
        "data": facts.c_data,
        "functions": facts.c_functions,
        "cxx": facts.cxx_exports,
    }


def exported_names(info: ObjectInfo) -> frozenset[str]:
    """Every name of every kind (:data:`KINDS`) ``info`` exports."""
    return frozenset(set().union(*_names(info).values()))


@lru_cache(maxsize=256)  # the interpreter's libraries are asked for in every diagnosis
def dynamic_definitions(path: str) -> frozenset[str]:
    """Every name ``path`` defines in its dynamic symbol table, weak ones included (glibc
    defines hundreds of its functions weak: ``getpid``, ...), without versions; empty when
    it cannot be read."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    names = set()
    try:
        with open(path, "rb") as fh:
            table = ELFFile(fh).get_section_by_name(".dynsym")
            if not isinstance(table, SymbolTableSection):
                return frozenset()
            for symbol in table.iter_symbols():
                entry = symbol.entry
                if entry.st_shndx == "SHN_UNDEF" or entry.st_info.bind == "STB_LOCAL":
                    continue
                if entry.st_other.visibility in ("STV_HIDDEN", "STV_INTERNAL"):
                    continue
                if symbol.name:
                    names.add(symbol.name.split("@", 1)[0])
    except (OSError, ELFError, ValueError):
        return frozenset()
    return frozenset(names)


def _symbols(info: ObjectInfo) -> dict[str, frozenset[str]]:
    return {kind: frozenset(names) for kind, names in _names(info).items()}


class _Same:
    """An object as a cache key by identity (hashing ObjectInfo would hash every name)."""

    def __init__(self, info: ObjectInfo) -> None:
        self.info = info

    def __hash__(self) -> int:
        return id(self.info)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.info is self.info


@lru_cache(maxsize=64)
def _symbols_of(key: _Same) -> dict[str, frozenset[str]]:
    # The BLAS rule compares every pair of its copies: each copy's sets are built once.
    return _symbols(key.info)


def shared_symbols(first: ObjectInfo, second: ObjectInfo) -> SharedSymbols:
    """What ``first`` and ``second`` both export, by kind, leaving out names both define with
    ``STV_PROTECTED`` visibility (each binds its own references to its own definition, so
    neither copy can interpose on the other there)."""
    store = interpose_cache.current()
    key = (first.path, second.path)
    if store is not None and key in store.entries:
        return SharedSymbols(first, second, *store.entries[key])
    shared = _shared(first, second, _symbols_of(_Same(first)), _symbols_of(_Same(second)))
    _remember(store, shared)
    return shared


def _remember(store: interpose_cache.Store | None, shared: SharedSymbols) -> None:
    if store is not None:
        store.entries[shared.first.path, shared.second.path] = tuple(
            getattr(shared, kind) for kind in KINDS
        )
        store.dirty = True


def _shared(
    first: ObjectInfo,
    second: ObjectInfo,
    mine: dict[str, frozenset[str]],
    theirs: dict[str, frozenset[str]],
) -> SharedSymbols:
    shielded = set(first.facts.protected) & set(second.facts.protected)
    common = {k: tuple(sorted((mine[k] & theirs[k]) - shielded)) for k in KINDS}
    return SharedSymbols(first, second, **common)


def sharing_pairs(objects: Sequence[ObjectInfo]) -> list[SharedSymbols]:
    """Every pair of objects of different distributions that export a name in common. Only
    names exported by two distributions or more are indexed, and they are grouped by the list
    of objects that export them (set operations: torch alone exports tens of thousands of
    names, which a warm scan must not walk one by one). A pair's shared names are the union of
    the groups whose list holds both objects, so no object's names are intersected twice.
    Within :func:`interpose_cache.persisted`, a warm scan of the same files reads them."""
    store = interpose_cache.current()
    if store is not None and store.pair_list is not None:
        by_path = {o.path: o for o in objects}
        listed = store.pair_list
        if all(a in by_path and b in by_path and (a, b) in store.entries for a, b in listed):
            return [SharedSymbols(by_path[a], by_path[b], *store.entries[a, b]) for a, b in listed]
    found = _sharing_pairs(objects)
    if store is not None:
        for shared in found:
            _remember(store, shared)
        store.pair_list = [(s.first.path, s.second.path) for s in found]
    return found


def _sharing_pairs(objects: Sequence[ObjectInfo]) -> list[SharedSymbols]:
    names = {i: _names(o) for i, o in enumerate(objects) if o.distribution is not None}
    blocks = {
        kind: _holder_blocks(
            _in_two_distributions(objects, names, kind),
            ((i, by[kind]) for i, by in names.items()),
        )
        for kind in KINDS
    }
    pairs: set[tuple[int, int]] = set()
    for by_holders in blocks.values():
        for holders in by_holders:
            if 1 < len(holders) <= 8:  # a name in many objects is an ABI convention, not a copy
                pairs.update(_cross_pairs(objects, holders))
    common: dict[tuple[int, int], dict[str, set[str]]] = {
        pair: {kind: set() for kind in KINDS} for pair in pairs
    }
    for kind, by_holders in blocks.items():
        for holders, block in by_holders.items():
            for pair in _pairs_within(holders, pairs):
                common[pair][kind] |= block
    found = [_from_common(objects[a], objects[b], common[a, b]) for a, b in sorted(pairs)]
    return [s for s in found if s.total]


def _pairs_within(
    holders: tuple[int, ...], pairs: set[tuple[int, int]]
) -> Iterable[tuple[int, int]]:
    """The pairs of ``pairs`` whose two objects are both in ``holders``."""
    if len(holders) <= 8:
        return (p for p in _ordered_pairs(holders) if p in pairs)
    members = set(holders)
    return (p for p in pairs if p[0] in members and p[1] in members)


def _ordered_pairs(holders: tuple[int, ...]) -> Iterable[tuple[int, int]]:
    for i, a in enumerate(holders):
        for b in holders[i + 1 :]:
            yield (a, b)
            yield (b, a)


def _from_common(
    first: ObjectInfo, second: ObjectInfo, common: dict[str, set[str]]
) -> SharedSymbols:
    shielded = set(first.facts.protected) & set(second.facts.protected)
    return SharedSymbols(first, second, **{k: tuple(sorted(common[k] - shielded)) for k in KINDS})


def _holder_blocks(
    shared: set[str], exporters: Iterable[tuple[int, Collection[str]]]
) -> dict[tuple[int, ...], set[str]]:
    """The names of ``shared`` grouped by the list of objects (in object order) that export
    them.

    Partition refinement by set operations: a block holds the names exported by exactly the
    objects seen so far in its key, so the work follows the objects and the distinct lists
    (few: thousands of names have the same holders, two copies of one library), not the
    names one by one."""
    blocks: dict[tuple[int, ...], set[str]] = {(): set(shared)}
    for index, exported in exporters:
        mine = shared.intersection(exported)
        if not mine:
            continue
        split: dict[tuple[int, ...], set[str]] = {}
        for holders, block in blocks.items():
            common = block & mine
            if common:
                block -= common
                split[holders + (index,)] = common
        blocks = {k: b for k, b in blocks.items() if b}
        blocks.update(split)
    return {holders: block for holders, block in blocks.items() if holders}


def _in_two_distributions(
    objects: Sequence[ObjectInfo], names: dict[int, dict[str, Collection[str]]], kind: str
) -> set[str]:
    """Names of ``kind`` that objects of two or more distributions export."""
    by_dist: dict[str, set[str]] = defaultdict(set)
    for index, by_kind in names.items():
        by_dist[str(objects[index].distribution)].update(by_kind[kind])
    seen: set[str] = set()
    shared: set[str] = set()
    for exported in by_dist.values():
        shared |= seen & exported
        seen |= exported
    return shared


def _cross_pairs(
    objects: Sequence[ObjectInfo], holders: Sequence[int]
) -> Iterable[tuple[int, int]]:
    for i, a in enumerate(holders):
        for b in holders[i + 1 :]:
            if objects[a].distribution != objects[b].distribution:
                yield (a, b) if objects[a].path <= objects[b].path else (b, a)
