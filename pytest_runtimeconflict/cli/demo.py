"""``python -m pytest_runtimeconflict demo``: build the scenario zoo into real wheels, install
them into a throwaway venv, run ``pytest --runtime-conflicts`` on the scenario files against
that venv and show what it found. Exit 0 when every scenario behaved as its manifest says.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.sandbox.progress import progress_line
from pytest_runtimeconflict.vocabulary import JsonObject


def bundled_scenarios() -> Path:
    """The scenario zoo this package carries.

    An installed wheel or sdist has it as package data (``pytest_runtimeconflict/zoo_scenarios``,
    mapped from the repository's ``scenarios/`` by pyproject.toml); a clone or an editable
    install runs from the repository, whose ``scenarios/`` is the source of truth.
    """
    package = Path(__file__).resolve().parents[1]
    installed = package / "zoo_scenarios"
    if installed.is_dir():
        return installed
    return package.parent / "scenarios"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenarios",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory of scenario folders (default: the zoo this package carries)",
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
        help="wheel cache (default: $PYTEST_RUNTIMECONFLICT_ZOO_CACHE or ~/.cache/pytest-runtimeconflict/zoo)",
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
    parser.add_argument(
        "--html",
        type=Path,
        default=None,
        metavar="FILE",
        help="write part 2's HTML report (runtime map, a card per conflict) to FILE",
    )
    parser.add_argument(
        "--no-plan",
        action="store_true",
        help="skip part 2: planned import orders over every zoo module, without manifests",
    )


def main(args: argparse.Namespace) -> int:
    from pytest_runtimeconflict import zoo
    from pytest_runtimeconflict.scenario import load_scenarios

    scenarios = (args.scenarios or bundled_scenarios()).resolve()
    if not scenarios.is_dir():
        where = "--scenarios" if args.scenarios else "the bundled zoo"
        raise UsageError(
            f"no scenario directory at {scenarios} ({where}); pass --scenarios DIR, "
            "or reinstall pytest-runtimeconflict from a wheel or sdist that ships its zoo"
        )
    cache = args.cache or zoo.default_cache_dir()
    _say(f"building the scenario zoo from {scenarios} (cache: {cache})")
    skipped: dict[str, str] = {}
    wheels = _build(scenarios, cache, skipped)
    for name, reason in sorted(skipped.items()):
        _say(f"SKIPPED scenario {name}: {reason}")
    ignore = [f"--ignore={s.path.parent}" for s in load_scenarios(scenarios) if s.name in skipped]
    all_wheels = [w for ws in wheels.values() for w in ws]
    with tempfile.TemporaryDirectory(prefix="rc-demo-") as tmp:
        venv_dir = args.venv or Path(tmp) / "venv"
        _say(f"installing {len(all_wheels)} wheels into {venv_dir}")
        python = Path(zoo.make_venv(venv_dir, all_wheels, python=sys.executable))
        report = args.report or Path(tmp) / "report.json"
        _say("\n== part 1: each scenario file's runs, checked against their expected outcome ==")
        code = _run_pytest(scenarios, python, report, args, Path(tmp), ignore)
        if report.exists():
            _print_table(json.loads(report.read_text()))
        if not args.no_plan and not args.select:
            _say("\n== part 2: pytest --runtime-conflicts on the zoo environment, no manifests ==")
            _say("Targets for the static findings, the fork probe, import orders and load-mode")
            _say("variants are planned over every module that ships ELF objects; each distinct")
            _say("conflict found is one failure. Conflicts are the point here, so this part is")
            _say("shown, not judged.")
            _run_plan(python, args, Path(tmp))
            plan_report = Path(tmp) / "plan-report.json"
            if plan_report.exists():
                _say_found(json.loads(plan_report.read_text()))
            _say_classes(load_scenarios(scenarios), plan_report, skipped)
    verdict = "every scenario behaved as its manifest says" if code == 0 else "MISMATCH"
    _say(f"\ndemo finished: {verdict} (pytest exit code {code})")
    return 0 if code == 0 else 1


def _build(scenarios: Path, cache: Path, skipped: dict[str, str]) -> dict[str, list[Path]]:
    """Build every scenario's wheels (cached), with a progress line on a terminal."""
    from pytest_runtimeconflict import zoo
    from pytest_runtimeconflict.scenario import load_scenarios

    names = [s.name for s in load_scenarios(scenarios)]
    wheels: dict[str, list[Path]] = {}
    with progress_line() as line:
        for index, name in enumerate(names, start=1):
            if line is not None:
                line.show(f"building scenario {index} of {len(names)}: {name}")
            wheels.update(
                zoo.build_zoo(scenarios, cache, sys.executable, names=[name], skipped=skipped)
            )
    return wheels


def _run_pytest(
    scenarios: Path,
    python: Path,
    report: Path,
    args: argparse.Namespace,
    tmp: Path,
    ignore: list[str],
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
        # The table below shows every run's outcome: pytest's own lines stay short.
        "-q",
        "-rfE",
        *ignore,
    ]
    if args.workers not in ("0", 0, None):
        cmd += ["-n", str(args.workers)]
    if args.select:
        cmd += ["-k", args.select]
    return _run_quietly(cmd, tmp, tmp / "part1.log", "part 1")


def _run_plan(python: Path, args: argparse.Namespace, tmp: Path) -> int:
    empty = tmp / "plan"
    empty.mkdir()
    ini = empty / "pytest.ini"
    ini.write_text("[pytest]\n")
    cmd = [
        sys.executable, "-m", "pytest", str(empty), "-c", str(ini), "--rootdir", str(empty),
        "-p", "no:cacheprovider", "--runtime-conflicts", f"--rc-python={python}",
        f"--rc-report={tmp / 'plan-report.json'}", "--tb=no", "-q",
    ]  # fmt: skip
    if args.workers not in ("0", 0, None):
        cmd += ["-n", str(args.workers)]
    if args.html:
        cmd.append(f"--rc-html={args.html.resolve()}")
    return _run_quietly(cmd, tmp, tmp / "part2.log", "part 2")


def _run_quietly(cmd: list[str], cwd: Path, log: Path, label: str) -> int:
    """Run pytest with its output in ``log`` (the demo prints what it found from the report,
    not pytest's progress, warnings summary and per-failure text); on a terminal a progress
    line shows pytest's latest line meanwhile. Prints pytest's closing line, and its last lines
    when it did not finish its run (exit code over 1: interrupted, internal or usage error)."""
    import time

    _say("running: " + " ".join(cmd))
    with open(log, "w+b") as out, progress_line() as line:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if line is not None:
                line.show(f"{label}: pytest", _last_line(log))
            time.sleep(0.5)
    lines = log.read_text(errors="replace").splitlines()
    closing = next((ln.strip("= ") for ln in reversed(lines) if _CLOSING.search(ln)), "")
    _say(f"pytest ({label}): {closing or f'exit code {proc.returncode}'}")
    if proc.returncode > 1:
        for text in lines[-20:]:
            _say("  " + text)
    return proc.returncode


_CLOSING = re.compile(r"^=*\s*\d+ \w+.* in \d+(?:\.\d+)?s\b")


def _last_line(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 400))
            tail = fh.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def _say_found(report: JsonObject) -> None:
    """What part 2 found: one line per distinct conflict, the latent sets and the coverage."""
    from pytest_runtimeconflict.report.aggregate import coverage, latent_sets
    from pytest_runtimeconflict.report.html import conflict_cards, minimal_order

    collected = [(str(e.get("nodeid", "")), e) for e in report.get("scenarios", [])]
    cards = conflict_cards(collected)
    _say(f"\n{len(cards)} distinct conflict(s):")
    for _, entry, _, members in cards:
        verdict = entry.get("verdict") or {}
        what = " ".join(x for x in (entry.get("outcome"), entry.get("signal")) if x)
        order = _clip(minimal_order(entry), 90)
        seen = len({n for n, _ in members})
        _say(f"- {verdict.get('rule') or 'unattributed'}: {what}, {order} ({seen} item(s))")
    latent = latent_sets(e for _, e in collected if e.get("outcome") == "latent")
    families = sorted({family for family, _ in latent})
    _say(f"latent: {len(latent)} set(s) of runtime copies mapped together without a crash"
         + (f" ({', '.join(families)})" if families else ""))  # fmt: skip
    covered = coverage(collected)
    if covered is not None:
        _say(covered.describe())


def _clip(text: str, limit: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _say_classes(scenarios: Any, report: Path, skipped: dict[str, str]) -> None:
    from pytest_runtimeconflict.cli.democlasses import class_lines

    if report.exists():
        built = [s for s in scenarios if s.name not in skipped]
        _say("")
        for line in class_lines(built, json.loads(report.read_text())):
            _say(line)


def _print_table(report: JsonObject) -> None:
    rows = []
    for entry in report.get("scenarios", []):
        scen = entry.get("scenario") or {}
        expected = (scen.get("expected") or {}).get("outcome", "?")
        observed = entry.get("outcome", "?")
        if entry.get("signal"):
            observed += f" {entry['signal']}"
        libs = ", ".join(os.path.basename(lib) for lib in entry.get("libraries", []))
        avoided = [a["change"] for a in entry.get("avoided_by", []) if not a.get("unsafe")]
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
