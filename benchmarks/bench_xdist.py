"""``pytest --runtime-conflicts`` over the scenario zoo: serial vs ``-n 2`` (pytest-xdist).

    python benchmarks/bench_xdist.py [--workers 2] [--scenarios DIR]

Builds the zoo wheels (cached, as ``demo`` does), installs them into a throwaway venv, then
runs the scenario files twice, serial and with ``-n N``, and prints both wall times and the
speed-up. The outcome of the runs is not judged here (``demo`` does that).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_runtimeconflict import zoo  # noqa: E402


def run(scenarios: Path, python: Path, tmp: Path, workers: int) -> tuple[float, int]:
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\n")
    cmd = [
        sys.executable, "-m", "pytest", str(scenarios), "-c", str(ini), "--rootdir",
        str(scenarios), "-p", "no:cacheprovider", "--runtime-conflicts",
        f"--rc-python={python}", "--rc-modules=none", "-q",
    ]  # fmt: skip
    if workers:
        cmd += ["-n", str(workers)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenarios", type=Path, default=ROOT / "scenarios")
    args = parser.parse_args()
    wheels = zoo.build_zoo(args.scenarios, zoo.default_cache_dir(), python=sys.executable)
    all_wheels = [w for ws in wheels.values() for w in ws]
    with tempfile.TemporaryDirectory(prefix="rc-bench-xdist-") as tmp:
        python = Path(zoo.make_venv(Path(tmp) / "venv", all_wheels, python=sys.executable))
        serial, code_s = run(args.scenarios, python, Path(tmp), 0)
        parallel, code_p = run(args.scenarios, python, Path(tmp), args.workers)
    print(f"zoo ({len(wheels)} scenarios): serial {serial:.1f} s (exit {code_s}), "
          f"-n {args.workers} {parallel:.1f} s (exit {code_p})")  # fmt: skip
    print(f"speed-up serial/-n {args.workers}: {serial / parallel:.2f}x (target >= 1.7x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
