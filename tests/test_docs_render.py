"""The built site shows diagrams as diagrams: every ```mermaid block of docs/*.md becomes the
``<pre class="mermaid"><code>`` element that mkdocs-material's mermaid support draws, not a
highlighted code block that shows the diagram's source as text.

``mkdocs build --strict`` passes either way, so only the built HTML tells the two apart.
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
# What pymdownx.superfences' fence_code_format emits for the custom fence, and what material's
# JavaScript looks for to draw the diagram.
DIAGRAM = re.compile(r'<pre class="mermaid"><code>(.*?)</code></pre>', re.DOTALL)
CODE = re.compile(r"<code\b[^>]*>(.*?)</code>", re.DOTALL)
TAG = re.compile(r"<[^>]+>")

# A build like the real one, minus the mermaid custom fence: the control that shows the
# checks below can tell a diagram from a code block.
BUILD_WITHOUT_MERMAID = """
import sys
from mkdocs.commands.build import build
from mkdocs.config import load_config

config = load_config(config_file=sys.argv[1], site_dir=sys.argv[2], strict=True)
superfences = config.mdx_configs.get("pymdownx.superfences", {})
superfences["custom_fences"] = [
    f for f in superfences.get("custom_fences", []) if f.get("name") != "mermaid"
]
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


def built_page(site: Path, page: str) -> str:
    """The HTML that ``page`` (relative to docs/) builds to, with directory URLs."""
    stem = page[: -len(".md")]
    if stem == "index" or stem.endswith("/index"):
        out = site / stem.removesuffix("index") / "index.html"
    else:
        out = site / stem / "index.html"
    assert out.is_file(), f"{page} did not build to {out}"
    return out.read_text(encoding="utf-8")


def diagrams(page_html: str) -> list[str]:
    """The diagram sources that ``page_html`` carries as mermaid diagrams."""
    return [html.unescape(d) for d in DIAGRAM.findall(page_html)]


def shown_as_code(page_html: str, source: str) -> bool:
    """Whether ``source``'s first line sits in a ``<code>`` element that is not a diagram."""
    first_line = source.strip().splitlines()[0].strip()
    rest = DIAGRAM.sub("", page_html)
    return any(first_line in html.unescape(TAG.sub("", code)) for code in CODE.findall(rest))


def rendering_problems(page_html: str, source: str) -> list[str]:
    problems = []
    if source.strip() not in [d.strip() for d in diagrams(page_html)]:
        problems.append('no <pre class="mermaid"><code> element carries the diagram')
    if "language-mermaid" in page_html:
        problems.append("the page has a language-mermaid code block")
    if shown_as_code(page_html, source):
        problems.append("the diagram's source is shown in a code block")
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


def test_how_it_works_diagram_is_a_diagram(site: Path) -> None:
    page_html = built_page(site, "how-it-works.md")
    assert '<pre class="mermaid"><code>flowchart' in page_html, (
        "docs/how-it-works.md's flowchart is not rendered as a mermaid diagram; enable "
        "mkdocs-material's mermaid support in mkdocs.yml (pymdownx.superfences custom_fences: "
        "name mermaid, class mermaid, format pymdownx.superfences.fence_code_format)"
    )
    assert "language-mermaid" not in page_html
    assert not shown_as_code(page_html, "flowchart")


@pytest.mark.parametrize(
    ("page", "source"),
    mermaid_blocks(),
    ids=[f"{page}#{i}" for i, (page, _) in enumerate(mermaid_blocks())],
)
def test_every_mermaid_block_renders_as_a_diagram(site: Path, page: str, source: str) -> None:
    problems = rendering_problems(built_page(site, page), source)
    assert not problems, f"docs/{page}: " + "; ".join(problems) + f"\n{source}"


def test_the_checks_catch_a_site_without_mermaid_support(tmp_path: Path) -> None:
    """Control: the same build minus the mermaid fence fails every check above."""
    _require_mkdocs()
    blocks = mermaid_blocks()
    assert blocks, "docs/ has no ```mermaid block; docs/how-it-works.md should have one"
    out = tmp_path / "site"
    proc = _mkdocs(["-c", BUILD_WITHOUT_MERMAID, str(CONFIG), str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page, source in blocks:
        page_html = built_page(out, page)
        assert '<pre class="mermaid">' not in page_html
        assert rendering_problems(page_html, source), f"{page}: a code block passed as a diagram"
        assert shown_as_code(page_html, source)
