"""The fast ELF reader: ELF header, program headers and ``PT_DYNAMIC``, then the tables the
dynamic tags point at (``DT_SYMTAB``/``DT_STRTAB``/``DT_HASH``/``DT_GNU_HASH``/``DT_VERDEF``/
``DT_VERNEED``), the dynamic symbol table unpacked in bulk and only the names a fact needs
decoded. Section headers are read only for the hidden static libstdc++ check (.rodata,
.symtab), which few objects need."""

from __future__ import annotations

import functools
import mmap
import os
import struct
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from pytest_runtimeconflict.families import identity_symbol_names
from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.symbols import (
    _LIBSTDCXX_LOCAL_SYMBOL_PREFIXES,
    _LIBSTDCXX_RODATA_STRINGS,
    LIBSTDCXX_MARKERS,
    exports_libstdcxx,
    is_c_export,
    leading_namespace,
    needs_libstdcxx,
)

# Bump when the extraction changes what a fact holds: cached facts (factcache) are keyed on it.
FACTS_VERSION = 5

DF_STATIC_TLS = 0x10
VER_FLG_BASE = 0x1

PT_LOAD, PT_DYNAMIC, PT_TLS = 1, 2, 7
SHT_PROGBITS, SHT_SYMTAB = 1, 2
STB_GLOBAL, STB_GNU_UNIQUE = 1, 10
STT_OBJECT, STT_FUNC, STT_GNU_IFUNC = 1, 2, 10
STV_PROTECTED = 3
SHN_ABS = 0xFFF1
_C_KINDS = (STT_FUNC, STT_OBJECT, STT_GNU_IFUNC)
DT_NULL, DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 1, 4, 5, 6, 10, 11
DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS = 14, 15, 29, 30
DT_INIT, DT_INIT_ARRAY = 12, 25
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


class DescriptorImage(FileImage):
    """An :class:`Image` over an open file read with ``pread``, not mapped: a file truncated
    while it is read gives a short read (a ``ValueError``, the object is skipped) where a
    mapping would kill the whole process with SIGBUS."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.size)
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise ValueError(f"the file shrank while it was read (at {offset:#x})")
        return data

    def find(self, needle: bytes, start: int, end: int) -> int:
        end = min(end, self.size)
        step = max(FIND_CHUNK, 2 * len(needle))
        for at in range(max(start, 0), end, step - len(needle) + 1):
            chunk = os.pread(self._fd, min(step, end - at), at)
            found = chunk.find(needle)
            if found >= 0:
                return at + found
        return -1


FIND_CHUNK = 8 << 20
# Bytes of PT_DYNAMIC read at most: 65,536 64-bit tags (real objects have under 100).
MAX_DYNAMIC = 1 << 20


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
    # A declared size is not trusted beyond MAX_DYNAMIC: real tables end (DT_NULL) far sooner.
    length = min(dyn.filesz, MAX_DYNAMIC)
    data = image.read(dyn.offset, length - length % struct.calcsize(fmt))
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
    info["initializers"] = any(tag in (DT_INIT, DT_INIT_ARRAY) for tag, _v in dyn.tags)
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
    """defined (kept names), unique, C++ exports, C functions and C data of the .dynsym
    entries in ``table`` (the same decisions as the reference path's ``_symbol_facts``).

    Entries are unpacked in bulk; a name is sliced out of the string table only for a defined
    symbol, and decoded only when it is kept."""
    keep = _keep_bytes()
    fmt = hdr.end + ("IBBH16x" if hdr.is64 else "I8xBBH")
    table = table[: len(table) - len(table) % _symbol_entry_size(hdr)]
    find = strtab.find
    defined: set[bytes] = set()
    unique: set[bytes] = set()
    cxx: list[bytes] = []
    c_names: dict[bytes, int] = {}
    protected: list[bytes] = []
    for name_at, info, other, shndx in struct.iter_unpack(fmt, table):
        if not shndx or shndx == SHN_ABS:  # undefined, or a version node's absolute symbol
            continue
        end = find(b"\0", name_at)
        raw = strtab[name_at:end] if end >= 0 else strtab[name_at:]
        if not raw:
            continue
        if raw in keep or raw.startswith(b"PyInit_"):
            defined.add(raw)
        bind, kind = info >> 4, info & 0xF
        if bind == STB_GNU_UNIQUE:
            unique.add(raw)
        elif bind == STB_GLOBAL and kind in _C_KINDS:
            if raw[:2] == b"_Z":
                if kind != STT_GNU_IFUNC:
                    cxx.append(raw)
            else:
                c_names[raw] = kind
            if other & 3 == STV_PROTECTED:
                protected.append(raw)
    names = _decoded(set(cxx))
    exports = [n for n in names if leading_namespace(n) not in (None, "std")]
    c_functions, c_data = _c_exports(c_names)
    kept = {*exports, *c_functions, *c_data}
    shielded = sorted(n for n in _decoded(set(protected)) if n in kept)
    return (
        sorted(_decoded(defined)),
        sorted(_decoded(unique)),
        sorted(exports),
        c_functions,
        c_data,
        shielded,
    )


def _c_exports(c_names: dict[bytes, int]) -> tuple[list[str], list[str]]:
    functions: list[str] = []
    data: list[str] = []
    for raw, kind in c_names.items():
        name = raw.decode("utf-8", errors="replace")
        if is_c_export(name):
            (data if kind == STT_OBJECT else functions).append(name)
    return sorted(functions), sorted(data)


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
    defined, unique, cxx, c_functions, c_data, protected = _symbol_facts_fast(
        hdr, table, dyn.strtab
    )
    exports_std = exports_libstdcxx(defined, unique)
    hidden = False
    if not exports_std and not needs_libstdcxx(info["soname"], info["needed"]):
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
        c_functions=tuple(c_functions),
        c_data=tuple(c_data),
        has_initializers=bool(info["initializers"]),
        protected=tuple(protected),
    )
