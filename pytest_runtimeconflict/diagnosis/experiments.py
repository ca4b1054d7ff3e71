"""Counter-experiments: changes to the minimal failing run (the reverse import order,
preloads, ``LD_PRELOAD``, environment settings) and what each did to the failure.

Minimisation may drop the modules' workloads (a crash at import needs none), but a change that
only lets the imports pass has avoided nothing if the modules' own code still fails once it
runs. So every experiment runs, after its imports, every workload of every module its order
involves (:func:`with_workloads`), as the failing run did; the spec's probes stay as they were.
A change that passes the imports but fails in a workload is "fails once the workloads run".

What to try comes from the registries: each runtime family says which copies to preload, which
thread variables tame it and which settings only hide it (:mod:`pytest_runtimeconflict.families`),
and a rule may ask for more (:data:`~pytest_runtimeconflict.static.rules.registry.EXPERIMENTS`).
An experiment never ends the diagnosis: a child that cannot start is recorded as
``could-not-start`` with the loader's message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Sequence

from pytest_runtimeconflict import families as family_registry
from pytest_runtimeconflict.diagnosis.attribution import conflict_key
from pytest_runtimeconflict.diagnosis.candidates import dedupe, newest_candidate, system_libraries
from pytest_runtimeconflict.diagnosis.evidence import backtrace_library, describe
from pytest_runtimeconflict.diagnosis.minimise import CapReached, Runner, reversed_imports
from pytest_runtimeconflict.diagnosis.rodata import thread_variables
from pytest_runtimeconflict.model import (
    AvoidedBy,
    Evidence,
    Experiment,
    LibraryRole,
    RunResult,
    RunSpec,
    Verdict,
)
from pytest_runtimeconflict.model.run import EnvChange
from pytest_runtimeconflict.planning.workloads import step_label
from pytest_runtimeconflict.static.interpose import dynamic_definitions
from pytest_runtimeconflict.static.records import distributions_of
from pytest_runtimeconflict.static.rules import rule_of
from pytest_runtimeconflict.static.rules.environment import read_by_libraries, restore_statement
from pytest_runtimeconflict.vocabulary import is_import_step

log = logging.getLogger(__name__)

# At most this many candidates of one family are preloaded (each costs two child runs).
MAX_CANDIDATES = 2
# At most this many environment changes are restored, one child run each.
MAX_RESTORES = 3
ENVIRONMENT_RULE = "environment-rewritten"

# Per planned module, its workload steps (the plan's table: ``Plan.workloads``).
Workloads = tuple[tuple[str, tuple[str, ...]], ...]
# The sandbox's probes that fork after the steps, and the one that spawns instead.
FORK_PROBES = ("fork-after-workload", "fork-after-parallel")
SPAWN_PROBE = "spawn-after-workload"


def plan_experiments(
    spec: RunSpec, evidence: Evidence, verdict: Verdict, workloads: Workloads = ()
) -> list[Experiment]:
    """The counter-experiments relevant to the failure and the families involved, each with
    the workloads of every module of its order (:func:`with_workloads`)."""
    planned = _unique(_changes(spec, evidence, verdict))
    return _unique([_with_workloads(e, workloads) for e in planned])


def with_workloads(steps: Sequence[str], workloads: Workloads) -> tuple[str, ...]:
    """``steps`` as a planned run of their modules would run them: the steps that are no
    workload in their order (imports, statements), then every workload of every module they
    involve (an import, or a workload kept without its import), module by module in that
    order: what ``Plan.steps_for`` gives for the order."""
    table = dict(workloads)
    owner = {w: m for m, ws in workloads for w in ws}
    modules = dict.fromkeys(owner.get(s, s) for s in steps if owner.get(s, s) in table)
    rest = tuple(s for s in steps if s not in owner)
    return (*rest, *(w for m in modules for w in table[m]))


def _with_workloads(experiment: Experiment, workloads: Workloads) -> Experiment:
    steps = with_workloads(experiment.spec.steps, workloads)
    if steps == experiment.spec.steps:
        return experiment
    added = tuple(s for s in steps if s not in experiment.spec.steps)
    spec = dataclasses.replace(experiment.spec, steps=steps)
    return dataclasses.replace(experiment, spec=spec, workloads=added)


def _changes(spec: RunSpec, evidence: Evidence, verdict: Verdict) -> list[Experiment]:
    """The changes to try, before the workloads are added."""
    rule = rule_of(verdict.rule)
    restores = [experiment for _change, experiment in _restores(spec, evidence)]
    if rule is not None and rule.load_independent:
        fork = _fork_settings(spec, evidence, verdict) + _start_method(spec)
        return restores + fork
    planned = restores + _reverse_order(spec, evidence, verdict)
    if rule is not None and "preload-newest-soname" in rule.experiments and verdict.soname:
        newest = newest_candidate(verdict.soname, verdict.version, evidence)
        planned += _preloads(spec, [newest or verdict.soname], evidence)
    if rule is not None and "drop-global" in rule.experiments:
        planned += _drop_global(spec)
    for family in verdict.families:
        planned += _family_experiments(spec, evidence, verdict, family)
    return planned


def _restores(spec: RunSpec, evidence: Evidence) -> list[tuple[EnvChange, Experiment]]:
    """For each variable libraries read that a step before the failing one changed: the same
    run with a step inserted right after that one, putting the variable back as it was."""
    result = evidence.result
    end = result.failed_step if result.failed_step is not None else len(spec.steps)
    owners: dict[str, str | None] = {}

    def owner_of(path: str) -> str | None:
        if path not in owners:
            owners[path] = _owner_of(path)
        return owners[path]

    out: list[tuple[EnvChange, Experiment]] = []
    for change in result.env_changes:
        if change.step >= min(end, len(spec.steps)) or len(out) >= MAX_RESTORES:
            continue
        if not read_by_libraries(change.name, change.after, owner_of):
            continue
        steps = list(spec.steps)
        steps.insert(change.step + 1, restore_statement(change.name, change.before))
        what = "unset it" if change.before is None else f"set it back to {change.before!r}"
        text = (
            f"restore {change.name} right after {spec.steps[change.step]!r}, which set it to "
            f"{change.after!r} ({what}: {steps[change.step + 1]})"
        )
        out.append((change, Experiment(text, "env", dataclasses.replace(spec, steps=tuple(steps)))))
    return out


def _owner_of(path: str) -> str | None:
    """The distribution that installed ``path`` (for a directory: one of its files)."""
    if os.path.isdir(path):
        try:
            files = sorted(e.path for e in os.scandir(path) if e.is_file())
        except OSError:
            return None
        return next((owner for f in files[:3] if (owner := distributions_of([f]).get(f))), None)
    return distributions_of([path]).get(path) if os.path.isfile(path) else None


def confirm_environment(
    spec: RunSpec, evidence: Evidence, verdict: Verdict, tried: Sequence[AvoidedBy]
) -> tuple[Verdict, str]:
    """The verdict and the user's advice when restoring a changed variable avoided the
    failure: the environment rule, naming the step, the variable and both values; otherwise
    ``verdict`` unchanged and no advice."""
    avoided = {e.change for e in tried if e.avoided}
    found = next(((c, e) for c, e in _restores(spec, evidence) if e.change in avoided), None)
    rule = rule_of(ENVIRONMENT_RULE)
    if found is None or rule is None:
        return verdict, ""
    change, experiment = found
    texts = {
        "module": spec.steps[change.step],
        "variable": change.name,
        "before": "unset" if change.before is None else repr(change.before),
        "after": "unset" if change.after is None else repr(change.after),
    }
    libraries = _environment_libraries(verdict, evidence, change)
    texts["libs"] = ", ".join(os.path.basename(lib.path) for lib in libraries) or "(none named)"
    key_paths = [lib.path for lib in libraries] or [change.name]
    confirmed = dataclasses.replace(
        verdict,
        rule=ENVIRONMENT_RULE,
        libraries=tuple(libraries),
        findings=(),  # static findings on the copies are context here, not the cause
        score=max(verdict.score, 2),
        cause=rule.cause.format_map(texts),
        author_advice=rule.author_advice,
        key=conflict_key(ENVIRONMENT_RULE, key_paths),
        families=(),
    )
    return confirmed, f"{experiment.change} - found to avoid it"


def _environment_libraries(
    verdict: Verdict, evidence: Evidence, change: EnvChange
) -> list[LibraryRole]:
    """The mapped objects the new value points at (a plugin loaded from the directory the
    variable now names), then the libraries two distributions each bring a copy of, one of
    them the found objects' (the toolkit whose other copy loaded them; system libraries are no
    distribution's copy). Without found objects: the libraries the verdict named."""
    order = sorted(evidence.objects, key=evidence.order_of)
    roots = [
        os.path.realpath(p).rstrip("/") + "/"
        for p in (change.after or "").split(os.pathsep)
        if os.path.isabs(p) and os.path.exists(p)
    ]
    found = [p for p in order if any(p.startswith(r) for r in roots)]
    if not found:
        return list(verdict.libraries)
    dist = {p: evidence.objects[p].distribution for p in order}
    owners = {dist[p] for p in found} - {None}
    by_stem: dict[str, list[str]] = {}
    for path in order:
        stem = _library_stem(path)
        if stem is not None and path not in found:
            by_stem.setdefault(stem, []).append(path)
    copies = [
        p
        for paths in by_stem.values()
        if len({dist[p] for p in paths} - {None}) > 1 and owners & {dist[p] for p in paths}
        for p in paths
    ]
    roles = [(p, f"found through {change.name}") for p in found] + [(p, "copy") for p in copies]
    return [LibraryRole(p, dist[p], None, None, role) for p, role in roles]


