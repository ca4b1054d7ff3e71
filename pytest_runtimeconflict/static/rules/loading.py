"""Rules about the loader: which copy of a SONAME serves later objects, and initial-exec TLS
of libraries that only arrive by dlopen. They work on the per-extension closures of the loader
model (:class:`Reach`), so only the scan applies them."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_runtimeconflict.model import Finding, ObjectInfo
from pytest_runtimeconflict.static.discover import WHEEL_SEP
from pytest_runtimeconflict.static.loader import LoaderModel, ProcessState, file_key
from pytest_runtimeconflict.static.pyimports import imported_on_import, module_name
from pytest_runtimeconflict.static.rules.common import describe, dists, identical_copies, libs
from pytest_runtimeconflict.static.rules.registry import Rule, register


@dataclass
class Reach:
    """Per-extension closures of an environment under the loader model."""

    base: set[str] = field(default_factory=set)  # paths the interpreter loads at start
    closures: dict[str, ProcessState] = field(default_factory=dict)  # extension -> process
    reached_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def resolved_by_name(self) -> dict[str, dict[str, list[str]]]:
        """SONAME -> file that served it -> the extensions whose closure it served, in
        closure order (computed once: both shadow rules walk it)."""
        if self._by_name is None:
            files: dict[str, dict[str, dict[str, None]]] = defaultdict(lambda: defaultdict(dict))
            for ext, state in self.closures.items():
                for (_req, name), path in state.resolved.items():
                    files[name][path][ext] = None
            self._by_name = {
                name: {path: list(exts) for path, exts in by_file.items()}
                for name, by_file in files.items()
            }
        return self._by_name

    _by_name: dict[str, dict[str, list[str]]] | None = field(default=None, repr=False)
    _version_shadows: list[Finding] | None = field(default=None, repr=False)


def compute_reach(
    objects: Sequence[ObjectInfo], loader: LoaderModel, initial: Sequence[str]
) -> Reach:
    """Load each extension on top of the interpreter's own closure (``initial``)."""
    base = loader.new_process(initial)
    reach = Reach(base=set(base.loaded))
    for info in objects:
        if not info.is_extension:
            continue
        state = base.copy()
        state.load(info.path)
        reach.closures[info.path] = state
        for path in state.loaded:
            reach.reached_by[path].add(info.path)
    return reach


