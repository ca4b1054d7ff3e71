"""Link-safe, atomic writes, and the checks that keep a cache folder private.

Every file the tool writes goes through :func:`write_atomically`: the data goes to a temporary
file created exclusively (``O_CREAT|O_EXCL|O_NOFOLLOW``) under a random name in the target's
folder, its permissions are set on the descriptor (never through a path another user could
swap for a link), it is synced, and ``os.replace`` puts it in place. ``rename`` replaces a link
planted at the target name instead of writing through it, and a reader sees either the whole
old or the whole new content, also when the write is cut short (full disk, file size limit,
``kill -9``).

A cache folder is used only when the current user owns it and no one else can write to it
(:func:`private_directory`), as pip and ccache require; cached blobs carry a checksum of
their content (:func:`seal`, :func:`unseal`), so a damaged or edited blob is ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

_CREATE = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIGEST = 32  # sha256
_WARNED: set[str] = set()


def write_atomically(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by a file holding ``data`` with permissions ``mode`` (no umask): a
    link at ``path`` is replaced, never followed; ``OSError`` when the folder is not
    writable (nothing is left behind)."""
    path = Path(path)
    fd, tmp = _create_temporary(path)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temporary(path: Path) -> tuple[int, str]:
    """An exclusively created, empty temporary file beside ``path`` (random name)."""
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def open_lock_file(path: str | Path) -> int:
    """A descriptor of the lock file ``path`` (created 0600), never through a link: a link
    planted at ``path`` makes this raise ``OSError`` (``ELOOP``)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"lock file {path} is not a regular file")
    return fd


def private_directory(path: str | Path) -> str | None:
    """Why ``path`` (created 0700 if missing) is not a safe cache folder, or None when it is:
    it must be a directory owned by the current user that group and others cannot write,
    and a link to it must be the user's own too."""
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        link, st = os.lstat(path), os.stat(path)
    except OSError as exc:
        return f"cannot create it ({exc.strerror})"
    uid = os.geteuid()
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        return f"it is a link owned by uid {link.st_uid}"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by the current user (uid {uid})"
    if st.st_mode & 0o022:
        return f"group or others can write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def checked_cache_dir(path: str | Path, what: str) -> Path | None:
    """``path`` when :func:`private_directory` accepts it; else None (no cache) and one
    warning per folder and process naming it, why, and what to do."""
    why = private_directory(path)
    if why is None:
        return Path(path)
    if str(path) not in _WARNED:
        _WARNED.add(str(path))
        log.warning(
            "%s %s not used: %s; running without it (chmod 700 a folder you own, or give another)",
            what,
            path,
            why,
        )
    return None


def seal(data: bytes) -> bytes:
    """``data`` prefixed with its sha256 (what :func:`unseal` checks)."""
    return hashlib.sha256(data).digest() + data


def unseal(blob: bytes) -> bytes | None:
    """The data :func:`seal` wrapped, or None when the checksum does not match."""
    digest, data = blob[:_DIGEST], blob[_DIGEST:]
    if len(digest) != _DIGEST or hashlib.sha256(data).digest() != digest:
        return None
    return data
