"""The partners a candidate wheel is paired with: ``--with REQ`` options, else the built-in
catalogue of popular registry packages that vendor native runtimes, extended or narrowed by
``[tool.pytest-runtimeconflict.matrix]`` in the project's ``pyproject.toml``::

    [tool.pytest-runtimeconflict.matrix]
    partners = ["lightgbm==4.7.0", {requirement = "mylib>=2", why = "bundles libgomp"}]
    exclude = ["tensorflow"]   # catalogue partners (by distribution name) left out
    catalogue = true           # false: only the partners listed here
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.files.pyproject import tool_table
from pytest_runtimeconflict.vocabulary import JsonObject

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class Partner:
    """One partner: a requirement string and why it is worth pairing with."""

    requirement: str
    why: str = ""

    @property
    def name(self) -> str:
        """The distribution name, PEP 503 normalised (``scikit-learn`` for ``Scikit_Learn>=1``)."""
        return distribution_name(self.requirement)


def distribution_name(requirement: str) -> str:
    """The PEP 503 name a requirement string asks for; UsageError when it names none."""
    match = _NAME.match(requirement)
    if not match:
        raise UsageError(
            f"invalid requirement {requirement!r}: expected a name with an optional version, "
            "like numpy or 'torch==2.13.0'"
        )
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


# Popular registry packages whose wheels carry a native runtime of their own (or a large C++
# library built with its own toolchain): the neighbours a new wheel most often meets.
CATALOGUE: tuple[Partner, ...] = (
    Partner("numpy", "OpenBLAS (scipy-openblas64) and libgfortran vendored in numpy.libs"),
    Partner("scipy", "its own OpenBLAS and libgfortran in scipy.libs, C++ extensions"),
    Partner("scikit-learn", "GNU OpenMP (libgomp) vendored in scikit_learn.libs"),
    Partner(
        "torch==2.13.0",
        "libgomp in torch/lib, MKL linked into libtorch_cpu, a large C++ library "
        "(pinned: the CPU wheel; other versions pull the CUDA libraries)",
    ),
    Partner("tensorflow-cpu", "large C++ runtime (libtensorflow_framework) with protobuf, abseil"),
    Partner("pyarrow", "the Arrow C++ libraries bundled in the package, with jemalloc/mimalloc"),
    Partner("lightgbm", "lib_lightgbm.so parallelised with GNU OpenMP (libgomp)"),
    Partner("xgboost-cpu", "libxgboost.so parallelised with GNU OpenMP (libgomp)"),
    Partner("faiss-cpu", "OpenBLAS and libgomp vendored in faiss_cpu.libs"),
    Partner("opencv-python-headless", "OpenCV C++ libraries and codecs in its .libs folder"),
    Partner("onnxruntime", "C++ inference runtime with its own thread pool, protobuf linked in"),
    Partner("llvmlite", "LLVM linked statically into one C++ library (libllvmlite.so)"),
    Partner("numba", "OpenMP (libgomp) and TBB threading layers on top of llvmlite's LLVM"),
    Partner("shapely", "the GEOS C++ library vendored in shapely.libs"),
    Partner("h5py", "the HDF5 library vendored in h5py.libs"),
    Partner("pyzmq", "libzmq (C++) and libsodium vendored in pyzmq.libs"),
    Partner("grpcio", "gRPC's C++ core with abseil and BoringSSL linked in"),
)


def choose_partners(requirements: Sequence[str], rootdir: Path) -> tuple[Partner, ...]:
    """``--with`` requirements when given, else the catalogue as the project's pyproject
    table extends it; de-duplicated by distribution name (the first one wins)."""
    if requirements:
        partners = [Partner(r.strip(), "given with --with") for r in requirements]
    else:
        partners = list(_configured(rootdir / "pyproject.toml"))
    unique: dict[str, Partner] = {}
    for partner in partners:
        unique.setdefault(partner.name, partner)
    return tuple(unique.values())


def _configured(path: Path) -> list[Partner]:
    table = _matrix_table(path)
    where = f"{path} [tool.pytest-runtimeconflict.matrix]"
    extra = [_partner(item, where) for item in _list(table, "partners", where)]
    exclude = {distribution_name(str(n)) for n in _list(table, "exclude", where)}
    keep = table.get("catalogue", True)
    if not isinstance(keep, bool):
        raise UsageError(f"{where}: 'catalogue' must be true or false")
    base = [p for p in CATALOGUE if p.name not in exclude] if keep else []
    return base + extra


def _matrix_table(path: Path) -> JsonObject:
    table = tool_table(path, "matrix")
    if not isinstance(table, dict):
        raise UsageError(f"{path} [tool.pytest-runtimeconflict.matrix]: expected a table")
    return table


def _list(table: JsonObject, key: str, where: str) -> list[Any]:
    value = table.get(key, [])
    if not isinstance(value, list):
        raise UsageError(f"{where}: '{key}' must be a list")
    return value


def _partner(item: Any, where: str) -> Partner:
    if isinstance(item, str):
        distribution_name(item)
        return Partner(item.strip(), f"listed in {where}")
    if isinstance(item, dict) and isinstance(item.get("requirement"), str):
        distribution_name(item["requirement"])
        return Partner(item["requirement"].strip(), str(item.get("why", "")))
    raise UsageError(
        f"{where}: each partner is a requirement string or a table "
        f'{{requirement = "name>=1", why = "..."}}; got {item!r}'
    )
