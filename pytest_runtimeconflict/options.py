"""Option definitions of the pytest plugin: one table shared by ``addoption``, ``addini``, the
validation and the generated options reference in the docs (so they cannot drift).

Validation raises :class:`UsageError` with the value and where it came from, e.g.
``invalid --rc-timeout 'abc' (from command line): expected seconds > 0``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.planning.shards import Shard, parse_shard
from pytest_runtimeconflict.planning.variants import parse_variants
from pytest_runtimeconflict.planning.workloads import parse_user_workloads
from pytest_runtimeconflict.vocabulary import ANNOTATION_CHOICES, DEFAULT_TIMEOUT, FAIL_ON_CHOICES

# Children's data-memory limit (RLIMIT_DATA): generous by default, so only a runaway
# allocation hits it, never the tool itself (the limit is set in the child only).
DEFAULT_MEMORY_LIMIT = "75%"
MEMORY_LIMIT_HELP = (
    "Memory each child interpreter may allocate (RLIMIT_DATA, set in the child only): a size "
    "like 4G or 512M, a percentage of physical RAM (a number and a percent sign; the default "
    "is 75 percent), or 'none'. A run that hits it is reported with memory_limit_hit and its "
    "message, and not diagnosed as a runtime conflict."
)
# (no percent sign in the help text: argparse %-formats it)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
MIN_MEMORY_LIMIT = 32 * 2**20  # below this no Python interpreter starts


@dataclass(frozen=True)
class OptionDef:
    """One ``--rc-*`` option and its ``runtime_conflicts_*`` ini twin."""

    flag: str
    ini: str
    help: str
    default: str
    metavar: str | None
    is_flag: bool = False
    multiple: bool = False  # repeatable on the command line; one value per line in the ini


OPTIONS: tuple[OptionDef, ...] = (
    OptionDef(
        "--runtime-conflicts",
        "runtime_conflicts",
        "Enable the plugin: plan import orders of the environment's native modules, run each in a "
        "fresh child interpreter and report runtime conflicts as test failures.",
        "false",
        None,
        is_flag=True,
    ),
    OptionDef(
        "--rc-modules",
        "runtime_conflicts_modules",
        "Comma-separated modules to import in planned orders. Default: the top-level import names "
        "of installed distributions that ship ELF objects, plus the project under test. "
        "'none' plans nothing (only scenario files run).",
        "",
        "a,b,...",
    ),
    OptionDef(
        "--rc-strength",
        "runtime_conflicts_strength",
        "Every ordered tuple of this many distinct modules is imported in that order in at least "
        "one planned sequence (1-4).",
        "2",
        "N",
    ),
    OptionDef(
        "--rc-timeout",
        "runtime_conflicts_timeout",
        "Seconds a child interpreter may run before it is reported as hung and killed (the "
        "same default as `run --timeout` and a scenario file's `timeout`).",
        f"{DEFAULT_TIMEOUT:g}",
        "S",
    ),
    OptionDef(
        "--rc-memory-limit",
        "runtime_conflicts_memory_limit",
        MEMORY_LIMIT_HELP,
        DEFAULT_MEMORY_LIMIT,
        "SIZE",
    ),
    OptionDef(
        "--rc-python",
        "runtime_conflicts_python",
        "Interpreter of the environment to test (a venv's bin/python). Default: the interpreter "
        "running pytest.",
        "",
        "EXE",
    ),
    OptionDef(
        "--rc-fail-on",
        "runtime_conflicts_fail_on",
        "What fails a test: 'crash' (signals and hangs only), 'error' (also import errors and "
        "exceptions; the default) or 'latent' (also two copies of a runtime mapped at once; "
        "otherwise latent co-loading is a warning).",
        "error",
        "crash|error|latent",
    ),
    OptionDef(
        "--rc-report",
        "runtime_conflicts_report",
        "Write the JSON report (one entry per scenario run, plus coverage) to this file.",
        "",
        "FILE",
    ),
    OptionDef(
        "--rc-html",
        "runtime_conflicts_html",
        "Write the HTML report to this file: one self-contained page (no network) with the "
        "runtime map, a card per conflict with its reproducer, the coverage and the skipped "
        "items, built from the same data as --rc-report.",
        "",
        "FILE",
    ),
    OptionDef(
        "--rc-no-exercise",
        "runtime_conflicts_no_exercise",
        "Do not call into loaded OpenMP/BLAS runtimes after the imports (runtime exercising "
        "drives latent duplicates to the crash they cause in real use).",
        "false",
        None,
        is_flag=True,
    ),
    OptionDef(
        "--rc-max-runs",
        "runtime_conflicts_max_runs",
        "Cap on child runs spent diagnosing one failure (minimisation and counter-experiments).",
        "40",
        "N",
    ),
    OptionDef(
        "--rc-shard",
        "runtime_conflicts_shard",
        "Run only shard K of N of the plan items (planned sequences and scenario-file runs), for "
        "a CI matrix: the same balanced split on every job; merge the jobs' --rc-report files "
        "with `python -m pytest_runtimeconflict merge`.",
        "",
        "K/N",
    ),
    OptionDef(
        "--rc-baseline",
        "runtime_conflicts_baseline",
        "JSON file of known conflicts: those are reported as known (xfail), only new ones fail, "
        "and the ones no longer seen are listed so the baseline can shrink.",
        "",
        "FILE",
    ),
    OptionDef(
        "--rc-update-baseline",
        "runtime_conflicts_update_baseline",
        "Write every conflict of this run to the --rc-baseline file (fixed ones drop out) and "
        "report them as known. Run it over the whole plan, not one shard.",
        "false",
        None,
        is_flag=True,
    ),
    OptionDef(
        "--rc-annotations",
        "runtime_conflicts_annotations",
        "CI annotations: 'github' prints one ::error/::warning workflow command per distinct "
        "conflict, 'none' prints none, 'auto' (the default) means github when "
        "GITHUB_ACTIONS=true.",
        "auto",
        "auto|github|none",
    ),
    OptionDef(
        "--rc-repro-dir",
        "runtime_conflicts_repro_dir",
        "Write one self-contained reproducer per distinct conflict into this directory: a Python "
        "script that runs the minimal order with its load mode, preloads and environment in the "
        "target interpreter without this plugin, and prints what it expects (its first lines "
        "hold the shell command that runs it).",
        "",
        "DIR",
    ),
    OptionDef(
        "--rc-variants",
        "runtime_conflicts_variants",
        "Load-mode variants and targets to plan, comma-separated: 'auto' (the default: every "
        "ordered pair also with the first module imported RTLD_GLOBAL, the runtime libraries the "
        "scan found preloaded with ctypes and LD_PRELOAD, short targeted sequences for each "
        "static finding, the fork probe and the workload catalogue), 'none' (plain imports "
        "only: the plan as before variants), and additions global:MODULE, preload:LIBRARY, "
        "ld_preload:LIBRARY (preload:all, ld_preload:all for every library group) and "
        "env:NAME=VALUE.",
        "auto",
        "LIST",
    ),
    OptionDef(
        "--rc-workload",
        "runtime_conflicts_workloads",
        "A statement run after a planned run's imports when MODULE is planned, e.g. "
        "'numpy=numpy.ones((300, 300)) @ numpy.ones((300, 300))'; repeatable (one per line in "
        "the ini). Also read from [tool.pytest-runtimeconflict.workloads] in pyproject.toml.",
        "",
        "MODULE=STATEMENT",
        multiple=True,
    ),
    OptionDef(
        "--rc-pairs-between",
        "runtime_conflicts_pairs_between",
        "Keep only the plan items that import at least one module of each group, e.g. "
        "'mywheel:numpy,scipy' (groups of --rc-modules separated by ':', modules by ','): "
        "the pairings of a wheel with its partners, not each side on its own.",
        "",
        "A,B:C,D",
    ),
)

# Bounds on numbers from options: a week is longer than any CI job; no plan has more shards.
MAX_SECONDS = 7 * 86400
MAX_SHARDS = 10000


@dataclass(frozen=True)
class Settings:
    """Validated plugin settings."""

    enabled: bool
    modules: tuple[str, ...] | None  # None: derive from the environment
    strength: int
    timeout: float
    python: str
    fail_on: str
    report: str
    exercise: bool
    max_runs: int
    shard: Shard | None = None
    baseline: str = ""
    update_baseline: bool = False
    annotations: str = "auto"
    repro_dir: str = ""
    variants: tuple[Any, ...] = ()  # variants.Request entries of --rc-variants
    workloads: tuple[tuple[str, str], ...] = ()  # (module, statement) of --rc-workload
    html: str = ""
    pairs_between: tuple[tuple[str, ...], ...] = ()  # module groups of --rc-pairs-between
    memory_limit: int | None = None  # bytes of --rc-memory-limit; None: no limit


def _where(from_cli: bool) -> str:
    return "from command line" if from_cli else "from ini file"


def _int_in(flag: str, value: str, where: str, lo: int, hi: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = lo - 1
    if not lo <= number <= hi:
        raise UsageError(f"invalid {flag} {value!r} ({where}): expected an integer {lo}-{hi}")
    return number


def parse_seconds(flag: str, value: str, where: str) -> float:
    """Seconds > 0 (at most :data:`MAX_SECONDS`: ``inf`` and ``nan`` are not timeouts) or a
    UsageError naming the option, the value and where it came from."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number <= MAX_SECONDS:
        raise UsageError(
            f"invalid {flag} {value!r} ({where}): expected seconds > 0 and <= {MAX_SECONDS}"
        )
    return number


