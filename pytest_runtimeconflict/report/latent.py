"""Latent runtime sets: runtime families a run mapped from more than one file without a
crash, as the item warnings, the failure text (with ``--rc-fail-on=latent``) and the terminal
summary show them. Read from a report entry's JSON (``loaded_runtimes``, ``steps``)."""

from __future__ import annotations

from pathlib import Path

from pytest_runtimeconflict.vocabulary import JsonObject


def latent_text_json(entry: JsonObject) -> str:
    """One line naming the runtime families mapped more than once, and their files."""
    by_family: dict[str, list[JsonObject]] = {}
    for rt in entry.get("loaded_runtimes", []):
        by_family.setdefault(str(rt.get("family")), []).append(rt)
    parts = [
        f"{family}: " + ", ".join(f"{rt.get('runtime')} {rt.get('path')}" for rt in rts)
        for family, rts in sorted(by_family.items())
        if len({rt.get("path") for rt in rts}) > 1
    ]
    order = " > ".join(entry.get("steps", []))
    return f"latent runtime conflict in {order}: " + "; ".join(parts)


def latent_sets(entry: JsonObject) -> list[tuple[str, tuple[str, ...]]]:
    """Each runtime family mapped from more than one file in a run, with those files (labelled
    by :func:`runtime_label`, sorted): ``("blas", ("a.libs/x.so (a, openblas)", ...))``."""
    by_family: dict[str, set[str]] = {}
    for rt in entry.get("loaded_runtimes", []):
        by_family.setdefault(str(rt.get("family")), set()).add(runtime_label(rt))
    return [
        (family, tuple(sorted(files)))
        for family, files in sorted(by_family.items())
        if len(files) > 1
    ]


def latent_warnings(entry: JsonObject) -> list[str]:
    """One warning text per latent runtime set of a run, independent of the import order."""
    return [
        f"latent runtime conflict: {len(files)} {family} runtimes mapped at once without a "
        f"crash: {', '.join(files)} (--rc-fail-on=latent fails on it)"
        for family, files in latent_sets(entry)
    ]


def runtime_label(rt: JsonObject) -> str:
    """``site-relative/path (distribution, runtime)``, or the path's last parts outside any
    distribution (system libraries)."""
    path = str(rt.get("path", ""))
    parts = Path(path).parts
    if "site-packages" in parts:
        short = "/".join(parts[len(parts) - parts[::-1].index("site-packages") :])
    else:
        short = "/".join(parts[-3:] if len(parts) > 2 and parts[-2] == "lib" else parts[-2:])
    owner = rt.get("distribution")
    return f"{short} ({owner}, {rt.get('runtime')})" if owner else f"{short} ({rt.get('runtime')})"
