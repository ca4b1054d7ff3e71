"""MkDocs hook: draw the docs' ```mermaid flowcharts as inline SVG at build time.

mkdocs-material draws a ``<pre class="mermaid">`` block with Mermaid loaded from a CDN, so
offline (or behind a proxy) the page shows the diagram's source text. This hook replaces each
such block with an ``<svg>`` drawn here, so the built site needs no network and no script to
show its diagrams (and prints them).

It draws the subset of Mermaid the docs use: ``flowchart`` (or ``graph``) ``LR`` or ``TD``/``TB``,
nodes as ``id``, ``id[label]`` or ``id["label"]`` (labels may hold ``<br/>`` and
``<code>...</code>``), and edges as ``-->`` chains. Anything else fails the build with the page,
the line and what is supported, rather than drawing something wrong.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from mkdocs.exceptions import PluginError

BLOCK = re.compile(r'<pre class="mermaid"><code>(.*?)</code></pre>', re.DOTALL)
HEADER = re.compile(r"^(?:flowchart|graph)\s+(LR|TD|TB)\s*$")
NODE = re.compile(r'^([A-Za-z_][\w-]*)\s*(?:\[\s*(?:"(.*)"|([^\]"]*))\s*\])?$')
PER_ROW = 4  # LR: nodes per row before the chain wraps to the next row
GAP_X, GAP_Y, PAD, LINE_H = 56, 56, 12, 18
SANS_W, MONO_W = 7.4, 7.9  # average glyph widths at the sizes used below


@dataclass
class Node:
    id: str
    lines: list[list[tuple[str, bool]]] = field(default_factory=list)  # (text, is_code) runs
    x: float = 0.0
    y: float = 0.0

    @property
    def width(self) -> float:
        widest = max(sum(len(t) * (MONO_W if c else SANS_W) for t, c in ln) for ln in self.lines)
        return widest + 2 * PAD + 8

    @property
    def height(self) -> float:
        return len(self.lines) * LINE_H + 2 * PAD


@dataclass
class Graph:
    direction: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)


def on_page_content(html_text: str, page: Any, **_: Any) -> str:
    """Replace every mermaid block of the page with its SVG."""
    where = page.file.src_uri

    def draw(match: re.Match[str]) -> str:
        return render(parse(html.unescape(match.group(1)), where))

    return BLOCK.sub(draw, html_text)


def parse(source: str, where: str = "<diagram>") -> Graph:
    lines = [ln.strip() for ln in source.strip().splitlines()]
    head = HEADER.match(lines[0]) if lines else None
    if head is None:
        _unsupported(where, 1, lines[0] if lines else "", "a 'flowchart LR' or 'flowchart TD' line")
    graph = Graph("LR" if head.group(1) == "LR" else "TD")
    for number, line in enumerate(lines[1:], start=2):
        if not line or line.startswith("%%"):
            continue
        ids = [_node(graph, part.strip(), where, number) for part in line.split("-->")]
        graph.edges += list(zip(ids, ids[1:]))
    return graph


def _node(graph: Graph, text: str, where: str, number: int) -> str:
    match = NODE.match(text)
    if match is None:
        _unsupported(where, number, text, 'nodes as id, id[label] or id["label"], edges as -->')
    node_id, label = match.group(1), match.group(2) or match.group(3)
    node = graph.nodes.setdefault(node_id, Node(node_id, [[(node_id, False)]]))
    if label:
        node.lines = [_runs(part) for part in re.split(r"<br\s*/?>", label)]
    return node_id


def _runs(line: str) -> list[tuple[str, bool]]:
    parts = re.split(r"<code>(.*?)</code>", line)
    runs = [(html.unescape(re.sub(r"<[^>]+>", "", p)), i % 2 == 1) for i, p in enumerate(parts)]
    return [(t, c) for t, c in runs if t] or [("", False)]


def _unsupported(where: str, number: int, text: str, expected: str) -> Any:
    raise PluginError(
        f"docs/{where}: mermaid line {number} {text!r} is not drawn by docs/hooks/"
        f"mermaid_svg.py (it draws {expected}); simplify the diagram or extend the hook"
    )


def _ranks(graph: Graph) -> dict[str, int]:
    """Longest path from a source: a node's column (LR) or row (TD)."""
    rank = dict.fromkeys(graph.nodes, 0)
    for _ in range(len(graph.nodes) + 1):
        changed = False
        for a, b in graph.edges:
            if rank[b] < rank[a] + 1:
                rank[b], changed = rank[a] + 1, True
        if not changed:
            return rank
    raise PluginError("a mermaid flowchart has a cycle; docs/hooks/mermaid_svg.py draws DAGs only")


