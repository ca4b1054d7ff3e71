"""The catalogue of native runtime families: one record per implementation, identity and
behaviour together (threadpoolctl's controllers are the model).

Identity: the family (``openmp``, ``blas``, ...), the implementation (``libgomp``,
``openblas``, ...), the symbols or version definitions that prove it, and the file name /
SONAME patterns that suggest it. :func:`classify` decides by identity evidence first and by
names second, so auditwheel-renamed copies (``libgomp-a34b3233.so.1.0.0``) and copies with a
changed SONAME are still recognised.

Behaviour: the exercise probe the sandbox's child runs on a mapped copy (a parallel region, a
small dgemm), the environment variables that cap its threads (scrubbed from children so thread
servers really start; tried as counter-experiments), the variables that hide a conflict instead
of removing it, the library name worth preloading, and whether two copies may share a process.

A new runtime is one :func:`register` call, never a new branch of code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache

from pytest_runtimeconflict.model import ElfFacts, RuntimeKind


@dataclass(frozen=True)
class Family:
    """One runtime implementation and the evidence that identifies it.

    ``identity_symbols``: any of these defined (with any of ``symbol_prefixes`` /
    ``symbol_suffixes`` applied, e.g. OpenBLAS's ``scipy_openblas_get_config64_``) proves it,
    provided none of ``absent_symbols`` is defined. ``version_defs``: any of these version
    definitions proves it too. ``name_patterns`` match the file name or SONAME (weaker evidence).

    ``probe``: the child's exercise probe for a mapped copy (``gomp-parallel``: one parallel
    region through ``GOMP_parallel``; ``openblas-dgemm``: ``openblas_get_config`` and a 64x64
    ``cblas_dgemm`` with each prefix/suffix spelling; ``libstdcxx-locale``: a ``std::locale``
    and its ``ctype``/``num_put``/``collate`` facets). ``thread_env``: variables that cap its
    threads. ``unsafe_env``: settings that hide a conflict (tried, flagged unsafe).
    ``preload_name``: the name to preload when the family is involved but no copy is mapped
    (``libstdc++.so.6``). ``copies_coexist``: False when a second initialised copy aborts.
    ``symbol_patterns``: ``(prefix, count)`` pairs: an object exporting at least ``count``
    C functions starting with ``prefix`` carries this runtime (a statically linked copy
    inside another library). ``layered``: one installation comes as several files (MKL's
    core, interface and threading layers), counted as one copy per directory.
    ``probe_symbols``: the symbols that select the probe on a mapped object, when they are not
    the identity symbols (``libstdcxx-locale`` runs on any object defining ``std::locale``'s
    constructor, so on a statically linked, exported libstdc++ too).
    """

    family: str
    runtime: str
    name_patterns: tuple[str, ...]
    identity_symbols: tuple[str, ...] = ()
    absent_symbols: tuple[str, ...] = ()
    version_defs: tuple[str, ...] = ()
    symbol_prefixes: tuple[str, ...] = ()
    symbol_suffixes: tuple[str, ...] = ()
    probe: str | None = None
    thread_env: tuple[str, ...] = ()
    unsafe_env: tuple[tuple[str, str], ...] = ()
    preload_name: str | None = None
    copies_coexist: bool = True
    symbol_patterns: tuple[tuple[str, int], ...] = ()
    layered: bool = False
    probe_symbols: tuple[str, ...] = ()

    @property
    def kind(self) -> RuntimeKind:
        return RuntimeKind(self.family, self.runtime)

    def symbol_variants(self) -> frozenset[str]:
        """Every spelling of the identity symbols (prefix x name x suffix)."""
        return _symbol_variants(self.identity_symbols, self.symbol_prefixes, self.symbol_suffixes)


@cache
def _symbol_variants(
    symbols: tuple[str, ...], prefixes: tuple[str, ...], suffixes: tuple[str, ...]
) -> frozenset[str]:
    # Asked for every object of a scan and every family: computed once per family.
    return frozenset(p + s + x for s in symbols for p in ("", *prefixes) for x in ("", *suffixes))


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
FAMILIES: list[Family] = [
    Family(
        "openmp",
        "libiomp5",
        name_patterns=(r"^libiomp5([-.]|$)", r"^libiomp5md"),
        identity_symbols=_INTEL_OMP_ONLY,
        probe="gomp-parallel",
        thread_env=("OMP_NUM_THREADS",),
        unsafe_env=(("KMP_DUPLICATE_LIB_OK", "TRUE"),),
        copies_coexist=False,
    ),
    Family(
        "openmp",
        "libomp",
        name_patterns=(r"^libomp([-.]|$)", r"^libomp5([-.]|$)"),
        identity_symbols=("__kmpc_fork_call",),
        probe="gomp-parallel",
        thread_env=("OMP_NUM_THREADS",),
        unsafe_env=(("KMP_DUPLICATE_LIB_OK", "TRUE"),),
        copies_coexist=False,
    ),
    Family(
        "openmp",
        "libgomp",
        name_patterns=(r"^libgomp([-.]|$)",),
        identity_symbols=("GOMP_parallel", "GOMP_parallel_start"),
        absent_symbols=("__kmpc_fork_call",),
        probe="gomp-parallel",
        thread_env=("OMP_NUM_THREADS",),
    ),
    Family(
        "blas",
        "openblas",
        name_patterns=(r"^lib(scipy_)?openblas",),
        identity_symbols=("openblas_get_config", "openblas_set_num_threads"),
        symbol_prefixes=("scipy_",),
        symbol_suffixes=("64_",),
        probe="openblas-dgemm",
        thread_env=("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS"),
    ),
    Family(
        "blas",
        "mkl",
        name_patterns=(r"^libmkl_rt([-.]|$)", r"^libmkl_core([-.]|$)"),
        identity_symbols=("MKL_Get_Max_Threads", "mkl_get_max_threads"),
        thread_env=("MKL_NUM_THREADS",),
        # libmkl_core alone exports thousands; a static MKL inside another library hundreds
        symbol_patterns=(("mkl_", 200),),
        layered=True,
    ),
    Family(
        "blas",
        "blis",
        name_patterns=(r"^libblis([-.]|$)",),
        identity_symbols=("bli_thread_get_num_threads", "bli_info_get_version_str"),
        thread_env=("BLIS_NUM_THREADS",),
    ),
    Family(
        "blas",
        "atlas",
        name_patterns=(r"^lib[st]?atlas([-.]|$)",),
        identity_symbols=("ATL_buildinfo",),
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
        preload_name="libstdc++.so.6",
        probe="libstdcxx-locale",
        probe_symbols=("_ZNSt6localeC1Ev",),
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
]


def register(family: Family, *, before: str | None = None) -> Family:
    """Add a runtime implementation to the registry (third parties: before the scan runs).

    Records are tried in order, so a more specific implementation is registered ``before``
    the runtime it shares symbols with (as libiomp5 precedes libomp)."""
    if any(f.kind == family.kind for f in FAMILIES):
        raise ValueError(f"runtime {family.family}/{family.runtime} is already registered")
    index = next((i for i, f in enumerate(FAMILIES) if f.runtime == before), len(FAMILIES))
    FAMILIES.insert(index, family)
    identity_symbol_names.cache_clear()
    return family


def of_family(family: str) -> list[Family]:
    """The implementations registered for ``family`` (``openmp`` -> libiomp5, libomp, libgomp)."""
    return [f for f in FAMILIES if f.family == family]


def thread_variables() -> frozenset[str]:
    """Every registered thread-count variable."""
    return frozenset(v for f in FAMILIES for v in f.thread_env)


def unsafe_variables() -> frozenset[str]:
    """Every registered variable that hides a conflict."""
    return frozenset(name for f in FAMILIES for name, _value in f.unsafe_env)


def probes() -> list[dict[str, object]]:
    """What the child needs to exercise mapped runtimes: per probe, the identity symbols
    (every prefix/suffix spelling) that select it. Plain data: the child imports nothing."""
    out: dict[str, set[str]] = {}
    for fam in FAMILIES:
        if fam.probe:
            out.setdefault(fam.probe, set()).update(fam.probe_symbols or fam.symbol_variants())
    return [{"probe": p, "symbols": sorted(s)} for p, s in sorted(out.items())]


@lru_cache(maxsize=1)
def identity_symbol_names() -> frozenset[str]:
    """All identity/absent symbol spellings of the registry (what elffacts must keep)."""
    names: set[str] = set()
    for fam in FAMILIES:
        names |= fam.symbol_variants()
        names |= set(fam.absent_symbols)
    return frozenset(names)


@cache
def _any_of(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex matching where any of ``patterns`` matches (compiled once per family)."""
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def _by_evidence(facts: ElfFacts) -> Family | None:
    defined = set(facts.defined_symbols)
    versions = set(facts.version_defs)
    for fam in FAMILIES:
        if any(sym in defined for sym in fam.absent_symbols):
            continue
        if defined & fam.symbol_variants() or versions & set(fam.version_defs):
            return fam
    return next((fam for fam in FAMILIES if _by_pattern(fam, facts)), None)


def _by_pattern(family: Family, facts: ElfFacts) -> bool:
    """Enough exported functions with one of the family's prefixes (a static copy)."""
    return any(facts.count_prefixed(prefix) >= count for prefix, count in family.symbol_patterns)


def is_layered(kind: RuntimeKind) -> bool:
    """Whether ``kind``'s files are layers of one installation (see ``Family.layered``)."""
    return any(f.layered for f in FAMILIES if f.kind == kind)


def _names_of(facts: ElfFacts) -> Iterable[str]:
    yield os.path.basename(facts.path.split("!/")[-1])
    if facts.soname:
        yield facts.soname


def _by_name(facts: ElfFacts) -> Family | None:
    if any(sym.startswith("PyInit_") for sym in facts.defined_symbols):
        return None  # an extension module is never a runtime by name alone
    names = tuple(_names_of(facts))
    for fam in FAMILIES:
        if fam.name_patterns:
            pattern = _any_of(fam.name_patterns)
            if any(pattern.search(name) for name in names):
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
