"""Files the toolkit writes: a file's sha256, and folders written whole.

A folder of several files (a bundle, a merged index) is written into a staging folder beside its target
(:func:`staging_folder`) and renamed into place (:func:`publish_folder`), so a crash never leaves half of one.
Single files are written with :mod:`edge.atomicio`; it has no folder rename, which is why this one is here.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_sha256", "staging_folder", "publish_folder"]


def file_sha256(path) -> str:
    """The sha256 of a file's bytes (hex), read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
