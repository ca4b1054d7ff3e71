"""The rules reference (docs/rules.md) from the rule registry.

The page keeps its hand-written prose per rule (mechanism, symptom, real-world cases, fixes);
the registry's facts are generated into it: the summary table between ``<!-- registry:table
-->`` markers, and after each ``## <id>`` heading a ``**Registry.**`` block with the rule's
family, default severity, where the detector looks, the failure markers that identify it in a
live run, and the counter-experiments it asks for. ``python -m
pytest_runtimeconflict.docgen.rules_page docs/rules.md`` rewrites those parts; the tests check the
page is current, that every registered rule has a section and every section is a rule.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_runtimeconflict.static.rules import RULES, Rule

GENERATOR = "python -m pytest_runtimeconflict.docgen.rules_page docs/rules.md"
_TABLE = re.compile(r"<!-- registry:table -->.*?<!-- /registry:table -->", re.DOTALL)
_BLOCK = re.compile(
    r"\n\n<!-- registry:(?P<id>(?!table)[\w+-]+) -->.*?<!-- /registry:(?P=id) -->", re.DOTALL
)
_SECTION = re.compile(r"^## (\S+)[ \t]*$", re.MULTILINE)
_SCOPE_TEXT = {
    "reachable": "runtime objects reachable from an extension (or mapped in one run)",
    "every-object": "every scanned object (or every object mapped in one run)",
    "loader": "the loader model's per-extension closures (scan only)",
    "run": "a live run's evidence only (named by the diagnosis; no static finding)",
}


def table(rules: Sequence[Rule]) -> str:
    """The summary table of every registered rule."""
    lines = [
        "<!-- registry:table -->",
        f"<!-- generated from the rule registry by: {GENERATOR} -->",
        "| rule | family | severity | detector looks at |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| [`{r.id}`](#{r.id}) | `{r.family}` | {r.severity} | {r.scope} |" for r in rules]
    return "\n".join([*lines, "<!-- /registry:table -->"])


def block(rule: Rule) -> str:
    """The generated facts of one rule, placed under its heading."""
    markers = ", ".join(f"`{m}`" for m in rule.markers) or "none (evidence only)"
    experiments = ", ".join(f"`{e}`" for e in rule.experiments)
    lines = [
        f"<!-- registry:{rule.id} -->",
        f"**Registry.** family `{rule.family}`, default severity **{rule.severity}**; the "
        f"detector looks at {_SCOPE_TEXT[rule.scope]}; failure markers: {markers}; "
        + _experiments_text(rule, experiments)
        + ".",
        f"<!-- /registry:{rule.id} -->",
    ]
    return "\n".join(lines)


def _experiments_text(rule: Rule, experiments: str) -> str:
    if rule.load_independent:
        return (
            "counter-experiments: the families' thread and environment settings, and after the "
            "fork-after-workload probe the spawn start method, each with the real workload "
            "(the failure does not depend on load order or mode)"
        )
    return (
        "counter-experiments: the reverse order, the families' own"
        + (f", {experiments}" if experiments else "")
        + ("; reversing the order is flagged unsafe" if rule.order_unsafe else "")
    )


def render(text: str, rules: Sequence[Rule] | None = None) -> str:
    """``text`` (docs/rules.md) with the table and every rule's block regenerated."""
    rules = list(RULES.values()) if rules is None else list(rules)
    by_id = {r.id: r for r in rules}
    text = _BLOCK.sub("", text)
    text = _TABLE.sub(lambda _m: table(rules), text)

    def heading(match: re.Match[str]) -> str:
        rule = by_id.get(match.group(1))
        return match.group(0) + ("\n\n" + block(rule) if rule else "")

    return _SECTION.sub(heading, text)


def sections(text: str) -> list[str]:
    """The rule ids with a ``## <id>`` section."""
    return _SECTION.findall(text)


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrite the page given (``--check``: exit 1 when it is stale)."""
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"] or ["docs/rules.md"]
    path = Path(paths[0])
    current = path.read_text(encoding="utf-8")
    fresh = render(current)
    if check:
        if fresh != current:
            sys.stderr.write(f"{path} is stale; regenerate it with: {GENERATOR}\n")
            return 1
        return 0
    path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
