"""Each candidate module imported alone in a fresh child at plan time: whether it imports, and
which files ``import module`` maps (what ``ctypes`` loads at import time too, which the loader
model cannot see).

A module that fails because another module it needs is missing (a ``ModuleNotFoundError``, or an
``ImportError`` "cannot import name", naming a module outside its own package: an optional
dependency that is not installed) cannot take part in any run, so it is not planned; the session lists it as "not
importable alone". The children run in parallel; results are cached per environment (the
interpreter and the scan's distributions and objects), except for modules no distribution
ships (the project under test changes between sessions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.vocabulary import JsonObject

log = logging.getLogger(__name__)

TIMEOUT = 120.0  # seconds one import may take before it counts as unknown (kept planned)
MAX_PARALLEL = 4
CACHE_NAME = "import-probes.json"

# Stdlib only; the last stdout line is the answer (the import may print). os._exit skips the
# imported package's atexit handlers and thread joins, which may hang or crash at exit.
_CHILD = r"""
import importlib, json, os, sys
error = None
try:
    importlib.import_module(sys.argv[1])
except BaseException as exc:
    error = {"type": type(exc).__name__, "message": str(exc)[:2000],
             "name": getattr(exc, "name", None)}
mapped = set()
try:
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                mapped.add(parts[5].replace(" (deleted)", ""))
except OSError:
    pass
sys.stdout.write("\n" + json.dumps({"error": error, "mapped": sorted(mapped)}) + "\n")
sys.stdout.flush()
os._exit(0)
"""


@dataclass(frozen=True)
class ImportProbe:
    """What ``import module`` did in a fresh child: the exception (type, message, the module
    it names) or None, and the files it mapped. ``known`` is False when the child gave no
    answer (a crash, a timeout): nothing is concluded from it."""

    module: str
    error: Mapping[str, Any] | None = None
    mapped: tuple[str, ...] = ()
    known: bool = True

    @property
    def missing_dependency(self) -> str | None:
        """The other module whose absence stops this one importing alone, else None: a
        ``ModuleNotFoundError``, or an ``ImportError`` "cannot import name", naming a module
        outside this one's package (a library that cannot load is the package's own
        failure, which the runs diagnose)."""
        err = self.error or {}
        name = str(err.get("name") or "")
        message = str(err.get("message", ""))
        wanted = err.get("type") == "ModuleNotFoundError" or (
            err.get("type") == "ImportError" and message.startswith("cannot import name")
        )
        if not name or not wanted or name.split(".")[0] == self.module.split(".")[0]:
            return None
        return name

    def error_text(self) -> str:
        """``ModuleNotFoundError: No module named 'x'``."""
        err = self.error or {}
        return f"{err.get('type', 'error')}: {err.get('message', '')}".strip()

    def to_json(self) -> JsonObject:
        return {"error": self.error, "mapped": list(self.mapped), "known": self.known}


def probe_one(python: str, module: str, timeout: float = TIMEOUT) -> ImportProbe:
    """Import ``module`` in a fresh ``python`` child."""
    try:
        proc = subprocess.run(
            [python, "-c", _CHILD, module],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        data = json.loads(proc.stdout.rstrip("\n").rsplit("\n", 1)[-1])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError) as exc:
        log.info("import probe of %s gave no answer (%s)", module, exc)
        return ImportProbe(module, known=False)
    return ImportProbe(module, data.get("error"), tuple(data.get("mapped", ())))


def probe_imports(
    python: str,
    modules: Sequence[str],
    cache_dir: Path | None = None,
    fingerprint: str = "",
    cacheable: Iterable[str] = (),
    timeout: float = TIMEOUT,
) -> dict[str, ImportProbe]:
    """:func:`probe_one` for each of ``modules`` (in parallel); those in ``cacheable`` are
    read from and written to ``cache_dir`` under ``fingerprint`` (the environment)."""
    key = hashlib.sha256(f"{os.path.realpath(python)}\0{fingerprint}".encode()).hexdigest()
    cached = _load(cache_dir, key)
    keep = set(cacheable)
    todo = [m for m in modules if m not in cached or m not in keep]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_PARALLEL, len(todo)))) as pool:
        fresh = dict(zip(todo, pool.map(lambda m: probe_one(python, m, timeout), todo)))
    out = {m: fresh.get(m) or cached[m] for m in modules}
    stored = {m: p for m, p in {**cached, **fresh}.items() if m in keep and p.known}
    if fresh and cache_dir is not None:
        _store(cache_dir, key, stored)
    return out


def _load(cache_dir: Path | None, key: str) -> dict[str, ImportProbe]:
    if cache_dir is None:
        return {}
    try:
        data = json.loads((cache_dir / CACHE_NAME).read_text())
        entries = data["probes"] if data.get("key") == key else {}
        return {
            m: ImportProbe(m, p["error"], tuple(p["mapped"]), p["known"])
            for m, p in entries.items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _store(cache_dir: Path, key: str, probes: Mapping[str, ImportProbe]) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f"{CACHE_NAME}.{os.getpid()}"
        probes_json = {m: p.to_json() for m, p in sorted(probes.items())}
        tmp.write_text(json.dumps({"key": key, "probes": probes_json}))
        os.replace(tmp, cache_dir / CACHE_NAME)
    except OSError as exc:
        log.info("import probes not cached (%s)", exc)
