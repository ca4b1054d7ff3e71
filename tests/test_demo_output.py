"""``python -m pytest_runtimeconflict demo`` prints what it found, not pytest's output: its
scenario table, pytest's closing line per part, one line per distinct conflict of part 2 and,
last, the conflict-class table; no pip output, no progress dots, no warnings summary. Run over
a zoo of two real scenarios (``--scenarios``) so part 2 plans four modules, not the whole zoo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from zoo_support import SCENARIOS_DIR, zoo_cache_dir

SCENARIOS = ("openmp-duplicate", "c-helper-ctor-global")


@pytest.mark.slow
def test_demo_prints_what_it_found_and_ends_with_the_class_table(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    for name in SCENARIOS:
        shutil.copytree(SCENARIOS_DIR / name, zoo / name)
    page = tmp_path / "demo.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "demo", "--scenarios", str(zoo),
         "--cache", str(zoo_cache_dir()), "--html", str(page)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1800,
    )  # fmt: skip
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-4000:]
    lines = out.splitlines()
    for noise in ("warnings summary", "bringing up nodes", "Successfully installed", "[100%]"):
        assert noise not in out, noise
    assert sum(line.startswith("pytest (part ") for line in lines) == 2
    # Part 2: one line per distinct conflict, each short, then the classes.
    conflicts = [line for line in lines if line.startswith("- ")]
    rules = sorted(line[2:].split(":")[0] for line in conflicts)
    assert rules == ["openmp-duplicate", "symbol-interposition"], conflicts
    assert all(len(line) <= 200 for line in conflicts), conflicts
    at = lines.index("conflict classes of the zoo (scenarios with a rule) in the planned run:")
    classes = lines[at + 1 : at + 3]
    assert sorted(c.split()[1].rstrip(":") for c in classes) == sorted(SCENARIOS)
    assert all(c.split()[0] == "reproduced" for c in classes), classes
    assert lines[-1].startswith("demo finished: every scenario behaved as its manifest says")
    assert lines[-3].strip() == "2 reproduced"  # the class table closes the findings
    assert page.is_file() and 'class="rc-map"' in page.read_text()
