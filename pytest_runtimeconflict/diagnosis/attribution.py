"""Attribution: from the evidence of a minimal failing run to a :class:`Verdict` (the rule the
evidence confirms best, the libraries with their roles and distributions, the cause in words).
Every rule-specific text and marker comes from the rule registry."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence

from pytest_runtimeconflict.diagnosis.candidates import newest_candidate
from pytest_runtimeconflict.diagnosis.evidence import _LIBC_NAMES, describe
from pytest_runtimeconflict.diagnosis.forked import FORK_CALL, fork_verdict, refused_verdict
from pytest_runtimeconflict.diagnosis.interposition import verdict as interposition_verdict
from pytest_runtimeconflict.diagnosis.signature import _VERSION_NOT_FOUND, exception_type_of
from pytest_runtimeconflict.model import Evidence, Finding, LibraryRole, ObjectInfo, Verdict
from pytest_runtimeconflict.static.rules import rule_of
from pytest_runtimeconflict.static.rules.registry import rule_for_duplicated_family

_SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}
_GENERIC_AUTHOR_ADVICE = (
    "reproduce the minimal sequence under gdb (thread apply all bt) to see which library's "
    "code fails or waits; vendor no private copies of shared runtimes"
)


def attribute(evidence: Evidence) -> Verdict:
    """Choose the rule the evidence confirms best and describe the libraries it involves."""
    if evidence.outcome == "passed":
        return _verdict(evidence, None, [], [], 0)
    shadow = _version_shadow(evidence) or _missing_library(evidence)
    if shadow is not None:
        return shadow
    forked = (
        refused_verdict(evidence, _verdict)
        or fork_verdict(evidence, _verdict)
        or _fork_after_openmp(evidence)
    )
    if forked is not None:
        return forked
    bound = interposition_verdict(evidence, _verdict, lambda p: _label(p, evidence))
    if bound is not None:
        return bound
    ranked = sorted(evidence.findings, key=lambda f: _finding_rank(f, evidence))
    if ranked and _finding_support(ranked[0], evidence) > 0:
        best = ranked[0]
        same = [f for f in ranked if f.rule == best.rule]
        paths = _dedupe(p for f in same for p in f.libraries)
        score = 1 + _finding_support(best, evidence)
        return _verdict(evidence, best.rule, paths, same, score)
    return _fallback(evidence, ranked)


def _fork_after_openmp(evidence: Evidence) -> Verdict | None:
    """A hang in a run that forked while an OpenMP runtime the failure needs was mapped."""
    if evidence.outcome != "hung":
        return None
    steps = "\n".join(evidence.result.spec.steps)
    traceback = evidence.result.python_traceback or ""
    probed = any(e.get("kind") == "fork" for e in evidence.result.exercised)  # the fork probe
    if not (probed or FORK_CALL.search(steps) or FORK_CALL.search(traceback)):
        return None
    openmp = sorted(
        (p for p, (family, _r) in evidence.runtimes.items()
         if family == "openmp" and p in evidence.necessary),
        key=evidence.order_of,
    )  # fmt: skip
    if not openmp:
        return None
    return _verdict(evidence, "openmp-fork-hang", openmp, [], 2)


def crash_pointer(evidence: Evidence) -> set[str] | None:
    """The objects a crash points at: the crashing thread's frames outside glibc and the
    interpreter, the library its program counter was in, the initialiser that was running
    (realpaths); None when the run did not crash or nothing but glibc and Python ran there.
    Idle threads of a pool parked elsewhere are no part of it."""
    if evidence.outcome != "crashed":
        return None
    found = [*evidence.frame_libraries, evidence.crash_library, evidence.init_library]
    real = {os.path.realpath(p) for p in found if p}
    pointed = {p for p in real if not _LIBC_NAMES.match(os.path.basename(p))}
    pointed = {p for p in pointed if not os.path.basename(p).startswith("libpython")}
    return pointed or None


def _pointed_or_bound(evidence: Evidence, pointer: set[str]) -> set[str]:
    """``pointer`` with every object bound into it across distributions (the referrers of
    the loader's bindings that another distribution's copy in the crash served)."""
    bound = {os.path.realpath(b.referrer) for b in evidence.bindings if b.provider in pointer}
    return pointer | bound


def _finding_support(finding: Finding, evidence: Evidence) -> int:
    """How strongly the run's own evidence supports a static finding (0 = not at all).

    A crash whose frames point elsewhere supports no finding over other objects (however
    many idle threads those objects run) unless the output names the finding's mechanism."""
    libs = {os.path.realpath(p) for p in finding.libraries}
    pointer = crash_pointer(evidence)
    rule = rule_of(finding.rule)
    fits = rule is not None and rule.fits(evidence.markers)
    if pointer is not None and not fits and not libs & _pointed_or_bound(evidence, pointer):
        return 0
    score = 0
    if libs & evidence.active:
        score += 1
    # Every step of a 1-minimal sequence is needed for the failure, so the libraries those
    # steps mapped are implicated; a finding whose libraries they all are fits the failure.
    if libs and libs <= evidence.necessary and evidence.outcome != "passed":
        score += 1
    if fits:
        score += 2
    duplicated = evidence.duplicated_families()
    if evidence.outcome == "latent" and rule and rule.duplicated_family in duplicated:
        score += 1
    if evidence.outcome == "hung" and rule is not None and rule.hang_support:
        score += 1
    return score


