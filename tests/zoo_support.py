"""Session fixtures for the scenario zoo: built wheels and one venv holding all of them.

Import into a conftest (``from zoo_support import *  # noqa``). Builds are cached under
``$RC_ZOO_CACHE`` or .test-cache/zoo; file locks make concurrent xdist workers safe
(the first builds, the others wait and reuse).

``run_plain`` runs a scenario's steps in a plain child interpreter (no sandbox code), the
ground truth the zoo's expectations are checked against.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import signal as signal_module
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cbuild import CACHE

from pytest_runtimeconflict import zoo
from pytest_runtimeconflict.errors import BuildError
from pytest_runtimeconflict.model import RunSpec
from pytest_runtimeconflict.scenario import Scenario, load_scenarios

__all__ = [
    "ZooVenv",
    "ZooWheels",
    "PlainResult",
    "run_plain",
    "zoo_cache_dir",
    "zoo_venv",
    "zoo_wheels",
]

SCENARIOS_DIR = Path(__file__).resolve().parent.parent / "scenarios"
# Variables that would hide or change a conflict when inherited by accident (threadpoolctl
# sets KMP_DUPLICATE_LIB_OK on import; see the field notes).
SCRUBBED_ENV = ("KMP_DUPLICATE_LIB_OK", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def zoo_cache_dir() -> Path:
    """``$RC_ZOO_CACHE`` or .test-cache/zoo."""
    env = os.environ.get(zoo.CACHE_ENV)
    return Path(env) if env else CACHE / "zoo"


class ZooWheels(dict):  # type: ignore[type-arg]
    """scenario name -> wheel paths, plus ``skipped`` and ``errors`` (name -> reason)."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def check(self, name: str) -> list[Path]:
        """The wheels of ``name``; skip (missing toolchain) or fail (build error) otherwise."""
        if name in self.skipped:
            pytest.skip(self.skipped[name])
        if name in self.errors:
            pytest.fail(self.errors[name], pytrace=False)
        return list(self[name])


@dataclass
class ZooVenv:
    """A venv with every buildable zoo wheel installed."""

    python: str
    scenarios: dict[str, Scenario]
    wheels: ZooWheels = field(default_factory=ZooWheels)


def build_all(cache: Path) -> ZooWheels:
    """Build every scenario (cached), collecting skips and errors per scenario."""
    result = ZooWheels()
    os.environ.setdefault(zoo.CACHE_ENV, str(cache))  # downloads share the test cache
    for scenario in load_scenarios(SCENARIOS_DIR):
        missing = zoo.missing_requirements(scenario)
        if missing:
            result.skipped[scenario.name] = "; ".join(missing)
            continue
        try:
            result[scenario.name] = zoo.build_scenario(scenario, cache)
        except BuildError as exc:
            result.errors[scenario.name] = str(exc)
    return result


@pytest.fixture(scope="session")
def zoo_wheels() -> ZooWheels:
    """Every zoo scenario built into wheels (name -> paths; ``.skipped``, ``.errors``)."""
    return build_all(zoo_cache_dir())


@pytest.fixture(scope="session")
def zoo_venv(zoo_wheels: ZooWheels) -> ZooVenv:
    """One venv holding all zoo wheels: ``.python`` (str) and ``.scenarios`` (name -> Scenario)."""
    wheels = [w for name in sorted(zoo_wheels) for w in zoo_wheels[name]]
    python = zoo.make_venv(zoo_cache_dir() / "venv", wheels)
    scenarios = {s.name: s for s in load_scenarios(SCENARIOS_DIR)}
    return ZooVenv(python=str(python), scenarios=scenarios, wheels=zoo_wheels)


@dataclass(frozen=True)
class PlainResult:
    """What a plain child run ended with."""

    returncode: int
    signal: int | None
    failed_step: int | None
    stdout: str
    stderr: str
    mapped: tuple[str, ...]
    timed_out: bool = False

    @property
    def text(self) -> str:
        return self.stderr + self.stdout


def child_source(spec: RunSpec) -> str:
    """A plain Python program running ``spec``'s preloads and steps, printing markers.

    ``zoo-step N`` goes to stderr before step N; at the end every mapped file path is printed
    as ``zoo-mapped PATH`` (read from /proc/self/maps by the child itself).
    """
    lines = ["import ctypes, os, sys", "ns = {'__name__': '__main__'}"]
    flag = "os.RTLD_GLOBAL" if spec.preload_mode == "global" else "os.RTLD_LOCAL"
    for lib in spec.preload:
        lines.append(f"ctypes.CDLL({lib!r}, {flag} | os.RTLD_NOW)")
    for index, step in enumerate(spec.steps):
        code = f"import {step}" if _DOTTED.match(step) else step
        lines.append(f"sys.stderr.write('zoo-step {index}\\n'); sys.stderr.flush()")
        lines.append(f"exec(compile({code!r}, '<step {index}>', 'exec'), ns)")
    lines += [
        "paths = sorted({l.split(None, 5)[5].strip() for l in open('/proc/self/maps') "
        "if len(l.split(None, 5)) == 6 and l.split(None, 5)[5].startswith('/')})",
        "print('\\n'.join('zoo-mapped ' + p for p in paths))",
    ]
    return "\n".join(lines) + "\n"


def run_plain(python: str, spec: RunSpec) -> PlainResult:
    """Run ``spec`` in a fresh ``python`` (a plain subprocess) and collect the result."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(spec.env)
    if spec.ld_preload:
        env["LD_PRELOAD"] = ":".join(spec.ld_preload)
    cmd = [python, "-c", child_source(spec)]
    # A session of its own, so a hung run's forked children are killed with it.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=spec.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal_module.SIGKILL)
        out, err = proc.communicate()
        return PlainResult(-9, None, _last_step(err), out, err, (), timed_out=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal_module.SIGKILL)
    mapped = tuple(
        line.split(" ", 1)[1] for line in stdout.splitlines() if line.startswith("zoo-mapped ")
    )
    signal = -proc.returncode if proc.returncode < 0 else None
    return PlainResult(proc.returncode, signal, _last_step(stderr), stdout, stderr, mapped)


def _last_step(stderr: str) -> int | None:
    steps = re.findall(r"^zoo-step (\d+)$", stderr, re.MULTILINE)
    return int(steps[-1]) if steps else None


def runtime_copies(result: PlainResult, scenario: Scenario) -> list[str]:
    """Mapped runtime libraries matching the scenario's ``libraries`` patterns.

    Python extension modules are left out: a latent conflict is two *runtime* copies mapped.
    """
    found = []
    for path in result.mapped:
        base = os.path.basename(path)
        if ".cpython-" in base:
            continue
        if any(fnmatch.fnmatch(base, pattern) for pattern in scenario.libraries):
            found.append(path)
    return found


def classify(result: PlainResult, scenario: Scenario) -> str:
    """passed | crashed | failed | hung | latent, from a plain run."""
    if result.timed_out:
        return "hung"
    if result.signal is not None:
        return "crashed"
    if result.returncode != 0:
        return "failed"
    return "latent" if len(runtime_copies(result, scenario)) >= 2 else "passed"


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/zoo_support.py
    built = build_all(zoo_cache_dir())
    sys.stdout.write(f"built={dict(built)} skipped={built.skipped} errors={built.errors}\n")
