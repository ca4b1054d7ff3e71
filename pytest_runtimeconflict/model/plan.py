"""Plan records: what the planner knows about the environment (:class:`PlanContext`), the
planned items of a session (:class:`Plan`, :class:`PlannedItem`, :class:`PlannedRun`, each run
with its load-mode :class:`Variant`) and the coverage the runs reached (:class:`Coverage`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pytest_runtimeconflict.model.facts import Finding
from pytest_runtimeconflict.model.run import RunSpec
from pytest_runtimeconflict.vocabulary import JsonObject

Tuple = tuple[str, ...]

# Planned items of more modules than this are named ``seq-NN[k modules]``, not by their order.
LONG_NAME = 4


@dataclass(frozen=True)
class Variant:
    """How a planned run loads its steps: Python's default (``plain``), some imports with
    ``RTLD_GLOBAL``, libraries preloaded with ``ctypes.CDLL(..., RTLD_GLOBAL)`` or
    ``LD_PRELOAD``, environment settings. ``source`` names the variant source that planned it."""

    label: str = "plain"
    source: str = "plain"
    global_imports: Tuple = ()
    preload: Tuple = ()
    ld_preload: Tuple = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def is_plain(self) -> bool:
        return not (self.global_imports or self.preload or self.ld_preload or self.env)

    def apply(self, spec: RunSpec) -> RunSpec:
        """``spec`` loaded this way (preloads before the spec's own, environment on top)."""
        env = dict(spec.env)
        env.update(self.env)
        return replace(
            spec,
            global_imports=tuple(dict.fromkeys((*spec.global_imports, *self.global_imports))),
            preload=(*self.preload, *spec.preload),
            preload_mode="global" if self.preload else spec.preload_mode,
            ld_preload=(*self.ld_preload, *spec.ld_preload),
            env=tuple(sorted(env.items())),
        )

    def to_json(self) -> JsonObject:
        return {
            "label": self.label,
            "source": self.source,
            "global_imports": list(self.global_imports),
            "preload": list(self.preload),
            "ld_preload": list(self.ld_preload),
            "env": dict(self.env),
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> Variant:
        return cls(
            label=data["label"],
            source=data["source"],
            global_imports=tuple(data["global_imports"]),
            preload=tuple(data["preload"]),
            ld_preload=tuple(data["ld_preload"]),
            env=tuple(sorted(data["env"].items())),
        )


PLAIN = Variant()


def order_text(order: Tuple, variant: Variant = PLAIN) -> str:
    """``global(a)>b``: the import order with each RTLD_GLOBAL import marked."""
    return ">".join(f"global({m})" if m in variant.global_imports else m for m in order)


@dataclass(frozen=True)
class PlannedRun:
    """One child run an item plans: modules imported in ``order``, loaded as ``variant``."""

    order: Tuple
    variant: Variant = PLAIN

    def describe(self) -> str:
        """``preload(libstdc++.so.6): a>global(b)``."""
        loads = [f"preload({x.rsplit('/', 1)[-1]})" for x in self.variant.preload]
        loads += [f"ld_preload({x.rsplit('/', 1)[-1]})" for x in self.variant.ld_preload]
        loads += [f"env({k}={v})" for k, v in self.variant.env]
        prefix = " ".join(loads)
        return (prefix + ": " if prefix else "") + order_text(self.order, self.variant)


@dataclass(frozen=True)
class PlannedItem:
    """One collected item: ``kind`` ``sequence`` (a covering sequence, one run plus repairs
    around conflicts), ``target`` (short sequences for the modules a static finding names) or
    ``fork`` (the fork-after-parallel-region probe on one module's OpenMP runtimes)."""

    name: str
    kind: str
    runs: tuple[PlannedRun, ...]
    findings: tuple[Finding, ...] = ()
    probes: Tuple = ()

    @property
    def modules(self) -> Tuple:
        return tuple(dict.fromkeys(m for run in self.runs for m in run.order))

    @property
    def variant(self) -> Variant:
        return self.runs[0].variant


@dataclass(frozen=True)
class RuntimeLibrary:
    """A runtime library of the environment and the planned modules that load it."""

    path: str
    family: str
    runtime: str
    users: Tuple  # planned modules whose extensions load it
    distribution: str | None = None
    loadable: bool = True  # its dependencies resolve when it is loaded on its own


@dataclass(frozen=True)
class PlanContext:
    """What the scan tells the planner: the modules, which of them bring native code, the
    runtime libraries with the modules that load them, the static findings with the modules
    that bring each of their libraries, and each module's libraries by SONAME (to tell when an
    earlier module's copy masks a later one's)."""

    modules: Tuple
    native: Tuple = ()
    runtimes: tuple[RuntimeLibrary, ...] = ()
    findings: tuple[tuple[Finding, tuple[Tuple, ...]], ...] = ()
    closures: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    scanned: bool = False
    distributions: tuple[tuple[str, str], ...] = ()  # module -> its distribution
    # modules left out because they fail to import alone (another module they need is
    # missing), with the error; and per planned module the OpenMP runtime files it maps
    # (its extensions' closures and what ``import module`` mapped in a child)
    not_importable: tuple[tuple[str, str], ...] = ()
    openmp_maps: tuple[tuple[str, Tuple], ...] = ()
    # predicted from the scan (planning.links), when ``links_known``: per module, the modules
    # whose bindings its RTLD_GLOBAL import can change; the runtime libraries worth preloading
    links_known: bool = False
    global_links: tuple[tuple[str, Tuple], ...] = ()
    preload_worthy: Tuple = ()
    ld_preload_worthy: Tuple = ()  # of those, the ones LD_PRELOAD binds differently
    related: tuple[tuple[str, Tuple], ...] = ()  # module -> modules its conflicts can involve

    def links_from(self, module: str) -> Tuple:
        """The modules ``module`` imported RTLD_GLOBAL can affect (all, when not known)."""
        if not self.links_known:
            return self.modules
        return dict(self.global_links).get(module, ())

    def related_to(self, module: str) -> Tuple | None:
        """The modules a conflict of ``module`` can involve; None when not known."""
        if not self.links_known or module not in dict(self.related):
            return None
        return dict(self.related)[module]

    def modules_mapping(self, files: set[str]) -> Tuple:
        """The planned modules whose extensions' closures (or OpenMP maps) hold one of
        ``files`` (real paths)."""
        out = []
        for module in self.modules:
            paths = {os.path.realpath(p) for _name, p in self.closure(module)}
            paths |= set(dict(self.openmp_maps).get(module, ()))
            if paths & files:
                out.append(module)
        return tuple(out)

    def closure(self, module: str) -> tuple[tuple[str, str], ...]:
        return dict(self.closures).get(module, ())

    def distribution_of(self, module: str) -> str | None:
        return dict(self.distributions).get(module)

    def to_json(self) -> JsonObject:
        return {
            "modules": list(self.modules),
            "native": list(self.native),
            "runtimes": [
                [r.path, r.family, r.runtime, list(r.users), r.distribution, r.loadable]
                for r in self.runtimes
            ],
            "findings": [
                [f.to_json(), [list(ms) for ms in bringers]] for f, bringers in self.findings
            ],
            "closures": {m: [list(x) for x in c] for m, c in self.closures},
            "scanned": self.scanned,
            "distributions": dict(self.distributions),
            "not_importable": dict(self.not_importable),
            "openmp_maps": {m: list(paths) for m, paths in self.openmp_maps},
            "links_known": self.links_known,
            "global_links": {m: list(ms) for m, ms in self.global_links},
            "preload_worthy": list(self.preload_worthy),
            "ld_preload_worthy": list(self.ld_preload_worthy),
            "related": {m: list(ms) for m, ms in self.related},
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> PlanContext:
        findings = []
        for f, bringers in data["findings"]:
            f = dict(f, libraries=tuple(f["libraries"]), distributions=tuple(f["distributions"]))
            findings.append((Finding(**f), tuple(tuple(ms) for ms in bringers)))
        return cls(
            modules=tuple(data["modules"]),
            native=tuple(data["native"]),
            runtimes=tuple(
                RuntimeLibrary(p, fam, rt, tuple(users), dist, loadable)
                for p, fam, rt, users, dist, loadable in data["runtimes"]
            ),
            findings=tuple(findings),
            closures=tuple(
                (m, tuple((str(s), str(p)) for s, p in c)) for m, c in data["closures"].items()
            ),
            scanned=bool(data["scanned"]),
            distributions=tuple(sorted(data.get("distributions", {}).items())),
            not_importable=tuple(sorted(data.get("not_importable", {}).items())),
            openmp_maps=tuple(
                (m, tuple(paths)) for m, paths in sorted(data.get("openmp_maps", {}).items())
            ),
            links_known=bool(data.get("links_known", False)),
            global_links=tuple(
                (m, tuple(ms)) for m, ms in sorted(data.get("global_links", {}).items())
            ),
            preload_worthy=tuple(data.get("preload_worthy", ())),
            ld_preload_worthy=tuple(
                data["ld_preload_worthy"]
                if "ld_preload_worthy" in data
                else data.get("preload_worthy", ())
            ),
            related=tuple((m, tuple(ms)) for m, ms in sorted(data.get("related", {}).items())),
        )


@dataclass(frozen=True)
class Plan:
    """The session's plan: covering import ``sequences`` over ``modules`` (every ordered
    ``strength``-tuple in order) and every collected item, variants and targets included.
    ``workloads``: the steps run after the imports for each module that has any."""

    modules: Tuple
    strength: int
    sequences: tuple[Tuple, ...]
    items: tuple[PlannedItem, ...] = ()
    workloads: tuple[tuple[str, Tuple], ...] = ()
    notes: Tuple = ()
    context: PlanContext | None = field(default=None, compare=False)

    def steps_for(self, order: Tuple) -> Tuple:
        """The steps of a run importing ``order``: the imports, then each module's workloads
        in import order."""
        table = dict(self.workloads)
        return (*order, *(w for m in order for w in table.get(m, ())))

    def modules_of(self, steps: Sequence[str]) -> Tuple:
        """The planned modules ``steps`` involve: each import step, and the module each
        workload step belongs to (a workload imports its module itself, so a minimal order
        may hold the workload without the import), in first-seen order."""
        owner = {w: m for m, ws in self.workloads for w in ws}
        found = [owner.get(s, s) for s in steps]
        return tuple(dict.fromkeys(m for m in found if m in self.modules))


@dataclass(frozen=True)
class BlockedTuple:
    """An ordered tuple that could not run because a named conflict cut its sequence."""

    tuple: Tuple
    conflict: str

    def to_json(self) -> JsonObject:
        return {"tuple": list(self.tuple), "conflict": self.conflict}


@dataclass(frozen=True)
class VariantCoverage:
    """Coverage of one load-mode variant: ``unit`` ``pairs`` (ordered pairs with the first
    module loaded that way before the second) or ``modules`` (modules imported under it)."""

    label: str
    unit: str
    total: int
    exercised: int
    blocked: int = 0

    def describe(self) -> str:
        what = "ordered pairs" if self.unit == "pairs" else "modules"
        blocked = f", blocked by a conflict: {self.blocked}" if self.blocked else ""
        return f"{self.label}: {what} exercised {self.exercised}/{self.total}{blocked}"

    def to_json(self) -> JsonObject:
        return {
            "variant": self.label,
            "unit": self.unit,
            "total": self.total,
            "exercised": self.exercised,
            "blocked": self.blocked,
        }


@dataclass(frozen=True)
class Coverage:
    """How much of the plan's ordered tuples the runs exercised, and what blocked the rest.

    ``targeted``: ordered pairs exercised in a short targeted sequence of their own;
    ``long_only``: pairs exercised only inside long sequences; ``masked``: pairs (with the
    SONAME) whose only runs had an earlier module's copy of that library serving it, so the
    first module's own copy never loaded; ``variants``: coverage per load-mode variant."""

    modules: Tuple
    strength: int
    tuples_total: int
    tuples_exercised: int
    blocked: tuple[BlockedTuple, ...] = ()
    targeted: int = 0
    long_only: int = 0
    masked: tuple[tuple[Tuple, str], ...] = ()
    variants: tuple[VariantCoverage, ...] = ()

    @property
    def not_run(self) -> int:
        """Tuples neither exercised nor blocked: 0 when the plan ran to completion."""
        return self.tuples_total - self.tuples_exercised - len(self.blocked)

    def describe(self) -> str:
        """The summary line: ``ordered pairs exercised: 56/56 (blocked by a conflict: 0, not
        run: 0)``."""
        name = {2: "pairs", 3: "triples"}.get(self.strength, f"{self.strength}-tuples")
        return (
            f"ordered {name} exercised: {self.tuples_exercised}/{self.tuples_total}"
            f" (blocked by a conflict: {len(self.blocked)}, not run: {self.not_run})"
        )

    def detail_lines(self) -> list[str]:
        """Per-variant coverage, targeted vs long-only pairs, masked and blocked tuples."""
        lines = []
        if self.targeted or self.variants:
            lines.append(
                f"  in short targeted sequences: {self.targeted} ordered pairs; only inside"
                f" long sequences: {self.long_only}"
            )
        lines += ["  " + v.describe() for v in self.variants]
        if self.masked:
            shown = ", ".join(f"{'>'.join(t)} ({soname})" for t, soname in self.masked[:6])
            more = f" and {len(self.masked) - 6} more" if len(self.masked) > 6 else ""
            lines.append(
                f"  masked (an earlier module's copy of the library served them): {shown}{more}"
            )
        if self.blocked:
            shown = ", ".join(">".join(b.tuple) for b in self.blocked[:6])
            more = f" and {len(self.blocked) - 6} more" if len(self.blocked) > 6 else ""
            lines.append(f"  blocked by a conflict: {shown}{more}")
        return lines

    def to_json(self) -> JsonObject:
        return {
            "modules": list(self.modules),
            "strength": self.strength,
            "tuples_total": self.tuples_total,
            "tuples_exercised": self.tuples_exercised,
            "blocked": [b.to_json() for b in self.blocked],
            "not_run": self.not_run,
            "targeted_pairs": self.targeted,
            "long_only_pairs": self.long_only,
            "masked": [{"tuple": list(t), "library": s} for t, s in self.masked],
            "variants": [v.to_json() for v in self.variants],
        }
