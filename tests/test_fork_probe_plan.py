"""A planned run (pytest plugin, a real venv, real C builds): every planned module with a
workload gets a fork item; the one whose own pthread pool does not survive fork fails with
``fork-unsafe-threads``, its threads named, the spawn start method verified with the real
workload and OMP_NUM_THREADS=1 not claimed; the fork-safe one passes its probe."""

from __future__ import annotations

import json
import os

import pytest
from cbuild import extension_suffix
from test_fork_probe import PROBE, build_calm, build_pool
from test_rules import SYSTEM_LIBGOMP
from test_static_trust_plan import distribution
from venvs import make_venv

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def pool_env(tmp_path_factory: pytest.TempPathFactory) -> str:
    """rcpool (its extension maps libgomp and runs its own pool) and rccalm (joins its
    threads), each a distribution in a fresh venv."""
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    python, site = make_venv(tmp_path_factory.mktemp("forkplan") / "venv")
    build_pool(site / "rcpool", "_rcpool")
    build_calm(site / "rccalm", "_rccalm")
    for dist in ("rcpool", "rccalm"):
        distribution(site, dist, {f"{dist}/__init__.py": f"from ._{dist} import compute\n"})
    return python


@pytest.mark.slow
def test_a_planned_run_fails_the_fork_unsafe_module_only(
    pytester: pytest.Pytester, pool_env: str
) -> None:
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={pool_env}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=90", "--rc-modules=rcpool,rccalm",
        "--rc-workload=rcpool=rcpool.compute()", "--rc-workload=rccalm=rccalm.compute()",
        "-k", "fork:",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["FAILED runtime-conflicts::fork:rcpool - HUNG*"])
    result.assert_outcomes(passed=1, failed=1)
    data = json.loads(report.read_text())
    entries = {e["plan"]["item"]: e for e in data["scenarios"] if e.get("plan")}
    calm, pool = entries["fork:rccalm"], entries["fork:rcpool"]
    assert calm["outcome"] == "passed" and calm["probes"] == [PROBE]
    assert pool["probes"] == [PROBE, "fork-after-parallel"]
    assert pool["verdict"]["rule"] == "fork-unsafe-threads"
    workers = [t for t in pool["threads_at_fork"] if t["comm"] == "rcpool-worker"]
    assert len(workers) == 2 and all(
        t["library"].endswith("_rcpool" + extension_suffix()) for t in workers
    )
    assert "2 x rcpool-worker" in pool["verdict"]["cause"]
    avoided = [a["change"] for a in pool["avoided_by"]]
    assert any("get_context('spawn')" in change for change in avoided)
    assert not any("OMP_NUM_THREADS" in change for change in avoided)
    tried = [e["change"] for e in pool["experiments"]]
    assert "set OMP_NUM_THREADS=1 in the environment" in tried
    result.stdout.fnmatch_lines(["*fork-unsafe-threads*"])
