"""The fast ELF reader and the streamed wheel reader give exactly the facts of the pyelftools
reference reader: over every ELF object of a real venv, the objects the test suite
compiles, objects built to take each branch (DT_HASH only, DT_GNU_HASH only, stripped, hidden
static libstdc++, static TLS, version scripts) and wheel members inflated only partly."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from cbuild import CACHE, compile_shared
from elftools.elf.elffile import ELFFile
from test_scan_cli import SCI_VENV, _make_venv

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.static.discover import is_elf_candidate
from pytest_runtimeconflict.static.elffacts import read_elf_facts, read_elf_facts_plain
from pytest_runtimeconflict.static.elffast import facts_from_image
from pytest_runtimeconflict.static.objects import FactsReader
from pytest_runtimeconflict.static.wheelmember import (
    _OUT_CHUNK,
    WheelMemberImage,
    read_wheel_member_facts,
)

BUILD_CACHE = CACHE
TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")

C_LIB = """
__thread int tls_counter;
int openblas_get_config(void) { return 4; }
int exported_fn(int x) { return x + tls_counter; }
void *PyInit_fastmod(void) { return 0; }
"""
CXX_LIB = """
#include <sstream>
#include <string>
namespace fastlib { struct Thing { virtual ~Thing(); int v = 1; }; Thing::~Thing() {}
std::string show(long x) { std::ostringstream s; s << x; return s.str(); }
int counter = 3; }
extern "C" int answer(void) { return (int)fastlib::show(42).size(); }
"""
VERSION_SCRIPT = "FAST_1.0 { global: exported_fn; local: *; };\nFAST_2.0 { global: openblas_get_config; } FAST_1.0;\n"


def _elf_files(root: Path) -> list[Path]:
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if is_elf_candidate(name) and path.is_file() and not path.is_symlink():
                out.append(path)
    return sorted(out)


def _facts_or_error(reader, path: Path):  # type: ignore[no-untyped-def]
    try:
        return reader(str(path))
    except ElfReadError as exc:
        return f"ElfReadError: {exc}"


def assert_same_facts(paths: list[Path]) -> list:  # type: ignore[type-arg]
    """Compare fast and plain readers on ``paths``; return the fast facts."""
    out = []
    for path in paths:
        fast = _facts_or_error(read_elf_facts, path)
        plain = _facts_or_error(read_elf_facts_plain, path)
        assert fast == plain, path
        out.append(fast)
    return out


@pytest.fixture(scope="session")
def branch_objects(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Objects that take every branch of the fast reader."""
    out = tmp_path_factory.mktemp("branches")
    script = out / "vers.map"
    script.write_text(VERSION_SCRIPT)
    builds = [
        ("libsysv.so", C_LIB, "c", ("-Wl,--hash-style=sysv",)),
        ("libgnu.so", C_LIB, "c", ("-Wl,--hash-style=gnu",)),
        ("libboth.so", C_LIB, "c", ("-Wl,--hash-style=both", "-ftls-model=initial-exec")),
        ("libstripped.so", C_LIB, "c", ("-s",)),
        ("libvers.so", C_LIB, "c", (f"-Wl,--version-script={script}",)),
        ("librpath.so", C_LIB, "c", ("-Wl,-rpath,$ORIGIN/a:/x/b", "-Wl,--disable-new-dtags")),
        ("libcxx.so", CXX_LIB, "c++", ()),
        ("libcxxexported.so", CXX_LIB, "c++", ("-static-libstdc++",)),
        ("libcxxhidden.so", CXX_LIB, "c++", ("-static-libstdc++", "-Wl,--exclude-libs,ALL")),
        (
            "libcxxhiddenstripped.so",
            CXX_LIB,
            "c++",
            ("-static-libstdc++", "-Wl,--exclude-libs,ALL", "-s"),
        ),
    ]
    return [
        compile_shared(src, name, lang=lang, flags=flags, outdir=out)
        for name, src, lang, flags in builds
    ]


def test_branch_objects_match_the_reference(branch_objects: list[Path]) -> None:
    facts = {Path(f.path).name: f for f in assert_same_facts(branch_objects)}
    # each object really took the branch it was built for
    assert facts["libboth.so"].static_tls and facts["libboth.so"].tls_size > 0
    assert facts["libvers.so"].version_defs == ("FAST_1.0", "FAST_2.0")
    assert "openblas_get_config" in facts["libgnu.so"].defined_symbols
    assert facts["libsysv.so"].defined_symbols == facts["libgnu.so"].defined_symbols
    assert facts["librpath.so"].rpath == ("$ORIGIN/a", "/x/b") and not facts["librpath.so"].runpath
    assert any(c.startswith("_ZN7fastlib") for c in facts["libcxx.so"].cxx_exports)
    assert (
        facts["libcxxexported.so"].unique_symbols
        and not facts["libcxxexported.so"].static_libstdcxx_hidden
    )
    assert facts["libcxxhidden.so"].static_libstdcxx_hidden
    assert facts["libcxxhiddenstripped.so"].static_libstdcxx_hidden  # via .rodata only


def test_compiled_test_objects_match_the_reference() -> None:
    paths = [
        p for p in _elf_files(BUILD_CACHE) if "venv-sci" not in p.parts and "zoo" not in p.parts
    ]
    if not paths:
        pytest.skip("no compiled objects in .test-cache/ yet")
    assert_same_facts(paths)


def test_system_runtimes_match_the_reference() -> None:
    names = ("libstdc++.so.6", "libgomp.so.1", "libc.so.6", "libgfortran.so.5", "libm.so.6")
    paths = [Path("/usr/lib/x86_64-linux-gnu", n) for n in names]
    paths = [p.resolve() for p in paths if p.exists()]
    facts = assert_same_facts(paths)
    assert any(f.version_defs for f in facts)


