"""Static rules: findings from ELF facts and the loader model.

Rule ids are stable (documented in docs/rules.md): ``openmp-duplicate``, ``openmp-mixed``,
``blas-duplicate``, ``libstdcxx-static-exported``, ``libstdcxx-static-hidden``,
``soname-version-shadow``, ``fortran-runtime-duplicate``, ``cxx-symbol-duplicate``,
``static-tls-late``.

:func:`evaluate` works on an environment: a runtime object counts when it is *reachable*, i.e.
in the DT_NEEDED closure of at least one extension module. :func:`findings_for_mapped` works on
objects known to be mapped in one live process (the sandbox's ``/proc/PID/maps``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_runtimeconflict.elffacts import LIBSTDCXX_MARKERS, leading_namespace
from pytest_runtimeconflict.loader import LoaderModel, ProcessState, file_key
from pytest_runtimeconflict.model import ElfFacts, Finding

if TYPE_CHECKING:  # scan imports rules; rules imports scan only inside functions
    from pytest_runtimeconflict.scan import ObjectInfo

log = logging.getLogger(__name__)

# One shared non-weak C++ definition is already an interposition hazard under RTLD_GLOBAL;
# none appear across numpy, scipy, scikit-learn and torch, so the rule stays quiet there.
CXX_DUPLICATE_THRESHOLD = 1
# __gxx_personality_v0: libc++abi defines it too; std::filesystem pieces: manylinux builds carry
# them from libstdc++_nonshared.a (weak, harmless; seen in torch's libtorch_cpu.so)
_STD_MARKERS = frozenset(
    s for s in LIBSTDCXX_MARKERS if s != "__gxx_personality_v0" and "filesystem" not in s
)


def _is_libstdcxx_unique(name: str) -> bool:
    """A libstdc++ facet id (or its guard): ``_ZNSt7num_putIc...E2idE``, ``_ZGVNSt...2idE``."""
    return name.startswith(("_ZNSt", "_ZGVNSt")) and name.endswith("2idE")


def exports_libstdcxx(facts: ElfFacts) -> bool:
    """Whether ``facts`` defines libstdc++'s own symbols (a statically linked, exported copy
    when the object is not libstdc++ itself)."""
    return any(s in _STD_MARKERS for s in facts.defined_symbols) or any(
        _is_libstdcxx_unique(u) for u in facts.unique_symbols
    )


def _key(path: str) -> str:
    return file_key(path)


def _load_name(info: ObjectInfo) -> str:
    return info.facts.soname or os.path.basename(info.path)


def _dists(infos: Iterable[ObjectInfo]) -> tuple[str, ...]:
    return tuple(sorted({i.distribution for i in infos if i.distribution}))


def _libs(infos: Iterable[ObjectInfo]) -> tuple[str, ...]:
    return tuple(sorted({i.path for i in infos}))


def _describe(info: ObjectInfo) -> str:
    owner = info.distribution or "no distribution"
    return f"{info.path} ({owner}, SONAME {info.facts.soname or '-'})"


def _distinct_copies(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """One object per SONAME (the loader keeps one file per SONAME), distinct files only."""
    by_name: dict[str, ObjectInfo] = {}
    seen_files: set[str] = set()
    for info in sorted(infos, key=lambda i: i.path):
        if _key(info.path) in seen_files:
            continue
        seen_files.add(_key(info.path))
        by_name.setdefault(_load_name(info), info)
    return list(by_name.values())


# --- runtime copies ----------------------------------------------------------------------

_OMP_ADVICE = (
    "Package authors: do not vendor an OpenMP runtime, or link the one the other packages use "
    "(build against the same libgomp/libomp, or depend on a shared runtime wheel). "
    "Users: install builds that share one runtime (e.g. conda-forge's), or import the packages "
    "in one fixed order and set OMP_NUM_THREADS to limit oversubscription."
)


def _openmp_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    out = []
    for runtime in ("libgomp", "libomp", "libiomp5"):
        copies = _distinct_copies(i for i in infos if i.kind and i.kind.runtime == runtime)
        if len(copies) < 2:
            continue
        fatal = runtime != "libgomp"
        effect = (
            "the second copy aborts at its first parallel region with 'OMP: Error #15: "
            "Initializing libiomp5.so, but found ... already initialized' (SIGABRT)"
            if fatal
            else "each copy runs its own thread pool: oversubscription, thread settings such as "
            "GOMP_CPU_AFFINITY/OMP_NUM_THREADS apply to one copy only, crashes at fork/exit"
        )
        advice = _OMP_ADVICE + (
            " KMP_DUPLICATE_LIB_OK=TRUE suppresses the abort (unsafe, unsupported)."
            if fatal
            else ""
        )
        out.append(
            Finding(
                rule="openmp-duplicate",
                family="openmp",
                severity="error" if fatal else "warning",
                title=f"{len(copies)} copies of {runtime} can be loaded into one process",
                detail=f"Different SONAMEs, so the loader keeps all of them: {effect}. Copies: "
                + "; ".join(_describe(c) for c in copies),
                libraries=_libs(copies),
                distributions=_dists(copies),
                advice=advice,
            )
        )
    return out


def _openmp_mixed(infos: Sequence[ObjectInfo]) -> list[Finding]:
    omp = [i for i in infos if i.kind and i.kind.family == "openmp"]
    runtimes = sorted({i.kind.runtime for i in omp if i.kind})
    if len(runtimes) < 2:
        return []
    fatal = {"libomp", "libiomp5"} <= set(runtimes)
    detail = (
        "LLVM libomp and Intel libiomp5 in one process abort with OMP Error #15 (threadpoolctl "
        "warns about this pair)"
        if fatal
        else "GNU libgomp and LLVM/Intel OpenMP in one process run two thread pools; "
        "reported crashes (SIGSEGV) and hangs when both are active"
    )
    return [
        Finding(
            rule="openmp-mixed",
            family="openmp",
            severity="error" if fatal else "warning",
            title="different OpenMP implementations can be loaded together: " + ", ".join(runtimes),
            detail=detail
            + ". Objects: "
            + "; ".join(_describe(i) for i in sorted(omp, key=lambda i: i.path)),
            libraries=_libs(omp),
            distributions=_dists(omp),
            advice=_OMP_ADVICE,
        )
    ]


def _blas_naming(info: ObjectInfo) -> str:
    syms = [s for s in info.facts.defined_symbols if "openblas_get_config" in s]
    if not syms:
        return f"{info.kind.runtime if info.kind else 'blas'} (symbols not identified)"
    sym = syms[0]
    prefixed, suffixed = sym.startswith("scipy_"), sym.endswith("64_")
    if prefixed or suffixed:
        parts = (["prefixed 'scipy_'"] if prefixed else []) + (
            ["suffixed '64_'"] if suffixed else []
        )
        return f"symbols {' and '.join(parts)} ({sym})"
    return f"unprefixed symbols ({sym})"


def _blas_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    copies = _distinct_copies(i for i in infos if i.kind and i.kind.family == "blas")
    if len(copies) < 2:
        return []
    names = [_blas_naming(c) for c in copies]
    sym_names = [n.split("(")[-1].rstrip(")") for n in names if "(" in n]
    collide = len(sym_names) != len(set(sym_names))
    collision = (
        "Some copies export the same symbol names: they interpose on each other when one is "
        "loaded RTLD_GLOBAL or preloaded (reported hangs and SIGSEGV)."
        if collide
        else "Their symbols are named apart, so they do not interpose; each still starts its "
        "own thread pool (oversubscription)."
    )
    return [
        Finding(
            rule="blas-duplicate",
            family="blas",
            severity="warning",
            title=f"{len(copies)} BLAS libraries can be loaded into one process",
            detail="; ".join(f"{_describe(c)}: {n}" for c, n in zip(copies, names))
            + ". "
            + collision,
            libraries=_libs(copies),
            distributions=_dists(copies),
            advice="Package authors: link a shared BLAS (e.g. scipy-openblas32/64 wheels) with "
            "prefixed symbols. Users: limit threads with OPENBLAS_NUM_THREADS or threadpoolctl.",
        )
    ]


def _fortran_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    out = []
    for runtime in ("libgfortran", "libquadmath"):
        copies = _distinct_copies(i for i in infos if i.kind and i.kind.runtime == runtime)
        if len(copies) < 2:
            continue
        out.append(
            Finding(
                rule="fortran-runtime-duplicate",
                family=runtime,
                severity="warning",
                title=f"{len(copies)} copies of {runtime} can be loaded into one process",
                detail="Each copy keeps its own I/O units and error state: "
                + "; ".join(_describe(c) for c in copies),
                libraries=_libs(copies),
                distributions=_dists(copies),
                advice="Package authors: link the system/shared runtime or a common runtime "
                "wheel. Users: usually harmless unless Fortran I/O or error handling misbehaves.",
            )
        )
    return out


# --- libstdc++ ------------------------------------------------------------------------------


def _libstdcxx_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    """Two shared libstdc++ files under different SONAMEs (e.g. a vendored, renamed copy):
    both load, and their STB_GNU_UNIQUE symbols bind process-wide to the first copy."""
    copies = _distinct_copies(i for i in infos if i.kind and i.kind.runtime == "libstdc++")
    if len(copies) < 2:
        return []
    return [
        Finding(
            rule="libstdcxx-duplicate",
            family="libstdc++",
            severity="error",
            title=f"{len(copies)} shared libstdc++ copies can be loaded into one process",
            detail="Different SONAMEs, so the loader keeps both: "
            + "; ".join(_describe(c) for c in copies)
            + ". libstdc++'s STB_GNU_UNIQUE symbols (std::locale::id of every facet) are "
            "merged process-wide even under RTLD_LOCAL, so the second copy runs on the first "
            "one's locale tables: std::bad_cast from std::regex, empty stream output, crashes.",
            libraries=_libs(copies),
            distributions=_dists(copies),
            advice="Package authors: do not vendor libstdc++ (auditwheel's policies keep it "
            "external for this reason); build with the oldest toolchain the target needs or "
            "the manylinux devtoolset. Users: preload the newest shared libstdc++ before the "
            "imports: LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6), or "
            "ctypes.CDLL('libstdc++.so.6', os.RTLD_GLOBAL).",
        )
    ]


_STATIC_ADVICE = (
    "Package authors: link with -static-libstdc++ together with -Wl,--exclude-libs,ALL (or a "
    "version script) so libstdc++ stays hidden, or link the shared libstdc++. Users: import "
    "the package that uses the shared libstdc++ first or preload it: "
    "LD_PRELOAD=$(g++ -print-file-name=libstdc++.so.6)."
)


def _libstdcxx_static(infos: Sequence[ObjectInfo], need_other: bool) -> list[Finding]:
    shared = [i for i in infos if i.kind and i.kind.runtime == "libstdc++"]
    exporters = [
        i
        for i in infos
        if (not i.kind or i.kind.runtime != "libstdc++") and exports_libstdcxx(i.facts)
    ]
    out = []
    for info in exporters:
        others = shared + [e for e in exporters if e is not info]
        if need_other and not others:
            continue
        uniq = [u for u in info.facts.unique_symbols if _is_libstdcxx_unique(u)]
        other_txt = "; other copies: " + ", ".join(o.path for o in others) if others else ""
        out.append(
            Finding(
                rule="libstdcxx-static-exported",
                family="libstdc++",
                severity="error",
                title=f"{os.path.basename(info.path)} statically links libstdc++ and exports it",
                detail=f"{_describe(info)} defines libstdc++'s own symbols ({len(uniq)} GNU_UNIQUE "
                "facet ids such as std::locale::id of the facets, core symbols like "
                "std::locale::classic). GNU_UNIQUE symbols are merged process-wide even under "
                "RTLD_LOCAL, so together with any other libstdc++ copy the locale machinery "
                "breaks: empty ostringstream output, std::bad_cast from std::regex, SIGSEGV in "
                "std::codecvt" + other_txt,
                libraries=_libs([info, *others]),
                distributions=_dists([info, *others]),
                advice=_STATIC_ADVICE,
            )
        )
    for info in infos:
        if info.facts.static_libstdcxx_hidden and not exports_libstdcxx(info.facts):
            out.append(
                Finding(
                    rule="libstdcxx-static-hidden",
                    family="libstdc++",
                    severity="info",
                    title=f"{os.path.basename(info.path)} carries a hidden static libstdc++",
                    detail=f"{_describe(info)} contains libstdc++ code but exports none of it; "
                    "it coexists with other copies. Objects passed across the boundary "
                    "(std::string, exceptions) must not mix with other libstdc++ copies.",
                    libraries=(info.path,),
                    distributions=_dists([info]),
                    advice="No action needed; keep -Wl,--exclude-libs,ALL in the link flags.",
                )
            )
    return out


# --- C++ library symbols ---------------------------------------------------------------


def _cxx_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    owners: dict[str, dict[str, ObjectInfo]] = defaultdict(dict)  # symbol -> dist -> object
    for info in infos:
        if info.distribution:
            for sym in info.facts.cxx_exports:
                owners[sym].setdefault(info.distribution, info)
    groups: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for sym, by_dist in owners.items():
        if len(by_dist) < 2:
            continue
        objs = sorted(by_dist.values(), key=lambda i: i.path)
        ns = leading_namespace(sym) or ""
        for a_idx, a in enumerate(objs):
            for b in objs[a_idx + 1 :]:
                groups[(a.path, b.path, ns)].append(sym)
    by_path = {i.path: i for i in infos}
    out = []
    for (a_path, b_path, ns), syms in sorted(groups.items()):
        if len(syms) < CXX_DUPLICATE_THRESHOLD:
            continue
        pair = [by_path[a_path], by_path[b_path]]
        label = f"namespace {ns}" if ns else "the global namespace"
        out.append(
            Finding(
                rule="cxx-symbol-duplicate",
                family="c++",
                severity="warning",
                title=f"{len(syms)} C++ symbols of {label} exported by two distributions",
                detail=f"{_describe(pair[0])} and {_describe(pair[1])} both define "
                f"{len(syms)} global symbols of {label} (e.g. {', '.join(sorted(syms)[:3])}): "
                "two copies of one C++ library; with different versions, objects built by one "
                "reach code of the other (ODR violation: crashes in call_once, descriptor "
                "registration, static initialisers).",
                libraries=_libs(pair),
                distributions=_dists(pair),
                advice="Package authors: hide the bundled library (-fvisibility=hidden, "
                "-Wl,--exclude-libs,ALL, a version script) or depend on a shared wheel of it. "
                "Users: avoid importing both in one process or use matching versions.",
            )
        )
    return out


# --- loader-based rules ------------------------------------------------------------------


@dataclass
class Reach:
    """Per-extension closures of an environment under the loader model."""

    base: set[str] = field(default_factory=set)  # paths the interpreter loads at start
    closures: dict[str, ProcessState] = field(default_factory=dict)  # extension -> process
    reached_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def compute_reach(
    objects: Sequence[ObjectInfo], loader: LoaderModel, initial: Sequence[str]
) -> Reach:
    """Load each extension on top of the interpreter's own closure (``initial``)."""
    base = loader.new_process(initial)
    reach = Reach(base=set(base.loaded))
    for info in objects:
        if not info.is_extension:
            continue
        state = base.copy()
        state.load(info.path)
        reach.closures[info.path] = state
        for path in state.loaded:
            reach.reached_by[path].add(info.path)
    return reach


