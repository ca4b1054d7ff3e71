"""``python -m pytest_runtimeconflict demo``: build the scenario zoo into real wheels, install
them into a throwaway venv, run ``pytest --runtime-conflicts`` on the scenario files against
that venv and show what it found. Exit 0 when every scenario behaved as its manifest says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import UsageError


def _default_scenarios() -> Path:
    here = Path.cwd() / "scenarios"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "scenarios"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenarios",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of scenario folders (default: ./scenarios or the bundled zoo)",
    )
    parser.add_argument(
        "--venv",
        type=Path,
        default=None,
        metavar="DIR",
        help="where to create the zoo venv (default: a temporary directory, removed after)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="wheel cache (default: $RC_ZOO_CACHE or ~/.cache/pytest-runtimeconflict/zoo)",
    )
    parser.add_argument(
        "-n",
        "--workers",
        default="2" if (os.cpu_count() or 1) > 1 else "0",
        help="pytest-xdist workers for the run (0 = serial; default 2)",
    )
    parser.add_argument(
        "--report", type=Path, default=None, metavar="FILE", help="also keep the JSON report here"
    )
    parser.add_argument(
        "-k",
        dest="select",
        default=None,
        metavar="EXPR",
        help="only scenarios/runs matching this pytest -k expression",
    )


def main(args: argparse.Namespace) -> int:
    from pytest_runtimeconflict import zoo

    scenarios = (args.scenarios or _default_scenarios()).resolve()
    if not scenarios.is_dir():
        raise UsageError(f"no scenario directory at {scenarios}; pass --scenarios DIR")
    cache = args.cache or zoo.default_cache_dir()
    _say(f"building the scenario zoo from {scenarios} (cache: {cache})")
    wheels = zoo.build_zoo(scenarios, cache, python=sys.executable)
    all_wheels = [w for ws in wheels.values() for w in ws]
    with tempfile.TemporaryDirectory(prefix="rc-demo-") as tmp:
        venv_dir = args.venv or Path(tmp) / "venv"
        _say(f"installing {len(all_wheels)} wheels into {venv_dir}")
        python = zoo.make_venv(venv_dir, all_wheels, python=sys.executable)
        report = args.report or Path(tmp) / "report.json"
        code = _run_pytest(scenarios, Path(python), report, args, Path(tmp))
        if report.exists():
            _print_table(json.loads(report.read_text()))
    verdict = "every scenario behaved as its manifest says" if code == 0 else "MISMATCH"
    _say(f"demo finished: {verdict} (pytest exit code {code})")
    return 0 if code == 0 else 1


def _run_pytest(
    scenarios: Path, python: Path, report: Path, args: argparse.Namespace, tmp: Path
) -> int:
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\n")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(scenarios),
        "-c",
        str(ini),
        "--rootdir",
        str(scenarios),
        "-p",
        "no:cacheprovider",
        "--runtime-conflicts",
        f"--rc-python={python}",
        "--rc-modules=none",
        f"--rc-report={report}",
        "-rxXfE",
        "-v",
    ]
    if args.workers not in ("0", 0, None):
        cmd += ["-n", str(args.workers)]
    if args.select:
        cmd += ["-k", args.select]
    _say("running: " + " ".join(cmd))
    sys.stdout.flush()
    return subprocess.call(cmd, cwd=tmp)


def _print_table(report: dict[str, Any]) -> None:
    rows = []
    for entry in report.get("scenarios", []):
        scen = entry.get("scenario") or {}
        expected = (scen.get("expected") or {}).get("outcome", "?")
        observed = entry.get("outcome", "?")
        if entry.get("signal"):
            observed += f" {entry['signal']}"
        libs = ", ".join(os.path.basename(lib) for lib in entry.get("libraries", []))
        avoided = [a["change"] for a in entry.get("avoided_by", []) if a.get("outcome") == "passed"]
        rows.append(
            (
                f"{scen.get('name')}::{scen.get('run')}",
                expected,
                observed,
                "ok" if scen.get("matched") else "MISMATCH",
                libs,
                avoided[:1],
            )
        )
    _say("")
    _say(f"{'scenario::run':58} {'expected':9} {'observed':17} {'':8} libraries")
    for name, expected, observed, ok, libs, avoided in sorted(rows):
        _say(f"{name:58} {expected:9} {observed:17} {ok:8} {libs}")
        if avoided:
            _say(f"{'':58}   avoided by: {avoided[0]}")


def _say(text: str) -> None:
    print(text, flush=True)
