"""The search behind :func:`pytest_runtimeconflict.planning.sequences.plan_sequences`: sequence covering
arrays in index space (modules are 0..n-1), built by greedy construction, hill climbing and
annealing under move budgets (see the plan module's docstring for the constructions)."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from functools import lru_cache
from itertools import combinations, permutations
from typing import Callable

from pytest_runtimeconflict.errors import UsageError

log = logging.getLogger(__name__)

# Above this many ordered tuples the generic (t >= 4) greedy becomes too slow to be useful.
MAX_GENERIC_TUPLES = 200_000

_popcount: Callable[[int], int] = getattr(int, "bit_count", None) or (lambda v: bin(v).count("1"))

# Post-optimisation effort for t = 3, counted in module moves (never in seconds, so the plan is
# identical on every machine and xdist worker). Calibrated on 2 cores: n=20 ~0.6 s, n=40 ~1.5 s.
_MOVE_BUDGET = 32_000
_MOVE_BUDGET_FACTOR = 1_280_000  # larger n: budget shrinks like 1/n (each move costs O(n))
_ATTEMPT_MIN_MOVES = 6_000
_ANNEAL_TEMPERATURE = 0.15
_ROUND_MOVES = 5  # moves per annealed sequence before switching, times n


# --------------------------------------------------------------------------- public API


@lru_cache(maxsize=64)
def plan_indices(n: int, t: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """The covering sequences over 0..n-1 (the construction depends only on n, t, seed)."""
    if n == 0 or t == 0:
        return ()
    if t == 1:
        return (tuple(range(n)),)
    if t == 2:
        return (tuple(range(n)), tuple(range(n - 1, -1, -1)))
    rng = random.Random(seed * 1_000_003 + n * 101 + t)
    if t == 3:
        seqs = _reduce_triples(_greedy_triples(n, rng), n, rng)
    else:
        if math.perm(n, t) > MAX_GENERIC_TUPLES:
            raise UsageError(
                f"strength {t} over {n} modules means {math.perm(n, t)} ordered "
                f"tuples: too many to plan; use strength 3 or fewer modules"
            )
        seqs = _greedy_generic(n, t, rng)
    log.debug("planned %d sequences for n=%d t=%d seed=%d", len(seqs), n, t, seed)
    return tuple(tuple(s) for s in seqs)


# --------------------------------------------------------------------------- t = 3 engine
#
# Uncovered triples (a, b, c) are stored twice, as Python-int bitsets:
#   first[a*n + b] has bit c set  and  last[b*n + c] has bit a set.
# A permutation covers (a, b, c) iff pos(a) < pos(b) < pos(c).


def _all_triples(n: int) -> list[int]:
    return list(_all_triples_cached(n))


@lru_cache(maxsize=8)
def _all_triples_cached(n: int) -> tuple[int, ...]:
    full = (1 << n) - 1
    masks = [0] * (n * n)
    for a in range(n):
        for b in range(n):
            if a != b:
                masks[a * n + b] = full & ~(1 << a) & ~(1 << b)
    return tuple(masks)


def _count(masks: list[int]) -> int:
    return sum(map(_popcount, masks))


def _side_masks(seq: Sequence[int]) -> tuple[list[int], list[int]]:
    """before[k]: bits of seq[:k]; after[k]: bits of seq[k:] (both of length len(seq) + 1)."""
    m = len(seq)
    before = [0] * (m + 1)
    acc = 0
    for k, y in enumerate(seq):
        before[k] = acc
        acc |= 1 << y
    before[m] = acc
    after = [0] * (m + 1)
    acc = 0
    for k in range(m - 1, -1, -1):
        after[k + 1] = acc
        acc |= 1 << seq[k]
    after[0] = acc
    return before, after


def _insertion_gains(
    rest: list[int], x: int, first: list[int], last: list[int], n: int
) -> list[int]:
    """gains[k] = uncovered triples involving x covered when x is inserted before rest[k]."""
    pop = _popcount
    m = len(rest)
    before, after = _side_masks(rest)
    xn = x * n
    tail = [0] * (m + 1)  # triples (x, b, c) with b, c after the slot
    acc = 0
    for k in range(m - 1, -1, -1):
        acc += pop(after[k + 1] & first[xn + rest[k]])
        tail[k] = acc
    gains = [0] * (m + 1)
    gains[0] = tail[0]
    head = mid = 0  # triples (a, b, x) before the slot; (a, x, c) around it
    for k in range(m):
        yn = rest[k] * n
        head += pop(before[k] & last[yn + x])
        mid += pop(after[k + 1] & first[yn + x]) - pop(before[k] & last[xn + rest[k]])
        gains[k + 1] = head + mid + tail[k + 1]
    return gains


def _climb(
    seq: list[int], first: list[int], last: list[int], n: int, rng: random.Random
) -> list[int]:
    """Move one module at a time to its best slot until no move covers more triples."""
    seq = list(seq)
    improved = True
    while improved:
        improved = False
        order = list(range(n))
        rng.shuffle(order)
        for x in order:
            i = seq.index(x)
            rest = seq[:i] + seq[i + 1 :]
            gains = _insertion_gains(rest, x, first, last, n)
            best = max(gains)
            if best > gains[i]:
                slots = [k for k, g in enumerate(gains) if g == best]
                rest.insert(slots[rng.randrange(len(slots))], x)
                seq = rest
                improved = True
    return seq


def _covered_count(seq: Sequence[int], first: list[int], n: int) -> int:
    _, after = _side_masks(seq)
    total = 0
    for i in range(len(seq)):
        an = seq[i] * n
        for j in range(i + 1, len(seq)):
            total += _popcount(first[an + seq[j]] & after[j + 1])
    return total


def _cover_masks(seq: Sequence[int], n: int) -> tuple[list[int], list[int]]:
    """The triples ``seq`` covers, in the same two bitset layouts as the uncovered ones."""
    before, after = _side_masks(seq)
    cf = [0] * (n * n)
    cl = [0] * (n * n)
    for i in range(len(seq)):
        an = seq[i] * n
        for j in range(i + 1, len(seq)):
            cf[an + seq[j]] = after[j + 1]
            cl[an + seq[j]] = before[i]
    return cf, cl


def _subtract(first: list[int], last: list[int], seq: Sequence[int], n: int) -> None:
    cf, cl = _cover_masks(seq, n)
    for p in range(n * n):
        first[p] &= ~cf[p]
        last[p] &= ~cl[p]


def _greedy_triples(n: int, rng: random.Random) -> list[list[int]]:
    """Add hill-climbed permutations until every ordered triple is covered."""
    first = _all_triples(n)
    last = list(first)
    restarts = 3 if n <= 30 else 2 if n <= 60 else 1
    seqs: list[list[int]] = []
    while _count(first):
        starts = [seqs[-1][::-1]] if seqs else []
        while len(starts) < restarts:
            p = list(range(n))
            rng.shuffle(p)
            starts.append(p)
        climbed = [_climb(s, first, last, n, rng) for s in starts]
        best = max(climbed, key=lambda s: _covered_count(s, first, n))
        _subtract(first, last, best, n)
        seqs.append(best)
    return seqs


# The post-optimisation recomputes "triples no other sequence covers" once per round, so it
# keeps each sequence's cover packed: one int per module holding n blocks of n bits
# (packed_first[a] has bit b*n + c for a covered (a, b, c); packed_last[b] bit c*n + a).


def _packed_cover(seq: Sequence[int], n: int) -> tuple[list[int], list[int]]:
    """The triples ``seq`` covers, packed per first (resp. middle) module: O(n) int ops."""
    before, after = _side_masks(seq)
    packed_first = [0] * n
    packed_last = [0] * n
    spread = 0  # bit c*n for every c after the current position
    block = 0  # blocks after[j + 1] << (seq[j] * n) for every j after the current position
    for i in range(len(seq) - 1, -1, -1):
        y = seq[i]
        packed_first[y] = block
        packed_last[y] = before[i] * spread  # blocks do not overlap: no carries
        block |= after[i + 1] << (y * n)
        spread |= 1 << (y * n)
    return packed_first, packed_last


@lru_cache(maxsize=8)
def _packed_all(n: int) -> tuple[int, ...]:
    masks = _all_triples_cached(n)
    return tuple(sum(masks[x * n + y] << (y * n) for y in range(n)) for x in range(n))


def _residual(
    covers: list[tuple[list[int], list[int]]], skip: int, n: int
) -> tuple[list[int], list[int]]:
    """Triples that no sequence other than ``skip`` covers, unpacked per pair."""
    seen_first = [0] * n
    seen_last = [0] * n
    for index, (cf, cl) in enumerate(covers):
        if index != skip:
            seen_first = [a | b for a, b in zip(seen_first, cf)]
            seen_last = [a | b for a, b in zip(seen_last, cl)]
    base = _packed_all(n)
    return _unpack(base, seen_first, n), _unpack(base, seen_last, n)


def _unpack(base: Sequence[int], seen: Sequence[int], n: int) -> list[int]:
    full = (1 << n) - 1
    out: list[int] = []
    for whole, covered in zip(base, seen):
        rest = whole & ~covered
        out.extend((rest >> (y * n)) & full for y in range(n))
    return out


def _anneal(
    seq: list[int], first: list[int], last: list[int], n: int, rng: random.Random, moves: int
) -> tuple[list[int], int]:
    """Simulated annealing of one sequence towards covering all of ``first``/``last``.

    Returns the sequence and how many of those triples it still leaves uncovered.
    """
    seq = list(seq)
    missing = _count(first) - _covered_count(seq, first, n)
    for _ in range(moves):
        if missing == 0:
            break
        i = rng.randrange(n)
        k = rng.randrange(n)
        if k == i:
            continue
        delta = _move_delta(seq, i, k, first, last, n)
        if delta >= 0 or rng.random() < math.exp(delta / _ANNEAL_TEMPERATURE):
            seq.insert(k, seq.pop(i))
            missing -= delta
    return seq, missing


def _move_delta(seq: list[int], i: int, k: int, first: list[int], last: list[int], n: int) -> int:
    """Change in covered triples when seq[i] moves to index k (only the passed span counts)."""
    pop = _popcount
    x = seq[i]
    xn = x * n
    lo = min(i, k)
    span = seq[i + 1 : k + 1] if k > i else seq[k:i]
    before = 0
    for y in seq[:lo]:
        before |= 1 << y
    others = ((1 << n) - 1) & ~(1 << x)
    total = 0
    for y in span:
        yn = y * n
        yb = 1 << y
        after = others & ~before & ~yb
        total += pop(before & last[yn + x]) + pop(after & first[yn + x])
        total -= pop(before & last[xn + y]) + pop(after & first[xn + y])
        before |= yb
    return total if k > i else -total


def _move_budget(n: int) -> int:
    return min(_MOVE_BUDGET, _MOVE_BUDGET_FACTOR // n)


def _reduce_triples(seqs: list[list[int]], n: int, rng: random.Random) -> list[list[int]]:
    """Post-optimisation: drop one sequence at a time while annealing can re-cover its triples."""
    budget = _move_budget(n)
    while len(seqs) > 6 and budget > 0:  # 3! = 6 sequences are always needed
        attempt, used = _drop_one(seqs, n, rng, min(budget, max(_ATTEMPT_MIN_MOVES, 75 * n * n)))
        budget -= used
        if attempt is None:
            break
        seqs = attempt
    return seqs


def _drop_one(
    seqs: list[list[int]], n: int, rng: random.Random, budget: int
) -> tuple[list[list[int]] | None, int]:
    """Try to cover everything with one sequence fewer within ``budget`` moves."""
    covers = [_packed_cover(s, n) for s in seqs]
    unique = [_count(_residual(covers, i, n)[0]) for i in range(len(seqs))]
    drop = unique.index(min(unique))
    trial = [list(s) for i, s in enumerate(seqs) if i != drop]
    covers = [c for i, c in enumerate(covers) if i != drop]
    per_round = _ROUND_MOVES * n
    used = 0
    while used < budget:
        index = rng.randrange(len(trial))
        first, last = _residual(covers, index, n)
        trial[index], missing = _anneal(trial[index], first, last, n, rng, per_round)
        covers[index] = _packed_cover(trial[index], n)
        used += per_round
        if missing == 0:
            return trial, used
    return None, used


# --------------------------------------------------------------------------- t >= 4


def _greedy_generic(n: int, t: int, rng: random.Random) -> list[list[int]]:
    """Best-of-candidates greedy for any strength (each step covers at least one new tuple).

    Candidates are hill-climbed like the t = 3 engine (one module moved to its best slot)
    when that is affordable, here by plain set look-ups instead of bitsets.
    """
    uncovered = set(permutations(range(n), t))
    # climbing costs ~ n^2 C(n-1, t-1) look-ups per sweep, times ~t! sequences: keep it ~1 s
    climb = n * n * math.comb(n - 1, t - 1) * math.factorial(t) <= 30_000
    seqs: list[list[int]] = []
    while uncovered:
        candidates = [_around(min(uncovered), n, rng)]
        if seqs:
            candidates.append(seqs[-1][::-1])
        for _ in range(2 if climb else 12):
            p = list(range(n))
            rng.shuffle(p)
            candidates.append(p)
        if climb:
            candidates = [_climb_generic(c, t, uncovered, rng) for c in candidates]
        best = max(candidates, key=lambda s: len(uncovered.intersection(combinations(s, t))))
        uncovered.difference_update(combinations(best, t))
        seqs.append(best)
    return seqs


def _climb_generic(
    seq: list[int], t: int, uncovered: set[tuple[int, ...]], rng: random.Random
) -> list[int]:
    """Move one module at a time to the slot covering the most uncovered tuples."""
    seq = list(seq)
    improved = True
    while improved:
        improved = False
        order = list(seq)
        rng.shuffle(order)
        for x in order:
            i = seq.index(x)
            rest = seq[:i] + seq[i + 1 :]
            gains = [_gain_at(rest, x, k, t, uncovered) for k in range(len(seq))]
            k = gains.index(max(gains))
            if gains[k] > gains[i]:
                rest.insert(k, x)
                seq = rest
                improved = True
    return seq


def _gain_at(rest: list[int], x: int, k: int, t: int, uncovered: set[tuple[int, ...]]) -> int:
    """Uncovered tuples containing x that ``rest`` with x inserted at index k covers."""
    total = 0
    for combo in combinations(range(len(rest)), t - 1):
        j = sum(1 for c in combo if c < k)
        tup = tuple(rest[c] for c in combo[:j]) + (x,) + tuple(rest[c] for c in combo[j:])
        total += tup in uncovered
    return total


def _around(tup: tuple[int, ...], n: int, rng: random.Random) -> list[int]:
    """A random permutation rearranged so that ``tup`` appears in order."""
    p = list(range(n))
    rng.shuffle(p)
    slots = sorted(p.index(x) for x in tup)
    for slot, x in zip(slots, tup):
        p[slot] = x
    return p


# --------------------------------------------------------------------------- repair helpers
