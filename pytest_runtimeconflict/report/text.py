"""Texts and JSON for a run and its diagnosis: the pytest failure, the summary line, ``run``'s
output and the JSON report.

The first three lines of :func:`format_failure` are written for someone who has never heard of
this tool: what broke (outcome, signal or error, the minimal order), why (rule, libraries and
where each came from) and what to do (the best safe change found to avoid it, and the fix for
the package author). Everything after that is evidence for whoever wants to check.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pytest_runtimeconflict.diagnosis.evidence import backtrace_library, crashing_thread_frames
from pytest_runtimeconflict.model import AvoidedBy, Diagnosis, LibraryRole, RunResult, RunSpec
from pytest_runtimeconflict.planning.workloads import probe_label, step_label
from pytest_runtimeconflict.report.display import DETAIL_WIDTH, clip, runtime_message
from pytest_runtimeconflict.vocabulary import is_import_step

TAIL_LINES = 8
BACKTRACE_LINES = 12

_OUTCOME_WORD = {
    "crashed": "CRASHED",
    "failed": "FAILED",
    "hung": "HUNG",
    "latent": "LATENT CONFLICT",
    "passed": "PASSED",
}


# ---------------------------------------------------------------- the three lines


def what_broke(result: RunResult, diagnosis: Diagnosis | None) -> str:
    """Line 1: outcome, signal or error, and the (minimal) order of steps that does it."""
    steps = diagnosis.minimal_steps if diagnosis is not None else tuple(result.spec.steps)
    word = _OUTCOME_WORD.get(result.outcome, result.outcome.upper())
    detail = _failure_detail(result)
    total = len(result.spec.steps)
    scope = "minimal order" if diagnosis is not None else "order"
    if diagnosis is not None and len(steps) < total:
        scope = f"minimal order, {len(steps)} of {total} steps"
    spec = diagnosis.minimal_result.spec if diagnosis is not None else result.spec
    order = _order(steps, result.spec.global_imports)
    ran = diagnosis.minimal_result if diagnosis is not None else result
    probe = probe_label(ran.phase, ran.exercised)
    order += f" > {probe}" if probe else ""
    return f"{word}: {detail} - {scope}: {_load_mode(spec)}{order}"


def _load_mode(spec: RunSpec) -> str:
    """What the run loaded before its steps, as order items: ``LD_PRELOAD libx.so > preload
    liby.so (RTLD_GLOBAL) > `` (empty for Python's default)."""
    mode = "RTLD_GLOBAL" if spec.preload_mode == "global" else "RTLD_LOCAL"
    parts = [f"{name}={value}" for name, value in spec.env]
    parts += [f"LD_PRELOAD {os.path.basename(p)}" for p in spec.ld_preload]
    parts += [f"preload {os.path.basename(p)} ({mode})" for p in spec.preload]
    return "".join(f"{part} > " for part in parts)


def why(diagnosis: Diagnosis | None) -> str:
    """Line 2: the rule, how sure, and the cause naming the libraries and distributions."""
    if diagnosis is None:
        return "Why: not diagnosed (run with diagnosis on to minimise and attribute it)"
    rule = diagnosis.rule or "no known conflict rule"
    return f"Why: {rule} ({diagnosis.confidence} confidence): {diagnosis.cause}"


def what_to_do(diagnosis: Diagnosis | None) -> str:
    """Line 3: the best avoiding change (flagged when unsafe) and the package author's fix."""
    if diagnosis is None:
        return "Do: diagnose it to learn what avoids it"
    return f"Do: {diagnosis.user_advice}. Package author: {diagnosis.author_advice}."


def headline(result: RunResult, diagnosis: Diagnosis | None) -> list[str]:
    """The three lines (what broke, why, what to do), kept in the report entry for
    annotations and merged reports."""
    lines = [what_broke(result, diagnosis), why(diagnosis), what_to_do(diagnosis)]
    return [clip(line, DETAIL_WIDTH) for line in lines]


def _failure_detail(result: RunResult) -> str:
    if result.outcome == "crashed":
        sig = result.signal or f"signal {result.signum}"
        extra = _key_line(result)
        return f"{sig} (signal {result.signum})" + (f", {extra}" if extra else "")
    if result.outcome == "failed":
        return _first_line(result.message) or f"exit status {result.returncode}"
    if result.outcome == "hung":
        return _first_line(result.message) or "timed out"
    if result.outcome == "latent":
        return _latent_detail(result)
    return _first_line(result.message) or result.outcome


def _latent_detail(result: RunResult) -> str:
    """``2 openmp runtimes mapped at once (libgomp-1a2b.so.1, libiomp5.so)``."""
    parts = []
    for family in result.duplicated_families():
        names = [os.path.basename(r.path) for r in result.loaded_runtimes if r.family == family]
        parts.append(f"{len(names)} {family} runtimes mapped at once ({', '.join(names)})")
    return "; ".join(parts) or _first_line(result.message) or "latent"


def _key_line(result: RunResult) -> str:
    """The most telling line of a crash's stderr (an OpenMP error, an uncaught exception)."""
    return runtime_message(result.stderr_tail or "")[:160]


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:240] if lines else ""


