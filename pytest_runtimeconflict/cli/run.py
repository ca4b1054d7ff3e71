"""``python -m pytest_runtimeconflict run [options] STEP...``: one sandboxed run from the shell.

Prints a readable report and, with ``--json FILE``, writes the report file
``{"schema": "pytest-runtimeconflict/report/1", "scenarios": [...]}``.
Exit status: 1 when the outcome fails under ``--fail-on`` (default ``error``: crashed, failed,
hung; the same meaning as the plugin's ``--rc-fail-on``), else 0; 2 for a usage or input
error (raised as ``RuntimeConflictError``; the CLI prints it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec
from pytest_runtimeconflict.options import (
    DEFAULT_MEMORY_LIMIT,
    MEMORY_LIMIT_HELP,
    parse_memory_limit,
    parse_seconds,
)
from pytest_runtimeconflict.report.jsonreport import report_json, write_report
from pytest_runtimeconflict.report.text import format_result
from pytest_runtimeconflict.sandbox.progress import ChildRuns, progress_line
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.vocabulary import DEFAULT_TIMEOUT, FAIL_ON_CHOICES, JsonObject, fails


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
        default=f"{DEFAULT_TIMEOUT:g}",
        metavar="S",
        help=f"seconds before the run counts as hung (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--memory-limit",
        default=DEFAULT_MEMORY_LIMIT,
        metavar="SIZE",
        help=MEMORY_LIMIT_HELP,
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
        choices=FAIL_ON_CHOICES,
        default="error",
        help="exit 1 on: 'crash' (crashed, hung), 'error' (also failed: the default), "
        "'latent' (also two runtimes of a family mapped at once without a crash)",
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
        "--repro",
        metavar="FILE",
        help="write a self-contained Python script reproducing the (minimal) failing order "
        "with its load mode, runnable without this package",
    )
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
        memory_limit=parse_memory_limit("--memory-limit", args.memory_limit, "from command line"),
        python=args.python,
        exercise=not args.no_exercise,
        id=args.id,
    )


def exit_code(result: RunResult, fail_on: str = "error") -> int:
    """1 when the outcome fails under ``--fail-on`` (the plugin's meaning), else 0."""
    return int(fails(result.outcome, fail_on))


def main(args: argparse.Namespace) -> int:
    """Run the scenario, print the report, write ``--json``, return the exit status."""
    spec = spec_from_args(args)
    for option in ("json", "repro"):
        value = getattr(args, option)
        if value and os.path.isdir(value):
            raise UsageError(f"--{option} {value!r} is a directory; give a file name")
    if args.max_runs < 0:
        raise UsageError(f"invalid --max-runs {args.max_runs}: expected a count >= 0")
    done: list[RunResult] = []
    try:
        result, diagnosis = _run_and_diagnose(spec, args, done)
    except KeyboardInterrupt as exc:
        if args.json and done:  # interrupted while diagnosing: the run itself is reported
            write_report(args.json, {**report_json([(done[0], None)]), "interrupted": str(exc)})
        raise
    sys.stdout.write(format_result(result, diagnosis).rstrip() + "\n")
    report = report_json([(result, diagnosis)])
    if args.repro:  # first: its check is recorded in the report's entry
        _write_repro(args.repro, report["scenarios"][0])
    if args.json:
        write_report(args.json, report)
    return exit_code(result, args.fail_on)


def _run_and_diagnose(
    spec: RunSpec, args: argparse.Namespace, done: list[RunResult]
) -> tuple[RunResult, Diagnosis | None]:
    """The run and, unless it passed or ``--no-diagnose``, its diagnosis; a progress line on
    a terminal's stderr counts the child runs (at most the run plus the diagnosis's cap).
    The run's result is appended to ``done`` as soon as it is known."""
    with progress_line() as line:
        runs = ChildRuns(run_spec, line, 1 + args.max_runs)
        result = runs(spec, keep_run_dir=args.keep_run_dir)
        done.append(result)
        if result.outcome == "passed" or args.no_diagnose or result.memory_limit_hit:
            return result, None
        from pytest_runtimeconflict.diagnosis import LATENT_BUDGET, diagnose

        if result.outcome == "latent":
            runs.limit = 1 + min(args.max_runs, LATENT_BUDGET)
        return result, diagnose(spec, result, max_runs=args.max_runs, run=runs)


def _write_repro(path: str, entry: JsonObject) -> None:
    from pytest_runtimeconflict.report.repro import shell_command
    from pytest_runtimeconflict.report.repro_verify import write_verified

    if entry.get("outcome") == "passed":
        sys.stderr.write(f"--repro {path}: not written, the run passed (nothing to reproduce)\n")
        return
    written = write_verified(Path(path), entry, "--repro", str(entry.get("python")))
    sys.stdout.write(f"\nreproducer: {written.path}\n  run it: {shell_command(entry, path)}\n")
    sys.stdout.write(f"  verified: {written.verification.describe()}\n")
