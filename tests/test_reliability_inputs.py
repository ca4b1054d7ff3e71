"""Corrupt inputs never take ``python -m pytest_runtimeconflict scan`` down.

Every case runs the real CLI in a subprocess on real files next to a good compiled object:
no traceback, the bad file skipped with a warning naming it, the good object still scanned,
and the documented exit status (0/1 findings, 2 one-line input error).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cbuild import compile_shared

SOURCE = "int reliable(int x) { return x + 1; }\n"
SCAN_TIMEOUT = 60


def good_object() -> bytes:
    return compile_shared(SOURCE, "libgood.so").read_bytes()


def scan(
    tmp_path: Path, *paths: str | Path, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the scan CLI with a private facts cache; JSON on stdout."""
    env = dict(os.environ, PYTEST_RUNTIMECONFLICT_FACTS_CACHE=str(tmp_path / "facts-cache"))
    return subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "pytest_runtimeconflict",
            "scan",
            "--json",
            "-",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT,
        env=env,
    )


def assert_clean(proc: subprocess.CompletedProcess[str], code: int = 0) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    return json.loads(proc.stdout) if code != 2 else {}


def scanned(data: dict) -> set[str]:
    return {os.path.basename(o["path"]) for o in data["objects"]}


def skipped(data: dict) -> dict[str, str]:
    return {os.path.basename(s["path"]): s["reason"] for s in data["skipped"]}


# ---------------------------------------------------------------- plain files


