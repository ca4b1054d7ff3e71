"""The package's shape: one direction for the data, no import cycles, only the pytest face
imports pytest, the engine imports without pytest installed, and modules and functions stay
small enough to read at once."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from venvs import make_venv

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_runtimeconflict"
# The pytest face: the only modules allowed to import pytest.
PYTEST_FACE = {"pytest_runtimeconflict.plugin"}
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 50
MAX_CLASS_LINES = 300
# Modules outside a stage folder: the package face, __main__, errors, vocabulary, the families
# registry, the pytest face (plugin, options) and the zoo's build kit (scenario build scripts
# import it as ``pytest_runtimeconflict.zoo``).
MAX_LOOSE_MODULES = 8
# Argument tables: long by nature, one entry per option.
ARGUMENT_TABLES = {("pytest_runtimeconflict.cli.run", "add_arguments")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module (of this package, or a top-level name elsewhere) ``name`` imports,
    function-level imports included."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from pkg import sub`` runs pkg/__init__ too: an edge to the package as well.
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if candidate in MODULES:
                    found.add(candidate)
    return found


def internal_graph() -> dict[str, set[str]]:
    return {name: {m for m in imports_of(name) if m in MODULES and m != name} for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_inside_the_package() -> None:
    cycle = find_cycle(internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_pytest_face_imports_pytest() -> None:
    offenders = sorted(
        name
        for name in MODULES
        if name not in PYTEST_FACE
        and any(m == "pytest" or m.startswith(("pytest.", "_pytest")) for m in imports_of(name))
    )
    assert not offenders, f"engine modules importing pytest: {offenders}"


def test_modules_are_small_enough_to_read() -> None:
    big = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert not {n: c for n, c in big.items() if c > MAX_MODULE_LINES}


def test_functions_are_short() -> None:
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES and (name, node.name) not in ARGUMENT_TABLES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, long


def test_classes_are_small_enough_to_read() -> None:
    big = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_CLASS_LINES:
                    big.append(f"{name}.{node.name}: {length} lines")
    assert not big, big


def test_few_modules_outside_the_stage_folders() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(loose) <= MAX_LOOSE_MODULES, loose


def test_no_comment_cites_an_issue_number() -> None:
    pattern = re.compile(r"\bissue #?\d+", re.IGNORECASE)
    cited = [
        f"{name}:{number}"
        for name, path in MODULES.items()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not cited, cited


@pytest.mark.slow
def test_engine_imports_without_pytest(tmp_path: Path) -> None:
    """Every module outside the pytest face imports in a venv where pytest is not installed."""
    python, site = make_venv(tmp_path / "venv")
    for dependency in ("elftools", "psutil"):  # the engine's runtime dependencies, linked in
        source = Path(__import__(dependency).__file__).parent
        (site / dependency).symlink_to(source, target_is_directory=True)
    check = subprocess.run([python, "-c", "import pytest"], capture_output=True)
    assert check.returncode != 0, "the test venv must not have pytest"
    engine = sorted(n for n in MODULES if n not in PYTEST_FACE)
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    proc = subprocess.run(
        [python, "-c", code, *engine],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(engine) > 40
