"""The zoo scenarios for imports that rewrite the environment, version checks between two
builds of one library, and a pthread pool that does not survive fork: built from source into
real wheels, installed into a venv of their own (cheap to run alone), each manifest run checked
in a plain child and in the sandbox, and the diagnosis of the failing runs."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from pathlib import Path

import pytest
from zoo_support import SCENARIOS_DIR, classify, run_plain, zoo_cache_dir

from pytest_runtimeconflict import zoo
from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.errors import BuildError
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.scenario import Scenario, load_scenario

pytestmark = pytest.mark.slow
pytest_plugins = ["pytester"]

NAMES = ("plugin-path-rewritten", "version-check-mismatch", "thread-pool-fork-hang")
SCENARIOS = {n: load_scenario(SCENARIOS_DIR / n / "scenario.toml") for n in NAMES}
RUNS = [(n, r.id) for n in NAMES for r in SCENARIOS[n].runs]


@pytest.fixture(scope="module")
def python() -> str:
    """A venv holding exactly the three scenarios' wheels."""
    wheels: list[Path] = []
    for scenario in SCENARIOS.values():
        missing = zoo.missing_requirements(scenario)
        if missing:
            pytest.skip("; ".join(missing))
        try:
            wheels += zoo.build_scenario(scenario, zoo_cache_dir())
        except BuildError as exc:
            pytest.fail(str(exc), pytrace=False)
    return str(zoo.make_venv(zoo_cache_dir() / "venv-envmut", wheels))


def _spec(python: str, name: str, run_id: str) -> RunSpec:
    run = next(r for r in SCENARIOS[name].runs if r.id == run_id)
    return dataclasses.replace(run.spec, python=python, id=f"{name}::{run_id}")


def _expect(name: str, run_id: str):  # type: ignore[no-untyped-def]
    return next(r for r in SCENARIOS[name].runs if r.id == run_id).expect


def _named(libraries: object, scenario: Scenario) -> bool:
    names = [os.path.basename(getattr(lib, "path", lib)) for lib in libraries]  # type: ignore[attr-defined]
    return all(any(fnmatch.fnmatch(n, p) for n in names) for p in scenario.libraries)


@pytest.mark.parametrize(("name", "run_id"), RUNS, ids=[f"{n}::{r}" for n, r in RUNS])
def test_plain_run_matches_manifest(python: str, name: str, run_id: str) -> None:
    result = run_plain(python, _spec(python, name, run_id))
    outcome = classify(result, SCENARIOS[name])
    ok, why = _expect(name, run_id).matches(outcome, result.signal, result.failed_step, result.text)
    assert ok, f"{why}\n{result.stderr[-1500:]}"


