"""From the scan to the session's plan: which modules to plan, what the planner knows about
them (:class:`~pytest_runtimeconflict.model.plan.PlanContext`), and the items.

Items, in collection order (so that the shortest reproducer of a conflict is the earliest item
that has it, which the session's de-duplication across items relies on):

1. finding-driven targets and the fork probe (:mod:`.targets`; built-in, off with
   ``--rc-variants none``);
2. the covering sequences (:func:`.plan.plan_sequences`), imports in Python's default mode;
3. the variant sources (:mod:`.variants`).

No pytest import.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model.plan import (
    Plan,
    PlanContext,
    PlannedItem,
    PlannedRun,
    RuntimeLibrary,
)
from pytest_runtimeconflict.planning.variants import (
    PlanInput,
    Request,
    built_in,
    sequence_name,
    variant_items,
)
from pytest_runtimeconflict.vocabulary import is_import_step

if TYPE_CHECKING:
    from pytest_runtimeconflict.planning.import_probe import ImportProbe
    from pytest_runtimeconflict.static.scan import ScanResult

# The plugin's own runtime dependencies (and pytest's), left out of the default module set
# when the plugin is not installed as a distribution whose metadata says so.
OWN_DEPENDENCIES = frozenset(
    {"pytest", "pluggy", "iniconfig", "packaging", "pytest-xdist", "execnet", "pyelftools",
     "psutil", "tomli", "exceptiongroup", "pytest-runtimeconflict"}
)  # fmt: skip
_SITE = re.compile(r"/(?:site|dist)-packages/([^/]+)")
RUNTIME_FAMILIES = ("openmp", "blas", "libstdc++", "libgfortran", "libquadmath")


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def own_dependencies() -> frozenset[str]:
    """The plugin's runtime requirements, transitively (from the running interpreter's
    metadata), plus :data:`OWN_DEPENDENCIES`."""
    from importlib import metadata

    found = set(OWN_DEPENDENCIES)
    todo = ["pytest-runtimeconflict"]
    while todo:
        try:
            requires = metadata.requires(todo.pop()) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if "extra ==" in req:
                continue
            name = normalise(re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0])
            if name and name not in found:
                found.add(name)
                todo.append(name)
    return frozenset(found)


def top_of(path: str) -> str | None:
    """The top-level import name an installed file belongs to (``torch`` for
    ``.../site-packages/torch/lib/x.so``; ``_cffi_backend`` for a top-level extension)."""
    found = _SITE.findall(path)
    if not found:
        return None
    first = found[-1]
    return first.split(".", 1)[0] if first.endswith(".so") or ".so." in first else first


def default_modules(result: ScanResult, rootdir: Path) -> tuple[str, ...]:
    """Import names worth planning: for each distribution (not one of the plugin's own
    dependencies) that ships native code under a top-level package or module it can import,
    its public top-level names that hold native code (else its public top-level names, else
    those holding native code); plus the project under test.

    Left out: a top-level *namespace* package (no ``__init__.py``: importing it loads nothing,
    e.g. ``nvidia/...`` libraries; give a sub-package with ``--rc-modules``) and native code
    outside the site directories (``<prefix>/lib/libiomp5.so``): their libraries still take
    part in the scan, its findings and the preload variants."""
    own = own_dependencies()
    native: dict[str, set[str]] = {}
    for obj in result.objects:
        top = top_of(obj.path) if obj.distribution else None
        if obj.distribution and top and not _namespace(obj.path, top):
            native.setdefault(obj.distribution, set()).add(top)
    names: set[str] = set()
    for dist, tops in result.distributions.items():
        if dist not in native or normalise(dist) in own:
            continue
        usable = [t for t in tops if is_import_step(t)]
        with_native = [t for t in usable if t in native[dist]]
        public = [t for t in usable if not t.startswith("_")]
        names.update([t for t in with_native if not t.startswith("_")] or public or with_native)
    names.update(project_modules(rootdir))
    return tuple(sorted(names))


def _namespace(path: str, top: str) -> bool:
    """Whether ``top`` (of an installed file at ``path``) is a namespace package."""
    found = list(_SITE.finditer(path))
    if not found or not path[found[-1].end(1) :].startswith("/"):
        return False  # a top-level module file, not a package directory
    package = path[: found[-1].end(1)]
    return not os.path.exists(os.path.join(package, "__init__.py"))


def project_modules(rootdir: Path) -> list[str]:
    """The import package of the project under test, from ``pyproject.toml`` [project].name."""
    pyproject = rootdir / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        name = tomllib.loads(pyproject.read_text()).get("project", {}).get("name", "")
    except (OSError, ValueError):
        return []
    module = re.sub(r"[-.]+", "_", str(name)).lower()
    for base in (rootdir, rootdir / "src"):
        if (base / module / "__init__.py").is_file() or (base / f"{module}.py").is_file():
            return [module]
    return []


def _module_closures(result: ScanResult, modules: Sequence[str]) -> dict[str, dict[str, str]]:
    """Per planned module, what its package's extensions load: load name -> path."""
    by_top: dict[str, list[str]] = {}
    for module in modules:
        by_top.setdefault(module.split(".")[0], []).append(module)
    closures: dict[str, dict[str, str]] = {m: {} for m in modules}
    for ext, loaded in result.closures.items():
        for module in by_top.get(top_of(ext) or "", []):
            # by path: Python loads an extension by its path, so two packages' extensions
            # of one file name (scipy's and scikit-learn's _cyutility) never mask each other
            closures[module].setdefault(ext, ext)
            for name, path in loaded:
                if path != ext:  # the extension itself is in by path, never by its name
                    closures[module].setdefault(name, path)
    return closures


