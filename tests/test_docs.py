"""The docs cannot drift from the code: rule ids, the options page, and a strict mkdocs build."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_runtimeconflict.docgen import options_page as docgen
from pytest_runtimeconflict.options import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RULES_SOURCES = sorted((ROOT / "pytest_runtimeconflict" / "static" / "rules").glob("*.py"))
SECTION = re.compile(r"^## (\S+)\s*$", re.MULTILINE)


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments (so ``rule=SOME_ID`` resolves too)."""
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and isinstance(node.value.value, str):
                    constants[target.id] = node.value.value
    return constants


def emitted_rule_ids(source: str) -> set[str]:
    """Every rule id a ``Finding(rule=...)`` in ``source`` can carry.

    Detectors build their findings as ``Finding(rule="<id>", ...)``; every such id must be a
    registered rule. A rule given some other way (an expression this cannot resolve) fails
    loudly instead of being missed.
    """
    tree = ast.parse(source)
    constants = _string_constants(tree)
    ids: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Finding"):
            continue
        for keyword in node.keywords:
            if keyword.arg != "rule":
                continue
            value = keyword.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                ids.add(value.value)
            elif isinstance(value, ast.Name) and value.id in constants:
                ids.add(constants[value.id])
            else:
                raise AssertionError(
                    f"rules.py line {node.lineno}: cannot read the rule id of this Finding "
                    "statically; use a string literal or a module-level constant"
                )
    return ids


def documented_rule_ids() -> list[str]:
    return SECTION.findall((DOCS / "rules.md").read_text(encoding="utf-8"))


def _emitted_by_detectors() -> set[str]:
    ids: set[str] = set()
    for source in RULES_SOURCES:
        ids |= emitted_rule_ids(source.read_text(encoding="utf-8"))
    return ids


def test_emitted_rule_ids_are_read_from_the_code() -> None:
    ids = _emitted_by_detectors()
    # The ids the team brief fixes; the scanner must keep emitting them.
    assert {"openmp-duplicate", "libstdcxx-static-exported", "soname-version-shadow"} <= ids


def test_rule_id_reader_catches_an_unreadable_rule() -> None:
    with pytest.raises(AssertionError, match="cannot read the rule id"):
        emitted_rule_ids("Finding(rule=make_id(), family='x')\n")
    assert emitted_rule_ids("R = 'x-y'\nFinding(rule=R)\nFinding(rule='z')\n") == {"x-y", "z"}


def all_rule_ids() -> set[str]:
    """Every registered rule (static detectors and verdict-only rules alike)."""
    from pytest_runtimeconflict.static.rules import RULES

    return set(RULES)


def test_every_finding_a_detector_emits_is_a_registered_rule() -> None:
    from pytest_runtimeconflict.static.rules import RULES

    unregistered = _emitted_by_detectors() - set(RULES)
    assert not unregistered, f"findings of unregistered rules: {sorted(unregistered)}"
    verdict_only = {r.id for r in RULES.values() if r.verdict_only}
    static = {r.id for r in RULES.values() if not r.verdict_only}
    assert static <= _emitted_by_detectors() and "openmp-fork-hang" in verdict_only


def test_scenario_files_accept_every_rule_id() -> None:
    from pytest_runtimeconflict.scenario import RULE_IDS

    assert set(RULE_IDS) == all_rule_ids()


def test_every_emitted_rule_has_a_docs_section() -> None:
    emitted = all_rule_ids()
    missing = sorted(emitted - set(documented_rule_ids()))
    assert not missing, f"docs/rules.md has no '## <id>' section for: {', '.join(missing)}"


def test_every_rule_section_is_a_rule_the_code_emits() -> None:
    emitted = all_rule_ids()
    documented = documented_rule_ids()
    assert len(documented) == len(set(documented)), "a rule has two sections in docs/rules.md"
    stale = sorted(set(documented) - emitted)
    assert not stale, f"docs/rules.md documents rules the code never emits: {', '.join(stale)}"


