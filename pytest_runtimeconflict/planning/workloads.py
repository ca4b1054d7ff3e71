"""Workloads: steps run after a planned run's imports, so conflicts that need the modules'
code to *run* (a BLAS call, a parallel region, a locale) show.

Three sources, in this order for each module:

- the built-in catalogue (:data:`CATALOGUE`): small, fast calls into popular native packages,
  each checked by hand on this machine kind (see docs/usage.md). Each is *guarded*: the modules
  it needs are imported and the attributes it uses looked up inside ``try``; a
  ``ModuleNotFoundError`` or ``AttributeError`` there (a missing package, an API change) skips
  it with a note (``rc-workload-skipped ...`` on the child's stdout) instead of failing the run.
  Any other error, including an ``ImportError`` that is not a missing module (a conflict at
  load time), and everything the call itself raises, is a real failure.
- ``[tool.pytest-runtimeconflict.workloads]`` in the rootdir's ``pyproject.toml``: a table of
  ``module = "statement"`` or ``module = ["statement", ...]``;
- ``--rc-workload MODULE=STATEMENT`` (repeatable; ini ``runtime_conflicts_workloads``, one per
  line).

User workloads are plain statements run as they are. A workload is a step like any other, so
minimisation drops it when the failure does not need it and the counter-experiments keep it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.files.pyproject import tool_table
from pytest_runtimeconflict.vocabulary import JsonObject

SKIP_MARKER = "rc-workload-skipped"
_HEADER = "# workload "
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Workload:
    """One catalogue workload for the planned top-level ``module``: import ``needs``, look up
    ``attrs`` (guarded), then run ``code`` (not guarded)."""

    module: str
    name: str
    needs: tuple[str, ...]
    attrs: tuple[str, ...]
    code: str

    def step(self) -> str:
        """The step text: a header comment, the guard, the call."""
        needs = ", ".join(self.needs)
        attrs = "; ".join(self.attrs) or "pass"
        return (
            f"{_HEADER}{self.module}:{self.name} (catalogue)\n"
            f"try:\n"
            f"    import {needs}\n"
            f"    {attrs}\n"
            f"except (ModuleNotFoundError, AttributeError) as exc:\n"
            f"    print({SKIP_MARKER + ' ' + self.module + ':' + self.name + ':'!r},"
            f" type(exc).__name__, exc, flush=True)\n"
            f"else:\n"
            f"    {self.code}\n"
        )


def _rng(shape: str, seed: int = 0) -> str:
    return f"numpy.random.default_rng({seed}).random({shape})"


# Checked on Debian 12 / Python 3.11 with numpy 2.4, scipy 1.17, torch 2.13 (CPU),
# scikit-learn 1.9, pandas 3.1, opencv-python-headless 5.0, faiss-cpu 1.15, cvxopt 1.3,
# lightgbm 4.7, xgboost 3.2, pyarrow 26, onnxruntime 1.32, scs 3.3: each under a second.
CATALOGUE: tuple[Workload, ...] = (
    Workload(
        "numpy", "linalg", ("numpy",), ("numpy.linalg.inv",),
        f"numpy.linalg.inv({_rng('(200, 200)')} + 200 * numpy.eye(200)); "
        "numpy.ones((300, 300)) @ numpy.ones((300, 300))",
    ),
    Workload(
        "scipy", "linalg", ("numpy", "scipy.linalg"), ("scipy.linalg.svd", "scipy.linalg.lu"),
        f"scipy.linalg.svd({_rng('(100, 100)')}); scipy.linalg.lu({_rng('(100, 100)', 1)})",
    ),
    Workload(
        "torch", "mm", ("torch",), ("torch.mm", "torch.linalg.inv"),
        "torch.mm(torch.rand(256, 256), torch.rand(256, 256)); "
        "torch.linalg.inv(torch.rand(64, 64) + 64 * torch.eye(64))",
    ),
    Workload(
        "sklearn", "kmeans", ("numpy", "sklearn.cluster"), ("sklearn.cluster.KMeans",),
        "sklearn.cluster.KMeans(n_clusters=3, n_init=1, random_state=0)"
        f".fit({_rng('(2000, 8)')})",
    ),
    Workload(
        "pandas", "groupby", ("pandas",), ("pandas.DataFrame",),
        "pandas.DataFrame({'k': [i % 7 for i in range(10000)], 'v': range(10000)})"
        ".groupby('k').sum()",
    ),
    Workload(
        "cv2", "gemm", ("numpy", "cv2"), ("cv2.gemm",),
        f"cv2.gemm({_rng('(256, 256)')}, {_rng('(256, 256)', 1)}, 1.0, None, 0.0)",
    ),
    Workload(
        # a PCA trains through BLAS gemm, which the small k-means alone did not reach
        "faiss", "train", ("numpy", "faiss"), ("faiss.Kmeans", "faiss.PCAMatrix"),
        f"faiss.Kmeans(8, 4, niter=3, seed=1).train({_rng('(1000, 8)')}.astype('float32')); "
        f"faiss.PCAMatrix(16, 4).train({_rng('(1000, 16)', 1)}.astype('float32'))",
    ),
    Workload(
        # 100x100: big enough for OpenBLAS's blocked (gemm) path, which 2x2 does not take
        "cvxopt", "gesv", ("cvxopt", "cvxopt.lapack"),
        ("cvxopt.lapack.gesv", "cvxopt.normal", "cvxopt.setseed"),
        "cvxopt.setseed(1); "
        "cvxopt.lapack.gesv(cvxopt.normal(100, 100), cvxopt.normal(100, 1))",
    ),
    Workload(
        "lightgbm", "train", ("numpy", "lightgbm"), ("lightgbm.train", "lightgbm.Dataset"),
        "lightgbm.train({'objective': 'regression', 'verbose': -1, 'num_threads': 2}, "
        f"lightgbm.Dataset({_rng('(500, 5)')}, {_rng('500', 1)}), num_boost_round=3)",
    ),
    Workload(
        "xgboost", "train", ("numpy", "xgboost"), ("xgboost.train", "xgboost.DMatrix"),
        "xgboost.train({'nthread': 2, 'max_depth': 3}, "
        f"xgboost.DMatrix({_rng('(500, 5)')}, label={_rng('500', 1)}), num_boost_round=3)",
    ),
    Workload(
        "pyarrow", "compute", ("pyarrow", "pyarrow.compute"), ("pyarrow.compute.sum",),
        "pyarrow.compute.sum(pyarrow.array(range(100000)))",
    ),
    Workload(
        "onnxruntime", "session", ("numpy", "onnxruntime"), ("onnxruntime.InferenceSession",),
        "onnxruntime.InferenceSession(onnxruntime.__path__[0] + '/datasets/sigmoid.onnx', "
        "providers=['CPUExecutionProvider']).run(None, "
        f"{{'x': {_rng('(3, 4, 5)')}.astype('float32')}})",
    ),
)  # fmt: skip


def catalogue_for(module: str) -> list[Workload]:
    """The catalogue workloads of a planned module (by its top-level package)."""
    return [w for w in CATALOGUE if w.module == module]


def parse_user_workloads(values: Iterable[str], where: str) -> tuple[tuple[str, str], ...]:
    """``MODULE=STATEMENT`` entries (``--rc-workload`` or ini lines) as (module, statement)."""
    out = []
    for raw in values:
        text = str(raw).strip()
        if not text:
            continue
        module, sep, statement = text.partition("=")
        module, statement = module.strip(), statement.strip()
        if not sep or not _DOTTED.fullmatch(module) or not statement:
            raise UsageError(
                f"invalid --rc-workload {text!r} ({where}): expected MODULE=STATEMENT, "
                "e.g. numpy=numpy.ones((300, 300)) @ numpy.ones((300, 300))"
            )
        _check_syntax(statement, f"--rc-workload {text!r} ({where})")
        out.append((module, statement))
    return tuple(out)


def pyproject_workloads(rootdir: Path) -> tuple[tuple[str, str], ...]:
    """``[tool.pytest-runtimeconflict.workloads]`` of ``rootdir/pyproject.toml``."""
    path = rootdir / "pyproject.toml"
    if not path.is_file():
        return ()
    table = tool_table(path, "workloads")
    where = f"{path} [tool.pytest-runtimeconflict.workloads]"
    if not isinstance(table, dict):
        raise UsageError(f"{where}: expected a table of module = statement(s)")
    out = []
    for module, value in table.items():
        statements = [value] if isinstance(value, str) else value
        if not _DOTTED.fullmatch(module) or not isinstance(statements, list):
            raise UsageError(
                f"{where}: {module!r}: expected a module name = a statement or a list of them"
            )
        for statement in statements:
            if not isinstance(statement, str) or not statement.strip():
                raise UsageError(f"{where}: {module!r}: each workload must be a statement")
            _check_syntax(statement, f"{where} {module!r}")
            out.append((module, statement.strip()))
    return tuple(out)


def _check_syntax(statement: str, where: str) -> None:
    try:
        compile(statement, "<workload>", "exec")
    except SyntaxError as exc:
        raise UsageError(
            f"invalid workload in {where}: {exc.msg} (line {exc.lineno}); give a Python statement"
        ) from None


def workload_steps(
    modules: Sequence[str], user: Sequence[tuple[str, str]], catalogue: bool
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Per planned module, its workload steps: catalogue ones (when ``catalogue``) first,
    then the user's (those naming the module or a submodule of its top-level package), each
    with a header comment naming it. Workloads of modules that are not planned are left out."""
    out = []
    for module in modules:
        top = module.split(".")[0]
        steps = [w.step() for w in catalogue_for(top)] if catalogue else []
        steps += [f"{_HEADER}{m}:user\n{s}" for m, s in user if m.split(".")[0] == top]
        if steps:
            out.append((module, tuple(steps)))
    return tuple(out)


