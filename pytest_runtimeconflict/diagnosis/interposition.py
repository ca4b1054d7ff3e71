"""Interposition verdicts from the loader's binding trace: a reference from one object that
the loader resolved to *another distribution's* definition while the referrer's own
distribution defines the same name. The verdict names the symbol, the object that referred to
it, the copy that served it, the copy that should have, and the load mode that put the serving
copy in the global scope."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence

from pytest_runtimeconflict.diagnosis.evidence import entry_functions, frame_function
from pytest_runtimeconflict.model import Binding, Evidence, ObjectInfo, RunSpec, Verdict
from pytest_runtimeconflict.static.interpose import shared_symbols, unique_outside_std
from pytest_runtimeconflict.static.rules import rule_of

VerdictFn = Callable[..., Verdict]


def defines(info: ObjectInfo, symbol: str) -> bool:
    """Whether ``info`` exports ``symbol`` (as a C function or datum, a C++ export or a
    GNU_UNIQUE object)."""
    facts = info.facts
    return (
        symbol in facts.c_functions
        or symbol in facts.c_data
        or symbol in facts.cxx_exports
        or symbol in unique_outside_std(facts.unique_symbols)
    )


def interposed(evidence: Evidence) -> list[tuple[Binding, str]]:
    """Bindings whose referrer's own distribution defines the symbol (the copy that should
    have served it), with that file; those into a crashing frame's library first, then the
    latest first."""
    by_dist: dict[str, list[ObjectInfo]] = {}
    for info in evidence.objects.values():
        if info.distribution:
            by_dist.setdefault(info.distribution, []).append(info)
    hits = []
    for binding in evidence.bindings:
        referrer = evidence.objects.get(binding.referrer)
        if referrer is None or referrer.distribution is None:
            continue
        own = [
            o.path
            for o in by_dist.get(referrer.distribution, [])
            if o.path != binding.provider and defines(o, binding.symbol)
        ]
        if own:
            hits.append((binding, own[0]))
    crashing = crashing_libraries(evidence)
    # Into the crashing thread's library first; then the latest in the trace (lazy bindings
    # resolve at the first call, so the ones nearest the failure come last).
    order = {id(hit[0]): i for i, hit in enumerate(hits)}
    hits.sort(key=lambda hit: (hit[0].provider not in crashing, -order[id(hit[0])]))
    return hits


def _roles_and_cause(
    binding: Binding, own: str, why: str, ran: str | None, labels: Callable[[str], str]
) -> tuple[dict[str, str], str]:
    """Each library's part in the interposition, and the cause sentence."""
    symbol = binding.symbol
    itself = own == binding.referrer
    roles = {
        binding.referrer: f"referenced '{symbol}'"
        + (", which it defines itself" if itself else f" (its distribution's copy: "
           f"{os.path.basename(own)})"),
        binding.provider: f"served '{symbol}' to the other distribution"
        + (f"; the crashing thread ran {ran} here" if ran else ""),
    }  # fmt: skip
    if not itself:
        roles[own] = f"defines '{symbol}' too; should have served it, was not used"
    instead = "its own definition" if itself else labels(own)
    cause = (
        f"'{symbol}' referenced by {labels(binding.referrer)} was served by "
        f"{labels(binding.provider)} instead of {instead}: {why}"
        + (
            f"; the crashing thread ran {ran} in {os.path.basename(binding.provider)}"
            if ran
            else ""
        )
    )
    return roles, cause


def named_in_text(
    hits: list[tuple[Binding, str]], text: str
) -> tuple[tuple[Binding, str], str] | None:
    """The hit whose copies the failure's own message names, and what named them: the
    library's name (``Wrong JPEG library version`` names ``libjpeg-1a2b3c4d.so.62``), else
    its version number (``caller expects 62``). The failing call ran in the library the
    message is about; how many other names another copy served says nothing of that."""
    text = _PATHS.sub(" ", text)  # a file's path names its directories, not the failure
    for match in (_names_library, _names_version):
        for hit in hits:
            for path in (hit[0].provider, hit[1]):
                said = match(path, text)
                if said:
                    return hit, f"{os.path.basename(path)} ({said})"
    return None


_PATHS = re.compile(r"\S*/\S*")
_HASH_TAIL = re.compile(r"[-_.][0-9a-f]{8}$")
_SONAME_VERSION = re.compile(r"\.so\.(\d+)")


def library_stem(path: str) -> str:
    """A library's name without ``lib``, the auditwheel hash and the version:
    ``libjpeg-1a2b3c4d.so.62.3.0`` -> ``jpeg``."""
    stem = os.path.basename(path).split(".so", 1)[0]
    stem = stem[3:] if stem.startswith("lib") else stem
    return _HASH_TAIL.sub("", stem).rstrip("-_.0123456789")


