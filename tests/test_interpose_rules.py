"""Static interposition analysis on real objects: C functions and data two distributions
share, GNU_UNIQUE registries merged under RTLD_LOCAL, libstdc++ header statics left out,
protected symbols, copies by file, missing DT_NEEDED providers, one finding per file name."""

from __future__ import annotations

from pathlib import Path

from test_rules import (
    SYSTEM_LIBGOMP,
    by_rule,
    ext,
    fake_lib,
    make_wheel,
    scan_rules,
    vendoring_wheel,
)
from venvs import make_venv

from pytest_runtimeconflict.static.scan import scan_environment
from pytest_runtimeconflict.static.symbols import leading_namespace

HELPER_C = """
int helper_state = {v};
int helper_value(void) {{ return helper_state; }}
int helper_twice(void) {{ return 2 * helper_value(); }}
__attribute__((constructor)) static void helper_init(void) {{ helper_state += helper_value(); }}
"""


def _helper_wheels(tmp_path: Path, flags: tuple[str, ...] = ()) -> list[Path]:
    out = []
    for dist, version in (("alpha", 1), ("beta", 2)):
        lib = fake_lib(HELPER_C.format(v=version), f"libhelper-{dist}.so", tmp_path / dist, flags)
        out.append(vendoring_wheel(tmp_path, dist, [lib]))
    return out


def test_c_functions_and_data_shared_by_two_distributions(tmp_path: Path) -> None:
    (found,) = by_rule(scan_rules(*_helper_wheels(tmp_path)), "symbol-interposition")
    assert found.severity == "warning" and found.distributions == ("alpha", "beta")
    assert "1 C data objects, 2 C functions (e.g. helper_state, helper_twice" in found.detail
    assert "runs initializers" in found.detail


def test_protected_symbols_cannot_interpose(tmp_path: Path) -> None:
    protected = _helper_wheels(tmp_path, ("-fvisibility=protected",))
    assert not by_rule(scan_rules(*protected), "symbol-interposition")


REGISTRY_CXX = """
#include <string>
#include <vector>
namespace reg {{
template <class T> struct Registry {{ static inline std::vector<std::string> files; }};
struct Files {{}};
}}
extern "C" __attribute__((visibility("default"))) void *PyInit_{name}(void) {{
    reg::Registry<reg::Files>::files.push_back("x");
    return &reg::Registry<reg::Files>::files;
}}
"""
MAKE_SHARED_CXX = """
#include <memory>
extern "C" __attribute__((visibility("default"))) void *PyInit_{name}(void) {{
    static std::shared_ptr<int> p = std::make_shared<int>(1);
    return p.get();
}}
"""


def _cxx_wheels(tmp_path: Path, source: str) -> list[Path]:
    out = []
    for i, dist in enumerate(("alpha", "beta")):
        name = f"m{i}"
        module = ext(name, tmp_path / name, source=source.format(name=name), lang="c++")
        out.append(make_wheel(tmp_path / name, dist, {f"{dist}/{name}.so": module}))
    return out


def test_gnu_unique_registry_outside_std_is_an_error(tmp_path: Path) -> None:
    findings = scan_rules(*_cxx_wheels(tmp_path, REGISTRY_CXX))
    (found,) = by_rule(findings, "gnu-unique-shared")
    assert (
        found.severity == "error" and "_ZN3reg8RegistryINS_5FilesEE5filesB5cxx11E" in found.detail
    )


def test_libstdcxx_header_statics_are_not_a_shared_library(tmp_path: Path) -> None:
    wheels = _cxx_wheels(tmp_path, MAKE_SHARED_CXX)
    findings = scan_rules(*wheels)
    assert not by_rule(findings, "cxx-symbol-duplicate"), findings
    assert not by_rule(findings, "gnu-unique-shared"), findings
    assert leading_namespace("_ZZNSt19_Sp_make_shared_tag5_S_tiEvE5__tag") == "std"
    assert leading_namespace("_ZGVZNKSt8__detail11_AnyMatcherIcEclEcE5__nul") == "std"
    assert leading_namespace("_ZZN3reg4initEvE5table") == "reg"


def test_same_soname_copies_in_two_distributions_are_two_copies(tmp_path: Path) -> None:
    a = tmp_path / "a" / "libgomp.so.1"
    b = tmp_path / "b" / "libgomp.so.1"
    for copy in (a, b):
        copy.parent.mkdir(parents=True)
        copy.write_bytes(Path(SYSTEM_LIBGOMP).read_bytes())
    (found,) = by_rule(
        scan_rules(vendoring_wheel(tmp_path, "alpha", [a]), vendoring_wheel(tmp_path, "beta", [b])),
        "openmp-duplicate",
    )
    assert len(found.libraries) == 2 and "share the SONAME libgomp.so.1" in found.detail


def test_missing_needed_library_is_an_error(tmp_path: Path) -> None:
    module = ext("lonely", tmp_path / "m", needed=("libzz_nowhere.so.3",))
    (found,) = by_rule(
        scan_rules(make_wheel(tmp_path, "lonely", {"lonely/lonely.so": module})),
        "needed-library-missing",
    )
    assert found.severity == "error" and "libzz_nowhere.so.3" in found.title
    assert "install the system package" in found.advice


