"""Static records: the facts of one ELF file, what an object is, and a rule's finding."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pytest_runtimeconflict.vocabulary import JsonObject

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class ElfFacts:
    """What the dynamic loader and the rules need to know about one ELF file.

    ``defined_symbols`` holds only the defined dynamic symbols that matter (runtime identity
    symbols, libstdc++-owned symbols); ``unique_symbols`` the defined STB_GNU_UNIQUE ones;
    ``cxx_exports`` the defined, global (non-weak) C++ symbols outside namespace ``std``
    (for the duplicate-C++-library rule); ``c_functions`` and ``c_data`` the defined, global
    C (unmangled) functions and data objects, other than the loader's and Python's own entry
    points (for the interposition analysis); ``has_initializers`` whether the object runs
    code when loaded (``DT_INIT``/``DT_INIT_ARRAY``), so an interposed symbol bites at load;
    ``protected`` the exported names among those with ``STV_PROTECTED`` visibility (the
    object's own references to them never leave it, so another copy cannot interpose there).
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
    c_functions: tuple[str, ...] = ()
    c_data: tuple[str, ...] = ()
    has_initializers: bool = False
    protected: tuple[str, ...] = ()

    def count_prefixed(self, prefix: str) -> int:
        """How many of the C functions start with ``prefix`` (a statically linked runtime
        exports hundreds under its prefix)."""
        return count_prefixed(self.c_functions, prefix)

    def to_json(self) -> JsonObject:
        data = asdict(self)
        data["version_needs"] = {name: list(vers) for name, vers in self.version_needs}
        return data

    @classmethod
    def from_json(cls, data: JsonObject) -> ElfFacts:
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
            "c_functions",
            "c_data",
            "protected",
        ):
            data[key] = tuple(data[key])
        return cls(**data)


def count_prefixed(names: Sequence[str], prefix: str) -> int:
    """How many of ``names`` start with ``prefix``: both ELF readers keep ``c_functions``
    sorted, where those names are one run (two bisections, not a walk over every export of
    every object of a scan)."""
    if not prefix:
        return len(names)
    start = bisect.bisect_left(names, prefix)
    end = bisect.bisect_left(names, prefix[:-1] + chr(ord(prefix[-1]) + 1), start)
    return end - start


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

    def to_json(self) -> JsonObject:
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
class RuntimeKind:
    """What an object is: ``family`` (``openmp``) and ``runtime`` (``libgomp``)."""

    family: str
    runtime: str


@dataclass(frozen=True)
class ObjectInfo:
    """One ELF object described: its facts, owner, runtime kind, whether it is a Python
    extension module (defines ``PyInit_*``) and how it carries libstdc++ statically
    (``"exported"``, ``"hidden"`` or None)."""

    facts: ElfFacts
    distribution: str | None
    kind: RuntimeKind | None
    is_extension: bool
    static_libstdcxx: str | None = None

    @property
    def path(self) -> str:
        return self.facts.path

    def to_json(self) -> JsonObject:
        f = self.facts
        return {
            "path": f.path,
            "distribution": self.distribution,
            "soname": f.soname,
            "needed": list(f.needed),
            "runpath": list(f.runpath),
            "rpath": list(f.rpath),
            "family": self.kind.family if self.kind else None,
            "runtime": self.kind.runtime if self.kind else None,
            "static_libstdcxx": self.static_libstdcxx,
            "is_extension": self.is_extension,
            "static_tls": f.static_tls,
            "tls_size": f.tls_size,
        }
