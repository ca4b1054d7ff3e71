"""The JSON report (schema ``pytest-runtimeconflict/report/1``): one entry per run, overlaid
with its diagnosis."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Union

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.files.atomic import write_atomically
from pytest_runtimeconflict.model import Diagnosis, RunResult
from pytest_runtimeconflict.vocabulary import REPORT_SCHEMA, JsonObject

Entry = Union[Mapping[str, Any], RunResult, "tuple[RunResult, Diagnosis | None]"]


def scenario_entry(result: RunResult, diagnosis: Diagnosis | None = None) -> JsonObject:
    """One report entry: the run's keys, overlaid with the diagnosis's keys when there is one.

    The diagnosis's ``libraries`` (objects with path, distribution, family, runtime, role) and
    ``findings`` replace the sandbox's; ``libraries`` keeps every blamed path under ``path``.
    """
    entry = dict(result.to_json())
    if diagnosis is not None:
        entry.update(diagnosis.to_json())
    return entry


def report_json(entries: Iterable[Entry]) -> JsonObject:
    """``{"schema": ..., "scenarios": [...]}`` from entries given as ready dicts, as
    ``(result, diagnosis_or_None)`` pairs, or as bare results."""
    scenarios = []
    for entry in entries:
        if isinstance(entry, Mapping):
            scenarios.append(dict(entry))
        elif isinstance(entry, tuple):
            scenarios.append(scenario_entry(*entry))
        else:
            scenarios.append(scenario_entry(entry))
    return {"schema": REPORT_SCHEMA, "scenarios": scenarios}


def write_report(path: str, data: Mapping[str, Any], option: str = "--json") -> None:
    """Write a JSON report to ``path`` atomically (a link there is replaced, not followed);
    ``UsageError`` naming ``option`` when it cannot."""
    try:
        write_atomically(path, (json.dumps(data, indent=2) + "\n").encode())
    except OSError as exc:
        raise UsageError(
            f"cannot write {option} {path!r}: {exc.strerror}; check the directory"
        ) from exc
