"""Reproducers as verified artefacts: each written script is run once, as a user would run it,
and whether it reproduced is recorded in the report entry (``reproduces``,
``reproduce_observed``, ``reproducer``), in the script's header and in the terminal summary.

:func:`verify_reproducer` runs the script in a fresh interpreter, in its own process group,
without core files (``RLIMIT_CORE`` 0, inherited by everything it starts), with a deadline
after which the script and everything it started (its process group, its descendants and any
process carrying the run's marker variable) are killed. The script itself compares what
happened with the run's outcome and says so on its last stdout line (``repro_script.py``).
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pytest_runtimeconflict.report.repro import (
    Entry,
    comment,
    conflicts,
    deadline,
    file_name,
    make_directory,
    write_reproducer,
)
from pytest_runtimeconflict.sandbox.runner import RUN_MARKER, kill_marked, kill_tree

# Beyond the script's own deadline: two interpreter starts, the stack dump before a kill.
VERIFY_MARGIN = 60.0
_RESULT = re.compile(r"^\[repro\] (reproduced|not reproduced): (.*)$")


@dataclass(frozen=True)
class Verification:
    """One run of a reproducer: whether it reproduced its conflict, what it observed
    (``SIGSEGV``, ``exit 1: ValueError: ...``, ``hang``, ``latent``, ``passed``, or why the
    script gave no result) and how long it took."""

    reproduces: bool
    observed: str
    seconds: float

    def describe(self) -> str:
        """``reproduced SIGSEGV in 0.4 s`` / ``not reproduced (observed passed) in 0.4 s``."""
        if self.reproduces:
            return f"reproduced {self.observed} in {self.seconds:.1f} s"
        return f"not reproduced (observed {self.observed}) in {self.seconds:.1f} s"


@dataclass(frozen=True)
class Written:
    """A reproducer written and verified."""

    path: Path
    verification: Verification


def _no_core_files() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def verify_reproducer(script: Path, python: str, timeout: float) -> Verification:
    """Run ``script`` once with ``python`` (a fresh interpreter, own process group, no core
    files) and read its verdict; everything it started is killed afterwards, and at once
    after ``timeout`` seconds (not reproduced: no result)."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, **{RUN_MARKER: marker})
    started_at, start = time.time() - 1.0, time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [python, str(script)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_no_core_files,
            )
        except OSError as exc:
            return Verification(False, f"could not start {python!r}: {exc.strerror}", 0.0)
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            kill_tree(proc)
            kill_marked(marker, started_at)
        seconds = time.monotonic() - start
        if timed_out:
            return Verification(False, f"no result within {timeout:g} s (killed)", seconds)
        return _verdict(proc.returncode, _text(out), _text(err), seconds)


def _text(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")


def _verdict(returncode: int, stdout: str, stderr: str, seconds: float) -> Verification:
    """The script's last result line, when its exit status agrees with it; else why not."""
    lines = [m for m in map(_RESULT.match, stdout.splitlines()) if m]
    if lines:
        said, observed = lines[-1].group(1), lines[-1].group(2)
        if (said == "reproduced") == (returncode == 1) and returncode in (0, 1):
            return Verification(said == "reproduced", observed, seconds)
    if returncode < 0:
        status = f"killed by {signal.Signals(-returncode).name}"
    else:
        status = f"exit {returncode}"
    last = (stderr.strip().splitlines() or [""])[-1]
    return Verification(False, comment(f"the script gave no result: {status} {last}"), seconds)


MAX_PARALLEL_CHECKS = 4


def verify_timeout(entry: Entry) -> float:
    """How long the check of ``entry``'s reproducer may take."""
    return deadline(entry) + VERIFY_MARGIN


def write_verified(path: Path, entry: Entry, option: str, python: str) -> Written:
    """Write ``entry``'s reproducer to ``path``, run it once (the run's interpreter, else
    ``python``), write it again with the result in its header, and record the result in
    ``entry`` (``reproduces``, ``reproduce_observed``, ``reproducer``)."""
    write_reproducer(path, entry, option)
    interpreter = str(entry.get("python") or python)
    verification = verify_reproducer(path, interpreter, verify_timeout(entry))
    today = datetime.date.today().isoformat()
    write_reproducer(path, entry, option, verified=f"{verification.describe()} on {today}")
    if isinstance(entry, MutableMapping):  # report entries are dicts
        entry["reproduces"] = verification.reproduces
        entry["reproduce_observed"] = verification.observed
        entry["reproducer"] = str(path)
    return Written(path, verification)


def write_verified_reproducers(
    directory: str | Path, entries: Iterable[Any], option: str, python: str
) -> list[Written]:
    """One verified reproducer per distinct conflict into ``directory`` (created); the checks
    run side by side, one per core (each is an independent interpreter; a hang's check waits
    out its deadline)."""
    from concurrent.futures import ThreadPoolExecutor

    directory = make_directory(directory, option)
    chosen = conflicts(entries)
    workers = max(1, min(len(chosen), os.cpu_count() or 1, MAX_PARALLEL_CHECKS))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(lambda e: write_verified(directory / file_name(e), e, option, python), chosen)
        )
