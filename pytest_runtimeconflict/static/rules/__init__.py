"""Static rules: findings from ELF facts and the loader model, driven by the rule registry.

Each theme module (:mod:`.runtimes`, :mod:`.libstdcxx`, :mod:`.cxx`, :mod:`.loading`,
:mod:`.fork`) holds its detectors and registers one :class:`~.registry.Rule` per rule id; this
module runs them.

:func:`evaluate` works on an environment: a runtime object counts when it is *reachable*, i.e.
in the DT_NEEDED closure of at least one extension module. :func:`findings_for_mapped` works on
objects known to be mapped in one live process (the sandbox's ``/proc/PID/maps``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pytest_runtimeconflict.model import Finding, ObjectInfo
from pytest_runtimeconflict.static.loader import LoaderModel
from pytest_runtimeconflict.static.objects import FactsReader, info_of
from pytest_runtimeconflict.static.rules import (  # noqa: F401  (each registers its rules)
    cxx,
    environment,
    fork,
    interposition,
    libstdcxx,
    loading,
    runtimes,
)
from pytest_runtimeconflict.static.rules.common import unique_by_path
from pytest_runtimeconflict.static.rules.loading import Reach, compute_reach
from pytest_runtimeconflict.static.rules.registry import RULES, Rule, register, rule_of

__all__ = [
    "RULES",
    "Reach",
    "Rule",
    "compute_reach",
    "evaluate",
    "findings_for_mapped",
    "register",
    "rule_of",
]

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _run_object_rules(scope: str, objects: Sequence[ObjectInfo], mapped: bool) -> list[Finding]:
    found: list[Finding] = []
    for rule in RULES.values():
        if rule.scope == scope and rule.detect is not None:
            found += rule.detect(objects, mapped)
    return found


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(
        dict.fromkeys(findings),
        key=lambda f: (_SEVERITY_ORDER.get(f.severity, 3), f.rule, f.libraries),
    )


def default_loader(objects: Sequence[ObjectInfo]) -> LoaderModel:
    """A loader over ``objects`` (by path) with the file system as fallback."""
    known = {o.path: o.facts for o in objects}
    reader = FactsReader()
    return LoaderModel(lambda p: known.get(p) or reader(p))


def evaluate(
    objects: Sequence[ObjectInfo],
    loader: LoaderModel | None = None,
    *,
    initial: Sequence[str] | None = None,
    reach: Reach | None = None,
) -> list[Finding]:
    """Findings for an environment: runtime objects count when reachable from an extension;
    ``every-object`` rules see every object; ``loader`` rules the closures.

    ``initial`` is what the interpreter loads at start (default: the running executable).
    """
    loader = loader or default_loader(objects)
    if reach is None:
        reach = compute_reach(objects, loader, initial or (os.path.realpath(sys.executable),))
    infos = {o.path: o for o in objects}
    for path in reach.reached_by:
        if path not in infos:
            facts = loader.facts_for(path)
            if facts is not None:
                infos[path] = info_of(facts, None)
    reachable = [infos[p] for p in sorted(reach.reached_by) if p in infos]
    extra = [
        o for o in objects if o.path not in reach.reached_by and (o.is_extension or o.distribution)
    ]
    findings = _run_object_rules("reachable", reachable, False)
    findings += _run_object_rules("every-object", unique_by_path([*reachable, *extra]), False)
    for rule in RULES.values():
        if rule.scope == "loader" and rule.detect is not None:
            findings += rule.detect(reach, infos)
    return _sorted(findings)


def findings_for_mapped(objects: Sequence[ObjectInfo]) -> list[Finding]:
    """Findings supported by ``objects``, all known to be mapped in one process."""
    unique = unique_by_path(objects)
    found = _run_object_rules("reachable", unique, True)
    found += _run_object_rules("every-object", unique, True)
    return _sorted(found)
