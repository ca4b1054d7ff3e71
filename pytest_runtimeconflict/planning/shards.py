"""CI matrix sharding: which plan items one job of ``--rc-shard=K/N`` runs.

Every job collects the same items (planned sequences and scenario-file runs) and computes the
same split, so the N shards together run each item exactly once. The split balances the
*expected cost* of the items (greedy longest-first onto the least loaded shard), ordered by
node id and cost only, never by collection order or timing, so it is identical on every job.
Duplicates across shards are settled as across xdist workers: a plan item re-runs the prefix of
the earlier sequence that would own its conflict (``engine.owners.earlier_owner``), whatever shard
that sequence is in.

The plan's *identity* (a hash of the modules, the strength and every item's node id) is
recorded in each shard's report, so ``merge`` can check that the reports belong to one plan.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.vocabulary import PLAN_NODE, JsonObject

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")

# Expected cost in milliseconds of child time (integers, so the split is exact on every job).
# One child run: an interpreter start plus its imports.
_CHILD_START_MS = 150
_STEP_MS = 30
# A failure is minimised and counter-experiments are tried: up to --rc-max-runs runs; the zoo's
# conflicts take 13 or 14 (runs_used in their reports).
_DIAGNOSIS_RUNS = 12


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (both 1-based, as written: ``--rc-shard=2/3``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def to_json(self) -> dict[str, int]:
        return {"index": self.index, "count": self.count}


def parse_shard(flag: str, value: str, where: str) -> Shard | None:
    """``K/N`` with 1 <= K <= N; empty means no sharding. UsageError naming the value."""
    if not str(value).strip():
        return None
    match = _SHARD.fullmatch(str(value))
    if match:
        index, count = int(match.group(1)), int(match.group(2))
        if 1 <= index <= count:
            return Shard(index, count)
    raise UsageError(f"invalid {flag} {value!r} ({where}): expected K/N with 1 <= K <= N")


def is_plan_node(nodeid: str) -> bool:
    """A planned sequence (``runtime-conflicts::a>b``) or a scenario-file run
    (``dir/scenario.toml::run``, ``x.scenario.toml::run``): what a shard splits."""
    return nodeid.startswith(PLAN_NODE + "::") or nodeid.split("::", 1)[0].endswith("scenario.toml")


def child_run_ms(steps: int) -> int:
    """Expected milliseconds of one child run of ``steps`` steps."""
    return _CHILD_START_MS + _STEP_MS * max(steps, 1)


def planned_cost(steps: int) -> int:
    """A planned sequence: one run, plus a repair run (the rest of the sequence) per conflict
    that cuts it; with the outcome unknown, assume one repair per module."""
    return child_run_ms(steps) * (1 + steps)


def target_cost(lengths: Sequence[int]) -> int:
    """A target or fork item: each of its short runs once (a conflict's diagnosis comes on
    top, as for a planned sequence's repairs)."""
    return sum(child_run_ms(n) for n in lengths) * 2


def scenario_cost(steps: int, expected: str, timeout: float, max_runs: int) -> int:
    """A scenario-file run by its expected outcome: a pass is one run; a crash or error is
    diagnosed too; a hang waits out its timeout, and its minimisation waits again."""
    one = child_run_ms(steps)
    diagnosis = one * min(max_runs, _DIAGNOSIS_RUNS)
    if expected in ("crashed", "failed"):
        return one + diagnosis
    if expected == "hung":
        return int(timeout * 1000) * 2 + diagnosis
    return one


def assign(costs: Mapping[str, int], count: int) -> dict[str, int]:
    """Node id -> shard index (1-based): costliest first, each onto the least loaded shard
    (ties: the lower index). Depends only on the node ids and costs."""
    loads = [0] * count
    shards: dict[str, int] = {}
    for nodeid in sorted(costs, key=lambda n: (-costs[n], n)):
        least = min(range(count), key=lambda i: (loads[i], i))
        loads[least] += costs[nodeid]
        shards[nodeid] = least + 1
    return shards


def plan_identity(modules: Sequence[str], strength: int, nodeids: Sequence[str]) -> str:
    """A short hash of what the plan is: modules, strength and every item's node id."""
    text = json.dumps([list(modules), strength, sorted(nodeids)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ShardScope:
    """The plan's identity and the items this job runs (every item when not sharded)."""

    plan_id: str
    total: int
    shard: Shard | None
    selected: tuple[str, ...]

    def to_json(self) -> JsonObject:
        """The report keys: ``plan`` always, ``shard`` when the job is one shard."""
        data: JsonObject = {"plan": {"id": self.plan_id, "items": self.total}}
        if self.shard is not None:
            data["shard"] = {**self.shard.to_json(), "items": list(self.selected)}
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardScope:
        shard = data.get("shard")
        return cls(
            plan_id=str(data["plan"]["id"]),
            total=int(data["plan"]["items"]),
            shard=Shard(int(shard["index"]), int(shard["count"])) if shard else None,
            selected=tuple(shard["items"]) if shard else (),
        )

    @property
    def empty_shard(self) -> bool:
        """A shard that got no item (more shards than items): nothing to run is a success."""
        return self.shard is not None and not self.selected

    def describe(self) -> str:
        """The summary line of a shard: ``shard 2/3: 4 of 11 plan items (plan 1a2b...)``."""
        if self.shard is None:
            return f"plan {self.plan_id}: {self.total} item(s)"
        return (
            f"shard {self.shard}: {len(self.selected)} of {self.total} plan item(s) "
            f"(plan {self.plan_id}; merge the shards' reports with "
            "`python -m pytest_runtimeconflict merge`)"
        )


def select(
    costs: Mapping[str, int],
    modules: Sequence[str],
    strength: int,
    shard: Shard | None,
) -> ShardScope:
    """The scope of this job over the plan items ``costs`` (node id -> expected cost)."""
    plan_id = plan_identity(modules, strength, list(costs))
    if shard is None:
        return ShardScope(plan_id, len(costs), None, tuple(sorted(costs)))
    owners = assign(costs, shard.count)
    mine = tuple(sorted(n for n, k in owners.items() if k == shard.index))
    return ShardScope(plan_id, len(costs), shard, mine)
