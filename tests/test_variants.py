"""The planned run's second dimension: load-mode variants, finding-driven targets, workloads,
and the coverage they report. Engine-level (no pytest subprocess); child runs only where the
test is about what a child does."""

from __future__ import annotations

import os
from itertools import permutations
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from venvs import make_env

from pytest_runtimeconflict.engine.entries import masked_pairs
from pytest_runtimeconflict.engine.owners import compatible_run
from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model import Finding, RunResult, RunSpec
from pytest_runtimeconflict.model.entry import LoadMode, RunEntry
from pytest_runtimeconflict.model.plan import PlanContext, PlannedRun, RuntimeLibrary, Variant
from pytest_runtimeconflict.planning import from_scan as planning
from pytest_runtimeconflict.planning import targets, variants, workloads
from pytest_runtimeconflict.planning.coverage import coverage_from_entries
from pytest_runtimeconflict.planning.sequences import plan_sequences
from pytest_runtimeconflict.sandbox.runner import run_spec

AUTO = variants.parse_variants("--rc-variants", "auto", "test")
NONE = variants.parse_variants("--rc-variants", "none", "test")


def context(modules: list[str], **kwargs: object) -> PlanContext:
    return PlanContext(
        tuple(sorted(modules)), native=tuple(sorted(modules)), scanned=True, **kwargs
    )  # type: ignore[arg-type]


def finding(rule: str, libs: tuple[str, ...], dists: tuple[str, ...], severity: str) -> Finding:
    return Finding(rule, "x", severity, f"{rule} title", "detail", libs, dists, "advice")


# ------------------------------------------------------------------ --rc-variants


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", ["auto"]),
        ("auto", ["auto"]),
        ("none", ["none"]),
        ("none, global:torch", ["none", "global:torch"]),
        ("preload:libstdc++.so.6,ld_preload:libjemalloc.so.2", ["preload:libstdc++.so.6", "ld_preload:libjemalloc.so.2"]),
        ("env:OMP_NUM_THREADS=1", ["env:OMP_NUM_THREADS=1"]),
        ("preload:all", ["preload:all"]),
    ],
)  # fmt: skip
def test_variants_option_accepts_its_syntax(value: str, expected: list[str]) -> None:
    assert [str(r) for r in variants.parse_variants("--rc-variants", value, "ini")] == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("global", "invalid --rc-variants entry 'global' (from command line): global needs a value"),
        ("blobal:torch", "unknown variant 'blobal'"),
        ("global:3d", "'3d' is not a module name"),
        ("env:OMP", "'OMP' is not NAME=VALUE"),
        ("none:x", "none takes no value"),
        ("auto,none", "auto and none exclude each other"),
    ],
)  # fmt: skip
def test_variants_option_errors_are_one_line(value: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        variants.parse_variants("--rc-variants", value, "from command line")
    text = str(err.value)
    assert message in text and "\n" not in text
    assert "global:MODULE" in text or "exclude" in text


def test_unknown_global_module_names_the_planned_ones() -> None:
    requests = variants.parse_variants("--rc-variants", "none,global:torch", "x")
    with pytest.raises(UsageError, match="torch is not a planned module \\(a, b\\)"):
        planning.build_plan(context(["a", "b"]), 2, requests)


# ------------------------------------------------------------------ the plan


def test_none_gives_the_covering_sequences_named_as_before() -> None:
    modules = [f"m{i}" for i in range(7)]
    plan = planning.build_plan(PlanContext(tuple(modules)), 2, NONE)
    assert [i.name for i in plan.items] == [">".join(s) for s in plan_sequences(modules, 2)]
    assert all(i.kind == "sequence" and i.variant.is_plain for i in plan.items)
    assert plan.workloads == () and plan.steps_for(("m1", "m0")) == ("m1", "m0")


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=2, max_value=12))
def test_every_ordered_pair_also_runs_with_the_first_imported_globally(n: int) -> None:
    modules = [f"mod{i}" for i in range(n)]
    plan = planning.build_plan(context(modules), 2, AUTO)
    seen = set()
    for item in plan.items:
        for run in item.runs:
            order = run.order
            for i, a in enumerate(order):
                if a in run.variant.global_imports:
                    seen.update((a, b) for b in order[i + 1 :])
    assert seen == set(permutations(modules, 2))
    # The default plan with variants stays within a small constant factor of the plain one.
    sequences = [i for i in plan.items if i.kind == "sequence"]
    assert len(sequences) <= 3 * len(plan.sequences)


