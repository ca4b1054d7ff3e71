"""ELF facts per file: what the loader model and the rules need.

:func:`read_elf_facts` is the one entry point; it raises :class:`ElfReadError` for anything
that is not a readable ELF object, and callers skip such files with a logged warning.

Two readers produce the same :class:`ElfFacts`:

- the fast path (:func:`read_elf_facts`, :func:`facts_from_image`) reads the ELF header, the
  program headers and ``PT_DYNAMIC``, then the tables the dynamic tags point at
  (``DT_SYMTAB``/``DT_STRTAB``/``DT_HASH``/``DT_GNU_HASH``/``DT_VERDEF``/``DT_VERNEED``),
  unpacking the dynamic symbol table in bulk and decoding only the names a fact needs. It works
  on any :class:`Image` (an mmap of a file, or a wheel member decompressed only as far as
  needed). Section headers are read only for the hidden static libstdc++ check (.rodata,
  .symtab), which few objects need;
- the reference path (:func:`read_elf_facts_plain`) walks sections and symbols with pyelftools.
  It is kept so tests can compare both over every object of a real environment (issue 7).
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Protocol

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.families import identity_symbol_names
from pytest_runtimeconflict.model import ElfFacts

if TYPE_CHECKING:  # pyelftools is imported only by the reference path (~70 ms of imports)
    from elftools.elf.elffile import ELFFile

log = logging.getLogger(__name__)

# Bump when the extraction changes what a fact holds: cached facts (factcache) are keyed on it.
FACTS_VERSION = 2

DF_STATIC_TLS = 0x10
VER_FLG_BASE = 0x1

# Core symbols only libstdc++ itself defines (checked with ``nm -D --defined-only`` on GCC 12's
# libstdc++.so.6). An object that is not libstdc++ but defines them carries an exported copy.
LIBSTDCXX_MARKERS = frozenset(
    {
        "__gxx_personality_v0",
        "_ZNSt6locale7classicEv",
        "_ZNSt6locale5_ImplC1Em",
        "_ZNSt6locale5facetD1Ev",
        "_ZNSt6locale5facet15_S_get_c_localeEv",
        "_ZNSt8ios_base4InitC1Ev",
        "_ZSt9terminatev",
        "_ZSt4cout",
        "_ZNKSt10filesystem7__cxx1128recursive_directory_iterator17recursion_pendingEv",
        "_ZNKSt10filesystem28recursive_directory_iterator5depthEv",
    }
)

# Typeinfo-name strings that only a copy of libstdc++'s own code carries (the key functions of
# these classes live in libstdc++); found in .rodata of a hidden static copy.
_LIBSTDCXX_RODATA_STRINGS = (b"NSt6locale5facetE\0", b"NSt6locale5_ImplE\0")
_LIBSTDCXX_LOCAL_SYMBOL_PREFIXES = ("_ZNSt6locale5facet", "_ZNSt6locale5_Impl")

# Namespaces (besides std) whose symbols belong to the C++ runtime, not to an application library.
_RUNTIME_NAMESPACES = frozenset(
    {"__gnu_cxx", "__cxxabiv1", "__gnu_norm", "__gnu_debug", "__gnu_parallel"}
)


class DynSym(NamedTuple):
    """One dynamic symbol: name, binding (STB_*), type (STT_*), defined (not SHN_UNDEF)."""

    name: str
    bind: str
    type: str
    defined: bool


def _dynamic_symbols(elf: ELFFile) -> Iterator[DynSym]:
    """Every symbol of .dynsym (the reference path's hot loop)."""
    from elftools.elf.sections import SymbolTableSection

    for section in elf.iter_sections():
        if section["sh_type"] != "SHT_DYNSYM" or not isinstance(section, SymbolTableSection):
            continue
        for sym in section.iter_symbols():
            if not sym.name:
                continue
            info = sym["st_info"]
            yield DynSym(sym.name, info["bind"], info["type"], sym["st_shndx"] != "SHN_UNDEF")


def leading_namespace(mangled: str) -> str | None:
    """The first namespace/class component of an Itanium-mangled name (``google`` for
    ``_ZN6google8protobuf...``), ``std`` for the C++ runtime's, ``""`` for a global-scope
    function, None when it is not a plain function/object name (vtables, thunks, ...)."""
    if not mangled.startswith("_Z"):
        return None
    rest = mangled[2:]
    if rest.startswith(("T", "GV", "GR", "GTt")):
        rest = rest[2:] if rest[:2] in ("TV", "TI", "TS", "TT", "GV", "GR") else ""
        if not rest:
            return None
    if rest.startswith(("St", "NSt", "NKSt", "NVSt", "NKVSt")):
        return "std"
    if not rest.startswith("N"):
        # global scope: operators (``_Znwm``, ``_ZdlPv``) are the C++ runtime's own
        return "std" if rest[:1].islower() else ""
    rest = rest[1:].lstrip("KVrRO")
    if rest.startswith("S"):
        return "std"  # a substitution such as Sa/Ss/St: std:: entities
    digits = ""
    for ch in rest:
        if not ch.isdigit():
            break
        digits += ch
    if not digits:
        return ""
    name = rest[len(digits) : len(digits) + int(digits)]
    return "std" if name in _RUNTIME_NAMESPACES else name


def _is_cxx_export(sym: DynSym) -> bool:
    if not (sym.defined and sym.bind == "STB_GLOBAL" and sym.type in ("STT_FUNC", "STT_OBJECT")):
        return False
    ns = leading_namespace(sym.name)
    return ns is not None and ns != "std"


def _dynamic_info(elf: ELFFile) -> dict[str, Any]:
    from elftools.elf.dynamic import DynamicSection

    info: dict[str, Any] = {"soname": None, "needed": [], "rpath": [], "runpath": [], "flags": 0}
    for section in elf.iter_sections():
        if not isinstance(section, DynamicSection):
            continue
        tags: Iterator[Any] = section.iter_tags()
        for tag in tags:
            kind = tag.entry.d_tag
            if kind == "DT_NEEDED":
                info["needed"].append(tag.needed)
            elif kind == "DT_SONAME":
                info["soname"] = tag.soname
            elif kind == "DT_RPATH":
                info["rpath"].extend(p for p in tag.rpath.split(":") if p)
            elif kind == "DT_RUNPATH":
                info["runpath"].extend(p for p in tag.runpath.split(":") if p)
            elif kind == "DT_FLAGS":
                info["flags"] |= tag.entry.d_val
    return info


def _versions(elf: ELFFile) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

    defs: list[str] = []
    needs: dict[str, set[str]] = {}
    for section in elf.iter_sections():
        if isinstance(section, GNUVerDefSection):
            for verdef, auxiter in section.iter_versions():
                if verdef["vd_flags"] & VER_FLG_BASE:
                    continue
                for aux in auxiter:
                    defs.append(aux.name)
                    break
        elif isinstance(section, GNUVerNeedSection):
            for verneed, auxiter in section.iter_versions():
                needs.setdefault(verneed.name or "", set()).update(aux.name for aux in auxiter)
    need_items = tuple((name, tuple(sorted(vers))) for name, vers in sorted(needs.items()))
    return tuple(sorted(set(defs))), need_items


def _tls_size(elf: ELFFile) -> int:
    return sum(seg["p_memsz"] for seg in elf.iter_segments() if seg["p_type"] == "PT_TLS")


def _has_hidden_libstdcxx(elf: ELFFile, stream: BinaryIO) -> bool:
    """libstdc++ code is present although nothing of it is exported (``-static-libstdc++
    -Wl,--exclude-libs,ALL``): its typeinfo names in .rodata or its local .symtab symbols."""
    from elftools.elf.sections import SymbolTableSection

    for section in elf.iter_sections():
        if section.name == ".rodata" and section["sh_type"] == "SHT_PROGBITS":
            if _file_contains(stream, section["sh_offset"], section["sh_size"]):
                return True
        elif section["sh_type"] == "SHT_SYMTAB" and isinstance(section, SymbolTableSection):
            for sym in section.iter_symbols():
                if sym.name.startswith(_LIBSTDCXX_LOCAL_SYMBOL_PREFIXES):
                    return True
    return False


def _file_contains(stream: BinaryIO, offset: int, size: int) -> bool:
    if size <= 0:
        return False
    with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        end = min(offset + size, len(mm))
        return any(mm.find(needle, offset, end) >= 0 for needle in _LIBSTDCXX_RODATA_STRINGS)


def _symbol_facts(elf: ELFFile) -> tuple[list[str], list[str], list[str]]:
    keep = identity_symbol_names() | LIBSTDCXX_MARKERS
    defined: set[str] = set()
    unique: set[str] = set()
    cxx: set[str] = set()
    for sym in _dynamic_symbols(elf):
        if not sym.defined:
            continue
        if sym.name in keep or sym.name.startswith("PyInit_"):
            defined.add(sym.name)
        if sym.bind == "STB_LOOS":  # STB_GNU_UNIQUE (10)
            unique.add(sym.name)
        elif _is_cxx_export(sym):
            cxx.add(sym.name)
    return sorted(defined), sorted(unique), sorted(cxx)


def _needs_libstdcxx(soname: str | None, needed: list[str]) -> bool:
    names = [*needed, soname or ""]
    return any(n.startswith("libstdc++.so") for n in names)


def _facts_from_elf(path: str, elf: ELFFile, stream: BinaryIO) -> ElfFacts:
    dyn = _dynamic_info(elf)
    version_defs, version_needs = _versions(elf)
    defined, unique, cxx = _symbol_facts(elf)
    exports_std = any(s in LIBSTDCXX_MARKERS for s in defined) or any(
        leading_namespace(u) == "std" for u in unique
    )
    hidden = False
    if not exports_std and not _needs_libstdcxx(dyn["soname"], dyn["needed"]):
        hidden = _has_hidden_libstdcxx(elf, stream)
    return ElfFacts(
        path=path,
        size=os.fstat(stream.fileno()).st_size,
        soname=dyn["soname"],
        needed=tuple(dyn["needed"]),
        rpath=tuple(dyn["rpath"]),
        runpath=tuple(dyn["runpath"]),
        machine=str(elf["e_machine"]),
        elfclass=int(elf.elfclass),
        elf_type=str(elf["e_type"]),
        static_tls=bool(dyn["flags"] & DF_STATIC_TLS),
        tls_size=_tls_size(elf),
        version_defs=version_defs,
        version_needs=version_needs,
        defined_symbols=tuple(defined),
        unique_symbols=tuple(unique),
        cxx_exports=tuple(cxx),
        static_libstdcxx_hidden=hidden,
    )


def read_elf_facts_plain(path: str, *, display_path: str | None = None) -> ElfFacts:
    """The reference reader: every table walked with pyelftools (slow on big objects).

    Same contract as :func:`read_elf_facts`; kept for the equality tests of the fast path.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    shown = display_path or path
    try:
        with open(path, "rb") as stream:
            if stream.read(4) != b"\x7fELF":
                raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
            stream.seek(0)
            return _facts_from_elf(shown, ELFFile(stream), stream)
    except ElfReadError:
        raise
    except (ELFError, struct.error, ValueError, KeyError, IndexError, AssertionError) as exc:
        raise ElfReadError(f"{shown}: corrupt or truncated ELF file ({exc}); skipped") from exc
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc


# --- fast path ------------------------------------------------------------------------------

PT_LOAD, PT_DYNAMIC, PT_TLS = 1, 2, 7
SHT_PROGBITS, SHT_SYMTAB = 1, 2
STB_GLOBAL, STB_GNU_UNIQUE = 1, 10
STT_OBJECT, STT_FUNC = 1, 2
DT_NULL, DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 1, 4, 5, 6, 10, 11
DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS = 14, 15, 29, 30
DT_GNU_HASH = 0x6FFFFEF5
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
# Real objects have a handful of version entries; a fuzzed count must not spin for minutes.
_MAX_VERSION_ENTRIES = 1 << 16
_RODATA_PREFIXES = tuple(p.encode() for p in _LIBSTDCXX_LOCAL_SYMBOL_PREFIXES)


class Image(Protocol):
    """Random access to the bytes of one ELF file (an mmap, or a wheel member that is
    decompressed only as far as the reads reach)."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``; ValueError when the range is past the end."""
        ...

    def whole(self) -> FileImage:
        """An image of the complete file that can search it (for section-level facts)."""
        ...


class FileImage:
    """An :class:`Image` over a whole file: an mmap, or the bytes of a small wheel member."""

    def __init__(self, mm: mmap.mmap | bytes) -> None:
        self._mm = mm
        self.size = len(mm)

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.size)
        return self._mm[offset : offset + length]

    def find(self, needle: bytes, start: int, end: int) -> int:
        return self._mm.find(needle, start, end)

    def whole(self) -> FileImage:
        return self


