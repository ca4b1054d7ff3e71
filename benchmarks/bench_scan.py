"""Scan speed: ``scan`` of a wheel vs ``auditwheel show`` of it, and a venv scan cold and warm.

    python benchmarks/bench_scan.py [--wheel WHL] [--python EXE] [--auditwheel EXE] [--repeat N]

auditwheel is not a dependency of this project: install it into a throwaway venv
(``python -m venv /tmp/aw && /tmp/aw/bin/pip install auditwheel``) and pass
``--auditwheel /tmp/aw/bin/auditwheel`` (found on PATH or at that place by default).
Cold means an empty facts cache (``RC_FACTS_CACHE`` pointing at a fresh directory); the
kernel page cache cannot be dropped without privileges this benchmark does not assume, so a
"cold" run reads files the page cache may already hold: it measures parsing, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TORCH_WHEEL = "/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
RW_PYTHON = "/work/rw-venv/bin/python"


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall time and stdout of ``cmd`` (which must succeed with exit 0 or 1)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc.stdout


def scan_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest_runtimeconflict", "scan", "--json", "-", *args]


def find_auditwheel(given: str | None) -> str | None:
    for candidate in (given, shutil.which("auditwheel"), "/tmp/aw-venv/bin/auditwheel"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def bench_wheel(wheel: str, auditwheel: str | None, repeat: int) -> None:
    env = dict(os.environ, RC_FACTS_CACHE="0")
    walls = []
    for _ in range(repeat):
        wall, out = timed(scan_cmd(wheel), env)
        walls.append(wall)
    objects = len(json.loads(out)["objects"])
    scan_s = statistics.median(walls)
    print(f"scan of {Path(wheel).name} ({objects} ELF members, no cache): {scan_s:.2f} s")
    if auditwheel is None:
        print("auditwheel show: not run (no auditwheel; see --auditwheel)")
        return
    aw_s, _ = timed([auditwheel, "show", wheel])
    print(f"auditwheel show of the same wheel: {aw_s:.2f} s")
    print(f"ratio auditwheel/scan: {aw_s / scan_s:.1f}x (target >= 20x)")


def bench_venv(python: str, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rc-bench-cache-") as cache:
        env = dict(os.environ, RC_FACTS_CACHE=cache)
        cold_wall, out = timed(scan_cmd("--python", python), env)
        cold = json.loads(out)
        warm = []
        for _ in range(repeat):
            wall, out = timed(scan_cmd("--python", python), env)
            warm.append((wall, json.loads(out)["seconds"]))
    n = len(cold["objects"])
    print(f"scan of {python} ({n} objects):")
    print(f"  cold: {cold['seconds']:.2f} s in the scan, {cold_wall:.2f} s CLI wall (target < 2 s)")
    scan_s = statistics.median(s for _, s in warm)
    wall_s = statistics.median(w for w, _ in warm)
    print(f"  warm: {scan_s:.2f} s in the scan, {wall_s:.2f} s CLI wall (target < 0.3 s)")
    print(
        "  (CLI wall includes starting Python and importing the package; "
        f"cold without the cache: RC_FACTS_CACHE=0 {_uncached(python):.2f} s in the scan)"
    )


def _uncached(python: str) -> float:
    _, out = timed(scan_cmd("--python", python), dict(os.environ, RC_FACTS_CACHE="0"))
    return float(json.loads(out)["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", default=TORCH_WHEEL)
    parser.add_argument("--python", default=RW_PYTHON, help="interpreter of the venv to scan")
    parser.add_argument("--auditwheel", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.path.exists(args.wheel):
        bench_wheel(args.wheel, find_auditwheel(args.auditwheel), args.repeat)
    else:
        print(f"wheel {args.wheel} not found: wheel benchmark skipped")
    if os.path.exists(args.python):
        bench_venv(args.python, args.repeat)
    else:
        print(f"{args.python} not found: venv benchmark skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
