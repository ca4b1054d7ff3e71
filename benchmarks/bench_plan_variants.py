"""What load-mode variants, targets and probes cost: the planned run with and without them, in
one run, as ratios.

Usage::

    python benchmarks/bench_plan_variants.py [--zoo-python P] [--sci-python P] [-n 2]
                                             [--planning-only]

Three parts:

1. Planning only (no child runs): the items and planned child runs of the default plan
   (``--rc-variants auto``) and of the plain plan (``--rc-variants none``) for 10, 20 and 40
   synthetic modules with a typical runtime mix (one system libstdc++, two OpenMP and two BLAS
   copies, two static findings), and the time to plan 40 modules.
2. The zoo environment (every scenario of ``scenarios/`` built into one venv; ``--zoo-python``
   to reuse one): ``pytest --runtime-conflicts`` with each setting.
3. numpy + scipy + scikit-learn + torch (``--sci-python``, a venv that has them; skipped
   without it): the same, as docs/real-world.md runs it (an empty folder: every module of
   the environment that brings native code).

For each run: items collected, planned child runs (report entries), every child run the
session started (counted by a wrapper around the target interpreter: planned runs, repairs,
diagnosis, ownership checks, and the checks of the reproducers ``--rc-repro-dir`` writes),
wall time, distinct conflicts; then the ratio auto / none; then the child runs by purpose
(the report's ``child_runs.by_purpose``, plus the reproducer checks) and the targets of the
default plan: at most 35 child runs and 6x the ``none`` wall time on the real environment,
at most 500 child runs on the zoo.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from pytest_runtimeconflict.model import Finding  # noqa: E402
from pytest_runtimeconflict.model.plan import PlanContext, RuntimeLibrary  # noqa: E402
from pytest_runtimeconflict.planning import from_scan as planning  # noqa: E402
from pytest_runtimeconflict.planning import sequence_search as plan_search  # noqa: E402
from pytest_runtimeconflict.planning import sequences as plan_module  # noqa: E402
from pytest_runtimeconflict.planning import variants  # noqa: E402

SETTINGS = ("none", "auto")
# the targets of the default plan (printed as met or not; never asserted)
SCI_MOST_RUNS, SCI_MOST_RATIO, ZOO_MOST_RUNS = 35, 6.0, 500
KINDS = ("sequence", "target", "fork")


def synthetic(n: int) -> PlanContext:
    """``n`` modules, two OpenMP and two BLAS copies, a system libstdc++, two findings."""
    modules = tuple(f"pkg{i:02d}" for i in range(n))
    libs = (
        RuntimeLibrary("/usr/lib/libstdc++.so.6", "libstdc++", "libstdc++", modules[:4], None),
        RuntimeLibrary("/s/pkg00.libs/libgomp-a.so", "openmp", "libgomp", (modules[0],), "pkg00"),
        RuntimeLibrary("/s/pkg01.libs/libgomp-b.so", "openmp", "libgomp", (modules[1],), "pkg01"),
        RuntimeLibrary("/s/pkg02.libs/libopenblas-a.so", "blas", "openblas", modules[2:4], "pkg02"),
        RuntimeLibrary(
            "/s/pkg03.libs/libopenblas-b.so", "blas", "openblas", (modules[3],), "pkg03"
        ),
    )

    def finding(rule: str, a: RuntimeLibrary, b: RuntimeLibrary) -> Any:
        f = Finding(
            rule, a.family, "warning", rule, "", (a.path, b.path), (a.users[0], b.users[0]), ""
        )
        return (f, (a.users, b.users))

    found = (
        finding("openmp-duplicate", libs[1], libs[2]),
        finding("blas-duplicate", libs[3], libs[4]),
    )
    return PlanContext(modules, native=modules, runtimes=libs, findings=found, scanned=True)


def planning_part() -> None:
    """Planned child runs by kind: covering sequences (plain and variants), targets, fork."""
    print("== planning only (synthetic environments, no child runs) ==")
    print(
        f"{'modules':>7} {'setting':>7} {'items':>5} {'covering':>8} {'targets':>7} "
        f"{'fork':>4} {'all runs':>8} {'plan s':>7}"
    )
    for n in (10, 20, 40):
        counts = {}
        for setting in SETTINGS:
            requests = variants.parse_variants("--rc-variants", setting, "benchmark")
            plan_module._plan_cached.cache_clear()
            plan_search.plan_indices.cache_clear()
            start = time.perf_counter()
            plan = planning.build_plan(synthetic(n), 2, requests)
            seconds = time.perf_counter() - start
            kinds = {k: sum(len(i.runs) for i in plan.items if i.kind == k) for k in KINDS}
            counts[setting] = (kinds["sequence"], sum(kinds.values()))
            print(
                f"{n:>7} {setting:>7} {len(plan.items):>5} {kinds['sequence']:>8} "
                f"{kinds['target']:>7} {kinds['fork']:>4} {sum(kinds.values()):>8} {seconds:>7.3f}"
            )
        (cover_a, all_a), (cover_n, all_n) = counts["auto"], counts["none"]
        print(
            f"{'':>7} {'ratio':>7} {'':>5} {cover_a / cover_n:>7.1f}x {'':>7} {'':>4} "
            f"{all_a / all_n:>7.1f}x"
        )


def counting_python(real: str, log: Path, where: Path) -> str:
    """A wrapper of ``real`` that appends a line to ``log`` for each sandbox child."""
    wrapper = where / "python"
    # The sandbox's shim re-executes this wrapper with the child script first: one line per
    # child (its first start, with the shim's options first, is not counted); a script run on
    # its own is a reproducer check.
    wrapper.write_text(
        f'#!/bin/sh\ncase "$1" in *child.py) echo run >> {log} ;;'
        f' *.py) echo repro >> {log} ;; esac\nexec {real} "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


def planned_run(python: str, setting: str, extra: list[str], workers: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rc-bench-") as tmp:
        where = Path(tmp)
        (where / "pytest.ini").write_text("[pytest]\n")
        log = where / "children.log"
        report = where / "report.json"
        cmd = [
            sys.executable, "-m", "pytest", str(where), "-c", str(where / "pytest.ini"),
            "--rootdir", str(where), "-p", "no:cacheprovider", "--runtime-conflicts",
            f"--rc-python={counting_python(python, log, where)}", f"--rc-report={report}",
            f"--rc-variants={setting}", f"--rc-repro-dir={where / 'repro'}",
            "-q", "--tb=no", "-W", "ignore", *extra,
        ]  # fmt: skip
        if workers not in ("0", ""):
            cmd += ["-n", workers]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=where)
        seconds = time.perf_counter() - start
        data = json.loads(report.read_text()) if report.exists() else {"scenarios": []}
        entries = data["scenarios"]
        keys = {e["verdict"]["key"] for e in entries if e.get("verdict")}
        summary = [line for line in proc.stdout.splitlines() if "distinct conflict" in line]
        lines = log.read_text().splitlines() if log.exists() else []
        purposes = dict((data.get("child_runs") or {}).get("by_purpose") or {})
        purposes["reproducer checks"] = lines.count("repro")
        return {
            "items": len({e["nodeid"] for e in entries}),
            "planned": len(entries),
            "children": lines.count("run"),  # the session's; reproducer checks apart
            "purposes": purposes,
            "seconds": seconds,
            "conflicts": len(keys),
            "summary": summary[0] if summary else proc.stdout[-300:],
        }


def environment_part(
    title: str, python: str, extra: list[str], workers: str, most_runs: int, most_ratio: float
) -> None:
    print(f"\n== {title} (-n {workers}) ==")
    print(
        f"{'setting':>7} {'items':>5} {'planned':>7} {'children':>8} {'wall s':>7} {'conflicts':>9}"
    )
    rows = {}
    for setting in SETTINGS:
        row = rows[setting] = planned_run(python, setting, extra, workers)
        print(
            f"{setting:>7} {row['items']:>5} {row['planned']:>7} {row['children']:>8} "
            f"{row['seconds']:>7.1f} {row['conflicts']:>9}   ({row['summary'].strip()})"
        )
    a, b = rows["auto"], rows["none"]
    ratio = a["seconds"] / max(b["seconds"], 0.1)
    print(
        f"{'ratio':>7} {a['items'] / max(b['items'], 1):>4.1f}x {a['planned'] / max(b['planned'], 1):>6.1f}x "
        f"{a['children'] / max(b['children'], 1):>7.1f}x {ratio:>6.1f}x"
    )
    for setting in SETTINGS:
        shown = ", ".join(f"{k} {v}" for k, v in rows[setting]["purposes"].items() if v)
        print(f"{setting:>7} child runs by purpose: {shown}")
    print(
        f"target: default plan at most {most_runs} child runs (the session's, without the "
        f"reproducer checks): {a['children']} "
        f"({'met' if a['children'] <= most_runs else 'NOT met'})"
        + (
            f"; at most {most_ratio:g}x the none wall time: {ratio:.1f}x "
            f"({'met' if ratio <= most_ratio else 'NOT met'})"
            if most_ratio
            else ""
        )
    )


def zoo_python() -> str:
    from pytest_runtimeconflict import zoo

    cache = zoo.default_cache_dir()
    wheels = zoo.build_zoo(ROOT / "scenarios", cache, python=sys.executable, skipped={})
    return str(zoo.make_venv(cache / "bench-venv", [w for ws in wheels.values() for w in ws]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo-python", default=None, help="a venv holding every zoo wheel")
    parser.add_argument(
        "--sci-python", default=None, help="a venv with numpy, scipy, sklearn, torch"
    )
    parser.add_argument("-n", dest="workers", default="2", help="pytest-xdist workers (0: none)")
    parser.add_argument("--planning-only", action="store_true", help="part 1 only")
    args = parser.parse_args()
    planning_part()
    if args.planning_only:
        return 0
    zoo = args.zoo_python or zoo_python()
    environment_part("zoo environment", zoo, [], args.workers, ZOO_MOST_RUNS, 0.0)
    if args.sci_python and os.path.exists(args.sci_python):
        environment_part(
            "numpy + scipy + scikit-learn + torch", args.sci_python, [], args.workers,
            SCI_MOST_RUNS, SCI_MOST_RATIO,
        )  # fmt: skip
    else:
        print("\n(numpy + scipy + scikit-learn + torch skipped: pass --sci-python VENV/bin/python)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
