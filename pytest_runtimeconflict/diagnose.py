"""Diagnosis: from one failing run to "which libraries, why, and what avoids it".

Three stages, each a function of the previous one's output (one direction for the data):

1. :func:`minimise` - delta debugging (ddmin) over the steps, keeping their order, until the
   smallest ordered subsequence that still fails *the same way* (see :func:`failure_signature`).
2. :func:`attribute` - the evidence of the minimal run (libraries mapped by the failing step, the
   initialiser that was running, the crashing thread's library, every thread's library, the
   loaded runtime families, static findings over exactly the mapped objects) becomes a verdict:
   a rule, the libraries with their roles and distributions, a confidence.
3. :func:`plan_experiments` - counter-experiments relevant to the families involved (reverse
   order, preloads, ``LD_PRELOAD``, environment variables), each run in a child on the minimal
   sequence; those that avoid the failure become the user's advice.

Every child run goes through one :class:`_Runner`, which caches by spec and enforces the cap
(``max_runs``) shared by minimisation and experiments.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.model import Finding, RunSpec

log = logging.getLogger(__name__)

T = TypeVar("T")
RunFn = Callable[..., Any]

KINDS = ("order", "preload", "ld_preload", "env")
CONFIDENCES = ("high", "medium", "low")
# At most this many candidates of one family are preloaded (each costs two child runs).
MAX_CANDIDATES = 2

_IMPORT_STEP = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_IMPORT_STMT = re.compile(r"^import\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*$")
_EXC_TYPE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")
_VERSION_NOT_FOUND = re.compile(
    r"(?P<lib>/\S+|[\w.+-]+\.so[\w.]*): version [`'](?P<version>[^`']+)' not found"
    r"(?: \(required by (?P<by>[^)]+)\))?"
)
_OMP_ERROR = re.compile(r"OMP: Error #(\d+)")
_TERMINATE = re.compile(r"terminate called after throwing an instance of '([^']+)'")
_STATIC_TLS = re.compile(r"cannot allocate memory in static TLS block")
_UNDEFINED_SYMBOL = re.compile(r"undefined symbol: (\S+)")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_PATH = re.compile(r"(/[^\s:'\"()]+)+")
_VERSION_NUMBER = re.compile(r"^([A-Z_]+?)_?(\d+(?:\.\d+)*)$")


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class AvoidedBy:
    """One counter-experiment and what it did to the failure.

    ``avoided`` is True when the change made the failure go away (the run passed, or for a
    crash/error/hang, survived with at most a latent duplicate). ``unsafe`` marks changes that
    hide the conflict instead of removing it (``KMP_DUPLICATE_LIB_OK=TRUE``).
    """

    change: str
    kind: str
    outcome: str
    unsafe: bool = False
    avoided: bool = False
    signal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "change": self.change,
            "kind": self.kind,
            "outcome": self.outcome,
            "unsafe": self.unsafe,
            "avoided": self.avoided,
            "signal": self.signal,
        }


@dataclass(frozen=True)
class LibraryRole:
    """A library the verdict blames, where it came from and what part it plays."""

    path: str
    distribution: str | None
    family: str | None
    runtime: str | None
    role: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Experiment:
    """A planned counter-experiment: the readable change and the spec that applies it."""

    change: str
    kind: str
    spec: RunSpec
    unsafe: bool = False


@dataclass
class Diagnosis:
    """The outcome of :func:`diagnose`.

    ``experiments`` holds every counter-experiment tried, with its outcome; ``avoided_by`` the
    subset that avoided the failure (the JSON key ``avoided_by`` lists exactly those, the key
    ``experiments`` all of them).
    """

    minimal_steps: tuple[str, ...]
    minimal_result: Any
    runs_used: int
    cap_hit: bool
    experiments: list[AvoidedBy] = field(default_factory=list)
    libraries: list[LibraryRole] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    rule: str | None = None
    confidence: str = "low"
    cause: str = ""
    author_advice: str = ""
    user_advice: str = ""
    key: str = ""

    @property
    def avoided_by(self) -> list[AvoidedBy]:
        """The experiments that avoided the failure, safe ones first."""
        return sorted((e for e in self.experiments if e.avoided), key=_advice_rank)

    def verdict_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "confidence": self.confidence,
            "cause": self.cause,
            "author_advice": self.author_advice,
            "user_advice": self.user_advice,
            "key": self.key,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "minimal_steps": list(self.minimal_steps),
            "runs_used": self.runs_used,
            "cap_hit": self.cap_hit,
            "avoided_by": [e.to_json() for e in self.avoided_by],
            "experiments": [e.to_json() for e in self.experiments],
            "libraries": [lib.path for lib in self.libraries],
            "library_details": [lib.to_json() for lib in self.libraries],
            "findings": [f.to_json() for f in self.findings],
            "verdict": self.verdict_json(),
        }


# ---------------------------------------------------------------- the one entry point


def diagnose(
    spec: RunSpec,
    result: Any,
    *,
    max_runs: int = 40,
    experiments: bool = True,
    run: RunFn | None = None,
) -> Diagnosis:
    """Minimise a failing run, attribute it, and run the relevant counter-experiments.

    ``run`` runs one spec in a child (default :func:`sandbox.run_scenario`); at most
    ``max_runs`` child runs are made in all, and ``cap_hit`` says when that cap cut work short.
    """
    if run is None:
        from pytest_runtimeconflict import sandbox

        run = sandbox.run_scenario
    runner = _Runner(run, max_runs)
    runner.seed(spec, result)
    steps, minimal = minimise(spec, result, runner)
    minimal_spec = dataclasses.replace(spec, steps=steps)
    evidence = gather_evidence(minimal, result)
    verdict = attribute(evidence)
    if verdict.rule == "cxx-symbol-duplicate" and any("RTLD_GLOBAL" in s for s in steps):
        verdict.cause += (
            "; a step loads modules with RTLD_GLOBAL, so the first copy's symbols interpose on "
            "every later object"
        )
    tried: list[AvoidedBy] = []
    planned: list[Experiment] = []
    if experiments and result.outcome != "passed":
        planned = plan_experiments(minimal_spec, evidence, verdict)
        tried = run_experiments(planned, minimal, runner)
    advice = _advice(verdict, evidence, tried, experiments, bool(planned))
    return Diagnosis(
        minimal_steps=steps,
        minimal_result=minimal,
        runs_used=runner.used,
        cap_hit=runner.cap_hit,
        experiments=tried,
        libraries=verdict.libraries,
        findings=verdict.findings,
        rule=verdict.rule,
        confidence=_confidence(verdict, tried),
        cause=verdict.cause,
        author_advice=verdict.author_advice,
        user_advice=advice,
        key=verdict.key,
    )


# ---------------------------------------------------------------- running children


class CapReached(Exception):
    """The child-run budget of one diagnosis is spent."""


class _Runner:
    """Runs specs in children, once each (cached by spec), at most ``max_runs`` times."""

    def __init__(self, run: RunFn, max_runs: int) -> None:
        self.run = run
        self.max_runs = max(0, int(max_runs))
        self.used = 0
        self.cap_hit = False
        self.cache: dict[RunSpec, Any] = {}

    def seed(self, spec: RunSpec, result: Any) -> None:
        self.cache[spec] = result

    def __call__(self, spec: RunSpec) -> Any:
        if spec in self.cache:
            return self.cache[spec]
        if self.used >= self.max_runs:
            self.cap_hit = True
            raise CapReached(f"child-run cap of {self.max_runs} reached")
        self.used += 1
        log.debug("diagnosis run %d/%d: %s", self.used, self.max_runs, spec.steps)
        result = self.run(spec)
        self.cache[spec] = result
        return result


# ---------------------------------------------------------------- failure signatures


def exception_type(message: str | None) -> str | None:
    """The exception class named at the start of a failure message (``ImportError``)."""
    match = _EXC_TYPE.match(message or "")
    return match.group(1).rsplit(".", 1)[-1] if match else None


def failure_markers(text: str) -> tuple[str, ...]:
    """Mechanism-specific phrases in a child's output, as stable tokens.

    ``version `GLIBCXX_3.4.30' not found`` -> ``version:GLIBCXX_3.4.30``; ``OMP: Error #15`` ->
    ``omp-error:15``; an uncaught C++ exception's type; static TLS exhaustion.
    """
    markers: set[str] = set()
    markers.update(f"version:{m.group('version')}" for m in _VERSION_NOT_FOUND.finditer(text))
    markers.update(f"omp-error:{m.group(1)}" for m in _OMP_ERROR.finditer(text))
    markers.update(f"terminate:{m.group(1)}" for m in _TERMINATE.finditer(text))
    markers.update(f"undefined:{m.group(1)}" for m in _UNDEFINED_SYMBOL.finditer(text))
    if _STATIC_TLS.search(text):
        markers.add("static-tls")
    return tuple(sorted(markers))


def _exception_type_of(result: Any) -> str | None:
    return getattr(result, "exception_type", None) or exception_type(result.message)


def _normalised(message: str) -> str:
    """A message without the parts that vary between runs (paths, addresses)."""
    text = _HEX.sub("0x?", message or "")
    text = _PATH.sub(lambda m: os.path.basename(m.group(0)), text)
    return " ".join(text.split())[:200]


def _text_of(result: Any) -> str:
    return "\n".join(str(x) for x in (result.message or "", result.stderr_tail or ""))


def duplicated_families(result: Any) -> tuple[str, ...]:
    """Runtime families with more than one distinct library among ``loaded_runtimes``."""
    paths: dict[str, set[str]] = {}
    for entry in result.loaded_runtimes or ():
        paths.setdefault(entry["family"], set()).add(os.path.realpath(entry["path"]))
    return tuple(sorted(family for family, found in paths.items() if len(found) > 1))


def failure_signature(result: Any) -> tuple[str, ...]:
    """What "fails the same way" compares: outcome, signal or exception and key error text.

    Crashes compare the signal (and mechanism markers such as ``OMP: Error #15``); errors the
    exception type and the key text (a missing version, an undefined symbol, else the
    message without paths and addresses); hangs only the outcome; latent runs the duplicated
    runtime families.
    """
    outcome = result.outcome
    markers = failure_markers(_text_of(result))
    if outcome == "crashed":
        return (outcome, str(result.signal or result.signum), *markers)
    if outcome == "failed":
        key_text = markers or (_normalised(result.message or ""),)
        return (outcome, _exception_type_of(result) or "?", *key_text)
    if outcome == "latent":
        return (outcome, *duplicated_families(result))
    return (outcome,)


def fails_same_way(result: Any, reference: tuple[str, ...]) -> bool:
    return failure_signature(result) == reference


# ---------------------------------------------------------------- minimisation


def ddmin(items: Sequence[T], fails: Callable[[Sequence[T]], bool]) -> list[T]:
    """Zeller's delta debugging: a 1-minimal ordered subsequence of ``items`` that ``fails``.

    ``items`` itself is assumed to fail. Subsets keep the original order. If ``fails`` raises
    :class:`CapReached` the smallest failing subsequence found so far is returned.
    """
    current = list(items)
    granularity = 2
    try:
        while len(current) >= 2:
            chunks = _split(current, granularity)
            reduced = _try_chunks(chunks, fails)
            if reduced is not None:
                current, granularity = reduced, 2
                continue
            if granularity > 2:
                reduced = _try_complements(current, chunks, fails)
                if reduced is not None:
                    current, granularity = reduced, max(granularity - 1, 2)
                    continue
            if granularity >= len(current):
                break
            granularity = min(len(current), granularity * 2)
    except CapReached:
        log.info("minimisation stopped at the child-run cap; %d steps left", len(current))
    return current


def _split(items: list[T], parts: int) -> list[list[T]]:
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [c for c in chunks if c]


def _try_chunks(chunks: list[list[T]], fails: Callable[[Sequence[T]], bool]) -> list[T] | None:
    for chunk in chunks:
        if fails(chunk):
            return chunk
    return None


def _try_complements(
    current: list[T], chunks: list[list[T]], fails: Callable[[Sequence[T]], bool]
) -> list[T] | None:
    for index in range(len(chunks)):
        complement = [x for i, c in enumerate(chunks) if i != index for x in c]
        if fails(complement):
            return complement
    return None


def minimise(
    spec: RunSpec, result: Any, runner: Callable[[RunSpec], Any]
) -> tuple[tuple[str, ...], Any]:
    """The smallest ordered subsequence of ``spec.steps`` failing like ``result``, and its run.

    Steps after the one that failed never ran, so they are dropped without a run. A candidate
    that fails differently (e.g. a ``NameError`` because the import a statement needs was
    dropped) counts as "not the same failure".
    """
    steps = tuple(spec.steps)
    if result.outcome == "passed" or len(steps) == 0:
        return steps, result
    failed = result.failed_step
    indices = list(range(len(steps)))
    if isinstance(failed, int) and 0 <= failed < len(steps):
        indices = indices[: failed + 1]
    reference = failure_signature(result)

    def fails(subset: Sequence[int]) -> bool:
        candidate = dataclasses.replace(spec, steps=tuple(steps[i] for i in subset))
        return fails_same_way(runner(candidate), reference)

    if len(indices) < len(steps):
        # The truncated sequence ran identically; record it under its own spec (no child run).
        _alias(runner, dataclasses.replace(spec, steps=tuple(steps[i] for i in indices)), result)
    kept = ddmin(indices, fails)
    minimal_steps = tuple(steps[i] for i in kept)
    minimal_spec = dataclasses.replace(spec, steps=minimal_steps)
    try:
        return minimal_steps, runner(minimal_spec)
    except CapReached:
        return minimal_steps, result


def _alias(runner: Callable[[RunSpec], Any], spec: RunSpec, result: Any) -> None:
    seed = getattr(runner, "seed", None)
    if seed is not None:
        seed(spec, result)


def is_import_step(step: str) -> bool:
    """A dotted name (the sandbox imports it) or a plain ``import NAME`` statement."""
    step = step.strip()
    return bool(_IMPORT_STEP.match(step) or _IMPORT_STMT.match(step))


def reversed_imports(
    steps: Sequence[str], eligible: Iterable[int] | None = None
) -> tuple[str, ...] | None:
    """The steps with the import steps in reverse order, in the slots imports held; None if
    there are fewer than two imports (nothing to reorder). ``eligible`` limits the reordering
    to those step indices (the imports that mapped native code)."""
    allowed = set(range(len(steps))) if eligible is None else set(eligible)
    positions = [i for i, step in enumerate(steps) if is_import_step(step) and i in allowed]
    if len(positions) < 2:
        return None
    out = list(steps)
    for slot, source in zip(positions, reversed(positions)):
        out[slot] = steps[source]
    return tuple(out)


# ---------------------------------------------------------------- evidence

_FRAME_FROM = re.compile(r" from (/\S+)\s*$")
# glibc's own objects: a crash PC in abort()/raise() there says nothing about the culprit.
_LIBC_NAMES = re.compile(r"^(libc|libpthread|libdl|ld-linux[-\w]*|librt|libm)[.-]")


def crashing_thread_frames(result: Any) -> list[str]:
    """The frame lines of the crashing thread in gdb's ``thread apply all bt`` text.

    gdb lists threads highest number first; the crashing thread is the one whose LWP is the
    core's first thread (the sandbox's ``threads[0]``), else gdb's ``Thread 1``.
    """
    text = getattr(result, "gdb_backtrace", None) or ""
    blocks = re.split(r"^(?=Thread \d+ )", text, flags=re.MULTILINE)
    threads = result.threads or ()
    wanted = f"(LWP {threads[0].get('tid')})" if threads else None
    chosen = next((b for b in blocks if wanted and wanted in b.split("\n", 1)[0]), None)
    if chosen is None:
        chosen = next((b for b in blocks if b.startswith("Thread 1 ")), "")
    return [line for line in chosen.splitlines() if line.startswith("#")]


def backtrace_library(result: Any) -> str | None:
    """The innermost library outside glibc in the crashing thread's backtrace (the code that
    called ``abort()`` or faulted), e.g. an OpenMP runtime's ``__kmp_fatal``."""
    for line in crashing_thread_frames(result):
        match = _FRAME_FROM.search(line)
        if match and not _LIBC_NAMES.match(os.path.basename(match.group(1))):
            return os.path.normpath(match.group(1))
    return None


@dataclass
class Evidence:
    """What one failing run shows, with the static description of every mapped object."""

    result: Any
    outcome: str
    signal: str | None
    text: str
    markers: tuple[str, ...]
    failing_libraries: tuple[str, ...]
    init_library: str | None
    crash_library: str | None
    frame_library: str | None
    thread_libraries: dict[str, int]
    load_order: dict[str, int]
    necessary: set[str]
    objects: dict[str, Any]
    findings: list[Finding]
    runtimes: dict[str, tuple[str, str]]

    @property
    def active(self) -> set[str]:
        """Libraries the run's own evidence points at (not just "mapped")."""
        found = set(self.failing_libraries) | set(self.thread_libraries)
        found.update(p for p in (self.init_library, self.crash_library, self.frame_library) if p)
        return {os.path.realpath(p) for p in found}


def gather_evidence(result: Any, original: Any | None = None) -> Evidence:
    """Collect the evidence of ``result`` (the minimal run) and describe its mapped objects.

    ``original`` supplies nothing but a fallback when the minimal run recorded no mappings.
    """
    mapped = list(result.mapped or ()) or list(getattr(original, "mapped", None) or ())
    objects = {os.path.realpath(o.facts.path): o for o in _describe(mapped)}
    findings = _findings_for(list(objects.values()))
    runtimes = {
        os.path.realpath(e["path"]): (e["family"], e["runtime"])
        for e in (result.loaded_runtimes or ())
    }
    text = _text_of(result)
    return Evidence(
        result=result,
        outcome=result.outcome,
        signal=result.signal,
        text=text,
        markers=failure_markers(text),
        failing_libraries=tuple(_failing_step_libraries(result)),
        init_library=result.init_library,
        crash_library=result.crash_library,
        frame_library=backtrace_library(result),
        thread_libraries=_thread_counts(result.threads or ()),
        load_order=_load_order(result),
        necessary={os.path.realpath(p) for step in result.step_libraries or () for p in step},
        objects=objects,
        findings=findings,
        runtimes=runtimes,
    )


def _failing_step_libraries(result: Any) -> list[str]:
    """Libraries newly mapped by the step that failed, or the runtime being exercised when the
    failure came after the steps (the sandbox drives each loaded runtime once)."""
    per_step = list(result.step_libraries or ())
    failed = result.failed_step
    if isinstance(failed, int) and 0 <= failed < len(per_step):
        return list(per_step[failed])
    exercised = [e for e in getattr(result, "exercised", None) or () if e.get("path")]
    bad = [e["path"] for e in exercised if e.get("status") not in ("ok", "passed", "running")]
    if bad:
        return bad
    if exercised and getattr(result, "phase", None) == "exercise":
        return [exercised[-1]["path"]]
    return []


def _thread_counts(threads: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for thread in threads:
        library = thread.get("library")
        if library:
            counts[library] = counts.get(library, 0) + 1
    return counts


def _load_order(result: Any) -> dict[str, int]:
    order: dict[str, int] = {}
    for step in result.step_libraries or ():
        for path in step:
            order.setdefault(os.path.realpath(path), len(order))
    for path in result.mapped or ():
        order.setdefault(os.path.realpath(path), len(order))
    return order


def _describe(paths: Iterable[str]) -> list[Any]:
    """Facts, runtime kind and owning distribution of each ELF file among ``paths``."""
    from pytest_runtimeconflict import scan

    unique = sorted({p for p in paths if p and os.path.isabs(p) and os.path.isfile(p)})
    try:
        return list(scan.describe_paths(unique, distributions_of(unique)))
    except ElfReadError as exc:
        log.warning("cannot describe the mapped objects: %s", exc)
        return []


def _findings_for(objects: list[Any]) -> list[Finding]:
    """Static findings over exactly the co-mapped objects."""
    try:
        from pytest_runtimeconflict import rules
    except ImportError as exc:  # rules.py arrives with the scan issue
        log.debug("no rules yet: %s", exc)
        return []
    return list(rules.findings_for_mapped(objects))


_RECORDS: dict[str, dict[str, str]] = {}


def distributions_of(paths: Iterable[str]) -> dict[str, str]:
    """Owning distribution of each path, read from the ``*.dist-info/RECORD`` files of the
    site directory above it (no interpreter needed, so it works for any target venv)."""
    owners: dict[str, str] = {}
    for path in paths:
        real = os.path.realpath(path)
        for site in _site_dirs_above(real):
            owner = _record_owners(site).get(real)
            if owner:
                owners[path] = owner
                break
    return owners


def _site_dirs_above(path: str) -> list[str]:
    """Ancestors of ``path`` that hold ``*.dist-info`` directories (nearest first)."""
    found = []
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if parent in _RECORDS or _has_dist_info(parent):
            found.append(parent)
        parent = os.path.dirname(parent)
    return found


def _has_dist_info(directory: str) -> bool:
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(directory))
    except OSError:
        return False


def _record_owners(site: str) -> dict[str, str]:
    """realpath -> distribution name for every file listed in the RECORDs under ``site``."""
    if site in _RECORDS:
        return _RECORDS[site]
    owners: dict[str, str] = {}
    for entry in sorted(os.listdir(site)):
        if not entry.endswith(".dist-info"):
            continue
        name = _dist_name(os.path.join(site, entry))
        try:
            with open(os.path.join(site, entry, "RECORD"), encoding="utf-8") as fh:
                for line in fh:
                    rel = line.rsplit(",", 2)[0].strip('"')
                    if rel:
                        owners[os.path.realpath(os.path.join(site, rel))] = name
        except OSError:
            continue
    _RECORDS[site] = owners
    return owners


def _dist_name(dist_info: str) -> str:
    """The ``Name:`` of a dist-info's METADATA (falls back to the directory name)."""
    try:
        with open(os.path.join(dist_info, "METADATA"), encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("name:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    except OSError:
        pass
    return os.path.basename(dist_info).split("-")[0]


# ---------------------------------------------------------------- attribution


# Rules the diagnosis can name from a live run's evidence alone (no static finding exists for
# them); documented in docs/rules.md like the scanner's rules.
VERDICT_ONLY_RULES = ("openmp-fork-hang",)

AUTHOR_ADVICE = {
    "libstdcxx-duplicate": (
        "do not vendor libstdc++ (auditwheel keeps it external for this reason): link the "
        "shared system libstdc++.so.6 built by the oldest toolchain you target, or the "
        "manylinux devtoolset; a renamed copy loads beside every other libstdc++ and their "
        "STB_GNU_UNIQUE symbols merge"
    ),
    "openmp-fork-hang": (
        "do not call into an OpenMP runtime's thread pool in a process that will fork, or use "
        "the 'spawn'/'forkserver' start method; libgomp's pool does not survive fork (LLVM's "
        "and Intel's runtimes reinitialise in the child)"
    ),
    "libstdcxx-static-exported": (
        "link the extension with -Wl,--exclude-libs,ALL (or a version script) so the static "
        "libstdc++ it carries stays private, or link the shared libstdc++.so.6; an exported "
        "static libstdc++ merges its STB_GNU_UNIQUE symbols with every other copy in the process"
    ),
    "libstdcxx-static-hidden": (
        "prefer the shared libstdc++.so.6; a hidden static copy is private, but C++ objects "
        "(exceptions, locales, streams) must not cross into another copy's code"
    ),
    "soname-version-shadow": (
        "do not vendor an older {soname} under its plain SONAME: whichever copy loads first "
        "serves every later object; require {version} from the system, or vendor a copy that "
        "defines every version your objects need under a unique (hashed) SONAME"
    ),
    "openmp-duplicate": (
        "vendor no private copy of the OpenMP runtime (or vendor it under the SONAME the other "
        "packages use so the loader keeps one); two initialised copies of one OpenMP runtime "
        "cannot share a process"
    ),
    "openmp-mixed": (
        "build against the OpenMP implementation the other packages in the environment use "
        "(one implementation per process); libgomp and libomp/libiomp5 keep separate thread "
        "pools and state"
    ),
    "blas-duplicate": (
        "vendor a BLAS whose symbols are prefixed or suffixed (so copies cannot interpose) or "
        "depend on one shared BLAS package; every OpenBLAS copy starts its own thread server"
    ),
    "fortran-runtime-duplicate": (
        "depend on one shared libgfortran instead of vendoring a copy, or vendor it under a "
        "unique SONAME and keep its symbols out of the global scope"
    ),
    "cxx-symbol-duplicate": (
        "hide the bundled C++ library's symbols (-fvisibility=hidden, "
        "-Wl,--exclude-libs,ALL) or link the shared library both packages use; two exported "
        "copies of one C++ library violate the one-definition rule"
    ),
    "static-tls-late": (
        "build the library without initial-exec TLS (-ftls-model=global-dynamic, no "
        "DF_STATIC_TLS) so it can be loaded late"
    ),
}

CAUSE = {
    "libstdcxx-duplicate": (
        "two shared libstdc++ copies are loaded ({libs}) under different SONAMEs: their "
        "STB_GNU_UNIQUE symbols (locale facet ids) bind process-wide to the first copy, so the "
        "second copy runs on the other's tables"
    ),
    "openmp-fork-hang": (
        "the process forked after {libs} had started its thread pool; the child inherits the "
        "runtime's state but not its worker threads, so its next parallel region waits forever"
    ),
    "libstdcxx-static-exported": (
        "{exporter} exports the libstdc++ it links statically, and {other} is a second "
        "libstdc++ in the same process: their STB_GNU_UNIQUE symbols (locale facet ids) merge "
        "across copies, so one copy runs on the other's tables"
    ),
    "libstdcxx-static-hidden": (
        "{exporter} carries a private static libstdc++ while {other} is also loaded: C++ "
        "objects crossing between the two copies break"
    ),
    "soname-version-shadow": (
        "{old} was loaded first and now serves the SONAME {soname} to every later object, but "
        "{needer} needs {version}, which that copy does not define"
    ),
    "openmp-duplicate": (
        "two copies of the OpenMP runtime {runtime} ({libs}) are loaded and both initialise; "
        "OpenMP runtimes keep process-wide state and refuse (or corrupt) a second copy"
    ),
    "openmp-mixed": (
        "two OpenMP implementations ({libs}) are loaded in one process, each with its own "
        "thread pool and state"
    ),
    "blas-duplicate": (
        "two BLAS copies ({libs}) are loaded, each with its own thread server; unprefixed "
        "symbols of one can interpose on the other"
    ),
    "fortran-runtime-duplicate": "two Fortran runtimes ({libs}) are loaded in one process",
    "cxx-symbol-duplicate": (
        "{libs} export the same C++ symbols (two copies of one C++ library), so calls and "
        "static state mix between copies"
    ),
    "static-tls-late": (
        "{libs} uses initial-exec TLS (DF_STATIC_TLS) and was loaded after the static TLS "
        "surplus was used up"
    ),
}

FAMILY_OF_RULE = {
    "libstdcxx-duplicate": "libstdc++",
    "openmp-fork-hang": "openmp",
    "libstdcxx-static-exported": "libstdc++",
    "libstdcxx-static-hidden": "libstdc++",
    "openmp-duplicate": "openmp",
    "openmp-mixed": "openmp",
    "blas-duplicate": "blas",
    "fortran-runtime-duplicate": "libgfortran",
}

_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Verdict:
    """The attribution before experiments: rule, libraries, evidence score and texts."""

    rule: str | None
    libraries: list[LibraryRole]
    findings: list[Finding]
    score: int
    cause: str
    author_advice: str
    key: str
    families: tuple[str, ...]
    soname: str | None = None
    version: str | None = None
    needer: str | None = None


def attribute(evidence: Evidence) -> Verdict:
    """Choose the rule the evidence confirms best and describe the libraries it involves."""
    if evidence.outcome == "passed":
        return _verdict(evidence, None, [], [], 0)
    shadow = _version_shadow(evidence)
    if shadow is not None:
        return shadow
    forked = _fork_after_openmp(evidence)
    if forked is not None:
        return forked
    ranked = sorted(evidence.findings, key=lambda f: _finding_rank(f, evidence))
    if ranked and _finding_support(ranked[0], evidence) > 0:
        best = ranked[0]
        same = [f for f in ranked if f.rule == best.rule]
        paths = _dedupe(p for f in same for p in f.libraries)
        score = 1 + _finding_support(best, evidence)
        return _verdict(evidence, best.rule, paths, same, score)
    return _fallback(evidence, ranked)


_FORK_CALL = re.compile(r"\bfork\b|\bos\.fork|multiprocessing|ProcessPoolExecutor|popen_fork")


def _fork_after_openmp(evidence: Evidence) -> Verdict | None:
    """A hang in a run that forked while an OpenMP runtime the failure needs was mapped."""
    if evidence.outcome != "hung":
        return None
    steps = "\n".join(getattr(evidence.result.spec, "steps", ()) or ())
    traceback = getattr(evidence.result, "python_traceback", "") or ""
    if not (_FORK_CALL.search(steps) or _FORK_CALL.search(traceback)):
        return None
    openmp = sorted(
        (p for p, (family, _r) in evidence.runtimes.items()
         if family == "openmp" and p in evidence.necessary),
        key=lambda p: evidence.load_order.get(p, 1 << 30),
    )  # fmt: skip
    if not openmp:
        return None
    return _verdict(evidence, "openmp-fork-hang", openmp, [], 2)


def _finding_support(finding: Finding, evidence: Evidence) -> int:
    """How strongly the run's own evidence supports a static finding (0 = not at all)."""
    libs = {os.path.realpath(p) for p in finding.libraries}
    score = 0
    if libs & evidence.active:
        score += 1
    # Every step of a 1-minimal sequence is needed for the failure, so the libraries those
    # steps mapped are implicated; a finding whose libraries they all are fits the failure.
    if libs and libs <= evidence.necessary and evidence.outcome != "passed":
        score += 1
    if _markers_fit(finding.rule, evidence.markers):
        score += 2
    if evidence.outcome == "latent" and FAMILY_OF_RULE.get(finding.rule) in _dup_families(evidence):
        score += 1
    if evidence.outcome == "hung" and finding.rule == "blas-duplicate":
        score += 1
    return score


def _markers_fit(rule: str, markers: Sequence[str]) -> bool:
    prefixes = {
        "openmp-duplicate": ("omp-error:15",),
        "openmp-mixed": ("omp-error:",),
        "libstdcxx-static-exported": ("terminate:",),
        "libstdcxx-static-hidden": ("terminate:",),
        "libstdcxx-duplicate": ("terminate:",),
        "cxx-symbol-duplicate": ("terminate:", "undefined:"),
        "static-tls-late": ("static-tls",),
        "soname-version-shadow": ("version:",),
    }.get(rule, ())
    return any(m.startswith(p) for m in markers for p in prefixes)


def _finding_rank(finding: Finding, evidence: Evidence) -> tuple[int, int, str]:
    return (
        -_finding_support(finding, evidence),
        _SEVERITY_RANK.get(finding.severity, 3),
        finding.rule,
    )


def _dup_families(evidence: Evidence) -> set[str]:
    by_family: dict[str, set[str]] = {}
    for path, (family, _runtime) in evidence.runtimes.items():
        by_family.setdefault(family, set()).add(path)
    return {family for family, paths in by_family.items() if len(paths) > 1}


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def _version_shadow(evidence: Evidence) -> Verdict | None:
    """``version `X' not found``: the SONAME's first-loaded copy lacks a version a later
    object needs (the loader keys objects by SONAME)."""
    match = _VERSION_NOT_FOUND.search(evidence.text)
    if match is None:
        return None
    version, old, needer = match.group("version"), match.group("lib"), match.group("by")
    old_path = _resolve_mapped(evidence, old)
    soname = _soname_of(evidence, old_path) or os.path.basename(old)
    newest = newest_candidate(soname, version, evidence)
    paths = [p for p in (old_path, needer and needer.strip(), newest) if p]
    findings = [f for f in evidence.findings if f.rule == "soname-version-shadow"]
    score = 3 + (1 if findings else 0)
    verdict = _verdict(evidence, "soname-version-shadow", _dedupe(paths), findings, score)
    verdict.soname, verdict.version, verdict.needer = soname, version, needer
    roles = {old_path: f"older {soname} loaded first (lacks {version})"}
    if needer:
        roles[needer.strip()] = f"needs {version}"
    if newest:
        roles[newest] = f"newer {soname} defining {version} (not used)"
    verdict.libraries = [
        dataclasses.replace(lib, role=roles.get(lib.path, lib.role)) for lib in verdict.libraries
    ]
    verdict.cause = CAUSE["soname-version-shadow"].format(
        old=_label(old_path, evidence),
        soname=soname,
        needer=_label(needer.strip(), evidence) if needer else "a later object",
        version=version,
    )
    verdict.author_advice = AUTHOR_ADVICE["soname-version-shadow"].format(
        soname=soname, version=version
    )
    return verdict


def _resolve_mapped(evidence: Evidence, name: str) -> str:
    """A path from an error message, or the mapped object with that basename/SONAME."""
    if os.path.isabs(name):
        return name
    for path, info in evidence.objects.items():
        if os.path.basename(path) == name or info.facts.soname == name:
            return path
    return name


def _soname_of(evidence: Evidence, path: str) -> str | None:
    info = evidence.objects.get(os.path.realpath(path))
    if info is None:
        info = next(iter(_describe([path])), None)
    return info.facts.soname if info is not None else None


def _verdict(
    evidence: Evidence, rule: str | None, paths: list[str], findings: list[Finding], score: int
) -> Verdict:
    libraries = [_library(p, evidence, rule) for p in paths]
    libraries.sort(key=lambda lib: evidence.load_order.get(os.path.realpath(lib.path), 1 << 30))
    _assign_copy_roles(libraries, rule)
    families = tuple(sorted({lib.family for lib in libraries if lib.family}))
    if rule in FAMILY_OF_RULE and FAMILY_OF_RULE[rule] not in families:
        families = tuple(sorted({*families, FAMILY_OF_RULE[rule]}))
    return Verdict(
        rule=rule,
        libraries=libraries,
        findings=findings,
        score=score,
        cause=_cause(rule, libraries, evidence),
        author_advice=AUTHOR_ADVICE.get(rule or "", _GENERIC_AUTHOR_ADVICE),
        key=conflict_key(rule, [lib.path for lib in libraries], evidence),
        families=families,
    )


_GENERIC_AUTHOR_ADVICE = (
    "reproduce the minimal sequence under gdb (thread apply all bt) to see which library's "
    "code fails or waits; vendor no private copies of shared runtimes"
)


def _library(path: str, evidence: Evidence, rule: str | None) -> LibraryRole:
    real = os.path.realpath(path)
    info = evidence.objects.get(real)
    if info is None and os.path.isabs(path) and os.path.exists(path):
        info = next(iter(_describe([path])), None)
    kind = getattr(info, "kind", None)
    family, runtime = (
        (kind.family, kind.runtime)
        if kind is not None
        else evidence.runtimes.get(real, (None, None))
    )
    return LibraryRole(
        path=path,
        distribution=getattr(info, "distribution", None),
        family=family,
        runtime=runtime,
        role=_role(path, info, evidence, rule),
    )


def _role(path: str, info: Any, evidence: Evidence, rule: str | None) -> str:
    facts = getattr(info, "facts", None)
    soname = getattr(facts, "soname", None) or ""
    if rule in ("libstdcxx-static-exported", "libstdcxx-static-hidden"):
        if soname.startswith("libstdc++.so"):
            return "shared libstdc++"
        hidden = rule == "libstdcxx-static-hidden" or getattr(
            facts, "static_libstdcxx_hidden", False
        )
        return "static libstdc++ (hidden)" if hidden else "static libstdc++ exporter"
    real = os.path.realpath(path)
    if evidence.crash_library and real == os.path.realpath(evidence.crash_library):
        return "crashing thread's library"
    if evidence.init_library and real == os.path.realpath(evidence.init_library):
        return "initialiser running at the crash"
    if evidence.frame_library and real == os.path.realpath(evidence.frame_library):
        return "innermost non-libc code of the crashing thread"
    if path in evidence.failing_libraries:
        return "loaded by the failing step"
    if real in evidence.runtimes and real in evidence.necessary:
        family, runtime = evidence.runtimes[real]
        return f"{runtime} ({family}) mapped by a step the failure needs"
    return "loaded"


def _assign_copy_roles(libraries: list[LibraryRole], rule: str | None) -> None:
    """Number the copies of a duplicated runtime in load order ("first copy", "second copy")."""
    if rule not in (
        "openmp-duplicate",
        "openmp-mixed",
        "blas-duplicate",
        "fortran-runtime-duplicate",
        "libstdcxx-duplicate",
    ):
        return
    names = ("first copy", "second copy", "third copy")
    for index, lib in enumerate(libraries):
        label = names[index] if index < len(names) else f"copy {index + 1}"
        what = lib.runtime or lib.family or "runtime"
        libraries[index] = dataclasses.replace(lib, role=f"{label} of {what}")


def _label(path: str, evidence: Evidence) -> str:
    info = evidence.objects.get(os.path.realpath(path))
    dist = getattr(info, "distribution", None)
    base = os.path.basename(path)
    return f"{base} (from {dist})" if dist else base


def _cause(rule: str | None, libraries: list[LibraryRole], evidence: Evidence) -> str:
    labels = [_label(lib.path, evidence) for lib in libraries]
    if rule is None or rule not in CAUSE:
        what = _what_broke(evidence)
        if labels:
            return f"{what}; no known runtime conflict explains it (libraries involved: {', '.join(labels)})"
        return f"{what}; no known runtime conflict explains it"
    if rule == "soname-version-shadow":
        return ""  # filled in by _version_shadow, which knows the SONAME and the version
    exporters = [_label(x.path, evidence) for x in libraries if "static" in x.role]
    others = [_label(x.path, evidence) for x in libraries if "static" not in x.role]
    if rule == "libstdcxx-static-exported" and len(exporters) > 1 and not others:
        # Two static exporters and no shared copy: each is the other's second libstdc++.
        exporters, others = exporters[:1], exporters[1:]
    runtimes = sorted({x.runtime for x in libraries if x.runtime})
    return CAUSE[rule].format(
        exporter=" and ".join(exporters) or "an extension",
        other=" and ".join(others) or "another copy",
        libs=", ".join(labels) or "unknown libraries",
        runtime="/".join(runtimes) or "runtime",
    )


def _what_broke(evidence: Evidence) -> str:
    if evidence.outcome == "crashed":
        return f"the run crashed with {evidence.signal}"
    if evidence.outcome == "failed":
        return f"the run failed with {_exception_type_of(evidence.result) or 'an error'}"
    return f"the run {evidence.outcome}"


def _fallback(evidence: Evidence, ranked: list[Finding]) -> Verdict:
    """No static finding is confirmed by the run: objects the failure needs that export the
    same C++ symbols, duplicated families, or else whatever the evidence points at."""
    shared = shared_cxx_exports(evidence)
    if shared:
        first, second, symbols = shared[0]
        findings = [f for f in ranked if f.rule == "cxx-symbol-duplicate"]
        verdict = _verdict(evidence, "cxx-symbol-duplicate", [first, second], findings, 2)
        example = ", ".join(symbols[:2])
        verdict.libraries = [
            dataclasses.replace(
                lib,
                role=f"exports {len(symbols)} C++ symbols also exported by the other (e.g. {example})",
            )
            for lib in verdict.libraries
        ]
        return verdict
    dup = sorted(_dup_families(evidence))
    if dup:
        family = dup[0]
        paths = sorted(
            (p for p, (f, _r) in evidence.runtimes.items() if f == family),
            key=lambda p: evidence.load_order.get(p, 1 << 30),
        )
        runtimes = {evidence.runtimes[p][1] for p in paths}
        rule = {
            "openmp": "openmp-duplicate" if len(runtimes) == 1 else "openmp-mixed",
            "blas": "blas-duplicate",
            "libgfortran": "fortran-runtime-duplicate",
            "libstdc++": "libstdcxx-duplicate",
        }.get(family)
        findings = [f for f in ranked if f.rule == rule]
        return _verdict(evidence, rule, paths, findings, 1 + (1 if findings else 0))
    # Runtimes mapped by the steps the failure needs are the prime suspects (e.g. a hang in a
    # runtime's thread pool after fork).
    needed_runtimes = sorted(
        (p for p in evidence.runtimes if p in evidence.necessary),
        key=lambda p: evidence.load_order.get(p, 1 << 30),
    )
    paths = _dedupe(
        p
        for p in (
            evidence.frame_library,
            _unless_libc(evidence.crash_library),
            evidence.init_library,
            *evidence.failing_libraries,
            *needed_runtimes,
        )
        if p
    )
    return _verdict(evidence, None, paths[:4], [], 0)


def shared_cxx_exports(evidence: Evidence) -> list[tuple[str, str, list[str]]]:
    """Pairs of objects mapped by the necessary steps that export the same C++ symbols.

    The static rule needs many shared symbols to speak up (scans must not be noisy); here the
    minimisation has already shown both objects are needed, so any shared export counts.
    """
    needed = [
        o
        for p, o in sorted(evidence.objects.items())
        if p in evidence.necessary and o.facts.cxx_exports and o.kind is None
    ]
    pairs = []
    for index, first in enumerate(needed):
        for second in needed[index + 1 :]:
            common = sorted(set(first.facts.cxx_exports) & set(second.facts.cxx_exports))
            if common:
                pairs.append((first.facts.path, second.facts.path, common))
    pairs.sort(key=lambda pair: -len(pair[2]))
    return pairs


def _unless_libc(path: str | None) -> str | None:
    return None if not path or _LIBC_NAMES.match(os.path.basename(path)) else path


def conflict_key(rule: str | None, paths: Sequence[str], evidence: Evidence | None = None) -> str:
    """A stable identity for one conflict: the rule and the sorted library basenames.

    Independent of import order, so the same conflict found through different sequences
    de-duplicates to one entry.
    """
    names = ",".join(sorted({os.path.basename(p) for p in paths}))
    if rule is None and evidence is not None:
        rule = "unattributed-" + (
            str(evidence.signal) if evidence.outcome == "crashed" else evidence.outcome
        )
    return f"{rule or 'unattributed'}:{names}"


# ---------------------------------------------------------------- experiments


def plan_experiments(spec: RunSpec, evidence: Evidence, verdict: Verdict) -> list[Experiment]:
    """The counter-experiments relevant to the failure and the families involved.

    Always the reversed import order (when there are two imports); then preloads (global and
    ``LD_PRELOAD``) of the runtime copies involved and the environment variables that tame a
    family: ``KMP_DUPLICATE_LIB_OK=TRUE`` (unsafe), ``OMP_NUM_THREADS=1``,
    ``OPENBLAS_NUM_THREADS=1``.
    """
    planned: list[Experiment] = []
    native = [i for i, libs in enumerate(evidence.result.step_libraries or ()) if libs]
    reordered = reversed_imports(spec.steps, native)
    if reordered is None:
        reordered = reversed_imports(spec.steps)
    if reordered is not None:
        # With two exported copies of one C++ library the order only picks which copy wins.
        odr = verdict.rule == "cxx-symbol-duplicate"
        note = " (unsafe: only changes which copy's symbols win)" if odr else ""
        planned.append(
            Experiment(
                "reverse the import order: "
                + " -> ".join(
                    s
                    for i, s in enumerate(reordered)
                    if s != spec.steps[i] or i in native
                    if is_import_step(s)
                )
                + note,
                "order",
                dataclasses.replace(spec, steps=reordered),
                unsafe=odr,
            )
        )
    families = set(verdict.families)
    if verdict.rule == "soname-version-shadow" and verdict.soname:
        newest = newest_candidate(verdict.soname, verdict.version, evidence)
        planned += _preloads(spec, [newest or verdict.soname])
    elif "libstdc++" in families:
        shared = newest_candidate("libstdc++.so.6", None, evidence)
        planned += _preloads(spec, [shared or "libstdc++.so.6"])
    if "openmp" in families:
        planned += _preloads(spec, _candidates(verdict, evidence, "openmp"))
        if _intel_like(verdict, evidence):
            planned.append(_env(spec, "KMP_DUPLICATE_LIB_OK", "TRUE", unsafe=True))
        planned.append(_env(spec, "OMP_NUM_THREADS", "1"))
    if "blas" in families:
        planned.append(_env(spec, "OPENBLAS_NUM_THREADS", "1"))
        planned += _preloads(spec, _candidates(verdict, evidence, "blas"))
    for family in sorted(families - {"libstdc++", "openmp", "blas"}):
        planned += _preloads(spec, _candidates(verdict, evidence, family))
    return _unique_experiments(planned)


def _preloads(spec: RunSpec, libraries: Iterable[str]) -> list[Experiment]:
    out = []
    for lib in libraries:
        out.append(
            Experiment(
                f"preload {lib} with ctypes.CDLL(..., RTLD_GLOBAL) before the imports",
                "preload",
                dataclasses.replace(spec, preload=(lib, *spec.preload), preload_mode="global"),
            )
        )
        out.append(
            Experiment(
                f"start Python with LD_PRELOAD={lib}",
                "ld_preload",
                dataclasses.replace(spec, ld_preload=(lib, *spec.ld_preload)),
            )
        )
    return out


def _env(spec: RunSpec, name: str, value: str, *, unsafe: bool = False) -> Experiment:
    env = dict(spec.env)
    env[name] = value
    note = " (unsafe: hides the conflict instead of removing it)" if unsafe else ""
    return Experiment(
        f"set {name}={value} in the environment{note}",
        "env",
        dataclasses.replace(spec, env=tuple(sorted(env.items()))),
        unsafe=unsafe,
    )


def _unique_experiments(planned: list[Experiment]) -> list[Experiment]:
    seen: set[RunSpec] = set()
    out = []
    for experiment in planned:
        if experiment.spec not in seen:
            seen.add(experiment.spec)
            out.append(experiment)
    return out


def _candidates(verdict: Verdict, evidence: Evidence, family: str) -> list[str]:
    """Copies of ``family`` involved, in load order (the first loaded first)."""
    paths = [lib.path for lib in verdict.libraries if lib.family == family]
    paths += [p for p, (f, _r) in evidence.runtimes.items() if f == family]
    paths = _dedupe(os.path.realpath(p) for p in paths)
    paths.sort(key=lambda p: evidence.load_order.get(p, 1 << 30))
    return paths[:MAX_CANDIDATES]


def _intel_like(verdict: Verdict, evidence: Evidence) -> bool:
    """KMP_DUPLICATE_LIB_OK only means something to libomp/libiomp5 (LLVM/Intel code)."""
    runtimes = {lib.runtime for lib in verdict.libraries if lib.family == "openmp"}
    runtimes |= {r for f, r in evidence.runtimes.values() if f == "openmp"}
    return bool(runtimes & {"libomp", "libiomp5"}) or any(
        m.startswith("omp-error:") for m in evidence.markers
    )


def newest_candidate(soname: str, version: str | None, evidence: Evidence) -> str | None:
    """The copy of ``soname`` defining the highest version of its series (and ``version``,
    when given) among the mapped objects and the system's loader cache."""
    paths = [p for p, o in evidence.objects.items() if o.facts.soname == soname]
    paths += _search_path_copies(soname, evidence)
    paths += system_libraries(soname)
    infos = _describe(_dedupe(os.path.realpath(p) for p in paths))
    best: tuple[tuple[int, ...], str] | None = None
    for info in infos:
        defs = tuple(info.facts.version_defs)
        if version and version not in defs:
            continue
        rank = max((_version_tuple(v) for v in defs), default=())
        if best is None or rank > best[0]:
            best = (rank, info.facts.path)
    if best is None:
        return None
    for path in system_libraries(soname):  # name it as the user would write it
        if os.path.realpath(path) == os.path.realpath(best[1]):
            return path
    return best[1]


