"""``static.paths.real_path`` answers exactly as ``os.path.realpath`` on real trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_runtimeconflict.static.paths import real_path


def test_real_path_matches_realpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real" / "lib"
    real.mkdir(parents=True)
    (real / "libx.so.1").write_text("x")
    (tmp_path / "linked").symlink_to(tmp_path / "real")  # a symlinked directory
    (real / "libx.so").symlink_to("libx.so.1")  # a symlinked file, relative
    (real / "chain.so").symlink_to(tmp_path / "linked" / "lib" / "libx.so")  # link to a link
    (real / "dangling.so").symlink_to("nowhere.so")
    (real / "loop.so").symlink_to("loop.so")
    candidates = [
        tmp_path / "linked" / "lib" / "libx.so.1",
        tmp_path / "linked" / "lib" / "libx.so",
        tmp_path / "linked" / "lib" / "chain.so",
        tmp_path / "linked" / "lib" / "dangling.so",
        tmp_path / "linked" / "lib" / "loop.so",
        tmp_path / "linked" / "lib" / "missing.so",
        tmp_path / "linked" / "lib" / ".." / "lib" / "libx.so",
        tmp_path / "linked" / "lib" / "..",
        tmp_path / "linked" / "lib" / ".",
        tmp_path / "linked",
        Path("/"),
    ]
    for path in candidates:
        assert real_path(str(path)) == os.path.realpath(path), path
    monkeypatch.chdir(tmp_path / "linked")
    for relative in ("lib/libx.so", "./lib/chain.so", "libx.so"):
        assert real_path(relative) == os.path.realpath(relative), relative