def _version_shadow(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    files: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for ext, state in reach.closures.items():
        for (_req, name), path in state.resolved.items():
            if ext not in files[name][path]:
                files[name][path].append(ext)
    out = []
    for name, by_file in sorted(files.items()):
        if len({_key(p) for p in by_file}) < 2:
            continue
        for f_path, a_exts in sorted(by_file.items()):
            f_info = info_of.get(f_path)
            if f_info is None or not f_info.facts.version_defs:
                continue  # glibc skips version checks against an unversioned object
            defs = set(f_info.facts.version_defs)
            for g_path, b_exts in sorted(by_file.items()):
                if _key(g_path) == _key(f_path):
                    continue
                for b_ext in sorted(b_exts):
                    missing = _needs_on(reach.closures[b_ext], name) - defs
                    if missing:
                        out.append(
                            _shadow_finding(
                                name, f_info, info_of, g_path, a_exts[0], b_ext, missing
                            )
                        )
                        break
    return out


def _needs_on(state: ProcessState, name: str) -> set[str]:
    needs: set[str] = set()
    for facts in state.loaded.values():
        for lib, versions in facts.version_needs:
            if lib == name:
                needs.update(versions)
    return needs


def _shadow_finding(
    name: str,
    f_info: ObjectInfo,
    info_of: dict[str, ObjectInfo],
    g_path: str,
    a_ext: str,
    b_ext: str,
    missing: set[str],
) -> Finding:
    involved = [f_info] + [info_of[p] for p in (g_path, a_ext, b_ext) if p in info_of]
    a_name, b_name = os.path.basename(a_ext), os.path.basename(b_ext)
    return Finding(
        rule="soname-version-shadow",
        family=f_info.kind.family if f_info.kind else name,
        severity="error",
        title=f"importing {a_name} before {b_name} fails: {name} lacks {', '.join(sorted(missing))}",
        detail=f"{a_ext} loads {name} from {f_info.path}; the loader then reuses it for every "
        f"later request of that SONAME. {b_ext} would load {g_path} but gets {f_info.path}, "
        f"which does not define version(s) {', '.join(sorted(missing))}: "
        f"ImportError \"version '{sorted(missing)[-1]}' not found\". The reverse order works.",
        libraries=_libs(involved),
        distributions=_dists(involved),
        advice=f"Package authors: do not vendor an old {name}, or give the vendored copy a unique "
        f"SONAME (auditwheel does). Users: import {b_name.split('.')[0]}'s package first, or "
        f"preload the newest {name} (LD_PRELOAD).",
    )


def _static_tls_late(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    out = []
    for path in sorted(reach.reached_by):
        info = info_of.get(path)
        if info is None or not info.facts.static_tls or path in reach.base:
            continue
        out.append(
            Finding(
                rule="static-tls-late",
                family=info.kind.family if info.kind else "tls",
                severity="info",
                title=f"{os.path.basename(path)} uses static TLS and is only loaded by dlopen",
                detail=f"{_describe(info)} has DF_STATIC_TLS ({info.facts.tls_size} bytes of TLS); "
                "loaded late it must fit the static TLS surplus. On aarch64 this fails with "
                "'cannot allocate memory in static TLS block' depending on import order.",
                libraries=(path,),
                distributions=_dists([info]),
                advice="Package authors: build with -ftls-model=global-dynamic. Users: import this "
                "package first, preload the library, or raise glibc.rtld.optional_static_tls "
                "(GLIBC_TUNABLES).",
            )
        )
    return out


def _object_rules(infos: Sequence[ObjectInfo], mapped: bool) -> list[Finding]:
    return [
        *_openmp_duplicate(infos),
        *_openmp_mixed(infos),
        *_blas_duplicate(infos),
        *_fortran_duplicate(infos),
        *_libstdcxx_duplicate(infos),
        *_libstdcxx_static(infos, need_other=mapped),
        *_cxx_duplicate(infos),
    ]


def _sorted(findings: list[Finding]) -> list[Finding]:
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: (order.get(f.severity, 3), f.rule, f.libraries))


def default_loader(objects: Sequence[ObjectInfo]) -> LoaderModel:
    """A loader over ``objects`` (by path) with the file system as fallback."""
    from pytest_runtimeconflict.scan import FactsReader

    known = {o.path: o.facts for o in objects}
    reader = FactsReader()
    return LoaderModel(lambda p: known.get(p) or reader(p))


def evaluate(
    objects: Sequence[ObjectInfo],
    loader: LoaderModel | None = None,
    *,
    initial: Sequence[str] | None = None,
    reach: Reach | None = None,
) -> list[Finding]:
    """Findings for an environment: runtime objects count when reachable from an extension.

    ``initial`` is what the interpreter loads at start (default: the running executable).
    """
    from pytest_runtimeconflict.scan import info_of as make_info

    loader = loader or default_loader(objects)
    if reach is None:
        reach = compute_reach(objects, loader, initial or (os.path.realpath(sys.executable),))
    info_of = {o.path: o for o in objects}
    for path in reach.reached_by:
        if path not in info_of:
            facts = loader.facts_for(path)
            if facts is not None:
                info_of[path] = make_info(facts, None)
    reachable = [info_of[p] for p in sorted(reach.reached_by) if p in info_of]
    extra = [
        o for o in objects if o.path not in reach.reached_by and (o.is_extension or o.distribution)
    ]
    findings = _object_rules(reachable, mapped=False)
    # static-libstdc++ and C++ symbol rules apply to every object, reachable or not
    findings = [
        f
        for f in findings
        if f.rule
        not in ("libstdcxx-static-exported", "libstdcxx-static-hidden", "cxx-symbol-duplicate")
    ]
    findings += _libstdcxx_static(_unique([*reachable, *extra]), need_other=False)
    findings += _cxx_duplicate(_unique([*reachable, *extra]))
    findings += _version_shadow(reach, info_of)
    findings += _static_tls_late(reach, info_of)
    return _sorted(findings)


def _unique(infos: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    seen: dict[str, ObjectInfo] = {}
    for info in infos:
        seen.setdefault(info.path, info)
    return list(seen.values())


def findings_for_mapped(objects: Sequence[ObjectInfo]) -> list[Finding]:
    """Findings supported by ``objects``, all known to be mapped in one process."""
    return _sorted(_object_rules(_unique(objects), mapped=True))
