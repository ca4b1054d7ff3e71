"""The verdict of a failed ``fork-after-workload`` probe: the run's steps, run again in a
child forked after them, hung or crashed there.

The forked child's own stack (read with gdb before it was killed) says whose code it waits in:
an OpenMP runtime keeps its rule (``openmp-fork-hang``); anything else is
``fork-unsafe-threads``, naming the module, the parent's threads at fork time (their names and,
where gdb read them, their start routines' libraries) and the library the child waits in.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_runtimeconflict.model import Evidence, Verdict
from pytest_runtimeconflict.vocabulary import module_of_step

FORK_PROBE = "fork-after-workload"
_WORKLOAD = re.compile(r"^# workload (?P<module>[\w.]+):")
_FRAME_LIBRARY = re.compile(r" in (/\S+)$")
MakeVerdict = Callable[..., Verdict]


def failed_probe(exercised: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The fork-after-workload probe's record when its forked child failed."""
    return next(
        (e for e in exercised if e.get("kind") == FORK_PROBE and e.get("status") != "ok"),
        None,
    )


def fork_verdict(evidence: Evidence, make: MakeVerdict) -> Verdict | None:
    """``openmp-fork-hang`` when the forked child waits in an OpenMP runtime, else
    ``fork-unsafe-threads``; None when the fork-after-workload probe did not fail."""
    probe = failed_probe(evidence.result.exercised)
    if probe is None or evidence.outcome not in ("hung", "failed"):
        return None
    frames = [m.group(1) for f in probe.get("frames") or () if (m := _FRAME_LIBRARY.search(f))]
    waiting = os.path.realpath(probe["path"]) if probe.get("path") else None
    openmp = [p for p in dict.fromkeys(frames) if evidence.runtimes.get(p, ("",))[0] == "openmp"]
    if openmp:
        return make(evidence, "openmp-fork-hang", openmp[:1], [], 3)
    if not frames:  # gdb could not read the child: an OpenMP pool the steps mapped is likelier
        mapped = [
            p
            for p, (f, _r) in evidence.runtimes.items()
            if f == "openmp" and p in evidence.necessary
        ]
        if mapped and evidence.outcome == "hung":
            return make(evidence, "openmp-fork-hang", sorted(mapped, key=evidence.order_of), [], 1)
    threads = list(evidence.result.threads_at_fork)[1:]  # the first is the forking thread
    starters = [os.path.realpath(t["library"]) for t in threads if t.get("library")]
    paths = list(dict.fromkeys(p for p in (waiting, *starters) if p))
    roles = {p: "started the parent's threads" for p in starters}
    if waiting is not None:
        roles[waiting] = "the forked child waits in its code" + (
            " (it started the threads too)" if waiting in starters else ""
        )
    texts = {
        "module": _modules(evidence.result.spec.steps) or "the run's modules",
        "threads": _threads_text(threads),
        "how": "waits forever" if evidence.outcome == "hung" else _how(str(probe.get("detail"))),
    }
    return make(evidence, "fork-unsafe-threads", paths, [], 3, roles=roles, texts=texts)


def _modules(steps: Sequence[str]) -> str:
    """The modules the steps import or run workloads of, in order."""
    found = []
    for step in steps:
        workload = _WORKLOAD.match(step)
        found.append(workload.group("module") if workload else module_of_step(step))
    return ", ".join(dict.fromkeys(m for m in found if m))


def _threads_text(threads: Sequence[Mapping[str, Any]]) -> str:
    """``2 x rcpool-worker (worker in librcpool.so)``, per distinct name and start routine."""
    if not threads:
        return "no other thread was seen at fork time"
    counts = Counter(
        (str(t.get("comm")), t.get("start_routine"), os.path.basename(str(t.get("library") or "")))
        for t in threads
    )
    parts = []
    for (comm, routine, library), count in counts.items():
        where = f" ({routine} in {library})" if routine and library else ""
        parts.append(f"{count} x {comm}{where}")
    return ", ".join(parts)


def _how(detail: str) -> str:
    """``ends (killed by SIGSEGV)`` from the probe's text."""
    match = re.search(r"the forked child (killed by \w+|exited with status \d+)", detail)
    return f"ends ({match.group(1)})" if match else "fails"