def test_long_sequences_get_readable_names_and_the_full_order_in_the_header() -> None:
    modules = [f"mod{i:02d}" for i in range(17)]
    plan = planning.build_plan(context(modules), 2, AUTO)
    names = [i.name for i in plan.items]
    assert names[:4] == [
        "seq-01[17 modules]",
        "seq-02[17 modules]",
        "global:seq-01[17 modules]",
        "global:seq-02[17 modules]",
    ]
    header = "\n".join(planning.describe_plan(plan))
    assert "seq-01[17 modules]: " + ">".join(modules) in header


def test_library_groups_hold_one_copy_of_each_family() -> None:
    libs = [
        RuntimeLibrary("/s/libstdc++.so.6", "libstdc++", "libstdc++", ("a",), None),
        RuntimeLibrary("/a/libgomp-1.so", "openmp", "libgomp", ("a",), "a"),
        RuntimeLibrary("/b/libgomp-2.so", "openmp", "libgomp", ("b",), "b"),
        RuntimeLibrary("/b/libopenblas.so", "blas", "openblas", ("b", "c"), "b"),
        RuntimeLibrary("/c/libiomp5.so", "openmp", "libiomp5", ("c",), "c"),
    ]
    groups = variants.library_groups(libs)
    assert groups[0][0] == "/s/libstdc++.so.6"
    assert sorted(p for g in groups for p in g) == sorted(lib.path for lib in libs)
    family = {lib.path: lib.family for lib in libs}
    assert all(len({family[p] for p in g}) == len(g) for g in groups)
    assert len(groups) == 3
    # By default one group is preloaded (ctypes) and one LD_PRELOADed; 'all' plans each group.
    ctx = context(["a", "b", "c"], runtimes=tuple(libs))
    default = planning.build_plan(ctx, 2, AUTO)
    assert [i.variant.source for i in default.items if i.variant.preload] == ["preload"]
    every = planning.build_plan(ctx, 2, variants.parse_variants("x", "preload:all", "x"))
    assert len([i for i in every.items if i.variant.preload]) == 3


def test_user_variants_are_added_to_the_plan() -> None:
    requests = variants.parse_variants(
        "x", "none,global:b,ld_preload:libjemalloc.so.2,env:OMP_NUM_THREADS=1", "x"
    )
    plan = planning.build_plan(context(["a", "b", "c"]), 2, requests)
    names = [i.name for i in plan.items]
    assert names == [
        "a>b>c",
        "c>b>a",
        "global(b)>a>c",
        "ld_preload(libjemalloc.so.2):a>b>c",
        "env(OMP_NUM_THREADS=1):a>b>c",
        "env(OMP_NUM_THREADS=1):c>b>a",
    ]
    spec = plan.items[3].variant.apply(RunSpec(steps=("a",)))
    assert spec.ld_preload == ("libjemalloc.so.2",)
    assert plan.items[4].variant.apply(RunSpec(steps=("a",))).env == (("OMP_NUM_THREADS", "1"),)


def test_planning_40_modules_targets_each_finding() -> None:
    """(How long planning takes is benchmarks/bench_plan_variants.py's to measure.)"""
    modules = [f"pkg{i:02d}" for i in range(40)]
    libs = tuple(
        RuntimeLibrary(f"/x/{m}/libgomp.so", "openmp", "libgomp", (m,), m) for m in modules[:6]
    )
    found = tuple(
        (finding("openmp-duplicate", (a.path, b.path), (a.users[0], b.users[0]), "error"), ((a.users[0],), (b.users[0],)))
        for a, b in zip(libs, libs[1:])
    )  # fmt: skip
    ctx = context(modules, runtimes=libs, findings=found)
    plan = planning.build_plan(ctx, 2, AUTO)
    assert len([i for i in plan.items if i.kind == "target"]) == 5


# ------------------------------------------------------------------ targets


