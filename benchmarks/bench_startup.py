"""Start-up cost of the CLI: a warm ``scan`` as a whole process next to ``python -c pass``, in
the same run (interleaved, so both see the same machine load), and what ``scan --help`` imports.

    python benchmarks/bench_startup.py [--python EXE] [--repeat N]

``--python``: the interpreter whose environment is scanned (default: the ~440-object venv this
was measured on, else the running interpreter). The facts and discovery caches live in a
fresh temporary directory: one cold scan fills them, then every timed scan is warm. The scan
runs this checkout (``PYTHONPATH`` is set to it) with the running interpreter, the same one
that runs ``-c pass``. Target: a warm scan of ~500 ELF objects under 0.3 s.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# numpy, scipy, scikit-learn, pandas, torch + pyarrow, onnxruntime, opencv, xgboost, lightgbm,
# faiss, cvxopt, scs, mkl (docs/performance.md says how it was assembled).
DEFAULT_PYTHON = "/tmp/wt-demo-bench/venv/bin/python"
TARGET_S = 0.3
# Modules a scan must not import: the sandbox, the diagnosis and the other subcommands.
NOT_FOR_SCAN = (
    "pytest_runtimeconflict.sandbox",
    "pytest_runtimeconflict.diagnosis",
    "pytest_runtimeconflict.cli.run",
    "pytest_runtimeconflict.cli.demo",
    "pytest_runtimeconflict.report.text",
    "pytest_runtimeconflict.zoo",
    "elftools",
    "psutil",
)


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]!r}")
    return wall


def report_imports(env: dict[str, str]) -> None:
    """Which modules ``scan --help`` imports (``-X importtime``): none of the heavy ones."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pytest_runtimeconflict", "scan", "--help"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    names = [
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    ours = [n for n in names if n.startswith("pytest_runtimeconflict")]
    wrong = [n for n in names if n.startswith(NOT_FOR_SCAN)]
    print(f"scan --help imports {len(names)} modules, {len(ours)} of this package")
    print(f"  modules a scan does not need: {', '.join(wrong) or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = DEFAULT_PYTHON if os.path.exists(DEFAULT_PYTHON) else sys.executable
    parser.add_argument("--python", default=default, help="environment to scan")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    # An installed package has its bytecode compiled (pip does it): so does the checkout, or
    # with PYTHONDONTWRITEBYTECODE set every run would compile the package's sources again.
    compileall.compile_dir(str(ROOT / "pytest_runtimeconflict"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="rc-bench-start-") as cache:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTEST_RUNTIMECONFLICT_FACTS_CACHE=cache)
        report_imports(env)
        out = Path(cache) / "scan.json"
        scan = [sys.executable, "-m", "pytest_runtimeconflict", "scan", "--python", args.python]
        timed([*scan, "--json", str(out)], env)  # cold: fills the caches
        data = json.loads(out.read_text())
        bare, helps, warm = [], [], []
        for _ in range(args.repeat):
            bare.append(timed([sys.executable, "-c", "pass"], env))
            helps.append(timed([*scan[:4], "--help"], env))
            warm.append(timed(scan, env))
    objects = len(data["objects"])
    b, w = statistics.median(bare), statistics.median(warm)
    met = "met" if w < TARGET_S else "NOT met"
    print(f"warm scan of {args.python} ({objects} ELF objects), {args.repeat} runs interleaved:")
    print(f"  python -c pass:        median {b:.3f} s (min {min(bare):.3f} s)")
    print(
        f"  scan --help:           median {statistics.median(helps):.3f} s (min {min(helps):.3f} s)"
    )
    print(f"  scan, whole process:   median {w:.3f} s (min {min(warm):.3f} s)")
    print(f"  ratio scan / python -c pass: {w / b:.1f}x")
    print(f"  target < {TARGET_S} s for ~500 objects: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