_VENDORED = re.compile(r"^(lib[^.]+?)(-[0-9a-f]{8})?\.so")


def _library_stem(path: str) -> str | None:
    """``libQt5Core`` for ``libQt5Core.so.5`` and an auditwheel copy
    ``libQt5Core-0a1b2c3d.so.5.15``; None for extension modules and other files."""
    name = os.path.basename(path)
    match = _VENDORED.match(name)
    return match.group(1) if match and ".cpython-" not in name else None


def _fork_settings(spec: RunSpec, evidence: Evidence, verdict: Verdict) -> list[Experiment]:
    """The settings of the verdict's families (the runtime the forked child waited in); when
    they have none (threads of a library of no runtime family) and the fork-after-workload
    probe ran, the thread variables of every family the run mapped (each then tried with the
    real workload, which the probe runs again in the forked child: a package that sizes its
    own pool is not tamed by a variable it does not read); then the thread-count variables
    the verdict's libraries read themselves (:mod:`.rodata`), each set to 1."""
    planned = [
        e for f in dict.fromkeys(verdict.families) for e in _settings(spec, evidence, verdict, f)
    ]
    if not planned and FORK_PROBES[0] in spec.probes:
        mapped = sorted({family for family, _runtime in evidence.runtimes.values()})
        planned = [e for f in mapped for e in _settings(spec, evidence, verdict, f)]
    # the libraries' own thread-count variables (a pool of its own reads no family's)
    own = thread_variables(
        [lib.path for lib in verdict.libraries], family_registry.thread_variables()
    )
    return planned + [_env(spec, name, "1") for name in own]


