"""Issue 14's verdicts on real reproducers: a reference served by another distribution's copy
(the loader's binding trace), GNU_UNIQUE objects merged under RTLD_LOCAL, one runtime shipped
twice under one SONAME with a by-path load. Each verdict names its rule, both libraries and a
shared symbol; the rule follows the evidence, not whichever runtime copies are mapped."""

from __future__ import annotations

import dataclasses
import fnmatch
import os

import pytest
from zoo_support import *  # noqa: F403
from zoo_support import ZooVenv

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.sandbox.runner import run_spec

pytestmark = pytest.mark.slow

# scenario, run, rule, libraries (globs, all named), a symbol the verdict must name
CASES = [
    ("c-helper-ctor-global", "a-global-then-b", "symbol-interposition",
     ["libzhelper-*.so", "libzhelper-*.so"], "zhelper_fill"),
    ("cxx-ctor-interposed", "a-global-then-b", "cxx-symbol-duplicate",
     ["_zoo_cxi_a.*.so", "libzcore-*.so"], "_ZN5zcore6TensorC1ERKNS_5ShapeE"),
    ("blas-internal-interpose", "a-global-then-b", "symbol-interposition",
     ["libzblasa-*.so", "libzblasb-*.so"], "ddot_kernel_HASWELL"),
    ("gnu-unique-registry", "a-then-b", "gnu-unique-shared",
     ["_zoo_gur_a.*.so", "_zoo_gur_b.*.so"], "_ZN4zreg8RegistryINS_14GeneratedFilesEE5filesB5cxx11E"),
    ("openmp-same-soname-by-path", "needed-then-bypath", "openmp-duplicate",
     ["libiomp5.so", "libiomp5.so"], "kmp_"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "run_id", "rule", "libraries", "symbol"), CASES)
def test_verdict_names_rule_libraries_and_a_shared_symbol(
    zoo_venv: ZooVenv, name: str, run_id: str, rule: str, libraries: list[str], symbol: str
) -> None:
    zoo_venv.wheels.check(name)
    run = next(r for r in zoo_venv.scenarios[name].runs if r.id == run_id)
    spec = dataclasses.replace(run.spec, python=zoo_venv.python)
    result = run_spec(spec)
    assert result.outcome == run.expect.outcome, result.message
    d = diagnose(spec, result, max_runs=20)
    text = format_failure(result, d)
    assert d.rule == rule, text
    paths = [lib.path for lib in d.libraries]
    for pattern in libraries:  # both copies named, each from its distribution
        matching = [p for p in paths if fnmatch.fnmatch(os.path.basename(p), pattern)]
        assert matching, (pattern, paths)
    assert len({lib.distribution for lib in d.libraries if lib.distribution}) >= 2, paths
    assert symbol in d.cause or any(symbol in line for line in d.evidence_lines), text
    assert not any("GOMP_1.0" in line for line in d.evidence_lines)  # version nodes are no symbols
    assert "Symbols:" in text and symbol in text


def test_interposition_verdict_says_which_copy_served_and_why(zoo_venv: ZooVenv) -> None:
    zoo_venv.wheels.check("c-helper-ctor-global")
    run = next(
        r for r in zoo_venv.scenarios["c-helper-ctor-global"].runs if r.id == "a-global-then-b"
    )
    spec = dataclasses.replace(run.spec, python=zoo_venv.python)
    d = diagnose(spec, run_spec(spec))
    assert "served by libzhelper-" in d.cause and "(from zoo-chg-a)" in d.cause
    assert "RTLD_GLOBAL" in d.cause and "instead of its own definition" in d.cause
    roles = {lib.distribution: lib.role for lib in d.libraries}
    assert roles["zoo-chg-a"].startswith("served 'zhelper_fill'"), roles
    assert roles["zoo-chg-b"] == "referenced 'zhelper_fill', which it defines itself", roles
    # dropping the global load mode is tried and avoids it
    assert any(e.kind == "load_mode" and e.avoided for e in d.experiments), d.experiments


def test_plain_imports_of_interposing_copies_are_latent(zoo_venv: ZooVenv) -> None:
    zoo_venv.wheels.check("c-helper-ctor-global")
    run = next(r for r in zoo_venv.scenarios["c-helper-ctor-global"].runs if r.id == "a-then-b")
    result = run_spec(dataclasses.replace(run.spec, python=zoo_venv.python))
    assert result.outcome == "latent" and "symbol-interposition" in result.message
    assert [f.rule for f in result.findings] == ["symbol-interposition"]


def test_an_rtld_global_import_is_the_load_mode_the_drop_global_experiment_removes(
    zoo_venv: ZooVenv,
) -> None:
    """The planned runs' RTLD_GLOBAL imports (``global_imports``, no setdlopenflags step):
    the verdict names the import that mapped the serving copy, and the drop-global experiment
    imports everything RTLD_LOCAL, which avoids the crash."""
    zoo_venv.wheels.check("c-helper-ctor-global")
    spec = RunSpec(
        steps=("zoo_chg_a", "zoo_chg_b"), global_imports=("zoo_chg_a",), python=zoo_venv.python
    )
    result = run_spec(spec)
    assert result.outcome == "crashed", result.message
    d = diagnose(spec, result, max_runs=20)
    assert d.rule == "symbol-interposition", format_failure(result, d)
    assert "step 0 ('zoo_chg_a') was imported RTLD_GLOBAL and mapped libzhelper-" in d.cause
    dropped = [e for e in d.experiments if e.kind == "load_mode"]
    assert dropped and dropped[0].avoided, d.experiments
    assert "no RTLD_GLOBAL import" in dropped[0].change


def test_a_traced_rerun_where_a_flaky_failure_did_not_recur_still_gives_the_bindings(
    zoo_venv: ZooVenv,
) -> None:
    """A crash that does not recur every time (threads, timing) may pass in the one re-run
    under the binding trace. The loader bound the same way (same objects, order and mode), so
    the bindings still decide the rule; the evidence says the trace's run passed. The re-run
    here is real; only its outcome is set to passed, as a flaky crash's re-run would end."""
    zoo_venv.wheels.check("c-helper-ctor-global")
    spec = RunSpec(
        steps=("zoo_chg_a", "zoo_chg_b"), global_imports=("zoo_chg_a",), python=zoo_venv.python
    )
    result = run_spec(spec)
    assert result.outcome == "crashed", result.message
    traced_runs = []

    def run(spec: RunSpec, **options: object) -> object:
        got = run_spec(spec)
        if not spec.trace_bindings:
            return got
        traced_runs.append(got)
        assert got.bindings, "the trace re-run recorded no bindings"
        return dataclasses.replace(got, outcome="passed", signal=None, signum=None, message="")

    d = diagnose(spec, result, run=run, max_runs=20, experiments=False)  # type: ignore[arg-type]
    assert len(traced_runs) == 1
    assert d.rule == "symbol-interposition", d.evidence_lines
    assert "'zhelper_fill'" in d.cause
    assert any(
        line.startswith("binding trace: from a re-run of the minimal order that ended passed")
        for line in d.evidence_lines
    ), d.evidence_lines
