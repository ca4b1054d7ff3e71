"""An older copy of a library, loaded first under its SONAME by another distribution, defines
the symbol version a later object needs but not the symbol itself: ``undefined symbol: NAME,
version V``. The verdict is the SONAME shadow, naming the symbol, the copy that lacks it and
the needer. Real objects built from C (two builds of one library, a needer linked against the
newer one), in two distributions of a real venv, loaded by real child runs."""

from __future__ import annotations

from pathlib import Path

import cbuild
from test_rules import version_script
from venvs import make_venv

from pytest_runtimeconflict.diagnosis import diagnose
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.sandbox.runner import run_spec

SONAME = "libzshadow.so.1"
OLD = "int zs_base(void) { return 1; }\n"
NEW = OLD + "int zs_added(void) { return 2; }\n"
NEEDER = "int zs_added(void);\nint zs_use(void) { return zs_added(); }\n"


def _install(site: Path, dist: str, files: dict[str, Path]) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in files))


def test_an_older_copy_lacking_a_versioned_symbol_is_the_soname_shadow(tmp_path: Path) -> None:
    python, site = make_venv(tmp_path / "venv")
    script = version_script("ZS_1.0 { global: *; };\n")
    flags = (f"-Wl,-soname,{SONAME}", f"-Wl,--version-script={script}")
    old = cbuild.compile_shared(OLD, SONAME, flags=flags, outdir=site / "zsold.libs")
    new = cbuild.compile_shared(NEW, SONAME, flags=flags, outdir=site / "zsnew.libs")
    needer = cbuild.compile_shared(
        NEEDER, "libzsuse.so", flags=(str(new), "-Wl,-rpath,$ORIGIN"), outdir=site / "zsnew.libs"
    )
    _install(site, "zsold", {f"zsold.libs/{SONAME}": old})
    _install(site, "zsnew", {f"zsnew.libs/{SONAME}": new, "zsnew.libs/libzsuse.so": needer})
    steps = (f"import ctypes; ctypes.CDLL({str(old)!r})", f"import ctypes; ctypes.CDLL({str(needer)!r})")  # fmt: skip
    alone = run_spec(RunSpec(steps=steps[1:], python=python, exercise=False))
    assert alone.outcome == "passed", alone.message
    spec = RunSpec(steps=steps, python=python, exercise=False)
    result = run_spec(spec)
    assert result.outcome == "failed", result.message
    assert "undefined symbol: zs_added, version ZS_1.0" in (result.message or "")
    d = diagnose(spec, result, max_runs=6, experiments=False)
    assert d.rule == "soname-version-shadow", d.cause
    assert f"{SONAME} (from zsold) was loaded first and now serves the SONAME {SONAME}" in d.cause
    assert "but libzsuse.so needs zs_added (version ZS_1.0), which that copy does not" in d.cause
    roles = {lib.distribution: lib.role for lib in d.libraries if lib.distribution}
    assert roles["zsold"] == f"older {SONAME} loaded first (lacks zs_added (version ZS_1.0))"
