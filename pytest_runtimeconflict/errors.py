"""The one exception family of the project.

Every message says what went wrong, where (file, line, option) and what to do, so the
CLI and the plugin can print it as a single line instead of a traceback.
"""

from __future__ import annotations


class RuntimeConflictError(Exception):
    """Base of every error this package raises on purpose."""


class UsageError(RuntimeConflictError):
    """An option, ini value or command-line argument is invalid."""


class ScenarioFileError(RuntimeConflictError):
    """A scenario manifest (``scenario.toml``) is malformed or semantically wrong."""


class InterpreterError(RuntimeConflictError):
    """The target interpreter (``--python`` / ``--rc-python``) is missing or is not Python."""


class ElfReadError(RuntimeConflictError):
    """A file could not be read as an ELF object (corrupt, truncated, not ELF)."""


class BuildError(RuntimeConflictError):
    """A scenario of the zoo could not be built (missing toolchain piece, compiler error)."""
