"""Each static rule fires on a real positive case and stays silent on its negative twin.

Objects are tiny real ELF files (gcc/g++), renamed/patched with patchelf, packed into real
``.whl`` files so that distributions and ``$ORIGIN`` RUNPATHs are exercised as in the wild.
The builders here are reused by tests/test_scan_cli.py.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cbuild
import pytest

from pytest_runtimeconflict.files.locking import file_lock
from pytest_runtimeconflict.model import Finding
from pytest_runtimeconflict.static import rules
from pytest_runtimeconflict.static.elffacts import read_elf_facts
from pytest_runtimeconflict.static.objects import describe_paths
from pytest_runtimeconflict.static.scan import scan_environment
from pytest_runtimeconflict.static.symbols import exports_libstdcxx

SYSTEM_LIBGOMP = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
CACHE = cbuild.CACHE

# --- builders --------------------------------------------------------------------------


def patch(
    path: Path,
    *,
    soname: str | None = None,
    needed: tuple[str, ...] = (),
    runpath: str | None = None,
) -> Path:
    """Edit ``path`` in place with patchelf (RUNPATH, not RPATH)."""
    exe = cbuild.patchelf()
    if soname:
        subprocess.run([exe, "--set-soname", soname, str(path)], check=True)
    for name in needed:
        subprocess.run([exe, "--add-needed", name, str(path)], check=True)
    if runpath is not None:
        subprocess.run([exe, "--set-rpath", runpath, str(path)], check=True)
    return path


def ext(
    name: str,
    outdir: Path,
    *,
    needed: tuple[str, ...] = (),
    runpath: str | None = None,
    source: str | None = None,
    lang: str = "c",
    flags: tuple[str, ...] = (),
) -> Path:
    """A Python-extension-shaped object (defines ``PyInit_<name>``)."""
    src = source or f"void *PyInit_{name}(void) {{ return 0; }}\n"
    path = cbuild.compile_shared(src, f"{name}.so", lang=lang, flags=flags, outdir=outdir)
    return patch(path, needed=needed, runpath=runpath)


def renamed_copy(src: str | Path, outdir: Path, soname: str) -> Path:
    """An auditwheel-style copy of ``src`` named and SONAMEd ``soname``."""
    if not os.path.exists(src):
        pytest.skip(f"{src} is missing")
    outdir.mkdir(parents=True, exist_ok=True)
    dest = outdir / soname
    shutil.copyfile(src, dest)
    return patch(dest, soname=soname)


def fake_lib(source: str, soname: str, outdir: Path, flags: tuple[str, ...] = ()) -> Path:
    return cbuild.compile_shared(
        source, soname, flags=(f"-Wl,-soname,{soname}", *flags), outdir=outdir
    )


def version_script(text: str) -> str:
    path = CACHE / f"vs-{hashlib.sha256(text.encode()).hexdigest()[:12]}.map"
    CACHE.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text)
    return str(path)


def fake_libstdcxx(versions: list[str], outdir: Path) -> Path:
    """A ``libstdc++.so.6`` from C that defines exactly ``versions`` (one dummy symbol each)."""
    body = "".join(f"void v{i}(void) {{}}\n" for i in range(len(versions)))
    script = "".join(
        f"{v} {{ global: v{i}; {'local: *;' if i == 0 else ''} }};\n"
        for i, v in enumerate(versions)
    )
    return fake_lib(
        body, "libstdc++.so.6", outdir, (f"-Wl,--version-script={version_script(script)}",)
    )


def make_wheel(outdir: Path, dist: str, members: dict[str, Path]) -> Path:
    """A real wheel ``dist-1.0-py3-none-linux_x86_64.whl`` holding ``members``."""
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"{dist}-1.0-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, src in members.items():
            zf.write(src, member)
        zf.writestr(
            f"{dist}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n"
        )
    return path


def vendoring_wheel(tmp: Path, dist: str, libs: list[Path], ext_name: str | None = None) -> Path:
    """A wheel with ``dist/<ext>.so`` needing each of ``libs``, vendored in ``dist.libs/``."""
    work = tmp / f"build-{dist}"
    names = tuple(read_elf_facts(str(p)).soname or p.name for p in libs)
    module = ext(ext_name or f"{dist}_ext", work, needed=names, runpath=f"$ORIGIN/../{dist}.libs")
    members = {f"{dist}/{module.name}": module}
    members.update({f"{dist}.libs/{n}": p for n, p in zip(names, libs)})
    return make_wheel(tmp / "dist", dist, members)


def scan_rules(*paths: Path) -> list[Finding]:
    result = scan_environment(paths=[str(p) for p in paths])
    return result.findings


def by_rule(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def libomp_path() -> str:
    found = sorted(glob.glob("/usr/lib/llvm-*/lib/libomp.so.5"))
    if not found:
        pytest.skip("LLVM libomp not installed: apt-get install libomp-dev")
    return found[-1]


def libiomp5_path() -> str:
    """libiomp5.so from the intel-openmp wheel (pip download, cached under .test-cache/)."""
    root = CACHE / "intel-openmp"
    root.mkdir(parents=True, exist_ok=True)
    # xdist workers share the cache: one downloads and extracts, the others wait for it
    with file_lock(root / ".lock"):
        found = _fetch_libiomp5(root)
    if not found:
        pytest.skip("Intel libiomp5 unavailable: no libiomp5.so in the intel-openmp wheel")
    return found[0]


def _fetch_libiomp5(root: Path) -> list[str]:
    found = glob.glob(str(root / "x" / "**" / "libiomp5.so"), recursive=True)
    if not found:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "intel-openmp",
                "-d",
                str(root),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheels = glob.glob(str(root / "intel_openmp-*.whl"))
        if proc.returncode != 0 or not wheels:
            pytest.skip("Intel libiomp5 unavailable: `pip download intel-openmp` failed")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(root / "x")
        found = glob.glob(str(root / "x" / "**" / "libiomp5.so"), recursive=True)
    return found


# --- openmp ------------------------------------------------------------------------------


def test_two_vendored_libgomp_copies_warn(tmp_path: Path) -> None:
    a = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "a", "libgomp-a34b3233.so.1.0.0")
    b = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "b", "libgomp-ff651d7f.so.1.0.0")
    findings = scan_rules(
        vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])
    )
    (dup,) = by_rule(findings, "openmp-duplicate")
    assert dup.severity == "warning" and dup.family == "openmp"
    assert dup.distributions == ("alpha", "beta")
    assert any(lib.endswith("alpha.libs/libgomp-a34b3233.so.1.0.0") for lib in dup.libraries)
    assert any("!/beta.libs/libgomp-ff651d7f.so.1.0.0" in lib for lib in dup.libraries)
    assert all(os.path.isabs(lib) for lib in dup.libraries)
    assert not by_rule(findings, "openmp-mixed")


def test_one_shared_libgomp_gives_no_openmp_finding(tmp_path: Path) -> None:
    if not os.path.exists(SYSTEM_LIBGOMP):
        pytest.skip("system libgomp missing: apt-get install libgomp1")
    wa = make_wheel(
        tmp_path, "alpha", {"alpha/a.so": ext("a", tmp_path / "a", needed=("libgomp.so.1",))}
    )
    wb = make_wheel(
        tmp_path, "beta", {"beta/b.so": ext("b", tmp_path / "b", needed=("libgomp.so.1",))}
    )
    findings = scan_rules(wa, wb)
    assert not [f for f in findings if f.family == "openmp" and f.severity != "info"]


def test_unreachable_runtime_copy_is_not_counted(tmp_path: Path) -> None:
    a = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "a", "libgomp-a34b3233.so.1.0.0")
    b = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "b", "libgomp-ff651d7f.so.1.0.0")
    wheel = vendoring_wheel(tmp_path, "alpha", [a])
    loose = make_wheel(
        tmp_path, "beta", {"beta.libs/libgomp-ff651d7f.so.1.0.0": b}
    )  # no extension uses it
    assert not by_rule(scan_rules(wheel, loose), "openmp-duplicate")


def test_two_libomp_copies_are_an_error(tmp_path: Path) -> None:
    src = libomp_path()
    a = renamed_copy(src, tmp_path / "a", "libomp-11111111.so")
    b = renamed_copy(src, tmp_path / "b", "libomp-22222222.so")
    (dup,) = by_rule(
        scan_rules(vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])),
        "openmp-duplicate",
    )
    assert dup.severity == "error" and "Error #15" in dup.detail


def test_libgomp_with_libomp_is_mixed_warning(tmp_path: Path) -> None:
    a = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "a", "libgomp-a34b3233.so.1.0.0")
    b = renamed_copy(libomp_path(), tmp_path / "b", "libomp-22222222.so")
    findings = scan_rules(
        vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])
    )
    (mixed,) = by_rule(findings, "openmp-mixed")
    assert mixed.severity == "warning" and "libgomp" in mixed.title and "libomp" in mixed.title
    assert not by_rule(findings, "openmp-duplicate")


def test_libomp_with_renamed_libiomp5_is_mixed_error(tmp_path: Path) -> None:
    a = renamed_copy(libomp_path(), tmp_path / "a", "libomp-11111111.so")
    b = renamed_copy(libiomp5_path(), tmp_path / "b", "libomp-deadbeef.so")  # Intel's, disguised
    findings = scan_rules(
        vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])
    )
    (mixed,) = by_rule(findings, "openmp-mixed")
    assert mixed.severity == "error"
    assert "libiomp5" in mixed.title and "libomp" in mixed.title


# --- blas / fortran ------------------------------------------------------------------------

OPENBLAS_C = 'const char *openblas_get_config(void) { return "fake OpenBLAS"; }\n'
SCIPY_OPENBLAS64_C = 'const char *scipy_openblas_get_config64_(void) { return "fake"; }\n'
GFORTRAN_C = "void _gfortran_st_write(void) {}\nvoid _gfortran_runtime_error(void) {}\n"


def test_two_openblas_copies_warn_and_say_they_collide(tmp_path: Path) -> None:
    a = fake_lib(OPENBLAS_C, "libopenblas-aaaa.so", tmp_path / "a")
    b = fake_lib(OPENBLAS_C, "libopenblas-bbbb.so", tmp_path / "b")
    (dup,) = by_rule(
        scan_rules(vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])),
        "blas-duplicate",
    )
    assert dup.severity == "warning" and dup.family == "blas"
    # checked name by name: the copies share their exported names, so they interpose
    assert "both export 1 C functions (e.g. openblas_get_config)" in dup.detail
    assert "RTLD_GLOBAL" in dup.detail


def test_prefixed_openblas_copies_are_named_apart(tmp_path: Path) -> None:
    a = fake_lib(OPENBLAS_C, "libopenblas-aaaa.so", tmp_path / "a")
    b = fake_lib(SCIPY_OPENBLAS64_C, "libscipy_openblas64_-bbbb.so", tmp_path / "b")
    (dup,) = by_rule(
        scan_rules(vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])),
        "blas-duplicate",
    )
    assert "export no name in common (checked)" in dup.detail
    assert "prefixed 'scipy_' and suffixed '64_'" in dup.detail


def test_one_blas_no_finding(tmp_path: Path) -> None:
    a = fake_lib(OPENBLAS_C, "libopenblas-aaaa.so", tmp_path / "a")
    assert not by_rule(scan_rules(vendoring_wheel(tmp_path, "alpha", [a])), "blas-duplicate")


def test_two_gfortran_copies_warn_one_does_not(tmp_path: Path) -> None:
    a = fake_lib(GFORTRAN_C, "libgfortran-aaaa.so.5.0.0", tmp_path / "a")
    b = fake_lib(GFORTRAN_C, "libgfortran-bbbb.so.5.0.0", tmp_path / "b")
    wa, wb = vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])
    (dup,) = by_rule(scan_rules(wa, wb), "fortran-runtime-duplicate")
    assert dup.severity == "warning" and dup.family == "libgfortran"
    assert not by_rule(scan_rules(wa), "fortran-runtime-duplicate")


# --- libstdc++ ----------------------------------------------------------------------------

CXX_LOCALE_EXT = """
#include <sstream>
extern "C" void *PyInit_{name}(void) {{ std::ostringstream os; os << 42L; return os.str().empty() ? nullptr : nullptr; }}
"""


def static_cxx_ext(name: str, outdir: Path, hidden: bool) -> Path:
    flags = ("-static-libstdc++", "-Wl,--exclude-libs,ALL") if hidden else ("-static-libstdc++",)
    return ext(name, outdir, source=CXX_LOCALE_EXT.format(name=name), lang="c++", flags=flags)


def test_static_exported_libstdcxx_is_an_error(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path, "nvcvlike", {"nvcvlike/m.so": static_cxx_ext("m", tmp_path / "m", hidden=False)}
    )
    findings = scan_rules(wheel)
    (err,) = by_rule(findings, "libstdcxx-static-exported")
    assert err.severity == "error" and err.distributions == ("nvcvlike",)
    assert "GNU_UNIQUE" in err.detail and "exclude-libs" in err.advice
    assert not by_rule(findings, "libstdcxx-static-hidden")


def test_hidden_static_libstdcxx_is_info_only(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path, "hidden", {"hidden/h.so": static_cxx_ext("h", tmp_path / "h", hidden=True)}
    )
    findings = scan_rules(wheel)
    assert not by_rule(findings, "libstdcxx-static-exported")
    (info,) = by_rule(findings, "libstdcxx-static-hidden")
    assert info.severity == "info"


def test_shared_libstdcxx_extension_gives_no_libstdcxx_finding(tmp_path: Path) -> None:
    module = ext("s", tmp_path / "s", source=CXX_LOCALE_EXT.format(name="s"), lang="c++")
    findings = scan_rules(make_wheel(tmp_path, "shared", {"shared/s.so": module}))
    assert not [f for f in findings if f.family == "libstdc++"]


NEEDS_GLIBCXX_3_4_30 = """
#include <condition_variable>
#include <mutex>
std::condition_variable cv; std::mutex mu;
void waiter() { std::unique_lock<std::mutex> lock(mu); cv.wait(lock); }
extern "C" void *PyInit_newmod(void) { return (void *)&waiter; }
"""


def _shadow_setup(tmp_path: Path, versions: list[str] | None) -> list[Finding]:
    newmod = ext("newmod", tmp_path / "new", source=NEEDS_GLIBCXX_3_4_30, lang="c++")
    needs = dict(read_elf_facts(str(newmod)).version_needs)["libstdc++.so.6"]
    assert "GLIBCXX_3.4.30" in needs
    vendored = fake_libstdcxx(versions or sorted(needs), tmp_path / "old")
    old_wheel = vendoring_wheel(tmp_path, "oldpkg", [vendored], ext_name="oldmod")
    new_wheel = make_wheel(tmp_path, "newpkg", {"newpkg/newmod.so": newmod})
    return scan_rules(old_wheel, new_wheel)


def test_old_vendored_libstdcxx_shadows_newer_needs(tmp_path: Path) -> None:
    findings = _shadow_setup(tmp_path, ["GLIBCXX_3.4", "GLIBCXX_3.4.20", "CXXABI_1.3"])
    (err,) = by_rule(findings, "soname-version-shadow")
    assert err.severity == "error"
    assert err.title.startswith("importing oldmod.so before newmod.so fails")
    assert "GLIBCXX_3.4.30" in err.title
    assert set(err.distributions) == {"oldpkg", "newpkg"}
    assert any(lib.endswith("oldpkg.libs/libstdc++.so.6") for lib in err.libraries)


def test_vendored_libstdcxx_with_all_versions_is_fine(tmp_path: Path) -> None:
    assert not by_rule(_shadow_setup(tmp_path, None), "soname-version-shadow")


# --- other C++ libraries, TLS ----------------------------------------------------------------

PROTOLIKE = """
namespace protolike {{
int a() {{ return 1; }} int b() {{ return 2; }} int c() {{ return 3; }}
int d() {{ return 4; }} int e() {{ return 5; }} int f() {{ return 6; }}
}}
extern "C" __attribute__((visibility("default"))) void *PyInit_{name}(void) {{ return (void *)&protolike::a; }}
"""


def _protolike_wheels(tmp_path: Path, flags: tuple[str, ...], dists: tuple[str, str]) -> list[Path]:
    out = []
    for i, dist in enumerate(dists):
        name = f"p{i}"
        module = ext(
            name, tmp_path / name, source=PROTOLIKE.format(name=name), lang="c++", flags=flags
        )
        out.append(make_wheel(tmp_path / name, dist, {f"{dist}/{name}.so": module}))
    return out


def test_same_cxx_library_exported_by_two_distributions_warns(tmp_path: Path) -> None:
    (dup,) = by_rule(
        scan_rules(*_protolike_wheels(tmp_path, (), ("arrowish", "tfish"))), "cxx-symbol-duplicate"
    )
    assert dup.severity == "warning" and "namespace protolike" in dup.title
    assert dup.distributions == ("arrowish", "tfish")


def test_hidden_cxx_library_or_same_distribution_is_silent(tmp_path: Path) -> None:
    hidden = _protolike_wheels(tmp_path / "h", ("-fvisibility=hidden",), ("arrowish", "tfish"))
    assert not by_rule(scan_rules(*hidden), "cxx-symbol-duplicate")
    same = _protolike_wheels(tmp_path / "s", (), ("samedist", "samedist"))
    assert not by_rule(scan_rules(*same), "cxx-symbol-duplicate")


TLS_C = '__attribute__((tls_model("{model}"))) __thread int tlsv[64];\nint tls_get(int i) {{ return tlsv[i]; }}\n'


def test_static_tls_library_loaded_late_is_info(tmp_path: Path) -> None:
    lib = fake_lib(TLS_C.format(model="initial-exec"), "libietls.so", tmp_path / "l")
    (info,) = by_rule(scan_rules(vendoring_wheel(tmp_path, "tlspkg", [lib])), "static-tls-late")
    assert info.severity == "info" and "aarch64" in info.detail


def test_dynamic_tls_library_is_silent(tmp_path: Path) -> None:
    lib = fake_lib(TLS_C.format(model="global-dynamic"), "libgdtls.so", tmp_path / "l")
    assert not by_rule(scan_rules(vendoring_wheel(tmp_path, "tlspkg", [lib])), "static-tls-late")


# --- findings_for_mapped ---------------------------------------------------------------------


def test_findings_for_mapped_needs_two_libstdcxx_copies(tmp_path: Path) -> None:
    static = static_cxx_ext("m", tmp_path / "m", hidden=False)
    alone = describe_paths([str(static)])
    assert not rules.findings_for_mapped(alone)
    libstdcxx = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"
    both = describe_paths([str(static), libstdcxx])
    (err,) = by_rule(rules.findings_for_mapped(both), "libstdcxx-static-exported")
    assert libstdcxx in err.libraries


def test_findings_for_mapped_two_libgomp_copies(tmp_path: Path) -> None:
    a = renamed_copy(SYSTEM_LIBGOMP, tmp_path / "a", "libgomp-a34b3233.so.1.0.0")
    mapped = describe_paths([str(a), SYSTEM_LIBGOMP])
    (dup,) = by_rule(rules.findings_for_mapped(mapped), "openmp-duplicate")
    assert set(dup.libraries) == {str(a), SYSTEM_LIBGOMP}
    assert not rules.findings_for_mapped(describe_paths([SYSTEM_LIBGOMP]))


NONSHARED_FS_C = """
__attribute__((weak)) int fs_pending(void) __asm__("_ZNKSt10filesystem7__cxx1128recursive_directory_iterator17recursion_pendingEv");
__attribute__((weak)) int fs_pending(void) { return 0; }
void *PyInit_fsmod(void) { return (void *)&fs_pending; }
"""


def test_nonshared_filesystem_pieces_are_not_a_static_libstdcxx(tmp_path: Path) -> None:
    # manylinux (devtoolset) builds carry std::filesystem symbols from libstdc++_nonshared.a
    # while linking the shared libstdc++ (torch's libtorch_cpu.so): not an exported copy
    module = ext("fsmod", tmp_path, source=NONSHARED_FS_C, needed=("libstdc++.so.6",))
    facts = read_elf_facts(str(module))
    assert (
        "_ZNKSt10filesystem7__cxx1128recursive_directory_iterator17recursion_pendingEv"
        in facts.defined_symbols
    )
    assert not exports_libstdcxx(facts.defined_symbols, facts.unique_symbols)
    findings = scan_rules(make_wheel(tmp_path, "torchish", {"torchish/fsmod.so": module}))
    assert not [f for f in findings if f.family == "libstdc++"]


SYSTEM_LIBSTDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"


def test_findings_for_mapped_two_shared_libstdcxx_sonames_are_an_error(tmp_path: Path) -> None:
    copy = renamed_copy(SYSTEM_LIBSTDCXX, tmp_path / "pkg.libs", "libstdc++-deadbeef.so.6")
    mapped = describe_paths([SYSTEM_LIBSTDCXX, str(copy)])
    (dup,) = by_rule(rules.findings_for_mapped(mapped), "libstdcxx-duplicate")
    assert set(dup.libraries) == {SYSTEM_LIBSTDCXX, str(copy)}
    assert dup.severity == "error" and dup.family == "libstdc++"
    assert "libstdc++-deadbeef.so.6" in dup.detail


def test_findings_for_mapped_one_shared_libstdcxx_is_no_duplicate(tmp_path: Path) -> None:
    if not os.path.exists(SYSTEM_LIBSTDCXX):
        pytest.skip(f"{SYSTEM_LIBSTDCXX} is missing")
    assert not by_rule(
        rules.findings_for_mapped(describe_paths([SYSTEM_LIBSTDCXX])), "libstdcxx-duplicate"
    )
    link = tmp_path / "libstdc++.so.6"
    link.symlink_to(SYSTEM_LIBSTDCXX)
    same_file = describe_paths([SYSTEM_LIBSTDCXX, str(link)])
    assert len(same_file) == 2
    assert not by_rule(rules.findings_for_mapped(same_file), "libstdcxx-duplicate")