def _order(steps: Sequence[str], global_imports: Sequence[str] = ()) -> str:
    """Steps on one line: ``import a (RTLD_GLOBAL) > import b > a.f()`` (newlines in a step
    shown as \\n, a workload by its name)."""
    shown = [
        (f"import {s}" + (" (RTLD_GLOBAL)" if s in global_imports else ""))
        if is_import_step(s) and not s.startswith("import ")
        else step_label(s)
        for s in steps
    ]
    return " > ".join(step_label(s) for s in shown) or "(no steps)"


# ---------------------------------------------------------------- the failure text


def format_failure(result: RunResult, diagnosis: Diagnosis | None) -> str:
    """The full failure text: three summary lines, then evidence and experiments."""
    full = [what_broke(result, diagnosis), why(diagnosis), what_to_do(diagnosis)]
    lines = [clip(line, DETAIL_WIDTH) for line in full] + [""]
    if any(len(line) > DETAIL_WIDTH or "\n" in line for line in full):
        lines += ["In full:", *(_wrapped(line) for line in full), ""]
    if diagnosis is not None and diagnosis.libraries:
        lines.append("Libraries:")
        lines += [f"  {_library_line(lib)}" for lib in diagnosis.libraries]
    if diagnosis is not None and diagnosis.evidence_lines:
        lines.append("Symbols:")
        lines += [f"  {line}" for line in diagnosis.evidence_lines]
    evidence_of = diagnosis.minimal_result if diagnosis is not None else result
    lines += _evidence(evidence_of)
    if diagnosis is not None:
        lines += _findings(diagnosis)
        lines += _experiments(diagnosis)
    return "\n".join(lines).rstrip() + "\n"


def _wrapped(line: str) -> str:
    """A long summary line in full, wrapped and indented (code keeps its own lines)."""
    return "\n".join(
        textwrap.fill(part, 100, initial_indent="  ", subsequent_indent="    ")
        for part in line.splitlines()
        if part.strip()
    )


def _library_line(lib: LibraryRole) -> str:
    kind = "/".join(x for x in (lib.family, lib.runtime) if x and x != lib.family) or lib.family
    where = lib.distribution or "not from a Python distribution"
    tag = f", {kind}" if kind else ""
    return f"{lib.role}: {lib.path} ({where}{tag})"


