"""Tests for scenario manifests: the valid format and one test per error class."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from pytest_runtimeconflict.errors import ScenarioFileError
from pytest_runtimeconflict.scenario.manifest import (
    Expectation,
    load_scenario,
    load_scenarios,
    signal_name,
)

FULL = """\
[scenario]
name = "libstdcxx-static-exported"
description = '''
  Two copies of libstdc++.
'''
rule = "libstdcxx-static-exported"
libraries = ["_zoo_static*.so", "libstdc++.so.6*"]
requires = ["g++", "patchelf"]

[build]
script = "build.py"

[[run]]
id = "static-then-shared"
steps = [
    "zoo_static",
    "zoo_shared",
    "zoo_shared.use_regex()",
]
preload = ["libstdc++.so.6", "libs/x.so"]
preload_mode = "local"
ld_preload = ["/abs/y.so"]
env = { B = "2", A = "1" }
timeout = 30
exercise = false
[run.expect]
outcome = "crashed"
signal = "SIGABRT"
failed_step = 2
message = "bad_cast"

[[run]]
steps = ["zoo_shared"]
"""


def write(tmp_path: Path, text: str, *, script: bool = True) -> Path:
    if script:
        (tmp_path / "build.py").write_text("")
    path = tmp_path / "scenario.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ScenarioFileError) as info:
        load_scenario(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_full_manifest_is_read(tmp_path: Path) -> None:
    scenario = load_scenario(write(tmp_path, FULL))
    assert scenario.name == "libstdcxx-static-exported"
    assert scenario.description == "Two copies of libstdc++."
    assert scenario.rule == "libstdcxx-static-exported"
    assert scenario.libraries == ("_zoo_static*.so", "libstdc++.so.6*")
    assert scenario.requires == ("g++", "patchelf")
    assert scenario.build_script == (tmp_path / "build.py").resolve()
    assert scenario.directory == tmp_path.resolve()
    first, second = scenario.runs
    assert first.id == "static-then-shared" == first.spec.id
    assert first.spec.steps == ("zoo_static", "zoo_shared", "zoo_shared.use_regex()")
    assert first.spec.preload == ("libstdc++.so.6", str((tmp_path / "libs/x.so").resolve()))
    assert first.spec.preload_mode == "local"
    assert first.spec.ld_preload == ("/abs/y.so",)
    assert first.spec.env == (("A", "1"), ("B", "2"))
    assert first.spec.timeout == 30.0
    assert first.spec.exercise is False
    assert first.expect == Expectation("crashed", "SIGABRT", 2, "bad_cast")
    assert second.id == "run2"
    assert second.expect == Expectation("passed")
    assert second.spec.timeout == 60.0 and second.spec.exercise is True


def test_minimal_manifest_without_build(tmp_path: Path) -> None:
    text = '[scenario]\nname = "x"\ndescription = "d"\n[[run]]\nsteps = ["os"]\n'
    scenario = load_scenario(write(tmp_path, text, script=False))
    assert scenario.build_script is None and scenario.rule is None
    assert scenario.runs[0].id == "run1"


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[scenario]\nname = "x"\ndescription = oops\n')
    assert re.match(r".*scenario\.toml:3: invalid TOML: .*\(at line 3, column \d+\); ", message)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            '[scenario]\nname = "x"\ndescription = "d"\ncolour = 1\n[[run]]\nsteps=["a"]\n',
            4,
            "unknown key 'colour' in [scenario]; allowed keys: name, description, rule",
        ),
        (
            '[scenario]\nname = "x"\ndescription = "d"\n[[run]]\nsteps=["a"]\nstep = []\n',
            6,
            "unknown key 'step' in [run]; allowed keys: id, steps,",
        ),
        (
            '[scenario]\nname = "x"\ndescription = "d"\n[[run]]\nsteps=["a"]\n[run.expect]\n'
            'outcome = "passed"\nsignl = "SIGABRT"\n',
            8,
            "unknown key 'signl' in [run.expect]",
        ),
        (
            '[scenario]\nname = "x"\ndescription = "d"\n[wheel]\n[[run]]\nsteps=["a"]\n',
            4,
            "unknown key 'wheel' in top level; allowed keys: scenario, build, run",
        ),
    ],
)
def test_unknown_keys_name_key_line_and_allowed(
    tmp_path: Path, text: str, line: int, fragment: str
) -> None:
    message = error_of(tmp_path, text)
    assert f"scenario.toml:{line}: " in message
    assert fragment in message


def test_unknown_key_in_second_run_points_at_its_line(tmp_path: Path) -> None:
    text = (
        '[scenario]\nname = "x"\ndescription = "d"\n[[run]]\nsteps=["a"]\nid="a"\n'
        '[[run]]\nid = "b"\nsteps = [\n  "a",\n]\nbogus = 1\n'
    )
    assert "scenario.toml:12: unknown key 'bogus'" in error_of(tmp_path, text)


@pytest.mark.parametrize(
    ("body", "line", "fragment"),
    [
        ('name = 3\ndescription = "d"', 2, "'name' must be a string, not int"),
        ('name = "x"\ndescription = "d"\nlibraries = "a.so"', 4, "'libraries' must be an array"),
        ('name = "x"\ndescription = "d"\nrequires = [1]', 4, "list of non-empty strings"),
        ('name = "x"', 1, "missing required key 'description'"),
        ('name = "x"\ndescription = "d"\nrule = "nope"', 4, "unknown rule 'nope'; use one of"),
    ],
)
def test_scenario_table_errors(tmp_path: Path, body: str, line: int, fragment: str) -> None:
    message = error_of(tmp_path, f"[scenario]\n{body}\n[[run]]\nsteps = ['a']\n")
    assert f"scenario.toml:{line}: " in message
    assert fragment in message


HEAD = '[scenario]\nname = "x"\ndescription = "d"\n[[run]]\n'


@pytest.mark.parametrize(
    ("run", "fragment"),
    [
        ("steps = []", "'steps' is empty or missing; list at least one step"),
        ("id = 'a'", "'steps' is empty or missing"),
        ('steps = "zoo_a"', "'steps' must be an array, not str"),
        ('steps = ["a"]\ntimeout = "60"', "'timeout' must be an integer or a number"),
        ('steps = ["a"]\ntimeout = 0', "timeout must be > 0 seconds"),
        ('steps = ["a"]\nexercise = 1', "'exercise' must be true or false"),
        ('steps = ["a"]\npreload_mode = "now"', "unknown preload_mode 'now'; use one of: global"),
        ('steps = ["a"]\nenv = { A = 1 }', "env value of 'A' must be a string"),
        ('steps = ["a"]\nid = "a b"', "not usable as a test id"),
        ('steps = ["a"]\nexpect = { outcome = "boom" }', "unknown outcome 'boom'; use one of"),
        (
            'steps = ["a"]\nexpect = { outcome = "passed", signal = "SIGABRT" }',
            "'signal' is only allowed with outcome 'crashed'",
        ),
        (
            'steps = ["a"]\nexpect = { outcome = "crashed", signal = "SIGNOPE" }',
            "unknown signal 'SIGNOPE'",
        ),
        ('steps = ["a"]\nexpect = { outcome = "failed", failed_step = -1 }', "must be >= 0"),
        ('steps = ["a"]\nexpect = { outcome = "latent", failed_step = 0 }', "makes no sense"),
        ('steps = ["a"]\nexpect = { outcome = "failed", message = "(" }', "not a valid regular"),
        (
            'steps = ["a"]\nexpect = { outcome = "failed", failed_step = true }',
            "'failed_step' must be an integer, not bool",
        ),
    ],
)
def test_run_errors(tmp_path: Path, run: str, fragment: str) -> None:
    message = error_of(tmp_path, HEAD + run + "\n")
    assert fragment in message
    line = int(re.search(r"scenario\.toml:(\d+): ", message).group(1))  # type: ignore[union-attr]
    assert line >= 4  # points into the [[run]] section, not at the top of the file


def test_no_runs_is_an_error(tmp_path: Path) -> None:
    assert "missing required key 'run'" in error_of(
        tmp_path, '[scenario]\nname="x"\ndescription="d"\n'
    )


def test_duplicate_run_ids(tmp_path: Path) -> None:
    text = HEAD + 'id = "a"\nsteps = ["x"]\n[[run]]\nid = "a"\nsteps = ["y"]\n'
    message = error_of(tmp_path, text)
    assert "scenario.toml:8: duplicate run id 'a'; give each [[run]] a unique id" in message


def test_missing_build_script(tmp_path: Path) -> None:
    text = (
        '[scenario]\nname="x"\ndescription="d"\n[build]\nscript = "make.py"\n[[run]]\nsteps=["a"]\n'
    )
    with pytest.raises(
        ScenarioFileError, match=r"scenario\.toml:5: build script 'make.py' not found"
    ):
        load_scenario(write(tmp_path, text, script=False))


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioFileError, match="cannot read scenario file"):
        load_scenario(tmp_path / "absent.toml")


def test_duplicate_names_across_directory(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "scenario.toml").write_text(
            '[scenario]\nname="same"\ndescription="d"\n[[run]]\nsteps=["a"]\n'
        )
    with pytest.raises(ScenarioFileError, match="name 'same' is already used"):
        load_scenarios(tmp_path)


def test_expectation_matches() -> None:
    crash = Expectation("crashed", "SIGABRT", 1, r"bad_cast")
    assert crash.matches("crashed", -6, 1, "std::bad_cast") == (True, "")
    assert crash.matches("crashed", "SIGABRT", 1, "what(): std::bad_cast")[0]
    ok, why = crash.matches("crashed", "SIGSEGV", 1, "bad_cast")
    assert not ok and "expected signal SIGABRT, got SIGSEGV" in why
    assert "expected outcome 'crashed', got 'passed'" in crash.matches("passed")[1]
    assert "step 1, got step 0" in crash.matches("crashed", 6, 0, "bad_cast")[1]
    assert "/bad_cast/" in crash.matches("crashed", 6, 1, "other")[1]
    assert Expectation("passed").matches("passed", None, None, "") == (True, "")


def test_signal_name() -> None:
    assert signal_name(6) == signal_name("-6") == signal_name("abrt") == "SIGABRT"
    assert signal_name(None) is None and signal_name("SIGNOPE") is None


def test_zoo_manifests_are_valid() -> None:
    zoo = Path(__file__).parent.parent / "scenarios"
    scenarios = load_scenarios(zoo)
    for scenario in scenarios:
        assert scenario.build_script is not None, scenario.name
        assert scenario.rule is None or scenario.libraries, scenario.name
