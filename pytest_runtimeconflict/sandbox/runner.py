"""Parent side of the sandbox: run one ``RunSpec`` in a fresh child interpreter.

The child (``child.py``, standard library only) runs in a private temporary directory that is
also its cwd, so a core dump (``core_pattern`` ``core``) lands there and never in the user's
directory. It reports progress as JSON lines; on a crash this module adds the post-mortem
(faulthandler text, ``LD_DEBUG=files`` log, core notes, gdb) and a first attribution
(findings of the mapped set, crashing / initialising runtime). The run directory is
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
from pathlib import Path
from typing import IO

import psutil

from pytest_runtimeconflict import families
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox.assess import LOADER_LOG_PREFIX, ChildRun, assess
from pytest_runtimeconflict.sandbox.progress import wait_child
from pytest_runtimeconflict.vocabulary import JsonObject

log = logging.getLogger(__name__)

CHILD_SCRIPT = str(Path(__file__).with_name("child.py"))
TAIL_BYTES = 64 * 1024
RUN_MARKER = "PYTEST_RUNTIMECONFLICT_RUN"  # per-run id in the child environment
# Variables that hide conflicts: every runtime family's thread caps and unsafe switches (from
# the family registry), OMP_THREAD_LIMIT, and the loader's own variables.
SCRUBBED_VARIABLES = (
    families.thread_variables()
    | families.unsafe_variables()
    | {"OMP_THREAD_LIMIT", "LD_PRELOAD", "LD_DEBUG", "LD_DEBUG_OUTPUT"}
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
STACK_DUMP_WAIT = 2.0
# Exercise probes a spec may ask for beyond the families' own (implemented in child.py and
# forked.py): a fork after an OpenMP parallel region; a fork after the steps that runs them
# again in the forked child; the steps again in a spawned interpreter (its counter-experiment).
EXTRA_PROBES = ("fork-after-parallel", "fork-after-workload", "spawn-after-workload")


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


_CHECKED: dict[str, str] = {}
_VERSION_CHECK = "import sys; print(sys.version_info >= (3, 8))"


def check_interpreter(python: str) -> str:
    """The absolute path of ``python`` once it is known to run as Python >= 3.8 (checked once
    per interpreter and process, before any run). A run whose child then cannot start is a
    fact about that run's load mode (an ``LD_PRELOAD`` whose dependencies are not found), not
    about the interpreter: it becomes the outcome ``could-not-start``."""
    path = resolve_interpreter(python)
    if path in _CHECKED:
        return _CHECKED[path]
    try:
        proc = subprocess.run(
            [path, "-c", _VERSION_CHECK], capture_output=True, text=True, timeout=60
        )
        answer, detail = proc.stdout.strip(), (proc.stderr.strip().splitlines() or [""])[-1]
    except (OSError, subprocess.SubprocessError) as exc:
        answer, detail = "", str(exc)
    if answer != "True":
        raise InterpreterError(
            f"--python {python!r}: the interpreter did not run the sandbox's check "
            f"(before running the sandbox script): {detail or answer or '(no output)'}; "
            "it must be Python >= 3.8"
        )
    _CHECKED[path] = path
    return path


def validate_spec(spec: RunSpec) -> None:
    """Reject specs the child cannot run, naming the bad field."""
    if not spec.steps:
        raise UsageError("a scenario needs at least one step (a module name or a statement)")
    if not spec.timeout > 0:
        raise UsageError(f"invalid timeout {spec.timeout!r}: expected seconds > 0")
    if spec.preload_mode not in ("global", "local"):
        raise UsageError(f"invalid preload mode {spec.preload_mode!r}: expected global or local")
    unknown = sorted(set(spec.probes) - set(EXTRA_PROBES))
    if unknown:
        raise UsageError(f"invalid probe {unknown[0]!r}: expected one of {', '.join(EXTRA_PROBES)}")


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
    env["LD_DEBUG"] = "files,bindings" if spec.trace_bindings else "files"
    env["LD_DEBUG_OUTPUT"] = os.path.join(run_dir, LOADER_LOG_PREFIX)
    if spec.ld_preload:
        env["LD_PRELOAD"] = " ".join(spec.ld_preload)
    env.update(dict(spec.env))
    env[RUN_MARKER] = uuid.uuid4().hex  # finds descendants that left the process tree
    return env


_started = 0  # child interpreters started by this process


def children_started() -> int:
    """How many child interpreters this process has started so far (a count callers take
    differences of: the child runs one plan item cost, diagnosis and re-runs included)."""
    return _started


def run_spec(spec: RunSpec, *, workdir: str | None = None, keep_run_dir: bool = False) -> RunResult:
    """Run ``spec`` in a fresh child interpreter and explain what happened.

    ``workdir``: where the private run directory is created (default: the system temp dir).
    ``keep_run_dir``: leave the run directory (progress, loader log, core) for inspection.
    """
    validate_spec(spec)
    python = check_interpreter(spec.python)
    if workdir is not None and not os.path.isdir(workdir):
        raise UsageError(f"workdir {workdir!r} is not a directory; create it or pass another")
    run_dir = tempfile.mkdtemp(prefix="rc-run-", dir=workdir)
    try:
        return assess(spec, _execute(spec, python, run_dir))
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
        "probes": families.probes(),
        "extra": list(spec.probes),
        "global_imports": list(spec.global_imports),
        "timeout": spec.timeout,  # the probes that fork budget their waits and gdb with it
        "progress": os.path.join(run_dir, "progress.jsonl"),
        "faulthandler": os.path.join(run_dir, "faulthandler.txt"),
        "sys_path0": os.getcwd(),  # as `python -c` run from the user's directory would see
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    return path


def _execute(spec: RunSpec, python: str, run_dir: str) -> ChildRun:
    spec_path = _write_child_spec(spec, run_dir)
    fault_path = os.path.join(run_dir, "faulthandler.txt")
    start = time.monotonic()
    env = child_environment(spec, run_dir)
    started_at = time.time() - 1.0  # create_time has clock-tick resolution
    global _started
    _started += 1
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
        wait_child(proc, spec.timeout, os.path.join(run_dir, "progress.jsonl"), spec.steps)
    except subprocess.TimeoutExpired:
        timed_out = True
        _dump_python_stacks(proc, fault_path)
    finally:
        kill_tree(proc)
        kill_marked(env[RUN_MARKER], started_at)
    duration = time.monotonic() - start
    for reader in readers:
        reader.join(timeout=5)
    return ChildRun(
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


def read_progress(path: str) -> list[JsonObject]:
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
