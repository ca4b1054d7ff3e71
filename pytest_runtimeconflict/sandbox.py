"""Parent side of the sandbox: run one ``RunSpec`` in a fresh child interpreter.

The child (``child.py``, standard library only) runs in a private temporary directory that is
also its cwd, so a core dump (``core_pattern`` ``core``) lands there and never in the user's
directory. It reports progress as JSON lines; on a crash this module adds the post-mortem
(faulthandler text, ``LD_DEBUG=files`` log, core notes, gdb) and the simple attribution of
issue 4 (findings of the mapped set, crashing / initialising runtime). The run directory is
removed afterwards unless ``keep_run_dir`` is true.

Child environment (``child_environment``): ``os.environ`` minus
- ``SCRUBBED_VARIABLES``: variables that hide conflicts. ``KMP_DUPLICATE_LIB_OK`` silences
  OpenMP Error #15; the thread-count variables (``OMP_NUM_THREADS=1`` and friends, common in CI)
  stop OpenMP/OpenBLAS from starting worker threads, which hides thread-server collisions;
  ``LD_PRELOAD`` / ``LD_DEBUG*`` come only from the spec / the sandbox itself.
- ``PYTHON*`` variables except ``KEPT_PYTHON_VARIABLES`` (``PYTHONPATH``, ``PYTHONHOME`` and
  other path/encoding settings are kept because the target environment may need them;
  ``PYTHONMALLOC``, ``PYTHONWARNINGS``, ``PYTHONINSPECT`` ... would change what the child does),
  and pytest-cov's ``COV_CORE_*`` (it would start coverage in the child).
then ``spec.env`` on top (so any of the above can be asked for explicitly).

``LD_DEBUG=files`` is on for every run (log in the run directory): measured with
benchmarks/bench_sandbox.py its cost is within the noise (numpy + scipy.linalg: 0.79 s without,
0.91 s with it and exercising, 0.81 s bare ``python -c``), so the evidence of the first crash is
never lost to a re-run that might not reproduce it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from pytest_runtimeconflict import postmortem
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.model import Finding, RunSpec

log = logging.getLogger(__name__)

CHILD_SCRIPT = str(Path(__file__).with_name("child.py"))
TAIL_BYTES = 64 * 1024
RUN_MARKER = "PYTEST_RUNTIMECONFLICT_RUN"  # per-run id in the child environment
SCRUBBED_VARIABLES = frozenset(
    {
        "KMP_DUPLICATE_LIB_OK",
        "OMP_NUM_THREADS",
        "OMP_THREAD_LIMIT",
        "OPENBLAS_NUM_THREADS",
        "GOTO_NUM_THREADS",
        "MKL_NUM_THREADS",
        "LD_PRELOAD",
        "LD_DEBUG",
        "LD_DEBUG_OUTPUT",
    }
)
KEPT_PYTHON_VARIABLES = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONNOUSERSITE",
        "PYTHONUSERBASE",
        "PYTHONSAFEPATH",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPYCACHEPREFIX",
    }
)
LOADER_LOG_PREFIX = "ld-debug"
STACK_DUMP_WAIT = 2.0


@dataclass
class RunResult:
    """Everything one child run left behind; ``to_json()`` gives the issue's report keys."""

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
    preload_libraries: list[str] = field(default_factory=list)
    step_libraries: list[list[str]] = field(default_factory=list)
    mapped: list[str] = field(default_factory=list)
    init_library: str | None = None
    python_traceback: str | None = None
    threads: list[dict[str, Any]] = field(default_factory=list)
    crash_library: str | None = None
    gdb_backtrace: str | None = None
    core_found: bool = False
    exercised: list[dict[str, Any]] = field(default_factory=list)
    loaded_runtimes: list[dict[str, str]] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
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
            "loaded_runtimes": [dict(r) for r in self.loaded_runtimes],
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
        }


@dataclass
class _ChildRun:
    """Raw facts of one child process, before interpretation."""

    run_dir: str
    python: str
    returncode: int
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str
    events: list[dict[str, Any]]
    fault_text: str


