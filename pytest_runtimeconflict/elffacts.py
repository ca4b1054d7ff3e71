"""ELF facts per file: what the loader model and the rules need, read with pyelftools.

:func:`read_elf_facts` is the one entry point; it raises :class:`ElfReadError` for anything
that is not a readable ELF object, and callers skip such files with a logged warning.
The dynamic symbol loop lives in :func:`_dynamic_symbols` alone so a faster bulk reader can
replace it later.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection
from elftools.elf.sections import SymbolTableSection

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.families import identity_symbol_names
from pytest_runtimeconflict.model import ElfFacts

log = logging.getLogger(__name__)

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
    """Every symbol of .dynsym (the swappable hot loop)."""
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


def read_elf_facts(path: str, *, display_path: str | None = None) -> ElfFacts:
    """Read the facts of the ELF file at ``path``.

    ``display_path`` (default ``path``) is the name recorded in the facts, e.g.
    ``/abs/x.whl!/pkg/mod.so`` for a wheel member extracted to a temporary file.
    Raises :class:`ElfReadError` naming the file when it is not a readable ELF object.
    """
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
