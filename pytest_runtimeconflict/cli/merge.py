"""``python -m pytest_runtimeconflict merge REPORT.json...``: one report and one verdict from
the reports of a plan's shards (``pytest --runtime-conflicts --rc-shard=K/N --rc-report=...``
in each job of a CI matrix), or one matrix from the ``matrix --shard K/N --json`` files."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

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
        help="write the merged report (as --rc-html) or the merged matrix as one "
        "self-contained HTML page to FILE",
    )
    parser.add_argument(
        "--annotations",
        choices=ANNOTATION_CHOICES,
        default="auto",
        help="GitHub workflow commands per distinct conflict: github, none, or auto (the "
        "default: github when GITHUB_ACTIONS=true)",
    )
    parser.add_argument(
        "--baseline",
        metavar="FILE",
        help="matrix files only: the known conflicts the merged rows are judged by",
    )


def main(args: argparse.Namespace) -> int:
    """Merge, print the summary; exit 0 (nothing fails), 1 (an item failed), 2 (bad input or a
    shard missing)."""
    if _are_matrix_files(args.reports):
        return _merge_matrices(args)
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


def _are_matrix_files(paths: Sequence[str]) -> bool:
    """Whether the files are ``matrix --json`` files (all of them; a mix is bad input)."""
    from pytest_runtimeconflict.errors import UsageError
    from pytest_runtimeconflict.matrix.results import is_matrix_data

    kinds = {}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                kinds[path] = is_matrix_data(json.load(fh))
        except (OSError, ValueError):
            kinds[path] = False  # the report loader names what is wrong with it
    if any(kinds.values()) and not all(kinds.values()):
        others = ", ".join(repr(p) for p, is_matrix in kinds.items() if not is_matrix)
        raise UsageError(
            f"{others}: not matrix files, but other files are; merge matrix files and run "
            "reports separately"
        )
    return all(kinds.values())


def _merge_matrices(args: argparse.Namespace) -> int:
    """One matrix from its shards' files: the table, the files, the matrix's exit status
    (2 also when a shard is missing)."""
    from pytest_runtimeconflict.cli.matrix import write_outputs
    from pytest_runtimeconflict.matrix.results import exit_code as matrix_exit
    from pytest_runtimeconflict.matrix.results import load_matrix, merge_matrices
    from pytest_runtimeconflict.report.baseline import load_baseline

    merged, missing = merge_matrices([(path, load_matrix(path)) for path in args.reports])
    known = load_baseline(args.baseline, "--baseline").keys if args.baseline else frozenset()
    write_outputs(merged, known, args.json, args.html)
    if missing:
        count = load_matrix(args.reports[0]).shard
        of = f" of {count.count}" if count else ""
        shards = ", ".join(str(i) for i in missing)
        print(
            f"MISSING shard(s) {shards}{of}: no file given for them, so this matrix is "
            "incomplete; pass every shard's matrix --json file"
        )
    return matrix_exit(merged.rows, known, missing=bool(missing))
