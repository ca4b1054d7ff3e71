"""Odd input and unexpected errors end in one clear line and a documented exit code: names
that are not UTF-8, numbers out of bounds, unknown configuration keys, a read-only project
folder, and a bug (the catch-all at each entry point)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cbuild import compile_shared

from pytest_runtimeconflict import cli
from pytest_runtimeconflict.errors import UsageError
from pytest_runtimeconflict.options import parse_seconds
from pytest_runtimeconflict.vocabulary import REPORT_SCHEMA

pytest_plugins = ["pytester"]

CLI = [sys.executable, "-m", "pytest_runtimeconflict"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def test_object_name_that_is_not_utf8_with_the_cache_on(tmp_path: Path) -> None:
    lib = compile_shared("int f(void) { return 1; }", "libf.so", outdir=tmp_path / "libs")
    odd = os.fsencode(tmp_path / "libs") + b"/lib\xff\x01odd.so"
    os.rename(lib, odd)
    cache = str(tmp_path / "cache")
    for _ in range(2):  # cold, then warm from the cache
        done = _cli("scan", "--json", "-", str(tmp_path / "libs"), env={"RC_FACTS_CACHE": cache})
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        (obj,) = json.loads(done.stdout)["objects"]
        assert os.fsencode(obj["path"]) == odd


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "0", "1e300", "abc"])
def test_timeouts_are_finite_and_positive(value: str) -> None:
    with pytest.raises(UsageError, match=f"invalid --rc-timeout '{value}'"):
        parse_seconds("--rc-timeout", value, "from command line")
    assert parse_seconds("--rc-timeout", "2.5", "from command line") == 2.5


def test_run_cli_refuses_an_infinite_timeout() -> None:
    done = _cli("run", "--timeout", "inf", "json")
    assert done.returncode == 2 and "invalid --timeout 'inf'" in done.stderr
    assert "Traceback" not in done.stderr


def test_huge_shard_count_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--runtime-conflicts", "--rc-modules=none", "--rc-shard=1/1000000000000"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid --rc-shard 1/1000000000000*at most 10000 shards*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def _shard_report(path: Path, index: object, count: object) -> Path:
    data = {
        "schema": REPORT_SCHEMA,
        "plan": {"id": "p", "items": 1},
        "shard": {"index": index, "count": count},
        "scenarios": [],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("index", "count"), [(1, 1_000_000_000), (0, 2), (3, 2), (-1, -1)])
def test_merge_bounds_shard_numbers(tmp_path: Path, index: int, count: int) -> None:
    report = _shard_report(tmp_path / "r.json", index, count)
    done = _cli("merge", str(report))
    assert done.returncode == 2, done.stderr
    assert "shard numbers out of range" in done.stderr and "Traceback" not in done.stderr


def test_unknown_pyproject_key_names_the_closest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    pytester.makefile(".toml", pyproject="[tool.pytest-runtimeconflict]\nworkload = {}\n")
    result = pytester.runpytest_subprocess("--runtime-conflicts", "--rc-modules=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown key 'workload'*did you mean 'workloads'?*"])


def test_pyproject_ini_option_is_pointed_to_its_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    toml = "[tool.pytest-runtimeconflict]\nruntime_conflicts_timeout = 5\n"
    pytester.makefile(".toml", pyproject=toml)
    result = pytester.runpytest_subprocess("--runtime-conflicts", "--rc-modules=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*options go in [[]tool.pytest.ini_options[]]*"])


SCENARIO = """
[scenario]
name = "ro"
description = "a project folder nobody can write"
[[run]]
id = "ok"
steps = ["json"]
"""


def test_read_only_project_folder_works(tmp_path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("as root, read-only needs setpriv to drop CAP_DAC_OVERRIDE")
    project = tmp_path / "project"
    project.mkdir()
    (project / "ro.scenario.toml").write_text(SCENARIO)
    (project / "pytest.ini").write_text("[pytest]\n")
    project.chmod(0o555)
    args = [sys.executable, "-m", "pytest", "--runtime-conflicts", "--rc-modules=json",
            "-p", "no:randomly", f"--rc-report={tmp_path / 'report.json'}"]  # fmt: skip
    if os.geteuid() == 0:
        args = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *args]
    env = {**os.environ, "RC_FACTS_CACHE": str(tmp_path / "cache")}
    try:
        done = subprocess.run(args, cwd=project, capture_output=True, text=True, env=env)
    finally:
        project.chmod(0o755)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "INTERNALERROR" not in done.stdout and "2 passed" in done.stdout
    assert json.loads((tmp_path / "report.json").read_text())["scenarios"]
    assert sorted(p.name for p in project.iterdir()) == ["pytest.ini", "ro.scenario.toml"]


# ---------------------------------------------------------------- the catch-all


def _broken_scan(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug in the scan")


def test_cli_catch_all_is_one_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from pytest_runtimeconflict.cli import scan

    monkeypatch.setattr(scan, "scan_environment", _broken_scan)
    assert cli.main(["scan", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error while running 'scan" in err
    assert "RuntimeError: a bug in the scan" in err and "-v" in err
    assert cli.main(["-v", "scan", str(tmp_path)]) == 3
    assert "Traceback" in capsys.readouterr().err


def test_plugin_catch_all_is_one_line_and_exit_3(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "from pytest_runtimeconflict.engine import session\n"
        "def broken(self, *a, **k):\n    raise RuntimeError('a bug in planning')\n"
        "session.RCState._context = broken\n"
    )
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--runtime-conflicts", "--rc-modules=json")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    out = result.stdout.str() + result.stderr.str()
    assert "internal error while planning" in out and "RuntimeError: a bug in planning" in out
    assert "INTERNALERROR" not in out and "Traceback" not in out


# ---------------------------------------------------------------- RECORD and METADATA


def _dist(site: Path, name: str, record: bytes, metadata: bytes | None = None) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_bytes(metadata or f"Metadata-Version: 2.1\nName: {name}\n".encode())
    (info / "RECORD").write_bytes(record)


def test_undecodable_record_or_metadata_is_confined_to_its_package(tmp_path: Path) -> None:
    from venvs import make_venv

    python, site = make_venv(tmp_path / "venv")
    lib = compile_shared("int g(void) { return 2; }", "libgood.so", outdir=site / "good")
    _dist(site, "good", b"good/libgood.so,,\n")
    _dist(site, "badrecord", b"bad/\xff\xfe.so,,\n")
    _dist(site, "badmeta", b"x/y.so,,\n", metadata=b"Name: \xff\xfe\n")
    _dist(site, "nul", b"nul/lib\x00x.so,,\nnul/other.py,,\n")
    done = _cli("scan", "--python", python, "--json", "-", env={"RC_FACTS_CACHE": "0"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    objects = {o["path"]: o["distribution"] for o in json.loads(done.stdout)["objects"]}
    assert objects[str(lib)] == "good"
    warned = [line for line in done.stderr.splitlines() if "cannot be read" in line]
    assert len(warned) == 2, done.stderr
    assert any("badrecord-1.0.dist-info" in w for w in warned)
    assert any("badmeta-1.0.dist-info" in w for w in warned)


# ---------------------------------------------------------------- declared sizes

PADDING = 150 << 20


def _elf_with_huge_dynamic(tmp_path: Path) -> bytes:
    """A real object whose PT_DYNAMIC claims 140 MiB, padded with zeros so the claim fits."""
    import struct

    lib = compile_shared("int h(void) { return 3; }", "libhuge.so", outdir=tmp_path)
    data = bytearray(lib.read_bytes())
    phoff, phentsize, phnum = (
        struct.unpack_from("<Q", data, 0x20)[0],
        *struct.unpack_from("<HH", data, 0x36),
    )
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", data, at)[0] == 2:  # PT_DYNAMIC
            struct.pack_into("<Q", data, at + 32, PADDING - (10 << 20))
    return bytes(data) + bytes(PADDING)


def test_declared_dynamic_size_is_bounded(tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "huge-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge/libhuge.so", _elf_with_huge_dynamic(tmp_path))
    assert wheel.stat().st_size < 1 << 20
    code = (
        "import sys\n"
        "from pytest_runtimeconflict.static.scan import scan_environment\n"
        "scan_environment(None, (sys.argv[1],), cache_dir=None)\n"
        "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(peak.split()[1]) // 1024)\n"
    )
    env = {**os.environ, "RC_FACTS_CACHE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(wheel)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    # the tables are read through the first 64 MiB kept of the member, never 140 MiB at once
    assert int(done.stdout) < 250, done.stdout


def test_member_declaring_more_than_deflate_can_hold_is_skipped(tmp_path: Path) -> None:
    import zipfile

    from pytest_runtimeconflict.errors import ElfReadError
    from pytest_runtimeconflict.static.wheelmember import read_wheel_member_facts

    wheel = tmp_path / "liar-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar/libliar.so", b"\x7fELF" + bytes(10000))
    with zipfile.ZipFile(wheel) as zf:
        (info,) = zf.infolist()
        info.file_size = 1_900_000_000  # what a forged central directory declares
        with pytest.raises(ElfReadError, match="compressed bytes can hold"):
            read_wheel_member_facts(zf, str(wheel), info, "liar/libliar.so")


SHRINK = """
import os, sys
from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.static import elffacts

