"""The zoo is honest: every scenario builds into real wheels, installs into a real venv, and
each [[run]] ends in a plain child interpreter (no sandbox code) exactly as its manifest says."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from zoo_support import *  # noqa: F403  (the lead moves this into tests/conftest.py)
from zoo_support import (
    SCENARIOS_DIR,
    ZooVenv,
    ZooWheels,
    classify,
    run_plain,
    runtime_copies,
)

from pytest_runtimeconflict import zoo
from pytest_runtimeconflict.errors import BuildError
from pytest_runtimeconflict.scenario import load_scenario, load_scenarios

pytestmark = pytest.mark.slow

SCENARIOS = load_scenarios(SCENARIOS_DIR)
CASES = [(s.name, r.id) for s in SCENARIOS for r in s.runs]
REQUIRED_CLASSES = {
    "libstdcxx-static-exported",
    "openmp-duplicate",
    "openmp-mixed",
    "blas-duplicate",
    "libstdcxx-old-shadow",
    "cxx-odr-global",
    "control-shared-runtime",
}


def test_zoo_has_every_required_class() -> None:
    assert {s.name for s in SCENARIOS} >= REQUIRED_CLASSES


def test_module_names_are_unique_across_the_zoo() -> None:
    seen: dict[str, str] = {}
    for scenario in SCENARIOS:
        for run in scenario.runs:
            for step in run.spec.steps:
                top = step.split(".")[0]
                if top.startswith("zoo_"):
                    assert seen.setdefault(top, scenario.name) == scenario.name, top


@pytest.mark.parametrize(("name", "run_id"), CASES, ids=[f"{n}::{r}" for n, r in CASES])
def test_scenario_run_matches_manifest(zoo_venv: ZooVenv, name: str, run_id: str) -> None:
    zoo_venv.wheels.check(name)
    scenario = zoo_venv.scenarios[name]
    run = next(r for r in scenario.runs if r.id == run_id)
    if run.spec.exercise and run.expect.outcome == "crashed" and run.expect.failed_step is None:
        pytest.skip("crash expected from runtime exercising after the steps (sandbox only)")
    result = run_plain(zoo_venv.python, run.spec)
    outcome = classify(result, scenario)
    ok, why = run.expect.matches(outcome, result.signal, result.failed_step, result.text)
    assert ok, (
        f"{name}::{run_id}: {why}\nreturncode={result.returncode} step={result.failed_step}\n"
        f"runtime copies={runtime_copies(result, scenario)}\nstderr tail:\n{result.stderr[-1500:]}"
    )


def test_latent_runs_really_map_two_runtime_copies(zoo_venv: ZooVenv) -> None:
    """'latent' is not 'passed': the scenario's runtime copies are both in /proc/self/maps."""
    zoo_venv.wheels.check("openmp-duplicate")
    scenario = zoo_venv.scenarios["openmp-duplicate"]
    run = next(r for r in scenario.runs if r.id == "imports-only")
    copies = runtime_copies(run_plain(zoo_venv.python, run.spec), scenario)
    assert len(copies) == 2
    assert {Path(c).parent.name for c in copies} == {"zoo_iomp_a.libs", "zoo_iomp_b.libs"}


def test_vendored_runtime_is_auditwheel_style(zoo_venv: ZooVenv) -> None:
    """<pkg>.libs/<stem>-<sha8>.so with that SONAME, DT_NEEDED and a $ORIGIN RUNPATH."""
    zoo_venv.wheels.check("openmp-duplicate")
    site = Path(zoo_venv.python).parent.parent / "lib"
    (ext,) = site.glob("python*/site-packages/zoo_iomp_a/_zoo_iomp_a.*.so")
    (lib,) = (ext.parent.parent / "zoo_iomp_a.libs").glob("libiomp5-*.so")
    assert len(lib.name) == len("libiomp5-12345678.so")
    assert zoo.soname_of(lib) == lib.name
    assert lib.name in zoo.patchelf("--print-needed", ext).split()
    assert "libgomp.so.1" not in zoo.patchelf("--print-needed", ext).split()
    assert zoo.patchelf("--print-rpath", ext).strip() == "$ORIGIN/../zoo_iomp_a.libs"


