"""``os.path.realpath`` for many files in few directories.

``os.path.realpath`` walks every component of every path with ``lstat`` (about nine calls per
file of a venv's site-packages); a scan resolves about a thousand such paths. Resolving each
directory once and ``lstat``-ing only the file gives the same answer: ``realpath(d/name)`` is
``realpath(d)/name`` unless ``name`` itself is a symbolic link.
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache


@lru_cache(maxsize=1 << 14)
def _real_dir(directory: str) -> str:
    return os.path.realpath(directory)


def real_path(path: str) -> str:
    """The same as ``os.path.realpath(path)``, with directories resolved once per process."""
    head, tail = os.path.split(path)
    if not os.path.isabs(head) or tail in ("", ".", ".."):
        return os.path.realpath(path)
    full = os.path.join(_real_dir(head), tail)
    try:
        if not stat.S_ISLNK(os.lstat(full).st_mode):
            return full
    except OSError:
        pass
    return os.path.realpath(full)
