"""Reproducer export: one self-contained Python script per distinct conflict, for a bug report.

Written from report entries (the JSON of a run and its diagnosis), so the plugin's controller
can write them for runs made by any xdist worker. The script needs only the target interpreter,
never this package. It runs the minimal order with the run's load mode: it re-executes itself
once with the run's environment (``LD_PRELOAD`` and the variables the run set, without the
variables the sandbox scrubs because they hide conflicts), ``dlopen``s the preloads with their
mode, runs the steps in order (an import step as ``import``, a statement such as
``sys.setdlopenflags(...)`` as written) and, when the run failed while exercising the runtimes,
calls into them as the sandbox did. It prints what it expects before it starts, each step as it
goes, and says so when it survived (exit 0: not reproduced here). The one-line shell command
that runs it is in its first lines.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_runtimeconflict import __version__
from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.sandbox.runner import KEPT_PYTHON_VARIABLES, SCRUBBED_VARIABLES
from pytest_runtimeconflict.vocabulary import module_of_step

Entry = Mapping[str, Any]
REEXEC_MARKER = "RC_REPRO_REEXEC"
SHOWN_STEP = 120
_KEY_LINE = ("OMP: Error", "terminate called", "free():", "double free", "Fatal Python error")
_EXERCISE_SOURCE = Path(__file__).with_name("repro_exercise.py")
_BEFORE_EXERCISE = ("start", "preload", "step")
_EXERCISE_MARKER = "# ---- copied into reproducers from here on ----\n"


def conflicts(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per distinct conflict (verdict key) among diagnosed runs that did not pass,
    the one with the shortest minimal order first seen; sorted by key (deterministic)."""
    chosen: dict[str, Entry] = {}
    for entry in entries:
        key = (entry.get("verdict") or {}).get("key")
        if not key or entry.get("outcome") in (None, "passed"):
            continue
        if key not in chosen or _preference(entry) < _preference(chosen[key]):
            chosen[key] = entry
    return [chosen[key] for key in sorted(chosen)]


def _preference(entry: Entry) -> tuple[bool, int]:
    """A crash, error or hang before a latent run of the same conflict; then the shortest."""
    return entry.get("outcome") == "latent", len(_steps(entry))


def file_name(entry: Entry) -> str:
    """``<rule>-<8 hex of the conflict key>.py``: stable across runs, distinct per conflict."""
    verdict = entry.get("verdict") or {}
    rule = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(verdict.get("rule") or "unattributed"))
    key = str(verdict.get("key") or " ".join(_steps(entry)))
    return f"{rule}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.py"


def write_reproducers(directory: str | Path, entries: Iterable[Entry], option: str) -> list[Path]:
    """Write one reproducer per distinct conflict into ``directory`` (created); their paths."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create {option} {str(directory)!r}: {exc.strerror}; give a writable directory"
        ) from None
    return [write_reproducer(directory / file_name(e), e, option) for e in conflicts(entries)]


def write_reproducer(path: str | Path, entry: Entry, option: str) -> Path:
    """Write the reproducer of ``entry`` to ``path`` (made executable); ``UsageError`` naming
    ``option`` when it cannot be written."""
    from pytest_runtimeconflict.files.atomic import write_atomically

    path = Path(path)
    try:
        write_atomically(path, reproducer(entry, path.name).encode(), 0o755)
    except OSError as exc:
        raise UsageError(
            f"cannot write {option} {str(path)!r}: {exc.strerror}; check the directory"
        ) from None
    return path


def shell_command(entry: Entry, script: str) -> str:
    """The one line that runs the reproducer: its environment and the run's interpreter."""
    words = [f"{k}={_shell_quote(v)}" for k, v in sorted(_environment(entry).items())]
    python = str(entry.get("python") or "python3")
    return " ".join([*words, _shell_quote(python), _shell_quote(script)])


def expectation(entry: Entry) -> str:
    """What the reproducer should do, in words (``crash with SIGABRT (OMP: Error #15 ...)
    at step 3: zoo_iomp_a.parallel_sum(100000)``)."""
    run = minimal_run(entry)
    outcome = str(run.get("outcome"))
    where = _where(run)
    if outcome == "crashed":
        line = _key_line(str(entry.get("stderr_tail") or ""))
        return f"crash with {run.get('signal')}" + (f" ({line})" if line else "") + where
    if outcome == "failed":
        first = (str(run.get("message") or "an exception").strip().splitlines() or [""])[0]
        return f"fail with {first[:200]}{where}"
    if outcome == "hung":
        return f"hang{where}"
    if outcome == "latent":
        families = ", ".join(sorted(_duplicated(entry))) or "a runtime"
        return f"no crash, but two copies of {families} mapped at once"
    return outcome


