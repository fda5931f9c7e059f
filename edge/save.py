"""Saving an acquisition: the WFDB record and its result JSON, each file published whole, never over another.

``ecgret listen --save DIR`` and ``ecgret demo --save DIR`` write ``<DIR>/<stem>.dat``, ``.json`` and ``.hea``.
The result JSON is the same object ``--json`` prints (:func:`edge.answer.result_dict`: with the ecgret version,
the bundle id and a UTC timestamp).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import EcgretError

__all__ = ["save_acquisition", "check_save_dir"]


def check_save_dir(save_dir) -> None:
    """Before acquiring: the ``--save`` folder can be made and written to (else :class:`EcgretError`); a recording
    made first and then found unsavable (a read-only or full disk, a file in the way) was lost."""
    import os
    import tempfile

    d = Path(save_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ecgret-probe-", dir=d)
        try:
            os.write(fd, b"\0" * 4096)  # room for a little more than nothing
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise EcgretError(f"--save {d}: cannot write there ({e.strerror or e}); nothing was acquired") from None


def save_acquisition(rec, obj: dict, save_dir, stem: str) -> Path:
    """Write ``rec`` (NaN gaps become 0; the header's comments count them) and ``obj`` under ``save_dir``; returns
    the path without suffix. Each file is written in a private staging folder, fsynced, then linked in without
    replacing anything that exists, the header last, so a reader that finds the ``.hea`` finds the complete
    record. A name already taken gets ``-2``, ``-3``, ... . Errors are :class:`EcgretError` naming the folder."""
    import numpy as np

    from .atomicio import atomic_write, publish, staging_dir
    from .io_wfdb import write_wfdb
    from .record import Record
    from .termtext import encodable, printable

    d = Path(save_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EcgretError(f"--save {d}: cannot create the folder ({e.strerror or e})") from None
    gaps = int(np.isnan(rec.signal).any(axis=1).sum())
    comments = {"source": printable(rec.name), "gap_samples": gaps}  # format 16 holds no NaN: gaps become 0
    # made before any file is published, so nothing in it can fail half way (undecodable bytes of a port or file
    # name, lone surrogates, become U+FFFD)
    text = (encodable(json.dumps(obj, ensure_ascii=False, indent=1)) + "\n").encode("utf-8")
    for k in range(1, 1000):
        name = stem if k == 1 else f"{stem}-{k}"
        if any((d / f"{name}{ext}").exists() for ext in (".hea", ".dat", ".json")):
            continue
        published: list[Path] = []  # removed again if a later file fails: no .dat without its .hea and .json
        try:
            with staging_dir(d) as tmp:
                write_wfdb(
                    Record(np.nan_to_num(rec.signal, nan=0.0), rec.fs, rec.leads, rec.name, {"comments": comments}),
                    tmp,
                    name,
                )
                publish(tmp / f"{name}.dat", d / f"{name}.dat", overwrite=False)
                published.append(d / f"{name}.dat")
                atomic_write(d / f"{name}.json", text, overwrite=False)
                published.append(d / f"{name}.json")
                publish(tmp / f"{name}.hea", d / f"{name}.hea", overwrite=False)
            return d / name
        except OSError as e:
            for p in published:
                try:
                    p.unlink()
                except OSError:
                    pass
            if isinstance(e, FileExistsError):
                continue
            where = f": {e.filename}" if e.filename else ""
            raise EcgretError(f"--save {d}: cannot save {name} ({e.strerror or e}{where})") from None
    raise EcgretError(f"--save {d}: {stem} and 998 variants of it exist already")
