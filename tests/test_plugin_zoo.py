"""``pytest --runtime-conflicts`` over the real scenario zoo (real wheels in a real venv)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from zoo_support import SCENARIOS_DIR, ZooVenv

pytest_plugins = ["pytester"]


def _run(pytester: pytest.Pytester, zoo_venv: ZooVenv, *args: str) -> tuple[Any, dict[str, Any]]:
    report = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={zoo_venv.python}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=60", *args,
    )  # fmt: skip
    data = json.loads(report.read_text()) if report.exists() else {}
    return result, data


def _basenames(entry: dict[str, Any]) -> set[str]:
    return {os.path.basename(p) for p in entry.get("libraries", [])}


@pytest.mark.slow
def test_old_libstdcxx_shadow_is_one_failure_naming_both_copies(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    zoo_venv.wheels.check("libstdcxx-old-shadow")
    # The plain covering sequences alone (tests/test_plan_zoo.py has the targets' view).
    result, data = _run(
        pytester, zoo_venv, "--rc-modules=zoo_oldcxx,zoo_newcxx", "--rc-variants=none"
    )
    # old>new fails (GLIBCXX_3.4.30 not found), new>old passes: one failure, one pass.
    result.assert_outcomes(failed=1, passed=1)
    text = result.stdout.str()
    assert "GLIBCXX_3.4.30" in text and "soname-version-shadow" in text
    assert "reverse the import order" in text
    failing = [s for s in data["scenarios"] if s["outcome"] == "failed"]
    assert failing and failing[0]["minimal_steps"] == ["zoo_oldcxx", "zoo_newcxx"]
    assert "libstdc++.so.6" in _basenames(failing[0])
    assert any(n.startswith("_zoo_newcxx") for n in _basenames(failing[0]))
    assert data["coverage"]["tuples_exercised"] == data["coverage"]["tuples_total"] == 2


@pytest.mark.slow
def test_openmp_duplicate_found_by_exercising_and_control_passes(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    zoo_venv.wheels.check("openmp-duplicate")
    zoo_venv.wheels.check("control-shared-runtime")
    outcomes = []
    for extra in ([], ["-n", "2"]):
        result, data = _run(
            pytester,
            zoo_venv,
            "--rc-modules=zoo_iomp_a,zoo_iomp_b,zoo_ctl_a,zoo_ctl_b",
            "--rc-variants=none",
            *extra,
        )
        # Both sequences hit the same two libiomp5 copies: one failure, the other a duplicate.
        result.assert_outcomes(failed=1, skipped=1)
        text = result.stdout.str()
        assert "openmp-duplicate" in text and "OMP: Error #15" in text
        assert "1 distinct conflict(s)" in text
        crashed = [s for s in data["scenarios"] if s["outcome"] == "crashed"]
        assert crashed and all(
            sum(n.startswith("libiomp5-") for n in _basenames(s)) == 2 for s in crashed
        )
        outcomes.append(sorted((s["nodeid"], s["outcome"], s["id"]) for s in data["scenarios"]))
    assert outcomes[0] == outcomes[1]


@pytest.mark.slow
def test_zoo_scenario_files_behave_as_their_manifests_say(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    for name in ("control-shared-runtime", "libstdcxx-static-exported"):
        zoo_venv.wheels.check(name)
        shutil.copytree(SCENARIOS_DIR / name, pytester.path / name)
    result, data = _run(pytester, zoo_venv, "--rc-modules=none", "-n", "2", "-rxX")
    # control: 3 passed runs; static libstdc++: 3 passing (fix, alone, imports without
    # exercising), 4 expected failures (regex both orders, stream, imports exercised)
    result.assert_outcomes(passed=6, xfailed=4)
    result.stdout.fnmatch_lines(["*XFAIL*static-then-shared*libstdcxx-static-exported*"])
    crashed = [s for s in data["scenarios"] if s["outcome"] == "crashed"]
    assert crashed
    for entry in crashed:
        names = _basenames(entry)
        assert any(n.startswith("_zoo_stx_static") for n in names)
        assert any(n.startswith("libstdc++.so.6") for n in names)
        assert any(a["kind"] in ("preload", "ld_preload") for a in entry["avoided_by"])


def test_fixed_conflict_is_xpass_strict(pytester: pytest.Pytester, zoo_venv: ZooVenv) -> None:
    zoo_venv.wheels.check("control-shared-runtime")
    Path(pytester.path / "fixed.scenario.toml").write_text(
        "[scenario]\nname = 'fixed'\ndescription = 'was a crash once'\n"
        "[[run]]\nsteps = ['zoo_ctl_a', 'zoo_ctl_b']\n[run.expect]\noutcome = 'crashed'\n"
    )
    result, _ = _run(pytester, zoo_venv, "--rc-modules=none")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*expected crashed but the run passed*"])


def test_latent_copies_are_listed_in_the_summary(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    zoo_venv.wheels.check("blas-duplicate")
    result, data = _run(
        pytester, zoo_venv, "--rc-modules=zoo_blas32,zoo_blas64", "--rc-variants=none"
    )
    # Both sequences map the same two copies: one warning, attributed to the plan item that
    # saw it first, not to a line of the plugin.
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "runtime-conflicts::zoo_blas32>zoo_blas64",
            "  runtime-conflicts:0: RuntimeConflictWarning: latent runtime conflict: 2 blas "
            "runtimes mapped at once without a crash: zoo_blas32.libs/libscipy_openblas-*.so "
            "(zoo-blas32, openblas), zoo_blas64.libs/libscipy_openblas64_-*.so "
            "(zoo-blas64, openblas) (--rc-fail-on=latent fails on it)",
            "",
            "-- Docs:*",
            "*latent: runtimes mapped more than once without a crash*",
            "- blas: zoo_blas32.libs/libscipy_openblas-*.so (zoo-blas32, openblas), "
            "zoo_blas64.libs/libscipy_openblas64_-*.so (zoo-blas64, openblas)",
        ]
    )
    assert {s["outcome"] for s in data["scenarios"]} == {"latent"}
    strict, _ = _run(
        pytester, zoo_venv, "--rc-modules=zoo_blas32,zoo_blas64", "--rc-fail-on=latent",
        "--rc-variants=none",
    )  # fmt: skip
    strict.assert_outcomes(failed=2)


def test_latent_scenario_run_warns_at_its_manifest_line(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    zoo_venv.wheels.check("blas-duplicate")
    (pytester.path / "blas.scenario.toml").write_text(
        "[scenario]\nname = 'blas'\ndescription = 'two OpenBLAS copies'\n\n"
        "[[run]]\nid = 'first'\nsteps = ['zoo_blas32', 'zoo_blas64']\n"
        "[run.expect]\noutcome = 'passed'\n\n"
        "[[run]]\nid = 'second'\nsteps = ['zoo_blas64', 'zoo_blas32']\n"
        "[run.expect]\noutcome = 'passed'\n"
    )
    result, _ = _run(pytester, zoo_venv, "--rc-modules=none")
    # Two runs, one latent set: one warning, at the line of the run that saw it first.
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "blas.scenario.toml::first",
            "  */blas.scenario.toml:6: RuntimeConflictWarning: latent runtime conflict: 2 blas *",
            "    id = 'first'",
        ]
    )
