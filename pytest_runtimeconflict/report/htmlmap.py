"""The runtime map of the HTML report: distributions and the runtime copies they carry, drawn
as inline SVG, with one arc per conflict between the copies it blames.

Built from the JSON report only (``loaded_runtimes`` and ``library_details`` of the entries, the
verdicts, ``load_mode``), so the pytest controller and ``merge`` draw the same map. Arcs are
coloured and dashed by outcome (colour is never the only cue), labelled by rule and load mode,
and link to the conflict's card.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

Entry = Mapping[str, Any]
SYSTEM = "(no distribution)"

# Outcome -> (colour, SVG dash pattern, word): the dash pattern tells outcomes apart in print
# and for readers who do not see the colours.
STYLES = {
    "crashed": ("#b71c1c", "", "crashed"),
    "hung": ("#e65100", "10 5", "hung"),
    "failed": ("#6a1b9a", "2 4 8 4", "failed"),
    "latent": ("#546e7a", "3 4", "latent (mapped together, no crash)"),
}
BOX_X, BOX_W, HEAD_H, ROW_H, GAP, TOP = 16, 430, 30, 26, 14, 64
LABEL_H = 36


@dataclass(frozen=True)
class Copy:
    """One library file a distribution carries: a runtime copy or a library a verdict blames."""

    path: str
    distribution: str
    family: str
    runtime: str


@dataclass(frozen=True)
class Edge:
    """One conflict between two copies (``a`` == ``b`` when it blames a single one)."""

    a: str
    b: str
    rule: str
    outcome: str
    mode: str
    anchor: str  # id of the card the arc links to ("" for none)


@dataclass
class RuntimeMap:
    """What the map draws: copies grouped by distribution, and the edges between them."""

    distributions: dict[str, list[Copy]] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def add(self, copy: Copy) -> None:
        copies = self.distributions.setdefault(copy.distribution, [])
        for i, known in enumerate(copies):
            if known.path == copy.path:
                if known.family == "" and copy.family:
                    copies[i] = copy  # a blamed library that turns out to be a runtime
                return
        copies.append(copy)

    def copy_paths(self) -> set[str]:
        return {c.path for copies in self.distributions.values() for c in copies}


def build_map(entries: Sequence[Entry], conflicts: Sequence[tuple[str, Entry]]) -> RuntimeMap:
    """The map of ``entries``; ``conflicts`` are (card id, representative entry) pairs."""
    found = RuntimeMap()
    for entry in entries:
        for rt in entry.get("loaded_runtimes") or ():
            found.add(_copy(rt))
    for anchor, entry in conflicts:
        details = _blamed(entry)
        for detail in details:
            found.add(_copy(detail))
        found.edges += _conflict_edges(anchor, entry, [str(d.get("path")) for d in details])
    joined = {frozenset((e.a, e.b)) for e in found.edges}
    found.edges += [e for e in latent_edges(entries) if frozenset((e.a, e.b)) not in joined]
    for copies in found.distributions.values():
        copies.sort(key=lambda c: (c.family == "", c.family, os.path.basename(c.path)))
    return found


def _copy(rt: Mapping[str, Any]) -> Copy:
    return Copy(
        path=str(rt.get("path") or ""),
        distribution=str(rt.get("distribution") or SYSTEM),
        family=str(rt.get("family") or ""),
        runtime=str(rt.get("runtime") or ""),
    )


def _blamed(entry: Entry) -> list[Mapping[str, Any]]:
    details = [d for d in entry.get("library_details") or () if isinstance(d, Mapping)]
    if details:
        return details
    return [{"path": p} for p in entry.get("libraries") or () if isinstance(p, str)]


def _conflict_edges(anchor: str, entry: Entry, paths: list[str]) -> list[Edge]:
    verdict = entry.get("verdict") or {}
    rule = str(verdict.get("rule") or "unattributed")
    outcome, mode = str(entry.get("outcome")), load_mode_text(entry)
    if not paths:
        return []
    first, others = paths[0], paths[1:] or paths[:1]
    return [Edge(first, other, rule, outcome, mode, anchor) for other in others]


def load_mode_text(entry: Entry) -> str:
    """The conflict's minimal load mode in words: ``global(a)>b``, ``preload X``, ... or
    ``plain imports``."""
    mode = entry.get("load_mode") or {}
    parts = []
    if mode.get("global_imports"):
        parts.append("RTLD_GLOBAL " + ", ".join(map(str, mode["global_imports"])))
    parts += [f"preload {os.path.basename(str(x))}" for x in mode.get("preload") or ()]
    parts += [f"LD_PRELOAD {os.path.basename(str(x))}" for x in mode.get("ld_preload") or ()]
    env = mode.get("env") or {}
    items = env.items() if isinstance(env, Mapping) else env
    parts += [f"env {k}={v}" for k, v in items]
    return "; ".join(parts) or "plain imports"


def latent_edges(entries: Iterable[Entry]) -> list[Edge]:
    """One dotted edge chain per distinct set of one family's copies mapped together by a run
    that did not crash (a latent run); the map leaves out those a conflict arc already joins."""
    sets: set[tuple[str, tuple[str, ...]]] = set()
    for entry in entries:
        if entry.get("outcome") != "latent":
            continue
        by_family: dict[str, set[str]] = {}
        for rt in entry.get("loaded_runtimes") or ():
            by_family.setdefault(str(rt.get("family")), set()).add(str(rt.get("path")))
        sets |= {(f, tuple(sorted(p))) for f, p in by_family.items() if len(p) > 1}
    edges = []
    for family, paths in sorted(sets):
        for a, b in zip(paths, paths[1:]):
            edges.append(Edge(a, b, f"two {family} copies", "latent", "mapped together", ""))
    return list(dict.fromkeys(edges))


# ---------------------------------------------------------------- drawing


@dataclass(frozen=True)
class _Arc:
    edge: Edge
    y1: float
    y2: float
    bulge: float
    number: str  # the card's number, or L1, L2, ... for latent edges (no card)


def render_map(found: RuntimeMap) -> str:
    """The map as an ``<svg>`` element (empty string when there is nothing to draw)."""
    if not found.distributions:
        return ""
    rows, boxes, height = _layout(found)
    arcs = _arcs(found.edges, rows)
    x0 = BOX_X + BOX_W
    reach = max((a.bulge * 0.75 for a in arcs), default=0.0)
    label_x = x0 + reach + 40
    labels, label_bottom = _labels(arcs, x0, label_x)
    width = label_x + (330 if arcs else 0) + BOX_X
    total = max(height, label_bottom) + 12
    count = sum(len(c) for c in found.distributions.values())
    title = (
        f"Runtime map: {len(found.distributions)} distribution(s), {count} library copies, "
        f"{sum(1 for e in found.edges if e.outcome != 'latent')} conflict edge(s), "
        f"{sum(1 for e in found.edges if e.outcome == 'latent')} latent edge(s)"
    )
    parts = [
        f'<svg class="rc-map" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        # A group, not an image: an image's children are hidden from screen readers, and
        # the arcs are links to the cards.
        f'height="{total:.0f}" viewBox="0 0 {width:.0f} {total:.0f}" role="group" '
        'aria-labelledby="rc-map-title rc-map-desc">',
        f'<title id="rc-map-title">{escape(title)}</title>',
        f'<desc id="rc-map-desc">{escape(_description(found))}</desc>',
        _legend(),
        *boxes,
        *[_arc_svg(a, x0) for a in arcs],
        *labels,
        "</svg>",
    ]
    return "\n".join(parts)


def _layout(found: RuntimeMap) -> tuple[dict[str, float], list[str], float]:
    """Each copy's row centre (by path), the distribution boxes, and the height used."""
    rows: dict[str, float] = {}
    boxes = []
    y = float(TOP)
    for name in sorted(found.distributions, key=lambda d: (d == SYSTEM, d)):
        copies = found.distributions[name]
        h = HEAD_H + ROW_H * len(copies) + 6
        label = f"distribution {name}: {len(copies)} library file(s)"
        boxes.append(f'<g class="rc-dist" role="group" aria-label="{escape(label)}">')
        boxes.append(f"<title>{escape(label)}</title>")
        boxes.append(
            f'<rect x="{BOX_X}" y="{y:.0f}" width="{BOX_W}" height="{h}" rx="6" '
            'class="rc-dist-box"/>'
        )
        boxes.append(
            f'<text x="{BOX_X + 10}" y="{y + 20:.0f}" class="rc-dist-name">{escape(name)}</text>'
        )
        for i, copy in enumerate(copies):
            centre = y + HEAD_H + ROW_H * i + ROW_H / 2
            rows[copy.path] = centre
            boxes.append(_copy_svg(copy, centre))
        boxes.append("</g>")
        y += h + GAP
    return rows, boxes, y