@pytest.mark.slow
def test_every_object_of_a_real_venv_matches_the_reference() -> None:
    _make_venv(SCI_VENV, ("numpy", "scipy", "scikit-learn"))
    paths = _elf_files(SCI_VENV)
    assert len(paths) > 100
    facts = assert_same_facts(paths)
    assert any(not isinstance(f, str) and f.cxx_exports for f in facts)
    assert any(not isinstance(f, str) and f.version_defs for f in facts)


def test_fast_reader_errors_name_the_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.so"
    os.mkfifo(fifo)
    with pytest.raises(ElfReadError, match="pipe.so: not a regular file"):
        read_elf_facts(str(fifo))
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    with pytest.raises(ElfReadError, match="empty.so: not an ELF file"):
        read_elf_facts(str(empty))
    good = compile_shared(C_LIB, "libtrunc.so").read_bytes()
    (tmp_path / "trunc.so").write_bytes(good[:200])
    with pytest.raises(ElfReadError, match="trunc.so: corrupt or truncated"):
        read_elf_facts(str(tmp_path / "trunc.so"))


# --- wheel members --------------------------------------------------------------------------


def _wheel_of(tmp_path: Path, objects: list[Path]) -> tuple[Path, dict[str, Path]]:
    wheel = tmp_path / "pkg-1.0-cp311-cp311-linux_x86_64.whl"
    members = {f"pkg/{i}/{p.name}": p for i, p in enumerate(objects)}
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for member, path in members.items():
            zf.write(path, member)
    return wheel, members


def _sci_objects(count: int) -> list[Path]:
    _make_venv(SCI_VENV, ("numpy", "scipy", "scikit-learn"))
    return sorted(_elf_files(SCI_VENV), key=lambda p: -p.stat().st_size)[:count]


@pytest.mark.parametrize("keep_head", [64 << 20, 4096], ids=["head-kept", "reinflate"])
def test_streamed_members_match_the_file_on_disk(
    tmp_path: Path, branch_objects: list[Path], keep_head: int
) -> None:
    objects = [*branch_objects, *_sci_objects(4)]
    wheel, members = _wheel_of(tmp_path, objects)
    with zipfile.ZipFile(wheel) as zf:
        for member, path in members.items():
            shown = f"{wheel}!/{member}"
            info = zf.getinfo(member)
            streamed = read_wheel_member_facts(
                zf, str(wheel), info, shown, small_member=0, keep_head=keep_head
            )
            assert streamed == read_elf_facts(str(path), display_path=shown), member
            whole = read_wheel_member_facts(zf, str(wheel), info, shown)
            assert whole == streamed


def _dynamic_end(path: Path) -> int:
    with open(path, "rb") as fh:
        seg = next(s for s in ELFFile(fh).iter_segments() if s["p_type"] == "PT_DYNAMIC")
        return int(seg["p_offset"] + seg["p_filesz"])


def test_streaming_stops_at_the_dynamic_section(tmp_path: Path) -> None:
    """A member is inflated once, and only as far as its dynamic section (plus one chunk)."""
    big = max(_sci_objects(12), key=lambda p: p.stat().st_size - _dynamic_end(p))
    assert big.stat().st_size - _dynamic_end(big) > _OUT_CHUNK
    wheel, members = _wheel_of(tmp_path, [big])
    ((member, _path),) = members.items()
    with zipfile.ZipFile(wheel) as zf:
        image = WheelMemberImage(zf, str(wheel), zf.getinfo(member))
        try:
            facts = facts_from_image(image, member)
        finally:
            image.close()
    assert facts == read_elf_facts(str(big), display_path=member)
    assert image.passes == 1
    assert _dynamic_end(big) <= image._pos <= _dynamic_end(big) + _OUT_CHUNK < image.size


def test_damaged_streamed_member_is_an_elf_read_error(tmp_path: Path) -> None:
    (big,) = _sci_objects(1)
    wheel, members = _wheel_of(tmp_path, [big])
    ((member, _path),) = members.items()
    raw = bytearray(wheel.read_bytes())
    at = raw.find(member.encode()) + len(member) + 5000
    raw[at : at + 256] = bytes(b ^ 0x5A for b in raw[at : at + 256])
    wheel.write_bytes(bytes(raw))
    with zipfile.ZipFile(wheel) as zf, pytest.raises(ElfReadError, match=member):
        read_wheel_member_facts(zf, str(wheel), zf.getinfo(member), member, small_member=0)


@pytest.mark.slow
@pytest.mark.skipif(
    not TORCH_WHEEL.exists(), reason="the torch 2.13 CPU wheel is not on this machine"
)
def test_torch_wheel_members_match_the_reference_reader(tmp_path: Path) -> None:
    """The real case: libtorch_cpu.so (434 MB) streamed from the wheel."""
    reader = FactsReader()
    reader.cache.root = None  # read, do not use the user's cache
    try:
        with zipfile.ZipFile(TORCH_WHEEL) as zf:
            names = [n for n in zf.namelist() if is_elf_candidate(os.path.basename(n))]
            extracted = tmp_path / "x"
            for name in ("torch/lib/libgomp.so.1", "torch/lib/libtorch_cpu.so"):
                zf.extract(name, extracted)
        for name in ("torch/lib/libgomp.so.1", "torch/lib/libtorch_cpu.so"):
            shown = f"{TORCH_WHEEL}!/{name}"
            streamed = reader(shown)
            assert streamed == read_elf_facts(str(extracted / name), display_path=shown)
        assert all(reader(f"{TORCH_WHEEL}!/{n}") is not None for n in names)
    finally:
        reader.close()