def _search_path_copies(soname: str, evidence: Evidence) -> list[str]:
    """Files named ``soname`` in the RUNPATH/RPATH directories of the mapped objects (and of
    the object named by a version error): where the loader would have looked for them."""
    owners = list(evidence.objects.values())
    match = _VERSION_NOT_FOUND.search(evidence.text)
    if match and match.group("by"):
        owners += _describe([match.group("by").strip()])
    found = []
    for info in owners:
        origin = os.path.dirname(info.facts.path)
        for entry in (*info.facts.runpath, *info.facts.rpath):
            directory = entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin)
            candidate = os.path.join(directory, soname)
            if os.path.isfile(candidate):
                found.append(os.path.normpath(candidate))
    return found


def _version_tuple(version: str) -> tuple[int, ...]:
    match = _VERSION_NUMBER.match(version)
    if not match:
        return ()
    return tuple(int(x) for x in match.group(2).split("."))


_LDCONFIG_CACHE: dict[str, list[str]] = {}


def system_libraries(soname: str) -> list[str]:
    """Paths the system loader cache (``ldconfig -p``) knows for ``soname``."""
    if not _LDCONFIG_CACHE:
        _LDCONFIG_CACHE.update(_read_ldconfig())
    return list(_LDCONFIG_CACHE.get(soname, ()))


