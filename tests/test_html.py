"""The HTML report (``--rc-html``, ``merge --html``) of a real planned run over tiny real C
extensions of the zoo, opened in headless Chromium with the network off: the drawn runtime map,
the conflict cards, the reproducers, the skipped items; and that nothing from the environment
can inject markup or script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from chromium import colour_count, dump_dom, screenshot
from zoo_support import SCENARIOS_DIR, zoo_cache_dir

from pytest_runtimeconflict import zoo
from pytest_runtimeconflict.report.html import embedded_json, render_html

MODULES = "zoo_iomp_a,zoo_iomp_b,zoo_chg_a,zoo_chg_b"
CRASHED_RED = (0xB7, 0x1C, 0x1C)


def run_pytest(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pytest`` in a fresh directory (its own empty ini), as a user would run it."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(cmd, cwd=where, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A planned run over two zoo scenarios (two vendored copies of Intel's OpenMP runtime; two
    builds of a C helper that crash under an RTLD_GLOBAL import): its report and HTML page."""
    cache = zoo_cache_dir()
    names = ["openmp-duplicate", "c-helper-ctor-global"]
    skipped: dict[str, str] = {}
    built = zoo.build_zoo(SCENARIOS_DIR, cache, names=names, skipped=skipped)
    if skipped:
        pytest.skip("; ".join(f"{k}: {v}" for k, v in skipped.items()))
    tmp = tmp_path_factory.mktemp("html")
    python = zoo.make_venv(tmp / "venv", [w for n in names for w in built[n]])
    report, page = tmp / "report.json", tmp / "report.html"
    proc = run_pytest(
        tmp / "run", "--runtime-conflicts", f"--rc-python={python}", f"--rc-modules={MODULES}",
        f"--rc-report={report}", f"--rc-html={page}", "--rc-timeout=60", "-n", "2",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"report": json.loads(report.read_text()), "page": page, "dir": tmp, "proc": proc}


def conflict_keys(report: dict[str, Any]) -> set[str]:
    return {
        e["verdict"]["key"]
        for e in report["scenarios"]
        if e.get("verdict") and e["outcome"] in ("crashed", "failed", "hung")
    }


def elements(dom: str, tag: str, css_class: str) -> list[str]:
    """The opening tags of ``tag`` elements whose class list has ``css_class``."""
    pattern = rf'<{tag}\b[^>]*\bclass="(?:[^"]*\s)?{re.escape(css_class)}(?:\s[^"]*)?"[^>]*>'
    return re.findall(pattern, dom)


@pytest.mark.slow
def test_the_page_of_a_real_run_draws_the_map_and_a_card_per_conflict(
    zoo_run: dict[str, Any],
) -> None:
    report, dom = zoo_run["report"], dump_dom(zoo_run["page"])
    assert 'data-rc-script="ready"' in dom, "the page's script did not run"
    assert len(elements(dom, "svg", "rc-map")) == 1
    # Every runtime copy a run mapped is drawn, under its distribution's box.
    copies = {rt["path"]: rt for e in report["scenarios"] for rt in e.get("loaded_runtimes", [])}
    assert len(copies) >= 2
    for path, rt in copies.items():
        assert f'data-path="{path}"' in dom, path
        assert f'class="rc-dist-name">{rt["distribution"]}</text>' in dom
    # One card per distinct conflict, each linked from its arc on the map.
    keys = conflict_keys(report)
    cards = re.findall(r'<article class="card (\w+)" id="(conflict-\d+)"', dom)
    assert len(cards) == len(keys) == 2
    assert {outcome for outcome, _ in cards} == {"crashed"}
    for _, card in cards:
        assert f'href="#{card}"' in dom, f"no arc on the map links to {card}"
    assert len(elements(dom, "path", "rc-edge-crashed")) >= 2
    for rule in ("openmp-duplicate", "symbol-interposition"):
        assert re.search(rf'<h3 id="conflict-\d-h">\d\. {rule} ', dom), rule
        assert f"{rule} (crashed)" in dom  # the arc's label on the map
    # The load mode on the arc: the interposition needs one package imported RTLD_GLOBAL.
    assert re.search(r'class="rc-label-mode">RTLD_GLOBAL zoo_chg_[ab]</text>', dom)


@pytest.mark.slow
def test_cards_carry_the_reproducer_advice_and_evidence(zoo_run: dict[str, Any]) -> None:
    dom = dump_dom(zoo_run["page"])
    scripts = re.findall(r'<pre id="(conflict-\d+)-script"><code>(.*?)</code></pre>', dom, re.S)
    assert len(scripts) == 2
    assert all("zoo_" in text and "import" in text for _, text in scripts)
    buttons = re.findall(r'<button type="button" data-copy="(conflict-\d+-script)"', dom)
    assert sorted(buttons) == sorted(f"{card}-script" for card, _ in scripts)
    assert "OMP: Error #15" in dom  # the runtime's own message, in the headline and evidence
    assert "KMP_DUPLICATE_LIB_OK=TRUE" in dom and '<span class="unsafe">(unsafe)</span>' in dom
    assert dom.count("<summary>Evidence</summary>") == 2


@pytest.mark.slow
def test_skipped_items_are_listed_with_their_reasons(zoo_run: dict[str, Any]) -> None:
    report = zoo_run["report"]
    skipped = sorted(n for n, o in report["item_outcomes"].items() if o == "skipped")
    assert skipped, "the run skipped no item (later sequences repeat the conflicts)"
    reasons = report["item_skip_reasons"]
    assert sorted(reasons) == skipped
    page = zoo_run["page"].read_text()
    section = page[page.index('id="rc-skipped"') :]
    for node in skipped:
        assert f"<code>{node.replace('>', '&gt;')}</code>: " in section
    assert "same conflict as an earlier sequence" in section


