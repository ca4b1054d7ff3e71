"""The rule registry: one :class:`Rule` record per rule id, everything the project knows about
that rule in one place.

A rule has a stable id (a public contract: documented in docs/rules.md, filtered on by users'
CI scripts), a family, a default severity, and optionally a static detector. The diagnosis
reads the rest: the failure markers that identify it in a live run, how to name the roles of
the libraries it involves, the cause and package-author advice templates, the rule-specific
counter-experiments, and a hint for when no experiment could run. Scenario-file validation and
the docs' rules reference read the registry too.

Adding a rule is one :func:`register` call (in a theme module of this package, or by a third
party before the scan runs), plus its tests and its docs section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_runtimeconflict.model import Finding, ObjectInfo

# Where a detector looks (see :func:`pytest_runtimeconflict.static.rules.evaluate`):
#   "reachable"    the runtime objects reachable from an extension (or mapped in one run)
#   "every-object" every scanned object, reachable or not (and every mapped object of a run)
#   "loader"       the per-extension closures of the loader model (scan only)
#   "run"          none: the diagnosis names the rule from a live run's evidence alone
SCOPES = ("reachable", "every-object", "loader", "run")
# How the diagnosis names the libraries of a verdict for this rule.
ROLE_STYLES = ("plain", "copies", "static-libstdcxx")
# Counter-experiments a rule asks for beyond the reverse order and its families' own.
EXPERIMENTS = ("preload-newest-soname", "drop-global")

ObjectDetector = Callable[[Sequence[ObjectInfo], bool], list[Finding]]


@dataclass(frozen=True)
class Rule:
    """Everything about one rule.

    ``detect``: for scopes ``reachable``/``every-object`` a callable ``(objects, mapped) ->
    findings`` (``mapped`` is True when the objects are known to be mapped in one process);
    for ``loader`` a callable ``(reach, info_of) -> findings``; None for ``run`` rules.
    ``markers``: prefixes of failure markers (``omp-error:15``, ``terminate:``) that fit it.
    ``cause``/``author_advice``: templates with ``{libs}``, ``{runtime}``, ``{exporter}``,
    ``{other}``, ``{soname}``, ``{version}``, ``{old}``, ``{needer}``, ``{symbols}``.
    ``duplicated_family``: a run that maps two files of this family supports the rule (the
    rule chosen for a duplicated family without a static finding, ``copies`` telling
    ``same-runtime`` from ``mixed`` implementations).
    ``order_unsafe``: reversing the import order only changes which copy wins.
    ``load_independent``: the failure comes from what the process does with one runtime (a
    fork after its thread pool started), not from which copies load or how: the diagnosis
    tries no load-mode experiment (reverse order, preload, ``LD_PRELOAD``), only the settings
    (each such run of a hang would wait the whole child timeout to show nothing).
    ``marks_latent``: a run that survives with this rule's libraries mapped together (and the
    finding at warning or error) is ``latent``, like a run with a runtime family mapped twice.
    """

    id: str
    family: str
    severity: str
    summary: str
    scope: str
    detect: Callable[..., list[Finding]] | None = None
    markers: tuple[str, ...] = ()
    roles: str = "plain"
    cause: str = ""
    author_advice: str = ""
    experiments: tuple[str, ...] = ()
    untried_hint: str = "try the reverse import order"
    duplicated_family: str | None = None
    copies: str | None = None
    order_unsafe: bool = False
    load_independent: bool = False
    hang_support: bool = False
    marks_latent: bool = False

    @property
    def verdict_only(self) -> bool:
        """Named by the diagnosis from a live run only (no static detector)."""
        return self.scope == "run"

    def fits(self, markers: Sequence[str]) -> bool:
        """Whether a live failure's markers are this rule's."""
        return any(m.startswith(p) for m in markers for p in self.markers)


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add ``rule`` to the registry (an id may be registered once)."""
    if rule.scope not in SCOPES:
        raise ValueError(f"rule {rule.id}: scope {rule.scope!r} is not one of {SCOPES}")
    if rule.roles not in ROLE_STYLES:
        raise ValueError(f"rule {rule.id}: roles {rule.roles!r} is not one of {ROLE_STYLES}")
    unknown = set(rule.experiments) - set(EXPERIMENTS)
    if unknown:
        raise ValueError(f"rule {rule.id}: unknown experiments {sorted(unknown)}")
    if rule.id in RULES:
        raise ValueError(f"rule {rule.id} is already registered")
    if (rule.detect is None) != (rule.scope == "run"):
        raise ValueError(f"rule {rule.id}: a detector is needed exactly when scope is not 'run'")
    RULES[rule.id] = rule
    return rule


def rule_of(rule_id: str | None) -> Rule | None:
    """The registered rule ``rule_id`` (None for None or an unknown id)."""
    return RULES.get(rule_id or "")


def rule_for_duplicated_family(family: str, implementations: int) -> Rule | None:
    """The rule a run supports when it maps two files of ``family`` (``implementations``
    distinct runtimes among them)."""
    wanted = "same-runtime" if implementations == 1 else "mixed"
    candidates = [r for r in RULES.values() if r.duplicated_family == family]
    exact = [r for r in candidates if r.copies in (None, wanted)]
    chosen = exact or candidates
    return chosen[0] if chosen else None
