"""The ``thread-pool-fork-hang`` zoo scenario in a planned run (pytest plugin, the scenario's
wheel built from source in a venv of its own): the fork probe after ``zoo_tpf``'s workload
fails with ``fork-unsafe-threads`` naming the pool library, the pool's own thread variable and
the spawn start method verified with the workload, and the exported reproducer reproduces."""

from __future__ import annotations

import json
import subprocess

import pytest
from zoo_support import SCENARIOS_DIR, zoo_cache_dir

from pytest_runtimeconflict import zoo
from pytest_runtimeconflict.errors import BuildError
from pytest_runtimeconflict.scenario import load_scenario

pytestmark = pytest.mark.slow
pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def python() -> str:
    scenario = load_scenario(SCENARIOS_DIR / "thread-pool-fork-hang" / "scenario.toml")
    missing = zoo.missing_requirements(scenario)
    if missing:
        pytest.skip("; ".join(missing))
    try:
        wheels = zoo.build_scenario(scenario, zoo_cache_dir())
    except BuildError as exc:
        pytest.fail(str(exc), pytrace=False)
    return str(zoo.make_venv(zoo_cache_dir() / "venv-tpf", wheels))


def test_planned_run_names_the_pool_and_verifies_its_advice(
    pytester: pytest.Pytester, python: str
) -> None:
    report, repro = pytester.path / "report.json", pytester.path / "repro"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={python}", f"--rc-report={report}",
        f"--rc-repro-dir={repro}", "-p", "no:cacheprovider", "--rc-timeout=60",
        "--rc-modules=zoo_tpf", "--rc-workload=zoo_tpf=zoo_tpf.compute(100000)",
    )  # fmt: skip
    result.stdout.fnmatch_lines(
        ["- fork-unsafe-threads: libzpool-*.so: hung*",
         "    avoid: set ZPOOL_NUM_THREADS=1 in the environment - found to avoid it*spawn*",
         "FAILED runtime-conflicts::fork:zoo_tpf - HUNG*"]
    )  # fmt: skip
    entry = next(e for e in json.loads(report.read_text())["scenarios"] if e.get("verdict"))
    assert entry["verdict"]["rule"] == "fork-unsafe-threads"
    assert "(worker in libzpool-" in entry["verdict"]["cause"]
    avoided = {a["change"] for a in entry["avoided_by"]}
    assert "set ZPOOL_NUM_THREADS=1 in the environment" in avoided
    assert any("get_context('spawn')" in change for change in avoided)
    scripts = list(repro.glob("fork-unsafe-threads-*.py"))
    assert len(scripts) == 1
    ran = subprocess.run([python, str(scripts[0])], capture_output=True, text=True, timeout=120)
    assert "[repro] reproduced: hang" in ran.stdout + ran.stderr, ran.stderr[-2000:]