def _finding_rank(finding: Finding, evidence: Evidence) -> tuple[int, int, str]:
    return (
        -_finding_support(finding, evidence),
        _SEVERITY_RANK.get(finding.severity, 3),
        finding.rule,
    )


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


# ``/path/x.so: undefined symbol: NAME, version V``: the object needs NAME at version V
_UNDEFINED_VERSIONED = re.compile(
    r"(?P<by>/\S+?): undefined symbol: (?P<symbol>[^,\s]+), version (?P<version>[\w.@]+)"
)


def _version_shadow(evidence: Evidence) -> Verdict | None:
    """``version `X' not found``: the SONAME's first-loaded copy lacks a version a later
    object needs (the loader keys objects by SONAME); or ``undefined symbol: NAME, version
    X``: that copy defines the version but not the symbol."""
    match = _VERSION_NOT_FOUND.search(evidence.text)
    if match is None:
        return _symbol_shadow(evidence)
    version, old, needer = match.group("version"), match.group("lib"), match.group("by")
    return _shadow_verdict(evidence, _resolve_mapped(evidence, old), needer, version, version)


def _symbol_shadow(evidence: Evidence) -> Verdict | None:
    """``undefined symbol: NAME, version X`` where the needer takes version X from a SONAME
    whose loaded copy comes from another distribution: that copy, loaded first, serves the
    SONAME and lacks NAME (an older build of the library)."""
    match = _UNDEFINED_VERSIONED.search(evidence.text)
    if match is None:
        return None
    needer, symbol, version = match.group("by"), match.group("symbol"), match.group("version")
    info = _info(needer, evidence)
    if info is None:
        return None
    sonames = [lib for lib, versions in info.facts.version_needs if version in versions]
    loaded = [_resolve_mapped(evidence, s) for s in sonames]
    found = [(p, _info(p, evidence)) for p in loaded if os.path.isabs(p)]
    old, owner = next(((p, o) for p, o in found if o is not None), (None, None))
    if old is None or owner is None or owner.distribution in (None, info.distribution):
        return None
    return _shadow_verdict(evidence, old, needer, version, f"{symbol} (version {version})")


def _shadow_verdict(
    evidence: Evidence, old_path: str, needer: str | None, version: str, needs: str
) -> Verdict:
    """The soname-version-shadow verdict: ``old_path`` serves the SONAME, ``needer`` needs
    ``needs`` (a version, or a symbol at a version) it lacks."""
    soname = _soname_of(evidence, old_path) or os.path.basename(old_path)
    newest = newest_candidate(soname, version, evidence)
    if newest is not None and os.path.realpath(newest) == os.path.realpath(old_path):
        newest = None  # the loaded copy itself defines the version (it lacks the symbol)
    paths = [p for p in (old_path, needer and needer.strip(), newest) if p]
    findings = [f for f in evidence.findings if f.rule == "soname-version-shadow"]
    score = 3 + (1 if findings else 0)
    roles = {old_path: f"older {soname} loaded first (lacks {needs})"}
    if needer:
        roles[needer.strip()] = f"needs {needs}"
    if newest:
        roles[newest] = f"newer {soname} defining {version} (not used)"
    texts = {
        "old": _label(old_path, evidence),
        "soname": soname,
        "needer": _label(needer.strip(), evidence) if needer else "a later object",
        "version": needs,
    }
    return _verdict(
        evidence,
        "soname-version-shadow",
        _dedupe(paths),
        findings,
        score,
        roles=roles,
        texts=texts,
        extra={"soname": soname, "version": version, "needer": needer},
    )


