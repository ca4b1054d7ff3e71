"""Run records: what one child run is asked to do (:class:`RunSpec`) and everything it left
behind (:class:`RunResult`), built once by the sandbox."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from pytest_runtimeconflict.model.facts import Finding, ObjectInfo
from pytest_runtimeconflict.vocabulary import DEFAULT_TIMEOUT, JsonObject

REPORTED_BINDINGS = 2000  # of a traced run, in its report record (bindings_total: all)


@dataclass(frozen=True)
class RunSpec:
    """One child-interpreter run: steps in order, with optional preloads and environment.

    ``global_imports``: import steps (dotted names) that the child imports with
    ``RTLD_GLOBAL | RTLD_NOW``, restoring the interpreter's flags after each (a planned load-mode
    variant; by name, so minimisation and reordering keep it with its step). ``probes``: extra
    exercise probes beyond the families' own (``fork-after-parallel``). ``backtrace``: run gdb
    on a crash's core (the slowest part of a crashed run's post-mortem); off for the runs
    that only need the outcome (minimisation probes, counter-experiments, re-runs that only
    compare failures).
    """

    steps: tuple[str, ...]
    preload: tuple[str, ...] = ()
    preload_mode: str = "global"  # "global" (RTLD_GLOBAL) or "local" (RTLD_LOCAL)
    ld_preload: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT
    python: str = field(default_factory=lambda: sys.executable)
    exercise: bool = True
    id: str = ""
    trace_bindings: bool = False
    global_imports: tuple[str, ...] = ()
    probes: tuple[str, ...] = ()
    backtrace: bool = True
    memory_limit: int | None = None  # bytes of RLIMIT_DATA in the child; None: no limit

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "steps": list(self.steps),
            "preload": list(self.preload),
            "preload_mode": self.preload_mode,
            "ld_preload": list(self.ld_preload),
            "env": dict(self.env),
            "timeout": self.timeout,
            "python": self.python,
            "exercise": self.exercise,
            "trace_bindings": self.trace_bindings,
            "global_imports": list(self.global_imports),
            "probes": list(self.probes),
            "backtrace": self.backtrace,
            "memory_limit": self.memory_limit,
        }


@dataclass(frozen=True)
class Binding:
    """One symbol reference the loader resolved from one object to another
    (``LD_DEBUG=bindings``), kept when the two belong to different distributions."""

    referrer: str
    provider: str
    symbol: str
    kind: str  # "normal" or "unique" (STB_GNU_UNIQUE)

    def to_json(self) -> dict[str, str]:
        return {
            "referrer": self.referrer,
            "provider": self.provider,
            "symbol": self.symbol,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class MappedRuntime:
    """A runtime library mapped in a run: its file, family and implementation."""

    path: str
    family: str
    runtime: str
    distribution: str | None = None
    copy: str = ""  # what makes it a copy: its file, or its installation for layered runtimes

    def to_json(self) -> dict[str, str | None]:
        return {
            "path": self.path,
            "family": self.family,
            "runtime": self.runtime,
            "distribution": self.distribution,
            "copy": self.copy or self.path,
        }


@dataclass(frozen=True)
class EnvChange:
    """An environment variable a step set (``before`` None), changed, or removed (``after``
    None). ``view``: where the change shows: ``both`` (``os.environ`` and the C-level
    ``environ``), ``c`` (native code's ``setenv``/``unsetenv``, unseen by ``os.environ``) or
    ``python`` (``os.environ`` only)."""

    step: int
    name: str
    before: str | None
    after: str | None
    view: str = "both"

    def to_json(self) -> JsonObject:
        return {
            "step": self.step,
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "view": self.view,
        }


@dataclass(frozen=True)
class RunResult:
    """Everything one child run left behind; ``to_json()`` gives the issue's report keys.

    ``objects`` describes every mapped ELF object (facts, kind, distribution) once, so the
    diagnosis reads it instead of describing the same files again.
    """

    spec: RunSpec
    outcome: str
    signal: str | None = None
    signum: int | None = None
    returncode: int | None = None
    failed_step: int | None = None
    phase: str | None = None  # start | preload | step | exercise | exit
    message: str = ""
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    exception_type: str | None = None
    preload_libraries: tuple[str, ...] = ()
    step_libraries: tuple[tuple[str, ...], ...] = ()
    mapped: tuple[str, ...] = ()
    init_library: str | None = None
    python_traceback: str | None = None
    threads: tuple[JsonObject, ...] = ()
    crash_library: str | None = None
    gdb_backtrace: str | None = None
    core_found: bool = False
    exercised: tuple[JsonObject, ...] = ()
    loaded_runtimes: tuple[MappedRuntime, ...] = ()
    libraries: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    bindings: tuple[Binding, ...] = ()
    objects: tuple[ObjectInfo, ...] = field(default=(), compare=False, repr=False)
    env_changes: tuple[EnvChange, ...] = ()
    memory_limit_hit: bool = False  # the child ran out of its --rc-memory-limit
    # the parent's threads when the fork-after-workload probe forked: tid, comm, and (when
    # the probe failed and gdb could read them) start_routine and its library
    threads_at_fork: tuple[JsonObject, ...] = ()

    def to_json(self) -> JsonObject:
        """The report record (contract keys first, then the post-mortem extras)."""
        return {
            "id": self.spec.id,
            "steps": list(self.spec.steps),
            "preload": list(self.spec.preload),
            "env": dict(self.spec.env),
            "outcome": self.outcome,
            "signal": self.signal,
            "returncode": self.returncode,
            "failed_step": self.failed_step,
            "message": self.message,
            "duration_s": round(self.duration_s, 3),
            "stderr_tail": self.stderr_tail,
            "libraries": list(self.libraries),
            "loaded_runtimes": [r.to_json() for r in self.loaded_runtimes],
            "findings": [f.to_json() for f in self.findings],
            "signum": self.signum,
            "phase": self.phase,
            "preload_mode": self.spec.preload_mode,
            "ld_preload": list(self.spec.ld_preload),
            "python": self.spec.python,
            "exception_type": self.exception_type,
            "stdout_tail": self.stdout_tail,
            "preload_libraries": list(self.preload_libraries),
            "step_libraries": [list(s) for s in self.step_libraries],
            "mapped": list(self.mapped),
            "crash_library": self.crash_library,
            "init_library": self.init_library,
            "threads": [dict(t) for t in self.threads],
            "gdb_backtrace": self.gdb_backtrace,
            "python_traceback": self.python_traceback,
            "exercised": [dict(e) for e in self.exercised],
            "bindings": [b.to_json() for b in self.bindings[:REPORTED_BINDINGS]],
            "bindings_total": len(self.bindings),
            "global_imports": list(self.spec.global_imports),
            "probes": list(self.spec.probes),
            "env_changes": [c.to_json() for c in self.env_changes],
            "memory_limit": self.spec.memory_limit,
            "memory_limit_hit": self.memory_limit_hit,
            "threads_at_fork": [dict(t) for t in self.threads_at_fork],
        }

    def duplicated_families(self) -> tuple[str, ...]:
        """Runtime families with two or more distinct files mapped in this run."""
        return duplicated_families(self.loaded_runtimes)


def duplicated_families(runtimes: Any) -> tuple[str, ...]:
    """Families with two or more distinct copies among ``runtimes`` (records or JSON dicts):
    distinct files, except that the layers of one installation are one copy."""
    files: dict[str, set[str]] = {}
    for rt in runtimes:
        if isinstance(rt, dict):
            family, copy = rt["family"], rt.get("copy") or rt["path"]
        else:
            family, copy = rt.family, rt.copy or rt.path
        files.setdefault(str(family), set()).add(str(copy))
    return tuple(sorted(f for f, paths in files.items() if len(paths) > 1))