def _read_ldconfig() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {"": []}
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run(
                [exe, "-p"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            match = re.match(r"^\s*(\S+)\s+\(([^)]*)\)\s+=>\s+(\S+)$", line)
            if match and ("x86-64" in match.group(2)) == ("64" in os.uname().machine):
                table.setdefault(match.group(1), []).append(match.group(3))
        break
    return table


def run_experiments(
    planned: Sequence[Experiment], reference: Any, runner: _Runner
) -> list[AvoidedBy]:
    """Run each planned experiment (until the cap) and record whether it avoided the failure."""
    tried: list[AvoidedBy] = []
    for experiment in planned:
        try:
            result = runner(experiment.spec)
        except CapReached:
            log.info("experiments stopped at the child-run cap after %d", len(tried))
            break
        tried.append(
            AvoidedBy(
                change=experiment.change,
                kind=experiment.kind,
                outcome=result.outcome,
                unsafe=experiment.unsafe,
                avoided=avoids(result, reference),
                signal=result.signal,
            )
        )
    return tried


def avoids(result: Any, reference: Any) -> bool:
    """Did a variant avoid the failure of ``reference``?

    A crash, error or hang is avoided when the variant survives (``passed``, or ``latent``:
    alive with two copies mapped); a latent duplicate only when the variant ``passed``.
    """
    if reference.outcome == "latent":
        return bool(result.outcome == "passed")
    return result.outcome in ("passed", "latent")


# ---------------------------------------------------------------- confidence and advice


def _confidence(verdict: Verdict, tried: Sequence[AvoidedBy]) -> str:
    score = verdict.score + (1 if any(e.avoided and not e.unsafe for e in tried) else 0)
    if verdict.rule is None:
        return "low"
    if score >= 3:
        return "high"
    return "medium" if score >= 2 else "low"


def _advice_rank(experiment: AvoidedBy) -> tuple[int, int]:
    return (1 if experiment.unsafe else 0, KINDS.index(experiment.kind))


def _advice(
    verdict: Verdict,
    evidence: Evidence,
    tried: Sequence[AvoidedBy],
    experimented: bool,
    planned: bool,
) -> str:
    """The user's advice: the changes that avoided the failure, safest first."""
    if evidence.outcome == "passed":
        return "nothing to do: the run passed"
    avoiding = sorted((e for e in tried if e.avoided), key=_advice_rank)
    safe = [e for e in avoiding if not e.unsafe]
    if safe:
        also = (
            f" (also avoided by: {'; '.join(e.change for e in safe[1:3])})" if len(safe) > 1 else ""
        )
        return f"{safe[0].change} - found to avoid it{also}"
    if avoiding:
        return (
            f"only an unsafe change avoided it: {avoiding[0].change}; prefer keeping these "
            "modules in separate processes until the packages are fixed"
        )
    if not experimented:
        return "counter-experiments were not run; " + _untried_hint(verdict)
    if tried and evidence.outcome == "latent":
        return (
            "no tried change removes the second copy (the process survives, but both copies "
            "run: expect oversubscribed cores and thread settings that reach only one copy); "
            "ask the packages' authors to share one runtime"
        )
    if tried:
        return (
            "none of the tried changes avoided it; keep these modules in separate processes "
            "until the packages are fixed"
        )
    if not planned:
        return "no counter-experiment applies (one import, no runtime family involved)"
    return "no counter-experiment could be run (child-run cap); " + _untried_hint(verdict)


def _untried_hint(verdict: Verdict) -> str:
    families = set(verdict.families)
    if verdict.rule == "soname-version-shadow":
        return f"try importing the module that needs {verdict.version} first"
    if "libstdc++" in families:
        return "try preloading the shared libstdc++.so.6 with ctypes.CDLL(..., RTLD_GLOBAL)"
    if "openmp" in families:
        return "try preloading one OpenMP runtime before the imports"
    if "blas" in families:
        return "try OPENBLAS_NUM_THREADS=1 or preloading one BLAS"
    return "try the reverse import order"
