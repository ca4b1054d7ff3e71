"""Bad configuration gives one readable line, never a traceback.

Real pytest sessions (``pytester.runpytest_subprocess``) with invalid options, ini values,
scenario files, interpreters and modules; and a simulated non-Linux platform.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]


def run_session(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def assert_no_crash(result: pytest.RunResult) -> str:
    """Neither a Python traceback nor an INTERNALERROR; returns stdout+stderr."""
    text = result.stdout.str() + "\n" + result.stderr.str()
    assert "Traceback" not in text, text[-3000:]
    assert "INTERNALERROR" not in text, text[-3000:]
    return text


# ---------------------------------------------------------------- options and ini


@pytest.mark.parametrize(
    ("args", "ini", "expected"),
    [
        (
            ["--rc-strength=5"],
            "",
            "invalid --rc-strength '5' (from command line): expected an integer 1-4",
        ),
        (["--rc-strength=-1"], "", "invalid --rc-strength '-1' (from command line)"),
        (
            ["--rc-timeout=nan"],
            "",
            "invalid --rc-timeout 'nan' (from command line): expected seconds > 0",
        ),
        (["--rc-timeout=-3"], "", "invalid --rc-timeout '-3'"),
        (
            ["--rc-max-runs=0"],
            "",
            "invalid --rc-max-runs '0' (from command line): expected an integer 1-1000",
        ),
        (
            [
                "--rc-modules=numpy,,os.path.",
            ],
            "",
            "invalid --rc-modules",
        ),
        (["--rc-modules=import numpy"], "", "'import numpy' is not a module name"),
        ([], "runtime_conflicts_strength = many", "invalid --rc-strength 'many' (from ini file)"),
        (
            [],
            "runtime_conflicts_fail_on = sometimes",
            "invalid --rc-fail-on 'sometimes' (from ini file)",
        ),
        (
            [],
            "runtime_conflicts_python = /nonexistent/bin/python",
            "invalid --rc-python '/nonexistent/bin/python' (from ini file)",
        ),
    ],
)
def test_invalid_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], ini: str, expected: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    result = run_session(pytester, "--runtime-conflicts", *args)
    assert_no_crash(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr.str()


def test_invalid_boolean_ini_does_not_crash(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nruntime_conflicts = perhaps\n")
    result = run_session(pytester)
    text = assert_no_crash(result)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "perhaps" in text


def test_disabled_plugin_ignores_bad_python(pytester: pytest.Pytester) -> None:
    """Without --runtime-conflicts a wrong --rc-python must not break a user's normal run."""
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = run_session(pytester, "--rc-python=/nonexistent/python")
    assert_no_crash(result)
    result.assert_outcomes(passed=1)


# ---------------------------------------------------------------- interpreters and modules


@pytest.mark.parametrize(
    ("kind", "modules"),
    [
        ("missing", ""),
        ("true", ""),
        ("true", "json"),
        ("text", ""),
        ("shell-script", ""),
        ("shell-script", "json"),
        ("directory", ""),
    ],
)
def test_rc_python_that_is_not_python(pytester: pytest.Pytester, kind: str, modules: str) -> None:
    target = {
        "missing": str(pytester.path / "nope" / "python"),
        "true": "/bin/true",
        "text": str(pytester.path / "notes.txt"),
        "shell-script": str(pytester.path / "fakepython"),
        "directory": str(pytester.path),
    }[kind]
    (pytester.path / "notes.txt").write_text("not a program\n")
    script = pytester.path / "fakepython"
    script.write_text("#!/bin/sh\necho 'I am not python'\n")
    script.chmod(0o755)
    args = ["--runtime-conflicts", f"--rc-python={target}"]
    if modules:
        args.append(f"--rc-modules={modules}")
    result = run_session(pytester, *args)
    text = assert_no_crash(result)
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.TESTS_FAILED), text
    errors = [line for line in text.splitlines() if target in line]
    assert errors, f"no line names {target}:\n{text[-2000:]}"
    assert any("python" in line.lower() for line in errors)


def test_module_that_does_not_exist(pytester: pytest.Pytester) -> None:
    result = run_session(pytester, "--runtime-conflicts", "--rc-modules=json,doesnotexist_rc")
    text = assert_no_crash(result)
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.TESTS_FAILED)
    named = [line for line in text.splitlines() if "doesnotexist_rc" in line]
    assert named, text[-2000:]
    assert any("cannot be imported" in line or "No module named" in line for line in named)


# ---------------------------------------------------------------- scenario files

VALID_HEAD = '[scenario]\nname = "bad"\ndescription = "d"\n'