def _version_shadow(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    if reach._version_shadows is None:  # soname-shadow asks too
        reach._version_shadows = _version_shadows(reach, info_of)
    return reach._version_shadows


def _version_shadows(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    out = []
    for name, by_file in sorted(reach.resolved_by_name().items()):
        if len({file_key(p) for p in by_file}) < 2:
            continue
        for f_path, a_exts in sorted(by_file.items()):
            f_info = info_of.get(f_path)
            if f_info is None or not f_info.facts.version_defs:
                continue  # glibc skips version checks against an unversioned object
            defs = set(f_info.facts.version_defs)
            for g_path, b_exts in sorted(by_file.items()):
                if file_key(g_path) == file_key(f_path):
                    continue
                for b_ext in sorted(b_exts):
                    missing = _needs_on(reach.closures[b_ext], name) - defs
                    if missing:
                        out.append(
                            _shadow_finding(
                                name, f_info, info_of, g_path, a_exts[0], b_ext, missing
                            )
                        )
                        break
    return out


def _content_id(path: str) -> str:
    """What a file holds, for telling byte-identical copies apart from different builds: the
    CRC of a wheel member, else a BLAKE2 digest of the file (only same-SONAME candidates are
    hashed, which are few)."""
    if WHEEL_SEP in path:
        wheel, member = path.split(WHEEL_SEP, 1)
        try:
            with zipfile.ZipFile(wheel) as zf:
                info = zf.getinfo(member)
            return f"crc:{info.CRC}:{info.file_size}"
        except (OSError, KeyError, zipfile.BadZipFile):
            return f"unreadable:{path}"
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return f"unreadable:{path}"
    return digest.hexdigest()


def _same_content(a: ObjectInfo, b: ObjectInfo) -> bool:
    """Byte-identical copies (the same build shipped twice)."""
    return a.facts.size == b.facts.size and _content_id(a.path) == _content_id(b.path)


def _soname_shadow(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    """Different files under one SONAME, reached by different extensions, that the loader will
    not tell apart: whichever loads first serves every later request, and no version
    requirement makes it refuse the wrong one (that case is soname-version-shadow). Runtime
    copies are their family rules' business."""
    versioned = [f.title for f in _version_shadow(reach, info_of)]
    out = []
    for name, by_file in sorted(reach.resolved_by_name().items()):
        infos = [info_of[p] for p in sorted(by_file) if p in info_of]
        clue = any(f": {name} lacks " in title for title in versioned)
        # checked before any file is hashed: a runtime copy among them (its identical copies
        # are runtimes too) is a family rule's business
        if len(infos) < 2 or clue or any(i.kind is not None for i in infos):
            continue
        distinct = [
            i for n, i in enumerate(infos) if not any(_same_content(i, j) for j in infos[:n])
        ]
        if len(distinct) < 2:
            continue
        exts = sorted({e for p in by_file for e in by_file[p]})
        if identical_copies(distinct):
            out.append(_identical_shadow(name, distinct, exts))
        else:
            out.append(_shadow(name, distinct, exts))
    return out


def _identical_shadow(name: str, distinct: Sequence[ObjectInfo], exts: Sequence[str]) -> Finding:
    return Finding(
        rule="soname-shadow",
        family="loader",
        severity="info",
        title=f"{len(distinct)} files are all {name}: identical copies",
        detail="; ".join(describe(i) for i in distinct) + f" are different files with the "
        f"SONAME {name}, needed by {', '.join(os.path.basename(e) for e in exts)}, but every "
        "section the loader maps (code, data, dynamic symbols) is identical: only debug "
        "information or notes differ, so whichever loads first runs the same code.",
        libraries=libs(distinct),
        distributions=dists(distinct),
        advice="Nothing to do.",
    )


def _shadow(name: str, distinct: Sequence[ObjectInfo], exts: Sequence[str]) -> Finding:
    return Finding(
        rule="soname-shadow",
        family="loader",
        severity="warning",
        title=f"{len(distinct)} different files are all {name}: the first loaded serves all",
        detail="; ".join(describe(i) for i in distinct) + f" are different files with "
        f"the SONAME {name}, needed by {', '.join(os.path.basename(e) for e in exts)}. "
        "The loader keeps the first one it loads and reuses it for every later request "
        "of that SONAME, and no version requirement makes it refuse the wrong one: "
        "whichever package is imported first decides which code the others run.",
        libraries=libs(distinct),
        distributions=dists(distinct),
        advice=f"Package authors: vendor {name} under a unique (hashed) SONAME, as "
        "auditwheel does, or depend on one shared copy. Users: import the package whose "
        f"{name} is the newest first.",
    )


def _needs_on(state: ProcessState, name: str) -> set[str]:
    needs: set[str] = set()
    for facts in state.loaded.values():
        for lib, versions in facts.version_needs:
            if lib == name:
                needs.update(versions)
    return needs


def _shadow_finding(
    name: str,
    f_info: ObjectInfo,
    info_of: dict[str, ObjectInfo],
    g_path: str,
    a_ext: str,
    b_ext: str,
    missing: set[str],
) -> Finding:
    involved = [f_info] + [info_of[p] for p in (g_path, a_ext, b_ext) if p in info_of]
    a_name, b_name = os.path.basename(a_ext), os.path.basename(b_ext)
    return Finding(
        rule="soname-version-shadow",
        family=f_info.kind.family if f_info.kind else name,
        severity="error",
        title=f"importing {a_name} before {b_name} fails: {name} lacks {', '.join(sorted(missing))}",
        detail=f"{a_ext} loads {name} from {f_info.path}; the loader then reuses it for every "
        f"later request of that SONAME. {b_ext} would load {g_path} but gets {f_info.path}, "
        f"which does not define version(s) {', '.join(sorted(missing))}: "
        f"ImportError \"version '{sorted(missing)[-1]}' not found\". The reverse order works.",
        libraries=libs(involved),
        distributions=dists(involved),
        advice=f"Package authors: do not vendor an old {name}, or give the vendored copy a unique "
        f"SONAME (auditwheel does). Users: import {b_name.split('.')[0]}'s package first, or "
        f"preload the newest {name} (LD_PRELOAD).",
    )


def _static_tls_late(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    """One finding per library file name: the same library shipped by two packages is one
    finding naming both copies."""
    copies: dict[str, list[ObjectInfo]] = defaultdict(list)
    for path in sorted(reach.reached_by):
        info = info_of.get(path)
        if info is None or not info.facts.static_tls or path in reach.base:
            continue
        copies[os.path.basename(path)].append(info)
    out = []
    for name, infos in sorted(copies.items()):
        info = infos[0]
        out.append(
            Finding(
                rule="static-tls-late",
                family=info.kind.family if info.kind else "tls",
                severity="info",
                title=f"{name} uses static TLS and is only loaded by dlopen",
                detail="; ".join(describe(i) for i in infos)
                + f" has DF_STATIC_TLS ({info.facts.tls_size} bytes of TLS); loaded late it "
                "must fit the static TLS surplus. On aarch64 this fails with 'cannot allocate "
                "memory in static TLS block' depending on import order.",
                libraries=libs(infos),
                distributions=dists(infos),
                advice="Package authors: build with -ftls-model=global-dynamic. Users: import this "
                "package first, preload the library, or raise glibc.rtld.optional_static_tls "
                "(GLIBC_TUNABLES).",
            )
        )
    return out


def _missing_needed(reach: Reach, info_of: dict[str, ObjectInfo]) -> list[Finding]:
    """DT_NEEDED entries that no directory the loader searches provides: the import fails.
    When every extension module that needs it is one ``import pkg`` does not import (an
    optional backend, read from the package's sources), the finding is info."""
    needers: dict[str, list[str]] = defaultdict(list)
    exts: dict[str, set[str]] = defaultdict(set)
    for ext, state in reach.closures.items():
        for missing in state.missing:
            exts[missing.soname].add(ext)
            if missing.requester not in needers[missing.soname]:
                needers[missing.soname].append(missing.requester)
    out = []
    for soname, requesters in sorted(needers.items()):
        infos = [info_of[p] for p in requesters if p in info_of]
        finding = missing_finding(soname, requesters, infos)
        optional = sorted(exts[soname])
        if all(imported_on_import(e) is False for e in optional):
            finding = optional_backend(finding, optional)
        out.append(finding)
    return out


def missing_finding(soname: str, requesters: Sequence[str], infos: Sequence[ObjectInfo]) -> Finding:
    """The ``needed-library-missing`` error for ``soname`` needed by ``requesters``."""
    names = ", ".join(sorted({os.path.basename(p) for p in requesters}))
    return Finding(
        rule="needed-library-missing",
        family="loader",
        severity="error",
        title=f"{soname} is needed by {names} but not found",
        detail=f"{'; '.join(sorted(requesters))} need(s) {soname}, which no directory "
        "the loader searches provides (the needer's RUNPATH/RPATH, LD_LIBRARY_PATH, "
        "ld.so.cache, the default directories): importing it fails with "
        f'"{soname}: cannot open shared object file".',
        libraries=libs(infos) or tuple(sorted(requesters)),
        distributions=dists(infos),
        advice=f"Users: install the system package that provides {soname}. Package "
        "authors: vendor it into the wheel (auditwheel repair) or declare the system "
        "dependency in the install instructions.",
    )


def optional_backend(finding: Finding, extensions: Sequence[str]) -> Finding:
    """``finding`` (needed-library-missing) as info: only ``extensions`` need the library,
    and importing their packages does not import them (an optional backend)."""
    soname = finding.title.split(" ", 1)[0]
    names = ", ".join(_dotted(e) for e in extensions)
    return dataclasses.replace(
        finding,
        severity="info",
        title=f"{soname} is needed only by {names}, which importing the package does not "
        "load (an optional backend)",
        detail=finding.detail + f" Only {names} need(s) it, and importing the package does "
        "not import that module (it is imported on demand, or its import failure is "
        "tolerated): the package imports and works without it; only that backend is "
        "unavailable.",
        advice=f"Users who want that backend: install the system package that provides {soname}.",
    )


def _dotted(path: str) -> str:
    named = module_name(path)
    return named[1] if named else os.path.basename(path)


register(
    Rule(
        id="soname-version-shadow",
        family="loader",
        severity="error",
        summary="an older copy of a SONAME loaded first lacks a version a later object needs",
        scope="loader",
        detect=_version_shadow,
        markers=("version:",),
        cause=(
            "{old} was loaded first and now serves the SONAME {soname} to every later object, "
            "but {needer} needs {version}, which that copy does not define"
        ),
        author_advice=(
            "do not vendor an older {soname} under its plain SONAME: whichever copy loads first "
            "serves every later object; require {version} from the system, or vendor a copy "
            "that defines every version your objects need under a unique (hashed) SONAME"
        ),
        experiments=("preload-newest-soname",),
        untried_hint="try importing the module that needs {version} first",
    )
)
register(
    Rule(
        id="static-tls-late",
        family="tls",
        severity="info",
        summary="a library with initial-exec TLS arrives only by dlopen",
        scope="loader",
        detect=_static_tls_late,
        markers=("static-tls",),
        cause=(
            "{libs} uses initial-exec TLS (DF_STATIC_TLS) and was loaded after the static TLS "
            "surplus was used up"
        ),
        author_advice=(
            "build the library without initial-exec TLS (-ftls-model=global-dynamic, no "
            "DF_STATIC_TLS) so it can be loaded late"
        ),
        untried_hint="try importing the package with static TLS first",
    )
)
register(
    Rule(
        id="needed-library-missing",
        family="loader",
        severity="error",
        summary="a DT_NEEDED library no directory the loader searches provides",
        scope="loader",
        detect=_missing_needed,
        markers=("missing:",),
        cause=(
            "{libs} need(s) {soname}, which no directory the loader searches provides, so the "
            "import fails before any conflict can happen"
        ),
        author_advice=(
            "vendor {soname} into the wheel (auditwheel repair) or declare the system package "
            "that provides it"
        ),
        untried_hint="install the system package that provides {soname}",
    )
)
register(
    Rule(
        id="soname-shadow",
        family="loader",
        severity="warning",
        summary="different files under one SONAME: the first loaded serves every later request",
        scope="loader",
        detect=_soname_shadow,
        cause=(
            "{libs} share a SONAME; the first loaded served every later request of it, so one "
            "package ran the other's copy"
        ),
        author_advice=(
            "vendor the library under a unique (hashed) SONAME, as auditwheel does, or depend "
            "on one shared copy"
        ),
        untried_hint="try the reverse import order",
    )
)