def context_from_scan(
    result: ScanResult,
    modules: Sequence[str],
    cache_dir: Path | None = None,
    python: str | None = None,
    timeout: float = 120.0,
) -> PlanContext:
    """What the planner needs from a scan, for the planned ``modules`` (``cache_dir``: the
    facts cache for the libraries' dependencies, as the scan's). With ``python`` each module
    is first imported alone in a child (:mod:`.import_probe`): one that fails because another
    module it needs is missing is left out (``not_importable``), and what the imports map
    tells which modules map an OpenMP runtime and which extensions are optional backends
    (``timeout``: seconds one import may take)."""
    probes = _import_probes(result, modules, cache_dir, python, timeout)
    not_alone = tuple(
        sorted((m, p.error_text()) for m, p in probes.items() if p.missing_dependency)
    )
    modules = [m for m in modules if m not in dict(not_alone)]
    closures = _module_closures(result, modules)
    known_tops = {t for tops in result.distributions.values() for t in tops}
    shipping = {top_of(o.path) for o in result.objects if o.distribution}
    native = [
        m
        for m in modules
        if closures[m] or m.split(".")[0] in shipping or m.split(".")[0] not in known_tops
    ]
    users = _users(closures)
    findings = tuple(
        (_regraded(f, result, probes), bringers) for f, bringers in _planned_findings(result, users)
    )
    runtimes = _runtime_libraries(result, users, cache_dir)
    predicted = predicted_links(result, closures, probes, cache_dir, runtimes)
    dist_of_top = {t: d for d, tops in result.distributions.items() for t in tops}
    dists = tuple(
        (m, dist_of_top[m.split(".")[0]]) for m in modules if m.split(".")[0] in dist_of_top
    )
    return PlanContext(
        modules=tuple(modules),
        native=tuple(native),
        runtimes=runtimes,
        findings=findings,
        closures=tuple((m, tuple(sorted(c.items()))) for m, c in sorted(closures.items())),
        scanned=True,
        distributions=dists,
        not_importable=not_alone,
        openmp_maps=openmp_maps(result, closures, probes, cache_dir),
        **predicted,
    )


def mapped_objects(
    closures: Mapping[str, Mapping[str, str]], probes: Mapping[str, Any]
) -> dict[str, frozenset[str]]:
    """Per module, the real paths of the shared objects it maps: its extensions' closures
    and what ``import module`` mapped in its probe child."""
    out = {}
    for module, closure in closures.items():
        probe = probes.get(module)
        paths = {os.path.realpath(p) for p in closure.values()}
        paths |= {
            os.path.realpath(p)
            for p in (probe.mapped if probe else ())
            if ".so" in os.path.basename(p)
        }
        out[module] = frozenset(paths)
    return out