BAD_SCENARIOS = dict(
    zip(
        [
            "toml-syntax-head",
            "toml-unclosed-array",
            "unknown-run-key",
            "unknown-scenario-key",
            "steps-not-list",
            "steps-empty",
            "step-empty-string",
            "timeout-type",
            "timeout-negative",
            "unknown-outcome",
            "unknown-signal",
            "bad-regex",
            "duplicate-run-id",
            "no-runs",
            "missing-description",
            "binary-garbage",
        ],
        [
            ('[scenario\nname = "x"\n', 1, "invalid TOML"),
            (VALID_HEAD + '[[run]]\nid = "r"\nsteps = ["json"\n', 6, "invalid TOML"),
            (
                VALID_HEAD + '[[run]]\nid = "r"\nsteps = ["json"]\ncolour = "red"\n',
                7,
                "unknown key 'colour'",
            ),
            (VALID_HEAD + 'flavour = 1\n[[run]]\nsteps = ["json"]\n', 4, "unknown key 'flavour'"),
            (VALID_HEAD + '[[run]]\nid = "r"\nsteps = "json"\n', 6, "'steps' must be"),
            (VALID_HEAD + '[[run]]\nid = "r"\nsteps = []\n', 6, "step"),
            (VALID_HEAD + '[[run]]\nid = "r"\nsteps = [""]\n', 6, "non-empty"),
            (
                VALID_HEAD + '[[run]]\nid = "r"\nsteps = ["json"]\ntimeout = "soon"\n',
                7,
                "'timeout' must be",
            ),
            (VALID_HEAD + '[[run]]\nid = "r"\nsteps = ["json"]\ntimeout = -1\n', 7, "timeout"),
            (
                VALID_HEAD
                + '[[run]]\nid = "r"\nsteps = ["json"]\nexpect = { outcome = "exploded" }\n',
                7,
                "exploded",
            ),
            (
                VALID_HEAD
                + '[[run]]\nid = "r"\nsteps = ["json"]\nexpect = { outcome = "crashed", signal = "SIGNOPE" }\n',
                7,
                "SIGNOPE",
            ),
            (
                VALID_HEAD
                + '[[run]]\nid = "r"\nsteps = ["json"]\nexpect = { outcome = "failed", message = "(" }\n',
                7,
                "message",
            ),
            (
                VALID_HEAD
                + '[[run]]\nid = "r"\nsteps = ["json"]\n[[run]]\nid = "r"\nsteps = ["os"]\n',
                8,
                "'r'",
            ),
            (VALID_HEAD, 1, "'run'"),
            ('[scenario]\nname = "bad"\n[[run]]\nsteps = ["json"]\n', 1, "description"),
            ("\x00\xff", None, "UTF-8"),
        ],
    )
)


def test_bad_scenario_files(pytester: pytest.Pytester) -> None:
    """Every malformed manifest in one session: each gives one collection error naming
    file:line (or the file, for undecodable bytes) and the problem; nothing else breaks."""
    for name, (body, _, _) in BAD_SCENARIOS.items():
        (pytester.path / f"{name}.scenario.toml").write_bytes(body.encode("latin-1"))
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = run_session(
        pytester, "--runtime-conflicts", "--rc-modules=none", "--continue-on-collection-errors"
    )
    text = assert_no_crash(result)
    result.assert_outcomes(passed=1, errors=len(BAD_SCENARIOS))
    for name, (_, line, words) in BAD_SCENARIOS.items():
        where = f"{name}.scenario.toml:" if line is None else f"{name}.scenario.toml:{line}:"
        located = [ln for ln in text.splitlines() if where in ln and not ln.startswith("ERROR ")]
        assert located, f"no {where!r} in\n{text[-2500:]}"
        assert words in located[0], located[0]


def test_bad_scenario_file_does_not_stop_other_tests(pytester: pytest.Pytester) -> None:
    (pytester.path / "bad.scenario.toml").write_text(VALID_HEAD + "[[run]]\nsteps = 3\n")
    (pytester.path / "good.scenario.toml").write_text(
        '[scenario]\nname = "good"\ndescription = "d"\n[[run]]\nid = "ok"\nsteps = ["json"]\n'
    )
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = run_session(
        pytester, "--runtime-conflicts", "--rc-modules=none", "--continue-on-collection-errors"
    )
    assert_no_crash(result)
    result.assert_outcomes(passed=2, errors=1)


def test_scenario_file_that_is_unreadable(pytester: pytest.Pytester) -> None:
    """A directory named like a scenario file and a dangling symlink: neither crashes."""
    os.symlink("nowhere.toml", pytester.path / "dangling.scenario.toml")
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = run_session(pytester, "--runtime-conflicts", "--rc-modules=none")
    assert_no_crash(result)
    assert result.ret in (
        pytest.ExitCode.OK,
        pytest.ExitCode.INTERRUPTED,
        pytest.ExitCode.TESTS_FAILED,
    )


# ---------------------------------------------------------------- non-Linux

FAKE_PLATFORM = """
import sys
import pytest

REAL = sys.platform


# The configure phase (where pytest-runtimeconflict checks the platform) sees "darwin"; the
# real value comes back before collection, since a whole-session fake breaks unrelated
# plugins (hypothesis imports sysconfig data named after sys.platform).
@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    sys.platform = "darwin"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    sys.platform = REAL
"""


def test_non_linux_warns_once_and_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(rc_fake_platform=FAKE_PLATFORM, test_ok="def test_ok():\n    pass\n")
    (pytester.path / "x.scenario.toml").write_text(
        '[scenario]\nname = "x"\ndescription = "d"\n[[run]]\nid = "r"\nsteps = ["json"]\n'
    )
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    result = run_session(
        pytester,
        "-p",
        "rc_fake_platform",
        "--runtime-conflicts",
        "--rc-modules=json,os",
        "-W",
        "always",
    )
    text = assert_no_crash(result)
    result.assert_outcomes(passed=1)  # only the user's test: no scenario or plan items
    assert text.count("needs Linux") == 1, text
    assert "darwin" in text
    assert "runtime-conflicts::" not in text


def test_non_linux_with_xdist(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers load the fake-platform plugin too (PYTHONPATH + -p): nobody errors."""
    pytester.makepyfile(rc_fake_platform=FAKE_PLATFORM, test_ok="def test_ok():\n    pass\n")
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(pytester.path) + (os.pathsep + old if old else ""))
    result = run_session(pytester, "-p", "rc_fake_platform", "--runtime-conflicts", "-n", "2")
    assert_no_crash(result)
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
