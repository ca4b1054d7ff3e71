"""From a finished child to a :class:`RunResult`, built once: the child's progress events
replayed into an outcome, the post-mortem of a crash (core, gdb, loader log), and the
description of every mapped object (runtime families, latent duplicates, static findings
over exactly the mapped set)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pytest_runtimeconflict.families import is_layered
from pytest_runtimeconflict.model import (
    Binding,
    Finding,
    MappedRuntime,
    ObjectInfo,
    RunResult,
    RunSpec,
    RuntimeKind,
)
from pytest_runtimeconflict.model.run import EnvChange, duplicated_families
from pytest_runtimeconflict.sandbox import postmortem
from pytest_runtimeconflict.static.objects import describe_paths
from pytest_runtimeconflict.static.records import distributions_of
from pytest_runtimeconflict.static.rules import findings_for_mapped, rule_of
from pytest_runtimeconflict.vocabulary import JsonObject, signal_name

log = logging.getLogger(__name__)

LOADER_LOG_PREFIX = "ld-debug"
# What an allocation refused by the child's RLIMIT_DATA looks like in its output: Python's
# MemoryError, C++'s std::bad_alloc, glibc/libc messages (ENOMEM's text, "out of memory"),
# and the allocation failures runtimes print before they abort.
OUT_OF_MEMORY = re.compile(
    r"MemoryError|std::bad_alloc|Cannot allocate memory|out of memory|"
    r"(?:failed|unable) to allocate|memory allocation failed",
    re.IGNORECASE,
)


@dataclass
class ChildRun:
    """Raw facts of one child process, before interpretation."""

    run_dir: str
    python: str
    returncode: int
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str
    events: list[JsonObject]
    fault_text: str
    # a timed-out run: its child's live descendants (where they wait), its threads and the
    # ELF objects it had mapped (the hanging step's too)
    stalled: float = 0.0  # seconds the run sat deadlocked on a fork before it was stopped
    forked: list[JsonObject] = field(default_factory=list)
    threads: list[JsonObject] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """The child's state reconstructed from its events."""

    started: bool = False
    pid: int | None = None
    phase: str | None = None
    index: int | None = None  # step or preload index of the current phase
    exercising: tuple[str, str] | None = None  # (path, kind) being exercised
    error: JsonObject | None = None
    done: bool = False
    preload_new: list[str] = field(default_factory=list)
    step_new: list[list[str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    exercised: list[JsonObject] = field(default_factory=list)
    env_changes: list[EnvChange] = field(default_factory=list)


def replay(events: list[JsonObject]) -> Progress:
    """The child's state reconstructed from its progress events."""
    state = Progress()
    for ev in events:
        kind, status = ev.get("event"), ev.get("status")
        state.seen.extend(ev.get("new", []))
        if kind == "start":
            state.started, state.pid, state.phase = True, ev.get("pid"), "start"
        elif kind in ("preload", "step"):
            state.phase, state.index = kind, ev.get("index")
            if status != "begin":
                target = state.preload_new if kind == "preload" else None
                if target is not None:
                    target.extend(ev.get("new", []))
                else:
                    state.step_new.append(list(ev.get("new", [])))
            if status == "error":
                state.error = ev
            if kind == "step" and status != "begin":
                state.env_changes += _env_changes(ev)
        elif kind == "exercise":
            state.phase, state.index = "exercise", None
            _replay_exercise(state, ev)
        elif kind == "done":
            state.done, state.phase = True, "exit"
    return state


def _env_changes(ev: JsonObject) -> list[EnvChange]:
    """The environment changes a finished step reported."""
    step = int(ev.get("index") or 0)
    return [
        EnvChange(step, str(c["name"]), c.get("before"), c.get("after"), c.get("view", "both"))
        for c in ev.get("env", ())
    ]


def _replay_exercise(state: Progress, ev: JsonObject) -> None:
    if ev.get("status") == "begin":
        state.exercising = (ev["path"], ev["kind"])
        state.exercised.append({"path": ev["path"], "kind": ev["kind"], "status": "running"})
        return
    state.exercising = None
    record = state.exercised[-1]
    record["status"] = ev.get("status")
    record["detail"] = ev.get("detail") or ev.get("message", "")
    for key in ("frames", "path"):  # the fork-after-workload probe: where its child waits
        if ev.get(key):
            record[key] = ev[key]


def _where(spec: RunSpec, state: Progress) -> str:
    """Human words for the phase the child was in."""
    if state.phase == "step" and state.index is not None:
        return f"in step {state.index} ({spec.steps[state.index]!r})"
    if state.phase == "preload" and state.index is not None:
        return f"while preloading {spec.preload[state.index]!r}"
    if state.phase == "exercise" and state.exercising is not None:
        path, kind = state.exercising
        return f"while exercising the {kind} runtime {path} after the steps"
    if state.phase == "exit":
        return "at interpreter exit, after every step had returned"
    return "while the interpreter was starting, before the first step"


def assess(spec: RunSpec, raw: ChildRun) -> RunResult:
    """Turn the raw child facts into the complete :class:`RunResult`."""
    state = replay(raw.events)
    if not state.started and not raw.timed_out and raw.returncode >= 0:
        return _could_not_start(spec, raw)
    step_libraries = [list(s) for s in state.step_new]
    failed_step = None
    if state.phase == "step" and not state.done and state.index is not None:
        failed_step = state.index
        while len(step_libraries) <= state.index:
            step_libraries.append([])  # the failing step never reported its mappings
    fields: dict[str, Any] = {
        "returncode": raw.returncode,
        "duration_s": raw.duration_s,
        "stdout_tail": raw.stdout,
        "stderr_tail": raw.stderr,
        "preload_libraries": tuple(state.preload_new),
        "failed_step": failed_step,
        "phase": None if state.done and raw.returncode == 0 else state.phase,
        "python_traceback": raw.fault_text.strip() or None,
    }
    fields.update(_outcome(spec, raw, state))
    fields.update(memory_limit_hit(spec, raw, fields))
    mapped = list(dict.fromkeys(state.seen))
    if fields["outcome"] == "crashed":
        fields.update(_postmortem(raw, mapped, step_libraries, failed_step, spec.backtrace))
    _add_mapped(raw.mapped, mapped, step_libraries, failed_step)
    fields["mapped"] = tuple(mapped)
    fields["step_libraries"] = tuple(tuple(s) for s in step_libraries)
    fields["exercised"] = (*state.exercised, *raw.forked)
    fields["env_changes"] = tuple(state.env_changes)
    fields["threads_at_fork"] = threads_at_fork(raw.events) or tuple(raw.threads)
    fields.update(_describe(fields))
    if spec.trace_bindings:
        fields["bindings"] = _bindings(raw, fields["objects"])
    return RunResult(spec=spec, **fields)


# Every cross-distribution binding is evidence: the one the crashing thread entered the serving
# copy through (numpy's dgemm_nn for faiss's cblas_dgemm) was number 610 of 4,114, and a
# cap that kept the first 500 and the last 1,500 dropped it. This bound only guards memory.
MAX_BINDINGS = 100_000


def _bindings(raw: ChildRun, objects: tuple[ObjectInfo, ...]) -> tuple[Binding, ...]:
    """The loader's bindings between objects of two different distributions (what
    interposition looks like: one wheel's reference served by another wheel's copy)."""
    owner = {os.path.realpath(o.path): o.distribution for o in objects}
    real: dict[str, str] = {}

    def dist(path: str) -> str | None:
        if path not in real:
            real[path] = os.path.realpath(path)
        return owner.get(real[path])

    def keep(referrer: str, provider: str) -> bool:
        a, b = dist(referrer), dist(provider)
        return a is not None and b is not None and a != b

    pid = next((e.get("pid") for e in raw.events if e.get("event") == "start"), None)
    found = postmortem.read_bindings(raw.run_dir, LOADER_LOG_PREFIX, pid, keep)
    found = found[:MAX_BINDINGS]
    return tuple(
        Binding(real.get(a, a), real.get(b, b), symbol, kind) for a, b, symbol, kind in found
    )


def _could_not_start(spec: RunSpec, raw: ChildRun) -> RunResult:
    """The interpreter (checked beforehand) did not reach the sandbox script: the loader
    refused this run's load mode (an ``LD_PRELOAD`` whose dependencies are not found)."""
    last = (raw.stderr.strip().splitlines() or ["(no output)"])[-1]
    fields: dict[str, Any] = {
        "outcome": "could-not-start",
        "message": f"the interpreter could not start with this run's settings: {last}",
    }
    fields.update(memory_limit_hit(spec, raw, fields))
    return RunResult(
        spec=spec,
        outcome=fields["outcome"],
        message=fields["message"],
        memory_limit_hit=bool(fields.get("memory_limit_hit")),
        returncode=raw.returncode,
        phase="start",
        duration_s=raw.duration_s,
        stdout_tail=raw.stdout,
        stderr_tail=raw.stderr,
    )


def memory_limit_hit(spec: RunSpec, raw: ChildRun, fields: dict[str, Any]) -> dict[str, Any]:
    """``memory_limit_hit`` and a message naming the limit when a failing run under a memory
    limit shows an allocation failure (the outcome stays what happened: failed, crashed)."""
    if spec.memory_limit is None or fields["outcome"] in ("passed", "hung"):
        return {}
    text = "\n".join((str(fields.get("exception_type") or ""), raw.stderr, raw.stdout))
    if not OUT_OF_MEMORY.search(text):
        return {}
    cause = str(fields["message"]).rstrip().rstrip(":")
    return {
        "memory_limit_hit": True,
        "message": f"hit --rc-memory-limit {format_size(spec.memory_limit)}: {cause}",
    }


def format_size(size: int) -> str:
    """``4.0 GiB``, ``200 MiB``."""
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.0f} MiB"


def _outcome(spec: RunSpec, raw: ChildRun, state: Progress) -> dict[str, Any]:
    rc, where = raw.returncode, _where(spec, state)
    if raw.timed_out and raw.stalled:
        return {
            "outcome": "hung",
            "message": (
                f"stopped after {raw.stalled:g} s without progress {where}: it waits for a "
                "process it forked, whose threads all wait on a lock or condition, and no "
                "thread of theirs runs"
            ),
        }
    if raw.timed_out:
        return {"outcome": "hung", "message": f"timed out after {spec.timeout:g} s {where}"}
    if rc < 0:
        name = signal_name(-rc)
        if state.exercising is not None:
            state.exercised[-1]["status"] = "crashed"
        return {
            "outcome": "crashed",
            "signum": -rc,
            "signal": name,
            "message": f"crashed with {name} (signal {-rc}) {where}",
        }
    if state.error is not None:
        message = state.error.get("message", "")
        if state.error.get("event") == "preload":
            message = f"preload {state.error.get('lib')!r} failed: {message}"
        out = {"outcome": "failed", "exception_type": state.error.get("exc_type")}
        out["message"] = message
        if state.error.get("traceback"):
            out["python_traceback"] = state.error["traceback"]
        return out
    if rc != 0 or not state.done:
        return {"outcome": "failed", "message": f"the child exited with status {rc} {where}"}
    hung = next((e for e in state.exercised if e.get("status") == "hung"), None)
    if hung is not None:  # the fork probe's child was killed after its deadline
        where = f"while exercising the {hung['kind']} probe on {hung['path']} after the steps"
        return {"outcome": "hung", "phase": "exercise", "message": f"{hung['detail']} ({where})"}
    broken = next(
        (
            e
            for e in state.exercised
            if e.get("kind") in _REPLAYING_PROBES and e.get("status") != "ok"
        ),
        None,
    )
    if broken is not None:  # the steps run again in a forked or spawned process failed there
        return {"outcome": "failed", "phase": "exercise", "message": str(broken["detail"])}
    return {"outcome": "passed", "message": ""}


# Probes that run the steps again in another process (child.py): their failure fails the run.
_REPLAYING_PROBES = ("fork-after-workload", "spawn-after-workload")


def threads_at_fork(events: list[JsonObject]) -> tuple[JsonObject, ...]:
    """The parent's threads when the fork-after-workload probe forked (its last ``fork``
    event: with their start routines when the probe failed and gdb could read them)."""
    last = next((e for e in reversed(events) if e.get("event") == "fork"), None)
    return tuple(dict(t) for t in (last or {}).get("threads") or ())


def _postmortem(
    raw: ChildRun,
    mapped: list[str],
    step_libraries: list[list[str]],
    failed_step: int | None,
    backtrace: bool = True,
) -> dict[str, Any]:
    """Core notes, gdb (with ``backtrace``) and the loader log of a crashed child (core
    deleted afterwards).
    Objects mapped by the crashing step itself (its progress line never got written) are
    added to ``mapped`` and to the failing step's libraries."""
    start = next((e for e in raw.events if e.get("event") == "start"), {})
    pid = start.get("pid")
    # gdb needs the executable the process ran, not a wrapper script that exec'd it
    executable = start.get("exe") or raw.python
    loader = postmortem.read_loader_log(raw.run_dir, LOADER_LOG_PREFIX, pid)
    core_path = postmortem.find_core(raw.run_dir, pid)
    out: dict[str, Any] = {}
    crash_mapped: list[str] = []
    if core_path is not None:
        out["core_found"] = True
        try:
            core = postmortem.read_core(core_path)
            threads = postmortem.describe_threads(core)
            out["threads"] = tuple(threads)
            crashing = postmortem.crashing_thread(threads)
            out["crash_library"] = crashing["library"] if crashing else None
            crash_mapped = [p for p in core.files() if postmortem.is_elf(p)]
            if backtrace:
                out["gdb_backtrace"] = postmortem.gdb_backtrace(executable, core_path)
        except Exception as exc:  # a truncated core must not hide the rest of the report
            log.warning("cannot read core %s: %s", core_path, exc)
        finally:
            os.unlink(core_path)
    else:
        crash_mapped = [os.path.realpath(p) for p in loader.inits if os.path.isabs(p)]
    _add_mapped(crash_mapped, mapped, step_libraries, failed_step)
    candidates = step_libraries[-1] if failed_step is not None else mapped
    out["init_library"] = postmortem.crashing_init(loader, out.get("gdb_backtrace"), candidates)
    return out


def _add_mapped(
    found: list[str], mapped: list[str], step_libraries: list[list[str]], failed_step: int | None
) -> None:
    """Objects mapped by the failing step itself, seen another way than its progress line
    (which never got written): added to ``mapped`` and to that step's libraries."""
    fresh = [p for p in dict.fromkeys(found) if p not in set(mapped)]
    mapped.extend(fresh)
    if failed_step is not None and failed_step < len(step_libraries):
        step_libraries[failed_step].extend(fresh)


def _describe(fields: dict[str, Any]) -> dict[str, Any]:
    """Mapped runtimes, findings confirmed by the mapped set, a latent conflict, blame."""
    paths = [p for p in fields["mapped"] if os.path.isabs(p) and os.path.isfile(p)]
    objects = describe_paths(paths, distributions_of(paths))
    runtimes = tuple(
        MappedRuntime(
            o.facts.path, o.kind.family, o.kind.runtime, o.distribution, _copy_of(o.path, o.kind)
        )
        for o in objects
        if o.kind is not None
    )
    out: dict[str, Any] = {"objects": tuple(objects), "loaded_runtimes": runtimes}
    if fields.get("exception_type") == "ModuleNotFoundError":
        return out
    findings = _confirmed_findings(objects, set(fields["mapped"]))
    latent = duplicate_sentences(runtimes) + _latent_findings(findings)
    if fields["outcome"] == "passed" and latent:
        out["outcome"], out["message"] = "latent", "survived, but " + "; ".join(latent)
    elif fields["outcome"] == "passed":
        return out
    blamed = [lib for f in findings for lib in f.libraries]
    runtime_paths = {r.path for r in runtimes}
    blamed += [
        p for p in (fields.get("crash_library"), fields.get("init_library")) if p in runtime_paths
    ]
    out["findings"] = tuple(findings)
    out["libraries"] = tuple(dict.fromkeys(blamed))
    return out


def _copy_of(path: str, kind: RuntimeKind) -> str:
    """The file, or for a layered runtime the directory of its installation."""
    if is_layered(kind):
        return f"layers:{kind.runtime}:{os.path.dirname(os.path.realpath(path))}"
    return os.path.realpath(path)


def _latent_findings(findings: list[Finding]) -> list[str]:
    """Findings whose rule makes a surviving run latent (objects that interpose or merge)."""
    out = []
    for finding in findings:
        rule = rule_of(finding.rule)
        if rule is not None and rule.marks_latent and finding.severity != "info":
            out.append(f"{finding.title} ({finding.rule})")
    return out


def _confirmed_findings(objects: list[ObjectInfo], mapped: set[str]) -> list[Finding]:
    """Findings over the mapped set whose libraries were all mapped in this run."""
    return [f for f in findings_for_mapped(objects) if all(lib in mapped for lib in f.libraries)]


def duplicate_sentences(runtimes: tuple[MappedRuntime, ...]) -> list[str]:
    """One sentence per family with two or more distinct mapped files."""
    sentences = []
    for family in duplicated_families(runtimes):
        records = [r for r in runtimes if r.family == family]
        names = ", ".join(f"{r.path} ({r.runtime})" for r in records)
        sentences.append(
            f"{len({r.copy or r.path for r in records})} {family} runtimes were mapped at once: {names}"
        )
    return sentences
