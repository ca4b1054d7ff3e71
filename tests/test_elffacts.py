"""ELF facts read from real objects built with gcc/g++ and from the system's runtimes."""

from __future__ import annotations

import os
from pathlib import Path

import cbuild
import pytest
from test_rules import NEEDS_GLIBCXX_3_4_30, TLS_C, ext, fake_lib, static_cxx_ext

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.elffacts import leading_namespace, read_elf_facts
from pytest_runtimeconflict.static.symbols import exports_libstdcxx as _exports


def exports_libstdcxx(facts: ElfFacts) -> bool:
    return _exports(facts.defined_symbols, facts.unique_symbols)


SYSTEM_LIBSTDCXX = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"


def test_system_libstdcxx_facts() -> None:
    if not os.path.exists(SYSTEM_LIBSTDCXX):
        pytest.skip("libstdc++6 not installed: apt-get install libstdc++6")
    facts = read_elf_facts(SYSTEM_LIBSTDCXX)
    assert facts.soname == "libstdc++.so.6"
    assert "GLIBCXX_3.4.30" in facts.version_defs and "CXXABI_1.3.13" in facts.version_defs
    assert "libc.so.6" in facts.needed
    assert "_ZNSt6locale7classicEv" in facts.defined_symbols
    assert any(u.endswith("2idE") for u in facts.unique_symbols)
    assert facts.cxx_exports == ()  # everything it exports is std / __gnu_cxx
    assert facts.machine == "EM_X86_64" and facts.elfclass == 64 and facts.elf_type == "ET_DYN"
    assert ElfFacts.from_json(facts.to_json()) == facts


def test_static_exported_vs_hidden_libstdcxx(tmp_path: Path) -> None:
    exported = read_elf_facts(str(static_cxx_ext("m", tmp_path / "m", hidden=False)))
    hidden = read_elf_facts(str(static_cxx_ext("h", tmp_path / "h", hidden=True)))
    assert not any(n.startswith("libstdc++") for n in exported.needed + hidden.needed)
    assert exports_libstdcxx(exported) and not exported.static_libstdcxx_hidden
    assert len([u for u in exported.unique_symbols if u.endswith("2idE")]) > 20
    assert not exports_libstdcxx(hidden) and hidden.static_libstdcxx_hidden
    assert hidden.unique_symbols == ()


def test_shared_libstdcxx_module_is_not_static(tmp_path: Path) -> None:
    facts = read_elf_facts(
        str(ext("s", tmp_path, source=NEEDS_GLIBCXX_3_4_30.replace("newmod", "s"), lang="c++"))
    )
    assert "libstdc++.so.6" in facts.needed
    assert not exports_libstdcxx(facts) and not facts.static_libstdcxx_hidden
    needs = dict(facts.version_needs)
    assert "GLIBCXX_3.4.30" in needs["libstdc++.so.6"]
    assert "PyInit_s" in facts.defined_symbols


def test_static_tls_flag_and_size(tmp_path: Path) -> None:
    ie = read_elf_facts(str(fake_lib(TLS_C.format(model="initial-exec"), "libie.so", tmp_path)))
    gd = read_elf_facts(str(fake_lib(TLS_C.format(model="global-dynamic"), "libgd.so", tmp_path)))
    assert ie.static_tls and ie.tls_size == 256
    assert not gd.static_tls and gd.tls_size == 256


@pytest.mark.parametrize("new_dtags, field", [(False, "rpath"), (True, "runpath")])
def test_rpath_and_runpath(tmp_path: Path, new_dtags: bool, field: str) -> None:
    flag = "--enable-new-dtags" if new_dtags else "--disable-new-dtags"
    path = cbuild.compile_shared(
        "int x;", "librp.so", flags=(f"-Wl,{flag},-rpath,/opt/a:$ORIGIN/../b",), outdir=tmp_path
    )
    facts = read_elf_facts(str(path))
    assert getattr(facts, field) == ("/opt/a", "$ORIGIN/../b")
    assert getattr(facts, "runpath" if field == "rpath" else "rpath") == ()


def test_cxx_exports_exclude_std() -> None:
    src = '#include <string>\nnamespace mylib { std::string name() { return "x"; } int v = 3; }\n'
    facts = read_elf_facts(str(cbuild.compile_shared(src, "libmylib.so", lang="c++")))
    assert "_ZN5mylib4nameB5cxx11Ev" in facts.cxx_exports and "_ZN5mylib1vE" in facts.cxx_exports
    assert not [s for s in facts.cxx_exports if leading_namespace(s) == "std"]


@pytest.mark.parametrize(
    "mangled, ns",
    [
        ("_ZN6google8protobuf7MessageD1Ev", "google"),
        ("_ZTVN6google8protobuf7MessageE", "google"),
        ("_ZNK4absl6Status8ToStringEv", "absl"),
        ("_ZNSt6locale7classicEv", "std"),
        ("_ZSt9terminatev", "std"),
        ("_ZN9__gnu_cxx18stdio_sync_filebufIcE4syncEv", "std"),
        ("_Znwm", "std"),
        ("_Z3foov", ""),
        ("_ZThn8_N3foo3barEv", None),
        ("plain_c", None),
    ],
)
def test_leading_namespace(mangled: str, ns: str | None) -> None:
    assert leading_namespace(mangled) == ns


def test_non_elf_and_truncated_raise_one_line_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.so"
    text.write_text("hello")
    with pytest.raises(ElfReadError, match=r"notes\.so: not an ELF file"):
        read_elf_facts(str(text))
    whole = cbuild.compile_shared("int x;", "libtrunc.so").read_bytes()
    for cut in (20, 200, len(whole) // 2):
        bad = tmp_path / f"trunc{cut}.so"
        bad.write_bytes(whole[:cut])
        try:
            read_elf_facts(str(bad))
        except ElfReadError as exc:
            assert str(bad) in str(exc) and "\n" not in str(exc)
    with pytest.raises(ElfReadError, match="cannot read"):
        read_elf_facts(str(tmp_path / "missing.so"))
