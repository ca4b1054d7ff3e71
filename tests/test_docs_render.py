"""The built docs site renders with no network: every ```mermaid block of docs/*.md is drawn as
an inline SVG at build time (docs/hooks/mermaid_svg.py; the theme would load Mermaid from a CDN
to draw a ``<pre class="mermaid">``), the theme loads no web fonts, and headless Chromium with
the network off shows the how-it-works diagram with its nodes. ``mkdocs build --strict`` passes
with or without the hook, so only the built pages tell a drawn diagram from its source text.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from chromium import colour_count, dump_dom, screenshot

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "mkdocs.yml"

# A fenced block whose info string is ``mermaid`` (backticks or tildes, possibly indented).
MERMAID_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*mermaid\b[^\n]*\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
FLOWCHART = re.compile(r'<svg\b[^>]*class="rc-flowchart".*?</svg>', re.DOTALL)
NODE_ID = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*\[", re.MULTILINE)
# What would need the network when a page is viewed.
REMOTE = ("fonts.googleapis.com", "fonts.gstatic.com", "unpkg.com", "cdn.jsdelivr.net")
NODE_FILL = (0xE8, 0xEA, 0xF6)

# A build like the real one minus the hook: the control that shows the checks below can tell
# a drawn diagram from the theme's CDN-drawn one.
BUILD_WITHOUT_HOOK = """
import sys
from mkdocs.commands.build import build
from mkdocs.config import load_config

config = load_config(config_file=sys.argv[1], site_dir=sys.argv[2], strict=True, hooks=[])
assert not [name for name in config.plugins if "mermaid" in name], list(config.plugins)
build(config)
"""


def mermaid_blocks() -> list[tuple[str, str]]:
    """(page, diagram source) for every ```mermaid block under docs/."""
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text(encoding="utf-8")
        for match in MERMAID_FENCE.finditer(text):
            body = textwrap.dedent(match["body"]) if match["indent"] else match["body"]
            blocks.append((page.relative_to(DOCS).as_posix(), body))
    return blocks


def built_page(site: Path, page: str) -> Path:
    """The file that ``page`` (relative to docs/) builds to, with directory URLs."""
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        out = site / stem.removesuffix("index") / "index.html"
    else:
        out = site / stem / "index.html"
    assert out.is_file(), f"{page} did not build to {out}"
    return out


def drawn_nodes(page_html: str) -> list[set[str]]:
    """For each SVG flowchart of the page, the ids of the nodes it draws."""
    return [
        set(re.findall(r'<g class="node" data-id="([^"]+)"', svg))
        for svg in FLOWCHART.findall(page_html)
    ]


def rendering_problems(page_html: str, source: str) -> list[str]:
    problems = []
    wanted = set(NODE_ID.findall(source))
    if wanted not in drawn_nodes(page_html):
        problems.append(f"no inline SVG draws the nodes {sorted(wanted)}")
    if '<pre class="mermaid">' in page_html or "language-mermaid" in page_html:
        problems.append("the diagram is left for a script to draw (or shown as code)")
    first = source.strip().splitlines()[0].strip()
    if first in html.unescape(re.sub(r"<[^>]+>", "", FLOWCHART.sub("", page_html))):
        problems.append(f"the diagram's source ({first!r}) is shown as text")
    return problems


def _mkdocs(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def _require_mkdocs() -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip(
            "mkdocs and mkdocs-material are not installed; install the 'test' or 'docs' "
            "extra (pip install -e '.[test]') to build the docs"
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built exactly as the docs are published: ``mkdocs build --strict``."""
    _require_mkdocs()
    out = tmp_path_factory.mktemp("site")
    proc = _mkdocs(["-m", "mkdocs", "build", "--strict", "-d", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.parametrize(
    ("page", "source"),
    mermaid_blocks(),
    ids=[f"{page}#{i}" for i, (page, _) in enumerate(mermaid_blocks())],
)
def test_every_mermaid_block_is_drawn_as_inline_svg(site: Path, page: str, source: str) -> None:
    problems = rendering_problems(built_page(site, page).read_text(encoding="utf-8"), source)
    assert not problems, f"docs/{page}: " + "; ".join(problems) + f"\n{source}"


def test_no_page_loads_fonts_or_scripts_from_the_network(site: Path) -> None:
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        found = [host for host in REMOTE if host in text]
        assert not found, f"{page.relative_to(site)} refers to {found}"
    assert not (site / "hooks").exists(), "the build hook was published with the site"


def test_how_it_works_diagram_is_drawn_in_a_browser_offline(site: Path, tmp_path: Path) -> None:
    page = built_page(site, "how-it-works.md")
    dom = dump_dom(page)
    svgs = FLOWCHART.findall(dom)
    assert len(svgs) == 1
    labels = html.unescape(re.sub(r"<[^>]+>", " ", svgs[0]))
    for stage in ("discover", "facts", "findings", "plan", "run", "post-mortem", "diagnosis"):
        assert re.search(rf"\b{re.escape(stage)}\b", labels), stage
    assert len(re.findall(r'<g class="node"', svgs[0])) == 9
    assert len(re.findall(r'<path class="edge"', svgs[0])) == 8
    # Drawn, not only present: the node boxes' fill shows in a screenshot of the page's top.
    shot = screenshot(page, tmp_path / "how-it-works.png", width=1280, height=800)
    assert colour_count(shot, NODE_FILL, tolerance=4) > 5000


def test_load_mode_variants_keep_their_sub_items(site: Path) -> None:
    """usage.md's plan list has four items; the variant sources are a list inside the fourth
    (indented by three spaces they became items 5-7)."""
    usage = built_page(site, "usage.md").read_text(encoding="utf-8")
    start = usage.index("<strong>Targets</strong>")
    plan_list = usage[usage.rindex("<ol>", 0, start) : usage.index("</ol>", start)]
    fourth = plan_list[plan_list.index("<strong>Load-mode variants</strong>") :]
    assert plan_list.count("<strong>") >= 4 and "<ol" not in plan_list[4:]
    for source in ("<code>global</code>", "<code>preload</code>", "<code>--rc-variants</code>"):
        assert source in fourth, source
    assert re.search(r"<ul>\s*<li>\s*<code>global</code>", fourth)
    assert not re.search(r'<ol start="5"', usage)


def test_the_checks_catch_a_site_drawn_by_the_cdn_script(tmp_path: Path) -> None:
    """Control: the same build without the hook fails the checks above."""
    _require_mkdocs()
    blocks = mermaid_blocks()
    assert blocks, "docs/ has no ```mermaid block; docs/how-it-works.md should have one"
    out = tmp_path / "site"
    proc = _mkdocs(["-c", BUILD_WITHOUT_HOOK, str(CONFIG), str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page, source in blocks:
        page_html = built_page(out, page).read_text(encoding="utf-8")
        assert '<pre class="mermaid">' in page_html
        assert rendering_problems(page_html, source), f"{page}: a CDN diagram passed as drawn"
