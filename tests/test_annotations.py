"""GitHub Actions annotations: the exact workflow-command lines, GitHub's escaping, the limit of
10 of each kind per step, and a real session printing them (or not)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_runtimeconflict.report.annotate import enabled, github_lines

pytest_plugins = ["pytester"]


def conflict(nodeid: str, outcome: str, rule: str | None, key: str, **extra: Any) -> tuple:
    entry = {
        "outcome": outcome,
        "signal": "SIGSEGV" if outcome == "crashed" else None,
        "verdict": {"rule": rule, "key": key, "cause": "c"},
        "headline": [f"{outcome.upper()}: line 1", "Why: line 2", "Do: line 3"],
        **extra,
    }
    return nodeid, entry


def test_exact_lines_and_escaping() -> None:
    collected = [
        # a failing conflict whose texts hold every character GitHub wants escaped
        (
            "runtime-conflicts::a>b",
            {
                "outcome": "failed",
                "signal": None,
                "verdict": {"rule": "soname-version-shadow", "key": "k1"},
                "headline": ["FAILED: 100% broken\r\nsecond", "Why: a, b: c", "Do: x"],
            },
        ),
        conflict("runtime-conflicts::b>a", "crashed", "openmp-duplicate", "k2"),
        # the same conflict seen again, a duplicate: one annotation, two places
        conflict("runtime-conflicts::c>a", "crashed", "openmp-duplicate", "k2", duplicate_of="x"),
        # known in the baseline: a warning, not an error
        conflict("s.scenario.toml::r", "hung", None, "k3", baseline={"status": "known"}),
    ]
    assert github_lines(collected, "error") == [
        "::error title=runtime conflict openmp-duplicate%3A crashed SIGSEGV::CRASHED: line 1"
        "%0AWhy: line 2%0ADo: line 3%0Aseen in: runtime-conflicts::b>a, runtime-conflicts::c>a",
        "::error title=runtime conflict soname-version-shadow%3A failed::FAILED: 100%25 broken"
        "%0D%0Asecond%0AWhy: a, b: c%0ADo: x%0Aseen in: runtime-conflicts::a>b",
        "::warning title=runtime conflict unattributed%3A hung (known%2C in the baseline)::"
        "HUNG: line 1%0AWhy: line 2%0ADo: line 3%0Aseen in: s.scenario.toml::r",
    ]
    # --rc-fail-on=crash: a failed import is a warning; the crash stays an error
    levels = [line.split(" ", 1)[0] for line in github_lines(collected, "crash")]
    assert levels == ["::error", "::warning", "::warning"]


def test_a_conflict_its_scenario_file_expects_is_a_warning() -> None:
    scenario = {"expected": {"outcome": "crashed"}, "matched": True}
    expected = [conflict("dir/scenario.toml::r", "crashed", "r", "k", scenario=scenario)]
    (line,) = github_lines(expected, "error")
    assert line.startswith("::warning title=runtime conflict r%3A crashed SIGSEGV (expected by")
    # the same conflict also breaks a planned sequence: then it fails the run
    both = [*expected, conflict("runtime-conflicts::a>b", "crashed", "r", "k")]
    (line,) = github_lines(both, "error")
    assert line.startswith("::error title=runtime conflict r%3A crashed SIGSEGV::")


def test_latent_sets_are_warnings_unless_fail_on_latent() -> None:
    entry = {
        "outcome": "latent",
        "loaded_runtimes": [
            {"family": "blas", "runtime": "openblas", "path": "/s/a.libs/libopenblas-1.so"},
            {"family": "blas", "runtime": "openblas", "path": "/s/b.libs/libopenblas-2.so"},
        ],
    }
    expected = (
        "::{level} title=latent runtime conflict%3A blas::LATENT CONFLICT: 2 blas runtimes mapped "
        "at once without a crash, {what}: a.libs/libopenblas-1.so (openblas), "
        "b.libs/libopenblas-2.so (openblas)%0Aseen in: runtime-conflicts::a>b"
    )
    collected = [("runtime-conflicts::a>b", entry)]
    assert github_lines(collected, "error") == [expected.format(level="warning", what="a warning")]
    assert github_lines(collected, "latent") == [
        expected.format(level="error", what="a failure (--rc-fail-on=latent)")
    ]
    # The same set mapped in the other order elsewhere: still one annotation, seen in both.
    reverse = dict(entry, loaded_runtimes=entry["loaded_runtimes"][::-1])
    (line,) = github_lines([*collected, ("runtime-conflicts::b>a", reverse)], "error")
    assert line.endswith("seen in: runtime-conflicts::a>b, runtime-conflicts::b>a")
    # Another set of the same family is another conflict.
    third = {"family": "blas", "runtime": "mkl", "path": "/s/c/lib/libmkl_rt.so.2"}
    other = dict(entry, loaded_runtimes=[*entry["loaded_runtimes"], third])
    lines = github_lines([*collected, ("runtime-conflicts::c", other)], "error")
    assert len(lines) == 2 and "c/lib/libmkl_rt.so.2 (mkl)" in lines[0] + lines[1]


def test_at_most_ten_of_each_kind_most_severe_first_then_the_count() -> None:
    collected = [conflict(f"n::f{i:02}", "failed", "r", f"f{i:02}") for i in range(8)]
    collected += [conflict(f"n::c{i:02}", "crashed", "r", f"c{i:02}") for i in range(6)]
    collected += [
        conflict(f"n::k{i}", "crashed", "r", f"k{i}", baseline={"status": "known"})
        for i in range(3)
    ]
    lines = github_lines(collected, "error")
    errors = [line for line in lines if line.startswith("::error")]
    assert len(errors) == 10 and len(lines) == 13
    # the six crashes first, then three of the eight import failures, then the count
    assert [e.rsplit("seen in: ", 1)[1] for e in errors[:9]] == [
        *(f"n::c{i:02}" for i in range(6)),
        *(f"n::f{i:02}" for i in range(3)),
    ]
    assert errors[9] == (
        "::error title=runtime conflicts::5 more conflict(s) not annotated (GitHub shows 10 per "
        "step)%0Asee the job log or the JSON report"
    )
    assert all(line.startswith("::warning") for line in lines[10:])


def test_enabled_by_setting_or_github_actions() -> None:
    assert enabled("auto", {"GITHUB_ACTIONS": "true"})
    assert not enabled("auto", {"GITHUB_ACTIONS": "false"}) and not enabled("auto", {})
    assert enabled("github", {}) and not enabled("none", {"GITHUB_ACTIONS": "true"})


MODULES = {
    "an_a": "VALUE = 1\n",
    "an_b": "import os, signal, sys\nif 'an_a' in sys.modules:\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
    "an_c": "import json\n",
}


def test_a_session_on_github_actions_prints_one_error_per_conflict(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(**MODULES)
    args = ("-p", "no:cacheprovider", "--runtime-conflicts", "--rc-modules=an_a,an_b,an_c",
            "--rc-max-runs=4", "--rc-report=r.json")  # fmt: skip
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = pytester.runpytest_subprocess(*args)
    scenarios = json.loads((pytester.path / "r.json").read_text())["scenarios"]
    # One conflict, seen by the plain sequence and again by its RTLD_GLOBAL variant (the
    # earlier item's run, re-run, fails there the same way: not diagnosed again): one
    # annotation, from the first item, naming both.
    diagnosed = [e for e in scenarios if "verdict" in e]
    assert {e["verdict"]["key"] for e in diagnosed} == {diagnosed[0]["verdict"]["key"]}
    owned = [e for e in scenarios if "same_failure_as" in e]
    assert [e["same_failure_as"]["item"] for e in owned] == ["runtime-conflicts::an_a>an_b>an_c"]
    seen = diagnosed + owned
    nodes = sorted({e["nodeid"] for e in seen})
    assert nodes == [
        "runtime-conflicts::an_a>an_b>an_c",
        "runtime-conflicts::global(an_a)>global(an_b)>global(an_c)",
    ]
    entry = next(e for e in seen if e["nodeid"] == nodes[0] and "duplicate_of" not in e)
    assert entry["headline"][0] == (
        "CRASHED: SIGSEGV (signal 11) - minimal order, 2 of 3 steps: import an_a > import an_b"
    )
    expected = "::error title=runtime conflict unattributed%3A crashed SIGSEGV::" + "%0A".join(
        [*entry["headline"], "seen in: " + ", ".join(nodes)]
    )
    assert [ln for ln in result.stdout.lines if ln.startswith("::")] == [expected]

    off = pytester.runpytest_subprocess(*args, "--rc-annotations=none")
    assert off.ret == result.ret == pytest.ExitCode.TESTS_FAILED
    assert not [ln for ln in off.stdout.lines if ln.startswith("::")]
    monkeypatch.delenv("GITHUB_ACTIONS")
    assert not [ln for ln in pytester.runpytest_subprocess(*args).stdout.lines if "::error" in ln]
    forced = pytester.runpytest_subprocess(*args, "--rc-annotations=github")
    assert [ln for ln in forced.stdout.lines if ln.startswith("::")] == [expected]