def layout(graph: Graph) -> tuple[float, float]:
    """Place the nodes; return the drawing's width and height."""
    rank = _ranks(graph)
    per_row = PER_ROW if graph.direction == "LR" else 1
    slots: dict[tuple[int, int], list[Node]] = {}  # (band, position in band) -> nodes
    for node_id, node in graph.nodes.items():
        r = rank[node_id]
        slots.setdefault((r // per_row, r % per_row), []).append(node)
    bands = 1 + max(b for b, _ in slots)
    widths = [0.0] * (max(p for _, p in slots) + 1)
    for (_, pos), nodes in slots.items():
        size = (
            max(n.width for n in nodes)
            if graph.direction == "LR"
            else sum(n.width for n in nodes) + GAP_X * (len(nodes) - 1)
        )
        widths[pos] = max(widths[pos], size)
    y = 4.0
    for band in range(bands):
        in_band = {pos: nodes for (b, pos), nodes in slots.items() if b == band}
        band_h = max(_stack_height(ns, graph.direction) for ns in in_band.values())
        for pos, nodes in in_band.items():
            _place(nodes, 4 + sum(widths[:pos]) + GAP_X * pos, y, widths[pos], band_h, graph)
        y += band_h + GAP_Y
    return 8 + sum(widths) + GAP_X * (len(widths) - 1), y - GAP_Y + 8


def _stack_height(nodes: list[Node], direction: str) -> float:
    if direction == "LR":
        return sum(n.height for n in nodes) + 20 * (len(nodes) - 1)
    return max(n.height for n in nodes)


def _place(nodes: list[Node], x: float, y: float, width: float, band_h: float, g: Graph) -> None:
    if g.direction == "LR":
        top = y + (band_h - _stack_height(nodes, "LR")) / 2
        for node in nodes:
            node.x, node.y = x + (width - node.width) / 2, top
            top += node.height + 20
        return
    left = x + (width - sum(n.width for n in nodes) - GAP_X * (len(nodes) - 1)) / 2
    for node in nodes:
        node.x, node.y = left, y + (band_h - node.height) / 2
        left += node.width + GAP_X


def render(graph: Graph) -> str:
    width, height = layout(graph)
    title = "Diagram: " + ", ".join(f"{_plain(graph.nodes[a])} to {_plain(graph.nodes[b])}"
                                    for a, b in graph.edges)  # fmt: skip
    parts = [
        f'<figure class="rc-diagram"><svg xmlns="http://www.w3.org/2000/svg" role="img" '
        f'class="rc-flowchart" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'style="max-width:100%;height:auto" aria-label="{html.escape(title)}">',
        f"<title>{html.escape(title)}</title>",
        '<defs><marker id="rc-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#3949ab"/></marker></defs>',
        *[_edge(graph.nodes[a], graph.nodes[b], graph.direction) for a, b in graph.edges],
        *[_node_svg(n) for n in graph.nodes.values()],
        "</svg></figure>",
    ]
    return "\n".join(parts)


def _plain(node: Node) -> str:
    return "".join(t for t, _ in node.lines[0]) or node.id


def _node_svg(node: Node) -> str:
    texts = []
    for i, line in enumerate(node.lines):
        spans = "".join(
            f'<tspan font-family="ui-monospace, DejaVu Sans Mono, monospace" font-size="13" '
            f'fill="#283593">{html.escape(t)}</tspan>'
            if code
            else html.escape(t)
            for t, code in line
        )
        weight = ' font-weight="700"' if i == 0 else ""
        texts.append(
            f'<text x="{node.x + node.width / 2:.1f}" y="{node.y + PAD + 13 + i * LINE_H:.1f}" '
            f'text-anchor="middle" font-size="14" font-family="system-ui, DejaVu Sans, '
            f'sans-serif" fill="#1b1f23"{weight}>{spans}</text>'
        )
    return (
        f'<g class="node" data-id="{html.escape(node.id)}"><title>{html.escape(_plain(node))}'
        f'</title><rect x="{node.x:.1f}" y="{node.y:.1f}" width="{node.width:.1f}" '
        f'height="{node.height:.1f}" rx="8" fill="#e8eaf6" stroke="#3949ab" stroke-width="1.5"/>'
        + "".join(texts)
        + "</g>"
    )


def _edge(a: Node, b: Node, direction: str) -> str:
    if direction == "LR" and b.x > a.x:  # the next column of the same row
        x1, y1 = a.x + a.width, a.y + a.height / 2
        x2, y2 = b.x, b.y + b.height / 2
        mid = (x1 + x2) / 2
        d = f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2 - 2:.1f},{y2:.1f}"
    else:  # down to the next row (TD, or an LR chain wrapping)
        x1, y1 = a.x + a.width / 2, a.y + a.height
        x2, y2 = b.x + b.width / 2, b.y
        turn = y2 - GAP_Y / 2
        d = f"M{x1:.1f},{y1:.1f} V{turn:.1f} H{x2:.1f} V{y2 - 2:.1f}"
    return (
        f'<path class="edge" d="{d}" fill="none" stroke="#3949ab" stroke-width="1.6" '
        'marker-end="url(#rc-arrow)"/>'
    )
