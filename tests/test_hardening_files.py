"""Every file the tool writes is written atomically and never through a planted link; caches
live only in folders the user owns; a cache shard edited behind the tool's back is ignored.

Links are planted by this process and, where the tests run as root and ``runuser`` works, by
a second user (``nobody``), which is the attack: another local user prepares a link where a
privileged run will write.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cbuild import compile_shared

from pytest_runtimeconflict.files.atomic import (
    checked_cache_dir,
    private_directory,
    seal,
    unseal,
    write_atomically,
)
from pytest_runtimeconflict.files.locking import file_lock, replace_atomically
from pytest_runtimeconflict.report.baseline import write_baseline
from pytest_runtimeconflict.report.jsonreport import write_report
from pytest_runtimeconflict.report.repro import write_reproducer
from pytest_runtimeconflict.static.factcache import FactsCache, cache_key
from pytest_runtimeconflict.static.objects import FactsReader

SECRET = b"root-only secret\n"


def _victim(tmp_path: Path) -> Path:
    """A file only its owner may read: what a planted link points at."""
    victim = tmp_path / "victim"
    victim.write_bytes(SECRET)
    victim.chmod(0o600)
    return victim


def _untouched(victim: Path) -> bool:
    return victim.read_bytes() == SECRET and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_write_replaces_a_planted_link_instead_of_following_it(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    target = tmp_path / "out" / "report.json"
    target.parent.mkdir()
    target.symlink_to(victim)
    write_atomically(target, b"{}\n", 0o644)
    assert _untouched(victim)
    assert not target.is_symlink() and target.read_bytes() == b"{}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]  # no temp left


def test_the_old_predictable_temporary_name_is_not_used(tmp_path: Path) -> None:
    """A link at ``<name>.<pid>.tmp`` (the name writes used to go through) stays unused."""
    victim = _victim(tmp_path)
    target = tmp_path / "shard.marshal"
    (tmp_path / f"shard.marshal.{os.getpid()}.tmp").symlink_to(victim)
    replace_atomically(target, b"data")
    assert _untouched(victim) and target.read_bytes() == b"data"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "baseline.json"
    target.write_bytes(b"old content\n")
    # a file size limit cuts the write short (SIGXFSZ ignored: the write fails with EFBIG)
    code = (
        "import resource, signal, sys\n"
        "from pytest_runtimeconflict.files.atomic import write_atomically\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4, 4))\n"
        "try:\n    write_atomically(sys.argv[1], b'x' * 100000)\n"
        "except OSError as exc:\n    print(exc.errno)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    assert out.stdout.strip() == "27", out  # EFBIG
    assert target.read_bytes() == b"old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["baseline.json"]


def test_lock_file_link_is_refused(tmp_path: Path) -> None:
    """A dangling link at a lock's name used to create its target (as the running user)."""
    lock = tmp_path / "shard.lock"
    lock.symlink_to(tmp_path / "created-through-the-link")
    with pytest.raises(OSError), file_lock(lock):
        pass
    assert not (tmp_path / "created-through-the-link").exists()


def test_reports_baselines_and_reproducers_replace_links(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    report, baseline, repro = (tmp_path / n for n in ("r.json", "b.json", "repro.py"))
    for link in (report, baseline, repro):
        link.symlink_to(victim)
    write_report(str(report), {"schema": "x", "scenarios": []})
    write_baseline(str(baseline), [], "--baseline")
    entry = {"id": "x", "outcome": "crashed", "steps": ["json"], "python": sys.executable}
    write_reproducer(repro, entry, "--repro")
    assert _untouched(victim)
    assert json.loads(report.read_text())["scenarios"] == []
    assert json.loads(baseline.read_text())["conflicts"] == []
    assert stat.S_IMODE(repro.stat().st_mode) == 0o755 and not repro.is_symlink()


# ---------------------------------------------------------------- a second user plants links


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another local user (nobody) can write to, outside root-only pytest dirs."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser to act as a second user")
    path = Path(tempfile.mkdtemp(prefix="rc-shared-"))
    path.chmod(0o777)  # not sticky: the kernel's protected_symlinks does not apply
    try:
        if subprocess.run(["runuser", "-u", "nobody", "--", "true"]).returncode != 0:
            pytest.skip("runuser -u nobody does not work here")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _plant(link: Path, target: Path) -> None:
    subprocess.run(
        ["runuser", "-u", "nobody", "--", "ln", "-s", str(target), str(link)], check=True
    )
    assert link.lstat().st_uid != 0


def test_links_planted_by_another_user_are_replaced(shared_dir: Path, tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    scan_json, repro = shared_dir / "scan.json", shared_dir / "repro.py"
    _plant(scan_json, victim)
    _plant(repro, victim)
    empty = shared_dir / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTEST_RUNTIMECONFLICT_FACTS_CACHE": "0"}
    args = [sys.executable, "-m", "pytest_runtimeconflict", "scan", "--json", str(scan_json)]
    done = subprocess.run([*args, str(empty)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    write_reproducer(repro, {"id": "x", "outcome": "crashed", "steps": ["json"]}, "--rc-repro-dir")
    assert _untouched(victim)
    assert scan_json.lstat().st_uid == 0 and "objects" in json.loads(scan_json.read_text())
    assert stat.S_IMODE(repro.lstat().st_mode) == 0o755 and repro.lstat().st_uid == 0


def test_cache_folder_of_another_user_is_not_used(
    shared_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = shared_dir / "cache"
    subprocess.run(["runuser", "-u", "nobody", "--", "mkdir", "-m", "700", str(cache)], check=True)
    lib = compile_shared("int f(void) { return 1; }", "libf.so", outdir=tmp_path)
    with caplog.at_level(logging.WARNING):
        reader = FactsReader(FactsCache(cache))
        assert reader(str(lib)) is not None
        reader.close()
        FactsCache(cache)
    assert not reader.cache.enabled
    warnings = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "owned by uid" in warnings[0]


# ---------------------------------------------------------------- cache folders and shards


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_cache_folder_others_can_write_to_is_refused(tmp_path: Path, mode: int) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(mode)
    assert "can write" in (private_directory(cache) or "")
    assert checked_cache_dir(cache, "facts cache") is None
    assert not FactsCache(cache).enabled


def test_new_cache_folder_is_private(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "cache"
    assert checked_cache_dir(cache, "facts cache") == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_seal_detects_any_change() -> None:
    blob = seal(b"payload")
    assert unseal(blob) == b"payload"
    assert unseal(blob[:-1] + b"X") is None and unseal(b"short") is None


def test_shard_edited_with_the_same_timestamps_is_ignored(tmp_path: Path) -> None:
    """A shard rewritten in place (same size and timestamps) no longer changes the facts: the
    object is read again."""
    source = "void *PyInit_aaaa(void) { return 0; }\n"
    lib = compile_shared(source, "libq.so", outdir=tmp_path, flags=("-Wl,-soname,libaaaa.so",))
    reader = FactsReader(FactsCache(tmp_path / "cache"))
    assert reader(str(lib)).soname == "libaaaa.so"  # type: ignore[union-attr]
    reader.close()
    (shard,) = (tmp_path / "cache" / cache_key()).glob("*.marshal")
    st = shard.stat()
    data = shard.read_bytes()
    assert data.count(b"libaaaa.so") == 1
    shard.write_bytes(data.replace(b"libaaaa.so", b"libbbbb.so"))
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    again = FactsReader(FactsCache(tmp_path / "cache"))
    facts = again(str(lib))
    assert facts is not None and facts.soname == "libaaaa.so"
    assert (again.cache.hits, again.cache.misses) == (0, 1)
