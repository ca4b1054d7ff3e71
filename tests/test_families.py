"""The runtime registry recognises real runtimes, also when renamed the way auditwheel does."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_rules import (
    GFORTRAN_C,
    OPENBLAS_C,
    SCIPY_OPENBLAS64_C,
    SYSTEM_LIBGOMP,
    ext,
    fake_lib,
    libiomp5_path,
    libomp_path,
    renamed_copy,
)

from pytest_runtimeconflict.families import FAMILIES, RuntimeKind, classify
from pytest_runtimeconflict.static.elffacts import read_elf_facts


def kind_of(path: Path | str) -> RuntimeKind | None:
    return classify(read_elf_facts(str(path)))


def test_registry_covers_the_required_runtimes() -> None:
    kinds = {(f.family, f.runtime) for f in FAMILIES}
    for required in [
        ("openmp", "libgomp"),
        ("openmp", "libomp"),
        ("openmp", "libiomp5"),
        ("blas", "openblas"),
        ("blas", "mkl"),
        ("blas", "blis"),
        ("blas", "flexiblas"),
        ("libstdc++", "libstdc++"),
        ("libc++", "libc++"),
        ("libgfortran", "libgfortran"),
        ("libquadmath", "libquadmath"),
        ("libgcc_s", "libgcc_s"),
    ]:
        assert required in kinds


def test_libgomp_system_and_auditwheel_renamed(tmp_path: Path) -> None:
    assert kind_of(SYSTEM_LIBGOMP) == RuntimeKind("openmp", "libgomp")
    copy = renamed_copy(SYSTEM_LIBGOMP, tmp_path, "libgomp-a34b3233.so.1.0.0")
    assert kind_of(copy) == RuntimeKind("openmp", "libgomp")
    # identity symbols win over names: a libgomp disguised as something else is still libgomp
    disguised = renamed_copy(SYSTEM_LIBGOMP, tmp_path, "libfoo-12345678.so")
    assert kind_of(disguised) == RuntimeKind("openmp", "libgomp")


def test_llvm_libomp_and_renamed_copy(tmp_path: Path) -> None:
    src = libomp_path()
    assert kind_of(src) == RuntimeKind("openmp", "libomp")
    assert kind_of(renamed_copy(src, tmp_path, "libgomp-99999999.so.1")) == RuntimeKind(
        "openmp", "libomp"
    )


def test_intel_libiomp5_told_apart_from_libomp_when_renamed(tmp_path: Path) -> None:
    src = libiomp5_path()
    assert kind_of(src) == RuntimeKind("openmp", "libiomp5")
    copy = renamed_copy(src, tmp_path, "libomp-deadbeef.so")
    assert kind_of(copy) == RuntimeKind("openmp", "libiomp5")


@pytest.mark.parametrize(
    "source, soname",
    [
        (OPENBLAS_C, "libfoo-aaaa.so"),
        (SCIPY_OPENBLAS64_C, "libbar-bbbb.so"),
        (
            'const char *scipy_openblas_get_config(void) { return ""; }',
            "libscipy_openblas-6cdc3b4a.so",
        ),
    ],
)
def test_openblas_by_symbol_variants(tmp_path: Path, source: str, soname: str) -> None:
    assert kind_of(fake_lib(source, soname, tmp_path)) == RuntimeKind("blas", "openblas")


def test_name_patterns_when_no_identity_symbol(tmp_path: Path) -> None:
    assert kind_of(fake_lib("int x;", "libgfortran-040039e1.so.5.0.0", tmp_path)) == RuntimeKind(
        "libgfortran", "libgfortran"
    )
    assert kind_of(fake_lib("int y;", "libquadmath-96973f99.so.0.0.0", tmp_path)) == RuntimeKind(
        "libquadmath", "libquadmath"
    )
    assert kind_of(fake_lib(GFORTRAN_C, "libfortranrt.so", tmp_path)) == RuntimeKind(
        "libgfortran", "libgfortran"
    )


def test_ordinary_objects_are_not_runtimes(tmp_path: Path) -> None:
    assert kind_of(fake_lib("int z;", "libplain.so", tmp_path)) is None
    # an extension module whose name mentions openblas is not a BLAS library
    assert kind_of(ext("openblas_wrapper", tmp_path)) is None
    # an extension with a static, exported libstdc++ is not "the" libstdc++ runtime
    from test_rules import static_cxx_ext

    assert kind_of(static_cxx_ext("m", tmp_path / "m", hidden=False)) is None


def test_system_cxx_and_gcc_runtimes() -> None:
    assert kind_of("/usr/lib/x86_64-linux-gnu/libstdc++.so.6") == RuntimeKind(
        "libstdc++", "libstdc++"
    )
    assert kind_of("/lib/x86_64-linux-gnu/libgcc_s.so.1") == RuntimeKind("libgcc_s", "libgcc_s")