def test_one_static_tls_finding_per_file_name(tmp_path: Path) -> None:
    tls = '__attribute__((tls_model("initial-exec"))) __thread int t[64];\nint g(int i) { return t[i]; }\n'
    libs = [fake_lib(tls, "libtlsy.so", tmp_path / d) for d in ("a", "b")]
    wheels = [vendoring_wheel(tmp_path, d, [lib]) for d, lib in zip(("alpha", "beta"), libs)]
    (found,) = by_rule(scan_rules(*wheels), "static-tls-late")
    assert len(found.libraries) == 2 and found.distributions == ("alpha", "beta")


def test_record_entries_outside_site_packages_are_scanned(tmp_path: Path) -> None:
    python, site = make_venv(tmp_path / "venv")
    prefix = site.parents[2]
    lib = fake_lib("int outside_fn(void) { return 1; }\n", "liboutside.so", tmp_path / "lib")
    (prefix / "lib" / "liboutside.so").write_bytes(lib.read_bytes())
    info = site / "outside-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: outside\nVersion: 1.0\n")
    (info / "RECORD").write_text("../../../lib/liboutside.so,,\noutside-1.0.dist-info/RECORD,,\n")
    result = scan_environment(python=python)
    found = [o for o in result.objects if o.path.endswith("liboutside.so")]
    assert found and found[0].distribution == "outside"


def test_different_files_under_one_soname_shadow_each_other(tmp_path: Path) -> None:
    wheels = []
    for dist, body in (("alpha", "return 1;"), ("beta", "return 2 + 2;")):
        lib = fake_lib(f"int shade(void) {{ {body} }}\n", "libshade.so.1", tmp_path / dist)
        wheels.append(vendoring_wheel(tmp_path, dist, [lib]))
    (found,) = by_rule(scan_rules(*wheels), "soname-shadow")
    assert found.severity == "warning" and found.distributions == ("alpha", "beta")
    assert "libshade.so.1" in found.title


def test_identical_files_under_one_soname_are_no_shadow(tmp_path: Path) -> None:
    lib = fake_lib("int shade(void) { return 1; }\n", "libshade.so.1", tmp_path / "one")
    wheels = [vendoring_wheel(tmp_path, dist, [lib]) for dist in ("alpha", "beta")]
    assert not by_rule(scan_rules(*wheels), "soname-shadow")


def test_the_crossing_frame_names_the_symbol_not_the_innermost_kernel() -> None:
    """The crashing thread ran the serving copy's internal kernel (innermost, bound by that
    copy to itself, so in no binding) called from the interposed entry point: the verdict's
    symbol is the entry point, the innermost frame that a cross-distribution binding names."""
    from types import SimpleNamespace

    from pytest_runtimeconflict.diagnosis.interposition import _matching_frame
    from pytest_runtimeconflict.model.run import Binding

    served, own, referrer = "/s/libopenblas-a.so", "/o/libopenblas-b.so", "/o/_ext.so"
    gdb = (
        "Thread 1 (Thread 0x7f (LWP 42)):\n"
        f"#0  0x00007f01 in dgemm_oncopy_SKYLAKEX () from {served}\n"
        f"#1  0x00007f02 in dgemm_nn () from {served}\n"
        f"#2  0x00007f03 in cblas_dgemm () from {own}\n"
        f"#3  0x00007f04 in run () from {referrer}\n"
    )
    result = SimpleNamespace(gdb_backtrace=gdb, threads=({"tid": 42},), python_traceback=None)
    hits = [  # the referrer's copy references the kernel too: that binding exists
        (Binding(own, served, "dgemm_oncopy_SKYLAKEX", "normal"), own),
        (Binding(own, served, "gotoblas", "normal"), own),
        (Binding(own, served, "dgemm_nn", "normal"), own),
        (Binding(referrer, served, "cblas_dgemm", "normal"), own),
    ]
    binding, _own = _matching_frame(SimpleNamespace(result=result), hits)  # type: ignore[arg-type]
    assert binding.symbol == "dgemm_nn"
    inner = [hits[0], hits[1]]  # no binding names the entry point: the next frame inwards
    kernel = _matching_frame(SimpleNamespace(result=result), inner)[0].symbol  # type: ignore[arg-type]
    assert kernel == "dgemm_oncopy_SKYLAKEX"
    no_match = [hits[1]]
    assert _matching_frame(SimpleNamespace(result=result), no_match)[0].symbol == "gotoblas"  # type: ignore[arg-type]


def test_without_a_frame_the_pair_whose_referrer_the_failing_step_mapped_is_the_suspect() -> None:
    """numpy's OpenBLAS in the global scope (imported with opencv, RTLD_GLOBAL) serves 3,805
    names of opencv's copy and 881 of scipy's; scipy's LAPACK call fails. The pair to blame is
    the one whose referrer the failing step mapped, not the one that mixed the most."""
    from pytest_runtimeconflict.diagnosis.interposition import _largest_pair
    from pytest_runtimeconflict.model.run import Binding

    numpy_, opencv, scipy_ = "/n/libopenblas64_.so", "/o/libopenblasp.so", "/s/libopenblas.so"
    hits = [(Binding(opencv, numpy_, f"o{i}", "normal"), opencv) for i in range(5)]
    hits += [(Binding(scipy_, numpy_, f"s{i}", "normal"), scipy_) for i in range(2)]
    assert _largest_pair(hits)[0].referrer == opencv  # no failing step: the largest pair
    assert _largest_pair(hits, ["/s/other.so", scipy_])[0].referrer == scipy_
    assert _largest_pair(hits, ["/x/unrelated.so"])[0].referrer == opencv