def test_wheels_are_real(zoo_wheels: ZooWheels, tmp_path: Path) -> None:
    """Every wheel's RECORD hashes verify, and pip installs it (into a scratch --target)."""
    wheels = [w for name in zoo_wheels for w in zoo_wheels[name]]
    assert wheels, "no scenario could be built"
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as whl:
            records = _records(whl)
            assert set(records) == set(whl.namelist())
            for name, (digest, size) in records.items():
                if digest:
                    data = whl.read(name)
                    assert digest == zoo._record_hash(data) and size == str(len(data)), name
        tag = zoo.target_info(sys.executable).tag
        assert wheel.name.endswith(f"-{tag}.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
         "--disable-pip-version-check", "--target", str(tmp_path / "t"), *map(str, wheels)],
        check=True,
    )  # fmt: skip
    assert (tmp_path / "t" / "zoo_stx_static" / "__init__.py").exists()


def _records(whl: zipfile.ZipFile) -> dict[str, tuple[str, str]]:
    (record,) = [n for n in whl.namelist() if n.endswith(".dist-info/RECORD")]
    rows = [line.rsplit(",", 2) for line in whl.read(record).decode().splitlines()]
    return {name: (digest, size) for name, digest, size in rows}


def test_second_build_is_served_from_the_cache(zoo_wheels: ZooWheels) -> None:
    """build_zoo again: same wheel files, untouched (a rebuild would replace the directory,
    giving new inodes)."""
    from zoo_support import zoo_cache_dir

    before = {w: (w.stat().st_mtime_ns, w.stat().st_ino) for ws in zoo_wheels.values() for w in ws}
    again = zoo.build_zoo(SCENARIOS_DIR, zoo_cache_dir(), names=sorted(zoo_wheels))
    after = {w: (w.stat().st_mtime_ns, w.stat().st_ino) for ws in again.values() for w in ws}
    assert after == before


def test_changed_source_rebuilds(tmp_path: Path) -> None:
    """The cache key covers the scenario's files: an edit means a new build."""
    src = SCENARIOS_DIR / "control-shared-runtime"
    copy = tmp_path / "scenarios" / "ctl"
    copy.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    scenario = load_scenario(copy / "scenario.toml")
    key = zoo.scenario_key(scenario, sys.executable)
    with (copy / "textops.cpp").open("a") as handle:
        handle.write("// edited\n")
    assert zoo.scenario_key(load_scenario(copy / "scenario.toml"), sys.executable) != key


def test_missing_toolchain_piece_is_skipped_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "build.py").write_text("")
    (tmp_path / "s" / "scenario.toml").write_text(
        '[scenario]\nname = "needs-old-gcc"\ndescription = "d"\nrequires = ["g++-11"]\n'
        '[build]\nscript = "build.py"\n[[run]]\nsteps = ["os"]\n'
    )
    monkeypatch.setenv("PATH", "/nonexistent")
    skipped: dict[str, str] = {}
    assert zoo.build_zoo(tmp_path, tmp_path / "cache", skipped=skipped) == {}
    assert skipped == {"needs-old-gcc": "g++-11 not found: apt-get install g++-11"}
    with pytest.raises(BuildError, match="g\\+\\+-11 not found: apt-get install g\\+\\+-11"):
        zoo.build_zoo(tmp_path, tmp_path / "cache")


def test_failing_build_script_is_a_build_error(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "build.py").write_text("raise SystemExit('compiler exploded')\n")
    (tmp_path / "s" / "scenario.toml").write_text(
        '[scenario]\nname = "broken"\ndescription = "d"\n[build]\nscript = "build.py"\n'
        '[[run]]\nsteps = ["os"]\n'
    )
    with pytest.raises(BuildError, match="build.py failed \\(exit 1\\): compiler exploded"):
        zoo.build_zoo(tmp_path, tmp_path / "cache")
