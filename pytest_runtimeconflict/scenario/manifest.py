"""Read and validate scenario manifests (``scenario.toml``).

A scenario names a conflict, the libraries a correct diagnosis must mention and one or more runs
(steps in a fresh interpreter, each with its expected outcome). The format is documented in
docs/scenarios.md; every error is one line ``path:line: what is wrong; how to fix``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_runtimeconflict import vocabulary
from pytest_runtimeconflict.errors import ScenarioFileError
from pytest_runtimeconflict.model import OUTCOMES, RunSpec
from pytest_runtimeconflict.static.rules import RULES
from pytest_runtimeconflict.vocabulary import JsonObject

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on old interpreters only
    import tomli as tomllib

log = logging.getLogger(__name__)

MANIFEST_NAME = "scenario.toml"
RULE_IDS = tuple(RULES)  # every registered rule, verdict-only ones included
PRELOAD_MODES = ("global", "local")
TOP_KEYS = ("scenario", "build", "run")
SCENARIO_KEYS = ("name", "description", "rule", "libraries", "requires")
BUILD_KEYS = ("script",)
RUN_KEYS = (
    "id",
    "steps",
    "preload",
    "preload_mode",
    "ld_preload",
    "env",
    "timeout",
    "exercise",
    "expect",
)
EXPECT_KEYS = ("outcome", "signal", "failed_step", "message")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")

Path_ = tuple[Any, ...]


def signal_name(value: str | int | None) -> str | None:
    """Normalise a signal given as ``6``, ``"6"``, ``"ABRT"`` or ``"SIGABRT"`` to ``"SIGABRT"``.

    Returns None for None and for values that are no signal on this platform.
    """
    name = vocabulary.signal_name(value)
    return None if name is None or name.startswith("signal ") else name


@dataclass(frozen=True)
class Expectation:
    """What a run must end with: outcome, and optionally signal, failing step, message regex."""

    outcome: str = "passed"
    signal: str | None = None
    failed_step: int | None = None
    message: str | None = None

    def matches(
        self,
        outcome: str,
        signal: str | int | None = None,
        failed_step: int | None = None,
        text: str = "",
    ) -> tuple[bool, str]:
        """Compare an observed result with the expectation; return (ok, why not)."""
        if outcome != self.outcome:
            return False, f"expected outcome {self.outcome!r}, got {outcome!r}"
        if self.signal is not None and signal_name(signal) != self.signal:
            return False, f"expected signal {self.signal}, got {signal_name(signal) or signal}"
        if self.failed_step is not None and failed_step != self.failed_step:
            return False, f"expected failure at step {self.failed_step}, got step {failed_step}"
        if self.message is not None and not re.search(self.message, text or "", re.MULTILINE):
            return False, f"expected message matching /{self.message}/ in the output"
        return True, ""

    def to_json(self) -> JsonObject:
        return {
            "outcome": self.outcome,
            "signal": self.signal,
            "failed_step": self.failed_step,
            "message": self.message,
        }


@dataclass(frozen=True)
class ScenarioRun:
    """One ``[[run]]`` of a manifest: what to run and what it must end with."""

    id: str
    spec: RunSpec
    expect: Expectation


@dataclass(frozen=True)
class Scenario:
    """A validated manifest. ``build_script`` is absolute (or None when there is no [build])."""

    path: Path
    name: str
    description: str
    rule: str | None
    libraries: tuple[str, ...]
    requires: tuple[str, ...]
    build_script: Path | None
    runs: tuple[ScenarioRun, ...]

    @property
    def directory(self) -> Path:
        """The directory holding the manifest (and the scenario's sources)."""
        return self.path.parent


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate the manifest at ``path``; raise ScenarioFileError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError(
            f"{path}: cannot read scenario file: {exc}; check the path and that it is UTF-8 text"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POS.search(str(exc))
        # "(at end of document)" has no position: an unclosed array or table ends there.
        line = match.group(1) if match else str(max(1, len(text.splitlines())))
        raise ScenarioFileError(
            f"{path}:{line}: invalid TOML: {exc}; fix the syntax (format: docs/scenarios.md)"
        ) from None
    return _Validator(path, text).scenario(data)


def run_line(path: str | Path, index: int) -> int:
    """The 1-based line of the ``index``-th ``[[run]]`` of a manifest (of its ``id`` when it
    has one), for messages about that run; 0 when the file cannot be read."""
    try:
        lines = locate_keys(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return 0
    return lines.get(("run", index, "id")) or lines.get(("run", index)) or 0


def load_scenarios(directory: str | Path) -> list[Scenario]:
    """Load every ``*/scenario.toml`` below ``directory`` (sorted); names must be unique."""
    seen: dict[str, Path] = {}
    result = []
    for manifest in sorted(Path(directory).glob(f"*/{MANIFEST_NAME}")):
        scenario = load_scenario(manifest)
        if scenario.name in seen:
            raise ScenarioFileError(
                f"{manifest}:1: scenario name {scenario.name!r} is already used by "
                f"{seen[scenario.name]}; give each scenario a unique name"
            )
        seen[scenario.name] = manifest
        result.append(scenario)
    return result


def locate_keys(text: str) -> dict[Path_, int]:
    """Map key paths (``("run", 0, "expect", "outcome")``) to the 1-based line defining them.

    A small line scanner, enough for error messages: tomllib does not report positions of
    valid keys. Multi-line arrays and strings are skipped; unknown paths fall back to parents.
    """
    lines: dict[Path_, int] = {}
    current: Path_ = ()
    runs = -1
    depth = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        stripped = line.strip()
        table = re.match(r"^\[\[\s*([^\]]+?)\s*\]\]", stripped)
        if table:
            parts = tuple(p.strip().strip('"') for p in table.group(1).split("."))
            if parts == ("run",):
                runs += 1
                current = ("run", runs)
            else:
                current = parts
            lines.setdefault(current, number)
            continue
        table = re.match(r"^\[\s*([^\]]+?)\s*\]", stripped)
        if table:
            parts = tuple(p.strip().strip('"') for p in table.group(1).split("."))
            current = ("run", runs, *parts[1:]) if parts[0] == "run" and runs >= 0 else parts
            lines.setdefault(current, number)
            continue
        key = re.match(r'^("[^"]*"|[A-Za-z0-9_.-]+)\s*=\s*(.*)$', stripped)
        if not key:
            continue
        key_path = current + tuple(p.strip().strip('"') for p in key.group(1).split("."))
        lines.setdefault(key_path, number)
        value = key.group(2)
        if value.startswith("{"):
            for sub in re.findall(r'([A-Za-z0-9_-]+|"[^"]*")\s*=', value):
                lines.setdefault(key_path + (sub.strip('"'),), number)
        depth = max(0, _bracket_balance(value))
    return lines


def _bracket_balance(text: str) -> int:
    """Open minus closed brackets outside of simple quoted strings (for multi-line arrays)."""
    balance = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char in "[{":
            balance += 1
        elif char in "]}":
            balance -= 1
    return balance


class _Validator:
    """Turns the parsed TOML document into a Scenario, raising on the first problem."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = locate_keys(text)

    def fail(self, where: Path_, what: str, fix: str) -> ScenarioFileError:
        for end in range(len(where), -1, -1):
            if where[:end] in self.lines:
                line = self.lines[where[:end]]
                break
        else:
            line = 1
        return ScenarioFileError(f"{self.path}:{line}: {what}; {fix}")

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: Path_) -> None:
        for key in table:
            if key not in allowed:
                label = (
                    f"[{'.'.join(str(p) for p in where if isinstance(p, str))}]"
                    if where
                    else "top level"
                )
                raise self.fail(
                    (*where, key),
                    f"unknown key {key!r} in {label}",
                    f"allowed keys: {', '.join(allowed)}",
                )

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        kind: type | tuple[type, ...],
        where: Path_,
        *,
        required: bool = False,
        default: Any = None,
    ) -> Any:
        if key not in table:
            if required:
                raise self.fail(where, f"missing required key {key!r}", f"add {key} = ... here")
            return default
        value = table[key]
        bad_bool = isinstance(value, bool) and bool not in _as_tuple(kind)
        if bad_bool or not isinstance(value, kind):
            raise self.fail(
                (*where, key),
                f"{key!r} must be {_type_name(kind)}, not {type(value).__name__} ({value!r})",
                "fix the value's type",
            )
        return value

    def str_list(self, table: Mapping[str, Any], key: str, where: Path_) -> tuple[str, ...]:
        values = self.get(table, key, list, where, default=[])
        for value in values:
            if not isinstance(value, str) or not value.strip():
                raise self.fail(
                    (*where, key),
                    f"{key!r} must be a list of non-empty strings, found {value!r}",
                    'write it like ["a", "b"]',
                )
        return tuple(values)

    def scenario(self, data: JsonObject) -> Scenario:
        self.check_keys(data, TOP_KEYS, ())
        head = self.get(data, "scenario", dict, (), required=True)
        self.check_keys(head, SCENARIO_KEYS, ("scenario",))
        where = ("scenario",)
        name = self.get(head, "name", str, where, required=True).strip()
        if not name:
            raise self.fail((*where, "name"), "'name' is empty", "give the scenario a name")
        description = self.get(head, "description", str, where, required=True)
        rule = self.get(head, "rule", str, where)
        if rule is not None and rule not in RULE_IDS:
            raise self.fail(
                (*where, "rule"), f"unknown rule {rule!r}", f"use one of: {', '.join(RULE_IDS)}"
            )
        runs = self.get(data, "run", list, (), required=True)
        if not runs:
            raise self.fail((), "no [[run]] entries", "add at least one [[run]] with steps")
        parsed = tuple(self.run(run, index) for index, run in enumerate(runs))
        self.check_unique_ids(parsed)
        return Scenario(
            path=self.path.resolve(),
            name=name,
            description=description.strip(),
            rule=rule,
            libraries=self.str_list(head, "libraries", where),
            requires=self.str_list(head, "requires", where),
            build_script=self.build_script(data),
            runs=parsed,
        )

    def build_script(self, data: JsonObject) -> Path | None:
        build = self.get(data, "build", dict, ())
        if build is None:
            return None
        self.check_keys(build, BUILD_KEYS, ("build",))
        script = self.get(build, "script", str, ("build",), required=True)
        resolved = (self.path.parent / script).resolve()
        if not resolved.is_file():
            raise self.fail(
                ("build", "script"),
                f"build script {script!r} not found in {self.path.parent}",
                "create it or fix [build] script",
            )
        return resolved

    def run(self, run: Any, index: int) -> ScenarioRun:
        where: Path_ = ("run", index)
        if not isinstance(run, dict):
            raise self.fail(where, "'run' must be an array of tables", "write [[run]] sections")
        self.check_keys(run, RUN_KEYS, where)
        run_id = self.get(run, "id", str, where, default=f"run{index + 1}")
        if not _RUN_ID.match(run_id):
            raise self.fail(
                (*where, "id"),
                f"run id {run_id!r} is not usable as a test id",
                "use letters, digits and _ . + - only",
            )
        steps = self.str_list(run, "steps", where)
        if not steps:
            raise self.fail(
                (*where, "steps"), "'steps' is empty or missing", "list at least one step"
            )
        spec = RunSpec(
            steps=steps,
            preload=self.paths(run, "preload", where),
            preload_mode=self.preload_mode(run, where),
            ld_preload=self.paths(run, "ld_preload", where),
            env=self.env(run, where),
            timeout=self.timeout(run, where),
            exercise=self.get(run, "exercise", bool, where, default=True),
            id=run_id,
        )
        return ScenarioRun(id=run_id, spec=spec, expect=self.expect(run, where))

    def paths(self, run: JsonObject, key: str, where: Path_) -> tuple[str, ...]:
        # Relative paths (with a slash) are relative to the manifest; bare names go to the loader.
        values = self.str_list(run, key, where)
        return tuple(
            str((self.path.parent / v).resolve()) if "/" in v and not v.startswith("/") else v
            for v in values
        )

    def preload_mode(self, run: JsonObject, where: Path_) -> str:
        mode = self.get(run, "preload_mode", str, where, default="global")
        if mode not in PRELOAD_MODES:
            raise self.fail(
                (*where, "preload_mode"),
                f"unknown preload_mode {mode!r}",
                f"use one of: {', '.join(PRELOAD_MODES)}",
            )
        return str(mode)

    def env(self, run: JsonObject, where: Path_) -> tuple[tuple[str, str], ...]:
        env = self.get(run, "env", dict, where, default={})
        for key, value in env.items():
            if not isinstance(value, str):
                raise self.fail(
                    (*where, "env", key),
                    f"env value of {key!r} must be a string, not {type(value).__name__}",
                    f'quote it: {key} = "{value}"',
                )
        return tuple(sorted(env.items()))

    def timeout(self, run: JsonObject, where: Path_) -> float:
        timeout = self.get(run, "timeout", (int, float), where, default=vocabulary.DEFAULT_TIMEOUT)
        if timeout <= 0:
            raise self.fail(
                (*where, "timeout"), f"timeout must be > 0 seconds, not {timeout}", "e.g. 60"
            )
        return float(timeout)

    def expect(self, run: JsonObject, where: Path_) -> Expectation:
        expect = self.get(run, "expect", dict, where, default={})
        where = (*where, "expect")
        self.check_keys(expect, EXPECT_KEYS, where)
        outcome = self.get(expect, "outcome", str, where, default="passed")
        if outcome not in OUTCOMES:
            raise self.fail(
                (*where, "outcome"),
                f"unknown outcome {outcome!r}",
                f"use one of: {', '.join(OUTCOMES)}",
            )
        return Expectation(
            outcome=outcome,
            signal=self.expect_signal(expect, outcome, where),
            failed_step=self.expect_step(expect, outcome, where),
            message=self.expect_message(expect, where),
        )

    def expect_signal(self, expect: JsonObject, outcome: str, where: Path_) -> str | None:
        raw = self.get(expect, "signal", (str, int), where)
        if raw is None:
            return None
        if outcome != "crashed":
            raise self.fail(
                (*where, "signal"),
                f"'signal' is only allowed with outcome 'crashed' (outcome is {outcome!r})",
                'remove signal or set outcome = "crashed"',
            )
        name = signal_name(raw)
        if name is None:
            raise self.fail(
                (*where, "signal"), f"unknown signal {raw!r}", 'use a name like "SIGABRT"'
            )
        return name

    def expect_step(self, expect: JsonObject, outcome: str, where: Path_) -> int | None:
        step = self.get(expect, "failed_step", int, where)
        if step is None:
            return None
        if step < 0:
            raise self.fail(
                (*where, "failed_step"), f"failed_step must be >= 0, not {step}", "it is 0-based"
            )
        if outcome in ("passed", "latent"):
            raise self.fail(
                (*where, "failed_step"),
                f"'failed_step' makes no sense with outcome {outcome!r}",
                "remove it or expect failed/crashed/hung",
            )
        return int(step)

    def expect_message(self, expect: JsonObject, where: Path_) -> str | None:
        message = self.get(expect, "message", str, where)
        if message is None:
            return None
        try:
            re.compile(message)
        except re.error as exc:
            raise self.fail(
                (*where, "message"),
                f"'message' is not a valid regular expression: {exc}",
                "escape special characters with \\\\",
            ) from None
        return str(message)

    def check_unique_ids(self, runs: tuple[ScenarioRun, ...]) -> None:
        seen: set[str] = set()
        for index, run in enumerate(runs):
            if run.id in seen:
                raise self.fail(
                    ("run", index, "id"),
                    f"duplicate run id {run.id!r}",
                    "give each [[run]] a unique id",
                )
            seen.add(run.id)


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))
