"""The object behind the ``runtime_sandbox`` fixture: steps run in a fresh child interpreter
from a test, and a failing result diagnosed (no pytest import: the plugin hands it out)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_runtimeconflict.model import Diagnosis, RunResult


@dataclasses.dataclass
class RuntimeSandbox:
    """Run steps in a fresh child interpreter from a test: ``runtime_sandbox.run([...])``."""

    python: str
    timeout: float
    exercise: bool = True

    def run(self, steps: list[str] | tuple[str, ...], **kwargs: Any) -> RunResult:
        """Run ``steps`` (dotted name = import, else a statement); returns the RunResult."""
        from pytest_runtimeconflict.model import RunSpec
        from pytest_runtimeconflict.sandbox.runner import run_spec

        for key in ("preload", "ld_preload", "global_imports", "probes"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if "env" in kwargs and isinstance(kwargs["env"], dict):
            kwargs["env"] = tuple(sorted(kwargs["env"].items()))
        kwargs.setdefault("python", self.python)
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("exercise", self.exercise)
        return run_spec(RunSpec(steps=tuple(steps), **kwargs))

    def diagnose(self, result: RunResult, **kwargs: Any) -> Diagnosis:
        """Minimise a failing result and run the counter-experiments (a Diagnosis)."""
        from pytest_runtimeconflict.diagnosis import diagnose

        return diagnose(result.spec, result, **kwargs)
