"""``python -m pytest_runtimeconflict scan``: every native runtime of an environment and the
static conflicts between them.

Data flow: discover (distributions, ELF candidates) -> :func:`describe_paths` (facts, cached,
classified) -> loader model (closures per extension) -> rules -> report (table, JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pytest_runtimeconflict.discover import (
    WHEEL_SEP,
    Candidate,
    discover_environment,
    path_candidates,
)
from pytest_runtimeconflict.elffacts import read_elf_facts, read_wheel_member_facts
from pytest_runtimeconflict.errors import ElfReadError, UsageError
from pytest_runtimeconflict.factcache import FactsCache, default_cache_dir, resolve_cache_dir
from pytest_runtimeconflict.families import RuntimeKind, classify
from pytest_runtimeconflict.model import SEVERITIES, ElfFacts, Finding

log = logging.getLogger(__name__)

SCHEMA = "pytest-runtimeconflict/scan/1"


@dataclass(frozen=True)
class ObjectInfo:
    """One ELF object of the scan: its facts, owner, runtime kind, and whether it is a
    Python extension module (defines ``PyInit_*``)."""

    facts: ElfFacts
    distribution: str | None
    kind: RuntimeKind | None
    is_extension: bool

    @property
    def path(self) -> str:
        return self.facts.path

    def to_json(self) -> dict[str, Any]:
        f = self.facts
        return {
            "path": f.path,
            "distribution": self.distribution,
            "soname": f.soname,
            "needed": list(f.needed),
            "runpath": list(f.runpath),
            "rpath": list(f.rpath),
            "family": self.kind.family if self.kind else None,
            "runtime": self.kind.runtime if self.kind else None,
            "static_libstdcxx": _static_libstdcxx(f, self.kind),
            "is_extension": self.is_extension,
            "static_tls": f.static_tls,
            "tls_size": f.tls_size,
        }


def _static_libstdcxx(facts: ElfFacts, kind: RuntimeKind | None) -> str | None:
    """``"exported"``, ``"hidden"`` or None."""
    from pytest_runtimeconflict.rules import exports_libstdcxx

    if kind is None or kind.family != "libstdc++":
        if exports_libstdcxx(facts):
            return "exported"
        if facts.static_libstdcxx_hidden:
            return "hidden"
    return None


@dataclass
class ScanResult:
    """What a scan found: objects, findings, skipped files (path, reason), distributions."""

    objects: list[ObjectInfo]
    findings: list[Finding]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    distributions: dict[str, list[str]] = field(default_factory=dict)
    python: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "python": self.python,
            "objects": [o.to_json() for o in self.objects],
            "findings": [f.to_json() for f in self.findings],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "distributions": self.distributions,
            "seconds": round(self.seconds, 3),
        }


# --- facts cache -------------------------------------------------------------------------


def cache_dir() -> str | None:
    """The user-level facts cache directory (see :func:`factcache.default_cache_dir`)."""
    root = default_cache_dir()
    return str(root) if root is not None else None


class FactsReader:
    """Reads (and caches) facts of plain files and of wheel members (``x.whl!/member``).

    ``cache`` is the persistent :class:`FactsCache` (default: the user-level one); call
    :meth:`close` to write its new entries."""

    def __init__(self, cache: FactsCache | None = None) -> None:
        self._memo: dict[str, ElfFacts | None] = {}
        self._zips: dict[str, zipfile.ZipFile] = {}
        self.errors: dict[str, str] = {}
        self.cache = cache if cache is not None else FactsCache(resolve_cache_dir(None))

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()
        self.cache.flush()

    def __call__(self, path: str) -> ElfFacts | None:
        """Facts of ``path`` or None (missing, not ELF: the reason is kept in ``errors``)."""
        if path not in self._memo:
            try:
                self._memo[path] = self.read(path)
            except ElfReadError as exc:
                self.errors[path] = str(exc)
                self._memo[path] = None
        return self._memo[path]

    def read(self, path: str) -> ElfFacts | None:
        """Facts of ``path``; None when it does not exist; ElfReadError when not ELF."""
        if WHEEL_SEP in path:
            return self._read_member(path)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        directory, name = os.path.split(os.path.abspath(path))
        facts = self.cache.get(directory, name, st)
        if facts is None or facts.path != path:
            facts = read_elf_facts(path)
            self.cache.put(directory, name, st, facts)
        return facts

    def _read_member(self, path: str) -> ElfFacts | None:
        wheel, member = path.split(WHEEL_SEP, 1)
        try:
            st = os.stat(wheel)
            zf = self._zips.get(wheel) or self._zips.setdefault(wheel, zipfile.ZipFile(wheel))
            info = zf.getinfo(member)
        except (OSError, KeyError, zipfile.BadZipFile):
            return None
        container = os.path.abspath(wheel)
        facts = self.cache.get(container, member, st)
        if facts is None or facts.path != path:
            facts = read_wheel_member_facts(zf, wheel, info, path)
            self.cache.put(container, member, st, facts)
        return facts


def _is_extension(facts: ElfFacts) -> bool:
    return any(s.startswith("PyInit_") for s in facts.defined_symbols)


def info_of(facts: ElfFacts, distribution: str | None) -> ObjectInfo:
    """Classify ``facts`` into an :class:`ObjectInfo`."""
    return ObjectInfo(facts, distribution, classify(facts), _is_extension(facts))


def describe_paths(
    paths: Iterable[str],
    dist_of: Mapping[str, str] | None = None,
    *,
    reader: FactsReader | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> list[ObjectInfo]:
    """Facts + runtime kind of each ELF file in ``paths`` (plain or ``x.whl!/member``).

    Non-ELF, corrupt and missing files are skipped with a logged warning (and appended to
    ``skipped`` as ``(path, reason)`` when given). ``dist_of`` maps paths to distributions.
    """
    own = reader is None
    reader = reader or FactsReader()
    dist_of = dist_of or {}
    out: list[ObjectInfo] = []
    try:
        for path in paths:
            facts = reader(path)
            if facts is None:
                reason = reader.errors.get(path) or f"{path}: no such file; skipped"
                log.warning("%s", reason)
                if skipped is not None:
                    skipped.append((path, reason))
                continue
            out.append(info_of(facts, dist_of.get(path)))
    finally:
        if own:
            reader.close()
    return out


# --- the scan -----------------------------------------------------------------------------


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
    ``RC_FACTS_CACHE=0`` disables caching either way."""
    from pytest_runtimeconflict.loader import LoaderModel
    from pytest_runtimeconflict.rules import compute_reach, evaluate

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
        findings = evaluate(objects, loader, reach=reach)
        objects += _reached_outside(reach.reached_by, known, reader)
    finally:
        reader.close()
    return ScanResult(
        objects=objects,
        findings=findings,
        skipped=skipped,
        distributions=distributions,
        python=executable,
        seconds=time.perf_counter() - started,
    )


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


