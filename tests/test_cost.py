"""The cost cuts of a planned run: load modes predicted from the scan (planning.links), a
minimisation that keeps the failing step and starts from the scan's guess, child runs counted
by purpose, a duplicate counted under its owner's conflict. Unit tests here; the planned runs
end to end are in test_sub_runs.py, test_plan_zoo.py and test_plugin_variants.py."""

from __future__ import annotations

from pytest_runtimeconflict.diagnosis.minimise import Runner, minimise
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.model.plan import PlanContext, RuntimeLibrary
from pytest_runtimeconflict.planning.links import (
    FileFacts,
    global_links,
    ld_preload_differs,
    preload_worthy,
    related_modules,
)
from pytest_runtimeconflict.planning.variants import library_groups, ruled_out, worthy_runtimes
from pytest_runtimeconflict.sandbox import runner as sandbox_runner


def _facts(names: set[str], dist: str | None, soname: str, family: str | None = None) -> FileFacts:
    return FileFacts(frozenset(names), family, dist, soname)


# numpy-like "a" vendors libblasA (exports dgemm_, gotoblas), "b" imports "a" and vendors
# libblasB (the same names), "c" vendors an unrelated library, "d" shares only a SONAME.
FACTS = {
    "/s/a/_a.so": _facts({"PyInit_x"} - {"PyInit_x"}, "a", "_a.so"),
    "/s/a.libs/libblasA.so": _facts({"dgemm_", "gotoblas"}, "a", "libblasA.so", "blas"),
    "/s/b/_b.so": _facts(set(), "b", "_b.so"),
    "/s/b.libs/libblasB.so": _facts({"dgemm_", "gotoblas"}, "b", "libblasB.so", "blas"),
    "/s/c/_c.so": _facts({"c_only"}, "c", "_c.so"),
    "/usr/lib/libc.so.6": _facts({"malloc"}, None, "libc.so.6"),
    "/s/d.libs/libz.so.1": _facts({"inflate"}, "d", "libz.so.1"),
    "/s/e.libs/libz.so.1": _facts({"inflate_e"}, "e", "libz.so.1"),
}
LIBC = "/usr/lib/libc.so.6"
OBJECTS = {
    "a": frozenset({"/s/a/_a.so", "/s/a.libs/libblasA.so", LIBC}),
    "b": frozenset({"/s/b/_b.so", "/s/b.libs/libblasB.so", "/s/a/_a.so", "/s/a.libs/libblasA.so", LIBC}),
    "c": frozenset({"/s/c/_c.so", LIBC}),
    "d": frozenset({"/s/d.libs/libz.so.1", LIBC}),
    "e": frozenset({"/s/e.libs/libz.so.1", LIBC}),
}  # fmt: skip


def test_a_global_import_links_only_where_names_meet_a_module_maps_anew() -> None:
    links = global_links(OBJECTS, FACTS)
    # a's libblasA defines names libblasB (which b maps anew) defines
    assert links["a"] == {"b"}
    # b maps both copies (different distributions, the same names): it links to itself; a's
    # objects are b's own, so b's global import adds nothing a does not already have
    assert links["b"] == {"b"}
    # c exports a name nobody else defines; libc is everywhere (the interpreter's own)
    assert links["c"] == frozenset()
    # d and e share a SONAME but no name: no global link
    assert links["d"] == links["e"] == frozenset()


def test_a_preload_is_planned_only_for_a_library_whose_soname_another_file_carries() -> None:
    libs = ["/s/a.libs/libblasA.so", "/s/d.libs/libz.so.1", "/s/c.libs/libomp.so"]
    linked = frozenset(p for paths in OBJECTS.values() for p in paths)
    worthy = preload_worthy(libs, OBJECTS, FACTS, linked)
    # libz: another file carries its SONAME; libomp: no extension links it (ctypes loads it)
    assert worthy == {"/s/d.libs/libz.so.1", "/s/c.libs/libomp.so"}


def test_ld_preload_is_planned_only_where_it_binds_unlike_a_ctypes_preload() -> None:
    """LD_PRELOAD puts a library ahead of the interpreter's own libraries (those every module
    maps: libc here), a ctypes preload at start behind them: they differ only for a library
    that (or whose needed library) defines a name those define."""
    facts = dict(FACTS)
    facts["/s/f.libs/libjem.so"] = _facts({"malloc", "je_x"}, "f", "libjem.so")
    facts["/s/g.libs/libuse.so"] = FileFacts(
        frozenset({"g_x"}), None, "g", "libuse.so", ("libjem.so",)
    )
    objects = dict(OBJECTS, f=frozenset({"/s/f.libs/libjem.so", LIBC}))
    objects["g"] = frozenset({"/s/g.libs/libuse.so", "/s/f.libs/libjem.so", LIBC})
    libs = ["/s/d.libs/libz.so.1", "/s/f.libs/libjem.so", "/s/g.libs/libuse.so", "/s/x/libnone.so"]
    assert ld_preload_differs(libs, objects, facts) == {
        "/s/f.libs/libjem.so",  # defines malloc, as libc does
        "/s/g.libs/libuse.so",  # needs libjem
        "/s/x/libnone.so",  # no facts: kept
    }
    context = _context(ld_preload_worthy=())
    from pytest_runtimeconflict.planning.variants import parse_variants

    lines = ruled_out(context, parse_variants("--rc-variants", "auto", "test"))
    assert lines[-1].startswith("not started with LD_PRELOAD: libz.so.1 (")
    assert worthy_runtimes(context, "ld_preload") == ()
    assert PlanContext.from_json(context.to_json()).ld_preload_worthy == ()