def _names_library(path: str, text: str) -> str:
    stem = library_stem(path)
    if len(stem) < 3:
        return ""
    found = re.search(rf"(?<![A-Za-z0-9]){re.escape(stem)}(?![A-Za-z0-9])", text, re.IGNORECASE)
    return f"'{found.group(0)}'" if found else ""


def _names_version(path: str, text: str) -> str:
    version = _SONAME_VERSION.search(os.path.basename(path))
    if version is None or len(version.group(1)) < 2:
        return ""
    said = re.search(rf"(?<![\d.]){version.group(1)}(?![\d.])", text)
    return f"version {version.group(1)}" if said else ""


def _largest_pair(
    hits: list[tuple[Binding, str]], failing: Sequence[str] = ()
) -> tuple[Binding, str]:
    """A hit of the (referrer, provider) pair with the most interposed references: with no
    crashing frame to point at, the pair that mixed the most is the suspect; among the pairs
    whose referrer the failing step mapped (``failing``: the code that failed), when there
    are any (another copy the global scope also serves may mix more without failing)."""
    mapped = {os.path.realpath(p) for p in failing}
    near = [hit for hit in hits if os.path.realpath(hit[0].referrer) in mapped]
    counts: dict[tuple[str, str], int] = {}
    for binding, _own in near or hits:
        key = (binding.referrer, binding.provider)
        counts[key] = counts.get(key, 0) + 1
    best = max(counts, key=lambda k: (counts[k], k))
    return next(hit for hit in hits if (hit[0].referrer, hit[0].provider) == best)


MIN_RENAMED = 10  # renamed routines that make a copy an ILP64 build of the other's interface
SUSPECTS_SHOWN = 24


def integer_width_split(
    referrer: ObjectInfo | None, provider: ObjectInfo | None, served: Sequence[str]
) -> tuple[tuple[str, str], int, list[str]] | None:
    """When ``provider`` is a 64-bit-integer (ILP64) build of ``referrer``'s interface, the
    served names it did not rename. The ILP64 naming appends ``64_`` to each interface
    routine (``dgemm_`` -> ``dgemm_64_``, ``cblas_dgemm`` -> ``cblas_dgemm64_``), so that both
    builds can share a process; a served name that keeps the plain Fortran form (a trailing
    underscore) in such a build is a routine built for 64-bit integers under the name the
    32-bit build uses. Returns (one renamed pair, how many were renamed, those names), or
    None when fewer than ``MIN_RENAMED`` of the referrer's routines are renamed there."""
    if referrer is None or provider is None:
        return None
    theirs = set(provider.facts.c_functions)
    renamed = []
    for name in referrer.facts.c_functions:
        if name in theirs:
            continue
        twin = next((t for t in (name + "64_", name[:-1] + "64_") if t in theirs), None)
        if twin is not None:
            renamed.append((name, twin))
    plain = sorted({n for n in served if n.endswith("_") and not n.endswith("64_")})
    if len(renamed) < MIN_RENAMED or not plain:
        return None
    # the example: a Fortran-form routine when there is one (``dgemm_`` -> ``dgemm_64_``)
    example = min(renamed, key=lambda pair: (not pair[0].endswith("_"), pair))
    return example, len(renamed), plain


def _pair_roles_and_cause(
    evidence: Evidence,
    hits: list[tuple[Binding, str]],
    binding: Binding,
    why: str,
    labels: Callable[[str], str],
) -> tuple[dict[str, str], str]:
    """Roles and cause for a failure no frame pins on one symbol: how many of the referrer's
    references the other copy served, with examples (no single name claimed as the cause);
    when the serving copy is an ILP64 build of the referrer's interface, the served routines
    it did not rename (:func:`integer_width_split`) as the likely culprits."""
    names = [
        b.symbol
        for b, _own in hits
        if (b.referrer, b.provider) == (binding.referrer, binding.provider)
    ]
    # Python loads extensions RTLD_NOW: every name binds at import, so neither the binding
    # order nor anything else in the trace says which the failing code called
    example = ", ".join(sorted(set(names))[:4])
    roles = {
        binding.referrer: f"{len(names)} of its references (e.g. {example}) were served by the "
        "other copy",
        binding.provider: f"served {len(names)} names to the other distribution (e.g. {example})",
    }
    referrer, provider = labels(binding.referrer), labels(binding.provider)
    split = integer_width_split(
        evidence.objects.get(binding.referrer), evidence.objects.get(binding.provider), names
    )
    width = ""
    if split is not None:
        width, extra = _width_texts(split, referrer, provider)
        roles[binding.referrer] += extra[0]
        roles[binding.provider] += extra[1]
    cause = (
        f"{len(names)} references of {referrer} to names it defines itself "
        f"(e.g. {example}) were served by {provider}: {why}{width}; {_NO_FRAME}"
    )
    return roles, cause


