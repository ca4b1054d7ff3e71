"""``pytest --runtime-conflicts`` with variants, targets and workloads, end to end in real
pytest subprocesses over small pure-Python environments (the zoo's native cases are in
tests/test_plan_zoo.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from venvs import make_env

pytest_plugins = ["pytester"]


def segfaults_once_loaded(culprit: str) -> str:
    """A module whose ``check()`` segfaults once ``culprit`` is imported (else returns True)."""
    return f"""
        import os, signal, sys
        def check():
            if "{culprit}" in sys.modules:
                os.kill(os.getpid(), signal.SIGSEGV)
            return True
    """


# rc_w.check() segfaults once rc_a was imported: the imports alone are harmless in any order,
# so only a workload can show it.
WORKLOAD_CRASH = {
    "rc_a": "VALUE = 1\n",
    "rc_w": segfaults_once_loaded("rc_a"),
    "rc_c": "import json\n",
}


def run_plan(pytester: pytest.Pytester, python: str, *args: str) -> tuple[Any, dict[str, Any]]:
    """``pytest --runtime-conflicts`` over ``python`` in a subprocess: its result and report."""
    report = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={python}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=60", *args,
    )  # fmt: skip
    return result, (json.loads(report.read_text()) if report.exists() else {})


def test_variants_none_runs_plain_specs_under_the_old_node_ids(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    python = make_env(tmp_path, WORKLOAD_CRASH)
    result, data = run_plan(pytester, python, "--rc-modules=rc_a,rc_c,rc_w", "--rc-variants=none")
    result.assert_outcomes(passed=2)
    runs = sorted(
        (e["nodeid"], e["steps"], e["global_imports"], e["preload"], e["ld_preload"], e["env"],
         e["probes"])
        for e in data["scenarios"]
    )  # fmt: skip
    assert runs == [
        ("runtime-conflicts::rc_a>rc_c>rc_w", ["rc_a", "rc_c", "rc_w"], [], [], [], {}, []),
        ("runtime-conflicts::rc_w>rc_c>rc_a", ["rc_w", "rc_c", "rc_a"], [], [], [], {}, []),
    ]


def test_a_workload_shows_what_imports_alone_do_not(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    python = make_env(tmp_path, WORKLOAD_CRASH)
    plain, _ = run_plan(pytester, python, "--rc-modules=rc_a,rc_w", "--rc-variants=none")
    plain.assert_outcomes(passed=2)
    result, data = run_plan(
        pytester, python, "--rc-modules=rc_a,rc_w", "--rc-variants=none",
        "--rc-workload=rc_w=rc_w.check()",
    )  # fmt: skip
    # Both orders crash in the workload: the second sequence is the same conflict.
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*minimal order: rc_a > rc_w > workload rc_w:user*"])
    crashed = [e for e in data["scenarios"] if e["outcome"] == "crashed"]
    assert crashed[0]["minimal_steps"][:2] == ["rc_a", "rc_w"]
    assert crashed[0]["minimal_steps"][2].endswith("rc_w.check()")


def test_a_deselected_item_owns_no_conflict(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Both orders crash in the workload and the second is skipped as the first's conflict;
    with the first deselected (-k, -m, --deselect) the second reports it itself."""
    python = make_env(tmp_path, WORKLOAD_CRASH)
    result, data = run_plan(
        pytester, python, "--rc-modules=rc_a,rc_w", "--rc-variants=none",
        "--rc-workload=rc_w=rc_w.check()", "--deselect=runtime-conflicts::rc_a>rc_w",
    )  # fmt: skip
    result.assert_outcomes(failed=1, deselected=1)
    assert not any("duplicate_of" in e for e in data["scenarios"])