class _TailReader(threading.Thread):
    """Drain a pipe, keeping only its last ``TAIL_BYTES`` (a chatty child cannot fill memory)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._buf = bytearray()

    def run(self) -> None:
        while True:
            chunk = self._stream.read1(65536)  # type: ignore[attr-defined]
            if not chunk:
                break
            self._buf += chunk
            if len(self._buf) > 2 * TAIL_BYTES:
                del self._buf[:-TAIL_BYTES]
        self._stream.close()

    def text(self) -> str:
        return bytes(self._buf[-TAIL_BYTES:]).decode("utf-8", "replace")


def resolve_interpreter(python: str) -> str:
    """Absolute path of the target interpreter; ``InterpreterError`` if it is not executable."""
    found = shutil.which(python) if os.sep not in python else python
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        raise InterpreterError(
            f"--python {python!r}: not an executable file; give the path of a Python "
            "interpreter (e.g. .venv/bin/python)"
        )
    return os.path.abspath(found)


def validate_spec(spec: RunSpec) -> None:
    """Reject specs the child cannot run, naming the bad field."""
    if not spec.steps:
        raise UsageError("a scenario needs at least one step (a module name or a statement)")
    if not spec.timeout > 0:
        raise UsageError(f"invalid timeout {spec.timeout!r}: expected seconds > 0")
    if spec.preload_mode not in ("global", "local"):
        raise UsageError(f"invalid preload mode {spec.preload_mode!r}: expected global or local")


def child_environment(spec: RunSpec, run_dir: str) -> dict[str, str]:
    """The child's explicit environment (see the module docstring for what is dropped)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED_VARIABLES
        and not (k.startswith("PYTHON") and k not in KEPT_PYTHON_VARIABLES)
        and not k.startswith("COV_CORE_")
    }
    env["PYTHONUNBUFFERED"] = "1"  # the stdout tail of a crashed child is then complete
    env["LD_DEBUG"] = "files"
    env["LD_DEBUG_OUTPUT"] = os.path.join(run_dir, LOADER_LOG_PREFIX)
    if spec.ld_preload:
        env["LD_PRELOAD"] = " ".join(spec.ld_preload)
    env.update(dict(spec.env))
    env[RUN_MARKER] = uuid.uuid4().hex  # finds descendants that left the process tree
    return env