def _start_method(spec: RunSpec) -> list[Experiment]:
    """The same steps with the process started by ``multiprocessing``'s 'spawn' method
    instead of fork: the spawn probe runs the steps again in a spawned interpreter, and no
    probe forks (a fork-after-workload failure only)."""
    if FORK_PROBES[0] not in spec.probes:
        return []
    probes = (*(p for p in spec.probes if p not in FORK_PROBES), SPAWN_PROBE)
    return [
        Experiment(
            "start the worker processes with multiprocessing.get_context('spawn') (or "
            "'forkserver') instead of fork",
            "start_method",
            dataclasses.replace(spec, probes=probes),
        )
    ]


def _drop_global(spec: RunSpec) -> list[Experiment]:
    """The same order with nothing put into the global scope: no RTLD_GLOBAL step, no
    RTLD_GLOBAL import (``global_imports``), local preloads, no LD_PRELOAD (Python's default
    load mode)."""
    steps = tuple("pass" if "RTLD_GLOBAL" in s else s for s in spec.steps)
    changed = dataclasses.replace(
        spec, steps=steps, global_imports=(), preload_mode="local", ld_preload=()
    )
    put_global = set(spec.global_imports) & set(spec.steps) or spec.preload or spec.ld_preload
    if changed == spec or changed.steps == spec.steps and not put_global:
        return []
    return [
        Experiment(
            "load everything RTLD_LOCAL (no sys.setdlopenflags(RTLD_GLOBAL), no RTLD_GLOBAL "
            "import, no global preload, no LD_PRELOAD)",
            "load_mode",
            changed,
        )
    ]


