"""Plan import orders: sequence covering arrays over the modules under test.

A *sequence covering array* of strength t over n modules is a set of permutations of all the
modules such that every ordered t-tuple of distinct modules appears as a subsequence (left to
right, not necessarily adjacent) of at least one permutation (Chee, Colbourn, Horsley and Zhou,
"Sequence covering arrays", SIAM J. Discrete Math. 2013; Kuhn et al., NIST event-sequence
testing). Running each permutation as one import sequence exercises every order in which t
modules can meet.

Constructions used here:

- t = 1: one sequence; t = 2: a permutation and its reverse (optimal: two are needed).
- t = 3: a greedy that adds one permutation at a time, each improved by hill climbing (move one
  module to the slot covering the most uncovered triples; the first start of every other
  sequence is the reverse of the previous one, which covers every triple whose middle element
  sits between the other two), followed by post-optimisation in the style of Nayeri, Colbourn
  and Konjevod: drop the sequence covering the fewest unique triples, then anneal one sequence
  at a time against the triples no other sequence covers, until nothing is uncovered again.
  Uncovered triples live in per-pair bitsets (Python ints), so the gain of every insertion
  slot of a module is computed in O(n) popcounts.
- t >= 4: a best-of-candidates greedy (correct, not tuned).

Everything is deterministic for the same input: modules are sorted and de-duplicated, the
random source is ``random.Random`` seeded from (n, t, seed), and the work budgets count moves,
not seconds. Pure standard library; no pytest import.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import combinations, permutations
from typing import Callable

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model.plan import BlockedTuple, Coverage
from pytest_runtimeconflict.planning.sequence_search import plan_indices

log = logging.getLogger(__name__)

Tuple = tuple[str, ...]

_popcount: Callable[[int], int] = getattr(int, "bit_count", None) or (lambda v: bin(v).count("1"))


def plan_sequences(modules: Sequence[str], strength: int, seed: int = 0) -> list[Tuple]:
    """A small set of import sequences covering every ordered ``strength``-tuple of modules.

    Each sequence is a permutation of all the (sorted, de-duplicated) modules. ``strength``
    is clipped to the number of modules; no modules gives no sequences. Raises
    :class:`UsageError` when ``strength`` is not an integer >= 1.
    """
    names = normalise_modules(modules)
    t = _clip_strength(strength, len(names))
    return list(_plan_cached(names, t, seed))


def normalise_modules(modules: Iterable[str]) -> Tuple:
    """The modules as the planner sees them: de-duplicated and sorted."""
    if isinstance(modules, str):
        raise UsageError(f"modules must be a list of names, not the string {modules!r}")
    names = tuple(sorted(set(modules)))
    bad = [m for m in names if not isinstance(m, str) or not m]
    if bad:
        raise UsageError(f"invalid module name {bad[0]!r}: expected a non-empty string")
    return names


def count_ordered_tuples(n: int, t: int) -> int:
    """The number of ordered t-tuples of distinct elements out of n: n!/(n-t)! (0 if t > n)."""
    if n < 0 or t < 0:
        raise UsageError(f"invalid tuple count request n={n} t={t}: expected n, t >= 0")
    return math.perm(n, t)


def ordered_tuples(modules: Iterable[str], strength: int) -> set[Tuple]:
    """Every ordered tuple of distinct modules of length ``strength`` (clipped to n)."""
    names = normalise_modules(modules)
    t = _clip_strength(strength, len(names))
    return set(permutations(names, t)) if t else set()


def tuples_covered(sequence: Sequence[str], strength: int) -> set[Tuple]:
    """The ordered ``strength``-tuples that appear as subsequences of ``sequence``."""
    t = _check_strength(strength)
    return set(combinations(tuple(sequence), t))


def exercised_tuples(prefix: Sequence[str], strength: int) -> set[Tuple]:
    """The tuples a sequence exercised when it stopped early: only ``prefix`` counts.

    ``prefix`` is the list of steps that actually ran (the caller decides whether the step
    that crashed counts as having met its predecessors).
    """
    return tuples_covered(prefix, strength)


def coverage_of(
    modules: Sequence[str],
    strength: int,
    executed: Iterable[Sequence[str]],
    blocked: Mapping[Tuple, str] | None = None,
) -> Coverage:
    """Coverage from the executed prefixes of the runs and the tuples each conflict blocked.

    A tuple that some run exercised is not reported as blocked.
    """
    names = normalise_modules(modules)
    t = _clip_strength(strength, len(names)) if names else 0
    total = set(permutations(names, t)) if t else set()
    done: set[Tuple] = set()
    for prefix in executed:
        done |= tuples_covered(prefix, t) if t else set()
    done &= total
    kept = [
        BlockedTuple(tuple(tup), name)
        for tup, name in sorted((blocked or {}).items())
        if tuple(tup) in total and tuple(tup) not in done
    ]
    return Coverage(names, t, len(total), len(done), tuple(kept))


# --------------------------------------------------------------------------- validation


def _check_strength(strength: int) -> int:
    if isinstance(strength, bool) or not isinstance(strength, int) or strength < 1:
        raise UsageError(f"invalid strength {strength!r}: expected an integer >= 1")
    return strength


def _clip_strength(strength: int, n: int) -> int:
    return min(_check_strength(strength), n)


# --------------------------------------------------------------------------- dispatch


@lru_cache(maxsize=64)
def _plan_cached(names: Tuple, t: int, seed: int) -> tuple[Tuple, ...]:
    return tuple(tuple(names[i] for i in seq) for seq in plan_indices(len(names), t, seed))