def _missing_library(evidence: Evidence) -> Verdict | None:
    """``X: cannot open shared object file``: a DT_NEEDED no searched directory provides.
    Nothing conflicts yet; the advice is to provide the library, not to change runtimes."""
    missing = sorted(m.split(":", 1)[1] for m in evidence.markers if m.startswith("missing:"))
    if evidence.outcome != "failed" or not missing:
        return None
    soname = missing[0]
    findings = [f for f in evidence.findings if f.rule == "needed-library-missing"]
    step = evidence.result.failed_step
    what = repr(evidence.result.spec.steps[step]) if step is not None else "a step"
    cause = (
        f"{what} needs {soname} (a DT_NEEDED of what it loads), which no directory the loader "
        "searches provides, so the import fails before any conflict can happen"
    )
    return _verdict(
        evidence,
        "needed-library-missing",
        list(evidence.failing_libraries),
        findings,
        3,
        texts={"soname": soname},
        extra={"soname": soname},
        cause_override=cause,
    )


def _resolve_mapped(evidence: Evidence, name: str) -> str:
    """A path from an error message, or the mapped object with that basename/SONAME."""
    if os.path.isabs(name):
        return name
    for path, info in evidence.objects.items():
        if os.path.basename(path) == name or info.facts.soname == name:
            return path
    return name


def _soname_of(evidence: Evidence, path: str) -> str | None:
    info = _info(path, evidence)
    return info.facts.soname if info is not None else None


def _verdict(
    evidence: Evidence,
    rule_id: str | None,
    paths: Sequence[str],
    findings: Sequence[Finding],
    score: int,
    *,
    roles: dict[str, str] | None = None,
    texts: dict[str, str] | None = None,
    extra: dict[str, str | None] | None = None,
    cause_override: str | None = None,
    key_paths: Sequence[str] = (),
) -> Verdict:
    """The complete verdict for ``rule_id`` over ``paths`` (roles and cause from the registry;
    ``roles`` and ``texts`` override the generic role names and fill the cause template;
    ``key_paths``, when given, are the libraries that identify the conflict, else all)."""
    rule = rule_of(rule_id)
    libraries = [_library(p, evidence, rule_id) for p in paths]
    libraries.sort(key=lambda lib: evidence.order_of(lib.path))
    if rule is not None and rule.roles == "copies":
        libraries = _copy_roles(libraries)
    if roles:
        libraries = [dataclasses.replace(x, role=roles.get(x.path, x.role)) for x in libraries]
    families = {lib.family for lib in libraries if lib.family}
    if rule is not None and rule.duplicated_family:
        families.add(rule.duplicated_family)
    author = rule.author_advice if rule is not None else _GENERIC_AUTHOR_ADVICE
    return Verdict(
        rule=rule_id,
        libraries=tuple(libraries),
        findings=tuple(findings),
        score=score,
        cause=cause_override or _cause(rule_id, libraries, evidence, texts or {}),
        author_advice=author.format_map(_Blank(texts)) if texts else author,
        key=conflict_key(rule_id, list(key_paths) or [lib.path for lib in libraries], evidence),
        families=tuple(sorted(families)),
        **(extra or {}),
    )


def _info(path: str, evidence: Evidence) -> ObjectInfo | None:
    """The description of ``path``: from the run when it was mapped, else read now."""
    info = evidence.objects.get(os.path.realpath(path))
    if info is None and os.path.isabs(path) and os.path.exists(path):
        info = next(iter(describe([path])), None)
    return info


def _library(path: str, evidence: Evidence, rule: str | None) -> LibraryRole:
    real = os.path.realpath(path)
    info = _info(path, evidence)
    kind = info.kind if info is not None else None
    family, runtime = (
        (kind.family, kind.runtime)
        if kind is not None
        else evidence.runtimes.get(real, (None, None))
    )
    return LibraryRole(
        path=path,
        distribution=info.distribution if info is not None else None,
        family=family,
        runtime=runtime,
        role=_role(path, info, evidence, rule),
    )