@pytest.mark.parametrize(("name", "run_id"), RUNS, ids=[f"{n}::{r}" for n, r in RUNS])
def test_sandbox_run_matches_manifest(
    python: str, name: str, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    result = run_spec(_spec(python, name, run_id))
    ok, why = _expect(name, run_id).matches(
        result.outcome, result.signal, result.failed_step, result.message + result.stderr_tail
    )
    assert ok, f"{why}\n{result.message}\n{result.stderr_tail}"


def test_plugin_path_change_is_recorded_at_the_import(python: str) -> None:
    result = run_spec(_spec(python, "plugin-path-rewritten", "b-then-a"))
    changes = {c.name: c for c in result.env_changes}
    path = changes["ZPLUG_PLUGIN_PATH"]
    # set by the extension's setenv: the C environ only
    assert (path.step, path.before, path.view) == (1, None, "c")
    assert path.after is not None and path.after.endswith("zoo_ppr_a/plugins")
    assert changes["ZPLUG_DATA_DIR"].view == "both"  # set through os.environ


@pytest.mark.parametrize("run_id", ["a-then-b", "b-then-a"])
def test_plugin_path_diagnosis_restores_the_variable(python: str, run_id: str) -> None:
    spec = _spec(python, "plugin-path-rewritten", run_id)
    result = run_spec(spec)
    assert result.outcome == "crashed" and result.signal == "SIGABRT"
    d = diagnose(spec, result)
    assert d.rule == "environment-rewritten", d.cause
    assert "importing zoo_ppr_a set ZPLUG_PLUGIN_PATH (before: unset; after: '" in d.cause
    assert "zoo_ppr_a/plugins'" in d.cause
    assert d.user_advice.startswith("restore ZPLUG_PLUGIN_PATH right after 'zoo_ppr_a'")
    assert "os.unsetenv('ZPLUG_PLUGIN_PATH')" in d.user_advice and d.confidence == "high"
    by_variable = {
        name: e.avoided for e in d.experiments for name in ("ZPLUG_PLUGIN_PATH", "ZPLUG_DATA_DIR")
        if e.change.startswith(f"restore {name} ")
    }  # fmt: skip
    assert by_variable == {"ZPLUG_PLUGIN_PATH": True, "ZPLUG_DATA_DIR": False}
    assert not any(e.avoided for e in d.experiments if e.kind == "order")
    assert _named(d.libraries, SCENARIOS["plugin-path-rewritten"])
    roles = {os.path.basename(lib.path): lib.role for lib in d.libraries}
    assert roles["libzplug_codec.so"] == "found through ZPLUG_PLUGIN_PATH"
    # the restore step, applied to the failing run, is what the advice says it is
    change = next(e for e in d.avoided_by if e.change.startswith("restore ZPLUG_PLUGIN_PATH"))
    step = change.change.split("(unset it: ", 1)[1][:-1]  # the text ends with ")"
    steps = list(spec.steps)
    steps.insert(steps.index("zoo_ppr_a") + 1, step)
    assert run_spec(dataclasses.replace(spec, steps=tuple(steps))).outcome in ("passed", "latent")


def test_version_check_diagnosis_names_the_checked_library(python: str) -> None:
    spec = _spec(python, "version-check-mismatch", "a-global-then-b")
    result = run_spec(spec)
    assert result.outcome == "failed" and "library is 100, caller expects 62" in result.message
    d = diagnose(spec, result)
    assert d.rule == "symbol-interposition", d.cause
    assert _named(d.libraries, SCENARIOS["version-check-mismatch"])
    assert "zimg_create" in d.cause
    assert any(e.kind == "load_mode" for e in d.avoided_by)


def _planned(pytester: pytest.Pytester, python: str, *args: str) -> tuple[object, dict]:  # type: ignore[type-arg]
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={python}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=60", *args,
    )  # fmt: skip
    return result, json.loads(report.read_text())


def test_planned_run_names_the_rewritten_plugin_path(
    pytester: pytest.Pytester, python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    result, data = _planned(
        pytester, python, "--rc-modules=zoo_ppr_a,zoo_ppr_b", "--rc-variants=none",
        "--rc-workload=zoo_ppr_a=zoo_ppr_a.render()", "--rc-workload=zoo_ppr_b=zoo_ppr_b.render()",
    )  # fmt: skip
    result.assert_outcomes(failed=1, skipped=1)  # type: ignore[attr-defined]
    result.stdout.fnmatch_lines(  # type: ignore[attr-defined]
        ["- environment-rewritten: *crashed SIGABRT*",
         "    why: importing zoo_ppr_a set ZPLUG_PLUGIN_PATH (before: unset*",
         "    avoid: restore ZPLUG_PLUGIN_PATH right after 'zoo_ppr_a'*"]
    )  # fmt: skip
    failing = [e for e in data["scenarios"] if e.get("verdict")]
    assert failing[0]["verdict"]["rule"] == "environment-rewritten"
    changes = {c["name"]: c for c in failing[0]["env_changes"]}
    assert changes["ZPLUG_PLUGIN_PATH"]["before"] is None
    assert changes["ZPLUG_PLUGIN_PATH"]["view"] == "c"


def test_planned_run_names_the_version_checked_library(
    pytester: pytest.Pytester, python: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    result, data = _planned(
        pytester, python, "--rc-modules=zoo_vcm_a,zoo_vcm_b",
        "--rc-workload=zoo_vcm_a=zoo_vcm_a.decode()", "--rc-workload=zoo_vcm_b=zoo_vcm_b.decode()",
    )  # fmt: skip
    text = result.stdout.str()  # type: ignore[attr-defined]
    assert "- symbol-interposition:" in text and "zimg_create" in text
    rules = {e["verdict"]["rule"] for e in data["scenarios"] if e.get("verdict")}
    assert rules == {"symbol-interposition"}
