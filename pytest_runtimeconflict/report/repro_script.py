"""The fixed part of every exported reproducer: the text of this module after its marker line
is copied into each script after its one data literal ``SPEC`` (and the probes of
``repro_exercise.py``). Everything that differs between conflicts (steps, load mode,
environment, probes, the expected outcome) is read from ``SPEC``; nothing of the environment
is ever pasted into code. Standard library only, Python 3.8 syntax (type comments).

``python repro.py`` runs as a supervisor: it prints what it expects, runs the script again as
``repro.py --in-process`` in a fresh interpreter with the run's environment (``LD_PRELOAD``
and the variables the run set; without the variables the sandbox scrubs because they hide
conflicts; marker variable ``RC_REPRO_REEXEC`` set), in its own process group, with a
deadline, and compares what happened with the expected outcome. It prints one line on stdout,
``[repro] reproduced: SIGSEGV`` or ``[repro] not reproduced: passed``, and exits 1 when the
conflict reproduced, 0 when it did not, 2 when it could not start the run (a line says why).

``--in-process`` runs the conflict in this process (for gdb or a debugger): it re-executes
itself once with the run's environment when the marker variable is not set, ``dlopen``s the
preloads with their mode, runs each step as the sandbox's child does (an import step with
``RTLD_GLOBAL | RTLD_NOW`` when the run imported it globally), then the probes. Its exit
status: the crash's own signal; 1 when a step raised (traceback on stderr); 4 when a fork
probe's child hung (the OpenMP probe's, or the steps run again after a fork); 5 when a latent run's copies are mapped at once; 0 when all ran.
"""

# ruff: noqa: I001
from __future__ import annotations

from pytest_runtimeconflict.report.repro_exercise import (
    ForkHang,
    fork_and_wait,
    run_probe,
    say_probe,
)

# ---- copied into reproducers from here on ----
import contextlib  # noqa: E402
import faulthandler  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

IN_PROCESS = "--in-process"
EXIT_NOT_REPRODUCED, EXIT_REPRODUCED, EXIT_CANNOT_RUN = 0, 1, 2
EXIT_RAISED, EXIT_FORK_HANG, EXIT_LATENT = 1, 4, 5
RAISED = "[repro] raised: "
STACK_DUMP_WAIT = 1.0


def prepared_environment(spec):  # type: (dict) -> dict
    """This environment without the variables that hide conflicts, plus the run's own."""
    kept = set(spec["kept_python"])
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in spec["scrubbed"] and not (k.startswith("PYTHON") and k not in kept)
    }
    env.update(spec["environment"])
    env[spec["marker"]] = "1"
    return env


def preload_all(spec):  # type: (dict) -> None
    if not spec["preload"]:
        return
    import ctypes

    mode = ctypes.RTLD_LOCAL if spec["preload_mode"] == "local" else ctypes.RTLD_GLOBAL
    for index, lib in enumerate(spec["preload"]):
        say_probe(f"preload {index}: ctypes.CDLL({lib!r}, mode={spec['preload_mode']})")
        try:
            ctypes.CDLL(lib, mode=mode)
        except BaseException as exc:
            report_raised("preload", index, exc)
            raise


def run_step(step, index, namespace):  # type: (dict, int, dict) -> None
    """An import of a dotted name (binding its top-level package), with RTLD_GLOBAL | RTLD_NOW
    and the interpreter's flags restored afterwards when the run imported it globally; any
    other step compiled and run as a statement in the steps' namespace."""
    module = step["module"]
    if module is None:
        exec(compile(step["code"], f"<step {index}>", "exec"), namespace)
        return
    flags = sys.getdlopenflags()
    if step["global"]:
        sys.setdlopenflags(os.RTLD_GLOBAL | os.RTLD_NOW)
    try:
        namespace[module.split(".")[0]] = __import__(module)
    finally:
        sys.setdlopenflags(flags)


def report_raised(where, index, exc):  # type: (str, int, BaseException) -> None
    first = (str(exc).strip().splitlines() or [""])[0]
    line = {"where": where, "index": index, "type": type(exc).__name__, "message": first}
    sys.stderr.write(RAISED + json.dumps(line) + "\n")
    sys.stderr.flush()


def run_steps(spec):  # type: (dict) -> None
    namespace = {"__name__": "__rc_steps__"}  # type: dict
    steps = spec["steps"]
    for index, step in enumerate(steps):
        say_probe(f"step {index} of {len(steps)}: {step['shown']}")
        try:
            run_step(step, index, namespace)
        except BaseException as exc:
            traceback.print_exc()
            report_raised("step", index, exc)
            raise


def mapped_copies(spec):  # type: (dict) -> list
    """Which of a latent run's copies are mapped in this process now."""
    with open("/proc/self/maps") as maps:
        rows = [line.split(None, 5) for line in maps]
    mapped = {os.path.realpath(row[5].strip()) for row in rows if len(row) == 6}
    return [p for p in spec["expected"]["copies"] if os.path.realpath(p) in mapped]


FORK_STEPS, FORK_STEPS_CAP = "fork-after-workload", 30.0


def probe_fork_steps(spec, elapsed, cpu):  # type: (dict, float, float) -> str
    """Fork after the steps and run them again in the forked child, which must end within
    the fork deadline plus twice the steps' time (at most ``FORK_STEPS_CAP`` s) and not sit
    without progress for 2 s plus twice what the steps waited (``elapsed`` less their CPU
    time ``cpu``), as the sandbox's fork-after-workload probe does."""
    deadline = min(spec["fork_deadline"] + 2 * elapsed, FORK_STEPS_CAP)
    stall = 2.0 + 2 * max(0.0, elapsed - cpu)
    what = "the forked child running the steps again"
    fork_and_wait(lambda: run_steps(spec), deadline, 3, what, stall)
    return "the steps ran again in a forked child: ok"


