"""Plan-time trust on real environments: an optional backend's missing library is info and
gets no target, a module that needs a missing module is not planned (and listed as such), and
every module that maps an OpenMP runtime gets a fork probe of its own, even when its copy has
another module's file name or is loaded with ctypes."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from cbuild import compile_shared, extension_suffix, python_extension_flags
from test_rules import SYSTEM_LIBGOMP, by_rule, patch
from venvs import make_venv

from pytest_runtimeconflict.planning.from_scan import build_plan, context_from_scan
from pytest_runtimeconflict.planning.import_probe import probe_imports
from pytest_runtimeconflict.planning.variants import parse_variants
from pytest_runtimeconflict.static.scan import scan_environment

pytest_plugins = ["pytester"]

AUTO = parse_variants("--rc-variants", "auto", "test")
EXT_C = """
#include <Python.h>
static struct PyModuleDef d = {{PyModuleDef_HEAD_INIT, "{name}", 0, -1, 0}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&d); }}
"""
MISSING = "libzz_nowhere.so.3"
MISSING_TOO = "libzz_elsewhere.so.4"


def extension(site: Path, dotted: str, needed: tuple[str, ...] = (), rpath: str = "") -> Path:
    """A real importable extension module ``dotted`` under ``site``."""
    *package, name = dotted.split(".")
    flags = (*python_extension_flags(), *((f"-Wl,-rpath,{rpath}",) if rpath else ()))
    path = compile_shared(
        EXT_C.format(name=name),
        name + extension_suffix(),
        flags=flags,
        outdir=site.joinpath(*package),
    )
    return patch(path, needed=needed)


def distribution(site: Path, dist: str, files: dict[str, str]) -> None:
    """Write ``files`` (relative path -> text) and a dist-info whose RECORD lists every file
    under the distribution's top-level directories."""
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(textwrap.dedent(text))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    tops = {rel.split("/")[0] for rel in files}
    listed = sorted(
        str(p.relative_to(site)) for top in tops for p in (site / top).rglob("*") if p.is_file()
    )
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in listed))


def scan_and_plan(python: str, modules: list[str], cache: Path) -> tuple:
    result = scan_environment(python=python, cache_dir=cache)
    context = context_from_scan(result, modules, cache, python=python, timeout=60)
    return result, context, build_plan(context, 2, AUTO)


@pytest.fixture(scope="module")
def backend_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """optpkg: a core extension imported by its __init__, and a backend extension needing a
    missing library whose import failure is tolerated; dynpkg: the same backend, imported by
    a computed name the static reading cannot follow; duck: a package whose second top-level
    module needs a module that is not installed."""
    root = tmp_path_factory.mktemp("backend")
    python, site = make_venv(root / "venv")
    distribution(site, "optpkg", {
        "optpkg/__init__.py": """
            from . import _core
            try:
                from . import _backend
            except ImportError:
                _backend = None
        """,
    })  # fmt: skip
    extension(site, "optpkg._core")
    extension(site, "optpkg._backend", needed=(MISSING,))
    distribution(site, "dynpkg", {
        "dynpkg/__init__.py": """
            import importlib
            for _name in ["_co" + "re"]:
                importlib.import_module("." + _name, __name__)
        """,
    })  # fmt: skip
    extension(site, "dynpkg._core")
    extension(site, "dynpkg._backend", needed=(MISSING_TOO,))
    distribution(site, "reqpkg", {"reqpkg/__init__.py": "from . import _needy\n"})
    extension(site, "reqpkg._needy", needed=("libzz_required.so.5",))
    distribution(site, "duck", {
        "duck/__init__.py": "from . import _duck\n",
        "duck_adbc/__init__.py": "import adbc_driver_manager_not_installed\n",
    })  # fmt: skip
    extension(site, "duck._duck")
    return python, root


def test_optional_backend_read_from_the_sources_is_info(backend_env: tuple[str, Path]) -> None:
    python, root = backend_env
    result = scan_environment(python=python, cache_dir=root / "cache")
    found = [
        f for f in by_rule(list(result.findings), "needed-library-missing") if "optpkg" in f.detail
    ]
    (finding,) = found
    assert finding.severity == "info" and "optpkg._backend" in finding.title
    assert "optional backend" in finding.title
    (dyn,) = [
        f for f in result.findings if f.rule == "needed-library-missing" and "dynpkg" in f.detail
    ]
    assert dyn.severity == "error"  # a computed import name: the sources cannot tell
    (required,) = [f for f in result.findings if "libzz_required.so.5" in f.title]
    assert required.severity == "error" and "optional" not in required.title


def test_a_library_the_package_import_needs_stays_an_error(backend_env: tuple[str, Path]) -> None:
    python, root = backend_env
    _result, context, plan = scan_and_plan(python, ["reqpkg"], root / "cache")
    assert plan.modules == ("reqpkg",) and not context.not_importable  # its own failure
    (finding,) = [f for f, _ in context.findings if "libzz_required" in f.title]
    assert finding.severity == "error"
    assert [i.findings[0].rule for i in plan.items if i.kind == "target"] == [
        "needed-library-missing"
    ]


def test_the_import_probe_decides_what_the_sources_cannot(backend_env: tuple[str, Path]) -> None:
    python, root = backend_env
    _result, context, plan = scan_and_plan(python, ["dynpkg", "optpkg"], root / "cache")
    missing = [f for f, _ in context.findings if "pkg._backend" in f.detail]
    assert {f.severity for f in missing} == {"info"} and len(missing) == 2
    assert any("dynpkg._backend" in f.title for f in missing)
    assert not [i for i in plan.items if i.kind == "target"]  # nothing to fail for them


