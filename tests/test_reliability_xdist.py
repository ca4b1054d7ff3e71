"""pytest-xdist: same collection everywhere, the plan run once, the JSON report complete.

Real sessions serial, ``-n 2`` and ``-n 3`` over the same modules; the JSON report of each is
compared entry by entry (node id and the steps of every child run). xdist itself fails a
session whose workers collected different items ("Different tests were collected").
"""

from __future__ import annotations

import json
import re
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from cbuild import compile_shared
from venvs import make_venv

pytest_plugins = ["pytester"]

MODULES = {
    "rx_a": "VALUE = 1\n",
    "rx_b": "import json\n",
    "rx_c": "import os\n",
    "rx_d": "import re\n",
    # rx_crash dies when rx_a was imported before it: an order-dependent conflict, so the
    # plan's repairs and the diagnosis run too (and must not be doubled by workers).
    "rx_crash": "import os, signal, sys\nif 'rx_a' in sys.modules:\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
}
# A long sequence's node id has a space: runtime-conflicts::seq-01[5 modules]
NODE_LINE = re.compile(
    r"(runtime-conflicts::\S+?(?:\[\d+ modules\])?) (?:PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\b|(?:PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR) (runtime-conflicts::\S+(?: modules\])?)"
)
MODULE_SETS = {
    "three-pairs": ("rx_a,rx_b,rx_c", "2"),
    "five-triples-with-crash": ("rx_a,rx_b,rx_c,rx_d,rx_crash", "3"),
}


def session(
    pytester: pytest.Pytester, name: str, modules: str, strength: str, *extra: str
) -> tuple[pytest.RunResult, dict]:
    report = pytester.path / f"report-{name}.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--runtime-conflicts",
        f"--rc-modules={modules}",
        f"--rc-strength={strength}",
        "--rc-max-runs=3",
        f"--rc-report={report}",
        "-v",
        *extra,
    )
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text and "Different tests were collected" not in text, text[
        -3000:
    ]
    return result, json.loads(report.read_text())


def runs(report: dict) -> Counter[tuple[str, tuple[str, ...]]]:
    """Every child run of the report as (node id, steps), with multiplicity."""
    return Counter((e["nodeid"], tuple(e["steps"])) for e in report["scenarios"])


def plan_nodes(result: pytest.RunResult) -> Counter[str]:
    """Plan items in the verbose progress lines, with how often each was reported run."""
    found: Counter[str] = Counter()
    for line in result.stdout.lines:
        if line.startswith("=") and ("FAILURES" in line or "summary" in line):
            break  # progress lines end here; the summaries repeat node ids
        match = NODE_LINE.search(line)
        if match:
            found[match.group(1) or match.group(2)] += 1
    return found


@pytest.mark.parametrize("module_set", sorted(MODULE_SETS))
def test_serial_and_distributed_sessions_agree(pytester: pytest.Pytester, module_set: str) -> None:
    pytester.makepyfile(**MODULES)
    modules, strength = MODULE_SETS[module_set]
    collected = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--runtime-conflicts",
        f"--rc-modules={modules}",
        f"--rc-strength={strength}",
        "--collect-only",
        "-q",
    )
    expected_nodes = {ln for ln in collected.stdout.lines if ln.startswith("runtime-conflicts::")}
    assert expected_nodes

    serial, serial_report = session(pytester, "serial", modules, strength)
    baseline = runs(serial_report)
    assert {n for n, _ in baseline} == expected_nodes
    for workers in ("2", "3"):
        result, report = session(pytester, f"n{workers}", modules, strength, "-n", workers)
        assert result.ret == serial.ret
        # Same items, each run by one worker only; the report written once by the controller,
        # complete and without duplicates: the same child runs as the serial session.
        assert plan_nodes(result) == Counter(expected_nodes)  # each reported once
        assert runs(report) == baseline, (workers, runs(report) - baseline, baseline - runs(report))
        assert report.get("coverage") == serial_report.get("coverage")
        assert not list(pytester.path.glob("report-*.json.tmp*")), "a half-written report remains"
    if "crash" in module_set:
        assert serial.ret == pytest.ExitCode.TESTS_FAILED
        assert any(e["outcome"] == "crashed" for e in serial_report["scenarios"])


def _fake_distribution(site: Path) -> None:
    """A distribution shipping a real ELF object, so default module discovery finds it."""
    pkg = site / "rxnative"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    lib = compile_shared("int rx_native(void) { return 7; }\n", "_native.so", outdir=pkg)
    info = site / "rxnative-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rxnative\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("rxnative\n")
    (info / "RECORD").write_text(
        f"rxnative/__init__.py,,\nrxnative/{lib.name},,\nrxnative-1.0.dist-info/METADATA,,\n"
    )
    for name in ("rxlib_one", "rxlib_two"):
        clone = site / name
        clone.mkdir()
        (clone / "__init__.py").write_text("")
        compile_shared(f"int {name}(void) {{ return 1; }}\n", "_c.so", outdir=clone)
        dist = site / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (dist / "RECORD").write_text(f"{name}/__init__.py,,\n{name}/_c.so,,\n")


def test_default_discovery_is_identical_on_every_worker(pytester: pytest.Pytester) -> None:
    """Without --rc-modules every worker derives the plan from a scan of the environment."""
    python, site = make_venv(pytester.path / "venv")
    _fake_distribution(site)
    pytester.makeini(textwrap.dedent(f"[pytest]\nruntime_conflicts_python = {python}\n"))
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--runtime-conflicts",
        f"--rc-report={report}",
        "-n",
        "3",
        "-v",
    )
    text = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in text and "Different tests were collected" not in text, text[
        -3000:
    ]
    data = json.loads(report.read_text())
    assert data["coverage"]["modules"] == ["rxlib_one", "rxlib_two", "rxnative"]
    nodes = Counter(e["nodeid"] for e in data["scenarios"])
    assert Counter(nodes) == plan_nodes(result) and len(nodes) >= 2
    assert all(count == 1 for count in nodes.values()), nodes  # nothing ran twice
    result.assert_outcomes(passed=len(nodes))
