"""Rules about copies of one runtime family: OpenMP, BLAS, Fortran runtimes, and the hang of an
OpenMP runtime's thread pool after fork."""

from __future__ import annotations

import os
from collections.abc import Sequence

from pytest_runtimeconflict.model import Finding, ObjectInfo
from pytest_runtimeconflict.static.interpose import shared_symbols
from pytest_runtimeconflict.static.rules.common import (
    describe,
    distinct_copies,
    dists,
    how_loaded,
    libs,
)
from pytest_runtimeconflict.static.rules.registry import Rule, register

_OMP_ADVICE = (
    "Package authors: do not vendor an OpenMP runtime, or link the one the other packages use "
    "(build against the same libgomp/libomp, or depend on a shared runtime wheel). "
    "Users: install builds that share one runtime (e.g. conda-forge's), or import the packages "
    "in one fixed order and set OMP_NUM_THREADS to limit oversubscription."
)


def _openmp_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    out = []
    for runtime in ("libgomp", "libomp", "libiomp5"):
        copies = distinct_copies(i for i in infos if i.kind and i.kind.runtime == runtime)
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
                detail=f"{how_loaded(copies)}: {effect}. Copies: "
                + "; ".join(describe(c) for c in copies),
                libraries=libs(copies),
                distributions=dists(copies),
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
            + "; ".join(describe(i) for i in sorted(omp, key=lambda i: i.path)),
            libraries=libs(omp),
            distributions=dists(omp),
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
    copies = distinct_copies(i for i in infos if i.kind and i.kind.family == "blas")
    if len(copies) < 2:
        return []
    names = [_blas_naming(c) for c in copies]
    collision = _blas_collision(copies)
    return [
        Finding(
            rule="blas-duplicate",
            family="blas",
            severity="warning",
            title=f"{len(copies)} BLAS libraries can be loaded into one process",
            detail="; ".join(f"{describe(c)}: {n}" for c, n in zip(copies, names))
            + ". "
            + collision,
            libraries=libs(copies),
            distributions=dists(copies),
            advice="Package authors: depend on one shared BLAS wheel (e.g. scipy-openblas32/64) "
            "instead of vendoring a copy, and build vendored copies with hidden internals. "
            "Users: do not load a BLAS copy RTLD_GLOBAL or with LD_PRELOAD; limit threads "
            "with OPENBLAS_NUM_THREADS or threadpoolctl.",
        )
    ]


def _blas_collision(copies: Sequence[ObjectInfo]) -> str:
    """What the copies' exported names do to each other, checked name by name (the
    "prefixed" scipy-openblas builds still export thousands of unprefixed internals); the
    three largest overlaps in words, the rest counted."""
    overlaps = []
    for i, first in enumerate(copies):
        for second in copies[i + 1 :]:
            shared = shared_symbols(first, second)
            if shared.total:
                overlaps.append(shared)
    if not overlaps:
        return "They export no name in common (checked); each starts its own thread pool."
    overlaps.sort(key=lambda s: (-s.total, s.first.path, s.second.path))
    sentences = [
        f"{os.path.basename(s.first.path)} and {os.path.basename(s.second.path)} both export "
        f"{s.describe()}"
        for s in overlaps[:3]
    ]
    more = f" ({len(overlaps) - 3} more pairs share names too)" if len(overlaps) > 3 else ""
    return (
        "; ".join(sentences)
        + more
        + ": loaded RTLD_GLOBAL or LD_PRELOADed, one copy's calls end in the other's code and "
        "state (reported SIGSEGV and hangs). Each also starts its own thread pool."
    )


def _fortran_duplicate(infos: Sequence[ObjectInfo]) -> list[Finding]:
    out = []
    for runtime in ("libgfortran", "libquadmath"):
        copies = distinct_copies(i for i in infos if i.kind and i.kind.runtime == runtime)
        if len(copies) < 2:
            continue
        out.append(
            Finding(
                rule="fortran-runtime-duplicate",
                family=runtime,
                severity="warning",
                title=f"{len(copies)} copies of {runtime} can be loaded into one process",
                detail=f"{how_loaded(copies)}; each copy keeps its own I/O units and error "
                "state: " + "; ".join(describe(c) for c in copies),
                libraries=libs(copies),
                distributions=dists(copies),
                advice="Package authors: link the system/shared runtime or a common runtime "
                "wheel. Users: usually harmless unless Fortran I/O or error handling misbehaves.",
            )
        )
    return out


