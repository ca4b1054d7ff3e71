"""The CI checks on the real scenario zoo (real wheels in a real venv): shards 1/3, 2/3
and 3/3 merged equal one unsharded run; a baseline holding the zoo's known conflicts passes and
fails again, naming it, when one entry is removed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from report_keys import entry_shapes
from zoo_support import SCENARIOS_DIR, ZooVenv

pytest_plugins = ["pytester"]

SHAPES = Path(__file__).parent / "data" / "report_entry_shapes.json"

# The zoo plan: import orders over the modules of three scenarios (an OpenMP duplicate, an old
# libstdc++ shadowing a new one, the shared-runtime control) plus two scenario files.
ZOO_MODULES = "zoo_iomp_a,zoo_iomp_b,zoo_oldcxx,zoo_newcxx,zoo_ctl_a,zoo_ctl_b"
ZOO_SCENARIOS = ("control-shared-runtime", "libstdcxx-old-shadow")


def _session(
    pytester: pytest.Pytester, zoo_venv: ZooVenv, name: str, *args: str
) -> tuple[Any, dict[str, Any]]:
    report = pytester.path / f"{name}.json"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--runtime-conflicts", f"--rc-python={zoo_venv.python}",
        "--rc-timeout=60", f"--rc-report={report}", "-rfx", *args,
    )  # fmt: skip
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    return result, json.loads(report.read_text())


def _distinct(report: dict[str, Any]) -> set[str]:
    return {
        e["verdict"]["key"]
        for e in report["scenarios"]
        if e.get("verdict") and e["outcome"] in ("crashed", "failed", "hung")
    }


@pytest.mark.slow
def test_zoo_shards_merged_equal_one_unsharded_run(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    for name in ("openmp-duplicate", "libstdcxx-old-shadow", "control-shared-runtime"):
        zoo_venv.wheels.check(name)
    for name in ZOO_SCENARIOS:
        shutil.copytree(SCENARIOS_DIR / name, pytester.path / name)
    plan = (f"--rc-modules={ZOO_MODULES}",)
    whole, whole_report = _session(pytester, zoo_venv, "whole", *plan, "-n", "2")
    shards = []
    for k in (1, 2, 3):
        result, report = _session(pytester, zoo_venv, f"shard{k}", *plan, f"--rc-shard={k}/3")
        assert report["shard"]["items"], f"shard {k}/3 got no item of the zoo plan"
        shards.append(pytester.path / f"shard{k}.json")
    merged_path = pytester.path / "merged.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "merge", *map(str, shards),
         "--json", str(merged_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    merged = json.loads(merged_path.read_text())

    assert whole.ret == pytest.ExitCode.TESTS_FAILED and proc.returncode == whole.ret
    assert _distinct(merged) == _distinct(whole_report)
    assert {k.split(":")[0] for k in _distinct(merged)} >= {
        "openmp-duplicate",
        "soname-version-shadow",
    }
    assert merged["coverage"] == whole_report["coverage"]
    assert merged["item_outcomes"] == whole_report["item_outcomes"]
    (line,) = [ln for ln in whole.stdout.lines if "distinct conflict(s)" in ln]
    assert line in proc.stdout.splitlines()
    assert whole_report["coverage"]["tuples_exercised"] == whole_report["coverage"]["tuples_total"]
    _assert_entry_keys_kept(whole_report)


def _assert_entry_keys_kept(report: dict[str, Any]) -> None:
    """Every kind of report entry this run shares with the committed snapshot (this plan's
    report when the engine's entries became typed records) keeps every key of the snapshot,
    nested records included: the report's keys are a contract. Regenerate the snapshot only
    for a deliberate change of the report (tests/report_keys.py)."""
    snapshot = json.loads(SHAPES.read_text())
    shapes = entry_shapes(report)
    shared = set(snapshot) & set(shapes)
    assert len(shared) >= len(snapshot) // 2, (sorted(snapshot), sorted(shapes))
    for kind in sorted(shared):
        for part, keys in snapshot[kind].items():
            missing = set(keys) - set(shapes[kind].get(part, ()))
            assert not missing, f"{kind} lost {part or 'top-level'} keys {sorted(missing)}"


@pytest.mark.slow
def test_zoo_baseline_known_conflicts_pass_and_a_removed_one_fails(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    zoo_venv.wheels.check("openmp-duplicate")
    zoo_venv.wheels.check("libstdcxx-old-shadow")
    baseline = pytester.path / "rc-baseline.json"
    modules = "--rc-modules=zoo_iomp_a,zoo_iomp_b,zoo_oldcxx,zoo_newcxx"
    args = (modules, f"--rc-baseline={baseline}", "-n", "2")
    recorded, _ = _session(pytester, zoo_venv, "record", *args, "--rc-update-baseline")
    assert recorded.ret == pytest.ExitCode.OK
    data = json.loads(baseline.read_text())
    by_rule = {c["rule"]: c["libraries"] for c in data["conflicts"]}
    assert sorted(by_rule) == ["openmp-duplicate", "soname-version-shadow"]
    # Libraries by distribution and file name, without auditwheel's hash suffix and ABI tag.
    assert by_rule["openmp-duplicate"] == [
        {"distribution": "zoo-iomp-a", "file": "libiomp5.so"},
        {"distribution": "zoo-iomp-b", "file": "libiomp5.so"},
    ]
    assert {"distribution": "zoo-newcxx", "file": "_zoo_newcxx.so"} in by_rule[
        "soname-version-shadow"
    ]

    known, report = _session(pytester, zoo_venv, "known", *args)
    assert known.ret == pytest.ExitCode.OK, known.stdout.str()[-3000:]
    known.stdout.fnmatch_lines(["baseline *rc-baseline.json: 2 known, 0 new, 0 fixed"])
    # Items that meet a known conflict xfail; the others (later items that meet it again are
    # skipped as duplicates, variants that pass) do not fail either.
    outcomes = set(report["item_outcomes"].values())
    assert "xfailed" in outcomes and outcomes <= {"xfailed", "skipped", "passed"}

    data["conflicts"] = [c for c in data["conflicts"] if c["rule"] != "soname-version-shadow"]
    baseline.write_text(json.dumps(data, indent=2))
    one_removed, _ = _session(pytester, zoo_venv, "removed", *args)
    assert one_removed.ret == pytest.ExitCode.TESTS_FAILED
    one_removed.stdout.fnmatch_lines(
        [
            "baseline *rc-baseline.json: 1 known, 1 new, 0 fixed",
            "- new (fails): soname-version-shadow: *zoo-newcxx/_zoo_newcxx.so*zoo-oldcxx/libstdc++.so.6*",
        ]
    )
    # The failing item names the removed conflict; the known one does not fail it.
    one_removed.stdout.fnmatch_lines(
        [
            "_* runtime-conflicts::*zoo_oldcxx* _*",  # the finding's target item, first
            "FAILED: ImportError: *GLIBCXX_3.4.30* not found*",
            "Why: soname-version-shadow (high confidence): *",
        ]
    )
    assert one_removed.stdout.str().count("FAILED runtime-conflicts::") == 1
