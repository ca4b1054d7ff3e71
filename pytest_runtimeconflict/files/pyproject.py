"""A table of ``[tool.pytest-runtimeconflict]`` in a project's ``pyproject.toml``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import UsageError


def tool_table(path: Path, name: str) -> Any:
    """``[tool.pytest-runtimeconflict.<name>]`` of the TOML file ``path`` (``{}`` when the file
    or the table is missing; the caller checks its shape); one line naming the file when it
    is not TOML."""
    if not path.is_file():
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read it as TOML ({exc}); fix the file") from None
    return data.get("tool", {}).get("pytest-runtimeconflict", {}).get(name, {})
