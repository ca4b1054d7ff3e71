"""A failure that an earlier item meets too is recognised before it is minimised: an earlier
planned run, cut after the failing module and loaded as planned, that is a sub-experiment of
the failed run (its modules were all imported, its load conditions were all there) and fails
the same way at the same step owns it (``same_failure_as``): one child run, not a diagnosis.
Unit tests of the candidates, then end to end in pytest subprocesses over small pure-Python
environments whose modules crash depending on what was imported and how."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_plugin_variants import run_plan
from venvs import make_env

from pytest_runtimeconflict.engine.owners import sub_runs
from pytest_runtimeconflict.model.plan import PlannedItem, PlannedRun, Variant

pytest_plugins = ["pytester"]


def _item(name: str, *runs: PlannedRun, probes: tuple[str, ...] = ()) -> PlannedItem:
    return PlannedItem(name, "sequence", runs, probes=probes)


def _glob(order: tuple[str, ...], *modules: str) -> PlannedRun:
    return PlannedRun(order, Variant("global", "global", global_imports=modules))


def test_a_sub_run_imports_only_modules_the_failed_run_imported() -> None:
    plain = _item("p", PlannedRun(("a", "b", "c")))
    other = _item("o", PlannedRun(("d", "b")))
    found = sub_runs([plain, other], _item("x"), "b", ("a", "b"), Variant())
    assert [(i.name, prefix) for i, _, prefix in found] == [("p", ("a", "b"))]
    assert sub_runs([plain], _item("x"), "c", ("a", "b"), Variant()) == []  # c never ran


def test_a_sub_run_loads_under_no_condition_the_failed_run_lacked() -> None:
    glob = _item("g", _glob(("a", "b"), "a", "b"))
    pre = _item("p", PlannedRun(("a", "b"), Variant("p", "preload", preload=("/l/libx.so",))))
    env = _item("e", PlannedRun(("a", "b"), Variant("e", "env", env=(("X", "1"),))))
    earlier = [glob, pre, env]
    assert sub_runs(earlier, _item("x"), "b", ("a", "b"), Variant()) == []
    # a global import of a module after the prefix is no condition of it
    after = _item("g2", _glob(("a", "b", "c"), "c"))
    assert [i.name for i, _, _ in sub_runs([after], _item("x"), "b", ("a", "b"), Variant())] == [
        "g2"
    ]
    outer = Variant("all", "user", ("a", "b"), ("/l/libx.so",), (), (("X", "1"),))
    assert [i.name for i, _, _ in sub_runs(earlier, _item("x"), "b", ("a", "b"), outer)] == [
        "g",
        "p",
        "e",
    ]


def test_sub_runs_under_more_of_the_conditions_come_first_then_shorter_ones() -> None:
    """One per item: the run loaded under more of the failed run's conditions (the failure
    may need them), then the shorter prefix; then in plan order."""
    target = _item("t", PlannedRun(("b",)), _glob(("a", "b"), "a"), PlannedRun(("a", "b")))
    seq = _item("s", _glob(("c", "a", "b"), "c", "a", "b"))
    short = _item("short", PlannedRun(("b",)))
    failed = Variant("global", "global", global_imports=("a", "b", "c"))
    found = sub_runs([target, seq, short], _item("x"), "b", ("c", "a", "b"), failed)
    assert [(i.name, r.order, prefix) for i, r, prefix in found] == [
        ("s", ("c", "a", "b"), ("c", "a", "b")),
        ("t", ("a", "b"), ("a", "b")),
        ("short", ("b",), ("b",)),
    ]
    # with other extra probes an earlier run is another experiment
    probed = _item("x", probes=("fork",))
    assert sub_runs([target, seq, short], probed, "b", ("c", "a", "b"), failed) == []


# ------------------------------------------------------------------ end to end

# rc_w.check() segfaults once rc_a was imported; rc_g.check() once rc_a was imported while
# the dlopen flags held RTLD_GLOBAL (it records them at import time).
MODULES = {
    "rc_a": "import os, sys\nGLOBAL = bool(sys.getdlopenflags() & os.RTLD_GLOBAL)\n",
    "rc_w": """
        import os, signal, sys
        def check():
            if "rc_a" in sys.modules:
                os.kill(os.getpid(), signal.SIGSEGV)
    """,
    "rc_g": """
        import os, signal, sys
        def check():
            if getattr(sys.modules.get("rc_a"), "GLOBAL", False):
                os.kill(os.getpid(), signal.SIGSEGV)
    """,
}


def _item_entries(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in data["scenarios"] if e["plan"]["item"] == name]


def test_a_later_item_meeting_an_earlier_items_failure_is_not_minimised_again(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    python = make_env(tmp_path, MODULES)
    result, data = run_plan(
        pytester, python, "-rs", "--rc-modules=rc_a,rc_w", "--rc-variants=none",
        "--rc-workload=rc_w=rc_w.check()",
    )  # fmt: skip
    result.assert_outcomes(failed=1, skipped=1)
    first, second = _item_entries(data, "rc_a>rc_w"), _item_entries(data, "rc_w>rc_a")
    assert first[0]["outcome"] == second[0]["outcome"] == "crashed"
    assert first[0]["runs_used"] > 0 and "verdict" in first[0]
    prior = second[0]["same_failure_as"]
    assert prior["item"] == second[0]["duplicate_of"] == "runtime-conflicts::rc_a>rc_w"
    assert prior["modules"] == ["rc_a", "rc_w"] and prior["run"] == "rc_a>rc_w"
    assert "verdict" not in second[0] and "runs_used" not in second[0]
    # its run and the sub-run of the earlier item; no repair: the conflict is named by an
    # earlier item and struck once every import had run, so the repair without rc_w holds
    # no tuple that was not exercised
    assert second[0]["child_runs"] == 2 < first[0]["child_runs"]
    assert second[0]["child_runs_by_purpose"] == {"plan items": 1, "owner checks": 1}
    assert len(second) == 1
    # the summary lists the conflict once, seen in both items
    result.stdout.fnmatch_lines(["1 distinct conflict(s) in *", "*seen in 2 item(s):"])
    result.stdout.fnmatch_lines(
        ["*crashed at workload rc_w:user as its earlier run rc_a>rc_w does, not diagnosed again"
         " (reported by runtime-conflicts::rc_a>rc_w)*"]
    )  # fmt: skip


def test_a_failure_that_needs_this_items_load_mode_is_still_diagnosed_here(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """rc_g's workload crashes only once rc_a was imported RTLD_GLOBAL: the plain items pass,
    so their sub-runs do not fail and the first global item diagnoses the conflict itself; the
    second global item's failure is the first's sub-run (both imports global there)."""
    python = make_env(tmp_path, MODULES)
    result, data = run_plan(
        pytester, python, "-rs", "--rc-modules=rc_a,rc_g", "--rc-workload=rc_g=rc_g.check()",
    )  # fmt: skip
    crashed = [e for e in data["scenarios"] if e["outcome"] == "crashed"]
    assert len(crashed) >= 2, [e["plan"]["item"] for e in data["scenarios"]]
    diagnosed = [e for e in crashed if "verdict" in e]
    assert len(diagnosed) == 1, [(e["plan"]["item"], e.get("same_failure_as")) for e in crashed]
    assert diagnosed[0]["global_imports"] and "same_failure_as" not in diagnosed[0]
    assert diagnosed[0]["load_mode"]["global_imports"] == ["rc_a"]
    owner = f"runtime-conflicts::{diagnosed[0]['plan']['item']}"
    for entry in crashed:
        if entry is not diagnosed[0]:
            assert entry["duplicate_of"] == owner and entry.get("same_failure_as"), entry
    plain = [e for e in data["scenarios"] if not e["global_imports"]]
    assert plain and all(e["outcome"] == "passed" for e in plain)
    # passed: the two plain items and rc_g's fork probe (a module with a workload)
    result.assert_outcomes(failed=1, passed=3, skipped=len(crashed) - 1)


# ------------------------------------------------------------------ within one item

# rc_b fails to import once rc_a is in; rc_w's workload crashes once rc_c is in.
TWO_CONFLICTS = {
    "rc_a": "X = 1\n",
    "rc_b": "import sys\nif 'rc_a' in sys.modules:\n    raise RuntimeError('rc_b after rc_a')\n",
    "rc_c": "Y = 1\n",
    "rc_w": """
        import os, signal, sys
        def check():
            if "rc_c" in sys.modules:
                os.kill(os.getpid(), signal.SIGSEGV)
    """,
}  # fmt: skip


def test_a_repair_meeting_the_items_earlier_conflict_again_is_not_diagnosed_twice(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """rc_b's import failure cuts the first sequence; of its two repairs (without rc_b, without
    rc_a) both meet rc_w's workload crash after the imports. The first is diagnosed; the
    second holds that minimal order and crashes at the same step: the same conflict, no
    diagnosis."""
    python = make_env(tmp_path, TWO_CONFLICTS)
    result, data = run_plan(
        pytester, python, "-rs", "--rc-modules=rc_a,rc_b,rc_c,rc_w", "--rc-variants=none",
        "--rc-workload=rc_w=rc_w.check()",
    )  # fmt: skip
    first = _item_entries(data, "rc_a>rc_b>rc_c>rc_w")
    runs = [(e["steps"][: len(e["plan"]["order"])], e["outcome"]) for e in first]
    assert runs[:3] == [
        (["rc_a", "rc_b", "rc_c", "rc_w"], "failed"),
        (["rc_a", "rc_c", "rc_w"], "crashed"),
        (["rc_b", "rc_c", "rc_w"], "crashed"),
    ], runs
    assert first[1]["runs_used"] > 0 and "same_conflict_as" not in first[1]
    assert first[2]["same_conflict_as"] == first[1]["id"] and "runs_used" not in first[2]
    assert first[2]["plan"]["conflict"] == first[1]["verdict"]["key"]
    result.stdout.fnmatch_lines(["2 distinct conflict(s) in *"])


def test_item_failures_match_another_order_or_a_held_minimal_order() -> None:
    from pytest_runtimeconflict.engine.repeats import ItemFailures
    from pytest_runtimeconflict.model import RunResult, RunSpec

    def crashed(steps: tuple[str, ...], failed: int | None, **loads: Any) -> Any:
        spec = RunSpec(steps=steps, **loads)
        phase = "step" if failed is not None else "exercise"
        result = RunResult(spec, "crashed", signal="SIGSEGV", failed_step=failed, phase=phase)
        return spec, result

    diagnosis = type("D", (), {"minimal_steps": ("c", "w:check"), "key": "k1", "libraries": ()})()
    failures = ItemFailures()
    spec, result = crashed(("a", "c", "w", "w:check"), 3)
    failures.add(dataclasses_replace(spec, id="run-1"), result, ("a", "c", "w"), diagnosis)
    # another order of the same modules
    assert failures.match(*crashed(("w", "c", "a", "w:check"), 0), ("w", "c", "a")) is not None
    # holds the minimal order, fails at the same step
    held = crashed(("b", "c", "w", "w:check"), 3)
    assert failures.match(*held, ("b", "c", "w")).run_id == "run-1"  # type: ignore[union-attr]
    # ... not at another step, not without the minimal order, not under another load mode
    assert failures.match(*crashed(("b", "c", "w", "w:check"), 1), ("b", "c", "w")) is None
    assert failures.match(*crashed(("b", "w", "w:check"), 2), ("b", "w")) is None
    moded = crashed(("b", "c", "w", "w:check"), 3, global_imports=("b",))
    assert failures.match(*moded, ("b", "c", "w")) is None
    by_id = failures.by_id("run-1")
    assert by_id is not None and by_id.minimal == ("c", "w:check")


def test_a_target_items_failures_match_by_place_and_the_conflicts_libraries() -> None:
    """In a target item (``by_libraries``) a run that failed the same way at the same place
    with the conflict's libraries mapped is that conflict again, whatever its order or load
    mode; without the libraries mapped, or elsewhere, or in a covering item, it is not."""
    from pytest_runtimeconflict.engine.repeats import ItemFailures
    from pytest_runtimeconflict.model import RunResult, RunSpec

    lib = type("L", (), {"path": "/s/a.libs/libx.so"})()
    diagnosis = type("D", (), {"minimal_steps": ("a", "w:b"), "key": "k", "libraries": (lib,)})()

    def failed(steps: tuple[str, ...], at: int, mapped: tuple[str, ...], **loads: Any) -> Any:
        spec = RunSpec(steps=steps, **loads)
        result = RunResult(
            spec, "failed", message="ValueError: bad", failed_step=at, phase="step",
            mapped=mapped,
        )  # fmt: skip
        return spec, result

    libs = ("/s/a.libs/libx.so", "/s/b.libs/liby.so")
    for by_libraries, expected in ((True, True), (False, False)):
        failures = ItemFailures(by_libraries=by_libraries)
        first = failed(("a", "b", "w:b"), 2, libs, global_imports=("a",))
        failures.add(dataclasses_replace(first[0], id="r1"), first[1], ("a", "b"), diagnosis)
        again = failed(("b", "c", "w:b"), 2, libs, global_imports=("b",))
        assert (failures.match(*again, ("b", "c")) is not None) is expected
        elsewhere = failed(("b", "c", "w:c"), 2, libs, global_imports=("b",))
        assert failures.match(*elsewhere, ("b", "c")) is None
        unmapped = failed(("b", "c", "w:b"), 2, libs[1:], global_imports=("b",))
        assert failures.match(*unmapped, ("b", "c")) is None


def dataclasses_replace(spec: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(spec, **changes)
