"""Facts of ELF members of a wheel without extracting them: small members read whole, big
deflated ones decompressed only as far as the reads reach."""

from __future__ import annotations

import mmap
import shutil
import struct
import tempfile
import zipfile
import zlib
from typing import Any

from pytest_runtimeconflict.errors import ElfReadError
from pytest_runtimeconflict.model import ElfFacts
from pytest_runtimeconflict.static.elffast import FileImage, _check_range, facts_from_image

# Members up to this size are read whole (zipfile checks their CRC); bigger ones are streamed.
SMALL_MEMBER = 4 << 20
# Bytes from the start of a streamed member kept in memory: .dynsym/.dynstr/.gnu.hash/.gnu.version*
# sit there (7.7 MB for libtorch_cpu.so); a table past it costs a second decompression pass.
KEEP_HEAD = 64 << 20
_RAW_CHUNK = 1 << 20
_OUT_CHUNK = 1 << 20
# Deflate cannot expand more than 1032:1: a member declaring more than that is lying.
MAX_DEFLATE_RATIO = 1032


class WheelMemberImage:
    """An :class:`Image` over one deflated member of a wheel, decompressed only as far as the
    reads reach (the dynamic tags sit in ``.dynamic``, 80 % into libtorch_cpu.so; the tables
    they point at in the first megabytes). The CRC is not checked on this path since the
    member is not read to its end; :meth:`whole` (section-level facts) reads it through
    :mod:`zipfile`, which checks it."""

    def __init__(
        self,
        zf: zipfile.ZipFile,
        wheel_path: str,
        info: zipfile.ZipInfo,
        keep_head: int = KEEP_HEAD,
    ) -> None:
        self.size = info.file_size
        self.keep_head = keep_head
        self.passes = 0  # how often inflation started from the beginning
        self._zf, self._info = zf, info
        self._raw = open(wheel_path, "rb")  # noqa: SIM115  (closed in close())
        self._whole: FileImage | None = None
        self._spool: Any = None
        self._spool_map: mmap.mmap | None = None
        self._restart()

    def close(self) -> None:
        self._raw.close()
        self._whole = None
        if self._spool_map is not None:
            self._spool_map.close()
        if self._spool is not None:
            self._spool.close()

    def _restart(self) -> None:
        self._raw.seek(self._info.header_offset)
        local = self._raw.read(30)
        if local[:4] != b"PK\x03\x04":
            raise ValueError(f"no local header at {self._info.header_offset:#x}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        self._raw.seek(self._info.header_offset + 30 + name_len + extra_len)
        self.passes += 1
        self._left = self._info.compress_size
        self._inflate = zlib.decompressobj(-15)
        self._pos = 0  # bytes produced so far
        self._head = bytearray()  # [0, KEEP_HEAD)
        self._tail_at, self._tail = 0, b""  # the last chunk produced

    def read(self, offset: int, length: int) -> bytes:
        _check_range(offset, length, self.size)
        end = offset + length
        if self._whole is not None:
            return self._whole.read(offset, length)
        if end <= len(self._head):
            return bytes(self._head[offset:end])
        if self._tail_at <= offset and end <= self._tail_at + len(self._tail):
            return self._tail[offset - self._tail_at : end - self._tail_at]
        if offset < self._pos:  # already passed and not kept: inflate again from the start
            self._restart()
        pieces = []
        while self._pos < end:
            at, chunk = self._pos, self._inflate_some()
            self._pos += len(chunk)
            if at < self.keep_head:
                self._head += chunk[: self.keep_head - at]
            lo, hi = max(offset, at), min(end, self._pos)
            if lo < hi:
                pieces.append(chunk[lo - at : hi - at])
            self._tail_at, self._tail = at, chunk
        return b"".join(pieces)

    def _inflate_some(self) -> bytes:
        try:
            while True:
                data = self._inflate.unconsumed_tail
                if not data and self._left > 0:
                    data = self._raw.read(min(_RAW_CHUNK, self._left))
                    self._left -= len(data)
                if not data:
                    out = self._inflate.flush()
                    if not out:
                        raise ValueError("the compressed member ends early")
                    return out
                out = self._inflate.decompress(data, _OUT_CHUNK)
                if self._pos + len(out) > self.size:
                    raise ValueError(f"the member inflates past its declared {self.size} bytes")
                if out:
                    return out
        except zlib.error as exc:
            raise ValueError(f"bad compressed data ({exc})") from exc

    def whole(self) -> FileImage:
        if self._whole is None:
            self._spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed in close())
            try:
                with self._zf.open(self._info) as src:
                    shutil.copyfileobj(src, self._spool, _RAW_CHUNK)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ValueError(f"bad member ({exc})") from exc
            self._spool.flush()
            self._spool_map = mmap.mmap(self._spool.fileno(), 0, access=mmap.ACCESS_READ)
            self._whole = FileImage(self._spool_map)
        return self._whole


def _check_declared_size(info: zipfile.ZipInfo) -> None:
    """A deflated member's declared size within what its compressed bytes can hold."""
    if info.compress_type == zipfile.ZIP_DEFLATED:
        limit = info.compress_size * MAX_DEFLATE_RATIO + 1024
        if info.file_size > limit:
            raise ValueError(
                f"it declares {info.file_size} bytes, more than its {info.compress_size} "
                "compressed bytes can hold"
            )


def read_wheel_member_facts(
    zf: zipfile.ZipFile,
    wheel_path: str,
    info: zipfile.ZipInfo,
    display_path: str,
    *,
    small_member: int = SMALL_MEMBER,
    keep_head: int = KEEP_HEAD,
) -> ElfFacts:
    """Facts of the wheel member ``info`` without extracting it: members up to
    ``small_member`` bytes, stored or encrypted ones are read whole, bigger deflated ones
    through :class:`WheelMemberImage`. Raises :class:`ElfReadError` naming ``display_path``."""
    shown = display_path
    streamed = (
        info.file_size > small_member
        and info.compress_type == zipfile.ZIP_DEFLATED
        and not info.flag_bits & 0x1  # encrypted
    )
    image: WheelMemberImage | None = None
    try:
        _check_declared_size(info)
        if streamed:
            image = WheelMemberImage(zf, wheel_path, info, keep_head)
            if image.read(0, min(4, image.size)) != b"\x7fELF":
                raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
            return facts_from_image(image, shown)
        data = zf.read(info)
        if data[:4] != b"\x7fELF":
            raise ElfReadError(f"{shown}: not an ELF file (no ELF magic); skipped")
        return facts_from_image(FileImage(data), shown)
    except ElfReadError:
        raise
    except (struct.error, ValueError, IndexError, OverflowError, zlib.error, EOFError) as exc:
        raise ElfReadError(f"{shown}: corrupt or truncated ELF file ({exc}); skipped") from exc
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise ElfReadError(f"{shown}: cannot read the wheel member ({exc}); skipped") from exc
    except OSError as exc:
        raise ElfReadError(f"{shown}: cannot read ({exc.strerror or exc}); skipped") from exc
    finally:
        if image is not None:
            image.close()
