"""An interposition between two builds of one interface that differ in integer width: the
serving copy is an ILP64 build (its routines carry the ``64_`` suffix) that left some routines
under the plain names, which then serve the 32-bit build's own calls. The verdict names those
routines as the likely culprits when no crash frame names one. Unit tests of the split, then a
real run: two distributions' libraries built from C, the ILP64 one preloaded RTLD_GLOBAL."""

from __future__ import annotations

from pathlib import Path

import cbuild
from venvs import make_venv

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.interposition import integer_width_split
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.model.facts import ElfFacts, ObjectInfo
from pytest_runtimeconflict.sandbox.runner import run_spec

ROUTINES = [f"r{i}_" for i in range(12)]


def _info(path: str, functions: list[str]) -> ObjectInfo:
    facts = ElfFacts(
        path, 0, None, (), (), (), "x86_64", 64, "DYN", False, 0, (), (), (), (), (),
        c_functions=tuple(functions),
    )  # fmt: skip
    return ObjectInfo(facts, "d", None, False)


def test_an_ilp64_build_names_the_routines_it_did_not_rename() -> None:
    lp64 = _info("/a/liblp64.so", [*ROUTINES, "cblas_x", "roundup_lwork_", "kernel_k"])
    ilp64 = _info(
        "/b/libilp64.so",
        [*(r + "64_" for r in ROUTINES), "cblas_x64_", "roundup_lwork_", "kernel_k"],
    )
    served = ["roundup_lwork_", "kernel_k", "roundup_lwork_"]
    split = integer_width_split(lp64, ilp64, served)
    assert split == (("r0_", "r0_64_"), 13, ["roundup_lwork_"])


def test_copies_of_one_width_or_too_few_renamed_routines_are_no_split() -> None:
    lp64 = _info("/a/liblp64.so", [*ROUTINES, "roundup_lwork_"])
    same = _info("/b/liblp64.so", [*ROUTINES, "roundup_lwork_"])
    assert integer_width_split(lp64, same, ["roundup_lwork_"]) is None
    few = _info("/b/libfew.so", ["r0_64_", "r1_64_", "roundup_lwork_"])
    assert integer_width_split(lp64, few, ["roundup_lwork_"]) is None
    assert integer_width_split(lp64, None, ["roundup_lwork_"]) is None


# One source, two integer widths (as OpenBLAS builds its 64-bit-integer interface with
# INTERFACE64=1 SYMBOLSUFFIX=64_). solve_ asks roundup_lwork_ to double a work size through
# the PLT (a default-visibility export, so another copy in the global scope serves it); the
# ILP64 build kept roundup_lwork_ under its plain name, and reads and writes 64 bits there.
SOURCE = """
#define PASTE(a, b) a##b
#define CAT(a, b) PASTE(a, b)
#define NAME(n) CAT(n, SUFFIX)
__attribute__((noinline)) void roundup_lwork_(INT *n) {{ *n = *n * 2; }}
int NAME(solve)(int *n) {{
    int work[2] = {{*n, 7}};
    roundup_lwork_((INT *)&work[0]);
    return work[1] == 7 ? work[0] : -1;
}}
{routines}
"""


def _library(dist: str, width: str, suffix: str, site: Path) -> Path:
    routines = "".join(f"INT NAME({r[:-1]})(INT *n) {{ return *n; }}\n" for r in ROUTINES)
    lib = cbuild.compile_shared(
        SOURCE.format(routines=routines),
        f"libwidth-{dist}.so",
        flags=(f"-DINT={width}", f"-DSUFFIX={suffix}", f"-Wl,-soname,libwidth-{dist}.so"),
        outdir=site / f"{dist}.libs",
    )
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{dist}.libs/{lib.name},,\n{dist}-1.0.dist-info/METADATA,,\n")
    return lib


def test_a_real_run_names_the_unrenamed_routine_of_the_ilp64_copy(tmp_path: Path) -> None:
    python, site = make_venv(tmp_path / "venv")
    lp64 = _library("widthlp", "int", "_", site)
    ilp64 = _library("widthilp", "long", "_64_", site)
    step = (
        "import ctypes\n"
        f"lib = ctypes.CDLL({str(lp64)!r})\n"
        "got = lib.solve_((ctypes.c_int * 1)(5))\n"
        "if got != 10:\n"
        "    raise ValueError(f'wrong work size {got}')\n"
    )
    alone = run_spec(RunSpec(steps=(step,), python=python, exercise=False))
    assert alone.outcome == "passed", alone.message
    spec = RunSpec(steps=(step,), python=python, preload=(str(ilp64),), exercise=False)
    result = run_spec(spec)
    assert result.outcome == "failed" and "wrong work size -1" in (result.message or "")
    d = diagnose(spec, result, max_runs=8, experiments=False)
    assert d.rule == "symbol-interposition", d.cause
    assert "is a 64-bit-integer (ILP64) build of the same interface" in d.cause, d.cause
    assert "(13 of its routines carry the ILP64 suffix, e.g. r0_64_ for r0_)" in d.cause
    assert "the likely culprits: roundup_lwork_;" in d.cause, d.cause