def _role(path: str, info: ObjectInfo | None, evidence: Evidence, rule_id: str | None) -> str:
    rule = rule_of(rule_id)
    if rule is not None and rule.roles == "static-libstdcxx":
        if info is not None and info.kind is not None and info.kind.family == "libstdc++":
            return "shared libstdc++"
        hidden = rule_id == "libstdcxx-static-hidden" or (
            info is not None and info.static_libstdcxx == "hidden"
        )
        return "static libstdc++ (hidden)" if hidden else "static libstdc++ exporter"
    real = os.path.realpath(path)
    if evidence.crash_library and real == os.path.realpath(evidence.crash_library):
        return "crashing thread's library"
    if evidence.init_library and real == os.path.realpath(evidence.init_library):
        return "initialiser running at the crash"
    if evidence.frame_library and real == os.path.realpath(evidence.frame_library):
        return "innermost non-libc code of the crashing thread"
    if path in evidence.failing_libraries:
        return "loaded by the failing step"
    if real in evidence.runtimes and real in evidence.necessary:
        family, runtime = evidence.runtimes[real]
        return f"{runtime} ({family}) mapped by a step the failure needs"
    return "loaded"


def _copy_roles(libraries: list[LibraryRole]) -> list[LibraryRole]:
    """Number the copies of a duplicated runtime in load order ("first copy", "second copy")."""
    names = ("first copy", "second copy", "third copy")
    out = []
    for index, lib in enumerate(libraries):
        label = names[index] if index < len(names) else f"copy {index + 1}"
        what = lib.runtime or lib.family or "runtime"
        out.append(dataclasses.replace(lib, role=f"{label} of {what}"))
    return out


def _label(path: str, evidence: Evidence) -> str:
    info = evidence.objects.get(os.path.realpath(path))
    dist = info.distribution if info is not None else None
    base = os.path.basename(path)
    return f"{base} (from {dist})" if dist else base


def _cause(
    rule_id: str | None, libraries: list[LibraryRole], evidence: Evidence, texts: dict[str, str]
) -> str:
    """The rule's cause template filled in with the libraries' names and distributions."""
    labels = [_label(lib.path, evidence) for lib in libraries]
    rule = rule_of(rule_id)
    if rule is None or not rule.cause:
        what = _what_broke(evidence)
        if labels:
            return f"{what}; no known runtime conflict explains it (libraries involved: {', '.join(labels)})"
        return f"{what}; no known runtime conflict explains it"
    exporters = [_label(x.path, evidence) for x in libraries if "static" in x.role]
    others = [_label(x.path, evidence) for x in libraries if "static" not in x.role]
    if rule.roles == "static-libstdcxx" and len(exporters) > 1 and not others:
        # Two static exporters and no shared copy: each is the other's second libstdc++.
        exporters, others = exporters[:1], exporters[1:]
    runtimes = sorted({x.runtime for x in libraries if x.runtime})
    values = {
        "exporter": " and ".join(exporters) or "an extension",
        "other": " and ".join(others) or "another copy",
        "libs": ", ".join(labels) or "unknown libraries",
        "runtime": "/".join(runtimes) or "runtime",
        **texts,
    }
    return rule.cause.format_map(_Blank(values))


class _Blank(dict):  # type: ignore[type-arg]
    """Format values with unknown keys left as ``?`` (a template may name more than a verdict
    knows)."""

    def __missing__(self, key: str) -> str:
        return "?"


def _what_broke(evidence: Evidence) -> str:
    if evidence.outcome == "crashed":
        return f"the run crashed with {evidence.signal}"
    if evidence.outcome == "failed":
        return f"the run failed with {exception_type_of(evidence.result) or 'an error'}"
    return f"the run {evidence.outcome}"


