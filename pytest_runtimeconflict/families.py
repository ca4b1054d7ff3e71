"""The catalogue of native runtime families: one record per implementation.

A record names the family (``openmp``, ``blas``, ...), the implementation (``libgomp``,
``openblas``, ...), the symbols or version definitions that prove its identity, and the file
name / SONAME patterns that suggest it. :func:`classify` decides by identity evidence first
and by names second, so auditwheel-renamed copies (``libgomp-a34b3233.so.1.0.0``) and copies
with a changed SONAME are still recognised. New runtimes are one more entry in
:data:`FAMILIES`, never a new branch of code (threadpoolctl's idiom).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

from pytest_runtimeconflict.model import ElfFacts


@dataclass(frozen=True)
class RuntimeKind:
    """What an object is: ``family`` (``openmp``) and ``runtime`` (``libgomp``)."""

    family: str
    runtime: str


@dataclass(frozen=True)
class Family:
    """One runtime implementation and the evidence that identifies it.

    ``identity_symbols``: any of these defined (with any of ``symbol_prefixes`` /
    ``symbol_suffixes`` applied, e.g. OpenBLAS's ``scipy_openblas_get_config64_``) proves it,
    provided none of ``absent_symbols`` is defined. ``version_defs``: any of these version
    definitions proves it too. ``name_patterns`` match the file name or SONAME (weaker evidence).
    """

    family: str
    runtime: str
    name_patterns: tuple[str, ...]
    identity_symbols: tuple[str, ...] = ()
    absent_symbols: tuple[str, ...] = ()
    version_defs: tuple[str, ...] = ()
    symbol_prefixes: tuple[str, ...] = ()
    symbol_suffixes: tuple[str, ...] = ()

    @property
    def kind(self) -> RuntimeKind:
        return RuntimeKind(self.family, self.runtime)

    def symbol_variants(self) -> frozenset[str]:
        """Every spelling of the identity symbols (prefix x name x suffix)."""
        prefixes = ("", *self.symbol_prefixes)
        suffixes = ("", *self.symbol_suffixes)
        return frozenset(
            p + s + x for s in self.identity_symbols for p in prefixes for x in suffixes
        )


# Symbols only Intel's libiomp5 exports (debugger support and Intel extensions); LLVM's libomp
# shares the __kmpc_* ABI, so it is told apart by these, checked on intel-openmp 2026.2 vs
# Debian's LLVM 14 libomp.
_INTEL_OMP_ONLY = (
    "__kmp_omp_debug_struct_info",
    "__kmp_debugging",
    "__kmp_reap_monitor",
    "kmp_ext_alloc",
)

# Ordered: more specific records first (libiomp5 before libomp before libgomp, because LLVM and
# Intel OpenMP also export the GOMP_* compatibility ABI).
FAMILIES: tuple[Family, ...] = (
    Family(
        "openmp",
        "libiomp5",
        name_patterns=(r"^libiomp5([-.]|$)", r"^libiomp5md"),
        identity_symbols=_INTEL_OMP_ONLY,
    ),
    Family(
        "openmp",
        "libomp",
        name_patterns=(r"^libomp([-.]|$)", r"^libomp5([-.]|$)"),
        identity_symbols=("__kmpc_fork_call",),
    ),
    Family(
        "openmp",
        "libgomp",
        name_patterns=(r"^libgomp([-.]|$)",),
        identity_symbols=("GOMP_parallel", "GOMP_parallel_start"),
        absent_symbols=("__kmpc_fork_call",),
    ),
    Family(
        "blas",
        "openblas",
        name_patterns=(r"^lib(scipy_)?openblas",),
        identity_symbols=("openblas_get_config", "openblas_set_num_threads"),
        symbol_prefixes=("scipy_",),
        symbol_suffixes=("64_",),
    ),
    Family(
        "blas",
        "mkl",
        name_patterns=(r"^libmkl_rt([-.]|$)", r"^libmkl_core([-.]|$)"),
        identity_symbols=("MKL_Get_Max_Threads", "mkl_get_max_threads"),
    ),
    Family(
        "blas",
        "blis",
        name_patterns=(r"^libblis([-.]|$)",),
        identity_symbols=("bli_thread_get_num_threads", "bli_info_get_version_str"),
    ),
    Family(
        "blas",
        "flexiblas",
        name_patterns=(r"^libflexiblas([-.]|$)",),
        identity_symbols=("flexiblas_get_num_threads", "flexiblas_current_backend"),
    ),
    Family(
        "libstdc++",
        "libstdc++",
        name_patterns=(r"^libstdc\+\+([-.]|$)",),
        version_defs=("GLIBCXX_3.4",),
    ),
    Family(
        "libc++",
        "libc++",
        name_patterns=(r"^libc\+\+([-.]|$)",),
        identity_symbols=("_ZNSt3__16locale7classicEv",),
    ),
    Family(
        "libgfortran",
        "libgfortran",
        name_patterns=(r"^libgfortran([-.]|$)",),
        identity_symbols=("_gfortran_st_write", "_gfortran_runtime_error"),
        version_defs=("GFORTRAN_1.0", "GFORTRAN_8"),
    ),
    Family(
        "libquadmath",
        "libquadmath",
        name_patterns=(r"^libquadmath([-.]|$)",),
        identity_symbols=("quadmath_snprintf",),
        version_defs=("QUADMATH_1.0",),
    ),
    Family(
        "libgcc_s",
        "libgcc_s",
        name_patterns=(r"^libgcc_s([-.]|$)",),
        version_defs=("GCC_3.0",),
    ),
)


@lru_cache(maxsize=1)
def identity_symbol_names() -> frozenset[str]:
    """All identity/absent symbol spellings of the registry (what elffacts must keep)."""
    names: set[str] = set()
    for fam in FAMILIES:
        names |= fam.symbol_variants()
        names |= set(fam.absent_symbols)
    return frozenset(names)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _by_evidence(facts: ElfFacts) -> Family | None:
    defined = set(facts.defined_symbols)
    versions = set(facts.version_defs)
    for fam in FAMILIES:
        if any(sym in defined for sym in fam.absent_symbols):
            continue
        if defined & fam.symbol_variants() or versions & set(fam.version_defs):
            return fam
    return None


def _names_of(facts: ElfFacts) -> Iterable[str]:
    yield os.path.basename(facts.path.split("!/")[-1])
    if facts.soname:
        yield facts.soname


def _by_name(facts: ElfFacts) -> Family | None:
    if any(sym.startswith("PyInit_") for sym in facts.defined_symbols):
        return None  # an extension module is never a runtime by name alone
    for fam in FAMILIES:
        for name in _names_of(facts):
            if any(_compiled(p).search(name) for p in fam.name_patterns):
                return fam
    return None


def classify(facts: ElfFacts) -> RuntimeKind | None:
    """The runtime ``facts`` is, or None for an ordinary object (extension, app library).

    Identity symbols/version definitions decide first; a name match only counts when the
    object carries no contrary evidence (e.g. a file named ``libomp.so`` that is really
    Intel's build is reported as ``libiomp5``).
    """
    fam = _by_evidence(facts) or _by_name(facts)
    return fam.kind if fam else None


def family_record(kind: RuntimeKind) -> Family:
    """The registry record of ``kind``."""
    for fam in FAMILIES:
        if fam.kind == kind:
            return fam
    raise KeyError(kind)
