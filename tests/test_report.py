"""Report texts and JSON, read as a new user would: on real diagnoses of real child runs."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest

from pytest_runtimeconflict.diagnosis import Diagnosis, diagnose
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.report.jsonreport import report_json
from pytest_runtimeconflict.report.text import (
    crashing_thread_backtrace,
    format_failure,
    format_result,
    format_summary_line,
)
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.vocabulary import REPORT_SCHEMA

KILL = "import os; os.kill(os.getpid(), 11)"


@pytest.fixture(scope="module")
def static_cxx(zoo_venv: object) -> tuple[object, Diagnosis]:
    """The static-libstdc++ scenario's first crashing run and its diagnosis."""
    zoo_venv.wheels.check("libstdcxx-static-exported")  # type: ignore[attr-defined]
    scenario = zoo_venv.scenarios["libstdcxx-static-exported"]  # type: ignore[attr-defined]
    run = next(r for r in scenario.runs if r.expect.outcome == "crashed")
    spec = dataclasses.replace(run.spec, python=zoo_venv.python)  # type: ignore[attr-defined]
    result = run_spec(spec)
    assert result.outcome == "crashed"
    return result, diagnose(spec, result)


@pytest.mark.slow
def test_first_three_lines_say_what_why_and_what_to_do(
    static_cxx: tuple[object, Diagnosis],
) -> None:
    result, d = static_cxx
    text = format_failure(result, d)
    what, why, do = text.splitlines()[:3]
    # what broke: outcome, signal, the minimal order
    assert what.startswith("CRASHED: SIGABRT (signal 6)")
    assert "import zoo_stx_static" in what and "import zoo_stx_shared" in what
    assert "std::bad_cast" in what
    # why: the rule, both libraries, and where the extension came from
    assert why.startswith("Why: libstdcxx-static-exported")
    assert "_zoo_stx_static" in why and "libstdc++.so.6" in why
    assert "zoo-stx-static" in why  # the distribution
    # what to do: an avoiding change the experiments found (a libstdc++ preload) + author fix
    best = d.avoided_by[0]
    assert best.kind in ("preload", "ld_preload") and "libstdc++" in best.change
    assert do.startswith("Do: " + best.change)
    assert len(do) <= 240
    assert "-Wl,--exclude-libs,ALL" in text.split("In full:", 1)[1]
    # then the evidence and the experiments table
    assert "Evidence:" in text and "terminate called" in text
    assert "Counter-experiments" in text and "AVOIDS" in text


@pytest.mark.slow
def test_summary_line_and_json(static_cxx: tuple[object, Diagnosis]) -> None:
    result, d = static_cxx
    line = format_summary_line(d)
    assert "\n" not in line
    assert line.startswith("libstdcxx-static-exported (high)")
    assert "avoided by: preload" in line
    data = report_json([(result, d), {"id": "ready-made"}])
    assert data["schema"] == REPORT_SCHEMA
    first = json.loads(json.dumps(data))["scenarios"][0]
    for key in ("minimal_steps", "avoided_by", "libraries", "findings", "verdict", "outcome"):
        assert key in first, key
    assert first["verdict"]["rule"] == "libstdcxx-static-exported"
    assert {lib["role"] for lib in first["library_details"]} >= {"static libstdc++ exporter"}
    assert all(lib["path"].startswith("/") for lib in first["library_details"])
    assert data["scenarios"][1] == {"id": "ready-made"}


@pytest.mark.slow
def test_unsafe_only_avoidance_is_flagged_in_the_third_line(zoo_venv: object) -> None:
    zoo_venv.wheels.check("openmp-duplicate")  # type: ignore[attr-defined]
    spec = RunSpec(steps=("zoo_iomp_a", "zoo_iomp_b"), python=zoo_venv.python)  # type: ignore[attr-defined]
    result = run_spec(spec)
    d = diagnose(spec, result)
    do = format_failure(result, d).splitlines()[2]
    assert "unsafe" in do and "KMP_DUPLICATE_LIB_OK=TRUE" in do
    assert "(unsafe)" in format_summary_line(d)


def test_crash_text_without_a_known_conflict() -> None:
    spec = RunSpec(steps=("import json", KILL), python=sys.executable)
    result = run_spec(spec)
    d = diagnose(spec, result)
    text = format_failure(result, d)
    assert text.splitlines()[0].startswith("CRASHED: SIGSEGV (signal 11)")
    assert "minimal order, 1 of 2 steps" in text.splitlines()[0]
    assert "no known conflict rule (low confidence)" in text.splitlines()[1]
    assert "pytest_runtimeconflict" not in text.split("Python traceback:")[1].split("native")[0]


def test_backtrace_shows_the_crashing_thread_not_the_others() -> None:
    steps = (
        "import threading, time",
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
        KILL,
    )
    result = run_spec(RunSpec(steps=steps, python=sys.executable))
    if not result.gdb_backtrace:
        pytest.skip("gdb is not installed")
    frames = crashing_thread_backtrace(result, limit=40)
    assert "kill" in frames and "nanosleep" not in frames


def test_format_result_of_a_passing_run() -> None:
    result = run_spec(RunSpec(steps=("import json",), python=sys.executable))
    text = format_result(result, None)
    assert text.startswith("scenario -: PASSED in ") and "  step 0: import json" in text
    assert "Do:" not in text  # nothing to diagnose, nothing to advise


def test_the_first_line_names_what_the_run_loaded_before_its_steps() -> None:
    """A conflict found under LD_PRELOAD or a ctypes preload names it in its minimal order."""
    from dataclasses import replace

    from pytest_runtimeconflict.model import RunResult, RunSpec
    from pytest_runtimeconflict.report.text import what_broke

    spec = RunSpec(steps=("a", "b"), python="python", ld_preload=("/x/libiomp5.so",))
    result = RunResult(spec=spec, outcome="crashed", signal="SIGSEGV", signum=11)
    assert what_broke(result, None).endswith("order: LD_PRELOAD libiomp5.so > import a > import b")
    local = replace(spec, ld_preload=(), preload=("/y/liby.so",), preload_mode="local")
    assert what_broke(replace(result, spec=local), None).endswith(
        "order: preload liby.so (RTLD_LOCAL) > import a > import b"
    )
