"""``python -m pytest_runtimeconflict scan``: exit codes, JSON schema, bad input, real venvs."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cbuild import CACHE
from test_rules import SYSTEM_LIBGOMP, make_wheel, renamed_copy, static_cxx_ext, vendoring_wheel

from pytest_runtimeconflict.cli import scan as scan_cli
from pytest_runtimeconflict.errors import InterpreterError, UsageError
from pytest_runtimeconflict.static import scan

HERE = Path(__file__).parent
SCI_VENV = CACHE / "venv-sci"
OBJECT_KEYS = {
    "path",
    "distribution",
    "soname",
    "needed",
    "runpath",
    "rpath",
    "family",
    "runtime",
    "static_libstdcxx",
}
FINDING_KEYS = {
    "rule",
    "family",
    "severity",
    "title",
    "detail",
    "libraries",
    "distributions",
    "advice",
}


def run_main(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    scan_cli.add_arguments(parser)
    return scan_cli.main(parser.parse_args(list(argv)))


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "scan", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=HERE.parent,
    )


@pytest.fixture
def libgomp_pair(tmp_path: Path) -> list[Path]:
    a = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "a", "libgomp-a34b3233.so.1.0.0")
    b = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "b", "libgomp-ff651d7f.so.1.0.0")
    return [vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])]


def test_cli_json_schema_and_error_exit(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path, "nvcvlike", {"nvcvlike/m.so": static_cxx_ext("m", tmp_path / "m", hidden=False)}
    )
    out = tmp_path / "scan.json"
    proc = run_cli(str(wheel), "--json", str(out))
    assert proc.returncode == 1, proc.stderr
    assert "libstdcxx-static-exported" in proc.stdout and "nvcvlike" in proc.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "pytest-runtimeconflict/scan/1"
    (obj,) = [o for o in data["objects"] if o["path"].endswith("!/nvcvlike/m.so")]
    assert (
        set(obj) >= OBJECT_KEYS
        and obj["static_libstdcxx"] == "exported"
        and obj["distribution"] == "nvcvlike"
    )
    (finding,) = data["findings"]
    assert set(finding) >= FINDING_KEYS and finding["severity"] == "error"
    assert finding["libraries"] and all(os.path.isabs(p) for p in finding["libraries"])


def test_fail_on_threshold(libgomp_pair: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(p) for p in libgomp_pair]
    assert run_main(*paths) == 0  # a warning does not reach the default 'error'
    assert run_main(*paths, "--fail-on", "warning") == 1
    assert run_main(*paths, "--fail-on", "info") == 1
    text = capsys.readouterr().out
    assert "openmp/libgomp" in text and "[warning] openmp-duplicate" in text
    assert text.index("Native runtimes") < text.index("Findings:")


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    for argv, needle in [
        ((str(tmp_path / "nope"),), "no such file or directory"),
        (("--python", str(tmp_path / "python9")), "no such file"),
        (("--python", "/bin/true"), "not a working Python interpreter"),
        (("--fail-on", "fatal"), "invalid choice"),
    ]:
        proc = run_cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(InterpreterError):
        scan.scan_environment(python=str(tmp_path / "python9"))
    with pytest.raises(UsageError):
        scan.scan_environment(paths=[str(tmp_path / "nope")])


def test_non_elf_files_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "fake.so").write_text("not elf")
    (tmp_path / "trunc.so.1").write_bytes(b"\x7fELF\x02\x01\x01")
    result = scan.scan_environment(paths=[str(tmp_path)])
    assert {Path(p).name for p, _ in result.skipped} == {"fake.so", "trunc.so.1"}
    assert result.objects == () and result.findings == ()
    assert "fake.so: not an ELF file" in caplog.text


def _make_venv(path: Path, packages: tuple[str, ...]) -> Path:
    """A real venv with ``packages`` from the configured index; skip when pip cannot get them."""
    python = path / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:  # xdist workers share the test cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _create_venv(path, python, packages)


def _create_venv(path: Path, python: Path, packages: tuple[str, ...]) -> Path:
    if (path / ".ready").exists():
        return python
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    if packages:
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *packages],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            pytest.skip(
                f"pip cannot install {' '.join(packages)}: {proc.stderr.strip().splitlines()[-1:]}"
            )
    (path / ".ready").touch()
    return python


@pytest.fixture(scope="session")
def sci_python() -> Path:
    return _make_venv(SCI_VENV, ("numpy", "scipy", "scikit-learn"))


@pytest.mark.slow
def test_real_scientific_venv(
    sci_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_FACTS_CACHE", str(tmp_path / "cache"))
    started = time.perf_counter()
    cold = scan.scan_environment(python=str(sci_python))
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    warm = scan.scan_environment(python=str(sci_python))
    warm_s = time.perf_counter() - started
    print(f"venv-sci scan: {len(cold.objects)} objects, cold {cold_s:.2f}s, warm {warm_s:.2f}s")
    assert [f.to_json() for f in warm.findings] == [f.to_json() for f in cold.findings]
    assert {"numpy", "scipy", "scikit-learn"} <= set(cold.distributions)
    (blas,) = [f for f in cold.findings if f.rule == "blas-duplicate"]
    names = [Path(p).name for p in blas.libraries]
    assert any(n.startswith("libscipy_openblas64_") for n in names)
    assert any(n.startswith("libscipy_openblas-") for n in names)
    assert {"numpy", "scipy"} <= set(blas.distributions)
    gomp = [o for o in cold.objects if o.kind and o.kind.runtime == "libgomp"]
    assert any(o.distribution == "scikit-learn" and "libgomp" in Path(o.path).name for o in gomp)
    assert not [f for f in cold.findings if f.severity == "error"]


def test_pure_python_venv_has_no_finding(tmp_path: Path) -> None:
    python = _make_venv(tmp_path / "venv-pure", ())
    result = scan.scan_environment(python=str(python))
    assert result.findings == ()
    assert "pip" in result.distributions
    assert Path(result.python or "").name.startswith("python")


def test_extensions_sharing_one_runtime_have_no_finding(tmp_path: Path) -> None:
    from test_rules import ext

    wa = make_wheel(
        tmp_path,
        "alpha",
        {"alpha/a.so": ext("a", tmp_path / "a", needed=("libgomp.so.1", "libstdc++.so.6"))},
    )
    wb = make_wheel(
        tmp_path,
        "beta",
        {"beta/b.so": ext("b", tmp_path / "b", needed=("libgomp.so.1", "libstdc++.so.6"))},
    )
    result = scan.scan_environment(paths=[str(wa), str(wb)])
    assert [f.rule for f in result.findings if f.severity != "info"] == []
    runtimes = {o.kind.runtime for o in result.objects if o.kind}
    assert {"libgomp", "libstdc++"} <= runtimes
