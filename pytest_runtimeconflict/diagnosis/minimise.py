"""Minimisation: a failing run's steps dropped one by one (a handful of steps) or by delta
debugging (ddmin, more steps), keeping their order, down to the smallest ordered subsequence
that still fails the same way. Every child run goes through one :class:`Runner`, which caches
by spec and enforces the diagnosis's run budget."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from pytest_runtimeconflict.diagnosis.signature import fails_same_way, failure_signature
from pytest_runtimeconflict.model import RunResult, RunSpec
from pytest_runtimeconflict.vocabulary import is_import_step

log = logging.getLogger(__name__)

T = TypeVar("T")
# Up to this many steps, minimisation drops them one by one (at most one run each); beyond,
# ddmin's halving finds a small failing core in fewer runs.
ONE_BY_ONE_MAX = 8
GUESS_MIN = 4  # the scan's guess is tried first on more steps than this
RunFn = Callable[[RunSpec], RunResult]


class CapReached(Exception):
    """The child-run budget of one diagnosis is spent."""


class Runner:
    """Runs specs in children, once each (cached by spec), at most ``max_runs`` times.

    Searching needs only each run's outcome, so runs go without gdb on a crash's core
    (``RunSpec.backtrace``); :meth:`full` re-runs the one result the evidence reads (the
    minimal order's) with it."""

    def __init__(self, run: RunFn, max_runs: int) -> None:
        self.run = run
        self.max_runs = max(0, int(max_runs))
        self.used = 0
        self.cap_hit = False
        self.cache: dict[RunSpec, RunResult] = {}
        # one run kept back for the binding trace when the budget allows a real search
        self.reserve = 1 if self.max_runs >= 4 else 0

    def seed(self, spec: RunSpec, result: RunResult) -> None:
        self.cache[spec] = result

    def reserved(self, spec: RunSpec) -> RunResult | None:
        """Run ``spec`` on the run kept back for it (the binding trace of the minimal order:
        minimisation cannot spend it); None when the budget leaves none."""
        if spec in self.cache:
            return self.cache[spec]
        if self.reserve <= 0 or self.used >= self.max_runs:
            return None
        self.reserve -= 1
        self.used += 1
        return self._light_run(spec)

    def __call__(self, spec: RunSpec) -> RunResult:
        if spec in self.cache:
            return self.cache[spec]
        if self.used >= self.max_runs - self.reserve:
            self.cap_hit = True
            raise CapReached(f"child-run cap of {self.max_runs} reached")
        self.used += 1
        log.debug("diagnosis run %d/%d: %s", self.used, self.max_runs, spec.steps)
        return self._light_run(spec)

    def _light_run(self, spec: RunSpec) -> RunResult:
        result = self.run(dataclasses.replace(spec, backtrace=False))
        self.cache[spec] = result
        return result

    def full(self, spec: RunSpec) -> RunResult:
        """``spec``'s result with the whole post-mortem: the cached one when it has it (or
        did not crash), else one more run with gdb, kept when it fails the same way (a crash
        that does not recur every time keeps the first result, without a backtrace).
        Not counted against the cap (it replaces a run the search already made), but not
        made once the search hit the cap."""
        result = self(spec)
        if result.outcome != "crashed" or result.spec.backtrace or not spec.backtrace:
            return result
        if self.cap_hit:
            return result  # the cap stands: the evidence goes without the backtrace
        self.used += 1
        again = self.run(spec)
        if failure_signature(again) == failure_signature(result):
            self.cache[spec] = again
            return again
        return result


def ddmin(items: Sequence[T], fails: Callable[[Sequence[T]], bool]) -> list[T]:
    """Zeller's delta debugging: a 1-minimal ordered subsequence of ``items`` that ``fails``.

    ``items`` itself is assumed to fail. Subsets keep the original order. If ``fails`` raises
    :class:`CapReached` the smallest failing subsequence found so far is returned.
    """
    current = list(items)
    granularity = 2
    try:
        while len(current) >= 2:
            chunks = _split(current, granularity)
            reduced = _try_chunks(chunks, fails)
            if reduced is not None:
                current, granularity = reduced, 2
                continue
            if granularity > 2:
                reduced = _try_complements(current, chunks, fails)
                if reduced is not None:
                    current, granularity = reduced, max(granularity - 1, 2)
                    continue
            if granularity >= len(current):
                break
            granularity = min(len(current), granularity * 2)
    except CapReached:
        log.info("minimisation stopped at the child-run cap; %d steps left", len(current))
    return current


def one_by_one(
    items: Sequence[T], fails: Callable[[Sequence[T]], bool], keep: Iterable[T] = ()
) -> list[T]:
    """Each item in turn, last to first, dropped when the rest still ``fails``: one pass, at
    most one run per item (ddmin spends two to three times that on a handful of steps: halves,
    then single items, then complements). Last to first, a step that uses what an earlier one
    defines is dropped before the one it needs is tried. ``keep``: items never dropped (the
    step whose own exception the failure is). ``items`` is assumed to fail; on
    :class:`CapReached` the smallest failing subsequence found so far is returned."""
    current, kept = list(items), set(keep)
    try:
        for item in reversed(items):
            if len(current) < 2 or item in kept:
                continue
            candidate = [x for x in current if x != item]
            if fails(candidate):
                current = candidate
    except CapReached:
        log.info("minimisation stopped at the child-run cap; %d steps left", len(current))
    return current


def _split(items: list[T], parts: int) -> list[list[T]]:
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        chunks.append(items[start:end])
        start = end
    return [c for c in chunks if c]


def _try_chunks(chunks: list[list[T]], fails: Callable[[Sequence[T]], bool]) -> list[T] | None:
    for chunk in chunks:
        if fails(chunk):
            return chunk
    return None


def _try_complements(
    current: list[T], chunks: list[list[T]], fails: Callable[[Sequence[T]], bool]
) -> list[T] | None:
    for index in range(len(chunks)):
        complement = [x for i, c in enumerate(chunks) if i != index for x in c]
        if fails(complement):
            return complement
    return None


def minimise(
    spec: RunSpec,
    result: RunResult,
    runner: Runner,
    guess: Callable[[Sequence[str], RunResult], Sequence[int] | None] | None = None,
) -> tuple[tuple[str, ...], RunResult]:
    """The smallest ordered subsequence of ``spec.steps`` failing like ``result``, and its run.

    Steps after the one that failed never ran, so they are dropped without a run. A candidate
    that fails differently (e.g. a ``NameError`` because the import a statement needs was
    dropped) counts as "not the same failure". ``guess(steps, result)``: the indices of the
    steps the failure can involve (by the scan: the modules related to the failing step's, or
    those mapping the runtime copies or crash library the run names), or None; tried first,
    one child run (on more than ``GUESS_MIN`` steps), and the search goes on from it when it
    fails the same way.
    """
    steps = tuple(spec.steps)
    if result.outcome == "passed" or len(steps) == 0:
        return steps, result
    failed = result.failed_step
    indices = list(range(len(steps)))
    if isinstance(failed, int) and 0 <= failed < len(steps):
        indices = indices[: failed + 1]
    reference = failure_signature(result)

    def fails(subset: Sequence[int]) -> bool:
        candidate = dataclasses.replace(spec, steps=tuple(steps[i] for i in subset))
        return fails_same_way(runner(candidate), reference)

    if len(indices) < len(steps):
        # The truncated sequence ran identically; record it under its own spec (no child run).
        _alias(runner, dataclasses.replace(spec, steps=tuple(steps[i] for i in indices)), result)
    # A guess costs a run when it is wrong; on a handful of steps, dropped one by one, a right
    # one saves at most one.
    guessed = guess(steps, result) if guess is not None and len(indices) > GUESS_MIN else None
    if guessed is not None:
        indices = _guessed(indices, list(guessed), fails, keep_last=failed is not None)
    if len(indices) <= ONE_BY_ONE_MAX:
        kept = one_by_one(indices, fails, keep=_needed_step(result))
    else:
        kept = ddmin(indices, fails)
    minimal_steps = tuple(steps[i] for i in kept)
    minimal_spec = dataclasses.replace(spec, steps=minimal_steps)
    try:
        return minimal_steps, runner.full(minimal_spec)
    except CapReached:
        return minimal_steps, result


def _needed_step(result: RunResult) -> list[int]:
    """The failing step when no candidate without it can fail the same way: a Python
    exception its own code raised. A crash or an abort can come back without it, from the
    runtime probes after the steps (a second OpenMP runtime aborts at its first parallel
    region, whichever call makes it), and the minimal order then needs no call at all."""
    failed = result.failed_step
    if isinstance(failed, int) and result.outcome == "failed" and result.exception_type:
        return [failed]
    return []


def _guessed(
    indices: list[int],
    guessed: list[int],
    fails: Callable[[Sequence[int]], bool],
    keep_last: bool,
) -> list[int]:
    """``guessed`` (within ``indices``; the failing step kept when there is one) when it is
    smaller and fails the same way; else ``indices``."""
    picked = sorted(set(guessed) & set(indices) | ({indices[-1]} if keep_last else set()))
    if not picked or len(picked) >= len(indices):
        return indices
    try:
        return picked if fails(picked) else indices
    except CapReached:
        return indices


def _alias(runner: Runner, spec: RunSpec, result: RunResult) -> None:
    runner.seed(spec, result)


def reversed_imports(
    steps: Sequence[str], eligible: Iterable[int] | None = None
) -> tuple[str, ...] | None:
    """The steps with the import steps in reverse order, in the slots imports held; None if
    there are fewer than two imports (nothing to reorder). ``eligible`` limits the reordering
    to those step indices (the imports that mapped native code)."""
    allowed = set(range(len(steps))) if eligible is None else set(eligible)
    positions = [i for i, step in enumerate(steps) if is_import_step(step) and i in allowed]
    if len(positions) < 2:
        return None
    out = list(steps)
    for slot, source in zip(positions, reversed(positions)):
        out[slot] = steps[source]
    return tuple(out)
