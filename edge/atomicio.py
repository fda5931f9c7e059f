"""The one way ecgret writes a file that someone relies on: atomically, and without following planted links.

Every write goes to a fresh temporary file created with ``O_CREAT | O_EXCL`` (``tempfile.mkstemp``: an
unpredictable name, mode 0600 while it is written) in the *target's own folder*, is flushed and fsynced, given
its final mode, renamed over the target with ``os.replace`` (atomic on POSIX: a reader sees the old file or the
new one, never a mix) and the folder is fsynced so the rename survives a power cut. ``O_EXCL`` never opens an
existing path, so a symlink planted where the temporary file goes cannot redirect the write; ``os.replace``
replaces a symlink at the target itself rather than the file it points to. A failure removes the temporary file
and raises an :class:`OSError` of the same kind that names the *target* (not the temporary file)::

    atomic_write(path, b"bytes" or "text")          # the whole content at once
    with atomic_open(path, "w") as f: f.write(...)   # streamed
    with atomic_path(path, suffix=".npz") as tmp:    # for writers that want a file name (np.savez, memmaps)
        np.savez(tmp, ...)
    publish(staged_file, path, overwrite=False)      # move a finished file in (no-clobber when asked)
    with staging_dir(folder) as d: ...               # a private folder in ``folder`` for multi-file writers
    with staging_folder(target) as tmp:              # a whole folder (a bundle) written beside ``target`` ...
        publish_folder(tmp, target)                  # ... and renamed into place: the old folder or the new

Only the standard library: usable from :mod:`edge` and :mod:`convert` alike. The firmware bridge may not import
:mod:`edge`, and it needs no copy of this: it writes no file. Its one rename is the simulator's stable port path,
a symbolic link to the pty swapped under a fresh random name (``os.symlink`` never follows or reuses a path, then
``os.replace``), which is a link and not a file's contents.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_open",
    "atomic_path",
    "publish",
    "staging_dir",
    "staging_folder",
    "publish_folder",
    "fsync_dir",
    "refuse_replacing",
    "TMP_MARK",
]

TMP_MARK = ".tmp-"  # temporary files are ``.<target name>.tmp-<random>``: hidden, and easy to sweep


def _umask() -> int:
    try:  # Linux >= 4.7 reports it without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _final_mode(target: Path, mode: int | None) -> int:
    if mode is not None:
        return mode
    try:  # replacing a regular file keeps its permission bits (never set-id bits; a link's are not its target's)
        st = os.lstat(target)
        if stat.S_ISREG(st.st_mode):
            return st.st_mode & 0o777
    except OSError:
        pass
    return 0o666 & ~_umask()


def _renamed(e: OSError, target: Path) -> OSError:
    """``e`` again (same subclass and errno), naming the target instead of a temporary file."""
    try:
        return type(e)(e.errno, e.strerror or str(e), str(target))
    except Exception:  # noqa: BLE001 - an OSError subclass with another constructor
        return OSError(e.errno, e.strerror or str(e), str(target))


def fsync_dir(folder) -> None:
    """fsync a folder (makes a rename in it durable); ignored where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mkstemp(target: Path, suffix: str = "") -> tuple[int, Path]:
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}{TMP_MARK}", suffix=suffix, dir=target.parent)
    except OSError as e:
        raise _renamed(e, target) from None
    return fd, Path(name)


def _commit(tmp: Path, target: Path, mode: int, overwrite: bool) -> None:
    os.chmod(tmp, mode)
    if overwrite:
        os.replace(tmp, target)
    else:  # link() fails with EEXIST instead of replacing: a no-clobber atomic publish
        os.link(tmp, target)
        os.unlink(tmp)
    fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_path(path, *, suffix: str = "", mode: int | None = None, overwrite: bool = True):
    """Yield the :class:`~pathlib.Path` of a fresh, empty temporary file next to ``path``; when the block ends
    without an exception it is fsynced and renamed to ``path``; otherwise it is removed.

    For writers that insist on a file name (``np.savez`` adds ``.npz`` unless the name ends so: pass
    ``suffix=".npz"``; ``np.lib.format.open_memmap``; ``ndarray.tofile``). ``overwrite=False`` refuses to
    replace an existing ``path`` (:class:`FileExistsError`).
    """
    target = Path(path)
    final = _final_mode(target, mode)
    fd, tmp = _mkstemp(target, suffix)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, target, final, overwrite)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and getattr(e, "filename", None) in (str(tmp), tmp):
            raise _renamed(e, target) from None
        raise


