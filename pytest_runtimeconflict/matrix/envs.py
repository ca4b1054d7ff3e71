"""One virtual environment per pairing (the candidate wheels plus one partner), cached by
content and reused by the next run.

The cache key hashes what the environment is made of: each candidate's file content (or its
requirement string), the partner's requirement, the interpreter (real path and version) and the
installer's options. The environment records the versions it resolved (``name==version`` of
every distribution, read with ``importlib.metadata`` in the environment) in
``matrix-env.json``, written last; the next run reuses it when that file exists and the
environment still holds exactly those versions, and rebuilds it otherwise (or with
``--refresh``, to pick up new releases of an unpinned partner).

Environments are made with ``uv`` when it is on PATH, otherwise with ``python -m venv`` and
pip (the running interpreter's pip pointed at the new environment with ``pip --python``, so the
environment needs no pip of its own).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_runtimeconflict.errors import RuntimeConflictError, UsageError
from pytest_runtimeconflict.files.locking import file_lock
from pytest_runtimeconflict.matrix.catalogue import distribution_name
from pytest_runtimeconflict.static.discover import wheel_distribution

MANIFEST = "matrix-env.json"
INSTALL_TIMEOUT = 3600.0
_FREEZE = (
    "import importlib.metadata as m, json, re\n"
    "print(json.dumps({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): d.version "
    "for d in m.distributions() if d.metadata['Name']}))"
)


class PairingError(RuntimeConflictError):
    """A pairing's environment could not be built (the installer's message)."""


@dataclass(frozen=True)
class Installer:
    """How pairings are installed: the interpreter of the environments, the package sources
    (passed to pip or uv as given), where environments are cached, and whether to rebuild."""

    python: str
    cache_dir: Path
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    index_url: str | None = None
    refresh: bool = False
    uv: str | None = field(default_factory=lambda: shutil.which("uv"))

    def source_options(self) -> list[str]:
        """``--find-links``, ``--no-index`` and ``--index-url`` as pip and uv spell them."""
        options = [f"--find-links={d}" for d in self.find_links]
        options += ["--no-index"] if self.no_index else []
        options += [f"--index-url={self.index_url}"] if self.index_url else []
        return options


@dataclass(frozen=True)
class Candidate:
    """The wheel under test: ``spec`` as given, ``target`` what is installed (an absolute
    wheel path or a requirement), ``digest`` its content hash, ``name`` its distribution."""

    spec: str
    target: str
    digest: str
    name: str


def candidate_of(spec: str) -> Candidate:
    """A wheel file (hashed by content) or a requirement string; UsageError for a missing
    wheel file."""
    if spec.endswith(".whl"):
        path = Path(spec)
        if not path.is_file():
            raise UsageError(
                f"candidate {spec!r}: no such wheel file; give a built wheel or a requirement"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        name = distribution_name(wheel_distribution(str(path)))
        return Candidate(spec, str(path.resolve()), digest, name)
    return Candidate(spec, spec, hashlib.sha256(spec.encode()).hexdigest(), distribution_name(spec))


@dataclass(frozen=True)
class PairEnv:
    """A built (or reused) environment: its interpreter and resolved versions."""

    python: str
    versions: dict[str, str]
    reused: bool
    seconds: float


@functools.cache
def interpreter_identity(python: str) -> str:
    """The interpreter's real path and full version; UsageError when it does not run."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(sys.version)"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        raise UsageError(f"invalid --python {python!r}: it does not run; give a Python") from None
    return f"{os.path.realpath(python)}\n{out.strip()}"


def env_key(candidates: Sequence[Candidate], requirement: str, installer: Installer) -> str:
    """The content key of one pairing's environment."""
    parts = {
        "candidates": sorted(c.digest for c in candidates),
        "partner": requirement,
        "interpreter": interpreter_identity(installer.python),
        "sources": installer.source_options(),
        "tool": "uv" if installer.uv else "pip",
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def ensure_env(candidates: Sequence[Candidate], requirement: str, installer: Installer) -> PairEnv:
    """The pairing's environment, reused from the cache when it still holds what it
    resolved, else built; PairingError with the installer's message when it cannot be."""
    start = time.monotonic()
    key = env_key(candidates, requirement, installer)
    where = installer.cache_dir / "envs" / key
    python = str(where / "bin" / "python")
    with file_lock(installer.cache_dir / "envs" / f"{key}.lock"):
        recorded = _recorded_versions(where)
        if recorded is not None and not installer.refresh and _versions(python) == recorded:
            return PairEnv(python, recorded, True, time.monotonic() - start)
        shutil.rmtree(where, ignore_errors=True)
        try:
            _create(where, installer)
            _install(python, [*(c.target for c in candidates), requirement], installer)
        except PairingError:
            shutil.rmtree(where, ignore_errors=True)
            raise
        versions = _versions(python) or {}
        manifest = {"key": key, "partner": requirement, "versions": versions}
        (where / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return PairEnv(python, versions, False, time.monotonic() - start)


def _recorded_versions(where: Path) -> dict[str, str] | None:
    try:
        data = json.loads((where / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    versions = data.get("versions") if isinstance(data, dict) else None
    return dict(versions) if isinstance(versions, dict) else None


def _versions(python: str) -> dict[str, str] | None:
    """Every distribution of the environment and its version (None when it does not run)."""
    try:
        out = subprocess.run(
            [python, "-c", _FREEZE], capture_output=True, text=True, check=True, timeout=120
        ).stdout
        return dict(json.loads(out))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def create_command(where: Path, installer: Installer) -> list[str]:
    """The command that makes an empty environment at ``where``."""
    if installer.uv:
        return [installer.uv, "venv", "-q", "--python", installer.python, str(where)]
    if _has_pip():
        return [installer.python, "-m", "venv", "--without-pip", str(where)]
    return [installer.python, "-m", "venv", str(where)]


def install_command(python: str, targets: Sequence[str], installer: Installer) -> list[str]:
    """The command that installs ``targets`` into the environment of ``python``."""
    sources = installer.source_options()
    if installer.uv:
        return [installer.uv, "pip", "install", "-q", "--python", python, *sources, *targets]
    pip = [sys.executable, "-m", "pip", "--python", python] if _has_pip() else [python, "-m", "pip"]
    return [*pip, "install", "-q", "--disable-pip-version-check", *sources, *targets]


def _has_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


def _create(where: Path, installer: Installer) -> None:
    where.parent.mkdir(parents=True, exist_ok=True)
    _run(create_command(where, installer), "creating the environment")


def _install(python: str, targets: Sequence[str], installer: Installer) -> None:
    _run(install_command(python, targets, installer), "installing " + " ".join(targets))


def _run(cmd: Sequence[str], what: str) -> None:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise PairingError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        raise PairingError(f"{what} failed (exit {proc.returncode}): {installer_message(proc)}")


def installer_message(proc: subprocess.CompletedProcess[str]) -> str:
    """The lines of pip's (or uv's) output that say what went wrong."""
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR:", "error:", "×", "╰─▶"))]
    return " | ".join(errors or lines[-5:]) or "no output"
