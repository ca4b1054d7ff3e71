"""``python -m pytest_runtimeconflict scan``: every native runtime of an environment and the
static conflicts between them."""

from __future__ import annotations

import argparse
import json
import sys

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.files.atomic import write_atomically
from pytest_runtimeconflict.model import SEVERITIES, Finding
from pytest_runtimeconflict.report.baseline import (
    Baseline,
    BaselineStatus,
    finding_conflict,
    load_baseline,
    status_of,
    write_baseline,
)
from pytest_runtimeconflict.report.scan import exit_code, render_text
from pytest_runtimeconflict.static.scan import ScanResult, scan_environment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``scan``."""
    parser.add_argument(
        "paths", nargs="*", metavar="PATH", help="directories or .whl files to scan as well"
    )
    parser.add_argument(
        "--python",
        metavar="EXE",
        help="scan this interpreter's environment (default: the running one)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write the result as JSON to FILE ('-' for stdout)"
    )
    parser.add_argument(
        "--fail-on",
        choices=SEVERITIES,
        default="error",
        help="exit 1 when a finding of this severity or worse exists (default: error)",
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="known findings (JSON, see docs/usage.md): they do not fail; new ones do; fixed "
        "ones are listed",
    )
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="write the findings that reach --fail-on to the --baseline FILE (exit 0)",
    )


def main(args: argparse.Namespace) -> int:
    """Run the scan; exit 0 (nothing reaches --fail-on), 1 (something does), 2 (bad input)."""
    if args.fail_on not in SEVERITIES:
        raise UsageError(
            f"invalid --fail-on {args.fail_on!r}: expected one of {', '.join(SEVERITIES)}"
        )
    if args.update_baseline and not args.baseline:
        raise UsageError("invalid --update-baseline: it needs --baseline FILE (the file to write)")
    baseline = _read_baseline(args)
    result = scan_environment(args.python, tuple(args.paths))
    failing = [f for f in result.findings if exit_code([f], args.fail_on)]
    data = result.to_json()
    lines: list[str] = []
    if baseline is not None:
        failing, status = _judge(baseline, result, failing, args.update_baseline)
        data["baseline"] = status.to_json()
        lines = ["", *status.lines()]
        if args.update_baseline:
            lines.append(
                f"baseline {baseline.path} updated: {len(status.known) + len(status.new)}"
                " known finding(s)"
            )
    if args.json == "-":
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_text(result, sys.stdout)
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        if args.json:
            try:
                write_atomically(args.json, json.dumps(data, indent=2).encode())
            except OSError as exc:
                raise UsageError(f"--json {args.json}: cannot write ({exc.strerror})") from exc
    return 1 if failing else 0


def _read_baseline(args: argparse.Namespace) -> Baseline | None:
    if not args.baseline:
        return None
    return load_baseline(args.baseline, "--baseline", create=args.update_baseline)


def _judge(
    baseline: Baseline, result: ScanResult, failing: list[Finding], update: bool
) -> tuple[list[Finding], BaselineStatus]:
    """The failing findings not in the baseline, and known/new/fixed; with ``update`` the
    baseline is rewritten with every failing finding first (so none fails)."""
    owners = {o.path: o.distribution for o in result.objects}
    conflicts = [finding_conflict(f, owners) for f in failing]
    if update:
        write_baseline(baseline.path, conflicts, "--baseline")
    keys = baseline.keys if not update else frozenset(c.key for c in conflicts)
    marks = [{"conflicts": [{"key": c.key} for c in conflicts]}]
    new = [f for f, c in zip(failing, conflicts) if c.key not in keys]
    return new, status_of(baseline.path, baseline.keys, marks)