def unplanned(modules: Sequence[str], user: Sequence[tuple[str, str]]) -> list[str]:
    """User workloads naming a module that is not planned (reported as a note)."""
    planned = set(modules)
    return sorted({m for m, _ in user if m not in planned and m.split(".")[0] not in planned})


def skipped_notes(stdout: str) -> list[str]:
    """The catalogue workloads a child skipped, from its stdout."""
    return [
        line.split(SKIP_MARKER, 1)[1].strip()
        for line in stdout.splitlines()
        if line.startswith(SKIP_MARKER)
    ]


def step_label(step: str) -> str:
    """A short name for a step in one-line displays (``workload numpy:linalg``)."""
    if step.startswith(_HEADER):
        return "workload " + step[len(_HEADER) :].split("\n", 1)[0].split(" ", 1)[0]
    lines = [line.strip() for line in step.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else ""
    return f"{lines[0]} (+{len(lines) - 1} lines)"


def probe_label(phase: str | None, exercised: Sequence[Mapping[str, Any]]) -> str:
    """The order item for a failure in the exercise phase (after every step), naming the
    tool's probe that was running (``exercise (blas probe of libopenblas.so)``), since the
    steps alone do not reproduce such a failure; empty for a failure in a step."""
    if phase != "exercise":
        return ""
    bad = next(
        (e for e in reversed(exercised) if e.get("status") in ("crashed", "hung", "running")),
        None,
    )
    if bad is None:
        return "exercise (the runtime probes)"
    return f"exercise ({bad.get('kind')} probe of {str(bad.get('path', '')).rsplit('/', 1)[-1]})"


def is_workload(step: str) -> bool:
    return step.startswith(_HEADER)


def describe_catalogue() -> list[JsonObject]:
    """The catalogue as data (for the docs)."""
    return [{"module": w.module, "name": w.name, "code": w.code} for w in CATALOGUE]