def test_rules_reference_is_generated_from_the_registry() -> None:
    from pytest_runtimeconflict.docgen import rules_page as docgen_rules

    committed = (DOCS / "rules.md").read_text(encoding="utf-8")
    assert committed == docgen_rules.render(committed), (
        f"docs/rules.md is stale; regenerate it: {docgen_rules.GENERATOR}"
    )
    for rule_id in all_rule_ids():
        assert f"<!-- registry:{rule_id} -->" in committed
        assert f"[`{rule_id}`](#{rule_id})" in committed


def test_rules_reference_follows_a_new_rule() -> None:
    from pytest_runtimeconflict.docgen import rules_page as docgen_rules
    from pytest_runtimeconflict.static.rules import RULES, Rule

    extra = Rule(id="zz-new", family="x", severity="info", summary="s", scope="run")
    text = "<!-- registry:table -->\n<!-- /registry:table -->\n\n## zz-new\n\nprose\n"
    out = docgen_rules.render(text, [*RULES.values(), extra])
    assert "[`zz-new`](#zz-new)" in out and "<!-- registry:zz-new -->" in out
    assert docgen_rules.render(out, [*RULES.values(), extra]) == out


@pytest.mark.parametrize(
    "part", ["**Mechanism.**", "**Symptom.**", "**Real-world cases.**", "**Severity.**"]
)
def test_every_rule_section_is_complete(part: str) -> None:
    text = (DOCS / "rules.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    incomplete = [s.split("\n", 1)[0] for s in sections if part not in s]
    assert not incomplete, f"rules without {part}: {', '.join(incomplete)}"


def test_options_page_is_generated_from_the_option_table() -> None:
    committed = (DOCS / "options.md").read_text(encoding="utf-8")
    assert committed == docgen.render_options_markdown(), (
        f"docs/options.md is stale; regenerate it: {docgen.GENERATOR}"
    )


def test_options_page_names_every_option_and_nothing_else() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^## `(--[a-z-]+)`", text, flags=re.MULTILINE))
    assert documented == {o.flag for o in OPTIONS}
    for option in OPTIONS:
        assert f"`{option.ini}`" in text


def test_options_page_follows_a_changed_table() -> None:
    extra = OPTIONS[1].__class__("--rc-extra", "runtime_conflicts_extra", "Extra help.", "7", "N")
    text = docgen.render_options_markdown((*OPTIONS, extra))
    assert "## `--rc-extra` {#rc-extra}" in text and "`runtime_conflicts_extra`" in text
    assert text != (DOCS / "options.md").read_text(encoding="utf-8")


def test_docgen_check_mode(tmp_path: Path) -> None:
    page = tmp_path / "options.md"
    assert docgen.main([str(page)]) == 0
    assert docgen.main(["--check", str(page)]) == 0
    page.write_text(page.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert docgen.main(["--check", str(page)]) == 1


def _mkdocs_command() -> list[str] | None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        return None
    return [sys.executable, "-m", "mkdocs"]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    command = _mkdocs_command()
    if command is None:
        pytest.skip(
            "mkdocs and mkdocs-material are not installed; install the 'docs' extra "
            "(pip install -e '.[docs]') to build the docs"
        )
    proc = subprocess.run(
        [*command, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "rules" / "index.html").is_file()


def test_nav_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"^\s+- [^:]+: (\S+\.md)\s*$", config, flags=re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav == pages, (
        f"pages missing from the nav of mkdocs.yml: {sorted(pages - nav)}; "
        f"nav entries without a page: {sorted(nav - pages)}"
    )


def test_readme_commands_open_the_quickstart() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")][:2]
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert len(commands) == 2
    positions = [index.find(c) for c in commands]
    assert all(p >= 0 for p in positions), "docs/index.md must show the README's two commands"
    assert positions == sorted(positions)