def _reverse_order(spec: RunSpec, evidence: Evidence, verdict: Verdict) -> list[Experiment]:
    native = [i for i, libs in enumerate(evidence.result.step_libraries) if libs]
    reordered = reversed_imports(spec.steps, native) or reversed_imports(spec.steps)
    if reordered is None:
        return []
    rule = rule_of(verdict.rule)
    # With two exported copies of one C++ library the order only picks which copy wins.
    unsafe = bool(rule is not None and rule.order_unsafe)
    note = " (unsafe: only changes which copy's symbols win)" if unsafe else ""
    moved = [
        s
        for i, s in enumerate(reordered)
        if (s != spec.steps[i] or i in native) and is_import_step(s)
    ]
    change = "reverse the import order: " + " -> ".join(moved) + note
    return [Experiment(change, "order", dataclasses.replace(spec, steps=reordered), unsafe=unsafe)]


def _family_experiments(
    spec: RunSpec, evidence: Evidence, verdict: Verdict, family: str
) -> list[Experiment]:
    """The family's settings (:func:`_settings`), then preloads of its copies (or of its
    usual library)."""
    records = family_registry.of_family(family)
    planned = _settings(spec, evidence, verdict, family)
    named = [r.preload_name for r in records if r.preload_name]
    if named:
        libraries = [newest_candidate(named[0], None, evidence) or named[0]]
    else:
        libraries = _candidates(verdict, evidence, family)
    return planned + _preloads(spec, libraries, evidence)


def _settings(spec: RunSpec, evidence: Evidence, verdict: Verdict, family: str) -> list[Experiment]:
    """The family's thread variable first (one run, and the commonest real workaround), then
    the settings that only hide a conflict (flagged unsafe)."""
    records = family_registry.of_family(family)
    variables = dedupe(v for r in records for v in r.thread_env)
    planned = [_env(spec, name, "1") for name in variables[:1]]
    involved = {lib.runtime for lib in verdict.libraries if lib.family == family}
    involved |= {r for f, r in evidence.runtimes.values() if f == family}
    omp_error = any(m.startswith("omp-error:") for m in evidence.markers)
    for record in records:
        if record.runtime in involved or (omp_error and record.unsafe_env):
            planned += [_env(spec, k, v, unsafe=True) for k, v in record.unsafe_env]
    return planned


