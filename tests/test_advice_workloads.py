"""Advice tried with the workloads: a counter-experiment runs every workload of every module of
its order, as the failing run did, so "reverse the import order" is offered only when the
reversed order survives the modules' own code too.

Two extension modules of two distributions, built from C. ``rcwa`` exports ``rcw_helper``
(returns NULL); ``rcwb`` defines ``rcw_helper`` too (returns its table) and calls it from its
module init through the PLT. Imported ``global(rcwa) > rcwb``, the global scope serves rcwb's
call with rcwa's helper and the import crashes. Reversed (``rcwb > global(rcwa)``) the imports
pass: rcwb bound its own helper before rcwa came. rcwb's workload then looks its helper up by
name (``dlsym(RTLD_DEFAULT)``, as plugin registries do), which the global scope again serves
with rcwa's: the reversed order crashes once that workload runs. With a workload that calls
the helper directly, the reversed order passes for real."""

from __future__ import annotations

import json
from pathlib import Path

import cbuild
import pytest
from venvs import make_env, make_venv

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.experiments import with_workloads
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.planning.workloads import workload_steps
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.sandbox.runner import run_spec

pytest_plugins = ["pytester"]

A_SOURCE = r"""
#include <Python.h>
void *rcw_helper(void) { return NULL; }
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "rcwa", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_rcwa(void) { return PyModule_Create(&def); }
"""

B_SOURCE = r"""
#include <Python.h>
#include <dlfcn.h>
static int table[4] = {1, 2, 3, 4};
__attribute__((noinline)) void *rcw_helper(void) { return table; }

static PyObject *work(PyObject *self, PyObject *args) {
    int by_name = 0;
    void *(*fn)(void) = rcw_helper;
    if (!PyArg_ParseTuple(args, "|p", &by_name)) return NULL;
    if (by_name) {
        void *found = dlsym(RTLD_DEFAULT, "rcw_helper");
        if (found != NULL) fn = (void *(*)(void))found;
    }
    return PyLong_FromLong(((int *)fn())[3]);
}

static PyMethodDef methods[] = {{"work", work, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "rcwb", NULL, -1, methods};
PyMODINIT_FUNC PyInit_rcwb(void) {
    int *t = rcw_helper();
    if (t[0] != 1) return NULL;
    return PyModule_Create(&def);
}
"""


def _distribution(site: Path, dist: str, module: str, source: str) -> None:
    name = module + cbuild.extension_suffix()
    flags = (*cbuild.python_extension_flags(), "-ldl")
    cbuild.compile_shared(source, name, flags=flags, outdir=site)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name},,\n{dist}-1.0.dist-info/METADATA,,\n")


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> str:
    python, site = make_venv(tmp_path_factory.mktemp("advice") / "venv")
    _distribution(site, "rcw-a", "rcwa", A_SOURCE)
    _distribution(site, "rcw-b", "rcwb", B_SOURCE)
    return python


def _failing(python: str, workload: str) -> tuple[RunSpec, tuple[tuple[str, tuple[str, ...]], ...]]:
    table = workload_steps(["rcwa", "rcwb"], [("rcwb", workload)], catalogue=False)
    steps = with_workloads(("rcwa", "rcwb"), table)
    spec = RunSpec(steps=steps, global_imports=("rcwa",), python=python, exercise=False)
    return spec, table


def test_with_workloads_puts_every_module_workload_after_the_imports() -> None:
    table = (("a", ("wa1", "wa2")), ("b", ("wb",)))
    assert with_workloads(("b", "a"), table) == ("b", "a", "wb", "wa1", "wa2")
    # a workload kept without its import still brings its module's other workloads
    assert with_workloads(("a", "wb"), table) == ("a", "wa1", "wa2", "wb")
    assert with_workloads(("c", "pass"), table) == ("c", "pass")


def test_reversal_that_fails_once_the_workloads_run_is_not_advised(python: str) -> None:
    spec, table = _failing(python, "import rcwb; rcwb.work(True)")
    result = run_spec(spec)
    assert (result.outcome, result.failed_step) == ("crashed", 1), result.message
    d = diagnose(spec, result, max_runs=20, workloads=table)
    text = format_failure(result, d)
    assert d.minimal_steps == ("rcwa", "rcwb"), text  # the workload was minimised away
    reverse = next(e for e in d.experiments if e.kind == "order")
    assert reverse.change.startswith("reverse the import order"), text
    assert not reverse.avoided, text
    assert reverse.outcome == "crashed", text
    assert reverse.effect.startswith("fails once the workloads run (SIGSEGV in workload rcwb:user")
    assert reverse.workloads == ("workload rcwb:user",), reverse
    assert "fails once the workloads run" in text, text
    assert "reverse the import order" not in d.user_advice, d.user_advice
    # dropping the global load mode survives the workload too: that is the advice
    assert d.user_advice.startswith("load everything RTLD_LOCAL"), d.user_advice
    assert all(e.workloads for e in d.experiments), d.experiments


def test_reversal_that_survives_the_workloads_is_advised(python: str) -> None:
    spec, table = _failing(python, "import rcwb; rcwb.work(False)")
    result = run_spec(spec)
    assert (result.outcome, result.failed_step) == ("crashed", 1), result.message
    d = diagnose(spec, result, max_runs=20, workloads=table)
    reverse = next(e for e in d.experiments if e.kind == "order")
    assert reverse.avoided and reverse.workloads == ("workload rcwb:user",), reverse
    assert d.user_advice.startswith("reverse the import order"), d.user_advice


# End to end through the plugin: rc_b crashes at import once rc_a is imported, and its
# workload crashes too once rc_a is imported, so the reversed order fails once it runs.
ORDER_THEN_WORKLOAD = {
    "rc_a": "VALUE = 1\n",
    "rc_b": """
        import os, signal, sys
        if "rc_a" in sys.modules:
            os.kill(os.getpid(), signal.SIGSEGV)
        def check():
            if "rc_a" in sys.modules:
                os.kill(os.getpid(), signal.SIGSEGV)
            return True
    """,
}


def test_the_planned_run_tries_the_reversal_with_the_workloads(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    python = make_env(tmp_path, ORDER_THEN_WORKLOAD)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={python}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=60", "--rc-modules=rc_a,rc_b",
        "--rc-variants=none", "--rc-workload=rc_b=rc_b.check()",
    )  # fmt: skip
    data = json.loads(report.read_text())
    diagnosed = [e for e in data["scenarios"] if e.get("verdict")]
    assert diagnosed, result.stdout.str()
    owner = diagnosed[0]
    assert owner["minimal_steps"] == ["rc_a", "rc_b"], owner["minimal_steps"]
    reverse = [e for e in owner["experiments"] if e["kind"] == "order"]
    assert reverse and not reverse[0]["avoided"], owner["experiments"]
    assert reverse[0]["workloads"] == ["workload rc_b:user"], reverse
    assert reverse[0]["effect"].startswith("fails once the workloads run"), reverse
    assert "reverse the import order" not in owner["verdict"]["user_advice"]
    orders = [o["order"] for o in owner["failing_orders"]]
    # the other order fails in the workload: one conflict, both orders listed
    assert orders == ["rc_a > rc_b", "rc_b > rc_a > workload rc_b:user"], orders
    result.stdout.fnmatch_lines(
        [
            "*minimal order: rc_a > rc_b",
            "*also fails as: rc_b > rc_a > workload rc_b:user (every one: failing_orders*",
        ]
    )