def _check_range(offset: int, length: int, size: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"range {offset:#x}+{length:#x} is past the end ({size:#x})")


class _Header(NamedTuple):
    end: str  # struct byte order: "<" or ">"
    is64: bool
    e_type: int
    e_machine: int
    phoff: int
    shoff: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int


class _Segment(NamedTuple):
    p_type: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class _Dynamic(NamedTuple):
    """The dynamic tags (in file order) and the dynamic string table they index."""

    tags: list[tuple[int, int]]
    strtab: bytes

    def string(self, offset: int) -> str:
        return _cstring(self.strtab, offset).decode("utf-8", errors="replace")

    def first(self, tag: int) -> int | None:
        return next((v for t, v in self.tags if t == tag), None)


def _cstring(table: bytes, offset: int) -> bytes:
    end = table.find(b"\0", offset)
    return table[offset:] if end < 0 else table[offset:end]


def _enum_names(mapping: Mapping[str, Any]) -> dict[int, str]:
    # construct's SymmetricMapping reverses the dict the same way (the last alias wins), so
    # the names equal what pyelftools reports.
    return {v: k for k, v in mapping.items() if k != "_default_"}


@functools.cache
def _enums() -> tuple[dict[int, str], dict[int, str]]:
    """e_machine and e_type names as pyelftools spells them (imported on first use)."""
    from elftools.elf.enums import ENUM_E_MACHINE, ENUM_E_TYPE

    return _enum_names(ENUM_E_MACHINE), _enum_names(ENUM_E_TYPE)


