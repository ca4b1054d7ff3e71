"""The same failure again within one item: a later run of an item that fails the way an
earlier run of it did is that conflict again, not diagnosed twice. No pytest import."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from pytest_runtimeconflict.model import Diagnosis, RunResult, RunSpec


@dataclasses.dataclass(frozen=True)
class Diagnosed:
    """A failure one item diagnosed: what a later run of the item is compared with."""

    signature: tuple[str, ...]
    place: str
    modules: frozenset[str]
    loads: tuple[Any, ...]
    minimal: tuple[str, ...]
    key: str
    run_id: str
    libraries: frozenset[str] = frozenset()  # the conflict's libraries (real paths)


@dataclasses.dataclass
class ItemFailures:
    """The failures an item diagnosed. A later run of the item that fails the same way (the
    same failure signature) is that conflict again, not diagnosed twice, when it imported the
    same modules under the same RTLD_GLOBAL imports (another order of them), or when it holds
    an earlier run's minimal order (as a subsequence of its steps, loaded the same way) and
    failed at the same place (the same step, or the same runtime probe after the steps): a
    repair of a sequence meets a conflict that strikes after the imports again and again; or,
    with ``by_libraries`` (a target item: its runs are about the same libraries), when it
    failed at the same place having mapped the conflict's libraries (the same conflict under
    another of the item's orders or load modes)."""

    found: list[Diagnosed] = dataclasses.field(default_factory=list)
    by_libraries: bool = False

    def add(
        self, spec: RunSpec, result: RunResult, order: Sequence[str], diagnosis: Diagnosis
    ) -> None:
        self.found.append(
            Diagnosed(
                signature_of(result), failure_place(spec, result), frozenset(order),
                _loads(spec), tuple(diagnosis.minimal_steps), diagnosis.key, str(spec.id),
                frozenset(os.path.realpath(lib.path) for lib in diagnosis.libraries),
            )
        )  # fmt: skip

    def match(self, spec: RunSpec, result: RunResult, order: Sequence[str]) -> Diagnosed | None:
        signature, place, loads = (
            signature_of(result),
            failure_place(spec, result),
            _loads(spec),
        )
        for earlier in self.found:
            if earlier.signature != signature:
                continue
            same_globals = earlier.loads[0] == loads[0]  # _loads: global imports first
            if earlier.modules == frozenset(order) and same_globals:
                return earlier
            held = earlier.loads == loads and _subsequence(earlier.minimal, spec.steps)
            if held and earlier.place == place:
                return earlier
            if self.by_libraries and earlier.place == place and _met_again(earlier, result):
                return earlier
        return None

    def by_id(self, run_id: Any) -> Diagnosed | None:
        return next((d for d in self.found if d.run_id == run_id), None)


def _met_again(earlier: Diagnosed, result: RunResult) -> bool:
    mapped = {os.path.realpath(p) for p in result.mapped}
    return bool(earlier.libraries) and earlier.libraries <= mapped


def signature_of(result: RunResult) -> tuple[str, ...]:
    """What "fails the same way" compares (imported on first use: the diagnosis package
    brings the sandbox with it)."""
    from pytest_runtimeconflict.diagnosis.signature import failure_signature

    return failure_signature(result)


def failure_place(spec: RunSpec, result: RunResult) -> str:
    """Where a run failed: its failing step, else the phase (and the runtime probe running)."""
    from pytest_runtimeconflict.planning.workloads import probe_label

    if result.failed_step is not None and 0 <= result.failed_step < len(spec.steps):
        return spec.steps[result.failed_step]
    return f"{result.phase}: {probe_label(result.phase, result.exercised)}"


def _loads(spec: RunSpec) -> tuple[Any, ...]:
    return (
        frozenset(spec.global_imports),
        tuple(spec.preload),
        tuple(spec.ld_preload),
        tuple(spec.env),
    )


def _subsequence(part: Sequence[str], whole: Sequence[str]) -> bool:
    rest = iter(whole)
    return all(any(step == s for s in rest) for step in part)