register(
    Rule(
        id="openmp-duplicate",
        family="openmp",
        severity="error",
        summary="two copies of one OpenMP implementation in one process",
        scope="reachable",
        detect=lambda objects, mapped: _openmp_duplicate(objects),
        markers=("omp-error:15",),
        roles="copies",
        cause=(
            "two copies of the OpenMP runtime {runtime} ({libs}) are loaded and both "
            "initialise; OpenMP runtimes keep process-wide state and refuse (or corrupt) a "
            "second copy"
        ),
        author_advice=(
            "vendor no private copy of the OpenMP runtime (or vendor it under the SONAME the "
            "other packages use so the loader keeps one); two initialised copies of one OpenMP "
            "runtime cannot share a process"
        ),
        untried_hint="try preloading one OpenMP runtime before the imports",
        duplicated_family="openmp",
        copies="same-runtime",
    )
)
register(
    Rule(
        id="openmp-mixed",
        family="openmp",
        severity="warning",
        summary="two OpenMP implementations (libgomp, libomp, libiomp5) in one process",
        scope="reachable",
        detect=lambda objects, mapped: _openmp_mixed(objects),
        markers=("omp-error:",),
        roles="copies",
        cause=(
            "two OpenMP implementations ({libs}) are loaded in one process, each with its own "
            "thread pool and state"
        ),
        author_advice=(
            "build against the OpenMP implementation the other packages in the environment use "
            "(one implementation per process); libgomp and libomp/libiomp5 keep separate "
            "thread pools and state"
        ),
        untried_hint="try preloading one OpenMP runtime before the imports",
        duplicated_family="openmp",
        copies="mixed",
    )
)
register(
    Rule(
        id="blas-duplicate",
        family="blas",
        severity="warning",
        summary="two BLAS libraries in one process",
        scope="reachable",
        detect=lambda objects, mapped: _blas_duplicate(objects),
        roles="copies",
        cause="two BLAS copies ({libs}) are loaded, each with its own thread server",
        author_advice=(
            "depend on one shared BLAS package instead of vendoring a copy, or vendor a build "
            "whose exported symbols (internal ones included) cannot collide with another "
            "build's; every OpenBLAS copy starts its own thread server"
        ),
        untried_hint="try OPENBLAS_NUM_THREADS=1 or preloading one BLAS",
        duplicated_family="blas",
        hang_support=True,
    )
)
register(
    Rule(
        id="fortran-runtime-duplicate",
        family="libgfortran",
        severity="warning",
        summary="two copies of libgfortran or libquadmath in one process",
        scope="reachable",
        detect=lambda objects, mapped: _fortran_duplicate(objects),
        roles="copies",
        cause="two Fortran runtimes ({libs}) are loaded in one process",
        author_advice=(
            "depend on one shared libgfortran instead of vendoring a copy, or vendor it under a "
            "unique SONAME and keep its symbols out of the global scope"
        ),
        duplicated_family="libgfortran",
    )
)
register(
    Rule(
        id="openmp-fork-hang",
        family="openmp",
        severity="error",
        summary="a fork after an OpenMP parallel region hangs the child",
        scope="run",
        cause=(
            "the process forked after {libs} had started its thread pool; the child inherits "
            "the runtime's state but not its worker threads, so its next parallel region waits "
            "forever"
        ),
        author_advice=(
            "do not call into an OpenMP runtime's thread pool in a process that will fork, or "
            "use the 'spawn'/'forkserver' start method; libgomp's pool does not survive fork "
            "(LLVM's and Intel's runtimes reinitialise in the child)"
        ),
        untried_hint="try OMP_NUM_THREADS=1 or forking before the first parallel region",
        load_independent=True,
    )
)