def _preloads(
    spec: RunSpec, libraries: Iterable[str], evidence: Evidence | None = None
) -> list[Experiment]:
    out = []
    for lib in libraries:
        here = _beside(lib, evidence)
        base, note, prefix = spec, "", ""
        if here is not None:
            # ahead of the path the child would inherit (the run's own setting, else ours)
            inherited = dict(spec.env).get("LD_LIBRARY_PATH", os.environ.get("LD_LIBRARY_PATH", ""))
            paths = [here, *[p for p in inherited.split(":") if p]]
            env = dict(spec.env, LD_LIBRARY_PATH=":".join(paths))
            base = dataclasses.replace(spec, env=tuple(sorted(env.items())))
            note, prefix = f" (with LD_LIBRARY_PATH={here})", f"LD_LIBRARY_PATH={here} "
        in_code = f"preload {lib} with ctypes.CDLL(..., RTLD_GLOBAL) before the imports{note}"
        out.append(
            Experiment(
                in_code,
                "preload",
                dataclasses.replace(base, preload=(lib, *spec.preload), preload_mode="global"),
            )
        )
        if not _ld_preload_differs(lib, evidence):
            continue
        out.append(
            Experiment(
                f"start Python with {prefix}LD_PRELOAD={lib}",
                "ld_preload",
                dataclasses.replace(base, ld_preload=(lib, *spec.ld_preload)),
                alternative_to=in_code,
            )
        )
    return out


def _ld_preload_differs(lib: str, evidence: Evidence | None) -> bool:
    """Whether ``LD_PRELOAD`` of ``lib`` can bind a name otherwise than its ctypes preload
    before the steps: only when ``lib`` (or a library it needs among the run's objects)
    defines a name that an object the interpreter had mapped before them defines (the
    loader puts an ``LD_PRELOAD`` library ahead of those, a ctypes preload behind them; for
    every later object both put it first). The system's own libraries it needs (glibc's
    ``libpthread`` stub, ...) are the interpreter's too. True when the run does not say."""
    info = evidence.objects.get(os.path.realpath(lib)) if evidence is not None else None
    if evidence is None or info is None:
        return True
    own = set(evidence.necessary) | {os.path.realpath(p) for p in evidence.result.preload_libraries}
    startup = [o for path, o in evidence.objects.items() if path not in own]
    if not startup:
        return True
    names = set(dynamic_definitions(info.facts.path))
    by_soname = {o.facts.soname: o for o in evidence.objects.values() if o.facts.soname}
    for needed in info.facts.needed:
        dep = by_soname.get(needed)
        if dep is not None and dep not in startup and dep.distribution is not None:
            names |= dynamic_definitions(dep.facts.path)
    return any(names & dynamic_definitions(o.facts.path) for o in startup)


def _beside(lib: str, evidence: Evidence | None) -> str | None:
    """The directory of ``lib`` when it needs a library that lies beside it and that neither
    its own RUNPATH/RPATH nor the system's loader cache finds: auditwheel vendors a wheel's
    libraries side by side and only the extension's RUNPATH leads there, so loaded on its own
    (preloaded) the library would not load without that directory on ``LD_LIBRARY_PATH``."""
    if not os.path.isabs(lib) or not os.path.isfile(lib):
        return None
    real = os.path.realpath(lib)
    info = evidence.objects.get(real) if evidence is not None else None
    info = info or next(iter(describe([real])), None)
    if info is None or any("ORIGIN" in p for p in (*info.facts.runpath, *info.facts.rpath)):
        return None
    here = os.path.dirname(real)
    lost = [
        name
        for name in info.facts.needed
        if os.path.exists(os.path.join(here, name)) and not system_libraries(name)
    ]
    return here if lost else None


def _env(spec: RunSpec, name: str, value: str, *, unsafe: bool = False) -> Experiment:
    env = dict(spec.env)
    env[name] = value
    note = " (unsafe: hides the conflict instead of removing it)" if unsafe else ""
    return Experiment(
        f"set {name}={value} in the environment{note}",
        "env",
        dataclasses.replace(spec, env=tuple(sorted(env.items()))),
        unsafe=unsafe,
    )


