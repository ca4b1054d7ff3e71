"""The static scan of an environment: every native runtime and the conflicts between them.

Data flow: discover (distributions, ELF candidates) -> :func:`objects.describe_paths` (facts,
cached, classified) -> loader model (closures per extension) -> rules -> :class:`ScanResult`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.model import ElfFacts, Finding, ObjectInfo
from pytest_runtimeconflict.static import interpose_cache
from pytest_runtimeconflict.static.discover import Candidate, discover_environment, path_candidates
from pytest_runtimeconflict.static.factcache import FactsCache, resolve_cache_dir
from pytest_runtimeconflict.static.loader import LoaderModel
from pytest_runtimeconflict.static.objects import FactsReader, describe_paths, info_of
from pytest_runtimeconflict.static.rules import compute_reach, evaluate
from pytest_runtimeconflict.vocabulary import SCAN_SCHEMA, JsonObject


@dataclass(frozen=True)
class ScanResult:
    """What a scan found: objects, findings, skipped files (path, reason), distributions.

    ``closures``: per extension module, the objects the loader model loads for it beyond the
    interpreter's own, as (SONAME or file name, path) in load order (the planner's input).
    """

    objects: tuple[ObjectInfo, ...]
    findings: tuple[Finding, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    distributions: Mapping[str, list[str]] = field(default_factory=dict)
    python: str | None = None
    seconds: float = 0.0
    closures: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def to_json(self) -> JsonObject:
        return {
            "schema": SCAN_SCHEMA,
            "python": self.python,
            "objects": [o.to_json() for o in self.objects],
            "findings": [f.to_json() for f in self.findings],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "distributions": dict(self.distributions),
            "seconds": round(self.seconds, 3),
        }


def _python_initial(executable: str) -> tuple[str, ...]:
    """What the interpreter loads at start: its own executable (and thereby its closure)."""
    return (os.path.realpath(executable),)


def scan_environment(
    python: str | None = None,
    paths: Sequence[str] = (),
    cache_dir: Path | str | None = None,
) -> ScanResult:
    """Scan the environment of ``python`` (default: the running interpreter) plus ``paths``
    (directories, ``.whl`` files). With ``paths`` and no ``python`` only the paths are scanned
    unless ``python`` is given explicitly.

    ``cache_dir``: where facts are cached (the pytest plugin passes a directory in pytest's
    cache); None means the user-level cache of :func:`factcache.default_cache_dir`.
    ``PYTEST_RUNTIMECONFLICT_FACTS_CACHE=0`` disables caching either way."""
    started = time.perf_counter()
    candidates: list[Candidate] = []
    distributions: dict[str, list[str]] = {}
    executable = python or sys.executable
    cache_root = resolve_cache_dir(cache_dir)
    if python is not None or not paths:
        env = discover_environment(python, cache_root)
        executable = env.executable
        candidates += env.candidates
        distributions.update(env.distributions)
    candidates += path_candidates(list(paths))
    reader = FactsReader(FactsCache(cache_root))
    skipped: list[tuple[str, str]] = []
    try:
        dist_of = {c.path: c.distribution for c in candidates if c.distribution}
        objects = describe_paths(
            [c.path for c in candidates], dist_of, reader=reader, skipped=skipped
        )
        known = {o.path: o.facts for o in objects}
        loader = LoaderModel(lambda p: known.get(p) or reader(p))
        reach = compute_reach(objects, loader, _python_initial(executable))
        with interpose_cache.persisted(cache_root, objects):
            findings = evaluate(objects, loader, reach=reach)
        objects += _reached_outside(reach.reached_by, known, reader)
        closures = _closures(reach)
    finally:
        reader.close()
    return ScanResult(
        objects=tuple(objects),
        findings=tuple(findings),
        skipped=tuple(skipped),
        distributions=distributions,
        python=executable,
        seconds=time.perf_counter() - started,
        closures=closures,
    )


def _closures(reach: Any) -> dict[str, tuple[tuple[str, str], ...]]:
    """Per extension, (SONAME or file name, path) of what it loads beyond the interpreter."""
    return {
        ext: tuple(
            (facts.soname or os.path.basename(path), path)
            for path, facts in state.loaded.items()
            if path not in reach.base
        )
        for ext, state in reach.closures.items()
    }


def _reached_outside(
    reached: Mapping[str, object], known: Mapping[str, ElfFacts], reader: FactsReader
) -> list[ObjectInfo]:
    """Runtime objects outside the scanned set that extensions load (system libstdc++...)."""
    out = []
    for path in sorted(reached):
        if path in known:
            continue
        facts = reader(path)
        if facts is not None:
            info = info_of(facts, None)
            if info.kind is not None:
                out.append(info)
    return out
