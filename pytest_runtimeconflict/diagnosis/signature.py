"""Failure signatures: what "fails the same way" compares, and mechanism markers in a
child's output (``version:GLIBCXX_3.4.30``, ``omp-error:15``, ``terminate:std::bad_cast``)."""

from __future__ import annotations

import os
import re

from pytest_runtimeconflict.model import RunResult

_EXC_TYPE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))\b")


_VERSION_NOT_FOUND = re.compile(
    r"(?P<lib>/\S+|[\w.+-]+\.so[\w.]*): version [`'](?P<version>[^`']+)' not found"
    r"(?: \(required by (?P<by>[^)]+)\))?"
)


_OMP_ERROR = re.compile(r"OMP: Error #(\d+)")


_TERMINATE = re.compile(r"terminate called after throwing an instance of '([^']+)'")


_STATIC_TLS = re.compile(r"cannot allocate memory in static TLS block")


# What the probes that run the steps again in another process report (sandbox/forked.py).
_REPLAY_PROBE = re.compile(
    r"(?P<probe>fork|spawn)-after-workload probe: the (?:forked child|spawned process) "
    r"(?P<how>did not finish|killed by \w+|exited with status \d+|ended with exit code -?\d+)"
)


# A runtime that refuses to run in a forked child says so in its own words before it ends the
# child ("fork() called from a process already using <runtime>, this is unsafe", "... is not
# supported after fork"). The span from the word fork to the verdict word, or back.
_REFUSAL = r"unsafe|not (?:fork-)?safe|not supported|unsupported|not allowed|forbidden"
_FORK_REFUSED = re.compile(
    rf"\bfork\b(?:\(\))?[^\n]{{0,160}}?\b(?:{_REFUSAL})\b"
    rf"|\b(?:{_REFUSAL})\b[^\n]{{0,80}}?\b(?:after|following|across|in the child of) (?:a |the )?"
    r"fork\b(?:\(\))?",
    re.IGNORECASE,
)
_OPENMP_WORDS = re.compile(r"openmp|libgomp|libiomp|\bomp\b", re.IGNORECASE)


def fork_refusal(text: str) -> str | None:
    """The words in which a runtime refused to run after fork (``fork() called from a process
    already using GNU OpenMP, this is unsafe``), or None."""
    match = _FORK_REFUSED.search(text)
    return match.group(0) if match else None


_UNDEFINED_SYMBOL = re.compile(r"undefined symbol: (\S+)")
_MISSING_LIBRARY = re.compile(r"([\w.+-]+\.so[\w.]*): cannot open shared object file")


_HEX = re.compile(r"0x[0-9a-fA-F]+")


_PATH = re.compile(r"(/[^\s:'\"()]+)+")


def exception_type(message: str | None) -> str | None:
    """The exception class named at the start of a failure message (``ImportError``)."""
    match = _EXC_TYPE.match(message or "")
    return match.group(1).rsplit(".", 1)[-1] if match else None


def failure_markers(text: str) -> tuple[str, ...]:
    """Mechanism-specific phrases in a child's output, as stable tokens.

    ``version `GLIBCXX_3.4.30' not found`` -> ``version:GLIBCXX_3.4.30``; ``OMP: Error #15`` ->
    ``omp-error:15``; an uncaught C++ exception's type; static TLS exhaustion; a runtime's
    refusal to run after fork (``fork-refused:openmp`` when its words name OpenMP, else
    ``fork-refused:threads``).
    """
    markers: set[str] = set()
    markers.update(f"version:{m.group('version')}" for m in _VERSION_NOT_FOUND.finditer(text))
    markers.update(f"omp-error:{m.group(1)}" for m in _OMP_ERROR.finditer(text))
    markers.update(f"terminate:{m.group(1)}" for m in _TERMINATE.finditer(text))
    markers.update(f"undefined:{m.group(1)}" for m in _UNDEFINED_SYMBOL.finditer(text))
    markers.update(f"missing:{m.group(1)}" for m in _MISSING_LIBRARY.finditer(text))
    if _STATIC_TLS.search(text):
        markers.add("static-tls")
    refusal = fork_refusal(text)
    if refusal is not None:
        markers.add("fork-refused:" + ("openmp" if _OPENMP_WORDS.search(refusal) else "threads"))
    markers.update(
        f"{m.group('probe')}-child:{m.group('how').replace(' ', '-')}"
        for m in _REPLAY_PROBE.finditer(text)
    )
    return tuple(sorted(markers))


def exception_type_of(result: RunResult) -> str | None:
    return result.exception_type or exception_type(result.message)


def _normalised(message: str) -> str:
    """A message without the parts that vary between runs (paths, addresses)."""
    text = _HEX.sub("0x?", message or "")
    text = _PATH.sub(lambda m: os.path.basename(m.group(0)), text)
    return " ".join(text.split())[:200]


def text_of(result: RunResult) -> str:
    return "\n".join(str(x) for x in (result.message or "", result.stderr_tail or ""))


def failure_signature(result: RunResult) -> tuple[str, ...]:
    """What "fails the same way" compares: outcome, signal or exception and key error text.

    Crashes compare the signal (and mechanism markers such as ``OMP: Error #15``); errors the
    exception type and the key text (a missing version, an undefined symbol, else the
    message without paths and addresses); hangs the outcome (and which probe's forked child
    hung, if one did); latent runs the duplicated runtime families.
    """
    outcome = result.outcome
    markers = failure_markers(text_of(result))
    if outcome == "crashed":
        return (outcome, str(result.signal or result.signum), *markers)
    if outcome == "failed":
        key_text = markers or (_normalised(result.message or ""),)
        return (outcome, exception_type_of(result) or "?", *key_text)
    if outcome == "latent":
        return (outcome, *result.duplicated_families())
    # a hang of a probe's forked child is another failure than a hang of the run itself
    return (outcome, *(m for m in markers if m.startswith(("fork-child:", "spawn-child:"))))


def fails_same_way(result: RunResult, reference: tuple[str, ...]) -> bool:
    return failure_signature(result) == reference