def test_related_modules_share_a_name_a_family_or_a_soname_through_different_files() -> None:
    related = related_modules(OBJECTS, FACTS)
    assert related["a"] == {"b"} and related["c"] == frozenset()
    assert related["d"] == {"e"} and related["e"] == {"d"}


def _context(**changes: object) -> PlanContext:
    runtimes = (
        RuntimeLibrary("/s/a.libs/libblasA.so", "blas", "openblas", ("a",), "a"),
        RuntimeLibrary("/s/d.libs/libz.so.1", "blas", "openblas", ("d",), "d"),
    )
    base = {
        "modules": ("a", "b", "c"),
        "native": ("a", "b", "c"),
        "runtimes": runtimes,
        "scanned": True,
        "links_known": True,
        "global_links": (("a", ("b",)), ("b", ("b",)), ("c", ())),
        "preload_worthy": ("/s/d.libs/libz.so.1",),
    }
    base.update(changes)
    return PlanContext(**base)  # type: ignore[arg-type]


def test_what_the_scan_rules_out_is_said_and_the_rest_is_planned() -> None:
    from pytest_runtimeconflict.planning.variants import parse_variants

    context = _context()
    auto = parse_variants("--rc-variants", "auto", "test")
    lines = ruled_out(context, auto)
    assert (
        lines[0].startswith("not imported RTLD_GLOBAL: c (")
        and "cannot change a binding" in lines[0]
    )
    assert lines[1].startswith("not preloaded: libblasA.so (extensions link them")
    assert [r.path for r in worthy_runtimes(context)] == ["/s/d.libs/libz.so.1"]
    assert library_groups(worthy_runtimes(context)) == [("/s/d.libs/libz.so.1",)]
    # nothing is ruled out blindly: without the scan's prediction every variant is planned
    unknown = _context(links_known=False)
    assert ruled_out(unknown, auto) == [] and worthy_runtimes(unknown) == unknown.runtimes
    assert unknown.links_from("c") == ("a", "b", "c")
    assert ruled_out(context, parse_variants("--rc-variants", "none", "test")) == []


def _fake_run(fails_when: set[str]) -> tuple[list[tuple[str, ...]], object]:
    seen: list[tuple[str, ...]] = []

    def run(spec: RunSpec) -> RunResult:
        seen.append(spec.steps)
        if fails_when <= set(spec.steps) and "w" in spec.steps:
            return RunResult(spec, "crashed", signal="SIGSEGV", failed_step=len(spec.steps) - 1)
        return RunResult(spec, "passed")

    return seen, run


def test_minimisation_starts_from_the_guess() -> None:
    steps = tuple(f"m{i}" for i in range(8)) + ("w",)
    spec = RunSpec(steps=steps)
    first = RunResult(spec, "crashed", signal="SIGSEGV", failed_step=8)
    seen, run = _fake_run({"m2", "m5"})
    minimal, _ = minimise(spec, first, Runner(run, 40))  # type: ignore[arg-type]
    assert minimal == ("m2", "m5", "w")
    without_guess = len(seen)
    seen, run = _fake_run({"m2", "m5"})
    guess = lambda _steps, _result: [2, 5, 6, 8]  # noqa: E731
    minimal, _ = minimise(spec, first, Runner(run, 40), guess)  # type: ignore[arg-type]
    assert minimal == ("m2", "m5", "w") and seen[0] == ("m2", "m5", "m6", "w")
    assert len(seen) < without_guess
    # a wrong guess costs its one run and the search goes on as without it
    seen, run = _fake_run({"m2", "m5"})
    minimal, _ = minimise(spec, first, Runner(run, 40), lambda *_: [0, 8])  # type: ignore[arg-type]
    assert minimal == ("m2", "m5", "w") and seen[0] == ("m0", "w")


def test_child_runs_are_counted_by_the_outermost_purpose() -> None:
    before = sandbox_runner.children_by_purpose()
    with sandbox_runner.purpose("owner checks"), sandbox_runner.purpose("minimisation"):
        inner = sandbox_runner._purpose.get()
    assert inner == "owner checks"
    assert sandbox_runner.children_by_purpose(before) == {}


