"""``--rc-memory-limit`` / ``run --memory-limit``: a data-memory limit set in the child only.

Real child interpreters: a step allocating past a small limit is reported as hitting it (its
own key and message, not diagnosed as a conflict) while the tool keeps running; ``none``
applies no limit; bad values are one line.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from cbuild import compile_shared

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.options import parse_memory_limit
from pytest_runtimeconflict.sandbox.runner import run_spec

pytest_plugins = ["pytester"]

HOG = "x = bytearray(400 * 2**20)"
LIMIT = 200 * 2**20


def test_sizes_parse() -> None:
    where = "from command line"
    assert parse_memory_limit("--rc-memory-limit", "4G", where) == 4 * 2**30
    assert parse_memory_limit("--rc-memory-limit", "512M", where) == 512 * 2**20
    assert parse_memory_limit("--rc-memory-limit", "1.5GiB", where) == int(1.5 * 2**30)
    assert parse_memory_limit("--rc-memory-limit", "none", where) is None
    half = parse_memory_limit("--rc-memory-limit", "50%", where)
    assert half == int(psutil.virtual_memory().total / 2)


@pytest.mark.parametrize("value", ["12Q", "0", "-1G", "10K", "150%", "inf", "nan", "", "G"])
def test_bad_sizes_are_one_line(value: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_memory_limit("--rc-memory-limit", value, "from ini file")
    text = str(info.value)
    assert "\n" not in text
    assert f"invalid --rc-memory-limit {value!r} (from ini file)" in text


def test_child_past_the_limit_is_reported_and_the_tool_is_unaffected() -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    result = run_spec(RunSpec(steps=(HOG,), memory_limit=LIMIT, exercise=False))
    assert result.memory_limit_hit
    assert result.outcome == "failed" and result.exception_type == "MemoryError"
    assert result.message.startswith("hit --rc-memory-limit 200 MiB: MemoryError")
    record = result.to_json()
    assert record["memory_limit_hit"] is True and record["memory_limit"] == LIMIT
    # the limit was the child's only: this process still allocates past it
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert len(bytearray(300 * 2**20)) == 300 * 2**20


CXX_HOG = r"""
#include <cstring>
char *volatile kept;
extern "C" void hog(void) {
    kept = new char[400u << 20];  // uncaught std::bad_alloc: terminate, then SIGABRT
    std::memset(kept, 1, 400u << 20);
}
"""


def test_native_bad_alloc_past_the_limit_is_a_crash_that_hit_it() -> None:
    lib = compile_shared(CXX_HOG, "libhog.so", lang="c++")
    step = f"import ctypes; ctypes.CDLL({str(lib)!r}).hog()"
    result = run_spec(RunSpec(steps=(step,), memory_limit=LIMIT, exercise=False, backtrace=False))
    assert result.outcome == "crashed" and result.signal == "SIGABRT", result.message
    assert result.memory_limit_hit and "std::bad_alloc" in result.stderr_tail
    assert result.message.startswith("hit --rc-memory-limit 200 MiB: crashed with SIGABRT")


def test_the_limit_is_set_in_the_child() -> None:
    step = (
        "import resource; "
        f"assert resource.getrlimit(resource.RLIMIT_DATA) == ({LIMIT}, {LIMIT}), "
        "resource.getrlimit(resource.RLIMIT_DATA)"
    )
    result = run_spec(RunSpec(steps=(step,), memory_limit=LIMIT, exercise=False))
    assert result.outcome == "passed", result.message


def test_none_applies_no_limit() -> None:
    result = run_spec(RunSpec(steps=(HOG,), memory_limit=None, exercise=False))
    assert result.outcome == "passed", result.message
    assert not result.memory_limit_hit


def test_other_failures_under_a_limit_are_not_memory() -> None:
    result = run_spec(RunSpec(steps=("raise ValueError('nope')",), memory_limit=LIMIT))
    assert result.outcome == "failed" and not result.memory_limit_hit
    assert result.message == "ValueError: nope"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_reports_the_limit_without_diagnosing(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = run_cli("--memory-limit", "200M", "--json", str(report), "import os", HOG, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "hit --rc-memory-limit 200 MiB" in proc.stdout
    entry = json.loads(report.read_text())["scenarios"][0]
    assert entry["memory_limit_hit"] is True and entry["memory_limit"] == LIMIT
    assert entry["outcome"] == "failed"
    assert "runs_used" not in entry and "minimal_steps" not in entry  # not diagnosed


def test_cli_bad_value_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("--memory-limit", "lots", "os", cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid --memory-limit 'lots' (from command line)" in lines[0]


def test_session_reports_the_limit(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(hog=HOG)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--runtime-conflicts",
        "--rc-modules=hog",
        "--rc-memory-limit=200M",
        "--rc-report=r.json",
    )
    entries = json.loads((pytester.path / "r.json").read_text())["scenarios"]
    hit = [e for e in entries if e.get("memory_limit_hit")]
    assert hit, result.stdout.str()[-3000:]
    assert hit[0]["memory_limit"] == LIMIT
    assert hit[0]["runs_used"] == 0 and hit[0]["experiments"] == []  # not diagnosed
    assert "hit --rc-memory-limit 200 MiB" in result.stdout.str()


def test_session_bad_ini_value_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nruntime_conflicts_memory_limit = much\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--runtime-conflicts")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr.str()
    assert "invalid --rc-memory-limit 'much' (from ini file)" in errors[0]
