"""What the bytes of an ELF file show, for rules that compare two copies: the contents of a
dynamic symbol's object (and whether it is read-only once loaded), and whether two files map
the same bytes.

Only few files are read this way (those two rules already found sharing something), so the
reads are on demand and not part of the cached facts.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import struct
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from pytest_runtimeconflict.static.discover import WHEEL_SEP
from pytest_runtimeconflict.static.elffast import FileImage, _Header, _header, _segments

log = logging.getLogger(__name__)

SHF_WRITE, SHF_ALLOC = 0x1, 0x2
SHT_RELA, SHT_DYNAMIC, SHT_NOTE, SHT_NOBITS, SHT_REL, SHT_DYNSYM = 4, 6, 7, 8, 9, 11
PT_GNU_RELRO = 0x6474E552
_READ_ERRORS = (OSError, ValueError, struct.error, IndexError, KeyError, zipfile.BadZipFile)


class Section(NamedTuple):
    """One section header, its name decoded."""

    name: str
    sh_type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class ObjectBytes:
    """A dynamic symbol's object: the section holding it, whether the process can write it
    once loaded (a writable section outside ``PT_GNU_RELRO``), its bytes in the file and the
    dynamic relocations that patch it (offset in the object, type, symbol name, addend)."""

    section: str
    writable: bool
    content: bytes
    relocations: tuple[tuple[int, int, str, int], ...] = ()


@contextmanager
def _opened(path: str) -> Iterator[FileImage]:
    """An image of the file at ``path`` (a wheel member ``x.whl!/m.so`` is read whole)."""
    if WHEEL_SEP in path:
        wheel, member = path.split(WHEEL_SEP, 1)
        with zipfile.ZipFile(wheel) as zf:
            yield FileImage(zf.read(member))
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        yield FileImage(mm)


def sections(image: FileImage, hdr: _Header) -> list[Section]:
    """The section headers of ``image`` with their names."""
    if not hdr.shoff or not hdr.shnum:
        return []
    fmt = hdr.end + ("IIQQQQIIQQ" if hdr.is64 else "IIIIIIIIII")
    table = image.read(hdr.shoff, hdr.shentsize * hdr.shnum)
    raw = [struct.unpack_from(fmt, table, n * hdr.shentsize) for n in range(hdr.shnum)]
    names = raw[hdr.shstrndx] if hdr.shstrndx < len(raw) else None
    strings = image.read(names[4], names[5]) if names is not None else b""
    out = []
    for f in raw:
        end = strings.find(b"\0", f[0])
        name = strings[f[0] : end if end >= 0 else None].decode("utf-8", "replace")
        out.append(Section(name, f[1], f[2], f[3], f[4], f[5], f[6], f[9]))
    return out


def _file_key(path: str) -> tuple[str, int, int]:
    """``path`` with its size and mtime, so a rewritten file is read anew."""
    real = path.split(WHEEL_SEP, 1)[0]
    try:
        st = os.stat(real)
    except OSError:
        return (path, -1, -1)
    return (path, st.st_size, st.st_mtime_ns)


def symbol_objects(path: str, names: Iterable[str]) -> dict[str, ObjectBytes]:
    """The objects of the defined dynamic symbols ``names`` of the file at ``path`` (a name
    missing from the result: not defined there, or the file cannot be read)."""
    return dict(_symbol_objects(_file_key(path), tuple(sorted(set(names)))))


@lru_cache(maxsize=256)
def _symbol_objects(key: tuple[str, int, int], names: tuple[str, ...]) -> tuple:
    try:
        with _opened(key[0]) as image:
            return tuple(_read_objects(image, set(names)).items())
    except _READ_ERRORS as exc:
        log.warning("%s: cannot read its symbols' bytes (%s)", key[0], exc)
        return ()


def _read_objects(image: FileImage, wanted: set[str]) -> dict[str, ObjectBytes]:
    hdr = _header(image)
    secs = sections(image, hdr)
    dynsym = next((s for s in secs if s.sh_type == SHT_DYNSYM), None)
    if dynsym is None or not wanted:
        return {}
    symbols = _dynamic_symbols(image, hdr, dynsym, secs)
    relro = [
        (s.vaddr, s.vaddr + s.memsz) for s in _segments(image, hdr) if s.p_type == PT_GNU_RELRO
    ]
    relocs = _dynamic_relocations(image, hdr, secs, symbols)
    out = {}
    for name, (value, size, shndx) in ((n, symbols[n]) for n in wanted if n in symbols):
        if not 0 < shndx < len(secs):
            continue
        sec = secs[shndx]
        start = value - sec.addr
        content = bytes(size) if sec.sh_type == SHT_NOBITS else image.read(sec.offset + start, size)
        in_relro = any(lo <= value and value + size <= hi for lo, hi in relro)
        patches = tuple(
            (off - value, rtype, rsym, addend)
            for off, rtype, rsym, addend in relocs
            if value <= off < value + size
        )
        writable = bool(sec.flags & SHF_WRITE) and not in_relro
        out[name] = ObjectBytes(sec.name, writable, content, patches)
    return out


def _dynamic_symbols(
    image: FileImage, hdr: _Header, dynsym: Section, secs: list[Section]
) -> dict[str, tuple[int, int, int]]:
    """Dynamic symbols by name: (st_value, st_size, st_shndx), the first entry of a name."""
    strtab = secs[dynsym.link]
    strings = image.read(strtab.offset, strtab.size)
    fmt = hdr.end + ("IBBHQQ" if hdr.is64 else "IIIBBH")
    data = image.read(dynsym.offset, dynsym.size - dynsym.size % struct.calcsize(fmt))
    out: dict[str, tuple[int, int, int]] = {}
    for entry in struct.iter_unpack(fmt, data):
        if hdr.is64:
            name_at, _info, _other, shndx, value, size = entry
        else:
            name_at, value, size, _info, _other, shndx = entry
        end = strings.find(b"\0", name_at)
        name = strings[name_at : end if end >= 0 else None].decode("utf-8", "replace")
        out.setdefault(name, (value, size, shndx))
    return out


def _symbol_names(
    image: FileImage, hdr: _Header, dynsym: Section, secs: list[Section]
) -> list[str]:
    strtab = secs[dynsym.link]
    strings = image.read(strtab.offset, strtab.size)
    entsize = 24 if hdr.is64 else 16
    data = image.read(dynsym.offset, dynsym.size - dynsym.size % entsize)
    names = []
    for (name_at,) in struct.iter_unpack(f"{hdr.end}I{entsize - 4}x", data):
        end = strings.find(b"\0", name_at)
        names.append(strings[name_at : end if end >= 0 else None].decode("utf-8", "replace"))
    return names


def _dynamic_relocations(
    image: FileImage, hdr: _Header, secs: list[Section], symbols: dict[str, tuple[int, int, int]]
) -> list[tuple[int, int, str, int]]:
    """Every relocation of a section that applies to the dynamic symbol table: (address,
    type, symbol name or "", addend)."""
    out: list[tuple[int, int, str, int]] = []
    for sec in secs:
        if sec.sh_type not in (SHT_RELA, SHT_REL) or not 0 <= sec.link < len(secs):
            continue
        if secs[sec.link].sh_type != SHT_DYNSYM:
            continue
        names = _symbol_names(image, hdr, secs[sec.link], secs)
        rela = sec.sh_type == SHT_RELA
        fmt = hdr.end + {(True, True): "QQq", (True, False): "QQ", (False, True): "IIi"}.get(
            (hdr.is64, rela), "II"
        )
        data = image.read(sec.offset, sec.size - sec.size % struct.calcsize(fmt))
        for entry in struct.iter_unpack(fmt, data):
            offset, info = entry[0], entry[1]
            sym, rtype = (info >> 32, info & 0xFFFFFFFF) if hdr.is64 else (info >> 8, info & 0xFF)
            name = names[sym] if 0 < sym < len(names) else ""
            out.append((offset, rtype, name, entry[2] if rela else 0))
    return out


def same_mapped_bytes(paths: Sequence[str]) -> bool:
    """Whether the files at ``paths`` map the same bytes: every ``SHF_ALLOC`` section's name,
    type, flags, address, size and bytes equal (code, data, dynamic symbols, relocations).
    Left out: notes (a build id) and everything unallocated (debug info, ``.symtab``); the
    loader's tables (``.dynstr``, ``.gnu.hash``, versions) are compared without their
    addresses and ``.dynamic`` without the tags that point at them, since ``patchelf`` (run
    by auditwheel) moves those tables when it rewrites a SONAME. The section tables are
    compared first, so files of different layouts are never hashed. False when a file
    cannot be read."""
    layouts = {_mapped_layout(_file_key(p)) for p in paths}
    if len(layouts) != 1 or None in layouts:
        return False
    digests = {_mapped_digest(_file_key(p)) for p in paths}
    return len(digests) == 1 and None not in digests


# Loader tables patchelf may move, and the dynamic tags holding their addresses.
_MOVABLE = frozenset(
    {".dynsym", ".dynstr", ".gnu.hash", ".hash", ".gnu.version", ".gnu.version_r", ".gnu.version_d"}
)
_TABLE_TAGS = frozenset({4, 5, 6, 0x6FFFFEF5, 0x6FFFFFF0, 0x6FFFFFFC, 0x6FFFFFFE})


def _mapped(secs: list[Section]) -> list[Section]:
    return [s for s in secs if s.flags & SHF_ALLOC and s.sh_type != SHT_NOTE]


@lru_cache(maxsize=1024)
def _mapped_layout(key: tuple[str, int, int]) -> tuple | None:
    try:
        with _opened(key[0]) as image:
            secs = _mapped(sections(image, _header(image)))
    except _READ_ERRORS as exc:
        log.warning("%s: cannot read its sections (%s)", key[0], exc)
        return None
    return tuple(
        (s.name, s.sh_type, s.flags, None if s.name in _MOVABLE else s.addr, s.size) for s in secs
    )


@lru_cache(maxsize=256)
def _mapped_digest(key: tuple[str, int, int]) -> str | None:
    digest = hashlib.blake2b(digest_size=16)
    try:
        with _opened(key[0]) as image:
            hdr = _header(image)
            for sec in _mapped(sections(image, hdr)):
                if sec.sh_type == SHT_DYNAMIC:
                    digest.update(repr(_dynamic_entries(image, hdr, sec)).encode())
                elif sec.sh_type != SHT_NOBITS:
                    digest.update(image.read(sec.offset, sec.size))
    except _READ_ERRORS as exc:
        log.warning("%s: cannot read its sections (%s)", key[0], exc)
        return None
    return digest.hexdigest()


def _dynamic_entries(image: FileImage, hdr: _Header, sec: Section) -> list[tuple[int, int]]:
    """The dynamic tags of ``sec`` up to DT_NULL, without the loader tables' addresses."""
    fmt = hdr.end + ("qQ" if hdr.is64 else "iI")
    data = image.read(sec.offset, sec.size - sec.size % struct.calcsize(fmt))
    out = []
    for tag, value in struct.iter_unpack(fmt, data):
        if tag == 0:
            break
        out.append((tag, 0 if tag in _TABLE_TAGS else value))
    return out