# ---------------------------------------------------------------- the script


def reproducer(entry: Entry, name: str = "repro.py") -> str:
    """The reproducer's source for one report entry."""
    lines = _header(entry, name) + _environment_code(entry) + _preload_code(entry)
    lines += _steps_code(entry) + _exercise_code(entry) + _ending_code(entry)
    return "\n".join(lines).rstrip() + "\n"


def _header(entry: Entry, name: str) -> list[str]:
    verdict = entry.get("verdict") or {}
    conflict = "not diagnosed (the run's whole order)"
    if verdict:
        conflict = f"{verdict.get('rule') or 'unattributed'}: {verdict.get('cause') or ''}"
    advice = verdict.get("user_advice") or "(not known)"
    return [
        "#!/usr/bin/env python3",
        f"# Reproducer written by pytest-runtimeconflict {__version__}; it runs without it.",
        f"# Run:  {shell_command(entry, name)}",
        "#",
        f"# Conflict: {conflict}",
        f"# Expected: {expectation(entry)}",
        f"# Avoided by: {advice}",
        "# Exit status: the crash's own (a signal, or 1 with a traceback) when it reproduces;",
        "# 0 with 'not reproduced' when every step ran and nothing happened.",
        "import os",
        "import sys",
        "",
        f"EXPECTED = {expectation(entry)!r}",
        "",
        "",
        "def say(text):",
        '    sys.stderr.write("[repro] " + text + "\\n")',
        "    sys.stderr.flush()",
        "",
        "",
    ]


def _environment_code(entry: Entry) -> list[str]:
    """Re-execute once with the run's environment: the loader reads LD_PRELOAD at start."""
    return [
        f"ENVIRONMENT = {_environment(entry)!r}",
        f"SCRUBBED = {sorted(SCRUBBED_VARIABLES)!r}",
        f"KEPT_PYTHON = {sorted(KEPT_PYTHON_VARIABLES)!r}",
        "env = {k: v for k, v in os.environ.items() if k not in SCRUBBED",
        "       and not (k.startswith('PYTHON') and k not in KEPT_PYTHON)}",
        "env.update(ENVIRONMENT)",
        f"if env != dict(os.environ) and {REEXEC_MARKER!r} not in os.environ:",
        f"    env[{REEXEC_MARKER!r}] = '1'",
        "    os.execve(sys.executable, [sys.executable] + sys.argv, env)",
        "# As in the tool's sandbox: the directory it is run from comes first on sys.path.",
        "sys.path[0] = os.getcwd()",
        'say("expected: " + EXPECTED)',
        "",
    ] + _hang_guard(entry)


def _hang_guard(entry: Entry) -> list[str]:
    if minimal_run(entry).get("outcome") != "hung":
        return []
    # As long as the tool waited before it called the run hung.
    seconds = max(1, math.ceil(float(entry.get("duration_s") or 60)))
    return [
        "import faulthandler",
        f"say(\"after {seconds} s every thread's stack is dumped and the script exits "
        '(processes it forked are left running)")',
        f"faulthandler.dump_traceback_later({seconds}, exit=True)",
        "",
    ]


def _preload_code(entry: Entry) -> list[str]:
    preload = list(entry.get("preload") or ())
    if not preload:
        return []
    mode = "RTLD_LOCAL" if entry.get("preload_mode") == "local" else "RTLD_GLOBAL"
    lines = ["import ctypes", ""]
    for lib in preload:
        lines.append(f'say("preload: ctypes.CDLL({lib!r}, mode=ctypes.{mode})")')
        lines.append(f"ctypes.CDLL({lib!r}, mode=ctypes.{mode})")
    return [*lines, ""]


def _steps_code(entry: Entry) -> list[str]:
    """Each step as the child runs it: ``import NAME`` for a dotted name, a statement as written
    (compiled on its own when it does not fit in the script's top level)."""
    steps = _steps(entry)
    lines = []
    for index, step in enumerate(steps):
        lines.append(f"say({f'step {index} of {len(steps)}: ' + _shown(step)!r})")
        lines += _step_code(index, step)
    return [*lines, ""]


def _step_code(index: int, step: str) -> list[str]:
    module = module_of_step(step)
    if module is not None:
        return [f"import {module}"]
    try:
        compile(step, f"<step {index}>", "exec")
    except SyntaxError:
        pass
    else:
        if not step.startswith((" ", "\t")):
            return step.rstrip().splitlines()
    return [f"exec(compile({step!r}, '<step {index}>', 'exec'))"]


