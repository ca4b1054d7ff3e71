"""CI annotations: each distinct conflict as one GitHub Actions workflow command.

``::error title=TITLE::MESSAGE`` for a conflict that fails the run, ``::warning`` for one that
does not (a conflict known in the baseline, a latent set under --rc-fail-on=error). The message
is the first lines of the verdict (what broke, why, what to do) and where it was seen. Data is
escaped as GitHub's toolkit does (``%``, CR, LF); properties also escape ``:`` and ``,``.
GitHub shows at most 10 annotations of each kind per step, so at most 10 of each are printed:
the most severe first and, when there are more, a 10th saying how many were left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from pytest_runtimeconflict.vocabulary import fails

# Per step and kind (https://docs.github.com/en/actions/reference/workflow-commands).
LIMIT = 10
SEEN_IN_SHOWN = 3
_RANK = {"crashed": 0, "hung": 1, "failed": 2, "latent": 3}
_LEVEL_RANK = {"error": 0, "warning": 1}


def enabled(setting: str, environ: Mapping[str, str]) -> bool:
    """``github`` always, ``none`` never, ``auto`` when ``GITHUB_ACTIONS`` is ``true``."""
    if setting == "auto":
        return environ.get("GITHUB_ACTIONS") == "true"
    return setting == "github"


def escape_data(text: str) -> str:
    """A workflow command's message: ``%``, CR and LF percent-encoded."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A workflow command's property value: as data, plus ``:`` and ``,``."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


@dataclass(frozen=True)
class Annotation:
    """One workflow command: level (``error`` or ``warning``), title and message lines."""

    level: str
    title: str
    lines: tuple[str, ...]
    rank: int = 0

    def command(self) -> str:
        message = escape_data("\n".join(self.lines))
        return f"::{self.level} title={escape_property(self.title)}::{message}"


def github_lines(collected: Sequence[tuple[str, Mapping[str, Any]]], fail_on: str) -> list[str]:
    """The workflow commands of a run's (or a merged report's) entries."""
    found = conflict_annotations(collected, fail_on) + latent_annotations(collected, fail_on)
    return limited(found)


def limited(annotations: Iterable[Annotation], limit: int = LIMIT) -> list[str]:
    """At most ``limit`` commands of each level, the most severe first; when more, the last
    one counts the rest."""
    ordered = sorted(annotations, key=lambda a: (_LEVEL_RANK[a.level], a.rank, a.title, a.lines))
    lines: list[str] = []
    for level in _LEVEL_RANK:
        mine = [a for a in ordered if a.level == level]
        if len(mine) > limit:
            rest = len(mine) - (limit - 1)
            more = f"{rest} more conflict(s) not annotated (GitHub shows {limit} per step)"
            mine = mine[: limit - 1] + [
                Annotation(level, "runtime conflicts", (more, "see the job log or the JSON report"))
            ]
        lines += [a.command() for a in mine]
    return lines


def conflict_annotations(
    collected: Sequence[tuple[str, Mapping[str, Any]]], fail_on: str
) -> list[Annotation]:
    """One annotation per diagnosed conflict (grouped by verdict key, as in the summary)."""
    from pytest_runtimeconflict.report.aggregate import conflict_groups

    groups = conflict_groups(collected)
    return [_conflict(members, fail_on) for _, members in sorted(groups.items())]


def _conflict(members: list[tuple[str, Mapping[str, Any]]], fail_on: str) -> Annotation:
    # The first by node id (not by run order, which differs between one run and shards).
    # A diagnosed run first (runs an earlier item's sub-run owns carry no verdict).
    members = sorted(
        members, key=lambda m: ("verdict" not in m[1], bool(m[1].get("duplicate_of")), m[0])
    )
    entry = members[0][1]
    verdict, outcome = entry["verdict"], str(entry["outcome"])
    known = any(e.get("baseline", {}).get("status") == "known" for _, e in members)
    failing = any(_fails(e, fail_on) for _, e in members)
    level = "error" if failing else "warning"
    signal = f" {entry['signal']}" if entry.get("signal") else ""
    title = f"runtime conflict {verdict.get('rule') or 'unattributed'}: {outcome}{signal}"
    if known:
        title += " (known, in the baseline)"
    elif not failing and all(_expected(e) for _, e in members):
        title += " (expected by its scenario file)"
    lines = list(entry.get("headline") or _headline_from(entry))
    lines.append("seen in: " + _nodes(sorted({n for n, _ in members})))
    return Annotation(level, title, tuple(lines), _RANK.get(outcome, len(_RANK)))


