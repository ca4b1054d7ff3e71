"""Reproducer export: one self-contained Python script per distinct conflict, for a bug report.

Written from report entries (the JSON of a run and its diagnosis), so the plugin's controller
can write them for runs made by any xdist worker, from the conflict's minimal run whatever
order the workers finished in (:func:`conflicts`). A script is generated from data, never from
pasted text: a header of sanitised comment lines (:func:`comment`), one data literal ``SPEC``
(JSON, ASCII only) holding everything of the conflict (the minimal order's steps with each
step's load mode, preloads, ``LD_PRELOAD`` and environment, probes, the expected outcome),
then the fixed, reviewed code of ``repro_exercise.py`` (the probes) and ``repro_script.py``
(supervisor and in-process run; its module text says what the script does and its exit
status). The script needs only the target interpreter, never this package.
:mod:`.repro_verify` runs each written script once and records whether it reproduces.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_runtimeconflict import __version__
from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.sandbox.runner import KEPT_PYTHON_VARIABLES, SCRUBBED_VARIABLES
from pytest_runtimeconflict.vocabulary import JsonObject, module_of_step

Entry = Mapping[str, Any]
REEXEC_MARKER = "RC_REPRO_REEXEC"
SHOWN_STEP = 120
COMMENT_WIDTH = 400
FORK_DEADLINE = 6.0  # seconds the fork probe's child may take (as the sandbox's child)
MIN_DEADLINE = 60  # seconds a run that should end may take before the script calls it hung
_KEY_LINE = ("OMP: Error", "terminate called", "free():", "double free", "Fatal Python error")
_EXERCISE_SOURCE = Path(__file__).with_name("repro_exercise.py")
_SCRIPT_SOURCE = Path(__file__).with_name("repro_script.py")
_BEFORE_EXERCISE = ("start", "preload", "step")
_COPY_MARKER = "# ---- copied into reproducers from here on ----\n"
_NOT_OWNER = ("duplicate_of", "same_conflict_as", "same_failure_as")


def conflicts(entries: Iterable[Entry]) -> list[Entry]:
    """One entry per distinct conflict (verdict key) among diagnosed runs that did not pass,
    sorted by key. Of a conflict's entries the one chosen is the same whatever order xdist
    workers reported in: a failure before a latent run, the owner's entry (not marked as an
    earlier item's conflict) before the others, then the shortest minimal order, then the
    smallest minimal load mode, then the first in the collected (plan) order."""
    chosen: dict[str, tuple[tuple[Any, ...], Entry]] = {}
    for position, entry in enumerate(entries):
        key = (entry.get("verdict") or {}).get("key")
        if not key or entry.get("outcome") in (None, "passed"):
            continue
        rank = _preference(entry, position)
        if key not in chosen or rank < chosen[key][0]:
            chosen[key] = (rank, entry)
    return [chosen[key][1] for key in sorted(chosen)]


def _preference(entry: Entry, position: int) -> tuple[Any, ...]:
    mode = load_mode(entry)
    size = sum(len(mode[k]) for k in ("global_imports", "preload", "ld_preload", "env"))
    not_owner = any(entry.get(k) for k in _NOT_OWNER)
    return entry.get("outcome") == "latent", not_owner, len(_steps(entry)), size, position


def file_name(entry: Entry) -> str:
    """``<rule>-<8 hex of the conflict key>.py``: stable across runs, distinct per conflict."""
    verdict = entry.get("verdict") or {}
    rule = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(verdict.get("rule") or "unattributed"))
    key = str(verdict.get("key") or " ".join(_steps(entry)))
    return f"{rule}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.py"


def make_directory(directory: str | Path, option: str) -> Path:
    """``directory`` created; ``UsageError`` naming ``option`` when it cannot be."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create {option} {str(directory)!r}: {exc.strerror}; give a writable directory"
        ) from None
    return directory


