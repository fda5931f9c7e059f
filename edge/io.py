"""Read ECG records from files: :func:`read_record`, the one entry point, dispatches on the file's kind.

Only numpy is used (no wfdb, no pandas): the device reads files itself. The readers, one module a format:

* **WFDB** (``.hea`` header; the path may name the header, the signal file, or the record without extension):
  :mod:`edge.io_wfdb` (formats 16 and 212, MATLAB v4 ``.mat`` as in the CinC 2021 data; also
  :func:`~edge.io_wfdb.write_wfdb`). If ``fs`` is given it must agree with the header; if ``leads`` is given
  those leads are selected, in that order.
* **CSV** (``.csv``, ``.txt``, ``.tsv``): :mod:`edge.io_csv` (a header row of lead names, an optional time
  column that gives the rate; otherwise ``fs`` must be given).
* **NPY** (``.npy``): :mod:`edge.io_npy` (samples x leads, or leads x samples transposed; ``fs`` is required).

Whatever the format, the record is rejected with :class:`~edge.errors.RecordError` (one line naming the file
and the problem) if it has unknown or duplicate lead names, NaN/Inf samples, a sampling rate under
:data:`~edge.io_checks.MIN_FS` Hz or under :data:`~edge.io_checks.MIN_DURATION_S` s of signal
(:mod:`edge.io_checks`). Missing limb leads are NOT derived here (:func:`edge.signal.preprocess` does that):
the record holds what the file holds.

**Hostile files.** The readers treat every file as untrusted input, and :class:`~edge.errors.RecordError` is
the only exception a file can cause (error messages quote at most a few dozen characters of it):

* They never leave the record's folder: a WFDB signal file must be a plain file name (no directory part, no
  ``..``, not absolute) in the header's folder. Headers, signal files, CSV and NPY files must be regular files,
  not symbolic links, FIFOs or devices; this is checked with ``lstat`` before opening, and the file is opened
  with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with ``fstat`` (a FIFO never blocks, a swapped-in link
  is refused: :mod:`edge.io_files`).
* They read only the samples they use: at most ``max_seconds`` (default :data:`~edge.io_checks.MAX_SECONDS`:
  the 10 s the device uses plus the 3 s filter padding of :mod:`edge.signal`) are read, binary signal files by
  seek and read of that byte range, CSV files line by line until enough rows are read; ``meta['truncated']``
  records the file's own length when the record was cut. At most :data:`~edge.io_checks.MAX_VALUES` samples x
  signals are held, headers are at most :data:`~edge.io_checks.MAX_HEADER_BYTES`, CSV lines at most
  :data:`~edge.io_checks.MAX_LINE_CHARS` (and the rows read at most :data:`~edge.io_checks.MAX_CSV_CHARS`).
* Rates, gains, counts and shapes are checked before anything is allocated: sampling rates finite and in
  (0, :data:`~edge.io_checks.MAX_FS`] Hz, gains finite and positive (0, "uncalibrated", is refused: amplitudes
  are measured), at most :data:`~edge.io_checks.MAX_SIGNALS` signals, MATLAB fields non-negative, NPY headers
  parsed here (magic, version, bounded length, a literal dict with exactly ``descr``/``fortran_order``/
  ``shape``, integer or float dtypes only, bounded shape); NPY files are never unpickled and ZIP (``.npz``)
  files are named as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .errors import RecordError
from .io_checks import quote
from .io_csv import read_csv
from .io_files import lexists
from .io_limits import MAX_SECONDS
from .io_npy import read_npy
from .io_wfdb import read_wfdb
from .record import Record

__all__ = ["read_record"]

_WFDB_EXT = {".hea", ".dat", ".mat"}
_CSV_EXT = {".csv", ".txt", ".tsv"}
_NPY_EXT = {".npy"}


def read_record(
    path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read an ECG record from ``path`` (WFDB, CSV or NPY; see the module docstring) and validate it.

    At most the first ``max_seconds`` of signal are read (the rest of the file is not touched)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext in _WFDB_EXT:
        return read_wfdb(p.with_suffix(".hea"), fs=fs, leads=leads, max_seconds=max_seconds)
    if p.name and lexists(p.with_name(p.name + ".hea")):  # a record name without extension
        return read_wfdb(p.with_name(p.name + ".hea"), fs=fs, leads=leads, max_seconds=max_seconds)
    if not lexists(p):
        raise RecordError(f"{p}: no such file")
    if p.is_dir() and not p.is_symlink():
        raise RecordError(f"{p}: is a directory, not a record file")
    if ext in _CSV_EXT:
        return read_csv(p, fs=fs, leads=leads, max_seconds=max_seconds)
    if ext in _NPY_EXT:
        return read_npy(p, fs=fs, leads=leads, max_seconds=max_seconds)
    raise RecordError(
        f"{p}: unknown record format {quote(ext) if ext else '(no extension)'}; "
        f"supported: WFDB (.hea/.dat/.mat), CSV (.csv/.tsv/.txt), NPY (.npy)"
    )