def _header(image: Image) -> _Header:
    ident = image.read(0, 16)
    if ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise ValueError(f"bad EI_CLASS {ident[4]} / EI_DATA {ident[5]}")
    end = "<" if ident[5] == 1 else ">"
    is64 = ident[4] == 2
    fmt = end + ("HHIQQQIHHHHHH" if is64 else "HHIIIIIHHHHHH")
    fields = struct.unpack(fmt, image.read(16, struct.calcsize(fmt)))
    e_type, e_machine, _ver, _entry, phoff, shoff, _flags, _ehsize = fields[:8]
    phentsize, phnum, shentsize, shnum, shstrndx = fields[8:]
    return _Header(
        end, is64, e_type, e_machine, phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx
    )


def _segments(image: Image, hdr: _Header) -> list[_Segment]:
    if not hdr.phoff or not hdr.phnum:
        return []
    fmt = hdr.end + ("IIQQQQQQ" if hdr.is64 else "IIIIIIII")
    size = struct.calcsize(fmt)
    if hdr.phentsize < size:
        raise ValueError(f"e_phentsize {hdr.phentsize} < {size}")
    table = image.read(hdr.phoff, hdr.phentsize * hdr.phnum)
    out = []
    for n in range(hdr.phnum):
        f = struct.unpack_from(fmt, table, n * hdr.phentsize)
        if hdr.is64:  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz
            out.append(_Segment(f[0], f[2], f[3], f[5], f[6]))
        else:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags
            out.append(_Segment(f[0], f[1], f[2], f[4], f[5]))
    return out


