"""What an object's read-only data says: its own thread-count variables, and the messages
it prints.

Thread-count variables are names such as ``ZPOOL_NUM_THREADS`` or ``POLARS_MAX_THREADS`` in
the read-only data of an object that calls ``getenv``.
A pool that sizes itself from such a variable runs on the caller's thread, or with fewer
workers, when it is set to 1; for threads that do not survive fork that is the package's own
switch, which the families' variables (``OMP_NUM_THREADS``) do not reach. The names are
candidates only: each is tried with the real workload before it is advised.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable

log = logging.getLogger(__name__)

# ``X_NUM_THREADS``, ``X_MAX_THREADS``, ``X_NTHREADS``, ``X_THREADS``: upper case words joined
# by underscores; a lower-case letter may follow (string data without NUL terminators).
_THREAD_VARIABLE = re.compile(
    rb"(?<![A-Za-z0-9_])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:NUM_|MAX_|N)?THREADS)(?![A-Z0-9_])"
)
_GETENV = frozenset({"getenv", "secure_getenv", "__secure_getenv"})
_READ_ONLY = (".rodata", ".rodata1")
# Read at most this much of an object's read-only data (a large framework's tables).
MAX_BYTES = 64 << 20
MAX_VARIABLES = 3


def thread_variables(paths: Iterable[str], known: Iterable[str] = ()) -> list[str]:
    """The thread-count variables the objects at ``paths`` may read (in path order, then name
    order), other than ``known`` (the families' own), at most :data:`MAX_VARIABLES`."""
    seen = set(known)
    found: list[str] = []
    for path in dict.fromkeys(os.path.realpath(p) for p in paths if p):
        for name in sorted(_read_variables(path)):
            if name not in seen:
                seen.add(name)
                found.append(name)
    return found[:MAX_VARIABLES]


def objects_saying(paths: Iterable[str], text: str) -> list[str]:
    """The objects at ``paths`` whose read-only data holds ``text`` (the fixed part of a
    message a run printed: whose code printed it), in the order given."""
    wanted = text.encode("utf-8", "replace")
    if not wanted:
        return []
    found = []
    for path in dict.fromkeys(paths):
        sections = _read_only(path, need_getenv=False)
        if any(wanted in data for data in sections):
            found.append(path)
    return found


def _read_variables(path: str) -> set[str]:
    """The candidate names in ``path``'s read-only data when it imports ``getenv``."""
    names: set[str] = set()
    for data in _read_only(path, need_getenv=True):
        names.update(m.group(1).decode() for m in _THREAD_VARIABLE.finditer(data))
    return names


def _read_only(path: str, *, need_getenv: bool) -> list[bytes]:
    """The read-only data sections of ``path`` (each at most :data:`MAX_BYTES`); none when
    ``need_getenv`` and it does not import ``getenv``, or when it is no readable ELF file."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            if need_getenv and not _calls_getenv(elf):
                return []
            sections = filter(None, map(elf.get_section_by_name, _READ_ONLY))
            return [s.data() for s in sections if s["sh_size"] <= MAX_BYTES]
    except (OSError, ELFError) as exc:
        log.debug("cannot read %s: %s", path, exc)
        return []


def _calls_getenv(elf: object) -> bool:
    """Whether the dynamic symbol table holds an undefined ``getenv`` (or its secure form)."""
    table = elf.get_section_by_name(".dynsym")  # type: ignore[attr-defined]
    if table is None:
        return False
    return any(
        sym.name.split("@", 1)[0] in _GETENV and sym["st_shndx"] == "SHN_UNDEF"
        for sym in table.iter_symbols()
    )
