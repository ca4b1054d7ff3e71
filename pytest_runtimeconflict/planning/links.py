"""Which load-mode variants can change a binding, predicted from the scan.

A variant is worth a child run only when it can make some reference bind elsewhere than
Python's default (``RTLD_LOCAL``) import would:

``RTLD_GLOBAL`` on module A
    puts every object ``import A`` maps into the global scope, which the loader searches
    before a later object's own dependencies. It changes what module B gets only when an
    object of A's and an object that ``import B`` maps anew define a common name (an exported
    name of :mod:`..static.interpose`'s kinds: GNU_UNIQUE objects, C data and functions, C++
    symbols outside ``std``), or are two copies of one runtime family. It also changes A's own import when two of A's
    objects from different distributions (or a distribution and the system) define a common
    name: A then links to itself.
a preload (``ctypes.CDLL(..., RTLD_GLOBAL)`` or ``LD_PRELOAD``) of a runtime library L
    that an extension links adds what ``RTLD_GLOBAL`` on a module that maps L adds (the global
    sequences import every such module globally), and one thing more: a later object that asks
    for L's SONAME gets L instead of its own copy. So a preload is planned for a library whose
    SONAME another file that a planned module maps also carries, and for one no extension
    links (loaded with ``ctypes`` or ``dlopen``, which an RTLD_GLOBAL import leaves local) or
    that no import really maps (a copy the process would otherwise not have at all).

What a module maps is its extensions' static closure plus what ``import module`` mapped in its
import probe (Python-level imports of other packages, ``ctypes`` loads). Pure standard library.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

Names = Callable[[str], frozenset[str]]


@dataclass(frozen=True)
class FileFacts:
    """What the prediction needs of one mapped file."""

    names: frozenset[str]  # exported names (static.interpose's kinds)
    family: str | None  # runtime family, when the file is a runtime
    distribution: str | None
    soname: str
    needed: tuple[str, ...] = ()  # DT_NEEDED


def global_links(
    objects: Mapping[str, frozenset[str]], facts: Mapping[str, FileFacts]
) -> dict[str, frozenset[str]]:
    """Module -> the modules (itself included when it links to itself) whose bindings an
    ``RTLD_GLOBAL`` import of it can change. ``objects``: module -> the real paths it maps."""
    common = _system_everywhere(objects, facts)
    sharers = _sharers({p for paths in objects.values() for p in paths}, facts)
    out: dict[str, frozenset[str]] = {}
    for a, mine in objects.items():
        givers = mine - common
        linked = set()
        for b, theirs in objects.items():
            fresh = theirs - mine if b != a else theirs
            for x in givers:
                hit = sharers.get(x, frozenset()) & fresh
                if b != a and hit:
                    linked.add(b)
                    break
                if b == a and any(_apart(facts[x], facts[y]) for y in hit):
                    linked.add(a)
                    break
        out[a] = frozenset(linked)
    return out


def preload_worthy(
    libraries: Iterable[str],
    objects: Mapping[str, frozenset[str]],
    facts: Mapping[str, FileFacts],
    linked: frozenset[str],
) -> frozenset[str]:
    """The runtime libraries whose SONAME another mapped file carries (preloading one makes
    that file's users get it instead), and those no extension links (``linked``: the real
    paths of the extensions' static closures): loaded at run time with ``dlopen`` or
    ``ctypes``, which an RTLD_GLOBAL import does not make global."""
    by_soname: dict[str, set[str]] = {}
    for path in {p for paths in objects.values() for p in paths}:
        if path in facts:
            by_soname.setdefault(facts[path].soname, set()).add(path)
    out = set()
    for lib in libraries:
        real = os.path.realpath(lib)
        soname = facts[real].soname if real in facts else os.path.basename(real)
        if by_soname.get(soname, set()) - {real} or real not in linked:
            out.add(lib)
    return frozenset(out)


def ld_preload_differs(
    libraries: Iterable[str],
    objects: Mapping[str, frozenset[str]],
    facts: Mapping[str, FileFacts],
    names_of: Names | None = None,
) -> frozenset[str]:
    """The libraries that ``LD_PRELOAD`` can bind differently from a ctypes ``RTLD_GLOBAL``
    preload at start: those that define, themselves or through a library they need, a name
    that one of the interpreter's own libraries (those every module maps) defines; the
    loader puts an ``LD_PRELOAD`` library ahead of them, a preload at start behind them. For
    every other object both put the library first in the global scope. Libraries the scan has
    no facts of, or when the interpreter's libraries are not known, are kept; the system's
    libraries a library needs are the interpreter's too. ``names_of``:
    every name a file defines (default: its facts' exported names; the caller's may add weak
    definitions, as glibc has hundreds)."""
    common = _system_everywhere(objects, facts)
    libraries = list(libraries)
    if not common:
        return frozenset(libraries)
    names_of = names_of or (lambda path: facts[path].names)
    startup = set().union(*(names_of(p) for p in common))
    by_soname = {info.soname: path for path, info in facts.items()}
    out = set()
    for lib in libraries:
        info = facts.get(os.path.realpath(lib))
        if info is None:
            out.add(lib)
            continue
        names = set(names_of(os.path.realpath(lib)))
        for dep in info.needed:
            path = by_soname.get(dep)
            if path is not None and path not in common and facts[path].distribution:
                names |= names_of(path)
        if names & startup:
            out.add(lib)
    return frozenset(out)


def related_modules(
    objects: Mapping[str, frozenset[str]], facts: Mapping[str, FileFacts]
) -> dict[str, frozenset[str]]:
    """Module -> the other modules that map a different file sharing an exported name, a
    runtime family or a SONAME with one of its files: the modules a conflict of it can
    involve (what minimisation tries to keep first)."""
    sharers = _sharers({p for paths in objects.values() for p in paths}, facts)
    by_soname: dict[str, set[str]] = {}
    for path in {p for paths in objects.values() for p in paths}:
        if path in facts:
            by_soname.setdefault(facts[path].soname, set()).add(path)
    near: dict[str, set[str]] = {}
    for path, others in sharers.items():
        near.setdefault(path, set()).update(others)
    for paths in by_soname.values():
        for path in paths:
            near.setdefault(path, set()).update(paths - {path})
    out = {}
    for a, mine in objects.items():
        reach = set().union(*(near.get(x, set()) for x in mine)) - mine
        out[a] = frozenset(b for b, theirs in objects.items() if b != a and theirs & reach)
    return out


def _apart(x: FileFacts, y: FileFacts) -> bool:
    """Two objects of one module that interposing on each other is a conflict: they come
    from different distributions (or one from the system)."""
    return x.distribution != y.distribution


def _system_everywhere(
    objects: Mapping[str, frozenset[str]], facts: Mapping[str, FileFacts]
) -> frozenset[str]:
    """System files every module maps (the interpreter's own libraries): already in the
    global scope before any import, so a module's RTLD_GLOBAL import adds nothing there."""
    if len(objects) < 2:
        return frozenset()
    every = frozenset.intersection(*objects.values())
    return frozenset(p for p in every if p in facts and facts[p].distribution is None)


def _sharers(paths: set[str], facts: Mapping[str, FileFacts]) -> dict[str, frozenset[str]]:
    """Per file, the other files that define a name it defines or are another copy of its
    runtime family."""
    by_name: dict[str, list[str]] = {}
    by_family: dict[str, list[str]] = {}
    for path in sorted(paths):
        info = facts.get(path)
        if info is None:
            continue
        for name in info.names:
            by_name.setdefault(name, []).append(path)
        if info.family:
            by_family.setdefault(info.family, []).append(path)
    out: dict[str, set[str]] = {}
    for holders in [*by_name.values(), *by_family.values()]:
        if len(holders) < 2:
            continue
        for path in holders:
            out.setdefault(path, set()).update(holders)
    return {p: frozenset(s - {p}) for p, s in out.items()}
