"""ELF facts per file: what the loader model and the rules need.

:func:`read_elf_facts` is the one entry point; it raises :class:`ElfReadError` for anything
that is not a readable ELF object, and callers skip such files with a logged warning.

Two readers produce the same :class:`ElfFacts`:

- the fast path (:mod:`.elffast`, used by :func:`read_elf_facts`) reads the ELF header, the
  program headers and ``PT_DYNAMIC``, then the tables the dynamic tags point at, unpacking the
  dynamic symbol table in bulk and decoding only the names a fact needs. It works on any
  ``Image`` (a file read with ``pread``, never mapped, so a file truncated meanwhile is
  skipped instead of killing the scan with SIGBUS; or a wheel member decompressed only as far
  as needed: :mod:`.wheelmember`);
- the reference path (:func:`read_elf_facts_plain`) walks sections and symbols with pyelftools.
  It is kept so tests can compare both over every object of a real environment.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.families import identity_symbol_names
from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.elffast import FACTS_VERSION, DescriptorImage, facts_from_image
from pytest_runtimeconflict.static.symbols import (
    _LIBSTDCXX_LOCAL_SYMBOL_PREFIXES,
    _LIBSTDCXX_RODATA_STRINGS,
    LIBSTDCXX_MARKERS,
    exports_libstdcxx,
    is_c_export,
    leading_namespace,
    needs_libstdcxx,
)

if TYPE_CHECKING:  # pyelftools is imported only by the reference path (~70 ms of imports)
    from elftools.elf.elffile import ELFFile

log = logging.getLogger(__name__)

__all__ = ["FACTS_VERSION", "LIBSTDCXX_MARKERS", "leading_namespace", "read_elf_facts"]

DF_STATIC_TLS = 0x10
VER_FLG_BASE = 0x1


class DynSym(NamedTuple):
    """One dynamic symbol: name, binding (STB_*), type (STT_*), defined (not SHN_UNDEF)."""

    name: str
    bind: str
    type: str
    defined: bool
    protected: bool = False


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
            protected = sym["st_other"]["visibility"] == "STV_PROTECTED"
            defined = sym["st_shndx"] not in ("SHN_UNDEF", "SHN_ABS")  # ABS: version nodes
            yield DynSym(sym.name, info["bind"], info["type"], defined, protected)


def _is_cxx_export(sym: DynSym) -> bool:
    if not (sym.defined and sym.bind == "STB_GLOBAL" and sym.type in ("STT_FUNC", "STT_OBJECT")):
        return False
    ns = leading_namespace(sym.name)
    return ns is not None and ns != "std"


def _dynamic_info(elf: ELFFile) -> dict[str, Any]:
    from elftools.elf.dynamic import DynamicSection

    info: dict[str, Any] = {
        "soname": None,
        "needed": [],
        "rpath": [],
        "runpath": [],
        "flags": 0,
        "initializers": False,
    }
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
            elif kind in ("DT_INIT", "DT_INIT_ARRAY"):
                info["initializers"] = True
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
    image = DescriptorImage(stream.fileno(), os.fstat(stream.fileno()).st_size)
    end = min(offset + size, image.size)
    return any(image.find(needle, offset, end) >= 0 for needle in _LIBSTDCXX_RODATA_STRINGS)


def _symbol_facts(elf: ELFFile) -> tuple[list[str], ...]:
    """defined (kept names), unique, C++ exports, C functions and C data of .dynsym."""
    keep = identity_symbol_names() | LIBSTDCXX_MARKERS
    defined: set[str] = set()
    unique: set[str] = set()
    cxx: set[str] = set()
    c_functions: set[str] = set()
    c_data: set[str] = set()
    protected: set[str] = set()
    for sym in _dynamic_symbols(elf):
        if not sym.defined:
            continue
        if sym.name in keep or sym.name.startswith("PyInit_"):
            defined.add(sym.name)
        if sym.bind == "STB_LOOS":  # STB_GNU_UNIQUE (10)
            unique.add(sym.name)
        elif _is_cxx_export(sym):
            cxx.add(sym.name)
        elif sym.bind == "STB_GLOBAL" and is_c_export(sym.name):
            if sym.type in ("STT_FUNC", "STT_LOOS", "STT_GNU_IFUNC"):  # IFUNC is 10
                c_functions.add(sym.name)
            elif sym.type == "STT_OBJECT":
                c_data.add(sym.name)
        if sym.protected and (sym.name in cxx or sym.name in c_functions or sym.name in c_data):
            protected.add(sym.name)
    return tuple(sorted(x) for x in (defined, unique, cxx, c_functions, c_data, protected))


def _facts_from_elf(path: str, elf: ELFFile, stream: BinaryIO) -> ElfFacts:
    dyn = _dynamic_info(elf)
    version_defs, version_needs = _versions(elf)
    defined, unique, cxx, c_functions, c_data, protected = _symbol_facts(elf)
    exports_std = exports_libstdcxx(defined, unique)
    hidden = False
    if not exports_std and not needs_libstdcxx(dyn["soname"], dyn["needed"]):
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
        c_functions=tuple(c_functions),
        c_data=tuple(c_data),
        has_initializers=bool(dyn["initializers"]),
        protected=tuple(protected),
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


def read_elf_facts(path: str, *, display_path: str | None = None) -> ElfFacts:
    """Read the facts of the ELF file at ``path`` (fast path: mmap, bulk tables).

    ``display_path`` (default ``path``) is the name recorded in the facts, e.g.
    ``/abs/x.whl!/pkg/mod.so`` for a wheel member extracted to a temporary file.
    Raises :class:`ElfReadError` naming the file when it is not a readable ELF object.
    """
    shown = display_path or path
    try:
        # O_NONBLOCK: opening a FIFO named like a library must not block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ElfReadError(f"{shown}: not a regular file; skipped")
        if os.pread(fd, 4, 0) != b"\x7fELF":
            raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
        return facts_from_image(DescriptorImage(fd, os.fstat(fd).st_size), shown)
    except ElfReadError:
        raise
    except (struct.error, ValueError, IndexError, OverflowError) as exc:
        raise ElfReadError(f"{shown}: corrupt or truncated ELF file ({exc}); skipped") from exc
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc
    finally:
        os.close(fd)
