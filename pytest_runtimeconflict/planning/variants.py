"""Load-mode variants: the second dimension of the plan, next to the import order.

A :class:`~pytest_runtimeconflict.model.plan.Variant` says how a planned run loads its steps:
Python's default (``RTLD_LOCAL``), some imports with ``RTLD_GLOBAL`` (the interpreter's flags
restored after each), libraries preloaded with ``ctypes.CDLL(..., RTLD_GLOBAL)`` or listed in
``LD_PRELOAD``, environment settings. Variants come from *sources*, one registry entry each
(:func:`register`): a source turns the planning input into planned items. Built in:

``global``
    every ordered pair (a, b) of modules that bring native code is exercised with a imported
    ``RTLD_GLOBAL`` before b: the covering sequences again, every import global whose global
    import can change a binding (:mod:`.links`; all of them when the scan cannot say).
``preload`` / ``ld_preload``
    the runtime libraries the scan found (the system libstdc++, each OpenMP and BLAS copy),
    at most one copy per family at once, preloaded before importing every module; by default
    one group (the first copy of each family; finding-driven targets cover the other copies
    they name), every group with ``--rc-variants preload:all`` / ``ld_preload:all``; only the
    libraries a preload can matter for (:mod:`.links`). :func:`ruled_out` says what was left
    out.
``user``
    the ``--rc-variants`` entries ``global:MODULE``, ``preload:LIBRARY``,
    ``ld_preload:LIBRARY``, ``env:NAME=VALUE``.

``--rc-variants none`` turns the built-in sources off (the plan is the plain covering
sequences, as before variants existed); ``auto`` (the default) keeps them. Pure standard
library, no pytest import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.model.plan import (
    LONG_NAME,
    PLAIN,
    PlanContext,
    PlannedItem,
    PlannedRun,
    RuntimeLibrary,
    Variant,
    order_text,
)

KINDS = ("auto", "none", "global", "preload", "ld_preload", "env")
PRELOAD_FAMILIES = ("libstdc++", "openmp", "blas")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ENV = re.compile(r"[A-Za-z_]\w*=.*")
_SYNTAX = (
    "expected a comma-separated list of auto, none, global:MODULE, preload:LIBRARY, "
    "ld_preload:LIBRARY (or preload:all, ld_preload:all) and env:NAME=VALUE"
)


@dataclass(frozen=True)
class Request:
    """One ``--rc-variants`` entry: ``kind`` (one of :data:`KINDS`) and its value."""

    kind: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}" if self.value else self.kind


def parse_variants(flag: str, value: str, where: str) -> tuple[Request, ...]:
    """Validate ``--rc-variants``; one line naming the entry and the syntax on error."""
    entries = [e.strip() for e in str(value or "auto").split(",") if e.strip()]
    out = []
    for entry in entries or ["auto"]:
        kind, _sep, arg = entry.partition(":")
        kind, arg = kind.strip(), arg.strip()
        problem = _problem(kind, arg)
        if problem:
            raise UsageError(f"invalid {flag} entry {entry!r} ({where}): {problem}; {_SYNTAX}")
        out.append(Request(kind, arg))
    if any(r.kind == "none" for r in out) and any(r.kind == "auto" for r in out):
        raise UsageError(f"invalid {flag} {value!r} ({where}): auto and none exclude each other")
    return tuple(out)


def _problem(kind: str, arg: str) -> str | None:
    if kind not in KINDS:
        return f"unknown variant {kind!r}"
    if kind in ("auto", "none"):
        return f"{kind} takes no value" if arg else None
    if not arg:
        return f"{kind} needs a value"
    if kind == "global" and not _DOTTED.fullmatch(arg):
        return f"{arg!r} is not a module name"
    if kind == "env" and not _ENV.fullmatch(arg):
        return f"{arg!r} is not NAME=VALUE"
    return None


def built_in(requests: Sequence[Request]) -> bool:
    """Whether the built-in sources run (``auto``, the default, unless ``none`` is given)."""
    return not any(r.kind == "none" for r in requests)


# --------------------------------------------------------------------------- naming


def sequence_name(order: tuple[str, ...], index: int, variant: Variant = PLAIN) -> str:
    """``a>b>c`` for a short sequence, ``seq-01[17 modules]`` for a long one (the full order
    is in the report), with the variant's prefix (``global:``, ``preload(...):``)."""
    if len(order) <= LONG_NAME:
        body = order_text(order, variant)
    else:
        body = f"seq-{index + 1:02d}[{len(order)} modules]"
        partial = set(variant.global_imports) < set(order)
        if variant.global_imports and partial and variant.source != "global":
            body = "".join(f"global({m})>" for m in variant.global_imports) + body
    if variant.source == "global" and len(order) > LONG_NAME:
        return f"global:{body}"
    prefix = _load_prefix(variant)
    return f"{prefix}:{body}" if prefix else body