def _copy_svg(copy: Copy, centre: float) -> str:
    kind = f"{copy.family}/{copy.runtime}" if copy.family else "library"
    # The name and the kind share the row: the name gets what the kind leaves free.
    name = _short(os.path.basename(copy.path), int((BOX_W - 44 - 6.6 * len(kind)) / 7.3))
    return (
        f'<g class="rc-copy" data-path="{escape(copy.path)}">'
        f"<title>{escape(copy.path)} ({escape(kind)})</title>"
        f'<rect x="{BOX_X + 8}" y="{centre - ROW_H / 2 + 2:.0f}" width="{BOX_W - 16}" '
        f'height="{ROW_H - 4}" rx="4" class="rc-copy-box rc-fam-{escape(copy.family or "none")}"/>'
        f'<text x="{BOX_X + 16}" y="{centre + 4:.0f}" class="rc-copy-name">{escape(name)}</text>'
        f'<text x="{BOX_X + BOX_W - 14}" y="{centre + 4:.0f}" text-anchor="end" '
        f'class="rc-copy-kind">{escape(kind)}</text></g>'
    )


def _arcs(edges: Sequence[Edge], rows: Mapping[str, float]) -> list[_Arc]:
    """Arcs nested by span: an arc is pushed out past every placed arc it overlaps."""
    placed: list[_Arc] = []
    drawable = [e for e in edges if e.a in rows and e.b in rows]
    spans = sorted(drawable, key=lambda e: (abs(rows[e.a] - rows[e.b]), rows[e.a], e.rule))
    for edge in spans:
        y1, y2 = sorted((rows[edge.a], rows[edge.b]))
        over = [a for a in placed if a.y1 <= y2 + 1 and y1 <= a.y2 + 1]
        bulge = 50 + 0.35 * (y2 - y1) + 26 * len(over)
        placed.append(_Arc(edge, y1, y2, bulge, ""))
    ordered = sorted(placed, key=lambda a: ((a.y1 + a.y2) / 2, a.bulge))
    latent = iter(range(1, len(ordered) + 1))
    return [
        _Arc(a.edge, a.y1, a.y2, a.bulge, _number(a.edge) or f"L{next(latent)}") for a in ordered
    ]


