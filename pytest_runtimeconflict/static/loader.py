"""A model of glibc's ld.so search: which file each DT_NEEDED entry of each object resolves to.

Unlike auditwheel's lddtree it keeps *files*, not SONAMEs: two copies of one runtime with
different SONAMEs are both loaded, and a request for a SONAME that is already loaded is
satisfied by the loaded file even when the requester's own search path would have found a
different one (a *shadow event*, the mechanism behind order-dependent
``version 'GLIBCXX_3.4.30' not found`` import failures).

Search order modelled (glibc ``_dl_map_object``):
1. DT_RPATH of the requester and of its loading chain (only when the requester has no
   DT_RUNPATH; an object's RPATH is ignored when it has a RUNPATH itself),
2. ``LD_LIBRARY_PATH``, 3. DT_RUNPATH of the requester only, 4. ``/etc/ld.so.cache``,
5. the default directories. ``$ORIGIN``/``${ORIGIN}``, ``$LIB`` and ``$PLATFORM`` are expanded;
candidates of another ELF class or machine are skipped.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.paths import real_path

log = logging.getLogger(__name__)

FactsLookup = Callable[[str], "ElfFacts | None"]

_CACHE_LINE = re.compile(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)\s*$")


@dataclass(frozen=True)
class ShadowEvent:
    """``requester`` asked for ``soname``; the loaded ``loaded`` served it, while the
    requester's own search would have found ``would_find``."""

    requester: str
    soname: str
    loaded: str
    would_find: str


@dataclass(frozen=True)
class Missing:
    """``requester`` needs ``soname`` and no file was found for it."""

    requester: str
    soname: str


def _default_dirs(machine: str) -> tuple[str, ...]:
    multiarch = f"{machine}-linux-gnu"
    dirs = [
        f"/lib/{multiarch}",
        f"/usr/lib/{multiarch}",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ]
    return tuple(d for d in dirs if os.path.isdir(d))


def _lib_token(machine: str) -> str:
    multiarch = f"lib/{machine}-linux-gnu"
    return multiarch if os.path.isdir("/" + multiarch) else "lib64"


# ``ldconfig -p`` flags naming this machine's ABI (i386 entries of a multilib system lack them).
_ARCH_FLAGS = {"x86_64": "x86-64", "aarch64": "AArch64"}


def _this_architecture(flags: str) -> bool:
    wanted = _ARCH_FLAGS.get(os.uname().machine)
    return wanted is None or wanted in flags


@lru_cache(maxsize=1)
def system_ld_cache() -> dict[str, tuple[str, ...]]:
    """SONAME -> paths from ``ldconfig -p`` (empty when ldconfig is unavailable)."""
    exe = shutil.which("ldconfig") or shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if exe is None:
        log.warning("ldconfig not found: ld.so.cache is not modelled")
        return {}
    try:
        out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("ldconfig -p failed (%s): ld.so.cache is not modelled", exc)
        return {}
    cache: dict[str, list[str]] = {}
    for line in out.splitlines():
        match = _CACHE_LINE.match(line)
        if match and _this_architecture(match.group(2)):
            cache.setdefault(match.group(1), []).append(match.group(3))
    return {name: tuple(paths) for name, paths in cache.items()}


def expand_tokens(entry: str, origin: str, lib: str, plat: str) -> str:
    """Expand ``$ORIGIN``, ``$LIB``, ``$PLATFORM`` (also in ``${...}`` form) in ``entry``."""
    for token, value in (("ORIGIN", origin), ("LIB", lib), ("PLATFORM", plat)):
        entry = entry.replace("${" + token + "}", value).replace("$" + token, value)
    return os.path.normpath(entry) if entry else entry