def write_reproducers(directory: str | Path, entries: Iterable[Entry], option: str) -> list[Path]:
    """Write one reproducer per distinct conflict into ``directory`` (created); their paths."""
    directory = make_directory(directory, option)
    return [write_reproducer(directory / file_name(e), e, option) for e in conflicts(entries)]


def write_reproducer(path: str | Path, entry: Entry, option: str, verified: str = "") -> Path:
    """Write the reproducer of ``entry`` to ``path`` (executable); ``UsageError`` naming
    ``option`` when it cannot be written. Atomic and link-safe (:mod:`..files.atomic`): a
    link planted at ``path`` is replaced, never followed."""
    from pytest_runtimeconflict.files.atomic import write_atomically

    path = Path(path)
    data = reproducer(entry, path.name, verified).encode("utf-8")
    try:
        write_atomically(path, data, 0o755)
    except OSError as exc:
        raise UsageError(
            f"cannot write {option} {str(path)!r}: {exc.strerror}; check the directory"
        ) from None
    return path


def shell_command(entry: Entry, script: str) -> str:
    """The one line that runs the reproducer: its environment and the run's interpreter."""
    env = _environment(load_mode(entry))
    words = [f"{k}={_shell_quote(v)}" for k, v in sorted(env.items())]
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


def reproducer(entry: Entry, name: str = "repro.py", verified: str = "") -> str:
    """The reproducer's source for one report entry: a header of sanitised comment lines,
    the one data literal ``SPEC`` and the fixed code of ``repro_exercise.py`` and
    ``repro_script.py``. ``verified``: the verification's words for the header."""
    lines = _header(entry, name, verified)
    lines += ["import json", "", "SPEC = json.loads(", *_data_literal(reproducer_spec(entry))]
    lines += [")", "", *_fixed_code(), "", 'if __name__ == "__main__":']
    lines.append("    sys.exit(main(SPEC, sys.argv))")
    return "\n".join(lines) + "\n"


def comment(text: str) -> str:
    """``text`` fit for one ``#`` comment line: every character that is not printable (line
    breaks, carriage returns, U+2028/U+2029, form feeds, NUL, other controls, lone
    surrogates) escaped as in a Python literal, so nothing after it can become code."""
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return shown if len(shown) <= COMMENT_WIDTH else shown[: COMMENT_WIDTH - 4] + " ..."


def _header(entry: Entry, name: str, verified: str) -> list[str]:
    verdict = entry.get("verdict") or {}
    conflict = "not diagnosed (the run's whole order)"
    if verdict:
        conflict = f"{verdict.get('rule') or 'unattributed'}: {verdict.get('cause') or ''}"
    advice = str(verdict.get("user_advice") or "(not known)")
    return [
        "#!/usr/bin/env python3",
        f"# Reproducer written by pytest-runtimeconflict {__version__}; it runs without it.",
        f"# Run:  {comment(shell_command(entry, name))}",
        "#",
        f"# Conflict: {comment(conflict)}",
        f"# Expected: {comment(expectation(entry))}",
        f"# Avoided by: {comment(advice)}",
        f"# Verified: {comment(verified or 'not yet')}",
        "# Exit status: 1 when the conflict reproduced, 0 when it did not; one line on stdout",
        "# says which ('[repro] reproduced: SIGSEGV'). 'python THIS --in-process' runs it in this",
        "# process (for gdb): then the crash's own status. Everything this conflict needs is",
        "# in SPEC; the code after SPEC is the same in every reproducer.",
    ]


def _data_literal(spec: JsonObject) -> list[str]:
    """``spec`` as JSON (ASCII only: every other character escaped), one string literal a
    line: whatever the strings hold, they stay data."""
    text = json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=True)
    return [f"    {line + chr(10)!r}" for line in text.splitlines()]


