"""The pytest plugin end to end, in real pytest subprocesses (pytester.runpytest_subprocess)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from venvs import make_env

pytest_plugins = ["pytester"]


# "rc_b" segfaults when imported after "rc_a": an order-dependent crash; "rc_c" is harmless.
ORDER_CRASH = {
    "rc_a": "VALUE = 1\n",
    "rc_b": """
        import os, signal, sys
        if "rc_a" in sys.modules:
            os.kill(os.getpid(), signal.SIGSEGV)
    """,
    "rc_c": "import json\n",
}


def test_inert_without_flag(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml", scenario='[scenario]\nname="x"\ndescription="d"\n[[run]]\nsteps=["json"]\n'
    )
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "runtime-conflicts" not in result.stdout.str()


def test_help_lists_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--runtime-conflicts*", "*--rc-strength=N*", "*--rc-fail-on=*"])


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (
            ["--rc-strength=abc"],
            "",
            "*invalid --rc-strength 'abc' (from command line): expected an integer 1-4*",
        ),
        (
            ["--rc-timeout=0"],
            "",
            "*invalid --rc-timeout '0' (from command line): expected seconds > 0*",
        ),
        (
            ["--rc-fail-on=never"],
            "",
            "*invalid --rc-fail-on 'never' (from command line): expected one of crash, error, latent*",
        ),
        ([], "runtime_conflicts_timeout = soon", "*invalid --rc-timeout 'soon' (from ini file)*"),
        (
            ["--rc-python=/nonexistent/python"],
            "",
            "*invalid --rc-python '/nonexistent/python'*no such executable*",
        ),
        (["--rc-modules=numpy,3d"], "", "*invalid --rc-modules*'3d' is not a module name*"),
    ],
)
def test_bad_option_values(
    pytester: pytest.Pytester, args: list[str], ini: str, expected: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess("--runtime-conflicts", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "Traceback" not in result.stderr.str()


def test_collect_only_shows_plan(pytester: pytest.Pytester, tmp_path: Path) -> None:
    python = make_env(tmp_path, ORDER_CRASH)
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts",
        "--rc-modules=rc_a,rc_b,rc_c",
        f"--rc-python={python}",
        "--collect-only",
        "-q",
    )
    result.stdout.fnmatch_lines(
        [
            "runtime-conflicts plan: 3 modules; items: 2 plain, 2 global",
            "runtime-conflicts::rc_a>rc_b>rc_c",
            "runtime-conflicts::rc_c>rc_b>rc_a",
            "runtime-conflicts::global(rc_a)>global(rc_b)>global(rc_c)",
            "runtime-conflicts::global(rc_c)>global(rc_b)>global(rc_a)",
        ]
    )
    assert "4 tests collected" in result.stdout.str()


def test_variants_none_collects_the_plan_as_before(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    python = make_env(tmp_path, ORDER_CRASH)
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts",
        "--rc-modules=rc_a,rc_b,rc_c",
        f"--rc-python={python}",
        "--rc-variants=none",
        "--collect-only",
        "-q",
    )
    result.stdout.fnmatch_lines(
        ["runtime-conflicts::rc_a>rc_b>rc_c", "runtime-conflicts::rc_c>rc_b>rc_a"]
    )
    assert "2 tests collected" in result.stdout.str()


def test_order_dependent_crash_is_one_failure(pytester: pytest.Pytester, tmp_path: Path) -> None:
    python = make_env(tmp_path, ORDER_CRASH)
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts",
        "--rc-modules=rc_a,rc_b,rc_c",
        f"--rc-python={python}",
        f"--rc-report={report}",
        "--rc-timeout=30",
        "--rc-variants=none",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*runtime-conflicts::rc_a>rc_b>rc_c*", "*SIGSEGV*", "*rc_a*rc_b*"])
    result.stdout.fnmatch_lines(["*ordered pairs exercised: 6/6*"])
    data = json.loads(report.read_text())
    assert data["schema"] == "pytest-runtimeconflict/report/1"
    crashed = [s for s in data["scenarios"] if s["outcome"] == "crashed"]
    assert crashed and crashed[0]["signal"] == "SIGSEGV"
    assert crashed[0]["minimal_steps"] == ["rc_a", "rc_b"]
    assert data["coverage"]["tuples_total"] == 6
    assert data["coverage"]["tuples_exercised"] == 6


def test_same_outcome_with_xdist(pytester: pytest.Pytester, tmp_path: Path) -> None:
    python = make_env(tmp_path, ORDER_CRASH)
    outcomes = []
    for extra in ([], ["-n", "2"]):
        report = tmp_path / f"report{len(extra)}.json"
        result = pytester.runpytest_subprocess(
            "--runtime-conflicts",
            "--rc-modules=rc_a,rc_b,rc_c",
            f"--rc-python={python}",
            f"--rc-report={report}",
            "-p",
            "no:cacheprovider",
            *extra,
        )
        # The RTLD_GLOBAL copy of the failing sequence meets the same conflict: skipped as a
        # duplicate of the plain sequence that reports it.
        result.assert_outcomes(failed=1, passed=2, skipped=1)
        data = json.loads(report.read_text())
        outcomes.append(sorted((s["nodeid"], s["outcome"]) for s in data["scenarios"]))
    assert outcomes[0] == outcomes[1]


def test_scenario_file_expected_failure_and_xpass(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    python = make_env(tmp_path, ORDER_CRASH)
    pytester.path.joinpath("order.scenario.toml").write_text(
        textwrap.dedent("""
        [scenario]
        name = "order"
        description = "rc_b crashes after rc_a"

        [[run]]
        id = "a-then-b"
        steps = ["rc_a", "rc_b"]
        [run.expect]
        outcome = "crashed"
        signal = "SIGSEGV"
        failed_step = 1

        [[run]]
        id = "b-then-a"
        steps = ["rc_b", "rc_a"]
        [run.expect]
        outcome = "crashed"
    """)
    )
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts",
        "--rc-modules=none",
        f"--rc-python={python}",
        "-rxXf",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(xfailed=1, failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*b-then-a*conflict no longer happens*"])


def test_malformed_scenario_file_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("bad.scenario.toml").write_text('[scenario]\nname = "x\n')
    result = pytester.runpytest_subprocess("--runtime-conflicts", "--rc-modules=none")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*bad.scenario.toml:*line*"])
    assert "Traceback" not in result.stdout.str()


def test_runtime_sandbox_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fixture="""
        def test_crash(runtime_sandbox):
            result = runtime_sandbox.run(["import os, signal", "os.kill(os.getpid(), signal.SIGABRT)"])
            assert result.outcome == "crashed"
            assert result.signal == "SIGABRT"
            assert result.failed_step == 1
    """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_unknown_module_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    python = make_env(tmp_path, ORDER_CRASH)
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", "--rc-modules=rc_a,rc_nowhere", f"--rc-python={python}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid --rc-modules: rc_nowhere cannot be imported by*"])
    assert "Traceback" not in result.stderr.str()


def test_run_from_a_subfolder_shows_plan_nodes_and_paths_as_they_are(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """pytest run below the rootdir: the failure lines name ``runtime-conflicts::...`` (not
    ``../runtime-conflicts::...``; pytest's progress line still shows the node relative to
    the folder) and paths are normalised."""
    python = make_env(tmp_path, ORDER_CRASH)
    pytester.makeini("[pytest]\n")
    sub = pytester.mkdir("sub")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        result = pytester.runpytest_subprocess(
            "--runtime-conflicts",
            "--rc-modules=rc_a,rc_b,rc_c",
            f"--rc-python={python}",
            "--rc-report=../report.json",
            "--rc-timeout=30",
            "--rc-variants=none",
            "-p",
            "no:cacheprovider",
            f"--rootdir={pytester.path}",
        )
    out = result.stdout.str()
    assert "FAILED runtime-conflicts::rc_a>rc_b>rc_c" in out
    assert "FAILED ../runtime-conflicts" not in out
    assert "sub/../" not in out
    assert (pytester.path / "report.json").exists()
