"""Which distributions and which ELF candidate files an environment (or a path) holds.

The environment of an interpreter is asked in a subprocess with a standard-library-only
snippet, so ``--python EXE`` works for any Python >= 3.8 without this package installed there.
Positional paths are directories (walked) and ``.whl`` files, whose ``.so`` members are
reported as ``/abs/x.whl!/member/path`` (a virtual root, so ``$ORIGIN`` RUNPATHs between
members of one wheel resolve).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from pytest_runtimeconflict.errors import InterpreterError, UsageError

log = logging.getLogger(__name__)

WHEEL_SEP = "!/"

# Runs in the target interpreter: standard library only, Python 3.8 syntax.
_SNIPPET = r"""
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
dists = []
if metadata is not None:
    seen = set()
    for dist in metadata.distributions(path=dirs):
        name = dist.metadata["Name"]
        if not name or name.lower() in seen:
            continue
        seen.add(name.lower())
        files = [os.path.normpath(str(dist.locate_file(f))) for f in (dist.files or [])]
        top = (dist.read_text("top_level.txt") or "").split()
        if not top:
            for f in dist.files or []:
                part = str(f).split("/")[0]
                if part.endswith((".dist-info", ".data", ".libs", ".pth")) or part == "..":
                    continue
                mod = part.split(".")[0]
                if mod and mod.isidentifier() and mod not in top and mod != "__pycache__":
                    top.append(mod)
        dists.append({"name": name, "files": files, "top_level": sorted(top)})
print(json.dumps({"executable": sys.executable, "version": sys.version.split()[0],
                  "site_dirs": dirs, "distributions": dists}))
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


def _query_interpreter(python: str) -> dict[str, object]:
    if not os.path.exists(python):
        raise InterpreterError(
            f"--python {python}: no such file; give the path of a Python interpreter"
        )
    try:
        proc = subprocess.run(
            [python, "-I", "-c", _SNIPPET], capture_output=True, text=True, timeout=120
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


def _walk_so(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if is_elf_candidate(name):
                path = os.path.join(dirpath, name)
                if os.path.isfile(path):
                    yield path


def discover_environment(python: str | None = None) -> Environment:
    """Ask ``python`` (default: the running interpreter) for its environment and list every
    ELF candidate under its site dirs with the owning distribution."""
    data = _query_interpreter(python or sys.executable)
    env = Environment(str(data["executable"]), str(data["version"]), list(data["site_dirs"]))  # type: ignore[call-overload]
    owner: dict[str, str] = {}
    for dist in data["distributions"]:  # type: ignore[attr-defined]
        env.distributions[dist["name"]] = list(dist["top_level"])
        for f in dist["files"]:
            if is_elf_candidate(os.path.basename(f)):
                owner[os.path.realpath(f)] = dist["name"]
    seen: set[str] = set()
    for site_dir in env.site_dirs:
        for path in _walk_so(site_dir):
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            env.candidates.append(Candidate(os.path.abspath(path), owner.get(real)))
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