def test_targets_pair_the_modules_a_finding_names_in_both_orders() -> None:
    shadow = finding(
        "soname-version-shadow",
        ("/sys/libstdc++.so.6", "/n/_new.so", "/o/libstdc++.so.6", "/o/_old.so"),
        ("new-pkg", "old-pkg"),
        "error",
    )
    odr = finding("cxx-symbol-duplicate", ("/a/_a.so", "/b/_b.so"), ("a-pkg", "b-pkg"), "warning")
    info = finding("static-tls-late", ("/a/_a.so",), ("a-pkg",), "info")
    ctx = context(
        ["a_pkg", "b_pkg", "new_pkg", "old_pkg", "other"],
        findings=(
            (shadow, (("new_pkg", "other"), ("new_pkg",), ("old_pkg",), ("old_pkg",))),
            (odr, (("a_pkg",), ("b_pkg",))),
            (info, (("a_pkg",),)),
        ),
    )
    items = targets.target_items(ctx)
    assert [i.name for i in items] == [
        "soname-version-shadow:new_pkg+old_pkg",
        "cxx-symbol-duplicate:a_pkg+b_pkg",
    ]
    assert [r.describe() for r in items[0].runs] == ["new_pkg>old_pkg", "old_pkg>new_pkg"]
    # A rule about exported symbols of two copies also runs with each module RTLD_GLOBAL.
    assert [r.describe() for r in items[1].runs] == [
        "a_pkg>b_pkg",
        "b_pkg>a_pkg",
        "global(a_pkg)>b_pkg",
        "global(b_pkg)>a_pkg",
    ]


def test_not_reproduced_text_says_what_would_reproduce_it() -> None:
    libs = ("/a/libiomp5-1.so", "/b/libiomp5-2.so")
    f = Finding("openmp-duplicate", "openmp", "error", "2 copies", "d", libs, ("a",), "advice")
    text = targets.not_reproduced_text(f, ["a>b", "b>a"])
    assert text.startswith("static conflict not reproduced at run time: [error] openmp-duplicate")
    assert "libiomp5-1.so, libiomp5-2.so" in text and "tried: a>b; b>a" in text
    assert "a parallel region in each module" in text and "--rc-workload" in text


def test_fork_probe_once_per_module_bringing_an_openmp_copy() -> None:
    libs = (
        RuntimeLibrary("/a/libgomp.so", "openmp", "libgomp", ("a", "b"), "a"),
        RuntimeLibrary("/b/libgomp-x.so", "openmp", "libgomp", ("b",), "b"),
        RuntimeLibrary("/c/libopenblas.so", "blas", "openblas", ("c",), "c"),
    )
    items = targets.fork_items(context(["a", "b", "c"], runtimes=libs))
    assert [(i.name, i.probes) for i in items] == [
        ("fork:a", ("fork-after-parallel",)),
        ("fork:b", ("fork-after-parallel",)),
    ]


# ------------------------------------------------------------------ masking, ownership


def test_a_module_whose_soname_an_earlier_module_served_is_masked() -> None:
    ctx = context(
        ["new", "old", "third"],
        closures=(
            ("new", (("libstdc++.so.6", "/usr/lib/libstdc++.so.6"),)),
            ("old", (("libstdc++.so.6", "/site/old.libs/libstdc++.so.6"),)),
            ("third", (("libstdc++.so.6", "/usr/lib/libstdc++.so.6"),)),
        ),
    )
    assert masked_pairs(("new", "old", "third"), ctx) == [
        (("old", "third"), "libstdc++.so.6"),
    ]
    # The other way round the old copy serves the later modules: they are the masked ones.
    assert masked_pairs(("old", "new", "third"), ctx) == [(("new", "third"), "libstdc++.so.6")]
    assert masked_pairs(("third", "new"), ctx) == []


def test_an_earlier_run_can_own_a_conflict_only_in_the_same_load_mode() -> None:
    plain = PlannedRun(("a", "b", "c"))
    glob = PlannedRun(("a", "b"), Variant("global(a)", "target", global_imports=("a",)))
    global_a = LoadMode(("a",), (), (), (), "global(a)>b", 1)
    assert compatible_run(plain, ["a", "c"], None)
    assert compatible_run(plain, ["c", "a"], None)  # the re-run of the prefix decides
    assert not compatible_run(plain, ["a", "d"], None)
    assert not compatible_run(plain, ["a", "b"], global_a)
    assert compatible_run(glob, ["a", "b"], global_a)
    assert not compatible_run(glob, ["a", "b"], None)


