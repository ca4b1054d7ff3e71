"""Records that flow from one stage to the next (discover -> facts -> findings -> plan -> run ->
post-mortem -> diagnosis -> report). Frozen where they are facts; plain where a stage fills them in.

Every record has ``to_json()`` returning plain JSON-able data with the public keys named in the
issues; those keys are a contract that users' CI scripts parse.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

SEVERITIES = ("info", "warning", "error")
OUTCOMES = ("passed", "crashed", "failed", "hung", "latent")


@dataclass(frozen=True)
class ElfFacts:
    """What the dynamic loader and the rules need to know about one ELF file.

    ``defined_symbols`` holds only the defined dynamic symbols that matter (runtime identity
    symbols, libstdc++-owned symbols); ``unique_symbols`` the defined STB_GNU_UNIQUE ones;
    ``cxx_exports`` the defined, global (non-weak) C++ symbols outside namespace ``std``
    (for the duplicate-C++-library rule).
    """

    path: str
    size: int
    soname: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    machine: str
    elfclass: int
    elf_type: str
    static_tls: bool
    tls_size: int
    version_defs: tuple[str, ...]
    version_needs: tuple[tuple[str, tuple[str, ...]], ...]
    defined_symbols: tuple[str, ...]
    unique_symbols: tuple[str, ...]
    cxx_exports: tuple[str, ...]
    static_libstdcxx_hidden: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version_needs"] = {name: list(vers) for name, vers in self.version_needs}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ElfFacts:
        data = dict(data)
        data["version_needs"] = tuple(
            (name, tuple(vers)) for name, vers in sorted(data["version_needs"].items())
        )
        for key in (
            "needed",
            "rpath",
            "runpath",
            "version_defs",
            "defined_symbols",
            "unique_symbols",
            "cxx_exports",
        ):
            data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class Finding:
    """One static or confirmed conflict, with a stable rule id (documented in docs/rules.md)."""

    rule: str
    family: str
    severity: str
    title: str
    detail: str
    libraries: tuple[str, ...]
    distributions: tuple[str, ...]
    advice: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "family": self.family,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            "libraries": list(self.libraries),
            "distributions": list(self.distributions),
            "advice": self.advice,
        }


@dataclass(frozen=True)
class RunSpec:
    """One child-interpreter run: steps in order, with optional preloads and environment."""

    steps: tuple[str, ...]
    preload: tuple[str, ...] = ()
    preload_mode: str = "global"  # "global" (RTLD_GLOBAL) or "local" (RTLD_LOCAL)
    ld_preload: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    timeout: float = 60.0
    python: str = field(default_factory=lambda: sys.executable)
    exercise: bool = True
    id: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "steps": list(self.steps),
            "preload": list(self.preload),
            "preload_mode": self.preload_mode,
            "ld_preload": list(self.ld_preload),
            "env": dict(self.env),
            "timeout": self.timeout,
            "python": self.python,
            "exercise": self.exercise,
        }