def test_a_duplicate_and_an_earlier_runs_failure_group_under_the_owners_conflict() -> None:
    """A later item's own verdict (without the counter-experiments the owner ran) and a
    failure an earlier item's run showed (named by that run) both count under the owner's
    conflict: one distinct conflict, seen in three."""
    from pytest_runtimeconflict.report.aggregate import conflict_groups

    owner = {"id": "a>b", "outcome": "crashed", "verdict": {"key": "environment-rewritten:x"}}
    again = {
        "id": "b>a",
        "outcome": "crashed",
        "verdict": {"key": "symbol-interposition:x,y"},
        "duplicate_of": "rc::owner",
    }
    stored = {
        "id": "seq",
        "outcome": "crashed",
        "same_failure_as": {"item": "rc::owner", "run": "a>b", "step": "exercise: openmp"},
    }
    collected = [("rc::owner", owner), ("rc::later", again), ("rc::seq", stored)]
    groups = conflict_groups(collected)
    assert list(groups) == ["environment-rewritten:x"]
    assert [n for n, _ in groups["environment-rewritten:x"]] == [
        "rc::owner",
        "rc::later",
        "rc::seq",
    ]


def test_ld_preload_is_not_run_when_the_ctypes_preload_of_that_library_avoided() -> None:
    """Two routes to one fix: LD_PRELOAD of a library runs only when preloading it with
    ctypes did not avoid the failure (the advice has a verified way already)."""
    from pytest_runtimeconflict.diagnosis.experiments import _preloads, run_experiments
    from pytest_runtimeconflict.diagnosis.minimise import Runner

    spec = RunSpec(steps=("a", "b"), python="python")
    failing = RunResult(spec, "crashed", signal="SIGSEGV", failed_step=1)
    ran: list[RunSpec] = []

    def run(candidate: RunSpec) -> RunResult:
        ran.append(candidate)
        if candidate.preload == ("/x/good.so",) or candidate.ld_preload == ("/x/bad.so",):
            return RunResult(candidate, "passed")
        return RunResult(candidate, "crashed", signal="SIGSEGV", failed_step=1)

    planned = _preloads(spec, ["/x/good.so", "/x/bad.so"])
    tried = run_experiments(planned, failing, Runner(run, 10))
    assert [(t.kind, t.avoided) for t in tried] == [
        ("preload", True),
        ("preload", False),
        ("ld_preload", True),
    ]
    assert not any(s.ld_preload == ("/x/good.so",) for s in ran)


def test_an_item_runs_each_spec_once() -> None:
    """Within one item, a spec run before (whatever its id) is answered from that run; a
    crash read without gdb runs again when the backtrace is asked for."""
    import dataclasses as dc

    from pytest_runtimeconflict.engine.reuse import ItemRuns

    ran: list[RunSpec] = []

    def run(spec: RunSpec) -> RunResult:
        ran.append(spec)
        outcome = "crashed" if "boom" in spec.steps else "passed"
        return RunResult(spec, outcome)

    runs = ItemRuns(run)
    plain = RunSpec(steps=("a",), python="python", id="first")
    assert runs(plain).outcome == "passed"
    again = runs(dc.replace(plain, id="second", backtrace=False))
    assert again.spec.id == "second" and len(ran) == 1 and runs.reused == 1
    crash = RunSpec(steps=("boom",), python="python", backtrace=False)
    runs(crash)
    assert runs(dc.replace(crash, backtrace=True)).spec.backtrace and len(ran) == 3
    assert runs(crash).outcome == "crashed" and len(ran) == 3
    assert runs(dc.replace(plain, env=(("X", "1"),))).outcome == "passed" and len(ran) == 4


def test_ld_preload_is_tried_only_for_a_library_that_meets_the_interpreters_names() -> None:
    """Real builds, a real run: a library whose names no object mapped at the interpreter's
    start defines gets only the ctypes preload experiment (LD_PRELOAD would bind the same);
    one that defines a libc name (``getpid`` here) gets LD_PRELOAD too."""
    import os
    import sys

    from cbuild import compile_shared

    from pytest_runtimeconflict.diagnosis.evidence import gather_evidence
    from pytest_runtimeconflict.diagnosis.experiments import _preloads

    plain = compile_shared("int rc_plain_value(void) { return 7; }\n", "librcplain.so")
    libc_name = compile_shared(
        "#include <sys/types.h>\npid_t getpid(void) { return 1; }\n", "librcgetpid.so"
    )
    steps = tuple(f"import ctypes; ctypes.CDLL({str(p)!r})" for p in (plain, libc_name))
    spec = RunSpec(steps=steps, python=sys.executable, exercise=False)
    evidence = gather_evidence(sandbox_runner.run_spec(spec))
    planned = [(e.kind, e.change.rsplit("/", 1)[-1]) for e in _preloads(spec, [str(plain), str(libc_name)], evidence)]  # fmt: skip
    assert ("ld_preload", "librcplain.so") not in planned
    assert ("ld_preload", "librcgetpid.so") in planned
    assert [k for k, _ in planned].count("preload") == 2
    # glibc defines getpid weak: the planning side reads weak definitions too
    from pytest_runtimeconflict.static.interpose import dynamic_definitions

    libc = next(p for p in evidence.objects if os.path.basename(p).startswith("libc.so"))
    assert "getpid" in dynamic_definitions(libc) and "malloc" in dynamic_definitions(libc)
