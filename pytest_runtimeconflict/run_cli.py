"""``python -m pytest_runtimeconflict run [options] STEP...``: one sandboxed run from the shell.

Prints a readable report and, with ``--json FILE``, writes the report file
``{"schema": "pytest-runtimeconflict/report/1", "scenarios": [...]}``.
Exit status: 0 passed (and latent, unless ``--fail-on latent``), 1 crashed/failed/hung,
2 usage or input error (raised as ``RuntimeConflictError``; cli.py prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from pytest_runtimeconflict import report
from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.options import parse_seconds
from pytest_runtimeconflict.sandbox import RunResult, run_scenario

REPORT_SCHEMA = "pytest-runtimeconflict/report/1"
FAILING = frozenset({"crashed", "failed", "hung"})
TRACEBACK_LINES = 30
BACKTRACE_LINES = 40


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the ``run`` subcommand."""
    parser.add_argument(
        "steps",
        nargs="+",
        metavar="STEP",
        help="a dotted module name (imported) or a Python statement",
    )
    parser.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="LIB",
        help="dlopen LIB (path or name like libstdc++.so.6) before the steps",
    )
    parser.add_argument(
        "--preload-mode",
        choices=("global", "local"),
        default="global",
        help="RTLD_GLOBAL (default) or RTLD_LOCAL for --preload",
    )
    parser.add_argument(
        "--ld-preload",
        action="append",
        default=[],
        metavar="LIB",
        help="put LIB in the child's LD_PRELOAD",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="set an environment variable in the child",
    )
    parser.add_argument(
        "--timeout",
        type=str,
        default="60",
        metavar="S",
        help="seconds before the run counts as hung (default 60)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        metavar="EXE",
        help="interpreter to run the steps with (default: this one)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the JSON report to FILE")
    parser.add_argument(
        "--no-exercise",
        action="store_true",
        help="do not call into loaded OpenMP/BLAS runtimes after the steps",
    )
    parser.add_argument(
        "--fail-on",
        choices=("crash", "latent"),
        default="crash",
        help="'latent' also fails (exit 1) when two runtimes of a family were "
        "mapped at once without a crash",
    )
    parser.add_argument(
        "--no-diagnose",
        action="store_true",
        help="do not minimise a failing run or run counter-experiments",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=40,
        metavar="N",
        help="cap on the extra child runs of the diagnosis (default 40)",
    )
    parser.add_argument("--id", default="run", help="scenario id in the report")
    parser.add_argument(
        "--keep-run-dir",
        action="store_true",
        help="keep the child's run directory (progress, loader log, core)",
    )


def parse_env(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``K=V`` strings to pairs; ``UsageError`` naming the bad one."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"invalid --env {item!r} (from command line): expected KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def parse_timeout(text: str) -> float:
    """Seconds > 0, or ``UsageError`` in pytest-timeout's wording (the plugin's validator)."""
    return parse_seconds("--timeout", text, "from command line")


def spec_from_args(args: argparse.Namespace) -> RunSpec:
    """The ``RunSpec`` the options describe."""
    return RunSpec(
        steps=tuple(args.steps),
        preload=tuple(args.preload),
        preload_mode=args.preload_mode,
        ld_preload=tuple(args.ld_preload),
        env=parse_env(args.env),
        timeout=parse_timeout(args.timeout),
        python=args.python,
        exercise=not args.no_exercise,
        id=args.id,
    )


def exit_code(result: RunResult, fail_on: str = "crash") -> int:
    """0 passed, 1 crashed/failed/hung (and latent with ``fail_on == "latent"``)."""
    if result.outcome in FAILING or (result.outcome == "latent" and fail_on == "latent"):
        return 1
    return 0


def write_report(path: str, entries: Sequence[dict[str, Any]]) -> None:
    """Write the JSON report file (schema ``pytest-runtimeconflict/report/1``)."""
    data = {"schema": REPORT_SCHEMA, "scenarios": list(entries)}
    try:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
    except OSError as exc:
        raise UsageError(
            f"cannot write --json {path!r}: {exc.strerror}; check the directory"
        ) from exc


def _headline(result: RunResult) -> str:
    if result.outcome == "crashed":
        return f"CRASHED ({result.signal})"
    return result.outcome.upper()


def _indented(text: str, limit: int) -> list[str]:
    lines = text.rstrip().splitlines()
    if len(lines) > limit:
        lines = [f"... ({len(lines) - limit} lines omitted)", *lines[-limit:]]
    return ["    " + ln for ln in lines]


def format_result(result: RunResult) -> str:
    """The human-readable report of one run (used by the CLI and by the plugin's text)."""
    spec = result.spec
    out = [f"scenario {spec.id or '-'}: {_headline(result)} in {result.duration_s:.2f} s"]
    for i, step in enumerate(spec.steps):
        mark = "  <-- here" if i == result.failed_step else ""
        out.append(f"  step {i}: {step}{mark}")
    if result.message:
        out.append(f"  {result.message}")
    out += _section("libraries blamed", [f"    {p}" for p in result.libraries])
    out += _section(
        "loaded runtimes",
        [f"    {r['family']}/{r['runtime']}: {r['path']}" for r in result.loaded_runtimes],
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
        out += ["  gdb backtrace:", *_indented(result.gdb_backtrace, BACKTRACE_LINES)]
    if result.stderr_tail.strip() and result.outcome != "passed":
        out += ["  stderr (tail):", *_indented(result.stderr_tail, TRACEBACK_LINES)]
    return "\n".join(out)


def _section(title: str, lines: list[str]) -> list[str]:
    return [f"  {title}:", *lines] if lines else []


def main(args: argparse.Namespace) -> int:
    """Run the scenario, print the report, write ``--json``, return the exit status."""
    spec = spec_from_args(args)
    if args.json and os.path.isdir(args.json):
        raise UsageError(f"--json {args.json!r} is a directory; give a file name")
    if args.max_runs < 0:
        raise UsageError(f"invalid --max-runs {args.max_runs}: expected a count >= 0")
    result = run_scenario(spec, keep_run_dir=args.keep_run_dir)
    diagnosis = None
    if result.outcome != "passed" and not args.no_diagnose:
        from pytest_runtimeconflict.diagnose import diagnose

        diagnosis = diagnose(spec, result, max_runs=args.max_runs)
        sys.stdout.write(report.format_failure(result, diagnosis).rstrip() + "\n\n")
    sys.stdout.write(format_result(result) + "\n")
    if args.json:
        write_report(args.json, [report.scenario_entry(result, diagnosis)])
    return exit_code(result, args.fail_on)