def test_a_conflict_shown_by_a_workload_alone_is_owned_and_repaired_by_its_module(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The workload imports its module itself, so the minimal order keeps the workload but not
    the import: the module still counts as part of the conflict. The second sequence's
    conflict is the first's (owned, skipped: the ownership re-run reaches the workload), and
    the repair of the first leaves out rc_w, whose workload crashed, not rc_a."""
    python = make_env(tmp_path, WORKLOAD_CRASH)
    result, data = run_plan(
        pytester, python, "--rc-modules=rc_a,rc_c,rc_w", "--rc-variants=none",
        "--rc-workload=rc_w=import rc_w; rc_w.check()",
    )  # fmt: skip
    result.assert_outcomes(failed=1, skipped=1)
    crashed = [e for e in data["scenarios"] if e["outcome"] == "crashed" and "verdict" in e]
    minimal = crashed[0]["minimal_steps"]
    assert minimal[0] == "rc_a" and "rc_w" not in minimal and minimal[-1].endswith("check()")
    first = [e for e in data["scenarios"] if e["plan"]["item"] == "rc_a>rc_c>rc_w"]
    assert [e["steps"][:3] for e in first] == [["rc_a", "rc_c", "rc_w"], ["rc_a", "rc_c"]]


# rc_a.check() segfaults once rc_core is loaded, which rc_b and rc_c both bring.
SHARED_CULPRIT = {
    "rc_core": "VALUE = 1\n",
    "rc_a": segfaults_once_loaded("rc_core"),
    "rc_b": "import rc_core\n",
    "rc_c": "import rc_core\n",
}


def test_a_workload_conflict_is_repaired_at_the_workload_module_not_a_partner(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The workload of rc_a, imported first, crashes once rc_core is in; rc_b and rc_c both
    bring it. Cutting the partner the minimal order kept (rc_b) would meet the same conflict
    again through rc_c and diagnose it twice; the repair leaves out rc_a, whose workload
    showed it, and the rest of the sequence passes."""
    python = make_env(tmp_path, SHARED_CULPRIT)
    result, data = run_plan(
        pytester, python, "--rc-modules=rc_a,rc_b,rc_c", "--rc-variants=none",
        "--rc-workload=rc_a=rc_a.check()",
    )  # fmt: skip
    first = [e for e in data["scenarios"] if e["plan"]["item"] == "rc_a>rc_b>rc_c"]
    assert [e["outcome"] for e in first] == ["crashed", "passed"], [e["steps"] for e in first]
    assert "rc_a" not in first[1]["steps"]


def test_pyproject_workloads_and_variants_in_ini(pytester: pytest.Pytester, tmp_path: Path) -> None:
    python = make_env(tmp_path, WORKLOAD_CRASH)
    pytester.makepyprojecttoml(
        "[tool.pytest.ini_options]\n"
        'runtime_conflicts_variants = "none,global:rc_w"\n'
        "[tool.pytest-runtimeconflict.workloads]\n"
        'rc_w = "rc_w.check()"\n'
    )
    result, data = run_plan(pytester, python, "--rc-modules=rc_a,rc_w")
    result.assert_outcomes(failed=1, skipped=2)
    # Each item's run, and the repair without the module that brought the conflict in.
    assert sorted({e["plan"]["item"] for e in data["scenarios"]}) == [
        "global(rc_w)>rc_a",
        "rc_a>rc_w",
        "rc_w>rc_a",
    ]
    glob = [e for e in data["scenarios"] if e["plan"]["item"] == "global(rc_w)>rc_a"]
    assert glob[0]["global_imports"] == ["rc_w"]
    assert glob[0]["duplicate_of"] == "runtime-conflicts::rc_a>rc_w"


@pytest.mark.parametrize(
    ("args", "pyproject", "expected"),
    [
        (["--rc-variants=blobal:x"], "", "*invalid --rc-variants entry 'blobal:x' (from command line): unknown variant 'blobal'*"),
        ([], '[tool.pytest.ini_options]\nruntime_conflicts_variants = "env:X"\n', "*invalid --rc-variants entry 'env:X' (from ini file)*NAME=VALUE*"),
        (["--rc-workload=rc_w"], "", "*invalid --rc-workload 'rc_w' (from command line): expected MODULE=STATEMENT*"),
        ([], "[tool.pytest-runtimeconflict.workloads]\nrc_w = 'rc_w.check('\n", "*pyproject.toml [[]tool.pytest-runtimeconflict.workloads[]] 'rc_w'*"),
        (["--rc-variants=none,global:rc_zz"], "", "*global:rc_zz': rc_zz is not a planned module (rc_a, rc_w)*"),
    ],
)  # fmt: skip
def test_bad_variants_and_workloads_are_one_line(
    pytester: pytest.Pytester, tmp_path: Path, args: list[str], pyproject: str, expected: str
) -> None:
    python = make_env(tmp_path, WORKLOAD_CRASH)
    if pyproject:
        pytester.makepyprojecttoml(pyproject)
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={python}", "--rc-modules=rc_a,rc_w", *args
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
    assert "Traceback" not in result.stderr.str()


def test_a_hang_under_a_load_mode_is_reported_once_not_minimised(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """Each further run of a hang could wait the whole timeout: under a variant the first
    hang is reported as it happened and its item stops."""
    sleepy = "import os, time\nif os.environ.get('RC_HANG'):\n    time.sleep(600)\n"
    python = make_env(tmp_path, {"rc_h": sleepy, "rc_p": "X = 1\n", "rc_q": "Y = 2\n"})
    result, data = run_plan(
        pytester, python, "--rc-modules=rc_h,rc_p,rc_q", "--rc-variants=none,env:RC_HANG=1",
        "--rc-timeout=3",
    )  # fmt: skip
    result.assert_outcomes(passed=2, failed=2)
    hung = [e for e in data["scenarios"] if e["outcome"] == "hung"]
    assert len(hung) == 2 and all(e["env"] == {"RC_HANG": "1"} for e in hung)
    # No re-run (a hang may wait the timeout each time): the steps up to the hanging one.
    assert all(e["runs_used"] <= 1 for e in hung)
    assert all(e["steps"][: len(e["minimal_steps"])] == e["minimal_steps"] for e in hung)
    assert len(data["scenarios"]) == 4  # no repair run after a hang under the variant
    result.stdout.fnmatch_lines(["*hung under this load mode: reported as it happened*"])


def test_a_load_mode_that_breaks_every_import_stops_after_a_few_conflicts(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    crashing = "import os, signal\nif os.environ.get('RC_CRASH'):\n    os.kill(os.getpid(), signal.SIGSEGV)\n"  # fmt: skip
    modules = {f"rc_m{i}": crashing for i in range(8)}
    python = make_env(tmp_path, modules)
    result, data = run_plan(
        pytester, python, f"--rc-modules={','.join(sorted(modules))}",
        "--rc-variants=none,env:RC_CRASH=1", "--rc-max-runs=4",
    )  # fmt: skip
    result.stdout.fnmatch_lines(["*stopped after 6 conflicts under this load mode*"])
    crashed = [e for e in data["scenarios"] if e["outcome"] == "crashed"]
    by_item: dict[str, int] = {}
    for e in crashed:
        by_item[e["plan"]["item"]] = by_item.get(e["plan"]["item"], 0) + 1
    assert set(by_item.values()) == {6}, by_item  # each item stopped at its sixth conflict


def test_a_preload_variant_that_cannot_load_is_a_note_not_a_failure(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """A user's LD_PRELOAD variant whose library needs a library the loader cannot find makes
    the child unable to start (``could-not-start``); the same library as a ctypes preload
    fails in the preload phase. Neither is a conflict between the modules: each item says its
    load mode was not usable and the plain sequences still run."""
    import subprocess

    (tmp_path / "stub.c").write_text("int zz_absent(void) { return 1; }\n")
    (tmp_path / "lib.c").write_text("int zz_absent(void);\nint zz_user(void) { return zz_absent(); }\n")  # fmt: skip
    cc = ["gcc", "-shared", "-fPIC"]
    subprocess.run([*cc, "-o", tmp_path / "libzz_absent.so", "-Wl,-soname,libzz_absent.so", tmp_path / "stub.c"], check=True)  # fmt: skip
    subprocess.run([*cc, "-o", tmp_path / "libzz_user.so", tmp_path / "lib.c", tmp_path / "libzz_absent.so"], check=True)  # fmt: skip
    (tmp_path / "libzz_absent.so").unlink()
    lib = tmp_path / "libzz_user.so"
    python = make_env(tmp_path / "env", {"rc_a": "VALUE = 1\n", "rc_c": "import json\n"})
    result, data = run_plan(
        pytester, python, "--rc-modules=rc_a,rc_c", f"--rc-variants=none,ld_preload:{lib},preload:{lib}"
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert not outcomes.get("failed") and not outcomes.get("errors"), result.stdout.str()
    entries = {e["nodeid"]: e for e in data["scenarios"]}
    started = [e for e in entries.values() if e["ld_preload"]]
    preloaded = [e for e in entries.values() if e["preload"]]
    assert [e["outcome"] for e in started] == ["could-not-start"], started
    assert [(e["outcome"], e["phase"]) for e in preloaded] == [("failed", "preload")], preloaded
    for e in (*started, *preloaded):
        assert "libzz_absent.so" in e["variant_unusable"], e
    plain = [e for e in entries.values() if not (e["ld_preload"] or e["preload"])]
    assert plain and all(e["outcome"] == "passed" for e in plain), plain
    result.stdout.fnmatch_lines(["*load mode not usable:*libzz_absent.so*"])
