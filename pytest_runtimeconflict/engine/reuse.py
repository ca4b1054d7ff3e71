"""One plan item's child runs, each made once: a spec the item already ran (a planned run, a
minimisation candidate, a counter-experiment, an owner check) is answered from that run.

An item runs in one process, one spec after another, so what is reused never depends on
which xdist worker or CI shard ran what: the item's decisions are those it would make by
running the spec again, for the child runs it would have spent. A spec differs from another
only by its ``id`` (a label) or by asking for gdb's backtrace on a crash that the earlier run
did not read (then it runs again: the evidence needs the backtrace).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pytest_runtimeconflict.model import RunResult, RunSpec


class ItemRuns:
    """``run`` (the sandbox's), remembering each spec's result for the item's lifetime."""

    def __init__(self, run: Callable[[RunSpec], RunResult]) -> None:
        self.run = run
        self.results: dict[RunSpec, RunResult] = {}
        self.reused = 0

    def __call__(self, spec: RunSpec) -> RunResult:
        key = dataclasses.replace(spec, id="", backtrace=False)
        known = self.results.get(key)
        if known is not None and not (
            spec.backtrace and known.outcome == "crashed" and not known.spec.backtrace
        ):
            self.reused += 1
            return dataclasses.replace(known, spec=spec)
        result = self.run(spec)
        self.results[key] = result
        return result