def parse_memory_limit(flag: str, value: str, where: str) -> int | None:
    """Bytes of a size (``4G``, ``512M``, ``1.5G``, ``75%`` of physical RAM) or None for
    ``none``; a UsageError naming the option, the value and where it came from."""
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    if text == "NONE":
        return None
    number: float = -1.0
    try:
        if text.endswith("%") and 0 < float(text[:-1]) <= 100:
            import psutil

            number = float(text[:-1]) / 100 * psutil.virtual_memory().total
        elif text and text[-1:] in _UNITS:
            number = float(text[:-1]) * _UNITS[text[-1]]
        else:
            number = float(text)
    except ValueError:
        pass
    if not MIN_MEMORY_LIMIT <= number < 2**62:
        raise UsageError(
            f"invalid {flag} {value!r} ({where}): expected a size of at least 32M like 4G or "
            "512M, a percentage of RAM like 75%, or none"
        )
    return int(number)


def check_shard(shard: Shard | None, where: str) -> Shard | None:
    """``shard`` when its count is at most :data:`MAX_SHARDS` (a plan is never split finer)."""
    if shard is not None and shard.count > MAX_SHARDS:
        raise UsageError(
            f"invalid --rc-shard {shard.index}/{shard.count} ({where}): expected at most "
            f"{MAX_SHARDS} shards"
        )
    return shard


