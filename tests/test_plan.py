"""Planner: sequence covering arrays, coverage accounting and repair plans.

Coverage is checked by brute force (itertools), independently of the planner's bitsets.
"""

from __future__ import annotations

from itertools import combinations, permutations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.planning import sequence_search as plan_search
from pytest_runtimeconflict.planning import sequences as plan

module_sets = st.lists(
    st.text(alphabet="abcdefghij_", min_size=1, max_size=6), min_size=1, max_size=9
)


def covered_by(sequences: list[tuple[str, ...]], t: int) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for seq in sequences:
        found.update(combinations(seq, t))
    return found


@settings(max_examples=40, deadline=None)
@given(modules=module_sets, strength=st.integers(min_value=1, max_value=3))
def test_every_ordered_tuple_is_covered(modules: list[str], strength: int) -> None:
    names = sorted(set(modules))
    t = min(strength, len(names))
    sequences = plan.plan_sequences(modules, strength)
    assert all(sorted(seq) == names for seq in sequences)
    assert covered_by(sequences, t) == set(permutations(names, t))
    assert plan.plan_sequences(list(reversed(modules)), strength) == sequences


def test_deterministic_across_calls_and_seeds_differ() -> None:
    modules = [f"mod{i}" for i in range(12)]
    first = plan.plan_sequences(modules, 3, seed=1)
    plan._plan_cached.cache_clear()
    plan_search.plan_indices.cache_clear()
    assert plan.plan_sequences(modules, 3, seed=1) == first
    assert plan.plan_sequences(modules, 3, seed=2) != first


def test_strength_two_is_a_permutation_and_its_reverse() -> None:
    sequences = plan.plan_sequences(["scipy", "numpy", "torch", "numpy"], 2)
    assert sequences == [("numpy", "scipy", "torch"), ("torch", "scipy", "numpy")]


def test_strength_one_and_small_module_sets() -> None:
    assert plan.plan_sequences([], 3) == []
    assert plan.plan_sequences(["only"], 3) == [("only",)]
    assert plan.plan_sequences(["b", "a"], 3) == [("a", "b"), ("b", "a")]
    assert plan.plan_sequences(["c", "b", "a"], 1) == [("a", "b", "c")]
    # n = t = 3 needs all 3! orders
    assert sorted(plan.plan_sequences(["a", "b", "c"], 3)) == sorted(permutations("abc"))


def test_twenty_modules_strength_three_within_target() -> None:
    modules = [f"m{i:02d}" for i in range(20)]
    sequences = plan.plan_sequences(modules, 3)
    assert len(sequences) <= 15
    assert covered_by(sequences, 3) == set(permutations(sorted(modules), 3))


def test_strength_four_is_covered() -> None:
    modules = list("abcdef")
    sequences = plan.plan_sequences(modules, 4)
    assert covered_by(sequences, 4) == set(permutations(modules, 4))


@pytest.mark.parametrize("bad", [0, -1, True, "2", 2.5])
def test_bad_strength_is_a_usage_error(bad: object) -> None:
    with pytest.raises(UsageError, match="invalid strength") as info:
        plan.plan_sequences(["a", "b"], bad)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_modules_as_a_single_string_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not the string"):
        plan.plan_sequences("numpy", 2)


def test_counts_and_tuple_sets() -> None:
    assert plan.count_ordered_tuples(20, 3) == 6840
    assert plan.count_ordered_tuples(8, 2) == 56
    assert plan.count_ordered_tuples(2, 3) == 0
    assert len(plan.ordered_tuples([f"m{i}" for i in range(8)], 2)) == 56
    assert plan.tuples_covered(("a", "b", "c"), 2) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_exercised_tuples_counts_only_the_prefix() -> None:
    sequence = ("a", "b", "c", "d")
    done = plan.exercised_tuples(sequence[:2], 2)
    assert done == {("a", "b")}
    assert ("c", "d") in plan.tuples_covered(sequence, 2) - done
    assert plan.exercised_tuples(sequence[:2], 3) == set()


def test_coverage_record_json_and_summary() -> None:
    modules = [f"m{i}" for i in range(8)]
    sequences = plan.plan_sequences(modules, 2)
    full = plan.coverage_of(modules, 2, sequences)
    assert (
        full.describe() == "ordered pairs exercised: 56/56 (blocked by a conflict: 0, not run: 0)"
    )
    assert full.not_run == 0
    cut = plan.coverage_of(
        modules,
        2,
        [sequences[0][:5], sequences[1]],
        blocked={tup: "openmp-mixed" for tup in combinations(sequences[0], 2)},
    )
    data = cut.to_json()
    assert set(data) >= {"modules", "strength", "tuples_total", "tuples_exercised", "blocked"}
    exercised = 28 + 10
    assert data["tuples_exercised"] == exercised
    assert len(data["blocked"]) == 56 - exercised
    assert data["blocked"][0]["conflict"] == "openmp-mixed"
    assert data["not_run"] == 0
