"""``python -m pytest_runtimeconflict merge REPORT.json...``: one report and one verdict from
the reports of a plan's shards (``pytest --runtime-conflicts --rc-shard=K/N --rc-report=...``
in each job of a CI matrix)."""

from __future__ import annotations

import argparse
import os
import sys

from pytest_runtimeconflict.report import annotate
from pytest_runtimeconflict.report.html import write_html
from pytest_runtimeconflict.report.jsonreport import write_report
from pytest_runtimeconflict.report.merge import exit_code, load_report, merge_reports, summary_lines
from pytest_runtimeconflict.vocabulary import ANNOTATION_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``merge``."""
    parser.add_argument(
        "reports", nargs="+", metavar="REPORT.json", help="the shards' --rc-report files"
    )
    parser.add_argument("--json", metavar="FILE", help="write the merged report to FILE")
    parser.add_argument(
        "--html",
        metavar="FILE",
        help="write the merged report as one self-contained HTML page to FILE (as --rc-html)",
    )
    parser.add_argument(
        "--annotations",
        choices=ANNOTATION_CHOICES,
        default="auto",
        help="GitHub workflow commands per distinct conflict: github, none, or auto (the "
        "default: github when GITHUB_ACTIONS=true)",
    )


def main(args: argparse.Namespace) -> int:
    """Merge, print the summary; exit 0 (nothing fails), 1 (an item failed), 2 (bad input or a
    shard missing)."""
    merged = merge_reports([load_report(path) for path in args.reports])
    if args.json:
        write_report(args.json, merged.data)
    if args.html:
        write_html(args.html, merged.data, "--html")
    for line in summary_lines(merged):
        print(line)
    if annotate.enabled(args.annotations, os.environ):
        for line in annotate.github_lines(merged.collected, str(merged.data["fail_on"])):
            print(line)
    sys.stdout.flush()
    return exit_code(merged)