def test_a_conflict_under_a_preload_is_first_checked_against_earlier_runs_under_a_load_mode() -> (
    None
):
    """A preload of numpy's copy and numpy imported RTLD_GLOBAL give one conflict: for a
    conflict that needs a load mode, an earlier item's runs under any load mode come before
    plain runs (one plain run per item, as for plain conflicts)."""
    from pytest_runtimeconflict.engine.owners import owner_candidates
    from pytest_runtimeconflict.model.plan import PlannedItem

    plain_ab, plain_ba = PlannedRun(("a", "b")), PlannedRun(("b", "a"))
    glob = PlannedRun(("a", "b"), Variant("global(a)", "target", global_imports=("a",)))
    target = PlannedItem("t", "target", (plain_ab, plain_ba, glob))
    sequence = PlannedItem("s", "sequence", (PlannedRun(("b", "c", "a")),))
    later = PlannedItem("p", "sequence", (PlannedRun(("a", "b"), Variant("p", "auto")),))
    preload = LoadMode((), ("/a/libx.so",), (), (), "a>b", 1)
    found = owner_candidates([target, sequence], later, ["b"], preload)
    assert [(i.name, r) for i, r in found] == [
        ("t", glob), ("t", plain_ab), ("s", sequence.runs[0])
    ]  # fmt: skip
    # a plain conflict: one run per item, as before
    assert [(i.name, r) for i, r in owner_candidates([target, sequence], later, ["b"], None)] == [
        ("t", plain_ab), ("s", sequence.runs[0])
    ]  # fmt: skip


# ------------------------------------------------------------------ coverage


def test_coverage_per_variant_targeted_and_masked() -> None:
    def entry(kind: str, seq: list[str], executed: list[str], **variant: object) -> dict:
        v = {"label": "plain", "global_imports": [], "preload": [], "ld_preload": [], "env": {}}
        v.update(variant)  # type: ignore[arg-type]
        return {
            "kind": kind, "sequence": seq, "executed": executed, "modules": ["a", "b", "c"],
            "strength": 2, "variant": v, "masked": [],
        }  # fmt: skip

    entries = [
        entry("target", ["a", "b"], ["a", "b"]),
        entry("sequence", ["a", "b", "c"], ["a", "b", "c"]),
        entry("sequence", ["c", "b", "a"], ["c", "b", "a"]),
        entry(
            "sequence", ["a", "b", "c"], ["a", "b"], label="global", global_imports=["a", "b", "c"]
        ),
        entry("sequence", ["a", "b", "c"], ["a", "b", "c"], label="preload(x)", preload=["x"]),
    ]
    entries[3]["conflict"] = "k"
    entries[2]["masked"] = [["b", "a", "libx.so"]]
    cov = coverage_from_entries(entries)
    assert cov is not None
    assert (cov.tuples_exercised, cov.tuples_total, cov.targeted, cov.long_only) == (6, 6, 1, 5)
    by_label = {v.label: v for v in cov.variants}
    assert (by_label["global"].exercised, by_label["global"].total) == (1, 6)
    assert by_label["global"].blocked == 2  # a>c and b>c, cut by the conflict
    assert (by_label["preload(x)"].unit, by_label["preload(x)"].exercised) == ("modules", 3)
    assert cov.masked == ((("b", "a"), "libx.so"),)
    lines = "\n".join(cov.detail_lines())
    assert "in short targeted sequences: 1 ordered pairs; only inside long sequences: 5" in lines
    assert "global: ordered pairs exercised 1/6, blocked by a conflict: 2" in lines
    assert "masked (an earlier module's copy of the library served them): b>a (libx.so)" in lines


# ------------------------------------------------------------------ workloads


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("numpy", "expected MODULE=STATEMENT"),
        ("3d=x()", "expected MODULE=STATEMENT"),
        ("numpy=numpy.ones((3,)", "invalid workload in --rc-workload"),
    ],
)
def test_workload_option_errors_are_one_line(value: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        workloads.parse_user_workloads([value], "from command line")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_pyproject_workloads_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.pytest-runtimeconflict.workloads]\n"
        'numpy = "numpy.ones(3).sum()"\n'
        'scipy = ["scipy.linalg.inv([[1.0]])", "scipy.fft.fft([1.0])"]\n'
    )
    found = workloads.pyproject_workloads(tmp_path)
    assert found == (
        ("numpy", "numpy.ones(3).sum()"),
        ("scipy", "scipy.linalg.inv([[1.0]])"),
        ("scipy", "scipy.fft.fft([1.0])"),
    )
    (tmp_path / "pyproject.toml").write_text("[tool.pytest-runtimeconflict.workloads]\nnumpy = 3\n")
    with pytest.raises(UsageError, match="'numpy': expected a module name = a statement"):
        workloads.pyproject_workloads(tmp_path)


