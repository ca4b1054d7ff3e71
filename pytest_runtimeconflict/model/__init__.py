"""Records that flow from one stage to the next (discover -> facts -> findings -> plan -> run ->
post-mortem -> diagnosis -> report), in one place. All frozen and built complete: a stage makes
new records, it never patches the ones it was given.

Every record has ``to_json()`` returning plain JSON-able data with the public keys named in the
issues; those keys are a contract that users' CI scripts parse.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_runtimeconflict.model.facts import (
    SEVERITIES,
    ElfFacts,
    Finding,
    ObjectInfo,
    RuntimeKind,
)
from pytest_runtimeconflict.vocabulary import OUTCOMES

if TYPE_CHECKING:
    from pytest_runtimeconflict.model.diagnosis import (
        CONFIDENCES,
        KINDS,
        AvoidedBy,
        Diagnosis,
        Evidence,
        Experiment,
        LibraryRole,
        Verdict,
    )
    from pytest_runtimeconflict.model.run import (
        Binding,
        MappedRuntime,
        RunResult,
        RunSpec,
        duplicated_families,
    )

# Imported on first use (PEP 562): a static scan needs only the facts records, and the run
# and diagnosis records cost every `scan` start their import (a fast start matters for CI).
_LAZY = {
    **dict.fromkeys(
        ("CONFIDENCES", "KINDS", "AvoidedBy", "Diagnosis", "Evidence", "Experiment")
        + ("LibraryRole", "Verdict"),
        "pytest_runtimeconflict.model.diagnosis",
    ),
    **dict.fromkeys(
        ("Binding", "MappedRuntime", "RunResult", "RunSpec", "duplicated_families"),
        "pytest_runtimeconflict.model.run",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONFIDENCES",
    "KINDS",
    "OUTCOMES",
    "SEVERITIES",
    "AvoidedBy",
    "Binding",
    "Diagnosis",
    "ElfFacts",
    "Evidence",
    "Experiment",
    "Finding",
    "LibraryRole",
    "MappedRuntime",
    "ObjectInfo",
    "RunResult",
    "RunSpec",
    "RuntimeKind",
    "Verdict",
    "duplicated_families",
]