def predicted_links(
    result: ScanResult,
    closures: Mapping[str, Mapping[str, str]],
    probes: Mapping[str, Any],
    cache_dir: Path | None,
    runtimes: Sequence[Any],
) -> dict[str, Any]:
    """The load modes that can change a binding (:mod:`.links`): per module the modules
    its RTLD_GLOBAL import can affect, the runtime libraries worth preloading (and of those,
    the ones LD_PRELOAD binds differently from a ctypes preload), and the modules
    a conflict of each can involve, as :class:`PlanContext` fields. A module whose import was
    not probed, or whose package has no extension the scan read (a module of no known
    distribution), is taken to affect every module (nothing says it cannot)."""
    from pytest_runtimeconflict.planning.links import (
        global_links,
        ld_preload_differs,
        preload_worthy,
        related_modules,
    )
    from pytest_runtimeconflict.static.interpose import dynamic_definitions

    objects = mapped_objects(closures, probes)
    facts = file_facts({p for paths in objects.values() for p in paths}, result, cache_dir)
    linked = linked_at_import(closures, probes)
    worthy = preload_worthy((r.path for r in runtimes), objects, facts, linked)
    links, related = global_links(objects, facts), related_modules(objects, facts)

    def names(path: str) -> frozenset[str]:  # weak definitions too (glibc's getpid, ...)
        return dynamic_definitions(path) | facts[path].names

    for module in objects:
        probe = probes.get(module)
        if probe is None or not probe.known or not closures.get(module):
            links[module] = frozenset(objects)
            related.pop(module, None)  # unknown: minimisation searches without a guess
    return {
        "links_known": True,
        "global_links": tuple((m, tuple(sorted(links[m]))) for m in sorted(links)),
        "preload_worthy": tuple(sorted(worthy)),
        "ld_preload_worthy": tuple(sorted(ld_preload_differs(worthy, objects, facts, names))),
        "related": tuple((m, tuple(sorted(related[m]))) for m in sorted(related)),
    }


def linked_at_import(
    closures: Mapping[str, Mapping[str, str]], probes: Mapping[str, Any]
) -> frozenset[str]:
    """The real paths the extensions' static closures hold that ``import module`` really
    mapped (all of them for a module without a probe): a closure's file that its import
    never maps (its SONAME served by a copy the package loaded itself first) is no module's."""
    out = set()
    for module, closure in closures.items():
        probe = probes.get(module)
        mapped = {os.path.realpath(p) for p in probe.mapped} if probe and probe.known else None
        for path in closure.values():
            real = os.path.realpath(path)
            if mapped is None or real in mapped:
                out.add(real)
    return frozenset(out)


def file_facts(paths: Iterable[str], result: ScanResult, cache_dir: Path | None) -> dict[str, Any]:
    """:class:`~.links.FileFacts` of each readable ELF file among ``paths`` (real paths)."""
    from pytest_runtimeconflict.planning.links import FileFacts
    from pytest_runtimeconflict.static.factcache import FactsCache, resolve_cache_dir
    from pytest_runtimeconflict.static.interpose import exported_names
    from pytest_runtimeconflict.static.objects import FactsReader, info_of

    known = {os.path.realpath(o.path): o for o in result.objects}
    reader = FactsReader(FactsCache(resolve_cache_dir(cache_dir)))
    out = {}
    try:
        for path in sorted(paths):
            info = known.get(path)
            if info is None:
                facts = reader(path)
                info = info_of(facts, None) if facts is not None else None
            if info is None:
                continue
            out[path] = FileFacts(
                exported_names(info),
                info.kind.family if info.kind else None,
                info.distribution,
                info.facts.soname or os.path.basename(path),
                tuple(info.facts.needed),
            )
    finally:
        reader.close()
    return out


def _runtime_libraries(result: ScanResult, users: Any, cache_dir: Path | None) -> tuple[Any, ...]:
    runtimes = [
        (o, o.kind)
        for o in result.objects
        if o.kind is not None and o.kind.family in RUNTIME_FAMILIES and users(o.path)
    ]
    alone = _loadable(result, [o.path for o, _ in runtimes], cache_dir)
    return tuple(
        RuntimeLibrary(
            o.path, kind.family, kind.runtime, users(o.path), o.distribution, alone[o.path]
        )
        for o, kind in runtimes
    )


def _planned_findings(result: ScanResult, users: Any) -> tuple[tuple[Any, tuple[Any, ...]], ...]:
    """The static findings the planned modules can show, each with the modules that bring
    each of its libraries. A finding whose libraries come partly from modules that are not
    planned is kept only when its rule still holds for the libraries planned modules bring
    (evaluated on those alone, as if mapped together): an "OpenMP implementations mixed"
    finding over two libiomp5 copies of planned modules and a libgomp of an unplanned one is
    not theirs to reproduce. Loader rules are kept as found."""
    from pytest_runtimeconflict.static.rules import findings_for_mapped, rule_of

    by_path = {o.path: o for o in result.objects}
    out = []
    for finding in result.findings:
        rule = rule_of(finding.rule)
        brought = [p for p in finding.libraries if users(p) and p in by_path]
        if rule is not None and rule.scope != "loader" and len(brought) < len(finding.libraries):
            still = findings_for_mapped([by_path[p] for p in brought])
            if not any(f.rule == finding.rule for f in still):
                continue
        out.append((finding, tuple(users(lib) for lib in finding.libraries)))
    return tuple(out)