def _unique(planned: list[Experiment]) -> list[Experiment]:
    seen: set[RunSpec] = set()
    out = []
    for experiment in planned:
        if experiment.spec not in seen:
            seen.add(experiment.spec)
            out.append(experiment)
    return out


def _candidates(verdict: Verdict, evidence: Evidence, family: str) -> list[str]:
    """Copies of ``family`` involved, in load order (the first loaded first)."""
    paths = [lib.path for lib in verdict.libraries if lib.family == family]
    paths += [p for p, (f, _r) in evidence.runtimes.items() if f == family]
    ordered = sorted(dedupe(os.path.realpath(p) for p in paths), key=evidence.order_of)
    return ordered[:MAX_CANDIDATES]


def run_experiments(
    planned: Sequence[Experiment], reference: RunResult, runner: Runner
) -> list[AvoidedBy]:
    """Run each planned experiment (until the run budget is spent) and record what it did;
    one that is another route to an earlier experiment that avoided the failure is not run
    (the advice has a verified way already)."""
    tried: list[AvoidedBy] = []
    for experiment in planned:
        if any(t.avoided and t.change == experiment.alternative_to for t in tried):
            continue
        try:
            result = runner(experiment.spec)
        except CapReached:
            log.info("experiments stopped at the child-run cap after %d", len(tried))
            break
        avoided = avoids(result, reference)
        late = None if avoided else failed_in_workload(result, experiment.workloads)
        tried.append(
            AvoidedBy(
                change=experiment.change,
                kind=experiment.kind,
                outcome=result.outcome,
                unsafe=experiment.unsafe,
                avoided=avoided,
                signal=result.signal,
                effect=_late_effect(result, late) if late else effect(result, reference),
                workloads=tuple(step_label(w) for w in experiment.workloads),
            )
        )
    return tried


def failed_in_workload(result: RunResult, added: Sequence[str]) -> str | None:
    """When an experiment's run got through every import and failed once the workloads it
    was given ran: the step (or phase) it failed in; else None."""
    if not added:
        return None
    step = result.failed_step
    if isinstance(step, int) and 0 <= step < len(result.spec.steps):
        text = result.spec.steps[step]
        return step_label(text) if text in added else None
    if result.phase in ("exercise", "exit") and result.outcome in ("crashed", "failed", "hung"):
        return "the probes after the workloads" if result.phase == "exercise" else "exit"
    return None


def _late_effect(result: RunResult, where: str) -> str:
    what = result.signal if result.outcome == "crashed" and result.signal else result.outcome
    return f"fails once the workloads run ({what} in {where})"


def avoids(result: RunResult, reference: RunResult) -> bool:
    """Did a variant avoid the failure of ``reference``?

    A crash, error or hang is avoided when the variant survives (``passed``, or ``latent``:
    alive with two copies mapped); a latent duplicate only when the variant ``passed``.
    A variant that could not start avoided nothing.
    """
    if reference.outcome == "latent":
        return result.outcome == "passed"
    return result.outcome in ("passed", "latent")


_SEVERITY = {"passed": 0, "latent": 1, "failed": 2, "hung": 3, "crashed": 3}


def effect(result: RunResult, reference: RunResult) -> str:
    """In words, what an experiment did beyond avoiding or keeping the failure: it could not
    start (with the loader's message), or it made things worse (latent -> SIGSEGV in ...)."""
    if result.outcome == "could-not-start":
        return f"could-not-start: {result.message}"
    if _SEVERITY.get(result.outcome, 0) <= _SEVERITY.get(reference.outcome, 0):
        return ""
    if result.outcome == "crashed":
        where = backtrace_library(result) or result.crash_library
        place = f" in {os.path.basename(where)}" if where else ""
        return f"this change makes it crash: {result.signal}{place}"
    return f"this change makes it {result.outcome}: {result.message}"
