"""Conflicts already diagnosed in this session, shared by the xdist workers: owner checks
answered from runs already made.

Each diagnosed conflict of a plan item is recorded (its key, the item, the failure's signature
and place, the conflict's libraries, the modules of its minimal order). Before a failed planned
run is minimised, a conflict an earlier item diagnosed that failed the same way at the same
place, whose libraries this run mapped and whose minimal order's modules this run imported, is
that conflict again: the earlier item reports it, and no child run is spent here. After a
conflict is diagnosed, an earlier item that recorded the same key owns it without re-running
that item's planned runs. When nothing is recorded yet (the earlier item runs on another worker
and has not reached the conflict), the owner checks re-run as before: the store only saves
work, it never decides alone that an item is the first.

One append-only JSON-lines file per process under the session's cache folder
(``conflicts-<run id>/<pid>.jsonl``); a reader takes every complete line of every file. No
pytest import.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_runtimeconflict.vocabulary import JsonObject

STALE_SECONDS = 86400  # older session folders are removed when a new session starts


@dataclass(frozen=True)
class StoredConflict:
    """One diagnosed conflict as another item compares with it."""

    index: int  # the plan item's index
    item: str  # its node id
    run: str  # the run that first met it (its description)
    key: str
    signature: tuple[str, ...]
    place: str
    libraries: tuple[str, ...]  # real paths
    modules: tuple[str, ...]  # the minimal order's modules
    step: str  # the step that failed

    def to_json(self) -> JsonObject:
        return {
            "index": self.index,
            "item": self.item,
            "run": self.run,
            "key": self.key,
            "signature": list(self.signature),
            "place": self.place,
            "libraries": list(self.libraries),
            "modules": list(self.modules),
            "step": self.step,
        }

    @classmethod
    def from_json(cls, data: JsonObject) -> StoredConflict:
        return cls(
            int(data["index"]),
            str(data["item"]),
            str(data["run"]),
            str(data["key"]),
            tuple(str(x) for x in data["signature"]),
            str(data["place"]),
            tuple(str(x) for x in data["libraries"]),
            tuple(str(x) for x in data["modules"]),
            str(data["step"]),
        )

    def met_again(
        self,
        signature: tuple[str, ...],
        place: str,
        mapped: set[str],
        imported: set[str],
    ) -> bool:
        """Whether a run that failed with ``signature`` at ``place``, having mapped ``mapped``
        (real paths) and imported ``imported`` (modules), met this conflict again: its
        libraries and its minimal order's modules were all there, so the run holds it and
        could not get past it (with a third copy of a runtime there, another pair may fail
        too: the repair of a covering sequence, which leaves this conflict's modules out,
        meets that pair on its own)."""
        return (
            self.signature == signature
            and self.place == place
            and bool(self.libraries)
            and set(self.libraries) <= mapped
            and set(self.modules) <= imported
        )


class ConflictStore:
    """The session's diagnosed conflicts: this process's, and (with ``directory``) every
    xdist worker's."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.own: list[StoredConflict] = []
        if directory is not None:
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError:
                self.directory = None

    def record(self, conflict: StoredConflict) -> None:
        """Remember ``conflict`` (and tell the other workers, best effort)."""
        self.own.append(conflict)
        if self.directory is None:
            return
        line = (json.dumps(conflict.to_json(), sort_keys=True) + "\n").encode()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.directory / f"{os.getpid()}.jsonl", flags, 0o600)
        except OSError:
            return
        try:
            os.write(fd, line)  # one write of one line: readers never see half of it
        finally:
            os.close(fd)

    def conflicts(self) -> list[StoredConflict]:
        """Every recorded conflict (this process's first, then the other workers')."""
        found = list(self.own)
        if self.directory is None:
            return found
        for path in sorted(self.directory.glob("*.jsonl")):
            if path.name == f"{os.getpid()}.jsonl":
                continue
            found += _read(path)
        return found

    def earlier_match(
        self, index: int, signature: tuple[str, ...], place: str, mapped: Sequence[str],
        imported: Sequence[str],
    ) -> StoredConflict | None:  # fmt: skip
        """The conflict of the earliest item before ``index`` that a failed run (its
        signature, place, mapped files and imported modules) meets again, or None."""
        real = {os.path.realpath(p) for p in mapped}
        seen = (signature, place, real, set(imported))
        hits = [c for c in self.conflicts() if c.index < index and c.met_again(*seen)]
        return min(hits, key=lambda c: c.index) if hits else None

    def earlier_owner(self, index: int, key: str) -> StoredConflict | None:
        """The earliest item before ``index`` that diagnosed the conflict ``key``, or None."""
        hits = [c for c in self.conflicts() if c.index < index and c.key == key]
        return min(hits, key=lambda c: c.index) if hits else None


def _read(path: Path) -> list[StoredConflict]:
    out: list[StoredConflict] = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # a line being written
        try:
            out.append(StoredConflict.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def session_store(cache_dir: Path, run_id: str) -> ConflictStore:
    """The store of the session ``run_id`` under ``cache_dir``; folders of sessions older
    than a day are removed."""
    for old in cache_dir.glob("conflicts-*"):
        try:
            if time.time() - old.stat().st_mtime > STALE_SECONDS and not old.is_symlink():
                for part in old.glob("*.jsonl"):
                    part.unlink(missing_ok=True)
                old.rmdir()
        except OSError:
            continue
    return ConflictStore(cache_dir / f"conflicts-{run_id}")
