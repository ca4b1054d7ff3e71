"""Rules about what an import does to the process environment: a step that sets, changes or
removes a variable that libraries read later (plugin and data search paths, library paths,
thread settings).

These rules have no static detector: the sandbox's child records every step's environment
changes (``RunResult.env_changes``), and the diagnosis names the rule only when restoring the
variable right after the step that changed it avoids the failure. :func:`read_by_libraries`
decides which changes are worth that counter-experiment, from the change itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from pytest_runtimeconflict.static.rules.registry import Rule, register

# Names libraries conventionally read as search paths, locations or thread settings:
# *PATH* (PATH, LD_LIBRARY_PATH, a toolkit's plugin path), *_DIR(S), *_HOME, *_ROOT, *_PREFIX,
# *PLUGIN*, the loader's LD_* and thread-count variables.
_LIBRARY_READ = re.compile(
    r"PATH|_DIRS?$|_HOME$|_ROOT$|_PREFIX$|PLUGIN|^LD_|THREADS|_CPU_AFFINITY$", re.IGNORECASE
)


def read_by_libraries(
    name: str, after: str | None, owner_of: Callable[[str], str | None] | None = None
) -> bool:
    """Whether a change of ``name`` (to ``after``; None: removed) is one libraries read.

    By the name (``*_PATH``/``*PATH*``, ``*_DIR``, ...), or by the value: a component of the
    new value (split on ``os.pathsep``) that is an absolute path inside an installed
    distribution's files (``owner_of`` names the distribution owning a path, or None).
    """
    if _LIBRARY_READ.search(name):
        return True
    if not after or owner_of is None:
        return False
    return any(os.path.isabs(p) and owner_of(p) for p in after.split(os.pathsep))


def restore_statement(name: str, before: str | None) -> str:
    """One step that puts ``name`` back as it was, in ``os.environ`` and in the C ``environ``
    (``os.environ[...] = v`` calls ``putenv``; ``os.unsetenv`` removes a variable that native
    code set with ``setenv`` and ``os.environ`` never saw)."""
    if before is None:
        return f"import os; os.environ.pop({name!r}, None); os.unsetenv({name!r})"
    return f"import os; os.environ[{name!r}] = {before!r}"


register(
    Rule(
        id="environment-rewritten",
        family="environment",
        severity="error",
        summary="an import rewrites an environment variable another library reads",
        scope="run",
        cause=(
            "importing {module} set {variable} (before: {before}; after: {after}); a later "
            "step's libraries read it and failed: {libs}"
        ),
        author_advice=(
            "do not change process-wide variables on import: pass the bundled plugin or data "
            "directory to the library through its API (or set the variable only when it is "
            "unset and restore it after initialising), so that other packages bundling their "
            "own copy keep finding their own files"
        ),
        untried_hint=(
            "restore the variable right after the import that changed it (os.environ and "
            "os.unsetenv/os.putenv for what native code set with setenv)"
        ),
    )
)
