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
import ctypes
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
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import IO, Any

import psutil

from pytest_runtimeconflict import families
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox import hung
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
PR_SET_CHILD_SUBREAPER = 36
# Exercise probes a spec may ask for beyond the families' own (implemented in child.py and
# forked.py): a fork after an OpenMP parallel region; a fork after the steps that runs them
# again in the forked child; the steps again in a spawned interpreter (its counter-experiment).
EXTRA_PROBES = ("fork-after-parallel", "fork-after-workload", "spawn-after-workload")
# Variables the intermediate process must not act on itself: renamed for it, restored for
# the child (a preload that cannot load is the child's outcome, not the intermediate's).
_SHIM_RENAMED = ("LD_PRELOAD", "LD_DEBUG", "LD_DEBUG_OUTPUT")
_SHIM_PREFIX = "PYTEST_RUNTIMECONFLICT_SHIM_"
CHILD_PID_FILE = "child.pid"
# The child's parent is this small intermediate, not the tool: a step that signals its
# parent (os.kill(os.getppid(), SIGKILL)) hits it, never the tool. It forwards the signals
# the tool sends (SIGUSR1 for the stack dump), waits, and ends the way the child ended (same
# exit code, or the same signal with core dumps off for itself), so the tool sees the
# child's own status. Standard library only, Python 3.8+. A memory limit (RLIMIT_DATA: private
# writable memory, what allocations use; address space that is only reserved, as GPU runtimes
# and sanitizers do, is not counted) is set in the forked child only, never in the tool.
_SHIM_MEMORY_LIMIT = _SHIM_PREFIX + "MEMORY_LIMIT"
SHIM = f"""
import os, resource, signal, sys
env = dict(os.environ)
for key in {_SHIM_RENAMED!r}:
    value = env.pop({_SHIM_PREFIX!r} + key, None)
    if value is not None:
        env[key] = value
limit = env.pop({_SHIM_MEMORY_LIMIT!r}, None)
pid = os.fork()
if pid == 0:
    try:
        if limit is not None:
            hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
            value = int(limit) if hard == resource.RLIM_INFINITY else min(int(limit), hard)
            resource.setrlimit(resource.RLIMIT_DATA, (value, value))
        os.execve(sys.argv[1], sys.argv[1:], env)
    finally:
        os._exit(127)
with open({CHILD_PID_FILE!r}, "w") as fh:
    fh.write(str(pid))
def forward(signum, frame):
    try:
        os.kill(pid, signum)
    except OSError:
        pass
for name in ("SIGUSR1", "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT"):
    signal.signal(getattr(signal, name), forward)
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status):
    number = os.WTERMSIG(status)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if number not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
    os._exit(128 + number)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
"""


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
    if spec.memory_limit is not None and spec.memory_limit <= 0:
        raise UsageError(f"invalid memory limit {spec.memory_limit!r}: expected bytes > 0")
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
_by_purpose: Counter[str] = Counter()  # the same, by what they were started for
_purpose: ContextVar[str] = ContextVar("rc_purpose", default="plan items")
PURPOSES = (
    "plan items",
    "owner checks",
    "minimisation",
    "binding traces",
    "counter-experiments",
    "load-mode reduction",
    "fork probes",
)


def children_started() -> int:
    """How many child interpreters this process has started so far (a count callers take
    differences of: the child runs one plan item cost, diagnosis and re-runs included)."""
    return _started


def children_by_purpose(since: dict[str, int] | None = None) -> dict[str, int]:
    """The child interpreters this process started, by purpose (one of :data:`PURPOSES`:
    what the caller said with :func:`purpose` around the run; ``plan items`` otherwise);
    with ``since`` (an earlier return value), those started since then."""
    before = since or {}
    return {k: n - before.get(k, 0) for k, n in _by_purpose.items() if n - before.get(k, 0)}


@contextlib.contextmanager
def purpose(name: str) -> Iterator[None]:
    """Count the child runs started inside the block as ``name``; the outermost purpose wins
    (an owner check that minimises a prefix counts as an owner check)."""
    outer = _purpose.get()
    token = _purpose.set(name if outer == "plan items" else outer)
    try:
        yield
    finally:
        _purpose.reset(token)


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
    argv = [python, "-I", "-S", "-c", SHIM, python, CHILD_SCRIPT, spec_path]
    proc = _launch(argv, run_dir, env, spec.memory_limit)
    readers = [_TailReader(proc.stdout), _TailReader(proc.stderr)]  # type: ignore[arg-type]
    for reader in readers:
        reader.start()
    timed_out, seen = False, hung.Hung()
    watch = hung.TreeWatch(run_dir, CHILD_PID_FILE)
    try:
        progress_file = os.path.join(run_dir, "progress.jsonl")
        wait_child(proc, spec.timeout, progress_file, spec.steps, watch.stalled)
    except subprocess.TimeoutExpired:
        timed_out = True
        _dump_python_stacks(proc, fault_path)
        seen = hung.examine(hung.child_pid(run_dir, CHILD_PID_FILE))
    finally:
        orphaned = _orphaned_child(proc, run_dir)
        kill_tree(proc)
        kill_marked(env[RUN_MARKER], started_at)
        kill_adopted(started_at)
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
        stderr=orphaned + readers[1].text(),
        events=read_progress(os.path.join(run_dir, "progress.jsonl")),
        fault_text=_read_tail(fault_path),
        stalled=watch.window if watch.fired else 0.0,
        forked=seen.records,
        threads=seen.threads,
        mapped=seen.mapped,
    )


