"""Counter-experiments: changes to the minimal failing run (the reverse import order,
preloads, ``LD_PRELOAD``, environment settings) and what each did to the failure.

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
from collections.abc import Iterable, Sequence

from pytest_runtimeconflict import families as family_registry
from pytest_runtimeconflict.diagnosis.candidates import dedupe, newest_candidate, system_libraries
from pytest_runtimeconflict.diagnosis.evidence import backtrace_library, describe
from pytest_runtimeconflict.diagnosis.minimise import CapReached, Runner, reversed_imports
from pytest_runtimeconflict.model import (
    AvoidedBy,
    Evidence,
    Experiment,
    RunResult,
    RunSpec,
    Verdict,
)
from pytest_runtimeconflict.static.rules import rule_of
from pytest_runtimeconflict.vocabulary import is_import_step

log = logging.getLogger(__name__)

# At most this many candidates of one family are preloaded (each costs two child runs).
MAX_CANDIDATES = 2
# The sandbox's probes that fork after the steps, and the one that spawns instead.
FORK_PROBES = ("fork-after-workload", "fork-after-parallel")
SPAWN_PROBE = "spawn-after-workload"


def plan_experiments(spec: RunSpec, evidence: Evidence, verdict: Verdict) -> list[Experiment]:
    """The counter-experiments relevant to the failure and the families involved."""
    rule = rule_of(verdict.rule)
    if rule is not None and rule.load_independent:
        return _unique(_fork_settings(spec, evidence, verdict) + _start_method(spec))
    planned = _reverse_order(spec, evidence, verdict)
    if rule is not None and "preload-newest-soname" in rule.experiments and verdict.soname:
        newest = newest_candidate(verdict.soname, verdict.version, evidence)
        planned += _preloads(spec, [newest or verdict.soname], evidence)
    if rule is not None and "drop-global" in rule.experiments:
        planned += _drop_global(spec)
    for family in verdict.families:
        planned += _family_experiments(spec, evidence, verdict, family)
    return _unique(planned)


def _fork_settings(spec: RunSpec, evidence: Evidence, verdict: Verdict) -> list[Experiment]:
    """The settings of the verdict's families; after the fork-after-workload probe also the
    thread variables of every family the run mapped (each then tried with the real workload,
    which the probe runs again in the forked child: a package that sizes its own pool is not
    tamed by a variable it does not read)."""
    families = list(verdict.families)
    if FORK_PROBES[0] in spec.probes:
        families += sorted({family for family, _runtime in evidence.runtimes.values()})
    return [e for f in dict.fromkeys(families) for e in _settings(spec, evidence, verdict, f)]


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
        out.append(
            Experiment(
                f"preload {lib} with ctypes.CDLL(..., RTLD_GLOBAL) before the imports{note}",
                "preload",
                dataclasses.replace(base, preload=(lib, *spec.preload), preload_mode="global"),
            )
        )
        out.append(
            Experiment(
                f"start Python with {prefix}LD_PRELOAD={lib}",
                "ld_preload",
                dataclasses.replace(base, ld_preload=(lib, *spec.ld_preload)),
            )
        )
    return out


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
    """Run each planned experiment (until the run budget is spent) and record what it did."""
    tried: list[AvoidedBy] = []
    for experiment in planned:
        try:
            result = runner(experiment.spec)
        except CapReached:
            log.info("experiments stopped at the child-run cap after %d", len(tried))
            break
        tried.append(
            AvoidedBy(
                change=experiment.change,
                kind=experiment.kind,
                outcome=result.outcome,
                unsafe=experiment.unsafe,
                avoided=avoids(result, reference),
                signal=result.signal,
                effect=effect(result, reference),
            )
        )
    return tried


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
