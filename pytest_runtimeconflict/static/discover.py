"""Which distributions and which ELF candidate files an environment (or a path) holds.

The environment of an interpreter is asked in a subprocess with a standard-library-only
snippet, so ``--python EXE`` works for any Python >= 3.8 without this package installed there.
Positional paths are directories (walked) and ``.whl`` files, whose ``.so`` members are
reported as ``/abs/x.whl!/member/path`` (a virtual root, so ``$ORIGIN`` RUNPATHs between
members of one wheel resolve).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.files.atomic import checked_cache_dir, seal, unseal
from pytest_runtimeconflict.files.locking import replace_atomically
from pytest_runtimeconflict.static.paths import real_path
from pytest_runtimeconflict.static.records import parse_record
from pytest_runtimeconflict.vocabulary import JsonObject

log = logging.getLogger(__name__)

WHEEL_SEP = "!/"

# Runs in the target interpreter: standard library only, Python 3.8 syntax.
_SNIPPET_BODY = r"""
import json, os, site, sys, sysconfig
try:
    from importlib import metadata
except ImportError:
    metadata = None
dirs = []
for d in list(getattr(site, "getsitepackages", lambda: [])()) + [
        sysconfig.get_paths().get("purelib"), sysconfig.get_paths().get("platlib")]:
    if d and os.path.isdir(d) and os.path.realpath(d) not in [os.path.realpath(x) for x in dirs]:
        dirs.append(d)

def is_elf(rel):
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(".so") or ".so." in name

def record_paths(dist):
    # Reading the text beats dist.files (a PackagePath per line; torch has 12,000).
    text = dist.read_text("RECORD")
    return None if text is None else parse_record(text)

def describe(dist, seen):
    name = dist.metadata["Name"]
    if not name or name.lower() in seen:
        return None
    seen.add(name.lower())
    rels = record_paths(dist)
    if rels is None:
        rels = [str(f) for f in dist.files or []]
    base = str(dist.locate_file(""))
    files = [os.path.normpath(os.path.join(base, r)) for r in rels if is_elf(r)]
    top = (dist.read_text("top_level.txt") or "").split()
    if not top:
        for rel in rels:
            part = rel.split("/")[0]
            if part.endswith((".dist-info", ".data", ".libs", ".pth")) or part == "..":
                continue
            mod = part.split(".")[0]
            if mod and mod.isidentifier() and mod not in top and mod != "__pycache__":
                top.append(mod)
    return {"name": name, "files": files, "top_level": sorted(top)}

# A distribution whose RECORD or METADATA cannot be decoded is skipped and named, alone.
dists, broken = [], []
if metadata is not None:
    seen = set()
    for dist in metadata.distributions(path=dirs):
        try:
            entry = describe(dist, seen)
        except ValueError as exc:  # UnicodeDecodeError included
            broken.append([str(getattr(dist, "_path", "?")), str(exc)[:200]])
            continue
        if entry is not None:
            dists.append(entry)
print(json.dumps({"executable": sys.executable, "version": sys.version.split()[0],
                  "site_dirs": dirs, "distributions": dists, "broken": broken}))
"""


@dataclass(frozen=True)
class Candidate:
    """One ELF candidate file and the distribution that owns it (None if unowned)."""

    path: str
    distribution: str | None


@dataclass
class Environment:
    """What an interpreter sees: executable, site dirs, distributions and ELF candidates."""

    executable: str
    version: str
    site_dirs: list[str]
    distributions: dict[str, list[str]] = field(default_factory=dict)  # name -> top-level names
    candidates: list[Candidate] = field(default_factory=list)


def is_elf_candidate(name: str) -> bool:
    """``*.so`` and ``*.so.*`` file names."""
    return name.endswith(".so") or ".so." in name


def _query_interpreter(python: str) -> JsonObject:
    if not os.path.exists(python):
        raise InterpreterError(
            f"--python {python}: no such file; give the path of a Python interpreter"
        )
    try:
        proc = subprocess.run(
            [python, "-I", "-c", _snippet()], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise InterpreterError(
            f"--python {python}: cannot run it ({exc}); is it a Python interpreter?"
        ) from exc
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (json.JSONDecodeError, IndexError):
        data = None
    if not isinstance(data, dict):
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InterpreterError(f"--python {python}: not a working Python interpreter ({detail})")
    return data


def _snippet() -> str:
    """The discovery script, with the project's one RECORD parser inlined."""
    return inspect.getsource(parse_record) + _SNIPPET_BODY


