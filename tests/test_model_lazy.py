"""``pytest_runtimeconflict.model`` imports its run and diagnosis records on first use: every
exported name still resolves, and a static scan's import of the package pays for neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest_runtimeconflict.model as model

ROOT = Path(__file__).resolve().parent.parent


def test_every_exported_record_resolves() -> None:
    for name in model.__all__:
        assert getattr(model, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        model.NoSuchRecord  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchRecord" in str(exc)
    else:
        raise AssertionError("model.NoSuchRecord resolved")


def test_facts_alone_do_not_import_run_and_diagnosis_records() -> None:
    code = (
        "import sys\n"
        "from pytest_runtimeconflict.model import ElfFacts, Finding, ObjectInfo\n"
        "print(sorted(m for m in sys.modules if m.startswith('pytest_runtimeconflict.model.')))\n"
        "from pytest_runtimeconflict.model import RunSpec\n"
        "print('pytest_runtimeconflict.model.run' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.splitlines()
    assert out == ["['pytest_runtimeconflict.model.facts']", "True"]
