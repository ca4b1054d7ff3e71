"""The facts cache and the discovery cache: a warm run reads nothing again, a
changed file is read again (never stale), concurrent writers lose nothing."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
from cbuild import compile_shared
from venvs import make_venv

from pytest_runtimeconflict.static import discover
from pytest_runtimeconflict.static.factcache import FactsCache, resolve_cache_dir
from pytest_runtimeconflict.static.objects import FactsReader
from pytest_runtimeconflict.static.scan import scan_environment

HOUR_AGO = time.time() - 3600


def _lib(tmp: Path, tag: str) -> Path:
    """A small real object whose facts name ``tag`` (same size for same-length tags)."""
    src = (
        f"void *PyInit_{tag}(void) {{ return 0; }}\nint openblas_get_config(void) {{ return 1; }}\n"
    )
    return compile_shared(src, f"lib{tag}.so", outdir=tmp)


def _read_all(cache_root: Path, paths: list[Path]) -> FactsReader:
    reader = FactsReader(FactsCache(cache_root))
    for path in paths:
        assert reader(str(path)) is not None
    reader.close()
    return reader


def test_warm_reader_hits_for_every_file(tmp_path: Path) -> None:
    libs = [_lib(tmp_path / "libs", f"m{i:02d}") for i in range(5)]
    cold = _read_all(tmp_path / "cache", libs)
    assert (cold.cache.hits, cold.cache.misses) == (0, 5)
    warm = _read_all(tmp_path / "cache", libs)
    assert (warm.cache.hits, warm.cache.misses) == (5, 0)
    assert [warm(str(p)) for p in libs] == [cold(str(p)) for p in libs]


def test_cached_facts_keep_symbol_lists_joined_until_read(tmp_path: Path) -> None:
    """The long name lists come back from the cache as one string each, split at the first
    read: equal, hashed and serialised like freshly read facts, and counted by prefix before
    any split."""
    lib = compile_shared(
        "int mkl_a(void) { return 1; }\nint mkl_b(void) { return 2; }\n"
        "int other(void) { return 3; }\nint table[4];\n",
        "libjoined.so",
        outdir=tmp_path / "libs",
    )
    fresh = _read_all(tmp_path / "cache", [lib])(str(lib))
    cached = _read_all(tmp_path / "cache", [lib])(str(lib))
    assert fresh is not None and cached is not None
    assert "c_functions" not in vars(cached)  # not split yet
    assert cached.count_prefixed("mkl_") == fresh.count_prefixed("mkl_") == 2
    assert cached.count_prefixed("o") == 1 and cached.count_prefixed("zz") == 0
    assert "c_functions" not in vars(cached)  # counting did not split
    assert cached == fresh and fresh == cached and hash(cached) == hash(fresh)
    assert cached.c_functions == ("mkl_a", "mkl_b", "other") == fresh.c_functions
    assert cached.c_data == ("table",) and cached.to_json() == fresh.to_json()


def test_rewritten_file_is_read_again_even_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    lib = _lib(tmp_path / "a", "aaaa")
    other = _lib(tmp_path / "b", "bbbb").read_bytes()
    assert len(other) == lib.stat().st_size
    first = _read_all(tmp_path / "cache", [lib])(str(lib))
    assert first is not None and "PyInit_aaaa" in first.defined_symbols
    before = lib.stat()
    with open(lib, "r+b") as fh:  # in place: same inode, same size
        fh.write(other)
    os.utime(lib, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = lib.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    again = _read_all(tmp_path / "cache", [lib])
    assert again.cache.misses == 1
    facts = again(str(lib))
    assert facts is not None and "PyInit_bbbb" in facts.defined_symbols


def test_touched_and_replaced_files_are_read_again(tmp_path: Path) -> None:
    lib = _lib(tmp_path / "a", "cccc")
    _read_all(tmp_path / "cache", [lib])
    os.utime(lib, None)
    assert _read_all(tmp_path / "cache", [lib]).cache.misses == 1
    replacement = tmp_path / "a" / "new.so"
    replacement.write_bytes(_lib(tmp_path / "b", "dddd").read_bytes())
    os.replace(replacement, lib)  # new inode
    reader = _read_all(tmp_path / "cache", [lib])
    facts = reader(str(lib))
    assert reader.cache.misses == 1 and facts is not None
    assert "PyInit_dddd" in facts.defined_symbols


def _worker(args: tuple[str, list[str]]) -> int:
    root, paths = args
    reader = FactsReader(FactsCache(Path(root)))
    for path in paths:
        reader(path)
    reader.close()
    return reader.cache.misses


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    """Four processes (like xdist workers) fill one shard at the same time."""
    libs = [str(_lib(tmp_path / "libs", f"w{i:02d}")) for i in range(12)]
    jobs = [(str(tmp_path / "cache"), libs[i::4]) for i in range(4)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        assert sum(pool.map(_worker, jobs)) == 12
    warm = _read_all(tmp_path / "cache", [Path(p) for p in libs])
    assert (warm.cache.hits, warm.cache.misses) == (12, 0)


def test_cache_switch_and_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_FACTS_CACHE", "0")
    assert resolve_cache_dir(tmp_path) is None
    monkeypatch.setenv("PYTEST_RUNTIMECONFLICT_FACTS_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("PYTEST_RUNTIMECONFLICT_FACTS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "pytest-runtimeconflict"
    # The old name still works, with a deprecation warning.
    monkeypatch.setenv("RC_FACTS_CACHE", str(tmp_path / "old"))
    with pytest.deprecated_call(match="PYTEST_RUNTIMECONFLICT_FACTS_CACHE"):
        assert resolve_cache_dir(None) == tmp_path / "old"


def test_scan_environment_writes_into_the_given_cache_dir(tmp_path: Path) -> None:
    libs = tmp_path / "libs"
    _lib(libs, "scan")
    first = scan_environment(paths=[str(libs)], cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").glob("facts-*/*.marshal"))
    second = scan_environment(paths=[str(libs)], cache_dir=tmp_path / "c")
    assert [o.facts for o in first.objects] == [o.facts for o in second.objects]


# --- discovery cache ----------------------------------------------------------------------


def _age(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (HOUR_AGO, HOUR_AGO))


def test_listing_cache_is_used_and_follows_directory_mtimes(tmp_path: Path) -> None:
    tree = tmp_path / "site"
    (tree / "pkg" / "sub").mkdir(parents=True)
    (tree / "pkg" / "a.so").write_bytes(b"x")
    (tree / "pkg" / "sub" / "b.so.1").write_bytes(b"x")
    _age(tree, tree / "pkg", tree / "pkg" / "sub")
    cache = discover.DiscoveryCache(tmp_path / "c", "/nonexistent/python")
    first = list(discover._walk_so(str(tree), cache))
    assert [Path(p).name for p in first] == ["a.so", "b.so.1"]
    assert len(cache.new_dirs) == 3
    # a file appears but its directory keeps the cached mtime: the listing comes from the cache
    (tree / "pkg" / "c.so").write_bytes(b"x")
    _age(tree / "pkg")
    assert list(discover._walk_so(str(tree), cache_from(cache))) == first
    # the directory's mtime moves (what creating a file does): the listing is read again
    os.utime(tree / "pkg", None)
    fresh = list(discover._walk_so(str(tree), cache_from(cache)))
    assert [Path(p).name for p in fresh] == ["a.so", "c.so", "b.so.1"]


def cache_from(previous: discover.DiscoveryCache) -> discover.DiscoveryCache:
    """A cache loaded with what ``previous`` learnt (as the next run would load it)."""
    cache = discover.DiscoveryCache(None, "/nonexistent/python")
    cache.dirs = dict(previous.new_dirs)
    return cache


def test_interpreter_answer_is_cached_until_a_distribution_appears(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python, site = make_venv(venv)
    _age(site, *site.iterdir(), venv / "pyvenv.cfg")
    cache_root = tmp_path / "c"
    cold = discover.discover_environment(python, cache_root)
    assert cold.distributions == {}
    stamps = discover._interpreter_stamps(python)
    assert discover.DiscoveryCache(cache_root, python).answer(stamps) is not None
    # install a distribution by hand: a dist-info with a RECORD naming an ELF file
    lib = _lib(site / "fakepkg", "fakepkg")
    info = site / "fakepkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"fakepkg/{lib.name},,\nfakepkg-1.0.dist-info/RECORD,,\n")
    assert discover.DiscoveryCache(cache_root, python).answer(stamps) is None
    warm = discover.discover_environment(python, cache_root)
    assert warm.distributions == {"fakepkg": ["fakepkg"]}
    assert [(c.path, c.distribution) for c in warm.candidates] == [(str(lib), "fakepkg")]
