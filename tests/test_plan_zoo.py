"""The planned run over the real scenario zoo without manifests: what load-mode variants,
finding-driven targets and the probes find that plain import sequences miss. Each test plans a
few zoo modules only (the whole zoo is the demo's part 2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from zoo_support import ZooVenv

from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

pytest_plugins = ["pytester"]


def _run(pytester: pytest.Pytester, zoo_venv: ZooVenv, *args: str) -> tuple[Any, dict[str, Any]]:
    report = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={zoo_venv.python}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=60", *args,
    )  # fmt: skip
    return result, (json.loads(report.read_text()) if report.exists() else {})


def _is_plain(entry: dict[str, Any]) -> bool:
    return not (entry["global_imports"] or entry["preload"] or entry["ld_preload"])


@pytest.mark.slow
def test_c_helper_crash_is_found_by_the_global_variant_with_no_hand_written_steps(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    """Plain imports do not crash in either order; each package imported RTLD_GLOBAL first
    makes the other's import crash in its helper's constructor. The planned run finds both, reduced to
    the pair and to the one global import that is needed; with -n 2 it finds the same."""
    zoo_venv.wheels.check("c-helper-ctor-global")
    outcomes = []
    for extra in ([], ["-n", "2"]):
        result, data = _run(pytester, zoo_venv, "--rc-modules=zoo_chg_a,zoo_chg_b", *extra)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        entries = data["scenarios"]
        # Plain imports never crash (both copies mapped: latent, or passed).
        plain = [e["outcome"] for e in entries if _is_plain(e)]
        assert len(plain) >= 2 and set(plain) <= {"passed", "latent"}
        every_crash = [e for e in entries if e["outcome"] == "crashed"]
        assert every_crash and all(e["signal"] == "SIGSEGV" for e in every_crash)
        # the global sequences meet the target's conflicts again: recognised by their
        # sub-runs (same_failure_as), or matched within the item, not diagnosed again
        crashed = [e for e in every_crash if "verdict" in e]
        assert all(
            e.get("same_failure_as") or e.get("same_conflict_as")
            for e in every_crash
            if "verdict" not in e
        )
        found = {
            (tuple(e["minimal_steps"]), tuple(e["load_mode"]["global_imports"])) for e in crashed
        }
        assert found == {
            (("zoo_chg_a", "zoo_chg_b"), ("zoo_chg_a",)),
            (("zoo_chg_b", "zoo_chg_a"), ("zoo_chg_b",)),
        }  # fmt: skip
        first = next(e for e in crashed if e["minimal_steps"][0] == "zoo_chg_a")
        assert first["load_mode"]["order"] == "global(zoo_chg_a)>zoo_chg_b"
        assert first["steps"][first["failed_step"]] == "zoo_chg_b"  # at the second import
        result.stdout.fnmatch_lines(["*minimal order: global(zoo_chg_?) > zoo_chg_?*"])
        # the counter-experiments ran once per conflict, not once per run that showed it
        tried: dict[str, list[bool]] = {}
        for e in crashed:
            tried.setdefault(e["verdict"]["key"], []).append(bool(e.get("experiments")))
        assert all(flags.count(True) == 1 for flags in tried.values()), tried
        outcomes.append(sorted((e["nodeid"], e["id"], e["outcome"]) for e in entries))
    assert outcomes[0] == outcomes[1]


@pytest.mark.slow
def test_a_masked_old_libstdcxx_is_found_by_its_target(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    """Planned as covering sequences only, an earlier module always loads the system
    libstdc++.so.6 before zoo_oldcxx, whose old copy never loads: every run passes and the
    pairs starting with zoo_oldcxx are reported as masked. The static finding's target imports
    the pair alone and reproduces the failure."""
    zoo_venv.wheels.check("libstdcxx-old-shadow")
    zoo_venv.wheels.check("libstdcxx-shared-duplicate")
    modules = "--rc-modules=zoo_newcxx,zoo_oldcxx,zoo_sxd_system"
    plain, data = _run(pytester, zoo_venv, modules, "--rc-variants=none")
    plain.assert_outcomes(passed=2)
    masked = {tuple(m["tuple"]) for m in data["coverage"]["masked"]}
    assert masked == {("zoo_oldcxx", "zoo_newcxx"), ("zoo_oldcxx", "zoo_sxd_system")}
    plain.stdout.fnmatch_lines(["*masked (an earlier module's copy of the library served them)*"])

    result, data = _run(pytester, zoo_venv, modules)
    result.stdout.fnmatch_lines(
        ["FAILED runtime-conflicts::soname-version-shadow:zoo_newcxx+zoo_oldcxx*"]
    )
    failed = [e for e in data["scenarios"] if e["outcome"] == "failed"]
    assert failed[0]["minimal_steps"] == ["zoo_oldcxx", "zoo_newcxx"]
    assert "GLIBCXX_3.4.30" in failed[0]["message"]
    assert failed[0]["plan"]["kind"] == "target"
    masked = {tuple(m["tuple"]) for m in data["coverage"]["masked"]}
    assert ("zoo_oldcxx", "zoo_newcxx") not in masked
    assert data["coverage"]["targeted_pairs"] == 2


@pytest.mark.slow
def test_fork_probe_finds_the_fork_after_openmp_hang(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    zoo_venv.wheels.check("openmp-fork-hang")
    result, data = _run(pytester, zoo_venv, "--rc-modules=zoo_gomp_fork")
    result.stdout.fnmatch_lines(["FAILED runtime-conflicts::fork:zoo_gomp_fork - HUNG*"])
    hung = [e for e in data["scenarios"] if e["outcome"] == "hung"]
    assert hung[0]["verdict"]["rule"] == "openmp-fork-hang"
    assert hung[0]["probes"] == ["fork-after-parallel"]
    assert [e["kind"] for e in hung[0]["exercised"]] == ["openmp", "fork"]
    avoided = [a["change"] for a in hung[0]["avoided_by"]]
    assert "set OMP_NUM_THREADS=1 in the environment" in avoided
    # Without the probe (every other item) the module passes.
    assert all(e["outcome"] == "passed" for e in data["scenarios"] if not e["probes"])


@pytest.mark.slow
def test_locale_probe_turns_two_libstdcxx_copies_into_their_crash(zoo_venv: ZooVenv) -> None:
    """Imports alone: the libstdc++ exercise probe builds a std::locale with each mapped copy,
    as any iostream or regex use does; the second copy throws std::bad_cast."""
    for name in (
        "libstdcxx-static-exported",
        "libstdcxx-shared-duplicate",
        "control-shared-runtime",
    ):
        zoo_venv.wheels.check(name)

    def run(*steps: str) -> Any:
        return run_spec(RunSpec(steps=steps, python=zoo_venv.python, timeout=60))

    for pair in (("zoo_stx_static", "zoo_stx_shared"), ("zoo_sxd_system", "zoo_sxd_vendored")):
        crashed = run(*pair)
        assert (crashed.outcome, crashed.signal, crashed.phase) == (
            "crashed",
            "SIGABRT",
            "exercise",
        )
        assert "std::bad_cast" in crashed.stderr_tail
        assert [e["kind"] for e in crashed.exercised] == ["libstdc++", "libstdc++"]
    control = run("zoo_ctl_a", "zoo_ctl_b")
    assert control.outcome == "passed"
    assert [(e["kind"], e["status"]) for e in control.exercised] == [("libstdc++", "ok")]
    assert run("zoo_stx_static").outcome == "passed"


@pytest.mark.slow
def test_a_finding_no_run_reproduces_is_reported_as_static(
    pytester: pytest.Pytester, zoo_venv: ZooVenv
) -> None:
    """Two copies of one C++ library: under RTLD_GLOBAL the second module silently runs the
    first's code (a wrong result no generic workload can know). The target tries both orders,
    also global, and says so instead of passing silently."""
    zoo_venv.wheels.check("cxx-odr-global")
    result, data = _run(pytester, zoo_venv, "--rc-modules=zoo_odr_v1,zoo_odr_v2")
    result.stdout.fnmatch_lines(
        [
            "static conflicts not reproduced at run time (see the items' reports):",
            "- [[]warning[]] cxx-symbol-duplicate: 2 C++ symbols of namespace zoolib exported*",
        ]
    )
    judged = [e["target"] for e in data["scenarios"] if "target" in e]
    assert judged[0]["item"] == "cxx-symbol-duplicate:zoo_odr_v1+zoo_odr_v2"
    text = judged[0]["findings"][0]["text"]
    assert (
        "tried: zoo_odr_v1>zoo_odr_v2; zoo_odr_v2>zoo_odr_v1; global(zoo_odr_v1)>zoo_odr_v2" in text
    )
    assert "RTLD_GLOBAL" in text and "--rc-workload" in text
