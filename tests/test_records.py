"""The one RECORD reader (static/records.py): which distribution installed a file seen mapped
in a live process, looked up by file name and resolved only for that name's entries."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_runtimeconflict.static import records


def _dist(site: Path, name: str, files: dict[str, bytes]) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for rel, data in files.items():
        path = site / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        lines.append(f"{rel},sha256=x,{len(data)}")
    lines.append(f'"{name}-1.0.dist-info/RECORD",,')
    (info / "RECORD").write_text("\n".join(lines) + "\n")


def test_owners_of_same_named_files_and_of_paths_through_symlinks(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    _dist(site, "alpha", {"alpha.libs/libopenblas.so": b"a", "alpha/_core.so": b"1"})
    _dist(site, "beta", {"beta.libs/libopenblas.so": b"bb", "../../../lib/libiomp5.so": b"i"})
    records._OWNERS.clear()
    link = tmp_path / "link"
    link.symlink_to(site / "beta.libs")  # a process may map a file through a symlinked dir
    paths = [
        str(site / "alpha.libs" / "libopenblas.so"),
        str(site / "beta.libs" / "libopenblas.so"),
        str(link / "libopenblas.so"),
        str(site / "alpha" / "_core.so"),
        str(tmp_path / "venv" / "lib" / "libiomp5.so"),  # installed outside site-packages
        str(site / "alpha" / "unlisted.so"),
    ]
    Path(paths[-1]).write_bytes(b"?")
    owners = records.distributions_of(paths)
    assert owners == {
        paths[0]: "alpha",
        paths[1]: "beta",
        paths[2]: "beta",
        paths[3]: "alpha",
        paths[4]: "beta",
    }
    # the index of a site holds names, not resolved paths: nothing was resolved for it
    index = records._OWNERS[str(site)]
    assert [d for _, d in index["libopenblas.so"]] == ["alpha", "beta"]
    assert os.path.realpath(paths[2]) == paths[1]
