"""The command-line front door: ``python -m pytest_runtimeconflict scan|run|demo``.

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
    "scan": ("pytest_runtimeconflict.scan", "list native runtimes and static conflicts"),
    "run": ("pytest_runtimeconflict.run_cli", "run steps in a fresh child interpreter"),
    "demo": ("pytest_runtimeconflict.demo", "build the scenario zoo and run the plugin on it"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m pytest_runtimeconflict",
        description="Find and explain native runtime conflicts between Python wheels.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="{scan,run,demo}")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, return its exit code (2 on usage/input errors)."""
    parser = build_parser()
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
