"""Headless Chromium for tests that look at a page as a browser draws it, with the network off.

Debian's ``chromium`` package; installed with apt-get when missing and the test runs as root
(as .ci/run does), else the test is skipped with the command that installs it. Every start has
a fresh profile, a proxy that refuses everything (127.0.0.1:9, the discard port) and a host
resolver that resolves nothing, so a page that needed the network would show it.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser")
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--hide-scrollbars",
)


def _find() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium() -> str:
    """The chromium executable: found, or installed with apt-get (as root), or skip."""
    found = _find()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "chromium is not installed and cannot be installed here: apt-get install chromium"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            pytest.skip(f"chromium is missing and {' '.join(cmd)} failed: {proc.stderr[-300:]}")
    found = _find()
    if not found:
        pytest.skip("chromium is missing after apt-get install chromium")
    return found


def _run(url: str, *args: str, width: int = 1280, height: int = 1600) -> str:
    with tempfile.TemporaryDirectory(prefix="rc-chromium-") as profile:
        cmd = [
            chromium(),
            *OFFLINE_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            # Lets the page's scripts run (and time-based work settle) before the dump.
            "--virtual-time-budget=5000",
            *args,
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


def dump_dom(page: Path) -> str:
    """The DOM of ``page`` after its scripts ran, serialised as HTML."""
    return _run(page.resolve().as_uri(), "--dump-dom")


def screenshot(page: Path, out: Path, width: int = 1280, height: int = 1600) -> Path:
    """A PNG of ``page`` as drawn at ``width`` x ``height``."""
    _run(page.resolve().as_uri(), f"--screenshot={out}", width=width, height=height)
    assert out.is_file() and out.stat().st_size > 0, f"no screenshot written to {out}"
    return out


def colour_count(png: Path, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
    """How many pixels of ``png`` are within ``tolerance`` of ``rgb`` in every channel."""
    _, _, pixels = decode_png(png.read_bytes())
    return sum(1 for px in pixels if all(abs(a - b) < tolerance for a, b in zip(px, rgb)))


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Width, height and RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG (what
    Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, chunks, header = 8, [], b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    step = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(b"".join(chunks)), width * step
    rows: list[bytearray] = []
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        prev = rows[-1] if rows else bytearray(stride)
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = prev[i], prev[i - step] if i >= step else 0
            line[i] = (line[i] + _predict(kind, left, up, corner)) & 0xFF
        rows.append(line)
    pixels = [(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, stride, step)]
    return width, height, pixels


def _predict(kind: int, left: int, up: int, corner: int) -> int:
    if kind == 0:
        return 0
    if kind == 1:
        return left
    if kind == 2:
        return up
    if kind == 3:
        return (left + up) // 2
    estimate = left + up - corner
    pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
    return left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