real = elffacts.facts_from_image
def truncated_first(image, shown):
    os.truncate(sys.argv[1], 4096)  # another process shrinks the file while it is read
    return real(image, shown)
elffacts.facts_from_image = truncated_first
try:
    elffacts.read_elf_facts(sys.argv[1])
except ElfReadError as exc:
    print(exc)
"""


def test_file_truncated_while_read_is_skipped_not_sigbus(tmp_path: Path) -> None:
    source = "".join(f"int f{i}(void) {{ return {i}; }}\n" for i in range(3000))
    lib = compile_shared(source, "libshrink.so", outdir=tmp_path)
    assert lib.stat().st_size > 64 * 1024
    done = subprocess.run([sys.executable, "-c", SHRINK, str(lib)], capture_output=True, text=True)
    assert done.returncode == 0, (done.returncode, done.stderr)  # -7 was SIGBUS
    assert "libshrink.so" in done.stdout and "skipped" in done.stdout


def test_control_characters_never_reach_the_terminal_raw() -> None:
    step = "import os; os._exit(3)  # \x1b[31mred\x07"
    done = _cli("run", "--no-diagnose", step)
    assert done.returncode == 1
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout
    assert "# \\x1b[31mred\\x07" in done.stdout


def test_terminal_safe_escapes_controls_and_undecodable_bytes() -> None:
    name = os.fsdecode(b"lib\xff\x1b\xc2\x85.so") + "\u2028"
    assert cli.terminal_safe(name + "\tok\n") == "lib\\xff\\x1b\\x85.so\\u2028\tok\n"


MALFORMED_REPORTS = {
    "scenarios-int": {"scenarios": 5},
    "scenario-int": {"scenarios": [5]},
    "outcomes-list": {"scenarios": [], "item_outcomes": [1]},
    "plan-id-list": {"scenarios": [], "plan": {"id": [], "items": 1}},
    "plan-no-items": {"scenarios": [], "plan": {"id": "p"}},
}


@pytest.mark.parametrize("name", list(MALFORMED_REPORTS))
def test_malformed_report_shapes_are_input_errors(tmp_path: Path, name: str) -> None:
    data = {"schema": REPORT_SCHEMA, "plan": {"id": "p", "items": 1}, **MALFORMED_REPORTS[name]}
    (tmp_path / "r.json").write_text(json.dumps(data))
    done = _cli("merge", str(tmp_path / "r.json"))
    assert done.returncode == 2, done.stderr
    assert "has a malformed" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["merge", "scan --baseline"])
def test_undecodable_report_or_baseline_is_an_input_error(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe{")
    done = _cli(*command.split(), str(bad), *([str(tmp_path)] if "scan" in command else []))
    assert done.returncode == 2 and "not JSON text" in done.stderr, done.stderr


def test_plan_context_is_keyed_on_a_per_run_id_not_the_pid(pytester: pytest.Pytester) -> None:
    from pytest_runtimeconflict.plugin import _run_id

    first, second = (_run_id(pytester.parseconfig()) for _ in range(2))
    assert first != second and str(os.getpid()) not in first + second