def _evidence(result: RunResult) -> list[str]:
    lines = ["Evidence:"]
    failed = result.failed_step
    if isinstance(failed, int) and 0 <= failed < len(result.spec.steps):
        lines.append(f"  failing step: {failed} {result.spec.steps[failed]!r}")
        new = result.step_libraries[failed] if failed < len(result.step_libraries) else []
        if new:
            lines.append(f"  mapped by that step: {_names(new)}")
    elif result.outcome != "passed" and result.phase:
        lines.append(f"  where: {_first_line(result.message)}")
    if result.init_library:
        lines.append(f"  initialiser running: {result.init_library}")
    if result.crash_library:
        lines.append(f"  crashing thread's PC in: {result.crash_library}")
    frame = backtrace_library(result)
    if frame and frame != result.crash_library:
        lines.append(f"  innermost non-libc frame in: {frame}")
    counts = _thread_counts(result.threads or ())
    if counts:
        per_lib = ", ".join(f"{os.path.basename(lib)} x{n}" for lib, n in counts)
        lines.append(f"  threads by library ({len(result.threads)} threads): {per_lib}")
    runtimes = result.loaded_runtimes or ()
    if runtimes:
        lines.append(
            "  runtimes mapped: "
            + ", ".join(f"{os.path.basename(r.path)} ({r.runtime})" for r in runtimes)
        )
    lines += _tail("Python traceback", _python_frames(result), TAIL_LINES)
    native = crashing_thread_backtrace(result)
    lines += _tail(
        "native backtrace of the crashing thread (innermost frames)", native, BACKTRACE_LINES
    )
    lines += _tail("stderr (tail)", result.stderr_tail, TAIL_LINES)
    return lines if len(lines) > 1 else []


def _python_frames(result: RunResult) -> str:
    """faulthandler's text without the sandbox's own frames (they are the same every time)."""
    out: list[str] = []
    skipping = False
    for line in (result.python_traceback or "").splitlines():
        if line.lstrip().startswith("File "):
            skipping = "pytest_runtimeconflict" in line
        elif not line.startswith(" "):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out)


def crashing_thread_backtrace(result: RunResult, limit: int = BACKTRACE_LINES) -> str:
    """The innermost ``limit`` frames of the crashing thread (gdb), each line shortened."""
    frames = crashing_thread_frames(result)
    # Start just below the first frame outside glibc: the raise()/abort() frames are noise.
    first = next((i for i, f in enumerate(frames) if " from " in f and "libc.so" not in f), 0)
    start = max(0, first - 1)
    return "\n".join(line[:200] for line in frames[start : start + limit])