# --- output -------------------------------------------------------------------------------


def render_text(result: ScanResult, out: TextIO) -> None:
    """Human output: runtimes per distribution, then findings."""
    rows = [o for o in result.objects if o.kind or _static_libstdcxx(o.facts, o.kind)]
    out.write(f"Native runtimes ({result.python or 'paths only'}):\n")
    if not rows:
        out.write("  none found\n")
    by_dist: dict[str, list[ObjectInfo]] = {}
    for obj in rows:
        by_dist.setdefault(obj.distribution or "(no distribution)", []).append(obj)
    width = max((len(d) for d in by_dist), default=0)
    for dist in sorted(by_dist):
        for obj in sorted(by_dist[dist], key=lambda o: o.path):
            what = f"{obj.kind.family}/{obj.kind.runtime}" if obj.kind else "-"
            static = _static_libstdcxx(obj.facts, obj.kind)
            if static:
                what += f" static-libstdc++={static}"
            out.write(f"  {dist:<{width}}  {what:<24} {obj.path}\n")
    out.write(f"\nFindings: {len(result.findings)}\n")
    for f in result.findings:
        out.write(f"\n[{f.severity}] {f.rule} ({f.family}): {f.title}\n")
        out.write(f"  {f.detail}\n")
        out.write(f"  distributions: {', '.join(f.distributions) or '-'}\n")
        out.write(f"  advice: {f.advice}\n")
    if result.skipped:
        out.write(f"\nSkipped {len(result.skipped)} file(s) that are not readable ELF objects.\n")
    out.write(f"\n{len(result.objects)} objects scanned in {result.seconds:.2f}s\n")


def exit_code(findings: Iterable[Finding], fail_on: str) -> int:
    """1 when a finding reaches ``fail_on`` severity, else 0."""
    threshold = SEVERITIES.index(fail_on)
    return int(any(SEVERITIES.index(f.severity) >= threshold for f in findings))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scan``."""
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="directories or .whl files to scan as well"
    )
    parser.add_argument(
        "--python",
        metavar="EXE",
        help="scan this interpreter's environment (default: the running one)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write the result as JSON to FILE ('-' for stdout)"
    )
    parser.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        default="error",
        help="exit 1 when a finding of this severity or worse exists (default: error)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the scan; exit 0 (nothing reaches --fail-on), 1 (something does), 2 (bad input)."""
    if args.fail_on not in SEVERITIES:
        raise UsageError(
            f"invalid --fail-on {args.fail_on!r}: expected one of {', '.join(SEVERITIES)}"
        )
    result = scan_environment(args.python, tuple(args.paths))
    if args.json == "-":
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_text(result, sys.stdout)
        if args.json:
            try:
                with open(args.json, "w") as fh:
                    json.dump(result.to_json(), fh, indent=2)
            except OSError as exc:
                raise UsageError(f"--json {args.json}: cannot write ({exc.strerror})") from exc
    return exit_code(result.findings, args.fail_on)
