"""Sandbox overhead: ``run_scenario`` vs a bare ``python -c "import a; import b"``, same run.

    python benchmarks/bench_sandbox.py [--python EXE] [--repeat N] [MODULE ...]

Defaults to ``numpy scipy.linalg`` when the target interpreter has them, else
``json decimal``. Prints the median wall time of each way and their ratio, plus the sandbox
with runtime exercising off and with ``LD_DEBUG`` off (to show what each piece costs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_runtimeconflict import sandbox  # noqa: E402
from pytest_runtimeconflict.model import RunSpec  # noqa: E402


def interleaved_medians(funcs: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """Median wall time of each function, measured in rounds (one call of each per round) so
    background load on a shared machine hits every variant alike."""
    times: list[list[float]] = [[] for _ in funcs]
    for _ in range(repeat):
        for i, func in enumerate(funcs):
            start = time.perf_counter()
            func()
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def pick_modules(python: str, requested: Sequence[str]) -> list[str]:
    if requested:
        return list(requested)
    probe = subprocess.run([python, "-c", "import numpy, scipy.linalg"], capture_output=True)
    return ["numpy", "scipy.linalg"] if probe.returncode == 0 else ["json", "decimal"]


def bare(python: str, modules: Sequence[str]) -> None:
    code = "; ".join(f"import {m}" for m in modules)
    subprocess.run([python, "-c", code], check=True, capture_output=True)


def sandboxed(spec: RunSpec) -> None:
    result = sandbox.run_spec(spec)
    if result.outcome not in ("passed", "latent"):
        raise SystemExit(f"sandbox run {result.outcome}: {result.message}")


def without_ld_debug(spec: RunSpec) -> None:
    original = sandbox.child_environment

    def env(spec_: RunSpec, run_dir: str) -> dict[str, str]:
        data = original(spec_, run_dir)
        data.pop("LD_DEBUG", None)
        return data

    with mock.patch.object(sandbox, "child_environment", env):
        sandboxed(spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args(argv)
    modules = pick_modules(args.python, args.modules)
    spec = RunSpec(steps=tuple(modules), python=args.python, timeout=120)
    sandboxed(spec)  # warm the facts cache and the OS page cache
    bare(args.python, modules)
    no_exercise = RunSpec(**{**spec.__dict__, "exercise": False})
    variants: list[tuple[str, Callable[[], object]]] = [
        ("bare python -c", lambda: bare(args.python, modules)),
        ("run_scenario", lambda: sandboxed(spec)),
        ("run_scenario --no-exercise", lambda: sandboxed(no_exercise)),
        ("run_scenario without LD_DEBUG", lambda: without_ld_debug(spec)),
    ]
    medians = interleaved_medians([f for _, f in variants], args.repeat)
    rows = [(name, t) for (name, _), t in zip(variants, medians)]
    base = rows[0][1]
    out = [f"modules: {' '.join(modules)}  python: {args.python}  repeat: {args.repeat}"]
    out += [f"  {name:32s} {t * 1000:8.1f} ms  x{t / base:.2f}" for name, t in rows]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTEST_RUNTIMECONFLICT_NO_GDB", "1")
    sys.exit(main())
