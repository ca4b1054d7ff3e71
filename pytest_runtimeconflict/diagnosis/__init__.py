"""Diagnosis: from one failing run to "which libraries, why, and what avoids it".

Stages, each a function of the previous one's output (one direction for the data):

1. :mod:`.minimise` - delta debugging over the steps, keeping their order, until the smallest
   ordered subsequence that still fails *the same way* (:mod:`.signature`).
2. :mod:`.evidence` and :mod:`.attribution` - the evidence of the minimal run becomes a
   :class:`~pytest_runtimeconflict.model.Verdict`: a rule from the registry, the libraries with
   their roles and distributions, the cause.
3. :mod:`.experiments` - counter-experiments relevant to the rule and the families involved,
   each run in a child on the minimal sequence with every workload of its modules (the plan's
   ``workloads`` table); :mod:`.advice` turns those that avoided the failure into the user's
   advice.

Every child run goes through one :class:`~.minimise.Runner`, which caches by spec and enforces
the cap (``max_runs``) shared by minimisation and experiments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from pytest_runtimeconflict.diagnosis.advice import advice, confidence
from pytest_runtimeconflict.diagnosis.attribution import attribute, conflict_key
from pytest_runtimeconflict.diagnosis.evidence import gather_evidence
from pytest_runtimeconflict.diagnosis.experiments import (
    Workloads,
    confirm_environment,
    plan_experiments,
    run_experiments,
)
from pytest_runtimeconflict.diagnosis.forked import replay_spec, with_replay
from pytest_runtimeconflict.diagnosis.interposition import evidence_lines
from pytest_runtimeconflict.diagnosis.minimise import CapReached, RunFn, Runner, minimise
from pytest_runtimeconflict.diagnosis.signature import failure_signature
from pytest_runtimeconflict.model import (
    AvoidedBy,
    Diagnosis,
    Evidence,
    Experiment,
    RunResult,
    RunSpec,
    Verdict,
)
from pytest_runtimeconflict.sandbox.runner import purpose, run_spec

__all__ = ["Diagnosis", "attribute", "conflict_key", "diagnose", "gather_evidence", "minimise"]

# A latent result (the process survived) is diagnosed within this many child runs unless the
# caller asks for more: minimisation and a few experiments, not a full search.
LATENT_BUDGET = 12
Guess = Callable[[Sequence[str], RunResult], Sequence[int] | None]


def diagnose(
    spec: RunSpec,
    result: RunResult,
    *,
    run: RunFn | None = None,
    max_runs: int = 40,
    experiments: bool = True,
    workloads: Workloads = (),
    guess: Guess | None = None,
    search: bool = True,
) -> Diagnosis:
    """Minimise a failing run, attribute it, and run the relevant counter-experiments.

    ``run`` runs one spec in a child (default: the sandbox's ``run_spec``); at most
    ``max_runs`` child runs in all (``LATENT_BUDGET`` for a latent result; ``cap_hit`` says
    when that cut work short). ``workloads`` (module -> its workload steps): each
    counter-experiment runs every workload of every module of its order, so a change avoids
    only when the modules' own code runs through too. ``guess``/``search``: see
    :func:`_minimised`."""
    budget = min(max_runs, LATENT_BUDGET) if result.outcome == "latent" else max_runs
    runner = Runner(run or run_spec, budget)
    runner.seed(spec, result)
    steps, minimal, traced = _minimised(spec, result, runner, guess, search)
    evidence = _evidence(dataclasses.replace(spec, steps=steps), minimal, result, traced, runner)
    verdict = _with_load_mode(attribute(evidence), steps)
    tried: list[AvoidedBy] = []
    planned: list[Experiment] = []
    restored = ""  # the advice when restoring a variable an import changed avoided it
    if experiments and result.outcome != "passed":
        minimal_spec = dataclasses.replace(spec, steps=steps)
        planned = plan_experiments(minimal_spec, evidence, verdict, workloads)
        with purpose("counter-experiments"):
            tried = run_experiments(planned, minimal, runner)
        verdict, restored = confirm_environment(minimal_spec, evidence, verdict, tried)
    return Diagnosis(
        minimal_steps=steps,
        minimal_result=minimal,
        runs_used=runner.used,
        cap_hit=runner.cap_hit,
        experiments=tuple(tried),
        libraries=verdict.libraries,
        findings=verdict.findings,
        rule=verdict.rule,
        confidence=confidence(verdict, tried),
        cause=verdict.cause,
        author_advice=verdict.author_advice,
        user_advice=restored or advice(verdict, evidence, tried, experiments, bool(planned)),
        key=verdict.key,
        evidence_lines=tuple(evidence_lines(evidence, [lib.path for lib in verdict.libraries])),
    )


def _minimised(
    spec: RunSpec, result: RunResult, runner: Runner, guess: Guess | None, search: bool
) -> tuple[tuple[str, ...], RunResult, RunResult | None]:
    """The minimal steps, their run, and that run under the loader's binding trace; without
    ``search`` (the caller knows there is nothing to drop) the run as it is, traced."""
    steps, minimal = tuple(spec.steps), result
    if search:
        with purpose("minimisation"):
            steps, minimal = minimise(spec, result, runner, guess)
    with purpose("binding traces"):
        traced = _traced(dataclasses.replace(spec, steps=steps), minimal, runner)
    return steps, minimal, traced


def _traced(spec: RunSpec, minimal: RunResult, runner: Runner) -> RunResult | None:
    """The minimal order once more under the loader's binding trace (one child run), when it
    crashed or failed: which object's references another distribution's copy served.

    Kept when it failed the same way, or when it ran every step and passed: a crash that does
    not recur every time (threads, timing) leaves the loader's symbol resolution as it was,
    since that depends only on the objects and their load order and mode. A run that failed
    otherwise (earlier, or another error) is dropped: its bindings may miss what led to the
    failure."""
    if minimal.outcome not in ("crashed", "failed"):
        runner.reserve = 0  # the experiments may spend it
        return None
    traced = runner.reserved(dataclasses.replace(spec, trace_bindings=True))
    if traced is None:
        return None
    if traced.outcome in ("passed", "latent"):
        return traced
    return traced if failure_signature(traced) == failure_signature(minimal) else None


def _evidence(
    spec: RunSpec,
    minimal: RunResult,
    result: RunResult,
    traced: RunResult | None,
    runner: Runner,
) -> Evidence:
    """The evidence of the minimal run ``spec``, with its binding trace ``traced`` and, when
    a step of it forks, what the fork probe saw replaying that fork."""
    with purpose("fork probes"):
        forked = _fork_replay(spec, minimal, runner)
    return gather_evidence(forked, result, traced)


def _fork_replay(spec: RunSpec, minimal: RunResult, runner: Runner) -> RunResult:
    """``minimal`` with what the fork probe saw when a step of it forks and the run hung or
    failed from there: the steps before that step, run with the probe (one child run), show
    the parent's threads at fork time and where the forked child waits
    (:func:`.forked.replay_spec`)."""
    replay = replay_spec(spec, minimal)
    if replay is None:
        return minimal
    try:
        return with_replay(minimal, runner(replay))
    except CapReached:
        return minimal


def _with_load_mode(verdict: Verdict, steps: tuple[str, ...]) -> Verdict:
    """Say so when a step of the minimal order put a copy's symbols in the global scope."""
    if verdict.rule == "cxx-symbol-duplicate" and any("RTLD_GLOBAL" in s for s in steps):
        if "RTLD_GLOBAL" in verdict.cause:
            return verdict
        return dataclasses.replace(
            verdict,
            cause=verdict.cause
            + "; a step loads modules with RTLD_GLOBAL, so the first copy's symbols interpose "
            "on every later object",
        )
    return verdict