def run_here(spec):  # type: (dict) -> int
    """Run the conflict in this process (see the module text for the exit status)."""
    if spec["marker"] not in os.environ:
        # The loader reads LD_PRELOAD at start: re-execute once with the run's environment.
        os.execve(sys.executable, [sys.executable] + sys.argv, prepared_environment(spec))
    sys.path[0] = os.getcwd()  # as in the sandbox: the directory it is run from comes first
    faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)
    began, cpu = time.monotonic(), time.process_time()
    try:
        preload_all(spec)
        run_steps(spec)
    except BaseException:
        return EXIT_RAISED
    elapsed, cpu = time.monotonic() - began, time.process_time() - cpu
    for kind, path in spec["probes"]:
        say_probe(f"calling into the {kind} runtime {path}")
        try:
            if kind == FORK_STEPS:
                say_probe(probe_fork_steps(spec, elapsed, cpu))
                continue
            say_probe(run_probe(kind, path, spec["fork_deadline"]))
        except ForkHang as exc:
            say_probe("hang: " + str(exc))
            return EXIT_FORK_HANG
    if spec["expected"]["outcome"] == "latent":
        found = mapped_copies(spec)
        say_probe("mapped at once: " + (", ".join(found) or "none of them"))
        return EXIT_LATENT if len(found) > 1 else 0
    say_probe("every step ran")
    return 0


class Inner:
    """The in-process run as the supervisor sees it: its stderr is passed through, and the
    line it wrote when a step raised kept."""

    def __init__(self, proc):  # type: (subprocess.Popen) -> None
        self.proc = proc
        self.raised = None  # type: object
        self.reader = threading.Thread(target=self.relay, daemon=True)
        self.reader.start()

    def relay(self):  # type: () -> None
        out = getattr(sys.stderr, "buffer", None)
        for raw in iter(self.proc.stderr.readline, b""):  # type: ignore[union-attr]
            if raw.startswith(RAISED.encode()):
                with contextlib.suppress(ValueError):
                    self.raised = json.loads(raw[len(RAISED) :].decode("utf-8", "replace"))
            if out is not None:
                out.write(raw)
                out.flush()


def wait_for(inner, deadline):  # type: (Inner, float) -> bool
    """Wait up to ``deadline`` seconds; on timeout dump every thread's Python stack (SIGUSR1,
    faulthandler) and kill the whole process group. True when it timed out."""
    proc = inner.proc
    try:
        proc.wait(timeout=deadline)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        say_probe(f"no end after {deadline:g} s: every thread's stack, then killed")
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(STACK_DUMP_WAIT)
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)  # what the run left behind, forked children too
    proc.wait()
    inner.reader.join(timeout=5)
    return timed_out


def observed_outcome(returncode, timed_out, raised):  # type: (int, bool, object) -> str
    """``SIGSEGV``, ``hang``, ``latent``, ``passed`` or ``exit N: Type: message``."""
    if timed_out or returncode == EXIT_FORK_HANG:
        return "hang"
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    if returncode == EXIT_LATENT:
        return "latent"
    if returncode == 0:
        return "passed"
    if returncode == EXIT_RAISED and isinstance(raised, dict):
        text = f"{raised.get('type')}: {raised.get('message')}"
        return f"exit {returncode}: {one_line(text)}"
    return f"exit {returncode}"


def one_line(text):  # type: (str) -> str
    """``text`` on one printable line (control characters and line separators escaped)."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)[:300]


def reproduces(expected, observed, raised):  # type: (dict, str, object) -> bool
    """Whether the observed outcome is the run's: the same signal; a hang; copies mapped at
    once; the same exception type raised at the same step (or preload), or the same exit
    status."""
    outcome = expected["outcome"]
    if outcome == "crashed":
        return observed == expected["signal"]
    if outcome == "hung":
        return observed == "hang"
    if outcome == "latent":
        return observed == "latent"
    if outcome != "failed" or not observed.startswith("exit "):
        return False
    if expected["exception_type"]:
        return (
            isinstance(raised, dict)
            and raised.get("type") == expected["exception_type"]
            and raised.get("where") == expected["phase"]
            and expected["failed_step"] in (None, raised.get("index"))
        )
    return observed == f"exit {expected['returncode']}"


def supervise(spec, script):  # type: (dict, str) -> int
    say_probe("expected: " + spec["expected"]["text"])
    try:
        proc = subprocess.Popen(
            [sys.executable, script, IN_PROCESS],
            env=prepared_environment(spec),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # one process group: everything it starts can be killed
        )
    except (OSError, ValueError) as exc:  # e.g. a NUL byte in an environment value
        say_probe("cannot start the run: " + one_line(str(exc)))
        return EXIT_CANNOT_RUN
    inner = Inner(proc)
    timed_out = wait_for(inner, spec["deadline"])
    observed = observed_outcome(proc.returncode, timed_out, inner.raised)
    sys.stderr.flush()
    if reproduces(spec["expected"], observed, inner.raised):
        print("[repro] reproduced: " + observed)
        return EXIT_REPRODUCED
    print("[repro] not reproduced: " + observed)
    return EXIT_NOT_REPRODUCED


def main(spec, argv):  # type: (dict, list) -> int
    if IN_PROCESS in argv[1:]:
        return run_here(spec)
    return supervise(spec, os.path.abspath(argv[0]))