def _number(edge: Edge) -> str:
    return edge.anchor.rsplit("-", 1)[-1] if edge.anchor else ""


def _arc_svg(arc: _Arc, x0: float) -> str:
    colour, dash, word = STYLES.get(arc.edge.outcome, ("#37474f", "", arc.edge.outcome))
    y1, y2, b = arc.y1, arc.y2, arc.bulge
    if y1 == y2:  # one library: a loop out and back
        y1, y2 = y1 - 6, y2 + 6
    d = f"M {x0:.0f} {y1:.0f} C {x0 + b:.0f} {y1:.0f}, {x0 + b:.0f} {y2:.0f}, {x0:.0f} {y2:.0f}"
    text = f"{arc.number}: {arc.edge.rule}, {word}, {arc.edge.mode}"
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    path = (
        f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="2.5"{dash_attr} '
        f'class="rc-edge rc-edge-{escape(arc.edge.outcome)}"/>'
    )
    mid_x, mid_y = x0 + 0.75 * b, (y1 + y2) / 2
    badge = (
        f'<circle cx="{mid_x:.0f}" cy="{mid_y:.0f}" r="{9 + 3 * (len(arc.number) - 1)}" '
        f'fill="{colour}"/>'
        f'<text x="{mid_x:.0f}" y="{mid_y + 4:.0f}" text-anchor="middle" '
        f'class="rc-badge">{arc.number}</text>'
    )
    inner = f"<title>{escape(text)}</title>{path}{badge}"
    if arc.edge.anchor:
        return (
            f'<a href="#{escape(arc.edge.anchor)}" class="rc-edge-link" '
            f'aria-label="{escape(text)}">{inner}</a>'
        )
    return f'<g class="rc-edge-group" role="img" aria-label="{escape(text)}">{inner}</g>'


def _labels(arcs: Sequence[_Arc], x0: float, label_x: float) -> tuple[list[str], float]:
    """Each arc's label (number, rule, outcome, load mode) in a column right of the arcs, pushed
    down so none overlaps, with a leader line from the arc's badge."""
    out, bottom = [], 0.0
    for arc in arcs:
        colour, _, word = STYLES.get(arc.edge.outcome, ("#37474f", "", arc.edge.outcome))
        mid_y = (arc.y1 + arc.y2) / 2
        y = max(mid_y - 6, bottom + 4)
        bottom = y + LABEL_H
        out.append(
            f'<g class="rc-edge-label" aria-hidden="true">'
            f'<line x1="{x0 + 0.75 * arc.bulge + 9:.0f}" y1="{mid_y:.0f}" x2="{label_x - 4:.0f}" '
            f'y2="{y + 4:.0f}" stroke="{colour}" stroke-width="1" opacity="0.5"/>'
            f'<text x="{label_x:.0f}" y="{y + 8:.0f}" class="rc-label-rule" fill="{colour}">'
            f"{arc.number}. {escape(_short(arc.edge.rule, 34))} ({escape(word.split(' ')[0])})"
            f'</text><text x="{label_x:.0f}" y="{y + 24:.0f}" class="rc-label-mode">'
            f"{escape(_short(arc.edge.mode, 48))}</text></g>"
        )
    return out, bottom


def _legend() -> str:
    items, x = [], BOX_X
    for colour, dash, word in STYLES.values():
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        items.append(
            f'<line x1="{x}" y1="22" x2="{x + 34}" y2="22" stroke="{colour}" stroke-width="3"'
            f'{dash_attr}/><text x="{x + 40}" y="26" class="rc-legend">{escape(word)}</text>'
        )
        x += 48 + 7 * len(word)
    return '<g class="rc-legend-group" aria-hidden="true">' + "".join(items) + "</g>"


def _description(found: RuntimeMap) -> str:
    parts = []
    for name in sorted(found.distributions):
        files = ", ".join(os.path.basename(c.path) for c in found.distributions[name])
        parts.append(f"{name} carries {files}")
    for edge in found.edges:
        a, b = os.path.basename(edge.a), os.path.basename(edge.b)
        parts.append(f"{edge.rule} ({edge.outcome}, {edge.mode}) between {a} and {b}")
    return "; ".join(parts) + "."


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