def _load_prefix(variant: Variant) -> str:
    parts = [_libs("preload", variant.preload), _libs("ld_preload", variant.ld_preload)]
    parts += [f"env({k}={v})" for k, v in variant.env]
    return "+".join(p for p in parts if p)


def _libs(kind: str, libs: Sequence[str]) -> str:
    if not libs:
        return ""
    names = [lib.rsplit("/", 1)[-1] for lib in libs]
    shown = ",".join(names) if len(names) <= 2 else f"{names[0]},+{len(names) - 1}"
    return f"{kind}({shown})"


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class PlanInput:
    """What a variant source plans from."""

    context: PlanContext
    sequences: tuple[tuple[str, ...], ...]
    requests: tuple[Request, ...]


@dataclass(frozen=True)
class Source:
    """A variant source: ``build(input) -> items``; ``auto`` sources run unless
    ``--rc-variants none``."""

    name: str
    build: Callable[[PlanInput], list[PlannedItem]]
    auto: bool = True


SOURCES: list[Source] = []


def register(source: Source) -> Source:
    """Add a variant source (third parties: before the session plans)."""
    if any(s.name == source.name for s in SOURCES):
        raise ValueError(f"variant source {source.name!r} is already registered")
    SOURCES.append(source)
    return source


def variant_items(data: PlanInput) -> list[PlannedItem]:
    """The items of every applicable source, in registration order, names made unique."""
    use_auto = built_in(data.requests)
    items = [i for s in SOURCES if use_auto or not s.auto for i in s.build(data)]
    return items


def _global_covering(data: PlanInput) -> list[PlannedItem]:
    native = set(data.context.native)
    linking = {m for m in native if data.context.links_from(m)}
    out = []
    for index, sequence in enumerate(data.sequences):
        order = tuple(m for m in sequence if m in native)
        if len(native) < 2 or len(order) < 2 or not linking:
            continue
        global_imports = tuple(m for m in order if m in linking)
        variant = Variant("global", "global", global_imports=global_imports)
        out.append(_item(sequence_name(order, index, variant), order, variant))
    return out


def library_groups(runtimes: Sequence[RuntimeLibrary]) -> list[tuple[str, ...]]:
    """The runtime libraries to preload, grouped so that a group holds at most one copy of each
    family (two copies preloaded together would only test each other). Libraries that planned
    modules load come first; the system libstdc++ is in the first group. A library whose
    dependencies only resolve through another object's RUNPATH cannot be preloaded on its own
    (the interpreter would not start) and is left out."""
    libs = sorted(
        (r for r in runtimes if r.family in PRELOAD_FAMILIES and r.loadable),
        key=lambda r: (r.distribution is not None, -len(r.users), r.family, r.path),
    )
    groups: list[list[RuntimeLibrary]] = []
    for lib in libs:
        slot = next((g for g in groups if all(x.family != lib.family for x in g)), None)
        if slot is None:
            groups.append([lib])
        else:
            slot.append(lib)
    return [tuple(x.path for x in g) for g in groups]


def worthy_runtimes(context: PlanContext, kind: str = "preload") -> tuple[RuntimeLibrary, ...]:
    """The runtime libraries a preload of ``kind`` can matter for (all, when the scan did
    not say): for ``ld_preload``, only those it binds differently from a ctypes preload."""
    if not context.links_known:
        return context.runtimes
    worthy = set(context.ld_preload_worthy if kind == "ld_preload" else context.preload_worthy)
    return tuple(r for r in context.runtimes if r.path in worthy)


