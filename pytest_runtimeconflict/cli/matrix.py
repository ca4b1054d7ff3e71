"""``python -m pytest_runtimeconflict matrix CANDIDATE...``: a wheel builder's regression
suite. Each partner (``--with REQ``, else the built-in catalogue) gets an environment with the
candidate and the partner (cached by content, reused by the next run) and the plugin's planned
run of it, restricted to the plan items that import a candidate module and a partner module.

Prints a table (partner, resolved version, outcome, rules, child runs, seconds); ``--json``
and ``--html`` write it to files. Exit status: 2 when a pairing could not be built (its row is
an ``error`` row; the other rows still run), else 1 when a row has a conflict the
``--baseline`` does not know, else 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.matrix.catalogue import Partner, choose_partners
from pytest_runtimeconflict.matrix.envs import Installer, candidate_of
from pytest_runtimeconflict.matrix.results import Matrix, Row, exit_code, table_lines
from pytest_runtimeconflict.matrix.rows import RowSettings, run_row
from pytest_runtimeconflict.planning.shards import Shard, parse_shard
from pytest_runtimeconflict.report.baseline import Baseline, load_baseline, write_baseline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``matrix``."""
    add = parser.add_argument
    add("candidates", nargs="+", metavar="CANDIDATE", help="wheel files or requirement strings")
    add("--with", dest="partners", action="append", default=[], metavar="REQ",
        help="a partner requirement (repeatable); default: the built-in catalogue")  # fmt: skip
    add("--find-links", action="append", default=[], metavar="DIR",
        help="also look for packages in DIR (passed to pip or uv)")  # fmt: skip
    add("--no-index", action="store_true", help="do not use the package index")
    add("--index-url", metavar="URL", help="the package index to install from")
    add("--python", default=sys.executable, metavar="EXE",
        help="interpreter of the environments (default: this one)")  # fmt: skip
    add("--json", metavar="FILE", help="write the matrix as JSON")
    add("--html", metavar="FILE", help="write the matrix as a self-contained HTML page")
    add("--baseline", metavar="FILE", help="known conflicts (the plugin's baseline format)")
    add("--update-baseline", action="store_true",
        help="write every conflict of this run to the --baseline file")  # fmt: skip
    add("--jobs", type=int, default=1, metavar="N", help="rows run side by side (default 1)")
    add("--shard", metavar="K/N", help="run only shard K of N of the partners (merge the files)")
    add("--all-pairs", action="store_true",
        help="plan every module of each environment, not only candidate-partner pairs")  # fmt: skip
    add("--cache-dir", metavar="DIR",
        help="where environments are cached (default: the user cache, matrix/)")  # fmt: skip
    add("--refresh", action="store_true",
        help="rebuild the environments (new releases of unpinned partners)")  # fmt: skip
    add("--pytest-arg", action="append", default=[], metavar="ARG",
        help="an extra argument for each planned run, e.g. --pytest-arg=--rc-timeout=60")  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the rows, print the table, write the files, return the exit status."""
    _check(args)
    shard = parse_shard("--shard", args.shard or "", "from command line")
    partners = choose_partners(args.partners, Path.cwd())
    settings = RowSettings(
        candidates=tuple(candidate_of(spec) for spec in args.candidates),
        installer=_installer(args),
        all_pairs=args.all_pairs,
        pytest_args=tuple(args.pytest_arg),
    )
    baseline = _baseline(args)
    mine = shard_partners(partners, shard)
    rows = run_rows(mine, settings, args.jobs)
    matrix = Matrix(
        tuple(args.candidates), tuple(rows), shard, tuple(p.requirement for p in partners)
    )
    if args.update_baseline and baseline is not None:
        seen = [c.conflict for row in rows for c in row.conflicts]
        count = write_baseline(baseline.path, seen, "--baseline")
        baseline = Baseline(baseline.path, tuple(seen))
        sys.stderr.write(f"baseline {baseline.path}: wrote {count} conflict(s)\n")
    known = baseline.keys if baseline is not None else frozenset()
    write_outputs(matrix, known, args.json, args.html)
    return exit_code(rows, known)


def _check(args: argparse.Namespace) -> None:
    if args.jobs < 1:
        raise UsageError(f"invalid --jobs {args.jobs}: expected a count >= 1")
    if args.update_baseline and not args.baseline:
        raise UsageError("invalid --update-baseline: it needs --baseline FILE (the file to write)")
    if args.update_baseline and args.shard:
        raise UsageError(
            f"invalid --update-baseline with --shard {args.shard}: one shard sees only part of "
            "the partners; update the baseline from a run without --shard"
        )
    for option in ("json", "html"):
        value = getattr(args, option)
        if value and os.path.isdir(value):
            raise UsageError(f"--{option} {value!r} is a directory; give a file name")
    for folder in args.find_links:
        if "://" not in folder and not os.path.isdir(folder):
            raise UsageError(f"invalid --find-links {folder!r}: no such directory")


def _installer(args: argparse.Namespace) -> Installer:
    cache = Path(args.cache_dir) if args.cache_dir else _user_cache() / "matrix"
    return Installer(
        python=args.python,
        cache_dir=cache,
        find_links=tuple(os.path.abspath(d) if "://" not in d else d for d in args.find_links),
        no_index=args.no_index,
        index_url=args.index_url,
        refresh=args.refresh,
    )


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-runtimeconflict"


def _baseline(args: argparse.Namespace) -> Baseline | None:
    if not args.baseline:
        return None
    return load_baseline(args.baseline, "--baseline", create=args.update_baseline)


def shard_partners(partners: Sequence[Partner], shard: Shard | None) -> list[Partner]:
    """Partner ``i`` (0-based) belongs to shard ``i mod N + 1``: the same split on every job."""
    if shard is None:
        return list(partners)
    return [p for i, p in enumerate(partners) if i % shard.count == shard.index - 1]


def run_rows(partners: Sequence[Partner], settings: RowSettings, jobs: int) -> list[Row]:
    """Every partner's row, ``jobs`` at a time, in partner order; a line on stderr as each
    row ends."""
    done = 0

    def one(partner: Partner) -> Row:
        nonlocal done
        row = run_row(partner, settings)
        done += 1
        reuse = ", environment reused" if row.reused else ""
        sys.stderr.write(
            f"[{done}/{len(partners)}] {partner.requirement}: {row.outcome} "
            f"({row.seconds:.1f} s{reuse})\n"
        )
        return row

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, partners))


def write_outputs(
    matrix: Matrix, known: frozenset[str], json_path: str | None, html_path: str | None
) -> None:
    """Print the table; write ``--json`` and ``--html``."""
    import json

    from pytest_runtimeconflict.matrix.page import render

    sys.stdout.write("\n".join(table_lines(matrix.rows, known)) + "\n")
    sys.stdout.flush()
    try:
        if json_path:
            Path(json_path).write_text(json.dumps(matrix.to_json(), indent=2) + "\n")
        if html_path:
            Path(html_path).write_text(render(matrix, known))
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename!r}: {exc.strerror}") from None
