"""Real throwaway virtual environments for tests (no pip inside: created in a fraction of a
second), holding whatever modules a test drops into their site-packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def make_venv(where: Path) -> tuple[str, Path]:
    """Create a venv at ``where``; return its python and its site-packages directory."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return str(python), Path(site)


def make_env(tmp_path: Path, modules: dict[str, str]) -> str:
    """A venv under ``tmp_path`` whose site-packages holds ``modules`` (name -> source)."""
    python, site = make_venv(tmp_path / "venv")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    return python
