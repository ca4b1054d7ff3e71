"""Whether ``import pkg`` imports a given extension module, decided from the package's Python
sources without running them: the modules its top-level ``__init__`` imports at module level,
transitively within the package.

An import inside a function runs later (on first use), and one inside ``try`` whose handler
catches ``ImportError`` is optional by construction; neither counts. The answer is None
(unknown) when the package does something the reading cannot follow at import time (a
dynamic ``importlib.import_module``/``__import__`` of a computed name, a file that does not
parse) or the extension is not an installed file of a package.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator

_SITE = re.compile(r"^(.*/(?:site|dist)-packages)/(.+)$")
_OPTIONAL = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException", "OSError"}
_DYNAMIC = {"import_module", "__import__"}


def module_name(path: str) -> tuple[str, str] | None:
    """(site directory, dotted module name) of an installed extension file, else None."""
    found = _SITE.match(path)
    if not found or "!/" in path:
        return None
    parts = found.group(2).split("/")
    parts[-1] = parts[-1].split(".", 1)[0]
    if not all(p.isidentifier() for p in parts):
        return None
    return found.group(1), ".".join(parts)


def imported_on_import(path: str) -> bool | None:
    """Whether importing the top-level package of the extension file ``path`` imports it."""
    named = module_name(path)
    if named is None:
        return None
    site, name = named
    top = name.split(".")[0]
    if top == name:
        return True  # a top-level extension module is what `import pkg` loads
    reached = _import_closure(site, top)
    return None if reached is None else name in reached


def _source(site: str, module: str) -> str | None:
    """The file of ``module`` under ``site``: its ``__init__.py`` or ``.py`` (None: no
    Python source, e.g. an extension module)."""
    base = os.path.join(site, *module.split("."))
    for candidate in (os.path.join(base, "__init__.py"), base + ".py"):
        if os.path.isfile(candidate):
            return candidate
    return None


def _import_closure(site: str, top: str) -> set[str] | None:
    seen: set[str] = set()
    todo = [top]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parent = module.rsplit(".", 1)[0]
        if parent != module:
            todo.append(parent)  # importing a.b runs a's __init__ first
        path = _source(site, module)
        if path is None:
            continue
        found = _module_imports(path, module, path.endswith("__init__.py"))
        if found is None:
            return None
        todo += [m for m in found if m.split(".")[0] == top and _exists(site, m)]
    return seen


def _exists(site: str, module: str) -> bool:
    base = os.path.join(site, *module.split("."))
    if os.path.isdir(base) or os.path.isfile(base + ".py"):
        return True
    folder, stem = os.path.split(base)
    try:
        return any(f.split(".", 1)[0] == stem and ".so" in f for f in os.listdir(folder))
    except OSError:
        return False


def _module_imports(path: str, module: str, is_package: bool) -> list[str] | None:
    """Modules ``path`` imports at module level, unguarded (None: it cannot be followed)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            tree = ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None
    package = module if is_package else module.rpartition(".")[0]
    out: list[str] = []
    for node in _executed(tree.body):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, package)
            out.append(base)
            out += [f"{base}.{a.name}" for a in node.names if a.name != "*"]
        elif isinstance(node, ast.Call) and _dynamic(node):
            arg = node.args[0] if node.args else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                return None
            out.append(arg.value)
    return out


def _resolve(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _dynamic(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in _DYNAMIC


_BLOCKS = ("body", "orelse", "finalbody", "handlers")


def _executed(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Nodes that run when the module body runs: not function bodies, and not the body of a
    ``try`` whose handler tolerates an import failure (an optional import)."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not any(hasattr(stmt, f) for f in _BLOCKS):
            yield from ast.walk(stmt)
            continue
        for name, value in ast.iter_fields(stmt):
            if name not in _BLOCKS and isinstance(value, (ast.AST, list)):
                for part in value if isinstance(value, list) else [value]:
                    if isinstance(part, ast.AST):
                        yield from ast.walk(part)
        guarded = isinstance(stmt, ast.Try) and _tolerates_import_error(stmt)
        blocks = [
            [] if guarded else getattr(stmt, "body", []),
            *(getattr(stmt, f, []) for f in _BLOCKS[1:3]),
        ]
        blocks += [h.body for h in getattr(stmt, "handlers", [])]
        for block in blocks:
            yield from _executed(block)


def _tolerates_import_error(stmt: ast.Try) -> bool:
    for handler in stmt.handlers:
        if handler.type is None:
            return True
        names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(getattr(n, "id", getattr(n, "attr", "")) in _OPTIONAL for n in names):
            return True
    return False
