"""``python -m pytest_runtimeconflict scan``: every native runtime of an environment and the
static conflicts between them."""

from __future__ import annotations

import argparse
import json
import sys

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model import SEVERITIES
from pytest_runtimeconflict.report.scan import exit_code, render_text
from pytest_runtimeconflict.static.scan import scan_environment


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


def main(args: argparse.Namespace) -> int:
    """Run the scan; exit 0 (nothing reaches --fail-on), 1 (something does), 2 (bad input)."""
    if args.fail_on not in SEVERITIES:
        raise UsageError(
            f"invalid --fail-on {args.fail_on!r}: expected one of {', '.join(SEVERITIES)}"
        )
    result = scan_environment(args.python, tuple(args.paths))
    if args.json == "-":
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_text(result, sys.stdout)
        if args.json:
            try:
                with open(args.json, "w") as fh:
                    json.dump(result.to_json(), fh, indent=2)
            except OSError as exc:
                raise UsageError(f"--json {args.json}: cannot write ({exc.strerror})") from exc
    return exit_code(result.findings, args.fail_on)
