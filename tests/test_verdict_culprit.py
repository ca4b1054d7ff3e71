"""The culprit is where the failing call ran: the error text names the library (or its
version) before binding counts do.

Real C builds, two distributions, each vendoring (auditwheel style: hashed file names, own
SONAMEs) two libraries: ``zimg``, a small image library with a version check (built as
version 100 in one, 62 in the other), and ``zfont``, a font library of 40 functions both
extensions call. ``global(rcva) > rcvb``: rcva's copies join the global scope and serve every
reference of rcvb, 40 font functions and the one version check, which then fails with
"Wrong ZIMG library version: library is 100, caller expects 62". The verdict names the two
zimg copies, not the font library with the most cross-distribution bindings."""

from __future__ import annotations

from pathlib import Path

import cbuild
import pytest
from venvs import make_venv

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.diagnosis.interposition import library_stem
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.report.text import format_failure
from pytest_runtimeconflict.sandbox.runner import run_spec

FONT_FUNCTIONS = 40

ZIMG = r"""
#include <stdio.h>
static char message[128];
const char *zimg_check(int caller) {
    if (caller == ZIMG_VERSION) return 0;
    snprintf(message, sizeof message,
             "Wrong ZIMG library version: library is %d, caller expects %d",
             ZIMG_VERSION, caller);
    return message;
}
"""

ZFONT = "".join(f"int zfont_f{i}(int x) {{ return x + {i}; }}\n" for i in range(FONT_FUNCTIONS))

EXTENSION = r"""
#include <Python.h>
const char *zimg_check(int caller);
%(decls)s
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_%(name)s(void) {
    int sum = 0;
    const char *error;
    %(calls)s
    error = zimg_check(%(version)d);
    if (error != NULL) {
        PyErr_SetString(PyExc_RuntimeError, error);
        return NULL;
    }
    return sum >= 0 ? PyModule_Create(&def) : NULL;
}
"""


def _distribution(site: Path, dist: str, module: str, version: int, tag: str) -> None:
    libs = site / f"{dist}.libs"
    zimg, zfont = f"libzimg-{tag}.so.{version}", f"libzfont-{tag[::-1]}.so.2"
    for name, source, extra in ((zimg, ZIMG, (f"-DZIMG_VERSION={version}",)), (zfont, ZFONT, ())):
        cbuild.compile_shared(source, name, flags=(*extra, f"-Wl,-soname,{name}"), outdir=libs)
    decls = "".join(f"int zfont_f{i}(int);\n" for i in range(FONT_FUNCTIONS))
    calls = "".join(f"sum += zfont_f{i}({i});\n" for i in range(FONT_FUNCTIONS))
    source = EXTENSION % {"name": module, "decls": decls, "calls": calls, "version": version}
    ext = module + cbuild.extension_suffix()
    link = (f"-L{libs}", f"-l:{zimg}", f"-l:{zfont}", f"-Wl,-rpath,$ORIGIN/{dist}.libs")
    cbuild.compile_shared(source, ext, flags=(*cbuild.python_extension_flags(), *link), outdir=site)
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    record = [ext, f"{dist}.libs/{zimg}", f"{dist}.libs/{zfont}", f"{dist}-1.0.dist-info/METADATA"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))


@pytest.fixture(scope="module")
def python(tmp_path_factory: pytest.TempPathFactory) -> str:
    python, site = make_venv(tmp_path_factory.mktemp("culprit") / "venv")
    _distribution(site, "rcv-a", "rcva", 100, "a1b2c3d4")
    _distribution(site, "rcv-b", "rcvb", 62, "b5c6d7e8")
    return python


def test_library_stem_drops_prefix_hash_and_version() -> None:
    assert library_stem("/x/libjpeg-1a2b3c4d.so.62.3.0") == "jpeg"
    assert library_stem("libzimg-a1b2c3d4.so.100") == "zimg"
    assert library_stem("libzimg-a0000.so.100") == "zimg-a"  # no auditwheel hash
    assert library_stem("/w/libfreetype.so.6") == "freetype"


def test_the_library_the_message_names_is_the_culprit_not_the_most_bound(python: str) -> None:
    alone = run_spec(RunSpec(steps=("rcvb",), python=python, exercise=False))
    assert alone.outcome == "passed", alone.message
    spec = RunSpec(steps=("rcva", "rcvb"), global_imports=("rcva",), python=python, exercise=False)
    result = run_spec(spec)
    assert result.outcome == "failed", result.message
    assert "library is 100, caller expects 62" in result.message
    d = diagnose(spec, result, max_runs=8, experiments=False)
    text = format_failure(result, d)
    assert d.rule == "symbol-interposition", text
    names = sorted(Path(lib.path).name for lib in d.libraries)
    assert [n for n in names if "zimg" in n] and not [n for n in names if "zfont" in n], text
    assert "zimg_check" in d.cause, text
    assert "the failure's message names libzimg-a1b2c3d4.so.100 ('ZIMG')" in d.cause, text
    assert "zfont" not in d.key and d.key.count("libzimg-") == 2, d.key