# A directory modified this close to a listing may change again within the same timestamp
# tick, so its cached listing is not trusted ("racy git" rule).
_RACY_NS = 2_000_000_000


class DiscoveryCache:
    """Remembers an interpreter's answer and the ``*.so`` listing of each directory under its
    site dirs, keyed on directory mtimes: a warm scan stats directories instead of running
    the interpreter and listing 30,000 files (torch + scipy + scikit-learn).

    The answer is reused only while the interpreter file, ``pyvenv.cfg``, every site dir and
    every ``*.dist-info``/``*.egg-info`` dir in them keep their mtime (installing, upgrading
    or removing a distribution changes the site dir). A listing is reused only while its
    directory keeps its mtime. Stored as one JSON file per interpreter with a checksum of its
    content, replaced atomically, in a folder only the user can write."""

    def __init__(self, root: Path | None, python: str) -> None:
        self.file = None
        root = checked_cache_dir(root, "facts cache") if root is not None else None
        if root is not None:
            digest = hashlib.sha256(os.fsencode(os.path.abspath(python))).hexdigest()[:32]
            self.file = root / "discover-2" / f"{digest}.json"
        self.started = time.time_ns()
        self.data: JsonObject = self._load()
        self.dirs: dict[str, list[Any]] = self.data.get("dirs", {})
        self.new_dirs: dict[str, list[Any]] = {}
        self.changed = False

    def _load(self) -> JsonObject:
        if self.file is None:
            return {}
        try:
            body = unseal(self.file.read_bytes())
            data = json.loads(body) if body is not None else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def answer(self, stamps: dict[str, list[int]]) -> JsonObject | None:
        """The cached interpreter answer if ``stamps`` (of the interpreter) still match."""
        cached = self.data.get("answer")
        if not cached or self.data.get("stamps") != stamps:
            return None
        site = _site_stamps(cached["site_dirs"])
        return cached if site is not None and site == self.data.get("site") else None

    def listing(self, path: str, mtime_ns: int) -> list[Any] | None:
        entry = self.dirs.get(path)
        return entry if entry is not None and entry[0] == mtime_ns else None

    def remember(self, path: str, mtime_ns: int, subdirs: list[str], files: list[str]) -> None:
        if mtime_ns < self.started - _RACY_NS:
            self.new_dirs[path] = [mtime_ns, subdirs, files]
        self.changed = self.changed or self.dirs.get(path) != self.new_dirs.get(path)

    def store(self, stamps: dict[str, list[int]], answer: JsonObject) -> None:
        site = _site_stamps(answer["site_dirs"])
        if self.file is None or site is None:
            return
        if not self.changed and len(self.new_dirs) == len(self.dirs) and self.answer(stamps):
            return  # nothing new to write
        mtimes = [s[0] for s in stamps.values()] + list(site.values())
        if any(m >= self.started - _RACY_NS for m in mtimes):
            site = {}  # an install is under way or just ended: do not trust the answer yet
        data = {"stamps": stamps, "site": site, "answer": answer, "dirs": self.new_dirs}
        try:
            replace_atomically(self.file, seal(json.dumps(data).encode()), 0o600)
        except OSError as exc:
            log.debug("cannot write the discovery cache %s: %s", self.file, exc)


def _interpreter_stamps(python: str) -> dict[str, list[int]]:
    """[mtime_ns, inode, size] of the interpreter (as given and resolved) and pyvenv.cfg."""
    stamps = {}
    for path in (python, os.path.realpath(python), _pyvenv_cfg(python)):
        try:
            st = os.stat(path)
        except OSError:
            continue
        stamps[path] = [st.st_mtime_ns, st.st_ino, st.st_size]
    return stamps


def _pyvenv_cfg(python: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(python))), "pyvenv.cfg")


def _site_stamps(site_dirs: list[str]) -> dict[str, int] | None:
    """mtimes of the site dirs and of the metadata dirs in them (None if one is missing)."""
    stamps: dict[str, int] = {}
    try:
        for site_dir in site_dirs:
            stamps[site_dir] = os.stat(site_dir).st_mtime_ns
            with os.scandir(site_dir) as it:
                for entry in it:
                    if entry.name.endswith((".dist-info", ".egg-info")):
                        stamps[entry.path] = entry.stat().st_mtime_ns
    except OSError:
        return None
    return stamps


