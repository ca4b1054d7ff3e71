"""Confidence and the user's advice: the changes that avoided the failure, safest first."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_runtimeconflict.model import AvoidedBy, Evidence, Verdict
from pytest_runtimeconflict.model.diagnosis import _advice_rank
from pytest_runtimeconflict.static.rules import rule_of


def confidence(verdict: Verdict, tried: Sequence[AvoidedBy]) -> str:
    """``high``/``medium``/``low`` from the evidence score and a safe change that avoided it."""
    score = verdict.score + (1 if any(e.avoided and not e.unsafe for e in tried) else 0)
    if verdict.rule is None:
        return "low"
    if score >= 3:
        return "high"
    return "medium" if score >= 2 else "low"


def advice(
    verdict: Verdict,
    evidence: Evidence,
    tried: Sequence[AvoidedBy],
    experimented: bool,
    planned: bool,
) -> str:
    """The user's advice: the changes that avoided the failure, safest first."""
    if evidence.outcome == "passed":
        return "nothing to do: the run passed"
    avoiding = sorted((e for e in tried if e.avoided), key=_advice_rank)
    safe = [e for e in avoiding if not e.unsafe]
    if safe:
        also = (
            f" (also avoided by: {'; '.join(e.change for e in safe[1:3])})" if len(safe) > 1 else ""
        )
        return f"{safe[0].change} - found to avoid it{also}"
    if avoiding:
        return (
            f"only an unsafe change avoided it: {avoiding[0].change}; prefer keeping these "
            "modules in separate processes until the packages are fixed"
        )
    if not experimented:
        return "counter-experiments were not run; " + untried_hint(verdict)
    if tried and evidence.outcome == "latent":
        return (
            "no tried change removes the second copy (the process survives, but both copies "
            "run: expect oversubscribed cores and thread settings that reach only one copy); "
            "ask the packages' authors to share one runtime"
        )
    if tried:
        return (
            "none of the tried changes avoided it; keep these modules in separate processes "
            "until the packages are fixed"
        )
    if not planned:
        return "no counter-experiment applies; " + untried_hint(verdict)
    return "no counter-experiment could be run (child-run cap); " + untried_hint(verdict)


def untried_hint(verdict: Verdict) -> str:
    """What to try by hand, from the rule's registry entry."""
    rule = rule_of(verdict.rule)
    hint = rule.untried_hint if rule is not None else "try the reverse import order"
    return hint.format(
        version=verdict.version or "the missing version", soname=verdict.soname or "the library"
    )