def _fixed_code() -> list[str]:
    lines = []
    for source in (_EXERCISE_SOURCE, _SCRIPT_SOURCE):
        text = source.read_text(encoding="utf-8").split(_COPY_MARKER, 1)[1]
        lines += [line.replace("  # noqa: E402", "") for line in text.strip().splitlines()]
        lines += ["", ""]
    return lines


def reproducer_spec(entry: Entry) -> JsonObject:
    """Everything the script needs, as data: the minimal order's steps with each step's load
    mode, preloads, environment, probes and the expected outcome."""
    mode = load_mode(entry)
    steps = _steps(entry)
    return {
        "steps": [_step_data(step, mode["global_imports"]) for step in steps],
        "preload": mode["preload"],
        "preload_mode": "local" if entry.get("preload_mode") == "local" else "global",
        "environment": _environment(mode),
        "scrubbed": sorted(SCRUBBED_VARIABLES),
        "kept_python": sorted(KEPT_PYTHON_VARIABLES),
        "marker": REEXEC_MARKER,
        "probes": _probes(entry),
        "fork_deadline": FORK_DEADLINE,
        "deadline": deadline(entry),
        "expected": _expected(entry),
    }


def _step_data(step: str, global_imports: Sequence[str]) -> JsonObject:
    module = module_of_step(step)
    is_global = module is not None and step.strip() in global_imports
    return {"code": step, "module": module, "global": is_global, "shown": _shown(step)}


def _probes(entry: Entry) -> list[list[str]]:
    """The probes the minimal run called, in its order, when it reached them (it failed
    there, at exit, or survived them): only then can they matter."""
    run = minimal_run(entry)
    if not run.get("exercise") or run.get("phase") in _BEFORE_EXERCISE:
        return []
    done = dict.fromkeys((str(e["kind"]), str(e["path"])) for e in run.get("exercised") or ())
    return [list(pair) for pair in done]


def deadline(entry: Entry) -> float:
    """How long the script waits for its run: as long as the tool did before it called the run
    hung; else long enough for any run that ends (fork probes wait for their own deadline)."""
    run = minimal_run(entry)
    seconds = float(entry.get("duration_s") or 0)
    if run.get("outcome") == "hung" and run.get("phase") != "exercise":
        return float(max(1, math.ceil(seconds)))
    forks = sum(1 for kind, _ in _probes(entry) if kind in ("fork", "fork-after-workload"))
    return float(max(MIN_DEADLINE, math.ceil(4 * seconds)) + forks * FORK_DEADLINE)


def _expected(entry: Entry) -> JsonObject:
    run = minimal_run(entry)
    message = str(run.get("message") or "")
    phase = run.get("phase")
    typed = re.match(r"(?:preload .* failed: )?([A-Za-z_][\w.]*): ", message)
    status = re.search(r"exited with status (-?\d+)", message)
    copies = sorted({p for paths in _duplicated(entry).values() for p in paths})
    return {
        "outcome": str(run.get("outcome")),
        "signal": run.get("signal"),
        "phase": phase,
        "failed_step": run.get("failed_step") if phase == "step" else None,
        "exception_type": typed.group(1) if typed and phase in ("step", "preload") else None,
        "returncode": int(status.group(1)) if status else None,
        "copies": copies,
        "text": expectation(entry),
    }


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


def load_mode(entry: Entry) -> JsonObject:
    """The minimal run's load mode: the smallest one under which it still failed the same way
    (``load_mode`` of an entry run under a planned variant), else the run's own."""
    source = entry.get("load_mode") or entry
    return {
        "global_imports": [str(s) for s in source.get("global_imports") or ()],
        "preload": [str(s) for s in source.get("preload") or ()],
        "ld_preload": [str(s) for s in source.get("ld_preload") or ()],
        "env": {str(k): str(v) for k, v in (source.get("env") or {}).items()},
    }


def _environment(mode: Mapping[str, Any]) -> dict[str, str]:
    env = dict(mode["env"])
    if mode["ld_preload"]:
        env["LD_PRELOAD"] = " ".join(mode["ld_preload"])
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