def _thread_counts(threads: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for thread in threads:
        lib = thread.get("library") or "(unknown)"
        counts[lib] = counts.get(lib, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _names(paths: Iterable[str]) -> str:
    names = [os.path.basename(p) for p in paths]
    shown = ", ".join(names[:8])
    return shown + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")


def _tail(title: str, text: str | None, count: int) -> list[str]:
    lines = [line for line in (text or "").rstrip().splitlines() if line.strip()]
    if not lines:
        return []
    return [f"  {title}:"] + [f"    {line}" for line in lines[:count]]


def _findings(diagnosis: Diagnosis) -> list[str]:
    if not diagnosis.findings:
        return []
    lines = ["Static findings over the mapped objects:"]
    for finding in diagnosis.findings:
        lines.append(f"  [{finding.severity}] {finding.rule}: {finding.title}")
    return lines


def _experiments(diagnosis: Diagnosis) -> list[str]:
    cap = ", cap of child runs reached" if diagnosis.cap_hit else ""
    head = f"Counter-experiments on the minimal order ({diagnosis.runs_used} child runs{cap}):"
    if not diagnosis.experiments:
        return [head, "  (none run)"]
    lines = [head]
    for experiment in diagnosis.experiments:
        lines.append("  " + _experiment_line(experiment))
    return lines


def _experiment_line(experiment: AvoidedBy) -> str:
    mark = "AVOIDS" if experiment.avoided else "fails "
    if experiment.avoided and experiment.unsafe:
        mark = "AVOIDS (unsafe)"
    outcome = experiment.outcome + (f" {experiment.signal}" if experiment.signal else "")
    if experiment.outcome == "could-not-start" and experiment.effect:
        # why, in the loader's words (a preloaded library's dependency not found)
        outcome = experiment.effect
    elif experiment.effect.startswith("fails once the workloads run"):
        outcome = experiment.effect  # the imports passed; a module's own code did not
    return f"{mark:<16} {experiment.kind:<10} {experiment.change} -> {outcome}"


# ---------------------------------------------------------------- short forms


def format_summary_line(diagnosis: Diagnosis) -> str:
    """One line for the terminal summary: rule, libraries, minimal order and what avoids it."""
    libs = ", ".join(sorted({os.path.basename(lib.path) for lib in diagnosis.libraries}))
    best = diagnosis.avoided_by[0] if diagnosis.avoided_by else None
    avoid = f"; avoided by: {best.change}" if best is not None else "; nothing tried avoided it"
    if best is not None and best.unsafe:
        avoid = f"; only avoided by (unsafe): {best.change}"
    return (
        f"{diagnosis.rule or 'unattributed'} ({diagnosis.confidence}): {libs or 'no library named'}"
        f"; minimal order: {_order(diagnosis.minimal_steps, diagnosis.minimal_result.spec.global_imports)}{avoid}"
    )


def format_result(result: RunResult, diagnosis: Diagnosis | None) -> str:
    """``run``'s human output, each fact once: the steps (where it stopped), then the
    diagnosis's text when there is one, else every fact of the run."""
    spec = result.spec
    diagnosed = diagnosis is not None and result.outcome != "passed"
    # Diagnosed, the failure text's first line states the outcome: the header does not.
    what = f"{len(spec.steps)} step(s)" if diagnosed else _headline(result)
    out = [f"scenario {spec.id or '-'}: {what} in {result.duration_s:.2f} s"]
    for i, step in enumerate(spec.steps):
        mark = "  <-- here" if i == result.failed_step else ""
        out.append(f"  step {i}: {step}{mark}")
    if diagnosed:
        return "\n".join(out) + "\n\n" + format_failure(result, diagnosis).rstrip() + "\n"
    if result.message:
        out.append(f"  {result.message}")
    return "\n".join(out + _run_details(result)).rstrip() + "\n"


TRACEBACK_LINES = 30
RUN_BACKTRACE_LINES = 40


def _headline(result: RunResult) -> str:
    if result.outcome == "crashed":
        return f"CRASHED ({result.signal})"
    return result.outcome.upper()


def _indented(text: str, limit: int) -> list[str]:
    lines = text.rstrip().splitlines()
    if len(lines) > limit:
        lines = [f"... ({len(lines) - limit} lines omitted)", *lines[-limit:]]
    return ["    " + ln for ln in lines]


def _run_details(result: RunResult) -> list[str]:
    """Every fact of one run, for a run nobody diagnosed."""
    out = _section("libraries blamed", [f"    {p}" for p in result.libraries])
    out += _section(
        "loaded runtimes",
        [f"    {r.family}/{r.runtime}: {r.path}" for r in result.loaded_runtimes],
    )
    out += _section(
        "findings",
        [f"    [{f.severity}] {f.rule}: {f.title}\n      fix: {f.advice}" for f in result.findings],
    )
    out += _section(
        "exercised",
        [
            f"    {e['kind']} {e['path']}: {e['status']} {e.get('detail', '')}".rstrip()
            for e in result.exercised
        ],
    )
    if result.init_library:
        out.append(f"  initialising: {result.init_library}")
    out += _section(
        "threads (from the core)",
        [
            f"    tid {t['tid']} pc {t['pc']} in {t['library'] or '?'}"
            + (f" ({t['symbol']})" if t.get("symbol") else "")
            for t in result.threads
        ],
    )
    if result.python_traceback and result.outcome != "passed":
        out += ["  python traceback:", *_indented(result.python_traceback, TRACEBACK_LINES)]
    if result.gdb_backtrace:
        out += ["  gdb backtrace:", *_indented(result.gdb_backtrace, RUN_BACKTRACE_LINES)]
    if result.stderr_tail.strip() and result.outcome != "passed":
        out += ["  stderr (tail):", *_indented(result.stderr_tail, TRACEBACK_LINES)]
    return out


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"  {title}:", *lines] if lines else []
