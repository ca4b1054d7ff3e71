"""Benchmark the planner against a plain random greedy, in the same run.

Usage: ``python benchmarks/bench_plan.py [--seeds N]``

For n = 5, 10, 20, 40 modules and strengths 2 and 3 it prints the number of sequences the
planner returns, the number of ordered tuples they cover, the planning time (cold cache), and
the same for a plain random greedy (each step keeps the best of 10 random permutations).
Every plan is verified by brute force before its row is printed.
"""

from __future__ import annotations

import argparse
import random
import time
from itertools import combinations, permutations

from pytest_runtimeconflict.planning import sequence_search as plan_search
from pytest_runtimeconflict.planning import sequences as plan

SIZES = (5, 10, 20, 40)
STRENGTHS = (2, 3)
CANDIDATES = 10


def random_greedy(modules: list[str], t: int, seed: int) -> list[tuple[str, ...]]:
    """Baseline: repeatedly add the best of CANDIDATES random permutations."""
    rng = random.Random(seed)
    uncovered = set(permutations(modules, t))
    sequences: list[tuple[str, ...]] = []
    while uncovered:
        best: tuple[str, ...] = ()
        gain = -1
        for _ in range(CANDIDATES):
            cand = list(modules)
            rng.shuffle(cand)
            new = len(uncovered.intersection(combinations(cand, t)))
            if new > gain:
                best, gain = tuple(cand), new
        uncovered.difference_update(combinations(best, t))
        sequences.append(best)
    return sequences


def verify(sequences: list[tuple[str, ...]], modules: list[str], t: int) -> None:
    found: set[tuple[str, ...]] = set()
    for seq in sequences:
        found.update(combinations(seq, t))
    if found != set(permutations(modules, t)):
        raise SystemExit(f"coverage check failed for n={len(modules)} t={t}")


def timed_plan(modules: list[str], t: int, seed: int) -> tuple[int, float]:
    plan._plan_cached.cache_clear()
    plan_search.plan_indices.cache_clear()
    start = time.perf_counter()
    sequences = plan.plan_sequences(modules, t, seed=seed)
    elapsed = time.perf_counter() - start
    verify(sequences, modules, t)
    return len(sequences), elapsed


def timed_baseline(modules: list[str], t: int, seed: int) -> tuple[int, float]:
    start = time.perf_counter()
    sequences = random_greedy(modules, t, seed)
    elapsed = time.perf_counter() - start
    verify(sequences, modules, t)
    return len(sequences), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1, help="seeds per row (min/max shown)")
    args = parser.parse_args()
    header = (
        f"{'n':>3} {'t':>2} {'tuples':>7} {'plan':>6} {'time s':>7} "
        f"{'random':>7} {'time s':>7} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for t in STRENGTHS:
        for n in SIZES:
            modules = [f"mod{i:02d}" for i in range(n)]
            ours = [timed_plan(modules, t, seed) for seed in range(args.seeds)]
            base = [timed_baseline(modules, t, seed) for seed in range(args.seeds)]
            print(
                f"{n:>3} {t:>2} {plan.count_ordered_tuples(n, t):>7} "
                f"{_span([c for c, _ in ours]):>6} {max(s for _, s in ours):>7.2f} "
                f"{_span([c for c, _ in base]):>7} {max(s for _, s in base):>7.2f} "
                f"{sum(c for c, _ in ours) / sum(c for c, _ in base):>6.2f}"
            )
    return 0


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


if __name__ == "__main__":
    raise SystemExit(main())
