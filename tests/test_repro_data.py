"""Reproducers are generated from data: hostile strings in every field of a report entry stay
data (the script compiles, its header stays comments, running it runs none of them), and the
entry a conflict's script is written from does not depend on the order entries arrived in."""

from __future__ import annotations

import ast
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_runtimeconflict.report.repro import comment, conflicts, reproducer, reproducer_spec
from pytest_runtimeconflict.report.repro_verify import Verification, verify_reproducer


def hostile(sentinel: Path) -> list[str]:
    """Strings that would run code (creating ``sentinel``) if pasted into the script."""
    code = f"import pathlib; pathlib.Path({str(sentinel)!r}).touch()"
    return [
        f"x\n{code}\n#",
        f'x"); {code}; ("',
        f"x'''); {code}; ('''",
        f"x\r{code}",
        f"x\u2028{code}\u2029{code}",
        f"x\x0c\x0b\x00\x1b[31m\x85{code}",
        f"x\\\n{code}",
    ]


def hostile_entry(sentinel: Path) -> dict[str, Any]:
    bad = hostile(sentinel)
    joined = "|".join(bad)
    return {
        "steps": ["json", "x = 1\x0c", "s = '\u2028'"],
        "minimal_steps": ["json", "x = 1\x0c", "s = '\u2028'"],
        "preload": [f"/nonexistent/{b}.so" for b in bad],
        "preload_mode": "global",
        # No NUL: the loader's variables are C strings (a NUL one is tested on its own).
        "ld_preload": [f'/nonexistent/"{joined.replace(chr(0), "")}".so'],
        "env": {f"RC_HOSTILE_{i}": b.replace("\x00", "") for i, b in enumerate(bad)},
        "python": f"/usr/bin/python3{joined}",
        "outcome": "crashed",
        "signal": f"SIGSEGV{joined}",
        "phase": "step",
        "failed_step": 1,
        "message": joined,
        "stderr_tail": f"OMP: Error {joined}",
        "duration_s": 1.0,
        "verdict": {
            "rule": joined,
            "cause": joined,
            "user_advice": joined,
            "key": joined,
        },
        "loaded_runtimes": [{"family": joined, "path": f"/x/{b}"} for b in bad],
        "exercised": [{"kind": b, "path": f"/x/{b}", "status": "ok"} for b in bad],
    }


def header(source: str) -> list[str]:
    return source.split("\nimport json\n", 1)[0].splitlines()


def test_hostile_strings_stay_data(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    entry = hostile_entry(sentinel)
    source = reproducer(entry, "repro.py", verified="|".join(hostile(sentinel)))
    compile(source, "repro.py", "exec")
    lines = header(source)
    assert len(lines) == 12 and all(line.startswith("#") for line in lines)
    assert all(c.isprintable() for line in lines for c in line)
    # Everything between the header and the fixed code is the one literal.
    tree = ast.parse(source)
    assert [type(node).__name__ for node in tree.body[:2]] == ["Import", "Assign"]
    script = tmp_path / "repro.py"
    script.write_text(source)
    verification = verify_reproducer(script, sys.executable, 120)
    assert not sentinel.exists()
    # The script ran: the first hostile preload path does not exist, nothing else ran.
    assert verification.observed.startswith("exit 1: OSError: "), verification
    assert not verification.reproduces


def test_an_environment_value_with_a_nul_is_one_clear_line(tmp_path: Path) -> None:
    entry = dict(hostile_entry(tmp_path / "pwned"), env={"RC_X": "a\x00b"})
    script = tmp_path / "repro.py"
    script.write_text(reproducer(entry, "repro.py"))
    verification = verify_reproducer(script, sys.executable, 120)
    assert verification.observed.startswith("the script gave no result: exit 2 [repro] cannot")
    assert "Traceback" not in verification.observed


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\u2028b", "a\u2029b", "a\x0cb", "a\x00b",
                                  "a\x0bb", "a\x85b", "a\udcffb", "a\x1bb"])  # fmt: skip
def test_comment_escapes_every_line_break_and_control(text: str) -> None:
    shown = comment(text)
    assert shown.isprintable() and shown.startswith("a") and shown.endswith("b")
    compile(f"# {shown}\nx = 1\n", "t", "exec")


def test_steps_keep_their_exact_text(tmp_path: Path) -> None:
    """A step is data too: form feeds and line separators survive into the script's SPEC."""
    entry = hostile_entry(tmp_path / "pwned")
    spec = reproducer_spec(entry)
    assert [s["code"] for s in spec["steps"]] == entry["minimal_steps"]
    assert json.loads(json.dumps(spec)) == spec


def _entry(key: str, steps: int, **extra: Any) -> dict[str, Any]:
    return dict(
        {"verdict": {"key": key}, "outcome": "crashed", "minimal_steps": ["m"] * steps},
        **extra,
    )


def test_the_owner_s_minimal_run_is_chosen_in_any_order() -> None:
    """Whatever order the entries arrive in (xdist), the chosen entry is the owner's (not an
    entry marked as an earlier item's conflict), the shortest minimal order, and the smallest
    minimal load mode."""
    owner = _entry("k", 2, load_mode={"preload": ["/a.so"]})
    variants = [
        _entry("k", 1, duplicate_of="item0"),
        _entry("k", 1, same_conflict_as="run0"),
        _entry("k", 3),
        _entry("k", 2, load_mode={"preload": ["/a.so", "/b.so", "/c.so"]}),
        owner,
        _entry("k", 1, outcome="latent"),
    ]
    for order in itertools.permutations(variants):
        assert conflicts(order) == [owner]


def test_the_script_uses_the_minimal_load_mode_not_the_variant_s() -> None:
    entry = _entry(
        "k", 1, preload=["/a.so", "/b.so", "/c.so"], ld_preload=["/l.so"], env={"A": "1"},
        load_mode={"preload": ["/b.so"], "ld_preload": [], "env": {}, "global_imports": []},
    )  # fmt: skip
    spec = reproducer_spec(entry)
    assert spec["preload"] == ["/b.so"] and spec["environment"] == {}


def test_verification_runs_without_core_files_and_kills_on_timeout(tmp_path: Path) -> None:
    """The checked script (and the run it starts) has RLIMIT_CORE 0; a script that gives no
    result in time is killed, the run it started included."""
    crash = (
        "import os, resource, signal\n"
        "assert resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)\n"
        "os.kill(os.getpid(), signal.SIGSEGV)"
    )
    entry = {"steps": [crash], "outcome": "crashed", "signal": "SIGSEGV", "phase": "step",
             "failed_step": 0, "duration_s": 0.1}  # fmt: skip
    script = tmp_path / "crash.py"
    script.write_text(reproducer(entry, "crash.py"))
    assert (
        verify_reproducer(script, sys.executable, 120)
        .describe()
        .startswith("reproduced SIGSEGV in ")
    )
    pid_file = tmp_path / "pid"
    sleep = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    entry = dict(entry, steps=[sleep])
    script.write_text(reproducer(entry, "crash.py"))
    verification = verify_reproducer(script, sys.executable, 3)
    assert verification == Verification(
        False, "no result within 3 s (killed)", verification.seconds
    )
    assert not Path(f"/proc/{pid_file.read_text()}").exists()