def test_catalogue_covers_the_popular_packages() -> None:
    covered = {w.module for w in workloads.CATALOGUE}
    assert {"numpy", "scipy", "torch", "sklearn", "pandas"} <= covered
    for w in workloads.CATALOGUE:
        compile(w.step(), "<catalogue>", "exec")


def test_catalogue_workload_skips_with_a_note_when_its_api_is_missing(tmp_path: Path) -> None:
    """A module named like a catalogued package but without the API: the workload is skipped
    with a note; a user workload that raises is a real failure."""
    python = make_env(tmp_path, {"pandas": "VERSION = 'fake'\n"})
    steps = workloads.workload_steps(["pandas"], [("pandas", "pandas.missing()")], catalogue=True)
    (_, (catalogue_step, user_step)) = steps[0]
    ok = run_spec(RunSpec(steps=("pandas", catalogue_step), python=python, exercise=False))
    assert ok.outcome == "passed"
    assert workloads.skipped_notes(ok.stdout_tail) == [
        "pandas:groupby: AttributeError module 'pandas' has no attribute 'DataFrame'"
    ]
    assert workloads.step_label(catalogue_step) == "workload pandas:groupby"
    bad = run_spec(RunSpec(steps=("pandas", user_step), python=python, exercise=False))
    assert (bad.outcome, bad.failed_step, bad.exception_type) == ("failed", 1, "AttributeError")


# ------------------------------------------------------------------ the default module set


