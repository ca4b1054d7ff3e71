"""CI matrix sharding and ``merge`` end to end, in real pytest sessions over a small plan of
pure-Python modules (an order-dependent SIGSEGV, harmless modules and a scenario file), so
every check runs in seconds. The zoo's version is tests/test_ci_zoo.py."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

MODULES = {
    "sh_a": "VALUE = 1\n",
    "sh_b": "import json\n",
    "sh_c": "import os\n",
    # dies when sh_a was imported before it: an order-dependent crash, diagnosed in a shard
    "sh_crash": "import os, signal, sys\nif 'sh_a' in sys.modules:\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
}
SCENARIO = """
[scenario]
name = "ci"
description = "runs of a sharded plan"

[[run]]
id = "json"
steps = ["json"]

[[run]]
id = "os-then-json"
steps = ["os", "json"]

[[run]]
id = "crash-after-a"
steps = ["sh_a", "sh_crash"]
[run.expect]
outcome = "crashed"
signal = "SIGSEGV"
"""
HANG = """
[[run]]
id = "hang"
steps = ["import time; time.sleep(600)"]
timeout = 30
[run.expect]
outcome = "hung"
"""
PLAN = ("--rc-modules=sh_a,sh_b,sh_c,sh_crash", "--rc-strength=2", "--rc-max-runs=3")


def make_plan(pytester: pytest.Pytester, scenario: str = SCENARIO) -> None:
    pytester.makepyfile(**MODULES)
    pytester.path.joinpath("ci.scenario.toml").write_text(scenario)


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--runtime-conflicts", *PLAN, "--collect-only", "-q", *args
    )
    assert result.ret == 0, result.stderr.str()
    return [line for line in result.stdout.lines if "::" in line and " " not in line]


def session(pytester: pytest.Pytester, name: str, *args: str) -> tuple[Any, dict[str, Any]]:
    report = pytester.path / f"{name}.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--runtime-conflicts", *PLAN, f"--rc-report={report}", *args
    )
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    return result, json.loads(report.read_text())


def merge(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "merge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def distinct_conflicts(report: dict[str, Any]) -> set[str]:
    return {
        e["verdict"]["key"]
        for e in report["scenarios"]
        if e.get("verdict") and e["outcome"] in ("crashed", "failed", "hung")
    }


def test_shards_partition_the_plan_balanced_by_expected_cost(pytester: pytest.Pytester) -> None:
    make_plan(pytester, SCENARIO + HANG)
    everything = collected(pytester)
    # 2 planned sequences, the same 2 with each import RTLD_GLOBAL (the load-mode variant),
    # 4 scenario runs
    assert len(everything) == 8
    assert sum("global(" in n for n in everything) == 2
    shards = [collected(pytester, f"--rc-shard={k}/3") for k in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(everything)  # each item in exactly one shard
    # The expected hang waits out its 30 s timeout (twice, with its minimisation): the
    # costliest item gets a shard of its own; a count-based split would give it company.
    (alone,) = [s for s in shards if any(n.endswith("::hang") for n in s)]
    assert len(alone) == 1
    # Same split on every job: another session collects the same shard.
    assert collected(pytester, "--rc-shard=2/3") == shards[1]


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (
            ["--rc-shard=4/3"],
            "",
            "*invalid --rc-shard '4/3' (from command line): expected K/N with 1 <= K <= N",
        ),
        (["--rc-shard=0/2"], "", "*invalid --rc-shard '0/2' (from command line)*"),
        (["--rc-shard=half"], "", "*invalid --rc-shard 'half' (from command line)*"),
        ([], "runtime_conflicts_shard = 2/1", "*invalid --rc-shard '2/1' (from ini file)*"),
        (
            ["--rc-shard=1/2", "--rc-baseline=b.json", "--rc-update-baseline"],
            "",
            "*invalid --rc-update-baseline with --rc-shard 1/2: one shard sees only part*",
        ),
        (["--rc-annotations=gitlab"], "", "*invalid --rc-annotations 'gitlab'*github, none*"),
    ],
)
def test_bad_ci_option_values(
    pytester: pytest.Pytester, args: list[str], ini: str, expected: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = pytester.runpytest_subprocess("--runtime-conflicts", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "Traceback" not in result.stderr.str()


def test_merged_shards_equal_one_unsharded_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_plan(pytester)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # the merge job annotates as one run would
    whole, whole_report = session(pytester, "whole")
    assert whole.ret == pytest.ExitCode.TESTS_FAILED  # sh_a > sh_crash is a new crash
    paths = []
    for k in (1, 2, 3):
        # one shard under xdist: the controller learns the plan's identity from its workers
        extra = ("-n", "2") if k == 2 else ()
        result, report = session(pytester, f"shard{k}", f"--rc-shard={k}/3", *extra)
        assert report["shard"]["index"] == k and report["shard"]["count"] == 3
        assert report["plan"] == whole_report["plan"]
        paths.append(pytester.path / f"shard{k}.json")
    out = pytester.path / "merged.json"
    proc = merge(*paths, "--json", out, cwd=pytester.path)
    assert proc.returncode == whole.ret, proc.stdout + proc.stderr
    merged = json.loads(out.read_text())
    assert merged["schema"] == whole_report["schema"] == "pytest-runtimeconflict/report/1"
    assert distinct_conflicts(merged) == distinct_conflicts(whole_report) != set()
    assert merged["coverage"] == whole_report["coverage"]
    assert merged["item_outcomes"] == whole_report["item_outcomes"]
    assert merged["merged"] == {"count": 3, "shards": [1, 2, 3], "missing": [], "files": [
        str(p) for p in paths]}  # fmt: skip
    runs = sorted((e["nodeid"], e["steps"]) for e in merged["scenarios"])
    assert runs == sorted((e["nodeid"], e["steps"]) for e in whole_report["scenarios"])
    whole_lines = [ln for ln in whole.stdout.lines if "distinct conflict" in ln]
    assert whole_lines and whole_lines[0] in proc.stdout.splitlines()
    # child runs are processes: each item's runs, diagnosis and re-runs, not report entries
    started = sum(e.get("child_runs", 0) for e in whole_report["scenarios"])
    assert started > len(whole_report["scenarios"]), whole_report["scenarios"]
    assert f" in {started} child run(s) (" in whole_lines[0], whole_lines
    commands = [ln for ln in whole.stdout.lines if ln.startswith("::")]
    assert commands and commands == [ln for ln in proc.stdout.splitlines() if ln.startswith("::")]


def test_merge_names_missing_shards_and_rejects_bad_input(pytester: pytest.Pytester) -> None:
    make_plan(pytester)
    for k in (1, 2):
        # -k leaves out the items that crash (fast); the plan, and so the split, stay whole
        session(pytester, f"shard{k}", f"--rc-shard={k}/3", "-k", "not crash")
    session(pytester, "other", "--rc-shard=3/3", "--rc-modules=sh_a,sh_b")
    shard1, shard2 = pytester.path / "shard1.json", pytester.path / "shard2.json"

    proc = merge(shard1, shard2, cwd=pytester.path)
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[-1].startswith("MISSING shard(s) 3/3: no report given")

    not_json = pytester.path / "notes.json"
    not_json.write_text("shard 3 crashed\n")
    scan = pytester.path / "scan.json"
    scan.write_text(json.dumps({"schema": "pytest-runtimeconflict/scan/1", "objects": []}))
    cases = [
        ((shard1, not_json), "error: report '*notes.json' is not JSON (*); give the files*"),
        ((shard1, scan), "error: report '*scan.json' has schema 'pytest-runtimeconflict/scan/1'*"),
        (
            (shard1, shard2, pytester.path / "other.json"),
            "error: the reports are not shards of one run: different plan id*",
        ),
        ((shard1, shard1), "error: shard 1/3 is in both *; give each shard's report once"),
        ((shard1, pytester.path / "nope.json"), "error: cannot read report '*nope.json'*"),
    ]
    for args, expected in cases:
        proc = merge(*args, cwd=pytester.path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert fnmatch.fnmatch(proc.stderr.strip(), "*" + expected), proc.stderr


def test_a_shard_without_items_succeeds_and_says_so(pytester: pytest.Pytester) -> None:
    make_plan(pytester, SCENARIO.split("[[run]]")[0] + "[[run]]\nid = 'only'\nsteps = ['json']\n")
    result, report = session(pytester, "empty", "--rc-modules=none", "--rc-shard=2/2")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["shard 2/2: 0 of 1 plan item(s) (plan *"])
    assert report["shard"] == {"index": 2, "count": 2, "items": []}


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        ([("setup", "passed"), ("call", "passed"), ("teardown", "passed")], "passed"),
        ([("setup", "passed"), ("call", "failed"), ("teardown", "passed")], "failed"),
        ([("setup", "passed"), ("call", "passed"), ("teardown", "failed")], "error"),
        ([("setup", "failed"), ("teardown", "passed")], "error"),
        ([("setup", "skipped"), ("teardown", "passed")], "skipped"),
        ([("setup", "passed"), ("call", "skipped", True), ("teardown", "passed")], "xfailed"),
        ([("setup", "passed"), ("call", "passed", True), ("teardown", "passed")], "xpassed"),
    ],
)
def test_item_outcome_over_the_phases(phases: list[tuple[Any, ...]], expected: str) -> None:
    from pytest_runtimeconflict.report.ci import item_outcome

    outcome = None
    for when, result, *xfail in phases:
        outcome = item_outcome(outcome, when, result, bool(xfail)) or outcome
    assert outcome == expected
