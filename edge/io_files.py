"""Opening the files a record reader is given, as untrusted input (:mod:`edge.io`): regular files only (not
links, FIFOs or devices: ``lstat`` first, then ``O_NOFOLLOW | O_NONBLOCK`` and an ``fstat`` that must find the
same file), read by ``pread`` of the byte ranges needed, with bounded sizes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from .errors import RecordError
from .io_checks import quote

__all__ = ["lexists", "open_regular", "pread", "array_from", "read_small"]


def lexists(p: Path) -> bool:
    """``os.path.lexists`` that says False for a path the OS cannot even look up (a NUL byte, a name too long)."""
    try:
        return os.path.lexists(p)
    except (ValueError, OSError):  # an embedded NUL byte, a name too long
        return False


def _oserr(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


_O_READ = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def open_regular(path: Path, where: str, what: str, missing: str | None = None) -> tuple[int, int]:
    """Open ``path`` read-only if it is a regular file (not a link, FIFO, device...); returns (fd, size).

    ``lstat`` first (opening a device or FIFO can have effects of its own), then ``open`` with O_NOFOLLOW and
    O_NONBLOCK and an ``fstat`` that must find the same regular file."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RecordError(missing or f"{where}: no such {what}") from None
    except (OSError, ValueError) as e:
        raise RecordError(f"{where}: unreadable {what} ({_oserr(e) if isinstance(e, OSError) else e})") from None
    if stat.S_ISLNK(st.st_mode):
        raise RecordError(f"{where}: {what} {quote(path.name)} is a symbolic link; refused (name the file itself)")
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(f"{where}: {what} {quote(path.name)} is {_kind(st.st_mode)}, not a regular file; refused")
    try:
        fd = os.open(path, _O_READ)
    except OSError as e:
        raise RecordError(f"{where}: unreadable {what} ({_oserr(e)})") from None
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise RecordError(f"{where}: {what} {quote(path.name)} changed while it was opened; refused")
    except BaseException:
        os.close(fd)
        raise
    return fd, int(st2.st_size)


def pread(fd: int, offset: int, n: int, where: str) -> bytearray:
    """Up to ``n`` bytes at ``offset`` (fewer at the end of the file), in one buffer."""
    buf = bytearray(max(0, n))
    got = 0
    while got < n:
        try:
            chunk = os.pread(fd, min(n - got, 1 << 22), offset + got)
        except OSError as e:
            raise RecordError(f"{where}: read error ({_oserr(e)})") from None
        if not chunk:
            break
        buf[got : got + len(chunk)] = chunk
        got += len(chunk)
    del buf[got:]
    return buf


def array_from(buf, dtype, count: int, where: str) -> np.ndarray:
    """``count`` items of ``dtype`` from ``buf``; a file that shrank while it was read is an error, not a crash."""
    dtype = np.dtype(dtype)
    if len(buf) < count * dtype.itemsize:
        raise RecordError(
            f"{where}: the file ended early while it was read ({len(buf)} of {count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(buf, dtype=dtype, count=count)


def read_small(path: Path, limit: int, where: str, what: str, missing: str | None = None) -> bytes:
    """The whole of a small regular file (:func:`open_regular`, e.g. a header) of at most ``limit`` bytes;
    a larger one, or one that grows past it while read, is a :class:`RecordError`."""
    fd, size = open_regular(path, where, what, missing)
    try:
        if size > limit:
            raise RecordError(f"{where}: {what} is {size:,} bytes, over the {limit // 1024} KiB limit; refused")
        data = pread(fd, 0, limit + 1, where)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RecordError(f"{where}: {what} is over the {limit // 1024} KiB limit; refused")
    return bytes(data)
