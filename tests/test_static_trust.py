"""Static findings graded by what the bytes show, on real compiled objects: GNU_UNIQUE
constants compared by content and section, copies that differ only in debug information."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cbuild import patchelf
from test_rules import by_rule, ext, fake_lib, make_wheel, scan_rules, vendoring_wheel

from pytest_runtimeconflict.static.elfbytes import same_mapped_bytes, symbol_objects

CONSTANTS_CXX = """
namespace tab {{
template <int N> struct Table {{ static const int values[4]; }};
template <int N> const int Table<N>::values[4] = {{ {first}, 1, 2, 3 }};
}}
extern "C" __attribute__((visibility("default"))) const void *PyInit_{name}(void) {{
    return tab::Table<0>::values;
}}
"""
WRITABLE_CXX = """
namespace tab {{
template <int N> struct Table {{ static int values[4]; }};
template <int N> int Table<N>::values[4] = {{ {first}, 1, 2, 3 }};
}}
extern "C" __attribute__((visibility("default"))) void *PyInit_{name}(void) {{
    return tab::Table<0>::values;
}}
"""
VALUES = "_ZN3tab5TableILi0EE6valuesE"


def _unique_wheels(tmp_path: Path, source: str, firsts: tuple[int, int]) -> list[Path]:
    out = []
    for i, (dist, first) in enumerate(zip(("alpha", "beta"), firsts)):
        name = f"m{i}"
        code = source.format(name=name, first=first)
        module = ext(name, tmp_path / name, source=code, lang="c++")
        out.append(make_wheel(tmp_path / name, dist, {f"{dist}/{name}.so": module}))
    return out


def test_identical_unique_constants_are_harmless_info(tmp_path: Path) -> None:
    (found,) = by_rule(
        scan_rules(*_unique_wheels(tmp_path, CONSTANTS_CXX, (7, 7))), "gnu-unique-shared"
    )
    assert found.severity == "info"
    assert "identical constants: harmless" in found.title and VALUES in found.detail


def test_different_unique_constants_are_an_error(tmp_path: Path) -> None:
    (found,) = by_rule(
        scan_rules(*_unique_wheels(tmp_path, CONSTANTS_CXX, (7, 8))), "gnu-unique-shared"
    )
    assert found.severity == "error" and "harmless" not in found.title
    assert "different contents or in a writable section" in found.detail


def test_identical_but_writable_unique_objects_are_an_error(tmp_path: Path) -> None:
    (found,) = by_rule(
        scan_rules(*_unique_wheels(tmp_path, WRITABLE_CXX, (7, 7))), "gnu-unique-shared"
    )
    assert found.severity == "error"


def test_object_bytes_come_from_the_section_that_holds_the_symbol(tmp_path: Path) -> None:
    const = ext("c0", tmp_path / "c", source=CONSTANTS_CXX.format(name="c0", first=5), lang="c++")
    data = ext("w0", tmp_path / "w", source=WRITABLE_CXX.format(name="w0", first=5), lang="c++")
    ro, rw = (
        symbol_objects(str(const), [VALUES])[VALUES],
        symbol_objects(str(data), [VALUES])[VALUES],
    )
    assert ro.section == ".rodata" and not ro.writable
    assert rw.section == ".data" and rw.writable
    assert ro.content == rw.content == bytes([5, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0])
    assert symbol_objects(str(const), ["no_such_symbol"]) == {}


SHADE_C = "int shade(void) { return 41 + 1; }\nint shade_more(int x) { return x * 3; }\n"


def _shadow_wheels(tmp_path: Path, flags: tuple[tuple[str, ...], tuple[str, ...]]) -> list[Path]:
    wheels = []
    for dist, extra in zip(("alpha", "beta"), flags):
        lib = fake_lib(SHADE_C, "libshade.so.1", tmp_path / dist, extra)
        wheels.append(vendoring_wheel(tmp_path, dist, [lib]))
    return wheels


def test_copies_differing_only_in_debug_info_are_identical_copies(tmp_path: Path) -> None:
    wheels = _shadow_wheels(tmp_path, ((), ("-g",)))
    libs = [tmp_path / d / "libshade.so.1" for d in ("alpha", "beta")]
    assert libs[0].read_bytes() != libs[1].read_bytes()
    assert same_mapped_bytes([str(p) for p in libs])
    (found,) = by_rule(scan_rules(*wheels), "soname-shadow")
    assert found.severity == "info" and "identical copies" in found.title
    assert "only debug information" in found.detail


def test_copies_with_different_code_still_shadow(tmp_path: Path) -> None:
    wheels = _shadow_wheels(tmp_path, ((), ("-O0",)))
    (found,) = by_rule(scan_rules(*wheels), "soname-shadow")
    assert found.severity == "warning" and "identical" not in found.title


def test_copies_whose_loader_tables_patchelf_placed_apart_are_identical(tmp_path: Path) -> None:
    """auditwheel's patchelf moves .dynstr/.gnu.hash/.dynsym when it renames a SONAME; where
    it puts them (here: another page size) is no difference in what runs."""
    wheels = []
    for dist, page in (("alpha", "4096"), ("beta", "65536")):
        lib = fake_lib(SHADE_C, "libshade.so.1", tmp_path / dist)
        subprocess.run(
            [
                patchelf(),
                "--page-size",
                page,
                "--set-soname",
                "libshade-0123456789abcdef.so.1",
                str(lib),
            ],
            check=True,
        )
        wheels.append(vendoring_wheel(tmp_path, dist, [lib]))
    libs = [str(tmp_path / d / "libshade.so.1") for d in ("alpha", "beta")]
    assert same_mapped_bytes(libs)
    (found,) = by_rule(scan_rules(*wheels), "soname-shadow")
    assert found.severity == "info" and "identical copies" in found.title


POINTERS_CXX = """
namespace tab {{
template <int N> struct Table {{ static const int values[4]; }};
template <int N> const int Table<N>::values[4] = {{ 7, 1, 2, 3 }};
template <int N> struct Ptrs {{ static const int *const ptrs[2]; }};
template <int N> const int *const Ptrs<N>::ptrs[2] = {{ &Table<N>::values[0], &Table<N>::values[{first}] }};
}}
extern "C" __attribute__((visibility("default"))) const void *PyInit_{name}(void) {{
    return tab::Ptrs<0>::ptrs;
}}
"""
PTRS = "_ZN3tab4PtrsILi0EE4ptrsE"


def test_relro_pointer_tables_compare_by_their_relocations(tmp_path: Path) -> None:
    """A table of pointers sits in .data.rel.ro (read-only after RELRO): its file bytes are
    zeros either way; where the pointers point is in the dynamic relocations."""
    module = ext("p0", tmp_path / "p", source=POINTERS_CXX.format(name="p0", first=2), lang="c++")
    ptrs = symbol_objects(str(module), [PTRS])[PTRS]
    assert ptrs.section == ".data.rel.ro" and not ptrs.writable
    assert [(off, name, addend) for off, _t, name, addend in ptrs.relocations] == [
        (0, VALUES, 0),
        (8, VALUES, 8),
    ]
    same = scan_rules(*_unique_wheels(tmp_path / "same", POINTERS_CXX, (2, 2)))
    (found,) = by_rule(same, "gnu-unique-shared")
    assert found.severity == "info"
    apart = scan_rules(*_unique_wheels(tmp_path / "apart", POINTERS_CXX, (2, 3)))
    (found,) = by_rule(apart, "gnu-unique-shared")
    assert found.severity == "error" and PTRS in found.detail and VALUES not in found.detail