PYPROJECT_KEYS = ("workloads",)


def check_pyproject(rootdir: Path) -> None:
    """Every key of ``[tool.pytest-runtimeconflict]`` in ``rootdir/pyproject.toml`` is known;
    else a UsageError naming the key and the closest valid one (a typo is not ignored)."""
    path = rootdir / "pyproject.toml"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read it as TOML ({exc}); fix the file") from None
    table = data.get("tool", {}).get("pytest-runtimeconflict", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [tool.pytest-runtimeconflict] must be a table")
    for key in table:
        if key not in PYPROJECT_KEYS:
            raise UsageError(
                f"{path}: unknown key {key!r} in [tool.pytest-runtimeconflict]; " + _closest(key)
            )


def _closest(key: str) -> str:
    import difflib

    ini = {option.ini: option.flag for option in OPTIONS}
    if key in ini or key.replace("-", "_") in ini:
        return f"options go in [tool.pytest.ini_options] (this one as {ini.get(key) or key})"
    close = difflib.get_close_matches(key, PYPROJECT_KEYS, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid keys: {', '.join(PYPROJECT_KEYS)}"


def _python(flag: str, value: str, where: str) -> str:
    import sys

    if not value:
        return sys.executable
    path = value if os.sep in value else (shutil.which(value) or value)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise UsageError(
            f"invalid {flag} {value!r} ({where}): no such executable; "
            "give the path of an environment's python, e.g. .venv/bin/python"
        )
    return os.path.abspath(path)


def _modules(flag: str, value: str, where: str) -> tuple[str, ...] | None:
    import re

    if not value.strip():
        return None
    if value.strip() == "none":
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    for name in names:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name):
            raise UsageError(
                f"invalid {flag} {value!r} ({where}): {name!r} is not a module name; "
                "expected comma-separated dotted names like numpy,scipy.linalg"
            )
    return names


def _groups(flag: str, value: str, where: str) -> tuple[tuple[str, ...], ...]:
    if not str(value).strip():
        return ()
    parts = str(value).split(":")
    groups = tuple(_modules(flag, part, where) or () for part in parts)
    if len(groups) != 2 or not all(groups):
        raise UsageError(
            f"invalid {flag} {value!r} ({where}): expected two non-empty groups of modules "
            "separated by ':', like mywheel:numpy,scipy"
        )
    return groups


def _choice(flag: str, value: str, where: str) -> str:
    if value not in FAIL_ON_CHOICES:
        raise UsageError(
            f"invalid {flag} {value!r} ({where}): expected one of {', '.join(FAIL_ON_CHOICES)}"
        )
    return value


def _bool(flag: str, value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"invalid {flag} {value!r} ({where}): expected true or false")


def _file(flag: str, value: str, where: str) -> str:
    if value and os.path.isdir(value):
        raise UsageError(f"invalid {flag} {value!r} ({where}): it is a directory; give a file name")
    return str(value)


def _directory(flag: str, value: str, where: str) -> str:
    if value and os.path.exists(value) and not os.path.isdir(value):
        raise UsageError(
            f"invalid {flag} {value!r} ({where}): it exists and is not a directory; "
            "give a directory (it is created when missing)"
        )
    return value


def read_settings(get: Callable[[OptionDef], tuple[Any, bool]]) -> Settings:
    """Validate every option. ``get(option)`` returns (raw value, came_from_command_line)."""

    def value(flag: str) -> tuple[Any, str, str]:
        option = next(o for o in OPTIONS if o.flag == flag)
        raw, from_cli = get(option)
        return flag, (option.default if raw is None else raw), _where(from_cli)

    enabled = _bool(*value("--runtime-conflicts"))
    return Settings(
        enabled=enabled,
        modules=_modules(*value("--rc-modules")),
        strength=_int_in(*value("--rc-strength"), 1, 4),
        timeout=parse_seconds(*value("--rc-timeout")),
        python=_python(*value("--rc-python")) if enabled else "",
        fail_on=_choice(*value("--rc-fail-on")),
        report=str(value("--rc-report")[1]),
        html=_file(*value("--rc-html")),
        exercise=not _bool(*value("--rc-no-exercise")),
        max_runs=_int_in(*value("--rc-max-runs"), 1, 1000),
        repro_dir=_directory(*value("--rc-repro-dir")),
        variants=parse_variants(*value("--rc-variants")),
        workloads=_workloads(*value("--rc-workload")),
        pairs_between=_groups(*value("--rc-pairs-between")),
        memory_limit=parse_memory_limit(*value("--rc-memory-limit")),
        **_ci_settings(value),
    )


def _ci_settings(value: Callable[[str], tuple[Any, str, str]]) -> dict[str, Any]:
    """Sharding, baseline and annotations, checked against each other."""
    shard_value = value("--rc-shard")
    shard = check_shard(parse_shard(*shard_value), shard_value[2])
    baseline = str(value("--rc-baseline")[1]).strip()
    update = _bool(*value("--rc-update-baseline"))
    if update and not baseline:
        raise UsageError(
            "invalid --rc-update-baseline: it needs --rc-baseline FILE (the file to write)"
        )
    if update and shard is not None:
        raise UsageError(
            f"invalid --rc-update-baseline with --rc-shard {shard}: one shard sees only part of "
            "the conflicts; update the baseline from a run without --rc-shard"
        )
    flag, annotations, where = value("--rc-annotations")
    if annotations not in ANNOTATION_CHOICES:
        raise UsageError(
            f"invalid {flag} {annotations!r} ({where}): expected one of "
            f"{', '.join(ANNOTATION_CHOICES)}"
        )
    return {
        "shard": shard,
        "baseline": baseline,
        "update_baseline": update,
        "annotations": annotations,
    }


def _workloads(flag: str, value: Any, where: str) -> tuple[tuple[str, str], ...]:
    values = value if isinstance(value, (list, tuple)) else str(value or "").splitlines()
    return parse_user_workloads(values, where)
