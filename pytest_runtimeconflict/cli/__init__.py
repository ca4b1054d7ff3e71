"""The command-line front door: ``python -m pytest_runtimeconflict scan|run|demo|merge|matrix``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``;
this module only dispatches and turns the project's errors into one readable line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, TextIO

from pytest_runtimeconflict import __version__
from pytest_runtimeconflict.errors import RuntimeConflictError

PROG = "pytest-runtimeconflict"
# Exit codes of every subcommand: 0 clean, 1 conflicts (findings for scan), 2 usage or input
# error, 3 internal error (a bug); 130, 143, 129 after SIGINT, SIGTERM, SIGHUP.
INTERNAL_ERROR = 3

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
    """Parse ``argv``, run the subcommand, return its exit code: 0 clean, 1 conflicts or
    findings, 2 usage or input error, 3 internal error, 128 + N after signal N (SIGINT,
    SIGTERM, SIGHUP: children killed and run folders removed first)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_chosen(argv))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    handler = logging.StreamHandler()
    handler.setFormatter(_SafeFormatter(f"{PROG}: %(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    stdout, sys.stdout = sys.stdout, _SafeStream(sys.stdout)  # type: ignore[assignment]
    try:
        return _run(args, argv)
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pytest_runtimeconflict.sandbox.runner import handle_termination, restore_handlers

    previous = handle_termination()
    try:
        return int(args._module.main(args))
    except RuntimeConflictError as exc:
        print(terminal_safe(f"{PROG}: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:  # the one catch-all: a bug, said in one line
        return _internal_error(exc, argv, args.verbose)
    finally:
        restore_handlers(previous)


def _interrupted(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 128 + the signal for SIGTERM (143) and SIGHUP (129)."""
    code = getattr(exc, "exit_code", 130)
    print(f"{PROG}: {exc if code != 130 else 'interrupted'}", file=sys.stderr)
    return int(code)


def _internal_error(exc: Exception, argv: Sequence[str], verbose: int) -> int:
    """One line naming the command and the error, the traceback only with ``-v``; exit 3."""
    command = " ".join(argv)
    text = (
        f"{PROG}: internal error while running {command!r}: {type(exc).__name__}: {exc}; "
        + ("the traceback follows" if verbose else "run again with -v for the traceback")
        + ", and please report it"
    )
    print(terminal_safe(text), file=sys.stderr)
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return INTERNAL_ERROR


# Control characters (but tab and newline), C1 controls, line/paragraph separators and the
# surrogates that stand for undecodable bytes of a file name: never written raw.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """``text`` with every character that would act on a terminal (or cannot be encoded)
    shown escaped: ``lib\\x1b[31m.so``, ``lib\\xff.so``."""
    return _UNSAFE.sub(_escape, text)


class _SafeStream:
    """A text stream writing :func:`terminal_safe` text (JSON on stdout is unchanged: it
    holds no raw control characters)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(terminal_safe(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _SafeFormatter(logging.Formatter):
    """Log lines (which name files) with control characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record))
