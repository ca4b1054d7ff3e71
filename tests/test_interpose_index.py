"""``interpose.sharing_pairs`` (indexed by set operations, for speed) finds exactly the pairs a
plain reading of its rule finds, on the real objects of the zoo venv."""

from __future__ import annotations

import marshal
import os
import time
from collections import Counter
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import pytest
from zoo_support import ZooVenv

from pytest_runtimeconflict.files.atomic import unseal
from pytest_runtimeconflict.model import ObjectInfo
from pytest_runtimeconflict.static import interpose
from pytest_runtimeconflict.static.scan import scan_environment


def reference_pairs(objects: list[ObjectInfo]) -> list[tuple[str, str]]:
    """Pairs of objects of two distributions sharing a name held by at most 8 objects."""
    owned = [o for o in objects if o.distribution is not None]
    names = {id(o): interpose._symbols(o) for o in owned}
    holders: Counter[tuple[str, str]] = Counter()
    for o in owned:
        for kind, found in names[id(o)].items():
            holders.update((kind, n) for n in found)
    out = []
    for a, b in combinations(owned, 2):
        if a.distribution == b.distribution:
            continue
        first, second = (a, b) if a.path <= b.path else (b, a)
        common = any(
            holders[(kind, n)] <= 8 for kind in interpose.KINDS
            for n in names[id(a)][kind] & names[id(b)][kind]
        )  # fmt: skip
        if common and interpose.shared_symbols(first, second).total:
            out.append((first.path, second.path))
    return sorted(out)


def test_sharing_pairs_match_the_plain_rule(zoo_venv: ZooVenv) -> None:
    objects = list(scan_environment(zoo_venv.python).objects)
    found = interpose.sharing_pairs(objects)
    assert found, "the zoo has copies of one library in two distributions"
    assert sorted((s.first.path, s.second.path) for s in found) == reference_pairs(objects)
    for shared in found:
        assert shared == interpose.shared_symbols(shared.first, shared.second)


def test_prefix_counts_by_bisection_match_a_walk(zoo_venv: ZooVenv, tmp_path: Path) -> None:
    """families counts a family's prefixed exports by bisection: c_functions must be sorted
    (by both ELF readers) and the count must equal a walk over the names, also when the facts
    come from the cache (which counts in the stored names without splitting them)."""
    from pytest_runtimeconflict.model.facts import count_prefixed
    from pytest_runtimeconflict.static.elffacts import read_elf_facts_plain
    from pytest_runtimeconflict.static.factcache import CachedFacts

    scan_environment(zoo_venv.python, cache_dir=tmp_path)  # fills the cache
    objects = list(scan_environment(zoo_venv.python, cache_dir=tmp_path).objects)
    assert all(isinstance(info.facts, CachedFacts) for info in objects)
    checked = 0
    for info in objects:
        if "!/" not in info.path:  # counted in the cache's stored string, before a split
            read = read_elf_facts_plain(info.path).c_functions
            for prefix in ("mkl_", "PyInit_", "d", ""):
                walk = sum(1 for n in read if n.startswith(prefix))
                assert info.facts.count_prefixed(prefix) == walk, (info.path, prefix)
        names = info.facts.c_functions
        assert list(names) == sorted(names), info.path
        plain = read_elf_facts_plain(info.path).c_functions if "!/" not in info.path else names
        assert tuple(plain) == tuple(names), info.path
        for prefix in {n[:k] for n in names[:50] for k in (1, 3, 6)} | {"mkl_", "zz"}:
            walk = sum(1 for n in names if n.startswith(prefix))
            assert count_prefixed(names, prefix) == walk, (info.path, prefix)
            assert info.facts.count_prefixed(prefix) == walk, (info.path, prefix)
            checked += 1
    assert checked > 100


def test_a_warm_scan_reads_the_interposition_cache(
    zoo_venv: ZooVenv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second scan of unchanged files takes the shared names from the cache (the analysis
    is not run) and finds the same; a touched file, or an unreadable cache, makes the next scan
    analyse again."""
    cold = scan_environment(zoo_venv.python, cache_dir=tmp_path)
    (stored,) = tmp_path.glob("*/interpose-*.marshal")

    def not_again(objects: object) -> None:
        raise AssertionError("the warm scan analysed the names again")

    with monkeypatch.context() as patched:
        patched.setattr(interpose, "_sharing_pairs", not_again)
        warm = scan_environment(zoo_venv.python, cache_dir=tmp_path)
    assert warm.findings == cold.findings
    assert any(f.rule == "symbol-interposition" for f in warm.findings)

    calls: list[int] = []
    real = interpose._sharing_pairs

    def counted(objects: Sequence[ObjectInfo]) -> list[interpose.SharedSymbols]:
        calls.append(1)
        return real(objects)

    holder = interpose.sharing_pairs(list(cold.objects))[0].first
    monkeypatch.setattr(interpose, "_sharing_pairs", counted)
    os.utime(holder.path, ns=(time.time_ns(), time.time_ns()))
    assert scan_environment(zoo_venv.python, cache_dir=tmp_path).findings == cold.findings
    stored.write_bytes(b"not marshal")
    assert scan_environment(zoo_venv.python, cache_dir=tmp_path).findings == cold.findings
    identity, _names, entries, pairs = marshal.loads(unseal(stored.read_bytes()) or b"")
    stored.write_bytes(marshal.dumps((identity, (), entries, pairs)))  # indices point nowhere
    assert scan_environment(zoo_venv.python, cache_dir=tmp_path).findings == cold.findings
    assert len(calls) == 3