def _walk_so(root: str, cache: DiscoveryCache | None = None) -> Iterator[str]:
    """``*.so`` files under ``root`` in sorted top-down order, like ``os.walk`` (symlinked
    directories are not entered, unreadable ones are skipped), using cached listings."""
    try:
        mtime = os.stat(root).st_mtime_ns
    except OSError:
        return
    cached = cache.listing(root, mtime) if cache is not None else None
    if cached is not None:
        subdirs, files = cached[1], cached[2]
    else:
        try:
            subdirs, files = _list_dir(root)
        except OSError as exc:
            log.warning("%s: cannot list (%s); skipped", root, exc.strerror or exc)
            return
    if cache is not None:
        cache.remember(root, mtime, subdirs, files)
    for name in files:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            yield path
    for name in subdirs:
        yield from _walk_so(os.path.join(root, name), cache)


def _list_dir(path: str) -> tuple[list[str], list[str]]:
    subdirs, files = [], []
    with os.scandir(path) as it:
        for entry in it:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    subdirs.append(entry.name)
            elif is_elf_candidate(entry.name):
                files.append(entry.name)
    return sorted(subdirs), sorted(files)


def discover_environment(python: str | None = None, cache_dir: Path | None = None) -> Environment:
    """Ask ``python`` (default: the running interpreter) for its environment and list every
    ELF candidate under its site dirs with the owning distribution. ``cache_dir`` (None: no
    cache) keeps the answer and directory listings between runs (:class:`DiscoveryCache`)."""
    python = python or sys.executable
    cache = DiscoveryCache(cache_dir, python)
    stamps = _interpreter_stamps(python)
    data = cache.answer(stamps)
    if data is None:
        data = _query_interpreter(python)
    env = Environment(str(data["executable"]), str(data["version"]), list(data["site_dirs"]))
    owner: dict[str, str] = {}
    for where, why in data.get("broken", []):
        log.warning("%s: skipped, its RECORD or METADATA cannot be read (%s)", where, why)
    for dist in data["distributions"]:
        env.distributions[dist["name"]] = list(dist["top_level"])
        for f in dist["files"]:
            if is_elf_candidate(os.path.basename(f)):
                owner[real_path(f)] = dist["name"]
    seen: set[str] = set()
    for site_dir in env.site_dirs:
        for path in _walk_so(site_dir, cache):
            real = real_path(path)
            if real in seen:
                continue
            seen.add(real)
            env.candidates.append(Candidate(os.path.abspath(path), owner.get(real)))
    # Files a RECORD lists outside the site dirs (``../../../lib/libiomp5.so``) are part of
    # their distribution too.
    for real, dist in sorted(owner.items()):
        if real not in seen and os.path.isfile(real):
            seen.add(real)
            env.candidates.append(Candidate(real, dist))
    cache.store(stamps, data)
    return env


_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-[^-]+)?-[^-]+-[^-]+-[^-]+\.whl$")


def wheel_distribution(path: str) -> str:
    """The distribution name from a wheel file name (``numpy-2.1.0-cp311-...whl`` -> numpy)."""
    match = _WHEEL_NAME.match(os.path.basename(path))
    if not match:
        raise UsageError(f"{path}: not a wheel file name (expected name-version-tags.whl)")
    return match.group("name")


def wheel_candidates(path: str) -> list[Candidate]:
    """The ``.so`` members of the wheel at ``path`` as ``/abs/x.whl!/member`` candidates."""
    dist = wheel_distribution(path)
    wheel = os.path.abspath(path)
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise UsageError(
            f"{path}: cannot read the wheel ({exc}); is it a complete .whl file?"
        ) from exc
    members = sorted(n for n in names if is_elf_candidate(os.path.basename(n)))
    return [Candidate(wheel + WHEEL_SEP + m, dist) for m in members]


def path_candidates(paths: list[str] | tuple[str, ...]) -> list[Candidate]:
    """Candidates of positional paths: directories (walked), ``.whl`` files, single files."""
    out: list[Candidate] = []
    for path in paths:
        if path.endswith(".whl") and os.path.isfile(path):
            out += wheel_candidates(path)
        elif os.path.isdir(path):
            out += [Candidate(os.path.abspath(p), None) for p in _walk_so(path)]
        elif os.path.isfile(path):
            out.append(Candidate(os.path.abspath(path), None))
        else:
            raise UsageError(
                f"{path}: no such file or directory; give a directory, a .whl file or an ELF file"
            )
    return out