def test_default_modules_leave_out_own_dependencies_and_namespace_only_packages(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    site = tmp_path / "lib" / "python3.11" / "site-packages"
    regular = ["numpy", "psutil", "torch", "functorch", "cvxopt", "lightgbm", "scipy_openblas32"]
    for package in regular:
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
    (site / "nvidia" / "nccl" / "lib").mkdir(parents=True)  # a namespace: no __init__.py

    def obj(path: str, dist: str, ext: bool) -> SimpleNamespace:
        return SimpleNamespace(path=f"{site}/{path}", distribution=dist, is_extension=ext)

    scan = SimpleNamespace(
        objects=[
            obj("numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so", "numpy", True),
            obj("numpy.libs/libscipy_openblas64_-1.so", "numpy", False),
            obj("nvidia/nccl/lib/libnccl.so.2", "nvidia-nccl-cu12", False),
            obj("psutil/_psutil_linux.abi3.so", "psutil", True),
            obj("torch/_C.cpython-311-x86_64-linux-gnu.so", "torch", True),
            obj("torch/lib/libgomp.so.1", "torch", False),
            obj("_cffi_backend.cpython-311-x86_64-linux-gnu.so", "cffi", True),
            obj("cvxopt/base.cpython-311-x86_64-linux-gnu.so", "cvxopt", True),
            obj("lightgbm/lib/lib_lightgbm.so", "lightgbm", False),  # loaded with ctypes
            SimpleNamespace(path=f"{tmp_path}/lib/libiomp5.so", distribution="intel-openmp", is_extension=False),
        ],
        distributions={
            "numpy": ["numpy"],
            "nvidia-nccl-cu12": ["nvidia"],
            "psutil": ["psutil"],
            "torch": ["functorch", "torch", "torchgen"],
            "cffi": ["_cffi_backend", "cffi"],
            "cvxopt": ["amd", "base", "cvxopt"],
            "lightgbm": ["lightgbm"],
            "intel-openmp": [],
        },
    )  # fmt: skip
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "my-proj"\n')
    (tmp_path / "my_proj").mkdir()
    (tmp_path / "my_proj" / "__init__.py").write_text("")
    assert planning.default_modules(scan, tmp_path) == (
        "cffi",
        "cvxopt",
        "lightgbm",
        "my_proj",
        "numpy",
        "torch",
    )
    assert "psutil" in planning.own_dependencies() and "pyelftools" in planning.own_dependencies()


def test_demo_closing_note_classifies_each_zoo_class() -> None:
    from types import SimpleNamespace

    from pytest_runtimeconflict.cli.democlasses import class_lines

    def scenario(name: str, rule: str | None, libs: list[str], steps: str) -> SimpleNamespace:
        runs = [SimpleNamespace(spec=SimpleNamespace(steps=tuple(steps.split())))]
        return SimpleNamespace(name=name, rule=rule, libraries=tuple(libs), runs=runs)

    scenarios = [
        scenario("helper", "symbol-interposition", ["libzhelper-*.so"], "a b"),
        scenario(
            "blas", "blas-duplicate", ["libscipy_openblas-*.so", "libscipy_openblas64_-*.so"], "p q"
        ),
        scenario("odr", "cxx-symbol-duplicate", ["_odr_v1.*.so", "_odr_v2.*.so"], "v1 v2"),
        scenario("gone", "openmp-duplicate", ["libiomp5-*.so"], "i1 i2"),
        # its libraries are blamed, but only in a conflict of other modules: not claimed
        scenario("elsewhere", "openmp-duplicate", ["libzhelper-*.so"], "e1 e2"),
        scenario("control", None, ["libstdc++.so.6*"], "s"),
    ]
    report = {
        "scenarios": [
            {
                "nodeid": "runtime-conflicts::global:seq-01[3 modules]", "outcome": "crashed",
                "signal": "SIGSEGV", "steps": ["a", "b", "c"], "verdict": {"rule": None},
                "libraries": ["/x/libzhelper-1.so", "/y/libzhelper-2.so"],
                "minimal_steps": ["a", "b"], "load_mode": {"order": "global(a)>b"},
            },
            {
                "nodeid": "runtime-conflicts::blas-duplicate:p+q", "outcome": "latent",
                "steps": ["p", "q"], "findings": [{"rule": "blas-duplicate"}],
                "loaded_runtimes": [{"path": "/p/libscipy_openblas-1.so"}, {"path": "/q/libscipy_openblas64_-2.so"}],
            },
            {
                "nodeid": "runtime-conflicts::cxx-symbol-duplicate:v1+v2", "outcome": "passed",
                "steps": ["v1", "v2"],
                "target": {"findings": [{"rule": "cxx-symbol-duplicate", "severity": "warning", "reproduced": False}]},
            },
        ]
    }  # fmt: skip
    lines = class_lines(scenarios, report)
    text = "\n".join(lines)
    assert "  reproduced  helper: crashed SIGSEGV (unattributed), minimal order global(a)>b" in text
    assert "  latent      blas: two copies mapped without a crash (blas-duplicate)" in text
    assert "  static      odr: [warning] cxx-symbol-duplicate: not reproduced at run time" in text
    assert "  not found   gone:" in text and "control" not in text
    assert (
        "  related     elsewhere: crashed SIGSEGV (unattributed), minimal order global(a)>b" in text
    )
    assert "(not between the scenario's own modules)" in text
    assert lines[-1] == "  1 latent, 1 not found, 1 related, 1 reproduced, 1 static"


def entry_of(run_id: str, outcome: str, findings: tuple[Finding, ...] = ()) -> RunEntry:
    """A report entry of a run that ended with ``outcome`` (no child needed)."""
    spec = RunSpec(steps=tuple(run_id.split(">")), id=run_id)
    return RunEntry(RunResult(spec, outcome, findings=findings))


def test_a_target_that_reproduces_nothing_reports_its_findings() -> None:
    from pytest_runtimeconflict.engine.target_items import judge_findings
    from pytest_runtimeconflict.engine.verdicts import PlanOutcome
    from pytest_runtimeconflict.model.plan import PlannedItem

    error = finding(
        "soname-version-shadow", ("/o/libstdc++.so.6", "/n/_new.so"), ("o", "n"), "error"
    )
    warn = finding(
        "blas-duplicate", ("/a/libopenblas.so", "/b/libopenblas.so"), ("a", "b"), "warning"
    )
    item = PlannedItem("t", "target", (PlannedRun(("o", "n")),), findings=(error, warn))
    latent = entry_of("a>b", "latent", findings=(warn,))
    for fail_errors in (True, False):
        outcome = PlanOutcome()
        outcome.entries = [entry_of("o>n", "passed"), latent]
        judge_findings(item, outcome, fail_errors)
        verdict = outcome.verdict()
        judged = verdict.entries[-1].to_json()["target"]["findings"]
        assert [(f["rule"], f["reproduced"], f["reproduced_as"]) for f in judged] == [
            ("soname-version-shadow", False, None),
            ("blas-duplicate", True, "latent"),
        ]
        text = "static conflict not reproduced at run time: [error] soname-version-shadow"
        if fail_errors:
            assert verdict.failure and verdict.failure.startswith(text)
            assert "tried: o>n; a>b" in verdict.failure
        else:  # --rc-fail-on crash: a warning
            assert verdict.failure is None and any(text in w for w in verdict.warnings)


def test_a_baselined_finding_no_run_reproduces_is_known(tmp_path: Path) -> None:
    """--rc-baseline covers static errors no run reproduced like any conflict: the item
    xfails when the baseline records the finding (by rule and library file names), fails when
    it does not, and the entry's mark carries the finding's key either way."""
    from types import SimpleNamespace

    from pytest_runtimeconflict.engine.target_items import judge_findings
    from pytest_runtimeconflict.engine.verdicts import PlanOutcome
    from pytest_runtimeconflict.model.plan import PlannedItem
    from pytest_runtimeconflict.report.baseline import Baseline, finding_conflict

    error = finding(
        "soname-version-shadow", ("/o/libstdc++.so.6", "/n/_new.so"), ("o", "n"), "error"
    )
    item = PlannedItem("t", "target", (PlannedRun(("o", "n")),), findings=(error,))
    key = finding_conflict(error, {}).key
    settings = SimpleNamespace(baseline=str(tmp_path / "b.json"), update_baseline=False)
    for recorded in (True, False):
        path = settings.baseline
        baseline = Baseline(path, (finding_conflict(error, {}),) if recorded else ())
        outcome = PlanOutcome(is_known_finding=baseline.mark_finding)
        outcome.entries = [entry_of("o>n", "passed")]
        judge_findings(item, outcome, fail_errors=True)
        verdict = outcome.verdict(settings)
        mark = verdict.entries[-1].to_json()["baseline"]
        assert [c["key"] for c in mark["conflicts"]] == [key]
        if recorded:
            assert verdict.failure is None and verdict.xfail is not None
            assert "static conflict not reproduced at run time" in verdict.xfail
            assert mark["status"] == "known"
        else:
            assert verdict.failure is not None and mark["status"] == "new"


def test_no_fork_probe_items_without_runtime_exercising() -> None:
    libs = (RuntimeLibrary("/a/libgomp.so", "openmp", "libgomp", ("a",), "a"),)
    ctx = context(["a", "b"], runtimes=libs)
    assert [i.name for i in planning.build_plan(ctx, 2, AUTO).items if i.kind == "fork"] == [
        "fork:a"
    ]
    plan = planning.build_plan(ctx, 2, AUTO, exercise=False)
    assert [i for i in plan.items if i.kind == "fork"] == []


def test_a_library_that_cannot_load_alone_is_not_preloaded() -> None:
    libs = [
        RuntimeLibrary("/a/libopenblas-needs-rpath.so", "blas", "openblas", ("a",), "a", False),
        RuntimeLibrary("/b/libopenblas.so", "blas", "openblas", ("b",), "b"),
    ]
    assert variants.library_groups(libs) == [("/b/libopenblas.so",)]


def test_extensions_of_one_file_name_in_two_packages_do_not_mask(tmp_path: Path) -> None:
    """Python loads an extension module by its path: scipy's and scikit-learn's
    ``_cyutility`` extensions are two objects, not one SONAME served twice (no masked pair);
    a library both need by SONAME from different files still masks the later module."""
    from types import SimpleNamespace

    from pytest_runtimeconflict.planning.from_scan import context_from_scan

    site = tmp_path / "lib" / "python3.11" / "site-packages"

    def ext(package: str) -> str:
        path = site / package / "_cyutility.cpython-311-x86_64-linux-gnu.so"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(package.encode() * (10 if package == "pa" else 20))  # two builds
        return str(path)

    a, b = ext("pa"), ext("pb")
    dep_a, dep_b = str(site / "pa" / "libdep.so.1"), str(site / "pb" / "libdep.so.1")
    name = os.path.basename(a)
    # as the scan gives them: each extension's closure starts with the extension itself
    scan = SimpleNamespace(
        closures={a: [(name, a)], b: [(name, b)]},
        distributions={"pa": ["pa"], "pb": ["pb"]},
        objects=[],
        findings=[],
    )
    assert masked_pairs(["pa", "pb", "pc"], context_from_scan(scan, ["pa", "pb", "pc"])) == []
    scan.closures = {a: [(name, a), ("libdep.so.1", dep_a)], b: [(name, b), ("libdep.so.1", dep_b)]}
    assert masked_pairs(["pa", "pb", "pc"], context_from_scan(scan, ["pa", "pb", "pc"])) == [
        (("pb", "pc"), "libdep.so.1")
    ]