def _loadable(result: ScanResult, paths: Sequence[str], cache_dir: Path | None) -> dict[str, bool]:
    """Per library, whether the loader model resolves every dependency when it is loaded on
    its own (as ``LD_PRELOAD`` or a preload by path does)."""
    from pytest_runtimeconflict.static.factcache import FactsCache, resolve_cache_dir
    from pytest_runtimeconflict.static.loader import LoaderModel
    from pytest_runtimeconflict.static.objects import FactsReader

    known = {o.path: o.facts for o in result.objects}
    reader = FactsReader(FactsCache(resolve_cache_dir(cache_dir)))
    try:
        loader = LoaderModel(lambda p: known.get(p) or reader(p))
        out = {}
        for path in paths:
            state = loader.new_process()
            state.load(path)
            out[path] = not state.missing
        return out
    finally:
        reader.close()


def _import_probes(
    result: ScanResult,
    modules: Sequence[str],
    cache_dir: Path | None,
    python: str | None,
    timeout: float,
) -> dict[str, ImportProbe]:
    """Each module imported alone (none without ``python``); cached per environment: the
    interpreter, the distributions and the scanned objects, for modules a distribution
    ships."""
    if python is None or not modules:
        return {}
    from pytest_runtimeconflict.planning.import_probe import probe_imports

    env = hashlib.sha256()
    env.update(json.dumps(sorted(result.distributions.items())).encode())
    for obj in sorted(result.objects, key=lambda o: o.path):
        env.update(f"{obj.path}\0{obj.facts.size}\0".encode())
    shipped = {t for tops in result.distributions.values() for t in tops}
    cacheable = [m for m in modules if m.split(".")[0] in shipped]
    return probe_imports(python, modules, cache_dir, env.hexdigest(), cacheable, timeout)


def _regraded(finding: Any, result: ScanResult, probes: Mapping[str, Any]) -> Any:
    """A missing library's finding as info when every extension that needs it belongs to a
    package whose ``import`` (in the probe child) succeeded without mapping it: an optional
    backend the static reading of the sources could not decide."""
    if finding.rule != "needed-library-missing" or finding.severity == "info" or not probes:
        return finding
    from pytest_runtimeconflict.static.rules.loading import optional_backend

    wanted = set(finding.libraries)
    exts = sorted(
        e for e, loaded in result.closures.items() if e in wanted or wanted & {p for _, p in loaded}
    )
    for ext in exts:
        top = top_of(ext) or ""
        tried = [p for m, p in probes.items() if m.split(".")[0] == top and p.known]
        mapped = {os.path.realpath(x) for p in tried for x in p.mapped}
        if not tried or any(p.error for p in tried) or os.path.realpath(ext) in mapped:
            return finding
    return optional_backend(finding, exts) if exts else finding


