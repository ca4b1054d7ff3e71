"""Symbol-level knowledge shared by the ELF readers and the rules: which symbols are
libstdc++'s own, the leading namespace of a mangled C++ name, and whether an object exports a
statically linked libstdc++."""

from __future__ import annotations

from collections.abc import Iterable

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


def leading_namespace(mangled: str) -> str | None:
    """The first namespace/class component of an Itanium-mangled name (``google`` for
    ``_ZN6google8protobuf...``), ``std`` for the C++ runtime's, ``""`` for a global-scope
    function, None when it is not a plain function/object name (vtables, thunks, ...)."""
    if not mangled.startswith("_Z"):
        return None
    rest = mangled[2:]
    if rest.startswith("Z"):
        # a local static (``_ZZ<function>E<name>``) belongs to its enclosing function's scope:
        # ``_ZZNSt19_Sp_make_shared_tag5_S_tiEvE5__tag`` is libstdc++'s, not the global namespace
        return leading_namespace("_Z" + rest[1:])
    if rest.startswith(("T", "GV", "GR", "GTt")):
        rest = rest[2:] if rest[:2] in ("TV", "TI", "TS", "TT", "GV", "GR") else ""
        if not rest:
            return None
        if rest.startswith("Z"):  # the guard or reference of a local static: its function's
            return leading_namespace("_Z" + rest[1:])
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


def needs_libstdcxx(soname: str | None, needed: list[str]) -> bool:
    names = [*needed, soname or ""]
    return any(n.startswith("libstdc++.so") for n in names)


# __gxx_personality_v0: libc++abi defines it too; std::filesystem pieces: manylinux builds carry
# them from libstdc++_nonshared.a (weak, harmless; seen in torch's libtorch_cpu.so)
_STD_MARKERS = frozenset(
    s for s in LIBSTDCXX_MARKERS if s != "__gxx_personality_v0" and "filesystem" not in s
)


def is_libstdcxx_unique(name: str) -> bool:
    """A libstdc++ facet id (or its guard): ``_ZNSt7num_putIc...E2idE``, ``_ZGVNSt...2idE``."""
    return name.startswith(("_ZNSt", "_ZGVNSt")) and name.endswith("2idE")


def exports_libstdcxx(defined: Iterable[str], unique: Iterable[str]) -> bool:
    """Whether an object with these defined and GNU_UNIQUE dynamic symbols exports libstdc++'s
    own code (a statically linked, exported copy when the object is not libstdc++ itself)."""
    return any(s in _STD_MARKERS for s in defined) or any(is_libstdcxx_unique(u) for u in unique)


# Defined C symbols every object of a kind carries, which interpose on nothing that matters.
_C_NOISE = frozenset({"_init", "_fini", "_edata", "_end", "__bss_start", "_IO_stdin_used"})


def is_c_export(name: str) -> bool:
    """An unmangled exported name worth comparing across objects (not a loader or Python
    module entry point, not a C++ name)."""
    return not name.startswith(("_Z", "PyInit_")) and name not in _C_NOISE