@pytest.mark.slow
def test_the_page_needs_no_network_and_embeds_the_report(zoo_run: dict[str, Any]) -> None:
    page = zoo_run["page"].read_text()
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "@font-face" not in page
    assert not re.search(r"<script\b[^>]*\bsrc=", page)
    data = re.search(r'<script type="application/json" id="rc-data">(.*?)</script>', page, re.S)
    assert data is not None
    assert json.loads(data.group(1)) == zoo_run["report"]


@pytest.mark.slow
def test_the_drawn_map_is_visible_in_a_screenshot(zoo_run: dict[str, Any]) -> None:
    png = screenshot(zoo_run["page"], zoo_run["dir"] / "shot.png", height=900)
    red = colour_count(png, CRASHED_RED)
    # The crash arcs, their badges and labels are drawn in the crash colour; without the map
    # (or with the arcs not drawn) the top of the page has only the legend's short line.
    assert red > 400, f"only {red} pixels in the crash colour"


@pytest.mark.slow
def test_merge_writes_the_same_page(zoo_run: dict[str, Any]) -> None:
    merged = zoo_run["dir"] / "merged.html"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "merge",
         str(zoo_run["dir"] / "report.json"), "--html", str(merged)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr  # an item failed in the shard
    dom = dump_dom(merged)
    assert len(re.findall(r'<article class="card', dom)) == 2
    assert "merged shard(s) 1/1" in dom
    assert len(elements(dom, "svg", "rc-map")) == 1


HOSTILE = '</script><script>document.documentElement.setAttribute("data-pwned","1")</script>'
HOSTILE_ATTR = '" onmouseover="x" data-x="<img src=x onerror=alert(1)>'


def hostile_report() -> dict[str, Any]:
    """A report whose every string from the environment tries to inject markup or script."""
    lib_a = f"/site/{HOSTILE_ATTR}.libs/libgomp-{HOSTILE}.so"
    lib_b = f"/site/b.libs/libgomp-2{HOSTILE_ATTR}.so"
    runtimes = [
        {"path": lib_a, "family": "openmp", "runtime": "libgomp", "distribution": HOSTILE},
        {"path": lib_b, "family": "openmp", "runtime": "libgomp", "distribution": HOSTILE_ATTR},
    ]
    entry = {
        "id": HOSTILE, "nodeid": f"runtime-conflicts::{HOSTILE}", "steps": [HOSTILE, "b"],
        "preload": [], "env": {}, "outcome": "crashed", "signal": "SIGSEGV", "failed_step": 1,
        "message": HOSTILE, "stderr_tail": HOSTILE, "libraries": [lib_a, lib_b],
        "loaded_runtimes": runtimes, "findings": [], "python": f"/py/{HOSTILE}",
        "headline": [HOSTILE, HOSTILE_ATTR, "\u2028" + HOSTILE],
        "verdict": {"rule": HOSTILE_ATTR, "key": HOSTILE, "cause": HOSTILE,
                    "user_advice": HOSTILE, "author_advice": HOSTILE_ATTR, "confidence": "high"},
        "minimal_steps": [HOSTILE, "b"], "evidence": [HOSTILE],
        "avoided_by": [{"change": HOSTILE, "outcome": "passed", "unsafe": True}],
        "load_mode": {"global_imports": [HOSTILE], "order": f"global({HOSTILE})>b",
                      "preload": [], "ld_preload": [], "env": {HOSTILE_ATTR: HOSTILE}},
    }  # fmt: skip
    latent = dict(entry, outcome="latent", nodeid="runtime-conflicts::x", verdict=None)
    return {
        "schema": "pytest-runtimeconflict/report/1",
        "scenarios": [entry, latent],
        "item_outcomes": {HOSTILE: "skipped"},
        "item_skip_reasons": {HOSTILE: HOSTILE_ATTR},
        "coverage": {"modules": [HOSTILE], "strength": 2, "tuples_total": 1,
                     "tuples_exercised": 0, "blocked": [{"tuple": [HOSTILE], "conflict": HOSTILE}],
                     "not_run": 1, "variants": [{"variant": HOSTILE, "unit": "pairs",
                                                 "total": 1, "exercised": 0, "blocked": 0}]},
    }  # fmt: skip


def test_strings_from_the_environment_cannot_inject_markup(tmp_path: Path) -> None:
    data = hostile_report()
    page = render_html(data)
    embedded = re.search(r'<script type="application/json" id="rc-data">(.*?)</script>', page, re.S)
    assert embedded is not None and json.loads(embedded.group(1)) == data
    markup = page.replace(embedded.group(0), "")
    assert "<script>document" not in markup and "<img src=x" not in markup
    assert 'onmouseover="x"' not in markup
    assert markup.count("<script") == 1  # the page's own script only
    assert "</" not in embedded_json(data) and "\u2028" not in embedded_json(data)
    out = tmp_path / "hostile.html"
    out.write_text(page, encoding="utf-8")
    dom = dump_dom(out)
    root = re.search(r"<html\b[^>]*>", dom)
    assert root is not None and 'data-rc-script="ready"' in root.group(0)  # the data parsed
    assert "data-pwned" not in root.group(0), "an injected script ran"
    markup = re.sub(r'<script type="application/json".*?</script>', "", dom, flags=re.S)
    assert not re.search(r"<(?:img|script)\b[^>]*\bonerror=", markup)
    assert markup.count("<script") == 1


def test_rc_html_naming_a_directory_is_one_usage_line(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path / "run", "--runtime-conflicts", "--rc-modules=none",
                      f"--rc-html={tmp_path}")  # fmt: skip
    assert proc.returncode == 4
    assert f"invalid --rc-html {str(tmp_path)!r} (from command line): it is a directory" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
