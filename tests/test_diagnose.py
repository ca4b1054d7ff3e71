"""Diagnosis: delta debugging, counter-experiments and the verdict, on real child runs.

Synthetic crashes (``os.kill``) check the minimisation itself; a SONAME shadow built from tiny C
objects checks the version-shadow verdict and its experiments; the scenario zoo checks that
every known conflict is minimised to its imports, attributed to its rule and libraries, and
that the experiments the field notes name are found to avoid it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import sys
from pathlib import Path

import pytest
from cbuild import compile_shared, extension_suffix, python_extension_flags
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_runtimeconflict.diagnosis import Diagnosis, conflict_key, diagnose
from pytest_runtimeconflict.diagnosis.minimise import ddmin, one_by_one, reversed_imports
from pytest_runtimeconflict.diagnosis.signature import failure_signature
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.sandbox.runner import run_spec
from pytest_runtimeconflict.scenario import load_scenarios
from pytest_runtimeconflict.static.rules import rule_of
from pytest_runtimeconflict.vocabulary import is_import_step

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"
KILL = "import os; os.kill(os.getpid(), 11)"


class CountingRun:
    """The real sandbox, counting the child runs a diagnosis makes (and the specs it ran)."""

    def __init__(self) -> None:
        self.specs: list[RunSpec] = []

    def __call__(self, spec: RunSpec) -> object:
        self.specs.append(spec)
        return run_spec(spec)


def spec_of(*steps: str, **kw: object) -> RunSpec:
    kw.setdefault("timeout", 30.0)
    return RunSpec(steps=tuple(steps), python=sys.executable, **kw)  # type: ignore[arg-type]


def diagnosed(spec: RunSpec, **kw: object) -> tuple[object, Diagnosis, CountingRun]:
    result = run_spec(spec)
    counter = CountingRun()
    return result, diagnose(spec, result, run=counter, **kw), counter  # type: ignore[arg-type]


# ---------------------------------------------------------------- ddmin, pure


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=12).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))
    )
)
def test_ddmin_finds_exactly_the_needed_items_in_order(case: tuple[int, set[int]]) -> None:
    """For "fails iff all of S are present", ddmin returns S, in the original order."""
    n, needed = case
    calls: list[tuple[int, ...]] = []

    def fails(subset: object) -> bool:
        calls.append(tuple(subset))  # type: ignore[arg-type]
        return needed <= set(subset)  # type: ignore[arg-type]

    assert ddmin(list(range(n)), fails) == sorted(needed)
    assert all(list(c) == sorted(c) for c in calls), "subsets must keep the original order"


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=8).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1))
    )
)
def test_one_by_one_finds_the_needed_items_in_at_most_one_run_each(
    case: tuple[int, set[int]],
) -> None:
    """For "fails iff all of S are present", dropping items one by one returns S in order,
    with at most one candidate per item (ddmin spends more on a handful of steps)."""
    n, needed = case
    calls: list[tuple[int, ...]] = []

    def fails(subset: object) -> bool:
        calls.append(tuple(subset))  # type: ignore[arg-type]
        return needed <= set(subset)  # type: ignore[arg-type]

    assert one_by_one(list(range(n)), fails) == sorted(needed)
    assert len(calls) <= n
    assert all(list(c) == sorted(c) for c in calls)


def test_one_by_one_on_two_imports_and_their_workloads_beats_ddmin() -> None:
    """The usual planned pair: import A, import B, A's workload, B's workload failing; the
    failure needs A's import and B's workload. Dropped one by one (the failing step kept):
    three runs; ddmin needs four times as many."""

    def counted(search: object, **kw: object) -> tuple[list[int], int]:
        calls: list[object] = []

        def fails(subset: object) -> bool:
            calls.append(subset)
            return {0, 3} <= set(subset)  # type: ignore[call-overload]

        return search(list(range(4)), fails, **kw), len(calls)  # type: ignore[operator]

    assert counted(one_by_one, keep=[3]) == ([0, 3], 3)
    kept, runs = counted(ddmin)
    assert kept == [0, 3] and runs >= 9


def test_one_by_one_drops_a_use_before_what_it_uses() -> None:
    """``import os`` is needed by a later assert only: last to first, the assert goes first,
    then the import (first to first would keep both)."""

    def fails(subset: object) -> bool:
        present = set(subset)  # type: ignore[call-overload]
        if 2 in present and 0 not in present:
            return False  # NameError: a different failure
        return {1} <= present

    assert one_by_one([0, 1, 2], fails) == [1]


def test_reversed_imports_keeps_statements_in_place() -> None:
    steps = ("a", "x = 1", "b.c", "a.f()")
    assert reversed_imports(steps) == ("b.c", "x = 1", "a", "a.f()")
    assert reversed_imports(("a", "a.f()")) is None
    assert is_import_step("import numpy") and not is_import_step("import os; os.f()")


# ---------------------------------------------------------------- ddmin, real children


def test_kill_step_alone_is_minimal() -> None:
    result, d, counter = diagnosed(spec_of("import json", "x = 1", KILL, "y=2"))
    assert result.outcome == "crashed" and result.signal == "SIGSEGV"
    assert d.minimal_steps == (KILL,)
    assert d.minimal_result.outcome == "crashed" and d.minimal_result.signal == "SIGSEGV"
    assert d.runs_used == len(counter.specs) and not d.cap_hit
    # the step after the crash never ran, so it is dropped without ever being run again
    assert all("y=2" not in s.steps for s in counter.specs)
    assert len({s for s in counter.specs}) == len(counter.specs), "a spec was run twice"


def test_two_dependent_steps_are_kept_together() -> None:
    crash_if_set = "import os; os.kill(os.getpid(), 11) if 'flag' in globals() else None"
    steps = ("import json", "flag = 1", "z = 3", crash_if_set, "w = 4")
    _result, d, _counter = diagnosed(spec_of(*steps))
    assert d.minimal_steps == ("flag = 1", crash_if_set)


def test_a_different_failure_is_not_the_same_failure() -> None:
    """Without its import the statement raises NameError: not the crash, so both are kept."""
    _result, d, counter = diagnosed(spec_of("import os", "x = 1", "os.kill(os.getpid(), 11)"))
    assert d.minimal_steps == ("import os", "os.kill(os.getpid(), 11)")
    tried = [s.steps for s in counter.specs]
    assert any("import os" not in s and "os.kill(os.getpid(), 11)" in s for s in tried)


def test_same_exception_type_different_key_text_is_rejected() -> None:
    steps = ("v = '2.0'", "v = '1.0'", "raise ImportError('version ' + repr(v) + ' not found')")
    result = run_spec(spec_of(*steps))
    assert result.outcome == "failed"
    d = diagnose(spec_of(*steps), result, experiments=False)
    # dropping "v = '1.0'" still raises ImportError, but about version '2.0': different text
    assert d.minimal_steps == ("v = '1.0'", steps[2])


def test_run_cap_is_respected_and_reported() -> None:
    result, d, counter = diagnosed(spec_of("import json", "x = 1", KILL, "y=2"), max_runs=1)
    assert len(counter.specs) == 1 and d.runs_used == 1
    assert d.cap_hit is True
    assert KILL in d.minimal_steps  # whatever was kept still fails
    assert d.to_json()["cap_hit"] is True
    text = format_failure(result, d)
    assert "(1 child runs, cap of child runs reached)" in text


def test_passed_run_needs_no_children() -> None:
    result, d, counter = diagnosed(spec_of("import json"))
    assert result.outcome == "passed"
    assert counter.specs == [] and d.minimal_steps == ("import json",)


def test_signature_compares_signal_and_markers() -> None:
    abrt = run_spec(spec_of("import os; os.abort()"))
    segv = run_spec(spec_of(KILL))
    assert failure_signature(abrt) != failure_signature(segv)
    assert failure_signature(segv) == failure_signature(run_spec(spec_of("x=1", KILL)))


# ---------------------------------------------------------------- SONAME version shadow

_LIB_OLD = "int foo_old(void) { return 1; }\n"
_LIB_NEW = "int foo_old(void) { return 1; }\nint foo_new(void) { return 2; }\n"
_MAP_OLD = "FOO_1.0 { global: foo_old; local: *; };\n"
_MAP_NEW = "FOO_1.0 { global: foo_old; local: *; };\nFOO_2.0 { global: foo_new; } FOO_1.0;\n"
_EXT = """
#include <Python.h>
extern int {sym}(void);
static PyObject *f(PyObject *s, PyObject *a) {{ return PyLong_FromLong({sym}()); }}
static PyMethodDef m[] = {{{{"f", f, METH_NOARGS, ""}}, {{0}}}};
static struct PyModuleDef d = {{PyModuleDef_HEAD_INIT, "{name}", 0, -1, m}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&d); }}
"""


@pytest.fixture(scope="module")
def shadow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """shadow_old (RUNPATH $ORIGIN/old: libfoo.so.1 defining FOO_1.0) and shadow_new (needs
    FOO_2.0 of libfoo.so.1, RUNPATH $ORIGIN/new): whichever libfoo.so.1 loads first wins."""
    root = tmp_path_factory.mktemp("shadow")
    for sub, source, vmap in (("old", _LIB_OLD, _MAP_OLD), ("new", _LIB_NEW, _MAP_NEW)):
        (root / f"{sub}.map").write_text(vmap)
        flags = ("-Wl,-soname,libfoo.so.1", f"-Wl,--version-script,{root / f'{sub}.map'}")
        compile_shared(source, "libfoo.so.1", flags=flags, outdir=root / sub)
    for name, sub, sym in (("shadow_old", "old", "foo_old"), ("shadow_new", "new", "foo_new")):
        flags = (
            *python_extension_flags(),
            f"-L{root / sub}",
            "-l:libfoo.so.1",
            f"-Wl,-rpath,$ORIGIN/{sub}",
        )
        source = _EXT.format(name=name, sym=sym)
        compile_shared(source, name + extension_suffix(), flags=flags, outdir=root)
    return root


def test_soname_shadow_verdict_and_experiments(shadow_dir: Path) -> None:
    env = (("PYTHONPATH", str(shadow_dir)),)
    spec = spec_of("shadow_old", "x = 1", "shadow_new", "shadow_new.f()", env=env)
    result = run_spec(spec)
    assert result.outcome == "failed" and "FOO_2.0" in result.message
    d = diagnose(spec, result)
    assert d.minimal_steps == ("shadow_old", "shadow_new")
    assert d.rule == "soname-version-shadow"
    paths = {os.path.relpath(lib.path, shadow_dir) for lib in d.libraries}
    assert {"old/libfoo.so.1", "new/libfoo.so.1"} <= paths
    assert any(p.startswith("shadow_new") for p in paths)
    avoided = {(e.kind, e.change) for e in d.avoided_by}
    assert any(kind == "order" for kind, _ in avoided), d.experiments
    newest = str(shadow_dir / "new" / "libfoo.so.1")
    assert any(kind == "preload" and newest in change for kind, change in avoided)
    assert "FOO_2.0" in d.cause and d.confidence == "high"
    assert d.user_advice.startswith("reverse the import order")


# ---------------------------------------------------------------- the scenario zoo

# What the field notes say avoids each conflict (kind, a word the change must contain, unsafe).
FIELD_NOTES_AVOIDANCE = {
    # LD_PRELOAD is tried only when the ctypes preload (the same fix in code) did not avoid it
    "libstdcxx-static-exported": [("preload|ld_preload", "libstdc++", False)],
    "libstdcxx-old-shadow": [("order", "reverse", False)],
    "openmp-duplicate": [("env", "KMP_DUPLICATE_LIB_OK", True)],
    "openmp-fork-hang": [("env", "OMP_NUM_THREADS", False)],
    # the pool's own thread variable, read from the library's data (no family has it)
    "thread-pool-fork-hang": [("env", "ZPOOL_NUM_THREADS", False)],
}
# Conflicts of two copies of one runtime: the minimal reproducer is the two imports (+ calls).
TWO_COPY_RULES = {
    "libstdcxx-static-exported",
    "soname-version-shadow",
    "openmp-duplicate",
    "openmp-mixed",
    "blas-duplicate",
}
# Experiments that must at least be tried for latent conflicts (nothing avoids them).
MUST_TRY = {
    "blas-duplicate": "OPENBLAS_NUM_THREADS=1",
    "openmp-mixed": "OMP_NUM_THREADS=1",
    "openmp-duplicate": "OMP_NUM_THREADS=1",
}


def _zoo_cases() -> list[object]:
    cases: list[object] = []
    # A failing scenario with no rule yet: the diagnosis has no libraries to name.
    unruled = pytest.mark.xfail(reason="no registered rule names this conflict yet", strict=True)
    for scenario in load_scenarios(SCENARIOS_DIR):
        for run in scenario.runs:
            plain = not run.spec.env and not run.spec.preload and not run.spec.ld_preload
            if run.expect.outcome != "passed" and plain:
                marks = () if scenario.rule else (unruled,)
                cases.append(pytest.param(scenario.name, run.id, marks=marks))
                break
    return cases


@pytest.mark.slow
@pytest.mark.parametrize(("name", "run_id"), _zoo_cases())
def test_zoo_scenario_diagnosis(zoo_venv: object, name: str, run_id: str) -> None:
    zoo_venv.wheels.check(name)  # type: ignore[attr-defined]
    scenario = zoo_venv.scenarios[name]  # type: ignore[attr-defined]
    run = next(r for r in scenario.runs if r.id == run_id)
    spec = dataclasses.replace(run.spec, python=zoo_venv.python)  # type: ignore[attr-defined]
    result = run_spec(spec)
    assert result.outcome == run.expect.outcome, result.message
    d = diagnose(spec, result)

    # minimal: the two conflicting imports (+ calls into those modules), in the original order
    imports = [s for s in d.minimal_steps if is_import_step(s)]
    if scenario.rule in TWO_COPY_RULES:
        assert len(imports) == 2, d.minimal_steps
    assert len(d.minimal_steps) < len(spec.steps) or result.failed_step in (
        None,
        len(spec.steps) - 1,
    )
    order = [spec.steps.index(s) for s in d.minimal_steps]
    assert order == sorted(order)
    for step in d.minimal_steps:
        if not is_import_step(step):
            assert any(m in step for m in imports), f"{step!r} does not use {imports}"

    # verdict: the scenario's rule and libraries (with distributions for vendored copies)
    assert d.rule == scenario.rule, d.cause
    names = [os.path.basename(lib.path) for lib in d.libraries]
    for pattern in scenario.libraries:
        assert any(fnmatch.fnmatch(n, pattern) for n in names), (pattern, names)
    assert any(lib.distribution for lib in d.libraries)
    if scenario.rule:
        assert d.confidence in ("high", "medium")

    # experiments: the ones the field notes name avoid it; unsafe ones are flagged
    for kind, word, unsafe in FIELD_NOTES_AVOIDANCE.get(name, []):
        assert any(
            e.kind in kind.split("|") and word in e.change and e.unsafe == unsafe
            for e in d.avoided_by
        ), [e.to_json() for e in d.experiments]
    if name in MUST_TRY:
        assert any(MUST_TRY[name] in e.change for e in d.experiments)
    rule = rule_of(scenario.rule)
    if rule is not None and rule.load_independent:
        # nothing about loading changes it: only settings are tried (each load-mode run of a
        # hang would wait the whole timeout)
        assert d.experiments and {e.kind for e in d.experiments} == {"env"}, d.experiments
    data = json.loads(json.dumps(d.to_json()))
    assert all(e["avoided"] for e in data["avoided_by"])
    assert set(data["verdict"]) == {
        "rule",
        "confidence",
        "cause",
        "author_advice",
        "user_advice",
        "key",
    }
    assert data["verdict"]["key"].startswith(scenario.rule or "unattributed")


@pytest.mark.slow
def test_key_is_independent_of_import_order(zoo_venv: object) -> None:
    zoo_venv.wheels.check("openmp-duplicate")  # type: ignore[attr-defined]
    keys = set()
    for order in (("zoo_iomp_a", "zoo_iomp_b"), ("zoo_iomp_b", "zoo_iomp_a")):
        spec = RunSpec(steps=order, python=zoo_venv.python)  # type: ignore[attr-defined]
        result = run_spec(spec)
        assert result.outcome == "crashed"
        keys.add(diagnose(spec, result, max_runs=0, experiments=False).key)
    key = keys.pop()
    assert len(keys) == 0 and key.startswith("openmp-duplicate:")
    # both copies are named, each with its wheel's directory
    assert "zoo_iomp_a.libs/libiomp5-" in key and "zoo_iomp_b.libs/libiomp5-" in key, key


def test_key_keeps_same_named_copies_of_two_wheels_apart() -> None:
    """Two wheels vendoring one auditwheel-renamed file (same name, other bytes) give two
    conflicts; the same files under another environment root give the same key (shards and
    CI jobs agree)."""
    ours = "/site/numpy.libs/libscipy_openblas64_-32a4b2a6.so"
    cvxopt = "/site/cvxopt.libs/libopenblas-r0-11edc3fa.3.15.so"
    scs = "/site/scs.libs/libopenblas-r0-11edc3fa.3.15.so"
    assert conflict_key("symbol-interposition", [ours, cvxopt]) != conflict_key(
        "symbol-interposition", [ours, scs]
    )
    moved = [p.replace("/site/", "/other/venv/lib/python3.12/site-packages/") for p in (scs, ours)]
    assert conflict_key("symbol-interposition", moved) == conflict_key(
        "symbol-interposition", [ours, scs]
    )
    assert conflict_key("symbol-interposition", [ours, scs]) == (
        "symbol-interposition:numpy.libs/libscipy_openblas64_-32a4b2a6.so,"
        "scs.libs/libopenblas-r0-11edc3fa.3.15.so"
    )