def ruled_out(context: PlanContext | None, requests: Sequence[Request]) -> list[str]:
    """What the built-in variant sources left out because the scan shows it cannot change a
    binding, and why (one line each; none when the sources are off or the scan said
    nothing)."""
    if context is None or not context.links_known or not built_in(requests):
        return []
    lines = []
    plain = [m for m in context.modules if m in set(context.native) and not context.links_from(m)]
    if plain:
        lines.append(
            f"not imported RTLD_GLOBAL: {_few(plain)} (no object they map defines a name that "
            "an object of another planned module defines, nor is another copy of a runtime "
            "one carries: their global import cannot change a binding)"
        )
    left_out = (
        (
            context.runtimes,
            context.preload_worthy,
            "not preloaded: {} (extensions link them and no other file a planned module maps "
            "has their SONAME: what their symbols can do globally, the RTLD_GLOBAL imports of "
            "the modules that link them cover)",
        ),
        (
            worthy_runtimes(context),
            context.ld_preload_worthy,
            "not started with LD_PRELOAD: {} (neither they nor the libraries they need define "
            "a name the interpreter's own libraries define, so LD_PRELOAD would bind every name "
            "as their ctypes preload at start does)",
        ),
    )
    for runtimes, kept, text in left_out:
        names = [
            os.path.basename(r.path)
            for r in runtimes
            if r.family in PRELOAD_FAMILIES and r.loadable and r.path not in kept
        ]
        if names:
            lines.append(text.format(_few(names)))
    return lines


def _few(names: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _preload_source(kind: str) -> Callable[[PlanInput], list[PlannedItem]]:
    def build(data: PlanInput) -> list[PlannedItem]:
        wanted_all = any(r.kind == kind and r.value == "all" for r in data.requests)
        groups = library_groups(worthy_runtimes(data.context, "preload" if wanted_all else kind))
        order = tuple(m for m in data.context.modules if m in set(data.context.native))
        if not order:
            return []
        out = []
        for index, group in enumerate(groups if wanted_all else groups[:1]):
            variant = (
                Variant(_libs(kind, group), kind, preload=group)
                if kind == "preload"
                else Variant(_libs(kind, group), kind, ld_preload=group)
            )
            out.append(_item(sequence_name(order, index, variant), order, variant))
        return out

    return build


def _user_source(data: PlanInput) -> list[PlannedItem]:
    modules = data.context.modules
    out: list[PlannedItem] = []
    for request in data.requests:
        if request.kind == "global":
            if request.value not in modules:
                raise UsageError(
                    f"invalid --rc-variants entry 'global:{request.value}': {request.value} is "
                    f"not a planned module ({', '.join(modules) or 'none'}); add it to "
                    "--rc-modules or remove the entry"
                )
            order = (request.value, *(m for m in modules if m != request.value))
            variant = Variant(f"global({request.value})", "user", global_imports=(request.value,))
            out.append(_item(sequence_name(order, 0, variant), order, variant))
        elif request.kind in ("preload", "ld_preload") and request.value != "all":
            libs = (request.value,)
            variant = (
                Variant(_libs("preload", libs), "user", preload=libs)
                if request.kind == "preload"
                else Variant(_libs("ld_preload", libs), "user", ld_preload=libs)
            )
            out.append(_item(sequence_name(modules, 0, variant), modules, variant))
        elif request.kind == "env":
            name, _sep, value = request.value.partition("=")
            variant = Variant(f"env({request.value})", "user", env=((name, value),))
            for index, sequence in enumerate(data.sequences):
                out.append(_item(sequence_name(sequence, index, variant), sequence, variant))
    return out


def _item(name: str, order: tuple[str, ...], variant: Variant) -> PlannedItem:
    return PlannedItem(name, "sequence", (PlannedRun(order, variant),))


register(Source("global", _global_covering))
register(Source("preload", _preload_source("preload")))
register(Source("ld_preload", _preload_source("ld_preload")))
register(Source("user", _user_source, auto=False))