class LoaderModel:
    """Resolves DT_NEEDED entries like ld.so, given a way to read facts of candidate files.

    ``facts_for(path)`` returns the facts of an ELF file or None when ``path`` does not exist or
    is not ELF; it lets wheel members (``/x.whl!/pkg/lib.so``) act as files.
    """

    def __init__(
        self,
        facts_for: FactsLookup,
        *,
        ld_library_path: Sequence[str] | None = None,
        ld_cache: Mapping[str, Sequence[str]] | None = None,
        default_dirs: Sequence[str] | None = None,
        machine: str | None = None,
    ) -> None:
        self.facts_for = facts_for
        if ld_library_path is None:
            ld_library_path = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        self.ld_library_path = tuple(ld_library_path)
        self.ld_cache = dict(system_ld_cache() if ld_cache is None else ld_cache)
        mach = machine or platform.machine()
        self.default_dirs = tuple(_default_dirs(mach) if default_dirs is None else default_dirs)
        self.lib = _lib_token(mach)
        self.platform = mach
        # find() per (name, requester, search dirs): a scan resolves the same DT_NEEDED of the
        # same object once per extension that loads it (hundreds of times in a big venv).
        self._found: dict[tuple[str, str, tuple[str, ...]], str | None] = {}
        self._expanded: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        # names in each searched directory (None: not a listable directory, e.g. inside a
        # wheel): most candidates of a search do not exist, and a set lookup is no stat
        self._listed: dict[str, frozenset[str] | None] = {}

    def _expand(self, entries: Sequence[str], owner: ElfFacts) -> tuple[str, ...]:
        key = (owner.path, tuple(entries))
        if key not in self._expanded:
            origin = os.path.dirname(owner.path)
            self._expanded[key] = tuple(
                expand_tokens(e, origin, self.lib, self.platform) for e in entries
            )
        return self._expanded[key]

    def search_dirs(self, requester: ElfFacts, chain: Sequence[ElfFacts] = ()) -> list[str]:
        """Directories searched for a DT_NEEDED entry of ``requester`` (cache excluded);
        ``chain`` is the objects that caused ``requester`` to be loaded, nearest first."""
        dirs: list[str] = []
        if not requester.runpath:
            for obj in (requester, *chain):
                if obj.rpath and not obj.runpath:
                    dirs += self._expand(obj.rpath, obj)
        dirs += list(self.ld_library_path)
        dirs += self._expand(requester.runpath, requester)
        return dirs

    def _compatible(self, facts: ElfFacts | None, requester: ElfFacts) -> bool:
        return (
            facts is not None
            and facts.machine == requester.machine
            and facts.elfclass == requester.elfclass
        )

    def find(self, name: str, requester: ElfFacts, chain: Sequence[ElfFacts] = ()) -> str | None:
        """The file ``requester``'s own search finds for DT_NEEDED ``name`` (None if none)."""
        if "/" in name:
            path = name if os.path.isabs(name) else os.path.abspath(name)
            return path if self._compatible(self.facts_for(path), requester) else None
        dirs = self.search_dirs(requester, chain)
        key = (name, requester.path, tuple(dirs))
        if key not in self._found:
            self._found[key] = self._search(name, requester, dirs)
        return self._found[key]

    def _search(self, name: str, requester: ElfFacts, dirs: Sequence[str]) -> str | None:
        for directory in dirs:
            if self._absent(directory, name):
                continue
            path = os.path.join(directory, name)
            if self._compatible(self.facts_for(path), requester):
                return path
        for path in self.ld_cache.get(name, ()):
            if self._compatible(self.facts_for(path), requester):
                return path
        for directory in self.default_dirs:
            if self._absent(directory, name):
                continue
            path = os.path.join(directory, name)
            if self._compatible(self.facts_for(path), requester):
                return path
        return None

    def _absent(self, directory: str, name: str) -> bool:
        """Whether ``directory`` certainly has no entry ``name`` (listed once per model)."""
        if directory not in self._listed:
            try:
                self._listed[directory] = frozenset(os.listdir(directory))
            except OSError:  # missing, not a directory, or a wheel member's directory
                self._listed[directory] = None
        listed = self._listed[directory]
        return listed is not None and name not in listed

    def new_process(self, initial: Sequence[str] = ()) -> ProcessState:
        """A process that has loaded ``initial`` (e.g. the python executable) and its closure."""
        state = ProcessState(self)
        for path in initial:
            state.load(path)
        return state