def test_corrupt_files_in_a_directory_are_skipped_with_warnings(tmp_path: Path) -> None:
    data = good_object()
    d = tmp_path / "lib"
    d.mkdir()
    (d / "good.so").write_bytes(data)
    (d / "zero.so").write_bytes(b"")
    (d / "text.so").write_text("INPUT(-lfoo)\n")  # a linker script named .so, as in /usr/lib
    (d / "magic-only.so").write_bytes(b"\x7fELF")
    (d / "truncated.so.1").write_bytes(data[:100])
    (d / "half.so").write_bytes(data[: len(data) // 2])
    proc = scan(tmp_path, d)
    out = assert_clean(proc)
    assert scanned(out) == {"good.so"}
    bad = skipped(out)
    assert set(bad) == {"zero.so", "text.so", "magic-only.so", "truncated.so.1", "half.so"}
    assert "not an ELF file" in bad["text.so"]
    assert "corrupt or truncated" in bad["truncated.so.1"]
    for name in bad:  # one warning line per skipped file, naming it
        assert any(name in line and "WARNING" in line for line in proc.stderr.splitlines()), name


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [
        (0x28, "<Q", 2**40),
        (0x3C, "<H", 0xFFFF),
        (0x3E, "<H", 0xFFF0),
        (0x20, "<Q", 2**40),
        (0x38, "<H", 0xFFFF),
    ],
    ids=["shoff-past-eof", "shnum-huge", "shstrndx-bogus", "phoff-past-eof", "phnum-huge"],
)
def test_bogus_section_or_program_headers(
    tmp_path: Path, offset: int, fmt: str, value: int
) -> None:
    data = bytearray(good_object())
    struct.pack_into(fmt, data, offset, value)
    (tmp_path / "bogus.so").write_bytes(bytes(data))
    (tmp_path / "good.so").write_bytes(good_object())
    out = assert_clean(scan(tmp_path, tmp_path / "bogus.so", tmp_path / "good.so"))
    assert "good.so" in scanned(out)
    # Either pyelftools copes (program headers are not needed for the facts) or it is skipped.
    assert "bogus.so" in scanned(out) | set(skipped(out))


def test_symlink_loops_and_dangling_links(tmp_path: Path) -> None:
    d = tmp_path / "lib"
    (d / "sub").mkdir(parents=True)
    (d / "good.so").write_bytes(good_object())
    os.symlink("loop2.so", d / "loop1.so")
    os.symlink("loop1.so", d / "loop2.so")
    os.symlink("missing.so", d / "dangling.so")
    os.symlink("..", d / "sub" / "up")  # a directory cycle
    out = assert_clean(scan(tmp_path, d))
    assert scanned(out) == {"good.so"}
    # A looping symlink named on the command line is an input error: one line, exit 2.
    proc = scan(tmp_path, d / "loop1.so")
    assert_clean(proc, 2)
    assert proc.stderr.strip().count("\n") == 0
    assert "loop1.so" in proc.stderr and "pytest-runtimeconflict: error:" in proc.stderr


def test_special_files_never_block(tmp_path: Path) -> None:
    """A FIFO named .so (an open() would block forever) and /proc/self/mem (EIO on read)."""
    d = tmp_path / "lib"
    d.mkdir()
    (d / "good.so").write_bytes(good_object())
    os.mkfifo(d / "fifo.so")
    os.symlink("/proc/self/mem", d / "mem.so")
    out = assert_clean(scan(tmp_path, d))
    assert scanned(out) == {"good.so"}
    assert "cannot read" in skipped(out)["mem.so"]
    proc = scan(tmp_path, d / "fifo.so")
    assert_clean(proc, 2)
    assert "fifo.so" in proc.stderr


def test_read_elf_facts_on_a_fifo_raises(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.so")
    code = (
        "import sys\nfrom pytest_runtimeconflict.static.elffacts import read_elf_facts\n"
        "from pytest_runtimeconflict.errors import ElfReadError\n"
        "try:\n    read_elf_facts(sys.argv[1])\nexcept ElfReadError as e:\n    print('ERR', e)\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "fifo.so")],
            capture_output=True,
            text=True,
            timeout=3,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("read_elf_facts blocked on a FIFO")
    assert proc.stdout.startswith("ERR") and "fifo.so" in proc.stdout


# ---------------------------------------------------------------- unreadable


def _without_dac_override() -> tuple[str, ...]:
    """As root, permission bits do not block reads; drop CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set (setpriv) so chmod 000 really bites."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): chmod 000 cannot block reads")
    return (setpriv, "--bounding-set", "-dac_override,-dac_read_search")


def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    prefix = _without_dac_override()
    d = tmp_path / "lib"
    d.mkdir()
    (d / "good.so").write_bytes(good_object())
    (d / "secret.so").write_bytes(good_object())
    (d / "secret.so").chmod(0)
    out = assert_clean(scan(tmp_path, d, prefix=prefix))
    assert scanned(out) == {"good.so"}
    assert "Permission denied" in skipped(out)["secret.so"]


def test_unreadable_directory_does_not_stop_the_scan(tmp_path: Path) -> None:
    prefix = _without_dac_override()
    d = tmp_path / "lib"
    (d / "locked").mkdir(parents=True)
    (d / "good.so").write_bytes(good_object())
    (d / "locked" / "inside.so").write_bytes(good_object())
    (d / "locked").chmod(0)
    try:
        out = assert_clean(scan(tmp_path, d, prefix=prefix))
    finally:
        (d / "locked").chmod(0o755)
    assert scanned(out) == {"good.so"}


def test_unreadable_directory_is_reported(tmp_path: Path) -> None:
    prefix = _without_dac_override()
    d = tmp_path / "lib"
    (d / "locked").mkdir(parents=True)
    (d / "locked" / "inside.so").write_bytes(good_object())
    (d / "locked").chmod(0)
    try:
        proc = scan(tmp_path, d, prefix=prefix)
    finally:
        (d / "locked").chmod(0o755)
    assert "Traceback" not in proc.stderr
    assert "locked" in proc.stderr, "no warning names the directory that could not be listed"


# ---------------------------------------------------------------- wheels


def make_wheel(path: Path, members: dict[str, bytes], record: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if record:
            zf.writestr("pkg-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in members))
    return path


def test_wheel_without_record_and_with_a_non_elf_member(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "pkg-1.0-py3-none-any.whl",
        {"pkg/good.so": good_object(), "pkg/script.so": b"#!/bin/sh\n", "pkg/__init__.py": b""},
        record=False,
    )
    out = assert_clean(scan(tmp_path, wheel))
    assert scanned(out) == {"good.so"}
    assert "not an ELF file" in skipped(out)["script.so"]
    assert out["objects"][0]["distribution"] == "pkg"


@pytest.mark.parametrize("how", ["not-a-zip", "truncated"])
def test_unreadable_wheel_is_a_one_line_input_error(tmp_path: Path, how: str) -> None:
    good = make_wheel(tmp_path / "good-1.0-py3-none-any.whl", {"good/x.so": good_object()})
    bad = tmp_path / "bad-1.0-py3-none-any.whl"
    data = good.read_bytes()
    bad.write_bytes(b"this is not a zip file\n" if how == "not-a-zip" else data[: len(data) // 2])
    proc = scan(tmp_path, bad)
    assert_clean(proc, 2)
    assert proc.stderr.startswith("pytest-runtimeconflict: error: ")
    assert str(bad) in proc.stderr and "complete .whl" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def _damage_member(wheel: Path, member_data: bytes, stored: bool) -> None:
    """Corrupt the member's payload inside the archive (central directory intact)."""
    raw = bytearray(wheel.read_bytes())
    if stored:
        at = raw.find(member_data[:64]) + 2000
        raw[at] ^= 0xFF  # CRC mismatch
    else:
        at = raw.find(b"pkg/x.so") + len("pkg/x.so") + 40
        for k in range(at, at + 64):
            raw[k] ^= 0x5A  # invalid deflate stream
    wheel.write_bytes(bytes(raw))


@pytest.mark.parametrize("stored", [True, False], ids=["bad-crc", "bad-deflate"])
def test_wheel_with_a_damaged_member_is_skipped(tmp_path: Path, stored: bool) -> None:
    data = good_object()
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(
        wheel, "w", compression=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    ) as zf:
        zf.writestr("pkg/x.so", data)
    _damage_member(wheel, data, stored)
    proc = scan(tmp_path, wheel, tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr.splitlines()[-1]
    assert "x.so" in proc.stderr


def test_wheel_with_a_bad_name_is_a_one_line_input_error(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "notawheel.whl", {"x/good.so": good_object()})
    proc = scan(tmp_path, wheel)
    assert_clean(proc, 2)
    assert "notawheel.whl" in proc.stderr and "name-version-tags.whl" in proc.stderr


def test_missing_path_is_a_one_line_input_error(tmp_path: Path) -> None:
    proc = scan(tmp_path, tmp_path / "nope")
    assert_clean(proc, 2)
    assert f"{tmp_path / 'nope'}: no such file or directory" in proc.stderr