def _fails(entry: Mapping[str, Any], fail_on: str) -> bool:
    """Whether this run's conflict fails its item: not when known in the baseline, not when
    its scenario file expects it, else by --rc-fail-on."""
    if entry.get("baseline", {}).get("status") == "known" or _expected(entry):
        return False
    return fails(str(entry.get("outcome")), fail_on)


def _expected(entry: Mapping[str, Any]) -> bool:
    scenario = entry.get("scenario") or {}
    expected = (scenario.get("expected") or {}).get("outcome", "passed")
    return bool(scenario.get("matched")) and expected != "passed"


def _headline_from(entry: Mapping[str, Any]) -> list[str]:
    """For a report written before entries kept their headline."""
    verdict = entry["verdict"]
    lines = [f"{str(entry['outcome']).upper()}: {verdict.get('cause', '')}".strip()]
    if entry.get("minimal_steps"):
        lines.append("minimal order: " + " > ".join(entry["minimal_steps"]))
    if verdict.get("user_advice"):
        lines.append(f"Do: {verdict['user_advice']}")
    return lines


def latent_annotations(
    collected: Sequence[tuple[str, Mapping[str, Any]]], fail_on: str
) -> list[Annotation]:
    """One annotation per distinct latent set: one family's files mapped at once without a
    crash (the same set from any import order is one annotation)."""
    members: dict[tuple[str, tuple[str, ...]], list[tuple[str, Mapping[str, Any]]]] = {}
    for nodeid, entry in collected:
        if entry.get("outcome") == "latent":
            for found in latent_sets(entry):
                members.setdefault(found, []).append((nodeid, entry))
    return [
        _latent(family, files, seen, fail_on) for (family, files), seen in sorted(members.items())
    ]


def _latent(
    family: str, files: tuple[str, ...], seen: list[tuple[str, Mapping[str, Any]]], fail_on: str
) -> Annotation:
    known = all(e.get("baseline", {}).get("status") == "known" for _, e in seen)
    level = "error" if fails("latent", fail_on) and not known else "warning"
    what = "a failure (--rc-fail-on=latent)" if level == "error" else "a warning"
    lines = (
        f"LATENT CONFLICT: {len(files)} {family} runtimes mapped at once without a crash, "
        f"{what}: " + ", ".join(files),
        "seen in: " + _nodes(sorted({n for n, _ in seen})),
    )
    title = f"latent runtime conflict: {family}" + (" (known, in the baseline)" if known else "")
    return Annotation(level, title, lines, _RANK["latent"])


def latent_sets(entry: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    """Each family a run mapped from more than one file, with those files (``dir/name
    (runtime)``, sorted)."""
    by_family: dict[str, set[str]] = {}
    for rt in entry.get("loaded_runtimes", []):
        name = f"{_short(str(rt.get('path', '')))} ({rt.get('runtime')})"
        by_family.setdefault(str(rt.get("family")), set()).add(name)
    return [(f, tuple(sorted(names))) for f, names in sorted(by_family.items()) if len(names) > 1]


def _short(path: str) -> str:
    """``pkg.libs/libx.so``, or ``dist/lib/libx.so`` when the directory is just ``lib``."""
    parts = PurePath(path).parts
    return "/".join(parts[-3:] if len(parts) > 2 and parts[-2] == "lib" else parts[-2:])


def _nodes(nodeids: Sequence[str]) -> str:
    shown = ", ".join(nodeids[:SEEN_IN_SHOWN])
    more = len(nodeids) - SEEN_IN_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