_NO_FRAME = "the run failed without a crash, so no frame names which of them went wrong"


def _width_texts(
    split: tuple[tuple[str, str], int, list[str]], referrer: str, provider: str
) -> tuple[str, tuple[str, str]]:
    """The cause's clause on an ILP64 serving copy, and what it adds to the two roles."""
    (plain, twin), count, suspects = split
    shown = ", ".join(suspects[:SUSPECTS_SHOWN])
    if len(suspects) > SUSPECTS_SHOWN:
        shown += f" and {len(suspects) - SUSPECTS_SHOWN} more"
    keep = "keeps" if len(suspects) == 1 else "keep"
    clause = (
        f"; {provider} is a 64-bit-integer (ILP64) build of the same interface ({count} of "
        f"its routines carry the ILP64 suffix, e.g. {twin} for {plain}), and {len(suspects)} "
        f"of the names it served {keep} the plain form, routines built for 64-bit integers "
        f"that {referrer} calls with 32-bit ones, the likely culprits: {shown}"
    )
    roles = (
        f"; calls {len(suspects)} unrenamed ILP64 routines: {shown}",
        f"; an ILP64 build ({twin} for {plain})",
    )
    return clause, roles


def _matching_frame(evidence: Evidence, hits: list[tuple[Binding, str]]) -> tuple[Binding, str]:
    """The hit whose symbol is the function through which the crashing thread entered the
    serving copy (C++ names compared demangled), else the next frame inwards, else the first
    hit. The innermost frame is often the copy's own code called from that entry point (a
    kernel the copy binds to itself, PROTECTED), though the referrer may reference that name
    too."""
    first = hits[0]
    provider = first[0].provider
    ran = [f for f in entry_functions(evidence.result, provider) if f]
    if not ran:
        return first
    served = [hit for hit in hits if hit[0].provider == provider]
    names = demangle([b.symbol for b, _own in served])
    for function in ran:
        for (binding, own), name in zip(served, names):
            if function in (binding.symbol, name):
                return binding, own
    return first