def _exercise_code(entry: Entry) -> list[str]:
    """The sandbox's runtime exercising, when the run reached it (it failed there, at exit, or
    survived it): only then can it matter."""
    run = minimal_run(entry)
    runtimes = list(dict.fromkeys((e["kind"], e["path"]) for e in run.get("exercised") or ()))
    if not run.get("exercise") or not runtimes or run.get("phase") in _BEFORE_EXERCISE:
        return []
    source = _EXERCISE_SOURCE.read_text(encoding="utf-8").split(_EXERCISE_MARKER, 1)[1]
    return [
        "# The run called into each OpenMP/BLAS runtime it had mapped after its steps",
        "# (runtime exercising); that is where it failed.",
        "# ---- exercising code, from pytest_runtimeconflict/report/repro_exercise.py ----",
        *source.rstrip().splitlines(),
        "# ---- end of the exercising code ----",
        "",
        f"exercise({[list(r) for r in runtimes]!r})",
        "",
    ]


def _ending_code(entry: Entry) -> list[str]:
    if entry.get("outcome") != "latent":
        return ['say("every step ran: not reproduced here (expected: " + EXPECTED + ")")']
    copies = sorted({p for paths in _duplicated(entry).values() for p in paths})
    return [
        f"COPIES = {copies!r}",
        "with open('/proc/self/maps') as maps:",
        "    rows = [line.split(None, 5) for line in maps]",
        "mapped = {os.path.realpath(row[5].strip()) for row in rows if len(row) == 6}",
        "found = [p for p in COPIES if os.path.realpath(p) in mapped]",
        "if len(found) > 1:",
        '    say("reproduced, mapped at once: " + ", ".join(found))',
        "    sys.exit(1)",
        'say("not reproduced here: mapped " + (", ".join(found) or "none of them"))',
    ]


# ---------------------------------------------------------------- entry helpers


def _steps(entry: Entry) -> list[str]:
    return [str(s) for s in (entry.get("minimal_steps") or entry.get("steps") or ())]


def minimal_run(entry: Entry) -> Entry:
    """How the minimal order's run failed (``minimal_run`` of a diagnosed entry), else the
    entry's own run (not diagnosed: its steps are the order to reproduce)."""
    run = entry.get("minimal_run")
    if run:
        return dict(run)
    keys = ("steps", "outcome", "signal", "phase", "failed_step", "message", "exercised")
    own = {key: entry.get(key) for key in keys}
    own["exercise"] = bool(entry.get("exercised"))
    return own


def _environment(entry: Entry) -> dict[str, str]:
    env = {str(k): str(v) for k, v in (entry.get("env") or {}).items()}
    ld_preload = list(entry.get("ld_preload") or ())
    if ld_preload:
        env["LD_PRELOAD"] = " ".join(ld_preload)
    return env


def _where(run: Entry) -> str:
    """`` at step 3 of 4: zoo_iomp_a.parallel_sum(100000)`` (the minimal run's numbering)."""
    phase = run.get("phase")
    if phase == "exercise":
        return " while calling into the runtimes after the steps"
    if phase == "exit":
        return " at interpreter exit, after every step"
    if phase == "preload":
        return " while preloading"
    steps, failed = [str(s) for s in run.get("steps") or ()], run.get("failed_step")
    if isinstance(failed, int) and 0 <= failed < len(steps):
        return f" at step {failed} of {len(steps)}: {_shown(steps[failed])}"
    return ""


def _key_line(stderr: str) -> str:
    for line in reversed(stderr.splitlines()):
        if line.strip().startswith(_KEY_LINE):
            return line.strip()[:160]
    return ""


def _duplicated(entry: Entry) -> dict[str, list[str]]:
    """Family -> its mapped files, for each family mapped from more than one file."""
    files: dict[str, list[str]] = {}
    for rt in entry.get("loaded_runtimes") or ():
        paths = files.setdefault(str(rt.get("family")), [])
        if rt.get("path") not in paths:
            paths.append(str(rt.get("path")))
    return {family: paths for family, paths in files.items() if len(paths) > 1}


def _shown(step: str) -> str:
    """A step on one short line: ``import NAME``, or a statement's first line."""
    module = module_of_step(step)
    if module is not None:
        return f"import {module}"
    lines = step.strip().splitlines() or [""]
    text = lines[0] + (" ..." if len(lines) > 1 else "")
    return text if len(text) <= SHOWN_STEP else text[: SHOWN_STEP - 4] + " ..."


def _shell_quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    return "'" + text.replace("'", "'\"'\"'") + "'"
