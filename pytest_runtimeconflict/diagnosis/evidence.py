"""Evidence: what one (minimal) failing run shows, read from its :class:`RunResult`: the
libraries the failing step mapped, the initialiser and the crashing thread's library, the
innermost non-libc frame, every thread's library, load order, and the mapped objects as the
sandbox already described them."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pytest_runtimeconflict.diagnosis.signature import failure_markers, failure_signature, text_of
from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.model import Evidence, ObjectInfo, RunResult
from pytest_runtimeconflict.sandbox.postmortem import is_idle
from pytest_runtimeconflict.static.objects import describe_paths
from pytest_runtimeconflict.static.records import distributions_of
from pytest_runtimeconflict.static.rules import findings_for_mapped

log = logging.getLogger(__name__)

_FRAME_FROM = re.compile(r" from (/\S+)\s*$")


# glibc's own objects: a crash PC in abort()/raise() there says nothing about the culprit.
_LIBC_NAMES = re.compile(r"^(libc|libpthread|libdl|ld-linux[-\w]*|librt|libm)[.-]")


def crashing_thread_frames(result: RunResult) -> list[str]:
    """The frame lines of the crashing thread in gdb's ``thread apply all bt`` text, from the
    frame the signal interrupted outwards.

    The crashing thread is the one that received the signal: the core's NT_SIGINFO thread
    (the sandbox's ``threads`` record marked ``signalled``, else its first), gdb's
    ``[Current thread is N ...]``, faulthandler's ``Current thread 0x...``, a thread whose
    stack holds ``<signal handler called>``, else gdb's ``Thread 1``; a candidate stopped in a wait (an idle thread pool parked in a
    futex) gives way to the next. Frames of the signal handler itself (faulthandler's dump,
    ``raise``, ``pthread_kill``) are not the crashing code and are left out.
    """
    blocks = re.split(r"^(?=Thread \d+ )", result.gdb_backtrace or "", flags=re.MULTILINE)
    blocks = [b for b in blocks if b.startswith("Thread ")]
    candidates = [b for b in _signalled_blocks(result, blocks) if b]
    chosen = next((b for b in candidates if not _idle(b)), candidates[0] if candidates else "")
    lines = [line for line in chosen.splitlines() if line.startswith("#")]
    handler = next((i for i, line in enumerate(lines) if _HANDLER in line), None)
    return lines if handler is None else lines[handler + 1 :]


_HANDLER = "<signal handler called>"
_CURRENT = re.compile(r"^\[Current thread is (\d+) ", re.MULTILINE)
_PY_CURRENT = re.compile(r"^Current thread 0x([0-9a-f]+)", re.MULTILINE)
_GDB_PTHREAD = re.compile(r"^Thread \d+ \(Thread 0x([0-9a-f]+) ")
_FRAME0_NAME = re.compile(r"^#0\s+(?:0x[0-9a-f]+ in )?(\S+)", re.MULTILINE)


def _signalled_blocks(result: RunResult, blocks: list[str]) -> list[str]:
    """gdb's thread blocks that may be the crashing thread, the likeliest first."""
    threads = list(result.threads or ())
    ordered = [t for t in threads if t.get("signalled")] + threads[:1]
    wanted = [f"(LWP {t.get('tid')})" for t in ordered]
    out = [next((b for b in blocks if w in b.split("\n", 1)[0]), "") for w in wanted]
    current = _CURRENT.search(result.gdb_backtrace or "")
    if current is not None:
        out += [b for b in blocks if b.startswith(f"Thread {current.group(1)} ")]
    python = _PY_CURRENT.search(result.python_traceback or "")
    if python is not None:  # faulthandler's "Current thread": the thread its handler ran in
        ident = int(python.group(1), 16)
        out += [b for b in blocks if _pthread_of(b) == ident]
    out += [b for b in blocks if _HANDLER in b]
    out += [b for b in blocks if b.startswith("Thread 1 ")]
    return out


def _pthread_of(block: str) -> int | None:
    match = _GDB_PTHREAD.match(block)
    return int(match.group(1), 16) if match else None


def _idle(block: str) -> bool:
    """A thread stopped in a wait (its innermost frame a futex, condition or sleep call) and
    not in a signal handler."""
    match = _FRAME0_NAME.search(block)
    return _HANDLER not in block and match is not None and is_idle(match.group(1))


def frame_libraries(result: RunResult) -> list[str]:
    """Every library of the crashing thread's frames, innermost first (realpaths)."""
    found: dict[str, None] = {}
    for line in crashing_thread_frames(result):
        match = _FRAME_FROM.search(line)
        if match:
            found.setdefault(os.path.realpath(match.group(1)), None)
    return list(found)


def frame_function(result: RunResult, library: str) -> str | None:
    """The innermost function of the crashing thread that ran in ``library``."""
    names = frame_functions(result, library)
    return names[0] if names else None