def demangle(symbols: Sequence[str]) -> list[str]:
    """Readable names of ``symbols`` (``c++filt``, when installed; else as given)."""
    tool = shutil.which("c++filt")
    if tool is None or not symbols:
        return list(symbols)
    try:
        proc = subprocess.run(
            [tool], input="\n".join(symbols), capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return list(symbols)
    names = proc.stdout.splitlines()
    return names if len(names) == len(symbols) else list(symbols)


def crashing_libraries(evidence: Evidence) -> set[str]:
    """Libraries the crashing thread ran in: its gdb frames, else the core's PC."""
    found = set(evidence.frame_libraries)
    found.update(os.path.realpath(p) for p in (evidence.crash_library, evidence.frame_library) if p)
    return found


def rule_for(binding: Binding) -> str:
    """The rule a binding's kind and symbol name: GNU_UNIQUE, a C++ name, or a C name."""
    if binding.kind == "unique":
        return "gnu-unique-shared"
    return "cxx-symbol-duplicate" if binding.symbol.startswith("_Z") else "symbol-interposition"


def load_mode(spec: RunSpec, provider: str, step_libraries: Sequence[Sequence[str]] = ()) -> str:
    """Why the provider was in the global scope, from the run's own settings (and, for an
    RTLD_GLOBAL import, which import mapped it)."""
    base = os.path.basename(provider)
    steps = [(i, s) for i, s in enumerate(spec.steps) if "RTLD_GLOBAL" in s]
    if any(os.path.basename(p) == base for p in spec.ld_preload):
        return f"LD_PRELOAD put {base} in the global scope"
    if spec.preload and spec.preload_mode == "global":
        return "a ctypes.CDLL(..., RTLD_GLOBAL) preload put its symbols in the global scope"
    imported = _global_import_of(spec, provider, step_libraries)
    if imported is not None:
        index, step = imported
        return (
            f"step {index} ({step!r}) was imported RTLD_GLOBAL and mapped {base}, so its "
            "symbols joined the global scope, which the loader searches before an object's "
            "own dependencies"
        )
    if steps:
        index, step = steps[0]
        return (
            f"step {index} ({step!r}) made the next imports RTLD_GLOBAL, so {base}'s symbols "
            "joined the global scope, which the loader searches before an object's own "
            "dependencies"
        )
    return "the two definitions met in one lookup scope"


def _global_import_of(
    spec: RunSpec, provider: str, step_libraries: Sequence[Sequence[str]]
) -> tuple[int, str] | None:
    """The RTLD_GLOBAL import (``global_imports``) whose step mapped ``provider``."""
    real = os.path.realpath(provider)
    for index, step in enumerate(spec.steps):
        mapped = step_libraries[index] if index < len(step_libraries) else ()
        if step in spec.global_imports and real in {os.path.realpath(p) for p in mapped}:
            return index, step
    return None


def verdict(evidence: Evidence, make: VerdictFn, labels: Callable[[str], str]) -> Verdict | None:
    """The interposition verdict when the evidence shows one behind the failure: the serving
    copy runs in the crashing thread, or the run failed (a wrong result) with no other
    mechanism named by its output."""
    hits = interposed(evidence)
    if not hits or _mechanism_named(evidence):
        return None
    in_frames = hits[0][0].provider in crashing_libraries(evidence)
    named = None if in_frames else named_in_text(hits, evidence.text)
    if in_frames:
        binding, own = _matching_frame(evidence, hits)
    else:
        binding, own = named[0] if named else _largest_pair(hits, evidence.failing_libraries)
    provider = evidence.objects.get(binding.provider)
    unique = binding.kind == "unique" or (
        provider is not None and binding.symbol in provider.facts.unique_symbols
    )
    if unique:
        binding = Binding(binding.referrer, binding.provider, binding.symbol, "unique")
    if not (in_frames or unique or (evidence.outcome == "failed" and not evidence.markers)):
        return None
    symbol = binding.symbol
    why = (
        "STB_GNU_UNIQUE symbols are merged process-wide even under RTLD_LOCAL"
        if unique
        else load_mode(evidence.result.spec, binding.provider, evidence.result.step_libraries)
    )
    ran = frame_function(evidence.result, binding.provider) if in_frames else None
    roles, cause = _roles_and_cause(binding, own, why, ran, labels)
    if not (in_frames or unique):
        roles, cause = _pair_roles_and_cause(evidence, hits, binding, why, labels)
    if named is not None:
        # the message says where the failing call ran: no frame was needed to name it
        cause = cause.replace(_NO_FRAME, f"the failure's message names {named[1]}")
    paths = list(dict.fromkeys([binding.referrer, binding.provider, own]))
    rule = rule_for(binding)
    findings = [f for f in evidence.findings if f.rule == rule and binding.provider in f.libraries]
    # The conflict is between the two copies (the serving one and the one that should have
    # served), whichever object of the second copy's distribution the evidence names as the
    # referrer: with or without a crash frame, and in either load order, one key.
    return make(
        evidence, rule, paths, findings, 3 + (1 if in_frames else 0), roles=roles,
        texts={"symbols": symbol}, cause_override=cause, key_paths=[binding.provider, own],
    )  # fmt: skip


def _mechanism_named(evidence: Evidence) -> bool:
    """The run's own output names a mechanism a static finding of the mapped set explains
    (``OMP: Error #15`` and two OpenMP copies): that rule, not the binding, is the cause."""
    for finding in evidence.findings:
        rule = rule_of(finding.rule)
        if rule is not None and rule.fits(evidence.markers):
            return True
    return False


def evidence_lines(evidence: Evidence, paths: Sequence[str], limit: int = 6) -> list[str]:
    """What the verdict's libraries share and how the loader bound them, in words: the
    cross-distribution bindings of the trace, then the names each pair exports in common."""
    lines = [
        f"binding: {os.path.basename(b.referrer)} -> {os.path.basename(b.provider)}: "
        f"{b.kind} symbol '{b.symbol}'"
        for b, _own in _into(interposed(evidence), paths)[:limit]
    ]
    if lines and evidence.trace_outcome:
        lines.append(
            f"binding trace: from a re-run of the minimal order that ended "
            f"{evidence.trace_outcome} (the failure did not recur); symbol binding depends only "
            "on the objects and their load order and mode, which were the same"
        )
    reals = dict.fromkeys(os.path.realpath(p) for p in paths)
    infos = [evidence.objects[p] for p in reals if p in evidence.objects]
    for i, first in enumerate(infos):
        for second in infos[i + 1 :]:
            shared = shared_symbols(first, second)
            if shared.total:
                lines.append(
                    f"shared: {os.path.basename(first.path)} and "
                    f"{os.path.basename(second.path)} both export {shared.describe()}"
                )
    return lines


def _into(hits: list[tuple[Binding, str]], paths: Sequence[str]) -> list[tuple[Binding, str]]:
    """``hits`` with those between the verdict's libraries first (stable otherwise)."""
    named = {os.path.realpath(p) for p in paths}
    return sorted(hits, key=lambda hit: not {hit[0].referrer, hit[0].provider} <= named)


def shared_names(bindings: Sequence[Binding], referrer: str, provider: str) -> list[str]:
    """Every symbol ``referrer`` took from ``provider`` (for the evidence lines)."""
    return sorted({b.symbol for b in bindings if b.referrer == referrer and b.provider == provider})
