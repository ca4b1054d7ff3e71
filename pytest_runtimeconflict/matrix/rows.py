"""One row of the matrix: the pairing's environment, then the plugin's planned run of it
(``python -m pytest --runtime-conflicts --rc-python <env python>``) in a temporary project
folder, restricted to the plan items that import a candidate module and a partner module
(``--rc-pairs-between``), and the row read back from the run's JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.matrix.catalogue import Partner
from pytest_runtimeconflict.matrix.envs import (
    Candidate,
    Installer,
    PairEnv,
    PairingError,
    ensure_env,
)
from pytest_runtimeconflict.matrix.results import Row, RowConflict, candidate_part
from pytest_runtimeconflict.report.aggregate import child_runs
from pytest_runtimeconflict.report.baseline import conflicts_of, normalise_distribution
from pytest_runtimeconflict.vocabulary import JsonObject, is_import_step

FAILING = ("crashed", "failed", "hung")
# Variables of the caller's shell that would change the planned run behind the matrix's back.
_DROPPED_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")


@dataclass(frozen=True)
class RowSettings:
    """What every row shares: the candidates, the installer, every pair or only the
    candidate-partner ones, extra arguments for the planned run."""

    candidates: tuple[Candidate, ...]
    installer: Installer
    all_pairs: bool = False
    pytest_args: tuple[str, ...] = ()


def run_row(partner: Partner, settings: RowSettings) -> Row:
    """The row of ``partner``: an ``error`` row when the pairing cannot be built or run."""
    start = time.monotonic()
    try:
        env = ensure_env(settings.candidates, partner.requirement, settings.installer)
    except PairingError as exc:
        return Row(partner.requirement, None, "error", error=str(exc), seconds=_since(start))
    version = env.versions.get(partner.name)
    try:
        groups = pairing_modules(env, settings, partner)
        report = _planned_run(env, groups, settings)
    except PairingError as exc:
        return Row(partner.requirement, version, "error", error=str(exc), seconds=_since(start))
    row = row_from_report(partner.requirement, version, report, _since(start), env.reused)
    if settings.all_pairs:
        return row
    return candidate_part(row, [c.name for c in settings.candidates], groups[0])


def _since(start: float) -> float:
    return round(time.monotonic() - start, 1)


def pairing_modules(env: PairEnv, settings: RowSettings, partner: Partner) -> list[list[str]]:
    """The candidates' and the partner's top-level import names in the environment;
    PairingError when a side has none."""
    from pytest_runtimeconflict.static.discover import discover_environment

    found = discover_environment(env.python, cache_dir=None)
    sides = [[c.name for c in settings.candidates], [partner.name]]
    groups = [_modules_of(found, names) for names in sides]
    for names, modules in zip(sides, groups):
        if not modules:
            raise PairingError(
                f"{', '.join(names)} installs no importable top-level module in the pairing's "
                "environment, so there is nothing to import in an order; pair it with a "
                "package that has one"
            )
    return groups


def _modules_of(env: Any, names: Sequence[str]) -> list[str]:
    """Public top-level names of the distributions ``names``, those with native code first
    (the plugin's default choice of modules, for these distributions only)."""
    from pytest_runtimeconflict.planning.from_scan import top_of

    out: list[str] = []
    for dist, tops in sorted(env.distributions.items()):
        if normalise_distribution(dist) not in names:
            continue
        native = {top_of(c.path) for c in env.candidates if c.distribution == dist}
        usable = [t for t in tops if is_import_step(t)]
        public = [t for t in usable if not t.startswith("_")]
        with_native = [t for t in public if t in native]
        out += with_native or public or [t for t in usable if t in native]
    return sorted(dict.fromkeys(out))


def planned_run_command(
    python: str, groups: Sequence[Sequence[str]], folder: Path, settings: RowSettings
) -> list[str]:
    """The plugin's planned run of the pairing's environment."""
    cmd = [
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
        "-c", str(folder / "pytest.ini"), f"--rootdir={folder}",
        "--runtime-conflicts", f"--rc-python={python}",
        f"--rc-report={folder / 'report.json'}", f"--rc-repro-dir={folder / 'repro'}",
    ]  # fmt: skip
    if not settings.all_pairs:
        cmd.append(f"--rc-modules={','.join(m for g in groups for m in g)}")
        cmd.append(f"--rc-pairs-between={':'.join(','.join(g) for g in groups)}")
    return [*cmd, *settings.pytest_args]


def _planned_run(
    env: PairEnv, groups: Sequence[Sequence[str]], settings: RowSettings
) -> JsonObject:
    with tempfile.TemporaryDirectory(prefix="rc-matrix-") as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\n")
        cmd = planned_run_command(env.python, groups, folder, settings)
        environ = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        proc = subprocess.run(
            cmd, cwd=folder, env=environ, capture_output=True, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        report = folder / "report.json"
        if proc.returncode not in (0, 1, 5) or not report.exists():
            tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-4:])
            raise PairingError(f"the planned run ended with exit {proc.returncode}: {tail}")
        data: JsonObject = json.loads(report.read_text())
        return data


def row_from_report(
    partner: str, version: str | None, report: JsonObject, seconds: float, reused: bool = False
) -> Row:
    """A row from the planned run's JSON report: its distinct conflicts (by the baseline's
    stable key), its latent runtime sets, its child runs."""
    entries = list(report.get("scenarios", []))
    conflicts: dict[str, RowConflict] = {}
    latent: dict[str, JsonObject] = {}
    for entry in entries:
        if entry.get("outcome") == "latent":
            for found in conflicts_of(entry):
                latent.setdefault(found.key, _latent_json(found))
        elif entry.get("outcome") in FAILING and entry.get("verdict"):
            for found in conflicts_of(entry):
                _keep(conflicts, RowConflict.from_entry(found, entry))
    outcome = "conflict" if conflicts else "latent" if latent else "clean"
    runs = child_runs([(str(e.get("nodeid", "")), e) for e in entries])
    return Row(
        partner, version, outcome, tuple(conflicts.values()), tuple(latent.values()),
        None, runs, seconds, reused,
    )  # fmt: skip


def _keep(conflicts: dict[str, RowConflict], found: RowConflict) -> None:
    """The first entry of a conflict, unless a later one knows whether it reproduces."""
    have = conflicts.get(found.key)
    if have is None or (have.reproduces is None and found.reproduces is not None):
        conflicts[found.key] = found


def _latent_json(found: Any) -> JsonObject:
    data: JsonObject = found.to_json()
    return {"rule": data["rule"], "libraries": data["libraries"]}