def test_a_module_needing_a_missing_module_is_not_planned(backend_env: tuple[str, Path]) -> None:
    python, root = backend_env
    _result, context, plan = scan_and_plan(python, ["duck", "duck_adbc"], root / "cache")
    assert plan.modules == ("duck",)
    ((module, error),) = context.not_importable
    assert module == "duck_adbc"
    assert error == "ModuleNotFoundError: No module named 'adbc_driver_manager_not_installed'"


def test_import_probes_are_cached_per_environment(
    backend_env: tuple[str, Path], tmp_path: Path
) -> None:
    python, _root = backend_env
    first = probe_imports(python, ["duck", "duck_adbc"], tmp_path, "env-1", ["duck", "duck_adbc"])
    stored = json.loads((tmp_path / "import-probes.json").read_text())
    assert set(stored["probes"]) == {"duck", "duck_adbc"}
    assert first["duck"].error is None and any("_duck" in p for p in first["duck"].mapped)
    # a fake cached answer is served for the same environment, not for another one
    stored["probes"]["duck"]["error"] = {"type": "ImportError", "message": "cached", "name": "x"}
    (tmp_path / "import-probes.json").write_text(json.dumps(stored))
    assert probe_imports(python, ["duck"], tmp_path, "env-1", ["duck"])["duck"].error is not None
    assert probe_imports(python, ["duck"], tmp_path, "env-2", ["duck"])["duck"].error is None


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_not_importable_alone_in_the_summary_and_json(
    pytester: pytest.Pytester, backend_env: tuple[str, Path], workers: list[str]
) -> None:
    """Also under xdist: the controller reads the plan's context the workers wrote (their
    session id comes with their output)."""
    python, _root = backend_env
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", f"--rc-python={python}", f"--rc-report={report}",
        "-p", "no:cacheprovider", "--rc-timeout=60", "--rc-modules=duck,duck_adbc",
        "--rc-variants=none", *workers,
    )  # fmt: skip
    result.stdout.fnmatch_lines([
        "*not importable alone (not planned): 1 module(s)*",
        "*duck_adbc: ModuleNotFoundError: No module named 'adbc_driver_manager_not_installed'*",
    ])  # fmt: skip
    assert "unattributed" not in result.stdout.str()
    data = json.loads(report.read_text())
    assert "No module named" in data["not_importable"]["duck_adbc"]
    assert all("duck_adbc" not in json.dumps(s.get("steps", [])) for s in data["scenarios"])
    assert result.ret == 0


@pytest.fixture(scope="module")
def openmp_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """alpha: an extension needing alpha.libs/libgomp.so.1; beta: a pure-Python package that
    loads its own beta.libs/libgomp.so.1 (the same file name) with ctypes; gamma: a ctypes-
    loaded library that needs the system libgomp through DT_NEEDED; plain: no OpenMP."""
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip(f"{SYSTEM_LIBGOMP} is missing")
    root = tmp_path_factory.mktemp("openmp")
    python, site = make_venv(root / "venv")
    gomp = Path(SYSTEM_LIBGOMP).read_bytes()
    load = """
        import ctypes, os
        _lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "..", "{libs}", "{name}"))
    """
    distribution(site, "alpha", {"alpha/__init__.py": "from . import _alpha\n"})
    for dist in ("alpha", "beta"):
        (site / f"{dist}.libs").mkdir()
        (site / f"{dist}.libs" / "libgomp.so.1").write_bytes(gomp)
    extension(site, "alpha._alpha", needed=("libgomp.so.1",), rpath="$ORIGIN/../alpha.libs")
    distribution(
        site, "beta", {"beta/__init__.py": load.format(libs="beta.libs", name="libgomp.so.1")}
    )
    lib = compile_shared(
        "int gamma_train(void) { return 1; }\n", "libgamma.so", outdir=site / "gamma.libs"
    )
    patch(lib, needed=("libgomp.so.1",))
    distribution(
        site, "gamma", {"gamma/__init__.py": load.format(libs="gamma.libs", name="libgamma.so")}
    )
    distribution(site, "plain", {"plain/__init__.py": "import json\n"})
    return python, root


def test_every_module_mapping_an_openmp_runtime_gets_its_fork_probe(
    openmp_env: tuple[str, Path],
) -> None:
    python, root = openmp_env
    _result, context, plan = scan_and_plan(python, ["alpha", "beta", "gamma", "plain"], root / "c")
    maps = dict(context.openmp_maps)
    assert set(maps) == {"alpha", "beta", "gamma"}
    assert maps["alpha"] != maps["beta"]  # same file name, two copies
    assert maps["gamma"] == (os.path.realpath(SYSTEM_LIBGOMP),)
    forks = [(i.name, i.probes, i.runs[0].order) for i in plan.items if i.kind == "fork"]
    assert forks == [
        (f"fork:{m}", ("fork-after-parallel",), (m,)) for m in ("alpha", "beta", "gamma")
    ]
    # the static closures alone know only alpha's copy
    static = context_from_scan(
        scan_environment(python=python, cache_dir=root / "c"), ["alpha", "beta", "gamma"]
    )
    assert [m for m, _ in static.openmp_maps] == ["alpha"]
