"""The HTML report (``--rc-html FILE``, ``merge --html FILE``): one self-contained page built
from the JSON report dict (``pytest-runtimeconflict/report/1``; its keys are the contract).

The page needs no network: style, script and data are inline, and the fonts are the system's.
It holds the runtime map (inline SVG, :mod:`.htmlmap`), a card per distinct conflict (headline,
minimal order, the advice the counter-experiments verified, the reproducer with a copy button
and, when recorded, whether it reproduced; evidence folded), the latent runtime sets, the
coverage and the plan's skipped items with their reasons. The report itself is embedded as JSON
(``<script type="application/json">``). Every string from the environment is escaped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from pytest_runtimeconflict import __version__
from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.files.locking import replace_atomically
from pytest_runtimeconflict.planning.workloads import is_workload, probe_label, step_label
from pytest_runtimeconflict.report import aggregate, repro
from pytest_runtimeconflict.report.htmlassets import CSS, SCRIPT
from pytest_runtimeconflict.report.htmlmap import build_map, load_mode_text, render_map

Entry = Mapping[str, Any]
# Card id, the entry the summary shows (the group's first diagnosed run), the entry the
# reproducer is written from (as --rc-repro-dir picks it), and every run seen with it.
Conflict = tuple[str, Entry, Entry, list[tuple[str, Entry]]]
_SEVERITY = {"crashed": 0, "hung": 1, "failed": 2, "latent": 3}
SEEN_IN_SHOWN = 8


def write_html(path: str | os.PathLike[str], data: Mapping[str, Any], option: str) -> None:
    """Write the HTML report of ``data`` to ``path`` atomically; ``UsageError`` naming
    ``option`` when it cannot be written."""
    page = render_html(data).encode("utf-8")
    try:
        replace_atomically(Path(path), page)
    except OSError as exc:
        raise UsageError(
            f"cannot write {option} {os.fspath(path)!r}: {exc.strerror}; check the directory"
        ) from None


def render_html(data: Mapping[str, Any]) -> str:
    """The whole page for one JSON report dict."""
    entries = [e for e in data.get("scenarios") or () if isinstance(e, Mapping)]
    collected = [(str(e.get("nodeid") or e.get("id") or ""), e) for e in entries]
    conflicts = conflict_cards(collected)
    found = build_map(entries, [(anchor, entry) for anchor, entry, _, _ in conflicts])
    body = [
        _header(data, collected, conflicts),
        '<main id="main">',
        _map_section(found),
        _conflicts_section(conflicts),
        _latent_section(entries),
        _coverage_section(data.get("coverage")),
        _skipped_section(data, entries),
        _data_section(data),
        "</main>",
        f"<footer>Written by pytest-runtimeconflict {escape(__version__)}. This page loads "
        "nothing from the network.</footer>",
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data: blob:\">",
            "<title>Runtime conflicts report</title>",
            f"<style>{CSS}</style>",
            "</head>",
            "<body>",
            '<a class="skip" href="#main">Skip to the report</a>',
            *body,
            f"<script>{SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def conflict_cards(collected: Sequence[tuple[str, Entry]]) -> list[Conflict]:
    """The distinct conflicts (by verdict key, as the terminal summary groups them), most
    severe first: each with its card id, the entry the summary shows, the entry the reproducer
    is written from, and every run seen with it."""
    groups = aggregate.conflict_groups(collected)
    chosen = []
    for key, members in groups.items():
        diagnosed = repro.conflicts(e for _, e in members)
        shown = members[0][1]
        chosen.append((key, shown, diagnosed[0] if diagnosed else shown, members))
    chosen.sort(key=lambda c: (_SEVERITY.get(str(c[1].get("outcome")), 9), c[0]))
    return [(f"conflict-{n}", *rest) for n, (_, *rest) in enumerate(chosen, 1)]


# ---------------------------------------------------------------- header


def _header(
    data: Mapping[str, Any], collected: Sequence[tuple[str, Entry]], conflicts: list[Conflict]
) -> str:
    from pytest_runtimeconflict.report.ci import outcome_counts

    plan = data.get("plan") if isinstance(data.get("plan"), Mapping) else {}
    facts = [
        ("Distinct conflicts", str(len(conflicts))),
        ("Child runs", str(aggregate.child_runs([(n, dict(e)) for n, e in collected]))),
        ("Items", outcome_counts(data.get("item_outcomes") or {})),
        ("Fails on", str(data.get("fail_on") or "n/a")),
        ("Plan", f"{plan.get('id', 'n/a')} ({plan.get('items', '?')} items)" if plan else "n/a"),
    ]
    facts += _shard_facts(data)
    rows = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    links = [
        ("rc-map-section", "Runtime map"),
        ("rc-conflicts", "Conflicts"),
        ("rc-latent", "Latent sets"),
        ("rc-coverage", "Coverage"),
        ("rc-skipped", "Skipped"),
        ("rc-data-section", "Data"),
    ]
    nav = "".join(f'<li><a href="#{i}">{escape(t)}</a></li>' for i, t in links)
    return (
        "<header><h1>Runtime conflicts report</h1>"
        f'<dl class="facts">{rows}</dl>'
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav>'
        '<p id="rc-status" class="muted" role="status" aria-live="polite"></p></header>'
    )


def _shard_facts(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    merged, shard = data.get("merged"), data.get("shard")
    if isinstance(merged, Mapping):
        shards = ", ".join(f"{i}/{merged.get('count')}" for i in merged.get("shards") or ())
        missing = ", ".join(f"{i}/{merged.get('count')}" for i in merged.get("missing") or ())
        text = f"merged shard(s) {shards}" + (f"; MISSING {missing}" if missing else "")
        return [("Shards", text)]
    if isinstance(shard, Mapping):
        return [("Shard", f"{shard.get('index')}/{shard.get('count')}")]
    return []


# ---------------------------------------------------------------- map


def _map_section(found: Any) -> str:
    svg = render_map(found)
    if not svg:
        return (
            '<section id="rc-map-section" aria-labelledby="rc-map-h"><h2 id="rc-map-h">'
            'Runtime map</h2><p class="muted">No runtime copies or blamed libraries were '
            "recorded in this report.</p></section>"
        )
    rows = []
    for name in sorted(found.distributions):
        for copy in found.distributions[name]:
            kind = f"{copy.family}/{copy.runtime}" if copy.family else "library"
            rows.append(
                f"<tr><td>{escape(name)}</td><td>{escape(os.path.basename(copy.path))}</td>"
                f'<td>{escape(kind)}</td><td class="mono">{escape(copy.path)}</td></tr>'
            )
    return (
        '<section id="rc-map-section" aria-labelledby="rc-map-h">'
        '<h2 id="rc-map-h">Runtime map</h2>'
        '<figure><div class="map-wrap">' + svg + "</div>"
        '<figcaption class="muted">Each box is a distribution and the library copies it '
        "carries; each arc joins the copies one conflict blames (solid: crashed, dashed: hung, "
        "dash-dot: failed, dotted: latent), numbered and labelled by rule and load mode; select "
        "an arc to open its card.</figcaption></figure>"
        "<details><summary>The same as a table</summary><table><thead><tr>"
        '<th scope="col">Distribution</th><th scope="col">File</th>'
        '<th scope="col">Runtime</th><th scope="col">Path</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></details></section>"
    )


# ---------------------------------------------------------------- conflict cards


def _conflicts_section(conflicts: list[Conflict]) -> str:
    head = (
        '<section id="rc-conflicts" aria-labelledby="rc-conflicts-h">'
        f'<h2 id="rc-conflicts-h">Conflicts ({len(conflicts)})</h2>'
    )
    if not conflicts:
        return head + '<p class="muted">No conflict: no run crashed, failed or hung.</p></section>'
    cards = [_card(*conflict) for conflict in conflicts]
    return head + '<div class="cards">' + "".join(cards) + "</div></section>"


def _card(anchor: str, entry: Entry, repro_entry: Entry, members: list[tuple[str, Entry]]) -> str:
    verdict = entry.get("verdict") or {}
    outcome = str(entry.get("outcome"))
    rule = str(verdict.get("rule") or "unattributed")
    number = anchor.rsplit("-", 1)[-1]
    title = f"{number}. {rule}"
    headline = [str(x) for x in entry.get("headline") or ()] or [
        str(verdict.get("cause") or entry.get("message") or "")
    ]
    lines = "".join(f"<li>{escape(x)}</li>" for x in headline if x)
    return (
        f'<article class="card {escape(outcome)}" id="{anchor}" aria-labelledby="{anchor}-h">'
        f'<h3 id="{anchor}-h">{escape(title)} <span class="outcome {escape(outcome)}">'
        f"{escape(outcome)}</span></h3>"
        f'<ul class="headline">{lines}</ul>'
        + _facts(entry, members)
        + _advice(entry)
        + _reproducer(anchor, repro_entry)
        + _evidence(anchor, entry)
        + "</article>"
    )


def minimal_order(entry: Entry) -> str:
    """The minimal order with its load mode and the probe that failed, as in the summary:
    ``global(a) > b > exercise (openmp probe of libx.so)``."""
    minimal = entry.get("minimal_steps") or entry.get("steps") or []
    mode = entry.get("load_mode") or {}
    order = " > ".join(step_label(str(s)) for s in minimal)
    if mode.get("order"):
        order = str(mode["order"]).replace(">", " > ") + "".join(
            f" > {step_label(str(s))}" for s in minimal if is_workload(str(s))
        )
        order += "".join(f" (preload {x})" for x in mode.get("preload") or ())
        order += "".join(f" (LD_PRELOAD {x})" for x in mode.get("ld_preload") or ())
    run = entry.get("minimal_run") or {}
    probe = probe_label(run.get("phase"), run.get("exercised") or ())
    return order + (f" > {probe}" if probe else "")


def _facts(entry: Entry, members: list[tuple[str, Entry]]) -> str:
    verdict = entry.get("verdict") or {}
    nodes = sorted({n for n, _ in members if n})
    what = str(entry.get("signal") or entry.get("exception_type") or entry.get("outcome"))
    rows = [
        ("Minimal order", f"<code>{escape(minimal_order(entry))}</code>"),
        ("Load mode", escape(load_mode_text(entry))),
        ("What happened", escape(what)),
        ("Confidence", escape(str(verdict.get("confidence") or "n/a"))),
        ("Libraries", _libraries(entry)),
        ("Seen in", _seen_in(nodes)),
    ]
    if entry.get("baseline"):
        rows.append(("Baseline", escape(str(entry["baseline"].get("status")))))
    cells = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    return f"<dl>{cells}</dl>"


def _libraries(entry: Entry) -> str:
    details = entry.get("library_details") or [{"path": p} for p in entry.get("libraries") or ()]
    if not details:
        return "none named"
    items = []
    for d in details:
        dist = d.get("distribution") or "no distribution"
        role = f", {d['role']}" if d.get("role") else ""
        items.append(
            f'<li><code title="{escape(str(d.get("path")))}">'
            f"{escape(os.path.basename(str(d.get('path'))))}</code> "
            f"({escape(str(dist))}{escape(role)})</li>"
        )
    return "<ul>" + "".join(items) + "</ul>"


def _seen_in(nodes: list[str]) -> str:
    shown = "".join(f"<li><code>{escape(n)}</code></li>" for n in nodes[:SEEN_IN_SHOWN])
    more = f"<li>and {len(nodes) - SEEN_IN_SHOWN} more</li>" if len(nodes) > SEEN_IN_SHOWN else ""
    return f"{len(nodes)} item(s)<ul>{shown}{more}</ul>"


def _advice(entry: Entry) -> str:
    verdict = entry.get("verdict") or {}
    parts = []
    if verdict.get("user_advice"):
        parts.append(f"<p><strong>Avoid it:</strong> {escape(str(verdict['user_advice']))}</p>")
    avoided = [a for a in entry.get("avoided_by") or () if isinstance(a, Mapping)]
    if avoided:
        items = "".join(
            f"<li>{escape(str(a.get('change')))} &rarr; {escape(str(a.get('outcome')))}"
            + (' <span class="unsafe">(unsafe)</span>' if a.get("unsafe") else "")
            + "</li>"
            for a in avoided
        )
        parts.append(f"<p>Verified by a child run to avoid it:</p><ul>{items}</ul>")
    if verdict.get("author_advice"):
        text = escape(str(verdict["author_advice"]))
        parts.append(f"<p><strong>For the package author:</strong> {text}</p>")
    return "".join(parts)


def _reproducer(anchor: str, entry: Entry) -> str:
    name = repro.file_name(entry)
    try:
        script = repro.reproducer(entry, name)
        command = repro.shell_command(entry, name)
    except (KeyError, TypeError, ValueError) as exc:  # an entry written by another version
        return f'<p class="muted">No reproducer: {escape(str(exc))}</p>'
    sid, cid = f"{anchor}-script", f"{anchor}-command"
    return (
        f"<details><summary>Reproducer <code>{escape(name)}</code></summary>"
        f"<p>{_verification(entry)}</p>"
        f'<p>Run it with: <button type="button" data-copy="{cid}" data-what="the command" '
        f'aria-label="Copy the command that runs {escape(name)}">Copy command</button></p>'
        f'<pre id="{cid}"><code>{escape(command)}</code></pre>'
        f'<p><button type="button" data-copy="{sid}" data-what="the script" '
        f'aria-label="Copy the reproducer script {escape(name)}">Copy script</button></p>'
        f'<pre id="{sid}"><code>{escape(script)}</code></pre></details>'
    )


def _verification(entry: Entry) -> str:
    """Whether the reproducer reproduced, when the report recorded its check."""
    observed = entry.get("reproduce_observed")
    seen = f" (observed: {escape(str(observed))})" if observed else ""
    if entry.get("reproduces") is True:
        return f'<span class="verified">Checked: it reproduced{seen}.</span>'
    if entry.get("reproduces") is False:
        return f'<span class="notverified">Checked: it did not reproduce{seen}.</span>'
    return f"Not checked here; it should {escape(repro.expectation(entry))}."


def _evidence(anchor: str, entry: Entry) -> str:
    blocks = []
    evidence = [str(x) for x in entry.get("evidence") or ()]
    if evidence:
        blocks.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in evidence) + "</ul>")
    experiments = [x for x in entry.get("experiments") or () if isinstance(x, Mapping)]
    if experiments:
        rows = "".join(
            f"<tr><td>{escape(str(x.get('change')))}</td><td>{escape(str(x.get('outcome')))}"
            f"</td><td>{'avoids' if x.get('avoided') else 'no'}</td></tr>"
            for x in experiments
        )
        blocks.append(
            '<table><caption>Counter-experiments</caption><thead><tr><th scope="col">Change'
            '</th><th scope="col">Outcome</th><th scope="col">Avoids it</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    for key, label in (
        ("stderr_tail", "Standard error (tail)"),
        ("python_traceback", "Python traceback"),
        ("gdb_backtrace", "gdb backtrace"),
    ):
        if entry.get(key):
            blocks.append(f"<h4>{label}</h4><pre><code>{escape(str(entry[key]))}</code></pre>")
    if not blocks:
        return ""
    return f'<details id="{anchor}-evidence"><summary>Evidence</summary>{"".join(blocks)}</details>'


# ---------------------------------------------------------------- other sections


def _latent_section(entries: Sequence[Entry]) -> str:
    latent = aggregate.latent_sets(dict(e) for e in entries if e.get("outcome") == "latent")
    static = aggregate.static_lines(dict(e) for e in entries)
    items = [
        f"<li><strong>{escape(family)}</strong>: "
        + ", ".join(f"<code>{escape(f)}</code>" for f in files)
        + "</li>"
        for family, files in latent
    ]
    body = (
        f"<ul>{''.join(items)}</ul>"
        if items
        else '<p class="muted">No runtime family was mapped more than once without a crash.</p>'
    )
    if static:
        body += (
            "<h3>Static findings</h3><ul>"
            + "".join(f"<li>{escape(line)}</li>" for line in static)
            + "</ul>"
        )
    return (
        '<section id="rc-latent" aria-labelledby="rc-latent-h"><h2 id="rc-latent-h">Latent '
        "runtime sets</h2><p>Runtimes mapped more than once in a run that did not crash (a "
        f"warning unless --rc-fail-on=latent):</p>{body}</section>"
    )


def _coverage_section(coverage: Any) -> str:
    head = '<section id="rc-coverage" aria-labelledby="rc-cov-h"><h2 id="rc-cov-h">Coverage</h2>'
    if not isinstance(coverage, Mapping):
        return head + '<p class="muted">No planned sequences ran.</p></section>'
    strength = coverage.get("strength", 2)
    unit = "ordered pairs" if strength == 2 else f"ordered {strength}-tuples"
    text = (
        f"<p>{unit.capitalize()} exercised with plain imports: "
        f"<strong>{escape(str(coverage.get('tuples_exercised')))}/"
        f"{escape(str(coverage.get('tuples_total')))}</strong> over "
        f"{len(coverage.get('modules') or ())} module(s); blocked by a conflict: "
        f"{len(coverage.get('blocked') or ())}, not run: {escape(str(coverage.get('not_run')))}."
    )
    if "targeted_pairs" in coverage:
        text += (
            f" In short targeted sequences: {escape(str(coverage['targeted_pairs']))} ordered "
            f"pairs; only inside long sequences: {escape(str(coverage.get('long_only_pairs')))}."
        )
    text += "</p>" + _variant_table(coverage.get("variants") or ())
    blocked = [b for b in coverage.get("blocked") or () if isinstance(b, Mapping)]
    if blocked:
        text += (
            "<h3>Blocked</h3><ul>"
            + "".join(
                f"<li><code>{escape(' > '.join(map(str, b.get('tuple') or ())))}</code>: "
                f"{escape(str(b.get('conflict')))}</li>"
                for b in blocked
            )
            + "</ul>"
        )
    masked = [m for m in coverage.get("masked") or () if isinstance(m, Mapping)]
    if masked:
        text += (
            "<h3>Masked</h3><ul>"
            + "".join(
                f"<li><code>{escape(' > '.join(map(str, m.get('tuple') or ())))}</code> "
                f"({escape(str(m.get('library')))})</li>"
                for m in masked
            )
            + "</ul>"
        )
    return head + text + "</section>"


def _variant_table(variants: Sequence[Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(str(v.get('variant')))}</code></td><td>{escape(str(v.get('unit')))}"
        f"</td><td>{escape(str(v.get('exercised')))}/{escape(str(v.get('total')))}</td>"
        f"<td>{escape(str(v.get('blocked')))}</td></tr>"
        for v in variants
        if isinstance(v, Mapping)
    )
    if not rows:
        return ""
    return (
        '<table><caption>Load-mode variants</caption><thead><tr><th scope="col">Variant</th>'
        '<th scope="col">Unit</th><th scope="col">Exercised</th><th scope="col">Blocked</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _skipped_section(data: Mapping[str, Any], entries: Sequence[Entry]) -> str:
    outcomes = data.get("item_outcomes") or {}
    reasons = data.get("item_skip_reasons") or {}
    skipped = sorted(n for n, o in outcomes.items() if o == "skipped")
    skipped += sorted(n for n in reasons if n not in outcomes)
    items = [
        f"<li><code>{escape(n)}</code>: {escape(str(reasons.get(n) or 'no reason recorded'))}</li>"
        for n in skipped
    ]
    unusable = sorted({str(e["variant_unusable"]) for e in entries if e.get("variant_unusable")})
    items += [f"<li>Load mode not usable: {escape(u)}</li>" for u in unusable]
    workloads = sorted({str(s) for e in entries for s in e.get("workloads_skipped") or ()})
    items += [f"<li>Workload skipped: {escape(w)}</li>" for w in workloads]
    body = f"<ul>{''.join(items)}</ul>" if items else '<p class="muted">Nothing was skipped.</p>'
    return (
        '<section id="rc-skipped" aria-labelledby="rc-skipped-h"><h2 id="rc-skipped-h">'
        f"Skipped ({len(items)})</h2>{body}</section>"
    )


def embedded_json(data: Mapping[str, Any]) -> str:
    """``data`` as JSON safe inside a ``<script>`` element: ``</`` (and ``<!--``) escaped, so
    no string from the environment can close the element or open a comment."""
    text = json.dumps(data, default=str, separators=(",", ":"))
    text = text.replace("</", "<\\/").replace("<!--", "<\\u0021--")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _data_section(data: Mapping[str, Any]) -> str:
    return (
        '<section id="rc-data-section" aria-labelledby="rc-data-h"><h2 id="rc-data-h">Data'
        '</h2><p id="rc-data-info" class="muted">The report\'s data is embedded in this page.'
        '</p><p><button type="button" id="rc-download" hidden>Download the JSON report'
        "</button></p>"
        f'<script type="application/json" id="rc-data">{embedded_json(data)}</script></section>'
    )
