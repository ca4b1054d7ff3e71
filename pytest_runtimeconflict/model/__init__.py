"""Records that flow from one stage to the next (discover -> facts -> findings -> plan -> run ->
post-mortem -> diagnosis -> report), in one place. All frozen and built complete: a stage makes
new records, it never patches the ones it was given.

Every record has ``to_json()`` returning plain JSON-able data with the public keys named in the
issues; those keys are a contract that users' CI scripts parse.
"""

from __future__ import annotations

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
from pytest_runtimeconflict.model.facts import (
    SEVERITIES,
    ElfFacts,
    Finding,
    ObjectInfo,
    RuntimeKind,
)
from pytest_runtimeconflict.model.run import (
    Binding,
    MappedRuntime,
    RunResult,
    RunSpec,
    duplicated_families,
)
from pytest_runtimeconflict.vocabulary import OUTCOMES

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