@contextlib.contextmanager
def atomic_open(
    path,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    file_mode: int | None = None,
    overwrite: bool = True,
):
    """``open()`` for writing, atomically: yields a file object on a fresh temporary file next to ``path``;
    a clean exit fsyncs it and renames it to ``path``, an exception removes it. ``mode`` is ``"w"`` or ``"wb"``."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    target = Path(path)
    final = _final_mode(target, file_mode)
    fd, tmp = _mkstemp(target)
    f: IO[Any]
    try:
        if "b" in mode:
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _commit(tmp, target, final, overwrite)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and getattr(e, "filename", None) in (str(tmp), tmp, None):
            raise _renamed(e, target) from None
        raise


def atomic_write(path, data, *, encoding: str = "utf-8", mode: int | None = None, overwrite: bool = True) -> Path:
    """Write ``data`` (bytes, or str encoded with ``encoding``) to ``path`` atomically; returns ``Path(path)``."""
    raw = data.encode(encoding) if isinstance(data, str) else bytes(data)
    with atomic_open(path, "wb", file_mode=mode, overwrite=overwrite) as f:
        f.write(raw)
    return Path(path)


def publish(src, path, *, mode: int | None = None, overwrite: bool = True) -> Path:
    """Move a finished file ``src`` (in a folder this process created, e.g. :func:`staging_dir`, on the same
    file system) to ``path``: fsync, then an atomic rename (or, with ``overwrite=False``, a no-clobber link)."""
    src, target = Path(src), Path(path)
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(src, target, _final_mode(target, mode), overwrite)
    except OSError as e:
        raise _renamed(e, target) from None
    return target


@contextlib.contextmanager
def staging_dir(folder):
    """A private, fresh folder (``mkdtemp``, mode 0700) inside ``folder`` for writers that produce several
    files with fixed names; :func:`publish` each one into ``folder``. Removed, with anything left, on exit."""
    target = Path(folder)
    try:
        d = Path(tempfile.mkdtemp(prefix=f".staging{TMP_MARK}", dir=target))
    except OSError as e:
        raise _renamed(e, target) from None
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def staging_folder(target, what: str = "tmp", *, keep: bool = False) -> Iterator[Path]:
    """A fresh folder ``.<target name>.<what>-XXXX`` beside ``target`` (same file system: a rename publishes it).
    It is removed when the block raises, and also when it ends unless ``keep`` (the block published it)."""
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{what}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(staged, target) -> None:
    """Rename the finished folder ``staged`` to ``target``. An existing ``target`` is first renamed aside (and
    put back if the second rename fails), then removed: a reader sees the old folder or the new one."""
    staged, out = Path(staged), Path(target)
    if not out.exists():
        os.replace(staged, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))  # empty: a rename target
    os.replace(out, trash)
    try:
        os.replace(staged, out)
    except BaseException:
        os.replace(trash, out)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def refuse_replacing(path, head: bytes, what: str, example: str) -> str | None:
    """Why ``path`` must not be replaced by a new ``what`` (a file beginning with ``head``), or None: an output
    replaces only a missing file or an earlier output of its kind, never a symbolic link, a folder, a device, a FIFO
    or a file of the user's (``example``: a name to suggest, e.g. ``report.html``). The one check every command
    that writes a named output file makes before any work."""
    p = os.fspath(path)
    if not p:
        return f"an empty file name; give one such as {example}"
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be checked ({e.strerror or e})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link; give the name of the file itself or of a new file"
    if stat.S_ISDIR(st.st_mode):
        return f"is a folder; give a file name such as {example}"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a device, FIFO or socket); give the name of a new file"
    try:
        with open(p, "rb") as f:
            got = f.read(len(head))
    except OSError as e:
        return f"exists and cannot be read ({e.strerror or e}); give another name"
    if got != head:  # an empty file too (a user's placeholder; /proc files say size 0 and fail only when written)
        empty = " (an empty file)" if not st.st_size and not got else ""
        return f"exists{empty} and is not {what}; it would be overwritten: remove it or give another name"
    return None
