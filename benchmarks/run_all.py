"""Run every benchmark in one go and print the results side by side (on demand, not in CI).

    python benchmarks/run_all.py [--quick]

Order: scan (torch wheel vs auditwheel show; torch venv cold/warm), start-up (a warm scan as a
whole process next to ``python -c pass``, bench_startup.py), sandbox overhead vs a
bare ``python -c`` (bench_sandbox.py), plan sizes vs ordered tuple counts (bench_plan.py),
``-n 2`` vs serial over the zoo (bench_xdist.py). ``--quick`` passes fewer repeats.
Record the output in docs/performance.md with the machine (nproc, CPU model) and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RW_PYTHON = "/work/rw-venv/bin/python"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), {platform.platform()}, Python {platform.python_version()}"


def section(title: str, cmd: list[str]) -> None:
    print(f"\n== {title} ==", flush=True)
    code = subprocess.call(cmd, cwd=HERE.parent)
    if code:
        print(f"(exit code {code})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = "1" if args.quick else "3"
    print(f"benchmarks on {machine()}, {datetime.date.today()}")
    py = sys.executable
    section("scan", [py, str(HERE / "bench_scan.py"), "--repeat", repeat])
    start = [py, str(HERE / "bench_startup.py"), "--repeat", "5" if args.quick else "21"]
    section("start-up: warm scan vs python -c pass", start)
    sandbox = [py, str(HERE / "bench_sandbox.py"), "--repeat", "5" if args.quick else "15"]
    if os.path.exists(RW_PYTHON):
        sandbox += ["--python", RW_PYTHON]
    section("sandbox overhead", sandbox)
    section("plan sizes", [py, str(HERE / "bench_plan.py")])
    section("xdist over the zoo", [py, str(HERE / "bench_xdist.py")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
