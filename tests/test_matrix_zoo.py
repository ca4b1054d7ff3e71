"""The matrix end to end on the scenario zoo's real wheels, offline (``--find-links`` a folder
of the built wheels, ``--no-index``): a candidate of two wheels (an OpenMP runtime and an
OpenBLAS each vendored) against partners that conflict with it, share a runtime family with it
without a crash, share nothing, and cannot be installed; then a baseline, and a second run
that reuses the environments."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from zoo_support import ZooWheels

SCENARIOS = ("openmp-duplicate", "blas-duplicate", "control-shared-runtime")
OMP_KEY = "openmp-duplicate: zoo-iomp-a/libiomp5.so + zoo-iomp-b/libiomp5.so"


def _matrix(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    links = tmp_path / "wheels"
    candidates = [str(next(links.glob(f"{name}-*.whl"))) for name in ("zoo_iomp_a", "zoo_blas32")]
    cmd = [
        sys.executable, "-m", "pytest_runtimeconflict", "matrix", *candidates,
        "--find-links", str(links), "--no-index", "--cache-dir", str(tmp_path / "cache"),
        "--pytest-arg=--rc-variants=none", "--pytest-arg=--rc-timeout=60", *args,
    ]  # fmt: skip
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=1800)
    return proc, time.monotonic() - start


def _rows(path: Path) -> dict[str, Any]:
    return {row["partner"]: row for row in json.loads(path.read_text())["rows"]}


@pytest.mark.slow
def test_matrix_on_the_zoo(tmp_path: Path, zoo_wheels: ZooWheels) -> None:
    (tmp_path / "wheels").mkdir()
    for name in SCENARIOS:
        for wheel in zoo_wheels.check(name):
            shutil.copy(wheel, tmp_path / "wheels")
    partners = ("--with", "zoo-iomp-b", "--with", "zoo-blas64", "--with", "zoo-ctl-a")
    first, first_s = _matrix(
        tmp_path, *partners, "--with", "zoo-no-such-wheel", "--json", "m.json", "--jobs", "2"
    )
    assert first.returncode == 2, first.stdout + first.stderr  # the uninstallable partner
    rows = _rows(tmp_path / "m.json")
    assert {p: r["outcome"] for p, r in rows.items()} == {
        "zoo-iomp-b": "conflict",
        "zoo-blas64": "latent",
        "zoo-ctl-a": "clean",
        "zoo-no-such-wheel": "error",
    }
    (conflict,) = rows["zoo-iomp-b"]["conflicts"]
    assert conflict["rule"] == "openmp-duplicate" and conflict["reproduces"] is True
    assert conflict["minimal_order"][:2] == ["zoo_iomp_a", "zoo_iomp_b"]
    assert [x["rule"] for x in rows["zoo-blas64"]["latent"]] == ["latent-blas"]
    assert (
        "No matching distribution found for zoo-no-such-wheel" in rows["zoo-no-such-wheel"]["error"]
    )
    assert rows["zoo-iomp-b"]["version"] == "1.0" and rows["zoo-no-such-wheel"]["version"] is None
    assert all(rows[p]["child_runs"] > 0 for p in ("zoo-iomp-b", "zoo-blas64", "zoo-ctl-a"))

    # The baseline: written from the run, the conflict is then known (exit 0), and the
    # environments of the first run are reused.
    second, second_s = _matrix(
        tmp_path, *partners, "--baseline", "b.json", "--update-baseline", "--jobs", "2"
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stderr.count("environment reused") == 3
    assert "openmp-duplicate (known)" in second.stdout
    records = json.loads((tmp_path / "b.json").read_text())["conflicts"]
    assert [r["rule"] for r in records] == ["openmp-duplicate"]
    print(f"\nmatrix on the zoo: first run {first_s:.1f} s, second run (reused) {second_s:.1f} s")

    # A conflict the baseline does not hold fails the matrix (exit 1), naming it.
    (tmp_path / "b.json").write_text(
        json.dumps({"schema": "pytest-runtimeconflict/baseline/1", "conflicts": []})
    )
    third, _ = _matrix(tmp_path, "--with", "zoo-iomp-b", "--baseline", "b.json")
    assert third.returncode == 1, third.stdout + third.stderr
    assert f"zoo-iomp-b: NEW {OMP_KEY}" in third.stdout
