"""Baselines: stable conflict keys, the file format and its errors, ``scan --baseline`` on real
wheels, and ``pytest --rc-baseline`` on a real order-dependent crash. The zoo's version (two
real conflicts, one entry removed) is tests/test_ci_zoo.py."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_rules import SYSTEM_LIBGOMP, renamed_copy, vendoring_wheel

from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.report.baseline import Conflict, load_baseline, stable_file_name

pytest_plugins = ["pytester"]
HERE = Path(__file__).parent


@pytest.mark.parametrize(
    ("path", "stable"),
    [
        ("/x/sklearn.libs/libgomp-a34b3233.so.1.0.0", "libgomp.so.1"),
        ("numpy.libs/libgfortran-040039e1-0352e75f.so.5.0.0", "libgfortran.so.5"),
        ("numpy.libs/libscipy_openblas64_-32a4b2a6.so", "libscipy_openblas64_.so"),
        ("zoo/_zoo_newcxx.cpython-311-x86_64-linux-gnu.so", "_zoo_newcxx.so"),
        ("pkg/_core.cpython-313t-x86_64-linux-gnu.so", "_core.so"),
        ("pkg/_speedups.abi3.so", "_speedups.so"),
        ("/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30", "libstdc++.so.6"),
        ("torch/lib/libgomp.so.1", "libgomp.so.1"),
        ("/a.whl!/zoo_iomp_a.libs/libiomp5-bdc2b695.so", "libiomp5.so"),
        # not an auditwheel hash (7 digits, or not hex): kept
        ("lib/libfoo-1234567.so", "libfoo-1234567.so"),
        ("lib/libtbb-release.so.12", "libtbb-release.so.12"),
    ],
)
def test_stable_file_names(path: str, stable: str) -> None:
    assert stable_file_name(path) == stable


def test_conflict_key_is_rule_and_libraries_by_distribution() -> None:
    a = Conflict.of(
        "openmp-duplicate",
        [("Zoo_IOMP_b", "/v1/b.libs/libiomp5-7ca17c6f.so"), ("zoo-iomp-a", "/v1/libiomp5-bd.so")],
    )
    rebuilt = Conflict.of(
        "openmp-duplicate",
        [("zoo-iomp-a", "/v2/libiomp5-bd.so"), ("zoo.iomp.b", "/v2/b.libs/libiomp5-00c0ffee.so")],
    )
    assert (
        a.key
        == rebuilt.key
        == ("openmp-duplicate: zoo-iomp-a/libiomp5-bd.so + zoo-iomp-b/libiomp5.so")
    )
    other_dist = Conflict.of("openmp-duplicate", [("zoo-iomp-a", "x/libiomp5-bd.so"),
                                                  ("zoo-iomp-c", "libiomp5.so")])  # fmt: skip
    other_rule = Conflict.of("blas-duplicate", [(d, f) for d, f in a.libraries])
    assert len({a.key, other_dist.key, other_rule.key}) == 3
    # a crash naming no library is known by its minimal order
    assert Conflict.of("unattributed-crashed", [], ["a", "b"]).key == "unattributed-crashed: a > b"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "invalid --rc-baseline '*b.json': not JSON (*); write it with the update*"),
        ('{"schema": "x/1"}', "*schema 'x/1' is not 'pytest-runtimeconflict/baseline/1'*"),
        (
            '{"schema": "pytest-runtimeconflict/baseline/1", "conflicts": [{"libraries": []}]}',
            '*conflict 1 has no "rule"; each needs "rule" (a string) and "libraries"*',
        ),
        (
            '{"schema": "pytest-runtimeconflict/baseline/1", "conflicts": '
            '[{"rule": "r", "libraries": ["libx.so"]}]}',
            '*conflict 1 has bad "libraries"*',
        ),
    ],
)
def test_bad_baseline_files_name_the_file_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_baseline(str(path))
    assert "\n" not in str(err.value)
    assert fnmatch.fnmatch(str(err.value), message), str(err.value)
    with pytest.raises(UsageError, match="no such file; create it with the update option"):
        load_baseline(str(tmp_path / "missing.json"))
    assert load_baseline(str(tmp_path / "missing.json"), create=True).conflicts == ()


# ---------------------------------------------------------------- scan --baseline


def scan(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_runtimeconflict", "scan", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=HERE.parent,
    )


def test_scan_baseline_known_new_and_fixed(tmp_path: Path) -> None:
    def wheels(build: str, suffixes: dict[str, str]) -> list[Path]:
        return [
            vendoring_wheel(
                tmp_path / build,
                dist,
                [renamed_copy(SYSTEM_LIBGOMP, tmp_path / build / dist, f"libgomp-{h}.so.1.0.0")],
            )
            for dist, h in suffixes.items()
        ]

    first = wheels("v1", {"alpha": "a34b3233", "beta": "ff651d7f"})
    baseline = tmp_path / "baseline.json"
    fail = ("--fail-on", "warning")
    assert scan(*first, *fail).returncode == 1  # openmp-duplicate (a warning) fails here
    update = scan(*first, *fail, "--baseline", baseline, "--update-baseline")
    assert update.returncode == 0, update.stderr
    assert f"baseline {baseline} updated: 1 known finding(s)" in update.stdout
    data = json.loads(baseline.read_text())
    assert data["conflicts"][0]["rule"] == "openmp-duplicate"
    assert data["conflicts"][0]["libraries"] == [
        {"distribution": "alpha", "file": "libgomp.so.1"},
        {"distribution": "beta", "file": "libgomp.so.1"},
    ]
    # Rebuilt wheels: new auditwheel hashes, same conflict: known, exit 0.
    rebuilt = wheels("v2", {"alpha": "0badc0de", "beta": "1234abcd"})
    known = scan(*rebuilt, *fail, "--baseline", baseline, "--json", tmp_path / "s.json")
    assert known.returncode == 0, known.stdout
    assert "- known: openmp-duplicate: alpha/libgomp.so.1 + beta/libgomp.so.1" in known.stdout
    assert json.loads((tmp_path / "s.json").read_text())["baseline"]["known"] == [
        "openmp-duplicate: alpha/libgomp.so.1 + beta/libgomp.so.1"
    ]
    # Another distribution vendoring it: a new conflict fails, the recorded one is fixed.
    moved = wheels("v3", {"alpha": "0badc0de", "gamma": "1234abcd"})
    new = scan(*moved, *fail, "--baseline", baseline)
    assert new.returncode == 1
    assert "- new (fails): openmp-duplicate: alpha/libgomp.so.1 + gamma/libgomp.so.1" in new.stdout
    assert "- fixed (no longer seen; remove it from the baseline): openmp-duplicate: alpha/" in (
        new.stdout
    )
    missing = scan(*moved, "--baseline", tmp_path / "nope.json")
    assert missing.returncode == 2 and "no such file; create it" in missing.stderr
    assert "Traceback" not in missing.stderr


# ---------------------------------------------------------------- pytest --rc-baseline

MODULES = {
    "bl_a": "VALUE = 1\n",
    "bl_b": "import os, signal, sys\nif 'bl_a' in sys.modules:\n    os.kill(os.getpid(), signal.SIGSEGV)\n",
    "bl_c": "import os, sys\nif 'bl_b' in sys.modules:\n    raise ImportError('bl_c cannot follow bl_b')\n",
}


def test_plugin_baseline_round_trip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**MODULES)
    args = ["-p", "no:cacheprovider", "--runtime-conflicts", "--rc-modules=bl_a,bl_b,bl_c",
            "--rc-max-runs=4", "--rc-baseline=known.json", "-rfx"]  # fmt: skip
    missing = pytester.runpytest_subprocess(*args)
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*invalid --rc-baseline '*known.json': no such file*"])

    recorded = pytester.runpytest_subprocess(*args, "--rc-update-baseline")
    assert recorded.ret == pytest.ExitCode.OK, recorded.stdout.str()
    recorded.stdout.fnmatch_lines(["baseline *known.json updated: 2 known conflict(s)"])
    data = json.loads((pytester.path / "known.json").read_text())
    keys = sorted(Conflict.of(c["rule"], [], c.get("steps", ())).key for c in data["conflicts"])
    assert keys == ["unattributed-SIGSEGV: bl_a > bl_b", "unattributed-failed: bl_b > bl_c"]

    known = pytester.runpytest_subprocess(*args)
    assert known.ret == pytest.ExitCode.OK
    known.stdout.fnmatch_lines(["XFAIL *known conflict (in the baseline *known.json)*"])
    known.stdout.fnmatch_lines(["baseline *known.json: 2 known, 0 new, 0 fixed"])

    data["conflicts"] = [c for c in data["conflicts"] if c["rule"] != "unattributed-failed"]
    (pytester.path / "known.json").write_text(json.dumps(data))
    one_new = pytester.runpytest_subprocess(*args)
    assert one_new.ret == pytest.ExitCode.TESTS_FAILED
    one_new.stdout.fnmatch_lines(
        ["baseline *known.json: 1 known, 1 new, 0 fixed",
         "- new (fails): unattributed-failed: bl_b > bl_c"]
    )  # fmt: skip
    # The item fails naming the new conflict only; the known crash is not its failure.
    one_new.stdout.fnmatch_lines(
        ["FAILED runtime-conflicts::bl_a>bl_b>bl_c - FAILED: ImportError: bl_c cannot f*"]
    )
    assert "CRASHED: SIGSEGV" not in one_new.stdout.str()