def _offset_of(segments: list[_Segment], address: int) -> int:
    """File offset of a virtual address (through the PT_LOAD segment holding it)."""
    for seg in segments:
        if seg.p_type == PT_LOAD and seg.vaddr <= address < seg.vaddr + seg.filesz:
            return address - seg.vaddr + seg.offset
    raise ValueError(f"address {address:#x} is in no PT_LOAD segment")


def _dynamic(image: Image, hdr: _Header, segments: list[_Segment]) -> _Dynamic:
    dyn = next((s for s in segments if s.p_type == PT_DYNAMIC), None)
    if dyn is None:
        return _Dynamic([], b"")
    fmt = hdr.end + ("qQ" if hdr.is64 else "iI")
    data = image.read(dyn.offset, dyn.filesz - dyn.filesz % struct.calcsize(fmt))
    tags = []
    for tag, value in struct.iter_unpack(fmt, data):
        tags.append((tag, value))
        if tag == DT_NULL:
            break
    partial = _Dynamic(tags, b"")
    strtab_addr, strsz = partial.first(DT_STRTAB), partial.first(DT_STRSZ)
    if strtab_addr is None or not strsz:
        return partial
    offset = _offset_of(segments, strtab_addr)
    return _Dynamic(tags, image.read(offset, min(strsz, image.size - offset)))


def _dynamic_info_fast(dyn: _Dynamic) -> dict[str, Any]:
    info: dict[str, Any] = {"soname": None, "needed": [], "rpath": [], "runpath": [], "flags": 0}
    for tag, value in dyn.tags:
        if tag == DT_NEEDED:
            info["needed"].append(dyn.string(value))
        elif tag == DT_SONAME:
            info["soname"] = dyn.string(value)
        elif tag == DT_RPATH:
            info["rpath"].extend(p for p in dyn.string(value).split(":") if p)
        elif tag == DT_RUNPATH:
            info["runpath"].extend(p for p in dyn.string(value).split(":") if p)
        elif tag == DT_FLAGS:
            info["flags"] |= value
    return info


def _u32s(image: Image, hdr: _Header, offset: int, count: int) -> tuple[int, ...]:
    return struct.unpack(f"{hdr.end}{count}I", image.read(offset, 4 * count))


