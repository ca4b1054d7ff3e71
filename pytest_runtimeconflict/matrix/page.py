"""The matrix as one self-contained HTML page (inline CSS, no script, every value escaped):
the table of rows, each conflict's libraries and minimal order, each error."""

from __future__ import annotations

import html
from collections.abc import Sequence

from pytest_runtimeconflict.matrix.results import Matrix, Row, new_conflicts, rules_text

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #d0d7de;padding:.35em .7em;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right}
.clean{color:#1a7f37}.latent{color:#9a6700}.conflict,.error{color:#cf222e;font-weight:600}
code{font-size:.9em} ul{margin:.2em 0;padding-left:1.2em}
"""


def render(matrix: Matrix, known: frozenset[str], title: str = "Runtime conflict matrix") -> str:
    """The page of ``matrix`` judged against the baseline keys ``known``."""
    esc = html.escape
    new = new_conflicts(matrix.rows, known)
    candidate = ", ".join(f"<code>{esc(c)}</code>" for c in matrix.candidate)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>Candidate: {candidate}. {len(matrix.rows)} partner(s); "
        f"{len(new)} conflict(s) not in the baseline.</p>",
        _table(matrix.rows, known),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _table(rows: Sequence[Row], known: frozenset[str]) -> str:
    head = "".join(
        f"<th>{h}</th>"
        for h in ("partner", "version", "outcome", "rules", "child runs", "seconds", "details")
    )
    body = [f"<tr>{head}</tr>"]
    for row in rows:
        esc = html.escape
        body.append(
            "<tr>"
            f"<td>{esc(row.partner)}</td><td>{esc(row.version or '-')}</td>"
            f'<td class="{esc(row.outcome)}">{esc(row.outcome)}</td>'
            f"<td>{esc(rules_text(row, known) or '-')}</td>"
            f'<td class="num">{row.child_runs}</td><td class="num">{row.seconds:.1f}</td>'
            f"<td>{_details(row, known)}</td></tr>"
        )
    return "<table>\n" + "\n".join(body) + "\n</table>"


def _details(row: Row, known: frozenset[str]) -> str:
    esc = html.escape
    items = []
    for c in row.conflicts:
        mark = "known" if c.key in known else "new"
        libraries = " + ".join(f"{d or '(system)'}/{f}" for d, f in c.conflict.libraries)
        order = " &gt; ".join(esc(s) for s in c.minimal_order)
        items.append(f"<li>{mark}: <code>{esc(c.conflict.rule)}</code> {esc(libraries)}"
                     f"<br>minimal order: <code>{order}</code></li>")  # fmt: skip
    for latent in row.latent:
        items.append(f"<li>latent: <code>{esc(str(latent.get('rule')))}</code></li>")
    if row.error:
        items.append(f"<li>error: {esc(row.error)}</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""