def _launch(
    argv: list[str], run_dir: str, env: dict[str, str], memory_limit: int | None
) -> subprocess.Popen[bytes]:
    """Start (and count) one child: the intermediate, in its own session, in ``run_dir``."""
    global _started
    _started += 1
    _by_purpose[_purpose.get()] += 1
    _become_subreaper()
    return subprocess.Popen(
        argv,
        cwd=run_dir,
        env=_shim_environment(env, memory_limit),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # one process group: the whole tree can be killed
    )


def _shim_environment(env: dict[str, str], memory_limit: int | None = None) -> dict[str, str]:
    """``env`` with the loader's variables renamed (the intermediate restores them) and the
    child's memory limit (the intermediate sets it in the child and drops the variable)."""
    shim = {k: v for k, v in env.items() if k not in _SHIM_RENAMED}
    shim.update({_SHIM_PREFIX + k: env[k] for k in _SHIM_RENAMED if k in env})
    if memory_limit is not None:
        shim[_SHIM_MEMORY_LIMIT] = str(memory_limit)
    return shim


def _orphaned_child(proc: subprocess.Popen[bytes], run_dir: str) -> str:
    """A note when the intermediate died by a signal while the child still ran (a step
    signalled its parent): the child is killed with its group, and the run says why."""
    if proc.poll() is None or proc.returncode >= 0:
        return ""
    pid = hung.child_pid(run_dir, CHILD_PID_FILE)
    try:
        if pid is None or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return ""
    except psutil.Error:
        return ""
    name = signal.Signals(-proc.returncode).name
    return (
        f"[pytest-runtimeconflict] the child's parent process was killed by {name} while "
        "the child still ran (a step signalled its parent, os.getppid()); the child was "
        "killed\n"
    )


_SUBREAPER = False


def _become_subreaper() -> None:
    """Make this process the subreaper of its descendants (``PR_SET_CHILD_SUBREAPER``): a
    daemon a step starts that leaves the session and drops the run's marker is re-parented
    here instead of to init, so :func:`kill_adopted` still finds it."""
    global _SUBREAPER
    if _SUBREAPER:
        return
    _SUBREAPER = True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.debug("PR_SET_CHILD_SUBREAPER failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        log.debug("PR_SET_CHILD_SUBREAPER unavailable: %s", exc)


def kill_adopted(since: float) -> None:
    """SIGKILL and reap the processes this process adopted as subreaper during a run: its
    descendants started after ``since`` (a run's daemons, whatever their environment).
    Repeated while new ones appear, so a process that keeps re-forking is caught too."""
    me = psutil.Process()
    for _ in range(50):
        found = []
        for proc in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.create_time() >= since:
                    proc.kill()
                    found.append(proc)
        if not found:
            return
        psutil.wait_procs(found, timeout=5)


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


# ---------------------------------------------------------------- termination signals

TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (CI cancellation, ``timeout``, a closed terminal), raised in the main
    thread as Ctrl-C's ``KeyboardInterrupt`` is: every cleanup that runs for Ctrl-C (children
    killed, run folders removed, the partial report written) runs for it too."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (143 for SIGTERM, 129 for SIGHUP)."""
        return 128 + self.signum


def _raise_terminated(signum: int, frame: Any) -> None:
    for number in TERMINATION_SIGNALS:  # a second signal must not cut the cleanup short
        with contextlib.suppress(ValueError, OSError):
            signal.signal(number, signal.SIG_IGN)
    raise Terminated(signum)


def handle_termination() -> dict[int, Any]:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` (main thread only; a signal the
    process was started with ignored, like ``nohup``'s SIGHUP, stays ignored). Returns the
    previous handlers for :func:`restore_handlers`."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for number in TERMINATION_SIGNALS:
        current = signal.getsignal(number)
        if current in (signal.SIG_DFL, None):
            previous[number] = current
            signal.signal(number, _raise_terminated)
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    """Put back the handlers :func:`handle_termination` replaced."""
    for number, handler in previous.items():
        with contextlib.suppress(ValueError, OSError, TypeError):
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
