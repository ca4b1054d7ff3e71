"""The command-line front door: ``python -m pytest_runtimeconflict scan|run|demo|merge|matrix``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``;
this module only dispatches and turns the project's errors into one readable line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pytest_runtimeconflict import __version__
from pytest_runtimeconflict.errors import RuntimeConflictError

PROG = "pytest-runtimeconflict"

SUBCOMMANDS = {
    "scan": ("pytest_runtimeconflict.cli.scan", "list native runtimes and static conflicts"),
    "run": ("pytest_runtimeconflict.cli.run", "run steps in a fresh child interpreter"),
    "demo": ("pytest_runtimeconflict.cli.demo", "build the scenario zoo and run the plugin on it"),
    "merge": ("pytest_runtimeconflict.cli.merge", "merge the JSON reports of a plan's shards"),
    "matrix": (
        "pytest_runtimeconflict.cli.matrix",
        "test candidate wheels against popular partner wheels, one cached environment each",
    ),
}


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is one), if any."""
    return next((a for a in argv if a in SUBCOMMANDS), None)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subparser per subcommand. With ``only``, just that
    subcommand's module is imported (a scan never pays for the sandbox and the diagnosis)."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_runtimeconflict",
        description="Find and explain native runtime conflicts between Python wheels.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if only in (None, name):
            module = importlib.import_module(module_name)
            module.add_arguments(sub_parser)
            sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, return its exit code (2 on usage/input errors)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        return int(args._module.main(args))
    except RuntimeConflictError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
