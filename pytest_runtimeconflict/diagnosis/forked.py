"""The verdict of a failed ``fork-after-workload`` probe: the run's steps, run again in a
child forked after them, hung or crashed there.

The forked child's own stack (read with gdb before it was killed) says whose code it waits in:
an OpenMP runtime keeps its rule (``openmp-fork-hang``); anything else is
``fork-unsafe-threads``, naming the module, the parent's threads at fork time (their names and,
where gdb read them, their start routines' libraries) and the library the child waits in.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytest_runtimeconflict.diagnosis.rodata import objects_saying
from pytest_runtimeconflict.diagnosis.signature import fork_refusal
from pytest_runtimeconflict.model import Evidence, RunResult, RunSpec, Verdict
from pytest_runtimeconflict.vocabulary import FORKED_CHILD, module_of_step

FORK_PROBE = "fork-after-workload"
# A step that forks: ``os.fork()``, a multiprocessing pool or process (fork is the default
# start method on Linux), a process pool executor.
FORK_CALL = re.compile(r"\bfork\b|\bos\.fork|multiprocessing|ProcessPoolExecutor|popen_fork")
# The run that replays a forking step's fork with the probe: its own gdb needs time beyond
# the deadline of the forked child, whatever the scenario's short timeout.
REPLAY_TIMEOUT = 60.0
_WORKLOAD = re.compile(r"^# workload (?P<module>[\w.]+):")
_FRAME_LIBRARY = re.compile(r" in (/\S+)$")
MakeVerdict = Callable[..., Verdict]


def failed_probe(exercised: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The fork-after-workload probe's record when its forked child failed, or the record of
    a process a step forked that still ran when the run timed out."""
    return next(
        (
            e
            for e in exercised
            if e.get("kind") in (FORK_PROBE, FORKED_CHILD) and e.get("status") != "ok"
        ),
        None,
    )


def replay_spec(spec: RunSpec, result: RunResult) -> RunSpec | None:
    """For a run that hung or failed once a step forked (the parent waits for a child that
    hangs, or sees it die): the steps before that step, with the ``fork-after-workload``
    probe, which forks after them and runs them again in the forked child. That child is
    what the step's child was (a fork of a process that ran those steps), and the probe
    records what the run itself cannot: the parent's threads at fork time, their start
    routines' libraries and the forked child's own stack. None when no step up to the
    failing one forks after others, or when the run already had the probe."""
    if result.outcome not in ("hung", "failed") or FORK_PROBE in spec.probes:
        return None
    if failed_probe(result.exercised) is not None:
        return None  # the forked child's stack is there already
    last = result.failed_step if result.failed_step is not None else len(spec.steps) - 1
    index = next((i for i, s in enumerate(spec.steps[: last + 1]) if FORK_CALL.search(s)), None)
    if not index:
        return None
    return dataclasses.replace(
        spec,
        steps=spec.steps[:index],
        probes=(FORK_PROBE,),
        timeout=max(spec.timeout, REPLAY_TIMEOUT),
    )


def with_replay(result: RunResult, replay: RunResult | None) -> RunResult:
    """``result`` with the replay's failed fork probe and the parent's threads at fork time
    (unchanged when the replay's forked child finished: the fork is not what failed)."""
    probe = failed_probe(replay.exercised) if replay is not None else None
    if replay is None or probe is None:
        return result
    return dataclasses.replace(
        result,
        exercised=(*result.exercised, dict(probe)),
        threads_at_fork=replay.threads_at_fork,
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
        "module": _modules(evidence.result) or "the run's modules",
        "threads": _threads_text(threads),
        "how": "waits forever" if probe.get("status") == "hung" else _how(str(probe["detail"])),
    }
    return make(evidence, "fork-unsafe-threads", paths, [], 3, roles=roles, texts=texts)


# glibc's and the interpreter's own objects: not who refuses to run after fork.
_SYSTEM = re.compile(r"^(libc|libpthread|libdl|ld-linux[-\w]*|librt|libm|libpython[\d.]*)[.-]")


def refused_verdict(evidence: Evidence, make: MakeVerdict) -> Verdict | None:
    """A runtime that refused to run in a forked child, in its own words (marker
    ``fork-refused:*``): ``openmp-fork-hang`` when the words or the crashing frames name
    OpenMP, else ``fork-unsafe-threads``; the object whose read-only data holds those words
    is named as the one that refused."""
    marks = [m for m in evidence.markers if m.startswith("fork-refused:")]
    words = fork_refusal(evidence.text)
    if not marks or words is None or evidence.outcome == "passed":
        return None
    mapped = sorted({*evidence.necessary, *evidence.objects}, key=evidence.order_of)
    mapped = [p for p in mapped if not _SYSTEM.match(os.path.basename(p))]
    needed = [p for p in mapped if p in evidence.necessary]
    speakers = objects_saying(needed, words) or objects_saying(mapped, words)
    roles = {p: f"refused to run in the forked child (its message: {words!r})" for p in speakers}
    said = ", ".join(os.path.basename(p) for p in speakers) or "a runtime"
    openmp = [p for p in needed if evidence.runtimes.get(p, ("",))[0] == "openmp"]
    framed = [p for p in evidence.frame_libraries if evidence.runtimes.get(p, ("",))[0] == "openmp"]
    if "fork-refused:openmp" in marks or framed:
        pools = list(dict.fromkeys([*framed, *openmp]))
        roles.update({p: "OpenMP runtime whose pool does not survive fork" for p in pools})
        cause = (
            f"the process forked after {_names(pools) or 'an OpenMP runtime'} had started its "
            f"thread pool; in the forked child {said} refused to run ({words!r}) and ended it"
        )
        return make(evidence, "openmp-fork-hang", [*speakers, *pools], [], 3, roles=roles,
                    cause_override=cause)  # fmt: skip
    cause = (
        f"{_modules(evidence.result) or 'the run'} forked after its threads had started; in "
        f"the forked child {said} refused to run ({words!r}) and ended it"
    )
    threads = list(evidence.result.threads_at_fork)[1:]  # the first is the forking thread
    if threads:
        cause += f"; the parent's threads at fork: {_threads_text(threads)}"
    return make(evidence, "fork-unsafe-threads", speakers, [], 3, roles=roles, cause_override=cause)


def _names(paths: Sequence[str]) -> str:
    return ", ".join(os.path.basename(p) for p in paths)


def _modules(result: RunResult) -> str:
    """The modules the steps import or run workloads of, in order; an import that mapped no
    native code (``os``) started no threads and is left out."""
    found = []
    mapped = list(result.step_libraries)
    for index, step in enumerate(result.spec.steps):
        workload = _WORKLOAD.match(step)
        if workload:
            found.append(workload.group("module"))
        elif index >= len(mapped) or mapped[index]:
            found.append(module_of_step(step))
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
