"""The words every stage shares, defined once: outcomes, what ``--fail-on`` fails on, the report
schema, the plan's node prefix, the environment-variable prefix, what an import step is, and
signal names."""

from __future__ import annotations

import os
import re
import signal
import warnings
from typing import Any

# A JSON object as read or written: a file, a child's event line, a report entry once it left
# the engine. Records inside the engine are typed (``model/``); this is their boundary.
JsonObject = dict[str, Any]

OUTCOMES = ("passed", "crashed", "failed", "hung", "latent")
REPORT_SCHEMA = "pytest-runtimeconflict/report/1"
BASELINE_SCHEMA = "pytest-runtimeconflict/baseline/1"
# --rc-annotations / merge --annotations: auto = github when $GITHUB_ACTIONS is "true".
ANNOTATION_CHOICES = ("auto", "github", "none")
SCAN_SCHEMA = "pytest-runtimeconflict/scan/1"
PLAN_NODE = "runtime-conflicts"
# Seconds before a child run counts as hung (run --timeout, --rc-timeout, a manifest's timeout).
DEFAULT_TIMEOUT = 60.0
# The record of a process a step forked, read when the run timed out (sandbox/hung.py); the
# diagnosis reads it as it reads the fork-after-workload probe's.
FORKED_CHILD = "forked-child"

# One meaning of each --fail-on / --rc-fail-on value, for ``run`` and the plugin alike.
FAIL_ON_CHOICES = ("crash", "error", "latent")
FAILING: dict[str, tuple[str, ...]] = {
    "crash": ("crashed", "hung"),
    "error": ("crashed", "hung", "failed"),
    "latent": ("crashed", "hung", "failed", "latent"),
}

ENV_PREFIX = "PYTEST_RUNTIMECONFLICT_"
# Old names of the project's environment variables, still read (with a deprecation warning).
_OLD_ENV_NAMES = {
    "FACTS_CACHE": "RC_FACTS_CACHE",
    "ZOO_CACHE": "RC_ZOO_CACHE",
    "ZOO_PYTHON": "RC_ZOO_PYTHON",
}

# An import step: a dotted name the child imports (``numpy``, ``scipy.linalg``). Python
# keywords are statements (``pass``), never modules.
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_IMPORT_STMT = re.compile(r"import\s+([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*")
_KEYWORDS = frozenset(
    [
        "False",
        "None",
        "True",
        "and",
        "as",
        "assert",
        "async",
        "await",
        "break",
        "class",
        "continue",
        "def",
        "del",
        "elif",
        "else",
        "except",
        "finally",
        "for",
        "from",
        "global",
        "if",
        "import",
        "in",
        "is",
        "lambda",
        "nonlocal",
        "not",
        "or",
        "pass",
        "raise",
        "return",
        "try",
        "while",
        "with",
        "yield",
    ]
)


def fails(outcome: str, fail_on: str) -> bool:
    """Whether ``outcome`` fails a run under ``--fail-on fail_on``."""
    return outcome in FAILING[fail_on]


def module_of_step(step: str) -> str | None:
    """The module a step imports (``numpy`` for ``numpy`` and ``import numpy``), else None."""
    step = step.strip()
    if _DOTTED.fullmatch(step) and not any(p in _KEYWORDS for p in step.split(".")):
        return step
    match = _IMPORT_STMT.fullmatch(step)
    return match.group(1) if match else None


def is_import_step(step: str) -> bool:
    """A dotted module name (the child imports it) or a plain ``import NAME`` statement."""
    return module_of_step(step) is not None


def signal_name(signum: int | str | None) -> str | None:
    """``SIGSEGV`` for 11 (or "11", "segv", "SIGSEGV"); ``signal 64`` for numbers without a
    name; None for None or an unknown name."""
    if signum is None:
        return None
    text = str(signum).strip()
    if text.lstrip("-").isdigit():
        try:
            return signal.Signals(abs(int(text))).name
        except ValueError:
            return f"signal {abs(int(text))}"
    name = text.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    return name if name in signal.Signals.__members__ else None


def env_setting(name: str) -> str | None:
    """``$PYTEST_RUNTIMECONFLICT_<name>``, or its old name with a deprecation warning."""
    value = os.environ.get(ENV_PREFIX + name)
    if value is not None:
        return value
    old = _OLD_ENV_NAMES.get(name)
    if old and old in os.environ:
        warnings.warn(
            f"${old} is deprecated; set ${ENV_PREFIX}{name} instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return os.environ[old]
    return None