def _fallback(evidence: Evidence, ranked: list[Finding]) -> Verdict:
    """No static finding is confirmed by the run: objects the failure needs that export the
    same C++ symbols, duplicated families, or else whatever the evidence points at."""
    pointer = crash_pointer(evidence)
    near = _pointed_or_bound(evidence, pointer) if pointer is not None else None
    shared = [p for p in shared_cxx_exports(evidence) if near is None or {*p[:2]} & near]
    if shared:
        first, second, symbols = shared[0]
        findings = [f for f in ranked if f.rule == "cxx-symbol-duplicate"]
        example = ", ".join(symbols[:2])
        role = f"exports {len(symbols)} C++ symbols also exported by the other (e.g. {example})"
        roles = {first: role, second: role}
        return _verdict(evidence, "cxx-symbol-duplicate", [first, second], findings, 2, roles=roles)
    # a family's duplicate explains a crash only when the crash ran in one of its copies
    dup = sorted(
        f
        for f in evidence.duplicated_families()
        if near is None or any(p in near for p, (g, _r) in evidence.runtimes.items() if g == f)
    )
    if dup:
        family = dup[0]
        paths = sorted(
            (p for p, (f, _r) in evidence.runtimes.items() if f == family), key=evidence.order_of
        )
        rule = rule_for_duplicated_family(family, len({evidence.runtimes[p][1] for p in paths}))
        rule_id = rule.id if rule is not None else None
        findings = [f for f in ranked if f.rule == rule_id]
        return _verdict(evidence, rule_id, paths, findings, 1 + (1 if findings else 0))
    # Runtimes mapped by the steps the failure needs are the prime suspects (e.g. a hang in a
    # runtime's thread pool after fork).
    needed_runtimes = sorted(
        (p for p in evidence.runtimes if p in evidence.necessary), key=evidence.order_of
    )
    if pointer is not None:
        return _verdict(evidence, None, _crash_paths(evidence, pointer)[:4], [], 0)
    paths = _dedupe(
        p
        for p in (
            evidence.frame_library,
            _unless_libc(evidence.crash_library),
            evidence.init_library,
            *evidence.failing_libraries,
            *needed_runtimes,
        )
        if p
    )
    return _verdict(evidence, None, paths[:4], [], 0)


def _crash_paths(evidence: Evidence, pointer: set[str]) -> list[str]:
    """The objects the crash points at, innermost frame first."""
    ordered = [evidence.frame_library, *evidence.frame_libraries, evidence.crash_library]
    paths = [os.path.realpath(p) for p in (*ordered, evidence.init_library) if p]
    return [p for p in _dedupe(paths) if p in pointer]


def shared_cxx_exports(evidence: Evidence) -> list[tuple[str, str, list[str]]]:
    """Pairs of objects mapped by the necessary steps that export the same C++ symbols.

    The static rule needs many shared symbols to speak up (scans must not be noisy); here the
    minimisation has already shown both objects are needed, so any shared export counts.
    """
    needed = [
        o
        for p, o in sorted(evidence.objects.items())
        if p in evidence.necessary and o.facts.cxx_exports and o.kind is None
    ]
    pairs = []
    for index, first in enumerate(needed):
        for second in needed[index + 1 :]:
            common = sorted(set(first.facts.cxx_exports) & set(second.facts.cxx_exports))
            if common:
                pairs.append((first.facts.path, second.facts.path, common))
    pairs.sort(key=lambda pair: -len(pair[2]))
    return pairs


def _unless_libc(path: str | None) -> str | None:
    return None if not path or _LIBC_NAMES.match(os.path.basename(path)) else path


def _key_name(path: str) -> str:
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{os.path.basename(path)}" if parent else os.path.basename(path)


def conflict_key(rule: str | None, paths: Sequence[str], evidence: Evidence | None = None) -> str:
    """A stable identity for one conflict: the rule and the sorted library names, each with
    its directory's name (``scs.libs/libopenblas-r0-11edc3fa.3.15.so``).

    Independent of import order, so the same conflict found through different sequences
    de-duplicates to one entry; independent of where the environment lives, so shards and
    xdist workers agree; but two copies that share a file name (two wheels vendoring the same
    auditwheel-renamed library, or two ``libiomp5.so``) stay apart.
    """
    names = ",".join(sorted({_key_name(p) for p in paths}))
    if rule is None and evidence is not None:
        rule = "unattributed-" + (
            str(evidence.signal) if evidence.outcome == "crashed" else evidence.outcome
        )
    return f"{rule or 'unattributed'}:{names}"