def _gnu_hash_count(image: Image, hdr: _Header, offset: int) -> int:
    """Number of .dynsym entries from DT_GNU_HASH: one past the last symbol of the chain
    that the highest bucket starts (symbols below ``symoffset`` are not hashed)."""
    nbuckets, symoffset, bloom_size, _shift = _u32s(image, hdr, offset, 4)
    buckets_at = offset + 16 + bloom_size * (8 if hdr.is64 else 4)
    if nbuckets * 4 > image.size:
        raise ValueError(f"DT_GNU_HASH nbuckets {nbuckets} larger than the file")
    last = max(_u32s(image, hdr, buckets_at, nbuckets), default=0)
    if last < symoffset:
        return symoffset
    chain_at = buckets_at + 4 * nbuckets + 4 * (last - symoffset)
    index = last
    while True:  # each step reads further into the file, so a corrupt chain ends at EOF
        block = _u32s(image, hdr, chain_at, min(1024, (image.size - chain_at) // 4) or 1)
        for value in block:
            if value & 1:
                return index + 1
            index += 1
        chain_at += 4 * len(block)


def _symbol_count(image: Image, hdr: _Header, segments: list[_Segment], dyn: _Dynamic) -> int:
    hash_addr = dyn.first(DT_HASH)
    if hash_addr is not None:  # nchain == number of symbol table entries
        return _u32s(image, hdr, _offset_of(segments, hash_addr) + 4, 1)[0]
    gnu_addr = dyn.first(DT_GNU_HASH)
    if gnu_addr is not None:
        return _gnu_hash_count(image, hdr, _offset_of(segments, gnu_addr))
    return -1  # unknown: the caller takes the size from the .dynsym section header


def _dynsym_bytes(image: Image, hdr: _Header, segments: list[_Segment], dyn: _Dynamic) -> bytes:
    """The raw .dynsym table (entries of ``_symbol_entry_size``)."""
    symtab_addr = dyn.first(DT_SYMTAB)
    if symtab_addr is None:
        return b""
    entsize = _symbol_entry_size(hdr)
    count = _symbol_count(image, hdr, segments, dyn)
    if count < 0:
        sections = _sections(image.whole(), hdr)
        dynsym = next((s for s in sections if s.sh_type == 11), None)  # SHT_DYNSYM
        return b"" if dynsym is None else image.read(dynsym.offset, dynsym.size)
    offset = _offset_of(segments, symtab_addr)
    if count * entsize > image.size - offset:
        raise ValueError(f"{count} dynamic symbols do not fit in the file")
    return image.read(offset, count * entsize)


def _symbol_entry_size(hdr: _Header) -> int:
    return 24 if hdr.is64 else 16


def _symbol_facts_fast(hdr: _Header, table: bytes, strtab: bytes) -> tuple[list[str], ...]:
    """defined (kept names), unique and C++ export names of the .dynsym entries in ``table``.

    Entries are unpacked in bulk; a name is sliced out of the string table only for a defined
    symbol, and decoded only when it is kept (the same decision as :func:`_symbol_facts`)."""
    keep = _keep_bytes()
    fmt = hdr.end + ("IBBH16x" if hdr.is64 else "I8xBBH")
    table = table[: len(table) - len(table) % _symbol_entry_size(hdr)]
    find = strtab.find
    defined: set[bytes] = set()
    unique: set[bytes] = set()
    cxx: list[bytes] = []
    for name_at, info, _other, shndx in struct.iter_unpack(fmt, table):
        if not shndx:  # SHN_UNDEF
            continue
        end = find(b"\0", name_at)
        raw = strtab[name_at:end] if end >= 0 else strtab[name_at:]
        if not raw:
            continue
        if raw in keep or raw.startswith(b"PyInit_"):
            defined.add(raw)
        bind = info >> 4
        if bind == STB_GNU_UNIQUE:
            unique.add(raw)
        elif bind == STB_GLOBAL and info & 0xF in (STT_FUNC, STT_OBJECT) and raw[:2] == b"_Z":
            cxx.append(raw)
    names = {r.decode("utf-8", errors="replace") for r in cxx}
    exports = [n for n in names if leading_namespace(n) not in (None, "std")]
    return sorted(_decoded(defined)), sorted(_decoded(unique)), sorted(exports)


def _decoded(raw: set[bytes]) -> set[str]:
    return {r.decode("utf-8", errors="replace") for r in raw}


@functools.cache
def _keep_bytes() -> frozenset[bytes]:
    return frozenset(n.encode() for n in identity_symbol_names() | LIBSTDCXX_MARKERS)


def _versions_fast(
    image: Image, hdr: _Header, segments: list[_Segment], dyn: _Dynamic
) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    defs: set[str] = set()
    needs: dict[str, set[str]] = {}
    verdef = dyn.first(DT_VERDEF)
    if verdef is not None:
        count = min(dyn.first(DT_VERDEFNUM) or 0, _MAX_VERSION_ENTRIES)
        defs = _verdef_names(image, hdr, _offset_of(segments, verdef), count, dyn)
    verneed = dyn.first(DT_VERNEED)
    if verneed is not None:
        count = min(dyn.first(DT_VERNEEDNUM) or 0, _MAX_VERSION_ENTRIES)
        needs = _verneed_names(image, hdr, _offset_of(segments, verneed), count, dyn)
    need_items = tuple((name, tuple(sorted(vers))) for name, vers in sorted(needs.items()))
    return tuple(sorted(defs)), need_items


def _verdef_names(image: Image, hdr: _Header, at: int, count: int, dyn: _Dynamic) -> set[str]:
    """First auxiliary name of each non-base version definition (Elf_Verdef/Elf_Verdaux)."""
    names: set[str] = set()
    for _ in range(count):
        _v, flags, _ndx, cnt, _hash, aux, nxt = struct.unpack(
            hdr.end + "HHHHIII", image.read(at, 20)
        )
        if cnt <= 0:
            raise ValueError(f"version definition at {at:#x} has no auxiliary entry")
        if not flags & VER_FLG_BASE:
            (name_at,) = struct.unpack(hdr.end + "I", image.read(at + aux, 4))
            names.add(dyn.string(name_at))
        if not nxt:  # pyelftools would re-read this same entry: same names
            break
        at += nxt
    return names


def _verneed_names(
    image: Image, hdr: _Header, at: int, count: int, dyn: _Dynamic
) -> dict[str, set[str]]:
    """Needed versions per file (Elf_Verneed/Elf_Vernaux)."""
    needs: dict[str, set[str]] = {}
    for _ in range(count):
        _v, cnt, file_at, aux, nxt = struct.unpack(hdr.end + "HHIII", image.read(at, 16))
        if cnt <= 0:
            raise ValueError(f"version need at {at:#x} has no auxiliary entry")
        vers = needs.setdefault(dyn.string(file_at), set())
        aux_at = at + aux
        for _ in range(min(cnt, _MAX_VERSION_ENTRIES)):
            _h, _f, _o, name_at, aux_next = struct.unpack(hdr.end + "IHHII", image.read(aux_at, 16))
            vers.add(dyn.string(name_at))
            if not aux_next:
                break
            aux_at += aux_next
        if not nxt:
            break
        at += nxt
    return needs


class _Section(NamedTuple):
    name_at: int
    sh_type: int
    offset: int
    size: int
    link: int
    entsize: int


def _sections(image: FileImage, hdr: _Header) -> list[_Section]:
    if not hdr.shoff or not hdr.shnum:
        return []
    fmt = hdr.end + ("IIQQQQIIQQ" if hdr.is64 else "IIIIIIIIII")
    if hdr.shentsize < struct.calcsize(fmt):
        raise ValueError(f"e_shentsize {hdr.shentsize} too small")
    table = image.read(hdr.shoff, hdr.shentsize * hdr.shnum)
    out = []
    for n in range(hdr.shnum):
        f = struct.unpack_from(fmt, table, n * hdr.shentsize)
        out.append(_Section(f[0], f[1], f[4], f[5], f[6], f[9]))
    return out


def _hidden_libstdcxx_fast(image: FileImage, hdr: _Header) -> bool:
    """Same decision as :func:`_has_hidden_libstdcxx`, by searching bytes instead of walking
    every .symtab symbol: a local symbol can only start with a prefix where the prefix occurs
    in .strtab, so .symtab entries are read only when it does."""
    sections = _sections(image, hdr)
    if not sections:
        return False
    names = sections[hdr.shstrndx]
    for sec in sections:
        name = _section_name(image, names, sec.name_at)
        if name == b".rodata" and sec.sh_type == SHT_PROGBITS:
            if _range_contains(image, sec.offset, sec.size, _LIBSTDCXX_RODATA_STRINGS):
                return True
        elif sec.sh_type == SHT_SYMTAB and _symtab_has_prefix(image, hdr, sec, sections):
            return True
    return False


def _section_name(image: FileImage, names: _Section, name_at: int) -> bytes:
    start = names.offset + name_at
    end = image.find(b"\0", start, image.size)
    return image.read(start, (end if end >= 0 else image.size) - start)


def _range_contains(image: FileImage, offset: int, size: int, needles: tuple[bytes, ...]) -> bool:
    if size <= 0:
        return False
    end = min(offset + size, image.size)
    return any(image.find(needle, offset, end) >= 0 for needle in needles)


def _symtab_has_prefix(
    image: FileImage, hdr: _Header, symtab: _Section, sections: list[_Section]
) -> bool:
    strtab = sections[symtab.link]
    hits: set[int] = set()
    for prefix in _RODATA_PREFIXES:
        at = image.find(prefix, strtab.offset, image.size)
        while at >= 0:
            hits.add(at - strtab.offset)
            at = image.find(prefix, at + 1, image.size)
    if not hits or symtab.entsize < 4:
        return False
    count = symtab.size // symtab.entsize
    data = image.read(symtab.offset, count * symtab.entsize)
    fmt = f"{hdr.end}I{symtab.entsize - 4}x"
    return any(name_at in hits for (name_at,) in struct.iter_unpack(fmt, data))


def facts_from_image(image: Image, shown: str) -> ElfFacts:
    """The facts of the ELF object in ``image`` (fast path), recorded under ``shown``.

    Raises ValueError / struct.error on corrupt input (the callers turn them into
    :class:`ElfReadError`)."""
    hdr = _header(image)
    segments = _segments(image, hdr)
    dyn = _dynamic(image, hdr, segments)
    info = _dynamic_info_fast(dyn)
    version_defs, version_needs = _versions_fast(image, hdr, segments, dyn)
    table = _dynsym_bytes(image, hdr, segments, dyn)
    defined, unique, cxx = _symbol_facts_fast(hdr, table, dyn.strtab)
    exports_std = any(s in LIBSTDCXX_MARKERS for s in defined) or any(
        leading_namespace(u) == "std" for u in unique
    )
    hidden = False
    if not exports_std and not _needs_libstdcxx(info["soname"], info["needed"]):
        hidden = _hidden_libstdcxx_fast(image.whole(), hdr)
    return ElfFacts(
        path=shown,
        size=image.size,
        soname=info["soname"],
        needed=tuple(info["needed"]),
        rpath=tuple(info["rpath"]),
        runpath=tuple(info["runpath"]),
        machine=_enums()[0].get(hdr.e_machine, str(hdr.e_machine)),
        elfclass=64 if hdr.is64 else 32,
        elf_type=_enums()[1].get(hdr.e_type, str(hdr.e_type)),
        static_tls=bool(info["flags"] & DF_STATIC_TLS),
        tls_size=sum(s.memsz for s in segments if s.p_type == PT_TLS),
        version_defs=version_defs,
        version_needs=version_needs,
        defined_symbols=tuple(defined),
        unique_symbols=tuple(unique),
        cxx_exports=tuple(cxx),
        static_libstdcxx_hidden=hidden,
    )


def read_elf_facts(path: str, *, display_path: str | None = None) -> ElfFacts:
    """Read the facts of the ELF file at ``path`` (fast path: mmap, bulk tables).

    ``display_path`` (default ``path``) is the name recorded in the facts, e.g.
    ``/abs/x.whl!/pkg/mod.so`` for a wheel member extracted to a temporary file.
    Raises :class:`ElfReadError` naming the file when it is not a readable ELF object.
    """
    shown = display_path or path
    try:
        # O_NONBLOCK: opening a FIFO named like a library must not block (issue 8)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ElfReadError(f"{shown}: not a regular file; skipped")
        if os.pread(fd, 4, 0) != b"\x7fELF":
            raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mm:
            return facts_from_image(FileImage(mm), shown)
    except ElfReadError:
        raise
    except (struct.error, ValueError, IndexError, OverflowError) as exc:
        raise ElfReadError(f"{shown}: corrupt or truncated ELF file ({exc}); skipped") from exc
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc
    finally:
        os.close(fd)


# --- wheel members ----------------------------------------------------------------------------

# Members up to this size are read whole (zipfile checks their CRC); bigger ones are streamed.
SMALL_MEMBER = 4 << 20
# Bytes from the start of a streamed member kept in memory: .dynsym/.dynstr/.gnu.hash/.gnu.version*
# sit there (7.7 MB for libtorch_cpu.so); a table past it costs a second decompression pass.
KEEP_HEAD = 64 << 20
_RAW_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 20


class WheelMemberImage:
    """An :class:`Image` over one deflated member of a wheel, decompressed only as far as the
    reads reach (the dynamic tags sit in ``.dynamic``, 80 % into libtorch_cpu.so; the tables
    they point at in the first megabytes). The CRC is not checked on this path since the
    member is not read to its end; :meth:`whole` (section-level facts) reads it through
    :mod:`zipfile`, which checks it."""

    def __init__(
        self,
        zf: zipfile.ZipFile,
        wheel_path: str,
        info: zipfile.ZipInfo,
        keep_head: int = KEEP_HEAD,
    ) -> None:
        self.size = info.file_size
        self.keep_head = keep_head
        self.passes = 0  # how often inflation started from the beginning
        self._zf, self._info = zf, info
        self._raw = open(wheel_path, "rb")  # noqa: SIM115  (closed in close())
        self._whole: FileImage | None = None
        self._spool: Any = None
        self._spool_map: mmap.mmap | None = None
        self._restart()

    def close(self) -> None:
        self._raw.close()
        self._whole = None
        if self._spool_map is not None:
            self._spool_map.close()
        if self._spool is not None:
            self._spool.close()

    def _restart(self) -> None:
        self._raw.seek(self._info.header_offset)
        local = self._raw.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"no local header at {self._info.header_offset:#x}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        self._raw.seek(self._info.header_offset + 30 + name_len + extra_len)
        self.passes += 1
        self._left = self._info.compress_size
        self._inflate = zlib.decompressobj(-15)
        self._pos = 0  # bytes produced so far
        self._head = bytearray()  # [0, KEEP_HEAD)
        self._tail_at, self._tail = 0, b""  # the last chunk produced

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.size)
        end = offset + length
        if self._whole is not None:
            return self._whole.read(offset, length)
        if end <= len(self._head):
            return bytes(self._head[offset:end])
        if self._tail_at <= offset and end <= self._tail_at + len(self._tail):
            return self._tail[offset - self._tail_at : end - self._tail_at]
        if offset < self._pos:  # already passed and not kept: inflate again from the start
            self._restart()
        pieces = []
        while self._pos < end:
            at, chunk = self._pos, self._inflate_some()
            self._pos += len(chunk)
            if at < self.keep_head:
                self._head += chunk[: self.keep_head - at]
            lo, hi = max(offset, at), min(end, self._pos)
            if lo < hi:
                pieces.append(chunk[lo - at : hi - at])
            self._tail_at, self._tail = at, chunk
        return b"".join(pieces)

    def _inflate_some(self) -> bytes:
        try:
            while True:
                data = self._inflate.unconsumed_tail
                if not data and self._left > 0:
                    data = self._raw.read(min(_RAW_CHUNK, self._left))
                    self._left -= len(data)
                if not data:
                    out = self._inflate.flush()
                    if not out:
                        raise ValueError("the compressed member ends early")
                    return out
                out = self._inflate.decompress(data, _OUT_CHUNK)
                if out:
                    return out
        except zlib.error as exc:
            raise ValueError(f"bad compressed data ({exc})") from exc

    def whole(self) -> FileImage:
        if self._whole is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
            try:
                with self._zf.open(self._info) as src:
                    shutil.copyfileobj(src, self._spool, _RAW_CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ValueError(f"bad member ({exc})") from exc
            self._spool.flush()
            self._spool_map = mmap.mmap(self._spool.fileno(), 0, access=mmap.ACCESS_READ)
            self._whole = FileImage(self._spool_map)
        return self._whole


def read_wheel_member_facts(
    zf: zipfile.ZipFile,
    wheel_path: str,
    info: zipfile.ZipInfo,
    display_path: str,
    *,
    small_member: int = SMALL_MEMBER,
    keep_head: int = KEEP_HEAD,
) -> ElfFacts:
    """Facts of the wheel member ``info`` without extracting it: members up to
    ``small_member`` bytes, stored or encrypted ones are read whole, bigger deflated ones
    through :class:`WheelMemberImage`. Raises :class:`ElfReadError` naming ``display_path``."""
    shown = display_path
    streamed = (
        info.file_size > small_member
        and info.compress_type == zipfile.ZIP_DEFLATED
        and not info.flag_bits & 0x1  # encrypted
    )
    image: WheelMemberImage | None = None
    try:
        if streamed:
            image = WheelMemberImage(zf, wheel_path, info, keep_head)
            if image.read(0, min(4, image.size)) != b"\x7fELF":
                raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
            return facts_from_image(image, shown)
        data = zf.read(info)
        if data[:4] != b"\x7fELF":
            raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
        return facts_from_image(FileImage(data), shown)
    except ElfReadError:
        raise
    except (struct.error, ValueError, IndexError, OverflowError, zlib.error, EOFError) as exc:
        raise ElfReadError(f"{shown}: corrupt or truncated ELF file ({exc}); skipped") from exc
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise ElfReadError(f"{shown}: cannot read the wheel member ({exc}); skipped") from exc
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc
    finally:
        if image is not None:
            image.close()
