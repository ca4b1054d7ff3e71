"""Runtime exercising and latent duplicates with real runtimes (system libgomp, libiomp5,
scipy-openblas32/64 from the package index)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cbuild import patchelf

from pytest_runtimeconflict.errors import BuildError
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

SYSTEM_GOMP = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"


def renamed_copies(source: str, stem: str, out: Path, tags: tuple[str, ...]) -> list[str]:
    """auditwheel-style copies ``<stem>-<tag>.so`` with that name as SONAME."""
    out.mkdir(parents=True, exist_ok=True)
    copies = []
    for tag in tags:
        dest = out / f"{stem}-{tag}.so"
        shutil.copy2(source, dest)
        subprocess.run([patchelf(), "--set-soname", dest.name, str(dest)], check=True)
        copies.append(str(dest))
    return copies


def load_steps(paths: list[str]) -> tuple[str, ...]:
    return tuple(f"import ctypes; ctypes.CDLL({p!r})" for p in paths)


def run(steps: tuple[str, ...], **kwargs: object) -> RunResult:
    return run_spec(RunSpec(steps=steps, timeout=60, **kwargs))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_gdb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")


@pytest.fixture(scope="module")
def gomp_copies(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    if not os.path.exists(SYSTEM_GOMP):
        pytest.skip(f"{SYSTEM_GOMP} missing: apt-get install libgomp1")
    out = tmp_path_factory.mktemp("gomp")
    return renamed_copies(SYSTEM_GOMP, "libgomp", out, ("a1b2c3d4", "e5f6a7b8"))


def _fetch(package: str, member: str) -> str:
    from pytest_runtimeconflict import zoo

    try:
        return str(zoo.fetch_pypi_file(package, member))
    except BuildError as exc:
        pytest.skip(f"{package} not available: {exc}")


@pytest.fixture(scope="module")
def iomp_copies(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    lib = _fetch("intel-openmp", "*/lib/libiomp5.so")
    out = tmp_path_factory.mktemp("iomp")
    return renamed_copies(lib, "libiomp5", out, ("11111111", "22222222"))


def test_one_openmp_runtime_is_exercised_and_passes() -> None:
    result = run(load_steps([SYSTEM_GOMP]))
    assert result.outcome == "passed", result.message
    gomp = [e for e in result.exercised if e["kind"] == "openmp"]
    assert [os.path.realpath(e["path"]) for e in gomp] == [os.path.realpath(SYSTEM_GOMP)]
    assert gomp[0]["status"] == "ok" and "GOMP_parallel" in gomp[0]["detail"]
    assert [r.runtime for r in result.loaded_runtimes] == ["libgomp"]


def test_no_exercise_calls_nothing() -> None:
    result = run(load_steps([SYSTEM_GOMP]), exercise=False)
    assert result.outcome == "passed" and result.exercised == ()


def test_two_libgomp_copies_are_latent(gomp_copies: list[str]) -> None:
    result = run(load_steps(gomp_copies))
    assert result.outcome == "latent", result.message
    assert "2 openmp runtimes" in result.message
    assert sorted(r.path for r in result.loaded_runtimes) == sorted(gomp_copies)
    assert {e["path"] for e in result.exercised if e["status"] == "ok"} == set(gomp_copies)
    assert set(result.libraries) == set(gomp_copies)
    assert [f.rule for f in result.findings] == ["openmp-duplicate"]
    assert result.to_json()["findings"][0]["rule"] == "openmp-duplicate"


def test_two_libiomp5_copies_abort_when_exercised(iomp_copies: list[str]) -> None:
    result = run(load_steps(iomp_copies))
    assert (result.outcome, result.signal, result.failed_step) == ("crashed", "SIGABRT", None)
    assert result.phase == "exercise"
    assert "while exercising the openmp runtime" in result.message
    assert "OMP: Error #15" in result.stderr_tail
    assert result.exercised[-1]["status"] == "crashed"
    assert result.exercised[-1]["path"] in iomp_copies
    assert set(iomp_copies) <= set(result.libraries)
    assert "openmp-duplicate" in [f.rule for f in result.findings]


def test_kmp_duplicate_lib_ok_only_when_asked(iomp_copies: list[str]) -> None:
    result = run(load_steps(iomp_copies), env=(("KMP_DUPLICATE_LIB_OK", "TRUE"),))
    assert result.outcome == "latent", result.message
    assert all(e["status"] == "ok" for e in result.exercised)


def test_two_openblas_builds_start_both_thread_servers() -> None:
    libs = [
        _fetch("scipy-openblas32", "scipy_openblas32/lib/libscipy_openblas.so"),
        _fetch("scipy-openblas64", "scipy_openblas64/lib/libscipy_openblas64_.so"),
    ]
    result = run(load_steps(libs))
    blas = {e["path"]: e for e in result.exercised if e["kind"] == "blas"}
    assert set(blas) == set(libs), result.exercised
    assert all(e["status"] == "ok" and "cblas_dgemm 64x64 ok" in e["detail"] for e in blas.values())
    assert result.outcome == "latent", result.message
    assert "blas" in result.message
