"""Finding-driven targets: short sequences of their own for the modules a static finding names,
and the fork probes: per module that maps an OpenMP runtime or has a workload.

Inside a long covering sequence a pair is not tested on its own terms: an earlier module may
already have loaded the library the pair's conflict needs (a ``libstdc++.so.6`` already loaded
masks a vendored older one), or an earlier conflict cuts the sequence. So each finding of the
scan (severity ``warning`` or ``error``) gets one item: for the modules that bring its
libraries (one module per library, preferring a library's own distribution), every pair of
them is imported alone in both orders, exercised, with its workloads, and, for a rule about
exported symbols of two copies, once more with the first module imported ``RTLD_GLOBAL``.

An item whose runs do not reproduce its finding says so: "not reproduced at run time", with
the workload that would (an ``error`` finding fails the item unless ``--rc-fail-on crash``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from itertools import combinations

from pytest_runtimeconflict.model import Finding
from pytest_runtimeconflict.model.entry import RunEntry
from pytest_runtimeconflict.model.plan import PLAIN, PlanContext, PlannedItem, PlannedRun, Variant
from pytest_runtimeconflict.static.rules import rule_of

# Rules about exported symbols of two copies: a copy in the global scope interposes on the
# other (field notes 6 and 7), so their targets are also run with each module imported
# RTLD_GLOBAL first. A rule the registry does not know is treated the same way.
GLOBAL_RULES = frozenset(
    {"cxx-symbol-duplicate", "symbol-interposition", "gnu-unique-shared", "blas-duplicate"}
)
MAX_PAIRS = 10  # pairs per finding (each costs two to four child runs): all of five modules
FORK_PROBE = "fork-after-parallel"
WORKLOAD_FORK_PROBE = "fork-after-workload"

# What makes a finding of this family show at run time, for "not reproduced" texts.
_HINTS = {
    "libstdc++": "C++ code of both modules using the C++ runtime (std::locale, iostreams, "
    "std::regex, exceptions across the two)",
    "openmp": "a parallel region in each module (e.g. an OpenMP-parallel function of each)",
    "blas": "a BLAS/LAPACK call from each module (a matrix product, a factorisation), also "
    "with one module imported RTLD_GLOBAL",
    "c++": "calls into each module's C++ API after importing the other with RTLD_GLOBAL",
    "libgfortran": "Fortran code of both modules (I/O, runtime errors)",
}


def global_relevant(rule_id: str) -> bool:
    """Whether a finding of ``rule_id`` is also targeted with RTLD_GLOBAL imports."""
    rule = rule_of(rule_id)
    return rule is None or rule_id in GLOBAL_RULES or rule.order_unsafe


def representatives(
    finding: Finding, bringers: Sequence[Sequence[str]], context: PlanContext
) -> list[str]:
    """One planned module per library of ``finding``: one of the finding's own distributions
    if possible, else the first (sorted) module that loads it; distinct, in library order."""
    dists = {_normal(d) for d in finding.distributions}
    chosen: list[str] = []
    for modules in bringers:
        if not modules:
            continue
        own = [m for m in modules if _normal(context.distribution_of(m) or m) in dists]
        pick = next((m for m in [*own, *modules] if m not in chosen), None)
        if pick is not None and not (set(modules) & set(chosen)):
            chosen.append(pick)
    return chosen


def _normal(name: str) -> str:
    return name.split(".")[0].lower().replace("_", "-")


def _covered(finding: Finding, context: PlanContext) -> bool:
    """Whether planned modules come from enough of the distributions the finding names (two,
    or the only one): a finding about a package that is not planned is not targeted."""
    planned = {_normal(context.distribution_of(m) or m) for m in context.modules}
    named = {_normal(d) for d in finding.distributions}
    return len(named & planned) >= min(2, len(named))


def target_items(context: PlanContext) -> list[PlannedItem]:
    """One item per static finding (worst first) whose libraries two planned modules bring,
    or one module alone when it brings all of them. A pair already targeted for an earlier
    finding is not run again: the finding joins that item, which judges it too."""
    owner: dict[frozenset[str], str] = {}
    merged: dict[str, tuple[list[Finding], list[tuple[str, ...]]]] = {}
    ordered = sorted(
        (x for x in context.findings if x[0].severity != "info"),
        key=lambda x: ({"error": 0, "warning": 1}.get(x[0].severity, 2), x[0].rule),
    )
    for finding, bringers in ordered:
        reps = representatives(finding, bringers, context)
        if not _covered(finding, context) or (len(reps) < 2 and not all(bringers)):
            continue  # a library of the finding comes with no planned module
        groups = _pairs(reps, set(owner)) + _apart_at_run_time(bringers, context, set(owner))
        if not groups:
            every = [frozenset(p) for p in combinations(reps, 2)] or [frozenset(reps)]
            held = [owner[k] for k in every if k in owner]
            if held:
                merged[held[0]][0].append(finding)
            continue
        name = f"{finding.rule}:{'+'.join(sorted({m for g in groups for m in g}))}"
        entry = merged.setdefault(name, ([], []))
        entry[0].append(finding)
        entry[1].extend(g for g in groups if g not in entry[1])
        owner.update((frozenset(g), name) for g in groups)
    return [
        PlannedItem(
            name, "target", _target_runs(groups, findings, context), findings=tuple(findings)
        )
        for name, (findings, groups) in merged.items()
    ]


def _apart_at_run_time(
    bringers: Sequence[Sequence[str]], context: PlanContext, done: set[frozenset[str]]
) -> list[tuple[str, ...]]:
    """Pairs of modules that the scan sees bringing one library but whose imports mapped
    different OpenMP runtime files (a package that loads its own copy by path with ``ctypes``
    at import time): at run time they are two copies."""
    maps = dict(context.openmp_maps)
    out: list[tuple[str, ...]] = []
    for modules in bringers:
        for a, b in combinations(modules, 2):
            apart = maps.get(a) and maps.get(b) and set(maps[a]) != set(maps[b])
            if apart and frozenset((a, b)) not in done:
                out.append((a, b))
    return out[:MAX_PAIRS]


def _pairs(reps: list[str], done: set[frozenset[str]]) -> list[tuple[str, ...]]:
    if len(reps) == 1:
        return [] if frozenset(reps) in done else [tuple(reps)]
    fresh: list[tuple[str, ...]] = [p for p in combinations(reps, 2) if frozenset(p) not in done]
    return fresh[:MAX_PAIRS]


def _target_runs(
    groups: Iterable[tuple[str, ...]], findings: list[Finding], context: PlanContext
) -> tuple[PlannedRun, ...]:
    """Each group in both orders (the pairs of three or more modules as one sweep each way,
    when no two of them load different files under one name: :func:`sweep`); for a finding
    that RTLD_GLOBAL can matter to, each order again with its first module imported
    RTLD_GLOBAL, when that import can change a binding of the order
    (:meth:`~..model.plan.PlanContext.links_from`)."""
    with_global = any(global_relevant(f.rule) for f in findings)
    groups = list(groups)
    swept = sweep(groups, context)
    runs: list[PlannedRun] = [PlannedRun(order) for order in swept]
    for group in groups:
        orders = [group] if len(group) == 1 else [group, group[::-1]]
        if not swept:
            runs += [PlannedRun(order) for order in orders]
        if with_global:
            for order in orders:
                if not set(order) & set(context.links_from(order[0])):
                    continue
                variant = Variant(f"global({order[0]})", "target", global_imports=(order[0],))
                runs.append(PlannedRun(order, variant))
    return tuple(runs)


def sweep(groups: Sequence[tuple[str, ...]], context: PlanContext) -> list[tuple[str, ...]]:
    """The pairs' modules in one order and its reverse, when the pairs are those of three or
    more modules; else nothing (the pairs run one by one). Every ordered pair then meets in
    one of the two runs, as it does alone unless a third module loads a file under a name both
    of the pair load, different from theirs (the first such copy would serve both): then
    nothing either. A sweep that fails is followed by the pairs it did not reach (the
    engine's target items)."""
    modules = list(dict.fromkeys(m for g in groups for m in g))
    if len(modules) < 3 or any(len(g) != 2 for g in groups):
        return []
    if {frozenset(g) for g in groups} != {frozenset(p) for p in combinations(modules, 2)}:
        return []
    files: dict[str, dict[str, str]] = {}
    for module in modules:
        for name, path in context.closure(module):
            if "/" not in name:  # extensions are in by path: Python loads them by path
                files.setdefault(name, {})[module] = os.path.realpath(path)
    if any(len(by) >= 3 and len(set(by.values())) >= 2 for by in files.values()):
        return []
    return [tuple(modules), tuple(reversed(modules))]


def fork_items(context: PlanContext, workload_modules: Iterable[str] = ()) -> list[PlannedItem]:
    """One fork item per planned module that maps an OpenMP runtime or has a workload.

    A module that maps an OpenMP runtime (through its extensions' closures, or by what
    ``import module`` maps: a library loaded with ``ctypes`` and the system runtime it needs)
    gets the OpenMP probe (a parallel region, fork, a parallel region in the child); per
    module, not per runtime file: two distributions' copies of one file name are two copies.
    A module with a workload (catalogue, pyproject or ``--rc-workload``) gets the workload
    probe (its steps run again in a child forked after them: any library's threads, not only
    an OpenMP pool), first; one item runs both when both apply."""
    openmp = {m for m, paths in context.openmp_maps if paths}
    openmp |= {u for lib in context.runtimes if lib.family == "openmp" for u in lib.users}
    planned = set(context.modules)
    with_workload = set(workload_modules) & planned
    items = []
    for module in sorted((openmp & planned) | with_workload):
        probes = tuple(
            probe
            for probe, wanted in ((WORKLOAD_FORK_PROBE, with_workload), (FORK_PROBE, openmp))
            if module in wanted
        )
        items.append(
            PlannedItem(f"fork:{module}", "fork", (PlannedRun((module,), PLAIN),), probes=probes)
        )
    return items


def reproduces(finding: Finding, entry: RunEntry) -> bool:
    """Whether a run (a report entry) reproduced ``finding``: it did not pass, and its verdict
    or a finding over what it mapped has the finding's rule."""
    if entry.outcome not in ("crashed", "failed", "hung", "latent"):
        return False
    if entry.rule == finding.rule:
        return True
    return any(f.rule == finding.rule for f in entry.findings)


def not_reproduced_text(finding: Finding, tried: Sequence[str]) -> str:
    """The report of a static finding that no run of its target reproduced."""
    hint = _HINTS.get(finding.family, "code of both modules using the libraries named")
    libs = ", ".join(lib.rsplit("/", 1)[-1] for lib in finding.libraries)
    return (
        f"static conflict not reproduced at run time: [{finding.severity}] {finding.rule}: "
        f"{finding.title}\n"
        f"  libraries: {libs}\n"
        f"  tried: {'; '.join(tried)} (each exercised, with the modules' workloads)\n"
        f"  what would reproduce it: {hint}; give such a workload with --rc-workload "
        "MODULE=STATEMENT or [tool.pytest-runtimeconflict.workloads] in pyproject.toml"
    )