def openmp_maps(
    result: ScanResult,
    closures: Mapping[str, Mapping[str, str]],
    probes: Mapping[str, Any],
    cache_dir: Path | None,
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per module, the OpenMP runtime files it maps: its extensions' closures, and what
    ``import module`` mapped in its probe child (a library loaded with ``ctypes`` and the
    system runtime it needs), each file by its real path."""
    from pytest_runtimeconflict.static.factcache import FactsCache, resolve_cache_dir
    from pytest_runtimeconflict.static.objects import FactsReader, info_of

    kinds = {os.path.realpath(o.path): o.kind for o in result.objects}
    reader = FactsReader(FactsCache(resolve_cache_dir(cache_dir)))
    out = []
    try:
        for module in sorted(closures):
            probe = probes.get(module)
            paths = {os.path.realpath(p) for p in closures[module].values()}
            paths |= {p for p in (probe.mapped if probe else ()) if ".so" in os.path.basename(p)}
            found = []
            for path in sorted(paths):
                if path not in kinds:
                    facts = reader(path)
                    kinds[path] = info_of(facts, None).kind if facts is not None else None
                kind = kinds[path]
                if kind is not None and kind.family == "openmp":
                    found.append(path)
            if found:
                out.append((module, tuple(found)))
    finally:
        reader.close()
    return tuple(out)


def not_importable_lines(context: PlanContext | None) -> list[str]:
    """Summary lines for the modules left out because they do not import alone."""
    if context is None or not context.not_importable:
        return []
    lines = [f"not importable alone (not planned): {len(context.not_importable)} module(s)"]
    lines += [
        f"  {m}: {error.splitlines()[0] if error else ''}" for m, error in context.not_importable
    ]
    return lines


def _users(closures: Mapping[str, Mapping[str, str]]) -> Any:
    real: dict[str, set[str]] = {}
    for module, libs in closures.items():
        for path in libs.values():
            real.setdefault(os.path.realpath(path), set()).add(module)

    def users(path: str) -> tuple[str, ...]:
        return tuple(sorted(real.get(os.path.realpath(path), ())))

    return users


def build_plan(
    context: PlanContext,
    strength: int,
    requests: Sequence[Request],
    workloads: Iterable[tuple[str, str]] = (),
    exercise: bool = True,
    between: Sequence[Sequence[str]] = (),
) -> Plan:
    """The session's plan over ``context.modules`` (no fork probe items without runtime
    exercising: the probe runs in the exercise phase); with ``between`` (module groups), only
    the items that import a module of every group."""
    from pytest_runtimeconflict.planning.sequences import plan_sequences
    from pytest_runtimeconflict.planning.targets import fork_items, target_items
    from pytest_runtimeconflict.planning.workloads import unplanned, workload_steps

    modules = context.modules
    t = min(strength, len(modules)) if modules else 0
    sequences = tuple(tuple(s) for s in plan_sequences(modules, t)) if t else ()
    auto = built_in(requests)
    user = tuple(workloads)
    table = workload_steps(modules, user, catalogue=auto)
    items: list[PlannedItem] = []
    if auto and context.scanned:
        forks = fork_items(context, (m for m, _ in table)) if exercise else []
        items += target_items(context) + forks
    for index, seq in enumerate(sequences):
        name = sequence_name(seq, index) if auto else ">".join(seq)
        items.append(PlannedItem(name, "sequence", (PlannedRun(seq),)))
    if modules:
        items += variant_items(PlanInput(context, sequences, tuple(requests)))
    _check_unique(items)
    if between:
        items = [item for item in items if meets_every_group(item, between)]
    notes = tuple(
        f"--rc-workload for {m}: not a planned module, not run" for m in unplanned(modules, user)
    )
    return Plan(
        modules=modules,
        strength=t,
        sequences=sequences,
        items=tuple(items),
        workloads=table,
        notes=notes,
        context=context,
    )


def meets_every_group(item: PlannedItem, groups: Sequence[Sequence[str]]) -> bool:
    """Whether ``item`` imports a module of every group (a planned module ``a.b`` belongs to
    the group that names ``a.b`` or ``a``)."""
    tops = {m for m in item.modules} | {m.split(".")[0] for m in item.modules}
    return all(tops & set(group) for group in groups)


def _check_unique(items: Sequence[PlannedItem]) -> None:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise UsageError(
                f"two planned items are named {item.name!r}; remove the duplicate "
                "--rc-variants entry"
            )
        seen.add(item.name)


def describe_plan(plan: Plan) -> list[str]:
    """Lines for ``--collect-only`` and the session header: what the items are."""
    if not plan.items:
        return not_importable_lines(plan.context)
    kinds: dict[str, list[PlannedItem]] = {}
    for item in plan.items:
        key = item.kind if item.kind != "sequence" else item.variant.source
        kinds.setdefault(key, []).append(item)
    counts = ", ".join(f"{len(v)} {k}" for k, v in kinds.items())
    lines = [f"runtime-conflicts plan: {len(plan.modules)} modules; items: {counts}"]
    for item in kinds.get("target", []):
        rules = ", ".join(f"{f.severity} {f.rule}" for f in item.findings)
        runs = "; ".join(run.describe() for run in item.runs)
        lines.append(f"  target {item.name} ({rules}): {runs}")
    for item in plan.items:
        if item.kind == "sequence" and len(item.runs[0].order) > 4:
            lines.append(f"  {item.name}: {item.runs[0].describe()}")
    if plan.workloads:
        names = sorted({m for m, _ in plan.workloads})
        lines.append(f"  workloads after the imports of: {', '.join(names)}")
    lines += [f"  note: {n}" for n in plan.notes]
    return lines + ["  " + line for line in not_importable_lines(plan.context)]