def run_scenario(
    spec: RunSpec, *, workdir: str | None = None, keep_run_dir: bool = False
) -> RunResult:
    """Run ``spec`` in a fresh child interpreter and explain what happened.

    ``workdir``: where the private run directory is created (default: the system temp dir).
    ``keep_run_dir``: leave the run directory (progress, loader log, core) for inspection.
    """
    validate_spec(spec)
    python = resolve_interpreter(spec.python)
    if workdir is not None and not os.path.isdir(workdir):
        raise UsageError(f"workdir {workdir!r} is not a directory; create it or pass another")
    run_dir = tempfile.mkdtemp(prefix="rc-run-", dir=workdir)
    try:
        raw = _execute(spec, python, run_dir)
        result = assess(spec, raw)
        if result.outcome == "crashed":
            _postmortem(result, raw)
        _attribute(result)
        return result
    finally:
        if keep_run_dir:
            log.warning("run directory kept: %s", run_dir)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def _write_child_spec(spec: RunSpec, run_dir: str) -> str:
    path = os.path.join(run_dir, "spec.json")
    data = {
        "steps": list(spec.steps),
        "preload": list(spec.preload),
        "preload_mode": spec.preload_mode,
        "exercise": spec.exercise,
        "progress": os.path.join(run_dir, "progress.jsonl"),
        "faulthandler": os.path.join(run_dir, "faulthandler.txt"),
        "sys_path0": os.getcwd(),  # as `python -c` run from the user's directory would see
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return path


def _execute(spec: RunSpec, python: str, run_dir: str) -> _ChildRun:
    spec_path = _write_child_spec(spec, run_dir)
    fault_path = os.path.join(run_dir, "faulthandler.txt")
    start = time.monotonic()
    env = child_environment(spec, run_dir)
    started_at = time.time() - 1.0  # create_time has clock-tick resolution
    proc = subprocess.Popen(
        [python, CHILD_SCRIPT, spec_path],
        cwd=run_dir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # one process group: the whole tree can be killed
    )
    readers = [_TailReader(proc.stdout), _TailReader(proc.stderr)]  # type: ignore[arg-type]
    for reader in readers:
        reader.start()
    timed_out = False
    try:
        proc.wait(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _dump_python_stacks(proc, fault_path)
    finally:
        kill_tree(proc)
        kill_marked(env[RUN_MARKER], started_at)
    duration = time.monotonic() - start
    for reader in readers:
        reader.join(timeout=5)
    return _ChildRun(
        run_dir=run_dir,
        python=python,
        returncode=proc.returncode,
        timed_out=timed_out,
        duration_s=duration,
        stdout=readers[0].text(),
        stderr=readers[1].text(),
        events=read_progress(os.path.join(run_dir, "progress.jsonl")),
        fault_text=_read_tail(fault_path),
    )


def _dump_python_stacks(proc: subprocess.Popen[bytes], fault_path: str) -> None:
    """SIGUSR1 makes the child's faulthandler write every thread's stack; wait for it."""
    try:
        proc.send_signal(signal.SIGUSR1)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STACK_DUMP_WAIT
    last_size = -1
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
        size = os.path.getsize(fault_path) if os.path.exists(fault_path) else 0
        if size and size == last_size:
            return
        last_size = size


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child, its process group and every descendant, then reap them."""
    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    psutil.wait_procs(descendants, timeout=5)


def kill_marked(marker: str, since: float) -> None:
    """SIGKILL every process started after ``since`` whose environment carries ``marker``.

    A step that double-forks with ``setsid()`` leaves the child's session and is re-parented
    to init, out of reach of the process group and of ``children()``; it still inherited the
    run's marker variable. Only processes created after the run started are inspected.
    """
    for _ in range(3):
        found = []
        for candidate in psutil.process_iter(["create_time"]):
            if (candidate.info.get("create_time") or 0) < since:
                continue
            with contextlib.suppress(psutil.Error):
                if candidate.environ().get(RUN_MARKER) == marker:
                    candidate.kill()
                    found.append(candidate)
        if not found:
            return
        psutil.wait_procs(found, timeout=5)


def _read_tail(path: str, limit: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.path.getsize(path) - limit))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def read_progress(path: str) -> list[dict[str, Any]]:
    """The child's JSON-lines events; a torn last line (crash mid-write) is ignored."""
    events = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    log.debug("torn progress line ignored: %r", line[:200])
    except OSError:
        pass
    return events


@dataclass
class _Progress:
    """The child's state reconstructed from its events."""

    started: bool = False
    pid: int | None = None
    phase: str | None = None
    index: int | None = None  # step or preload index of the current phase
    exercising: tuple[str, str] | None = None  # (path, kind) being exercised
    error: dict[str, Any] | None = None
    done: bool = False
    preload_new: list[str] = field(default_factory=list)
    step_new: list[list[str]] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)
    exercised: list[dict[str, Any]] = field(default_factory=list)


def _replay(events: list[dict[str, Any]]) -> _Progress:
    state = _Progress()
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
        elif kind == "exercise":
            state.phase, state.index = "exercise", None
            _replay_exercise(state, ev)
        elif kind == "done":
            state.done, state.phase = True, "exit"
    return state


def _replay_exercise(state: _Progress, ev: dict[str, Any]) -> None:
    if ev.get("status") == "begin":
        state.exercising = (ev["path"], ev["kind"])
        state.exercised.append({"path": ev["path"], "kind": ev["kind"], "status": "running"})
        return
    state.exercising = None
    record = state.exercised[-1]
    record["status"] = ev.get("status")
    record["detail"] = ev.get("detail") or ev.get("message", "")


def _where(spec: RunSpec, state: _Progress) -> str:
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


def assess(spec: RunSpec, raw: _ChildRun) -> RunResult:
    """Turn the raw child facts into an outcome, signal, failed step and message."""
    state = _replay(raw.events)
    rc = raw.returncode
    if not state.started and not raw.timed_out and rc >= 0:
        last = raw.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise InterpreterError(
            f"--python {raw.python!r}: the interpreter exited with status {rc} before running "
            f"the sandbox script: {last[0]}; it must be Python >= 3.8"
        )
    result = RunResult(
        spec=spec,
        outcome="passed",
        returncode=rc,
        duration_s=raw.duration_s,
        stdout_tail=raw.stdout,
        stderr_tail=raw.stderr,
        preload_libraries=list(state.preload_new),
        step_libraries=state.step_new,
        mapped=list(dict.fromkeys(state.seen)),
        exercised=state.exercised,
        python_traceback=raw.fault_text.strip() or None,
    )
    result.phase = None if state.done and rc == 0 else state.phase
    if state.phase == "step" and not state.done and state.index is not None:
        result.failed_step = state.index
        while len(result.step_libraries) <= state.index:
            result.step_libraries.append([])  # the failing step never reported its mappings
    _set_outcome(result, spec, raw, state)
    return result


def _set_outcome(result: RunResult, spec: RunSpec, raw: _ChildRun, state: _Progress) -> None:
    rc, where = raw.returncode, _where(spec, state)
    if raw.timed_out:
        result.outcome = "hung"
        result.message = f"timed out after {spec.timeout:g} s {where}"
    elif rc < 0:
        result.outcome, result.signum = "crashed", -rc
        result.signal = signal_name(-rc)
        result.message = f"crashed with {result.signal} (signal {-rc}) {where}"
        if state.exercising is not None:
            state.exercised[-1]["status"] = "crashed"
    elif state.error is not None:
        result.outcome = "failed"
        result.exception_type = state.error.get("exc_type")
        result.message = state.error.get("message", "")
        if state.error.get("event") == "preload":
            result.message = f"preload {state.error.get('lib')!r} failed: {result.message}"
        result.python_traceback = state.error.get("traceback") or result.python_traceback
    elif rc != 0 or not state.done:
        result.outcome = "failed"
        result.message = f"the child exited with status {rc} {where}"


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11; ``signal 64`` for numbers without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _postmortem(result: RunResult, raw: _ChildRun) -> None:
    """Core notes, gdb and the loader log of a crashed child (core deleted afterwards)."""
    state_pid = next((e.get("pid") for e in raw.events if e.get("event") == "start"), None)
    loader = postmortem.read_loader_log(raw.run_dir, LOADER_LOG_PREFIX, state_pid)
    core_path = postmortem.find_core(raw.run_dir, state_pid)
    crash_mapped: list[str] = []
    if core_path is not None:
        result.core_found = True
        try:
            core = postmortem.read_core(core_path)
            result.threads = postmortem.describe_threads(core)
            result.crash_library = result.threads[0]["library"] if result.threads else None
            crash_mapped = [p for p in core.files() if _is_elf(p)]
            result.gdb_backtrace = postmortem.gdb_backtrace(raw.python, core_path)
        except Exception as exc:  # a truncated core must not hide the rest of the report
            log.warning("cannot read core %s: %s", core_path, exc)
        finally:
            os.unlink(core_path)
    else:
        crash_mapped = [os.path.realpath(p) for p in loader.inits if os.path.isabs(p)]
    _add_crash_mappings(result, crash_mapped)
    candidates = result.step_libraries[-1] if result.failed_step is not None else result.mapped
    result.init_library = postmortem.crashing_init(loader, result.gdb_backtrace, candidates)


def _add_crash_mappings(result: RunResult, crash_mapped: list[str]) -> None:
    """Objects mapped by the crashing step itself (its progress line never got written)."""
    known = set(result.mapped)
    fresh = [p for p in dict.fromkeys(crash_mapped) if p not in known]
    result.mapped.extend(fresh)
    if result.failed_step is not None:
        result.step_libraries[result.failed_step].extend(fresh)


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def _attribute(result: RunResult) -> None:
    """Loaded runtimes, latent duplicates, confirmed findings and the libraries to blame."""
    from pytest_runtimeconflict import scan

    objects = scan.describe_paths(result.mapped)
    result.loaded_runtimes = [
        {"path": o.facts.path, "family": o.kind.family, "runtime": o.kind.runtime}
        for o in objects
        if o.kind is not None
    ]
    duplicates = duplicate_families(result.loaded_runtimes)
    if result.outcome == "passed" and duplicates:
        result.outcome = "latent"
        result.message = "survived, but " + "; ".join(duplicates)
    if result.outcome == "passed" or result.exception_type == "ModuleNotFoundError":
        return
    result.findings = _confirmed_findings(objects, set(result.mapped))
    blamed = [lib for f in result.findings for lib in f.libraries]
    runtime_paths = {r["path"] for r in result.loaded_runtimes}
    blamed += [p for p in (result.crash_library, result.init_library) if p in runtime_paths]
    result.libraries = list(dict.fromkeys(p for p in blamed if p))


def _confirmed_findings(objects: list[Any], mapped: set[str]) -> list[Finding]:
    """Findings over the mapped set whose libraries were all mapped in this run."""
    try:
        from pytest_runtimeconflict import rules
    except ImportError as exc:  # rules.py arrives with the scan issue
        log.debug("no rules yet: %s", exc)
        return []
    return [
        f for f in rules.findings_for_mapped(objects) if all(lib in mapped for lib in f.libraries)
    ]


def duplicate_families(runtimes: list[dict[str, str]]) -> list[str]:
    """One sentence per family with two or more distinct mapped files."""
    by_family: dict[str, list[dict[str, str]]] = {}
    for record in runtimes:
        by_family.setdefault(record["family"], []).append(record)
    sentences = []
    for family, records in sorted(by_family.items()):
        paths = {os.path.realpath(r["path"]) for r in records}
        if len(paths) > 1:
            names = ", ".join(f"{r['path']} ({r['runtime']})" for r in records)
            sentences.append(f"{len(paths)} {family} runtimes were mapped at once: {names}")
    return sentences