@lru_cache(maxsize=1 << 16)
def file_key(path: str) -> str:
    # Memoised: the loader model asks for the same few hundred paths thousands of times.
    return real_path(path) if "!/" not in path else path


@dataclass
class ProcessState:
    """The objects one process has loaded, in order, as the loader model resolves them."""

    loader: LoaderModel
    loaded: dict[str, ElfFacts] = field(default_factory=dict)  # path -> facts, load order
    by_name: dict[str, str] = field(default_factory=dict)  # SONAME / load name -> path
    by_file: dict[str, str] = field(default_factory=dict)  # realpath -> path
    shadows: list[ShadowEvent] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    resolved: dict[tuple[str, str], str] = field(default_factory=dict)  # (requester, name) -> path

    def copy(self) -> ProcessState:
        """An independent copy (to load different extensions on top of one base)."""
        return ProcessState(
            self.loader,
            dict(self.loaded),
            dict(self.by_name),
            dict(self.by_file),
            list(self.shadows),
            list(self.missing),
            dict(self.resolved),
        )

    def _register(self, path: str, facts: ElfFacts, name: str) -> None:
        self.loaded[path] = facts
        self.by_file[file_key(path)] = path
        self.by_name.setdefault(name, path)
        if facts.soname:
            self.by_name.setdefault(facts.soname, path)

    def load(self, path: str) -> list[str]:
        """``dlopen(path)``: load it and its DT_NEEDED closure; return the newly loaded paths."""
        facts = self.loader.facts_for(path)
        if facts is None:
            log.warning("cannot load %s: not a readable ELF file", path)
            return []
        if file_key(path) in self.by_file:
            return []
        before = len(self.loaded)
        self._register(path, facts, os.path.basename(path))
        self._load_deps(path, facts, ())
        return list(self.loaded)[before:]

    def _load_deps(self, path: str, facts: ElfFacts, chain: tuple[ElfFacts, ...]) -> None:
        # breadth-first like ld.so: all DT_NEEDED of one object are mapped before their deps
        queue: list[tuple[str, ElfFacts, tuple[ElfFacts, ...]]] = [(path, facts, chain)]
        while queue:
            req_path, req, req_chain = queue.pop(0)
            for name in req.needed:
                new = self._satisfy(req_path, req, req_chain, name)
                if new is not None:
                    queue.append((new, self.loaded[new], (req, *req_chain)))

    def _satisfy(
        self, req_path: str, req: ElfFacts, chain: tuple[ElfFacts, ...], name: str
    ) -> str | None:
        """Resolve one DT_NEEDED; return the path if it was newly loaded."""
        own = self.loader.find(name, req, chain)
        present = self.by_name.get(name)
        if present is not None:
            self.resolved[(req_path, name)] = present
            if own is not None and file_key(own) != file_key(present):
                self.shadows.append(ShadowEvent(req_path, name, present, own))
            return None
        if own is None:
            self.missing.append(Missing(req_path, name))
            return None
        self.resolved[(req_path, name)] = own
        existing = self.by_file.get(file_key(own))
        if existing is not None:  # same file under another name: ld.so reuses it by inode
            self.by_name.setdefault(name, existing)
            self.resolved[(req_path, name)] = existing
            return None
        facts = self.loader.facts_for(own)
        assert facts is not None  # find() checked it
        self._register(own, facts, name)
        return own

    def resolve(self, requester: str, name: str) -> str | None:
        """The file that served ``requester``'s DT_NEEDED ``name`` in this process."""
        return self.resolved.get((requester, name))