def frame_functions(result: RunResult, library: str) -> list[str]:
    """The functions of the crashing thread's frames that ran in ``library``, innermost
    first (a frame gdb shows without a name counts as an empty name)."""
    return [name for name, where in thread_frames(result) if where == library]


def thread_frames(result: RunResult) -> list[tuple[str, str | None]]:
    """(function, library realpath or None) of each frame of the crashing thread, innermost
    first."""
    frames = []
    for line in crashing_thread_frames(result):
        match = _FRAME_FROM.search(line)
        name = re.match(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(.+?) \(", line)
        where = os.path.realpath(match.group(1)) if match else None
        frames.append((name.group(1) if name else "", where))
    return frames


def entry_functions(result: RunResult, library: str) -> list[str]:
    """The innermost run of the crashing thread's frames in ``library``, from its outermost
    frame (where the thread entered the library: the call that crossed into it) inwards."""
    frames = thread_frames(result)
    start = next((i for i, (_, where) in enumerate(frames) if where == library), None)
    if start is None:
        return []
    end = start
    while end + 1 < len(frames) and frames[end + 1][1] == library:
        end += 1
    return [name for name, _ in reversed(frames[start : end + 1])]


def backtrace_library(result: RunResult) -> str | None:
    """The innermost library outside glibc in the crashing thread's backtrace (the code that
    called ``abort()`` or faulted), e.g. an OpenMP runtime's ``__kmp_fatal``."""
    for line in crashing_thread_frames(result):
        match = _FRAME_FROM.search(line)
        if match and not _LIBC_NAMES.match(os.path.basename(match.group(1))):
            return os.path.normpath(match.group(1))
    return None


def gather_evidence(
    result: RunResult, original: RunResult | None = None, traced: RunResult | None = None
) -> Evidence:
    """Collect the evidence of ``result`` (the minimal run) and describe its mapped objects.

    ``original`` supplies nothing but a fallback when the minimal run recorded no mappings;
    ``traced`` is the same minimal order re-run under the loader's binding trace.
    """
    source = result if result.mapped or original is None else original
    objects = {os.path.realpath(o.facts.path): o for o in source.objects}
    runtimes = {}  # one path per copy: the layers of one installation are one runtime
    for copy in {r.copy or r.path: r for r in reversed(source.loaded_runtimes)}.values():
        runtimes[os.path.realpath(copy.path)] = (copy.family, copy.runtime)
    text = text_of(result)
    return Evidence(
        result=result,
        outcome=result.outcome,
        signal=result.signal,
        text=text,
        markers=failure_markers(text),
        failing_libraries=tuple(_failing_step_libraries(result)),
        init_library=result.init_library,
        crash_library=result.crash_library,
        frame_library=backtrace_library(result),
        thread_libraries=_thread_counts(result.threads or ()),
        load_order=_load_order(result),
        necessary=frozenset(os.path.realpath(p) for step in result.step_libraries for p in step),
        objects=objects,
        findings=tuple(findings_for_mapped(list(objects.values()))),
        runtimes=runtimes,
        bindings=traced.bindings if traced is not None else (),
        frame_libraries=tuple(frame_libraries(result)),
        trace_outcome=_trace_outcome(result, traced),
    )


def _trace_outcome(result: RunResult, traced: RunResult | None) -> str | None:
    if traced is None or failure_signature(traced) == failure_signature(result):
        return None
    return traced.outcome


def _failing_step_libraries(result: RunResult) -> list[str]:
    """Libraries newly mapped by the step that failed, or the runtime being exercised when the
    failure came after the steps (the sandbox drives each loaded runtime once)."""
    per_step = list(result.step_libraries or ())
    failed = result.failed_step
    if isinstance(failed, int) and 0 <= failed < len(per_step):
        return list(per_step[failed])
    exercised = [e for e in result.exercised if e.get("path")]
    bad = [e["path"] for e in exercised if e.get("status") not in ("ok", "passed", "running")]
    if bad:
        return bad
    if exercised and result.phase == "exercise":
        return [exercised[-1]["path"]]
    return []


def _thread_counts(threads: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for thread in threads:
        library = thread.get("library")
        if library:
            counts[library] = counts.get(library, 0) + 1
    return counts


def _load_order(result: RunResult) -> dict[str, int]:
    order: dict[str, int] = {}
    for step in result.step_libraries or ():
        for path in step:
            order.setdefault(os.path.realpath(path), len(order))
    for path in result.mapped or ():
        order.setdefault(os.path.realpath(path), len(order))
    return order


def describe(paths: Iterable[str]) -> list[ObjectInfo]:
    """Facts, runtime kind and owning distribution of ELF files not mapped in the run (a
    library named by an error message, a candidate copy on the loader's search path)."""
    unique = sorted({p for p in paths if p and os.path.isabs(p) and os.path.isfile(p)})
    try:
        return list(describe_paths(unique, distributions_of(unique)))
    except ElfReadError as exc:
        log.warning("cannot describe the mapped objects: %s", exc)
        return []
