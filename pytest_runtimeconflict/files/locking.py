"""One inter-process lock for every cache the project shares between processes (xdist
workers, concurrent CLI runs): the facts cache, the session's module list, the zoo's wheels;
and one way to replace a file so that readers see the whole old or the whole new content."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from pytest_runtimeconflict.files.atomic import open_lock_file, write_atomically


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created, with its directory, if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def replace_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` with :func:`write_atomically` (creating the directory): a
    concurrent reader never sees a partly written file, a planted link is never followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, data, mode)
