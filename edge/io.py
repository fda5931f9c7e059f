"""Read ECG records from files (WFDB, CSV, NPY) and write WFDB records.

Only numpy is used (no wfdb, no pandas): the device reads files itself.

Supported inputs of :func:`read_record`:

* **WFDB** (``.hea`` header; the path may name the header, the signal file, or the record without extension).
  Signal files in format 16 (little-endian int16) or 212 (packed 12-bit pairs), or MATLAB v4 ``.mat`` files
  as distributed by the PhysioNet/CinC Challenge 2021 (``16x1+24``: an int16 matrix of n_sig rows and
  n_samples columns, stored column-major after a 24-byte v4 header, i.e. frame-interleaved like format 16).
  One sample per frame per signal; several signal files per record are supported. Physical value =
  (digital - baseline) / gain; units of uV or V are converted to mV. Invalid samples (-32768 in format 16,
  -2048 in format 212) become NaN and are then rejected like any other NaN. Header comments ``# Key: value``
  go into ``meta['comments']`` (a dict) and ``meta['comment_lines']``; age and sex found there go into
  ``meta['age']`` (int) and ``meta['sex']`` (``male``/``female``), and the record line's base time and date
  into ``meta['acquired']`` (all optional: :func:`patient_meta`). If ``fs`` is given it must agree
  with the header; if ``leads`` is given those leads are selected, in that order.
* **CSV** (``.csv``, ``.txt``, ``.tsv``): a header row of lead names, one row per sample, delimiter comma,
  semicolon or tab (detected from the header row; with ``;`` a decimal comma is accepted). An optional first
  column ``time``/``t``/``time_s``/``seconds`` (seconds) or ``time_ms``/``ms`` (milliseconds) gives the
  sampling rate as 1/median(step); otherwise ``fs`` must be given. A given ``fs`` must agree with a time
  column within 1%. A file without a header row (first row numeric) is named like an NPY array. ``leads``
  selects leads from a file with a header row.
* **NPY** (``.npy``): a 2-D array, samples x leads. An array of 8 or 12 (or ``len(leads)``) rows and many
  more columns is taken as leads x samples and transposed (``meta['transposed'] = True``). ``fs`` is required.
  Leads are ``leads`` if given, else LEADS12 for 12 columns, LEADS8 (I, II, V1-V6) for 8, else an error.

Whatever the format, the record is rejected with :class:`~edge.errors.RecordError` (one line naming the file
and the problem) if it has unknown or duplicate lead names, NaN/Inf samples, a sampling rate under
:data:`MIN_FS` Hz or under :data:`MIN_DURATION_S` s of signal. Missing limb leads are NOT derived here
(:func:`edge.signal.preprocess` does that): the record holds what the file holds.

**Hostile files.** The readers treat every file as untrusted input, and :class:`~edge.errors.RecordError` is
the only exception a file can cause (error messages quote at most a few dozen characters of it):

* They never leave the record's folder: a WFDB signal file must be a plain file name (no directory part, no
  ``..``, not absolute) in the header's folder. Headers, signal files, CSV and NPY files must be regular files,
  not symbolic links, FIFOs or devices; this is checked with ``lstat`` before opening, and the file is opened
  with ``O_NOFOLLOW | O_NONBLOCK`` and checked again with ``fstat`` (a FIFO never blocks, a swapped-in link
  is refused).
* They read only the samples they use: at most ``max_seconds`` (default :data:`MAX_SECONDS`: the 10 s the
  device uses plus the 3 s filter padding of :mod:`edge.signal`) are read, binary signal files by seek and
  read of that byte range, CSV files line by line until enough rows are read; ``meta['truncated']`` records
  the file's own length when the record was cut. At most :data:`MAX_VALUES` samples x signals are held,
  headers are at most :data:`MAX_HEADER_BYTES`, CSV lines at most :data:`MAX_LINE_CHARS` (and the rows
  read at most :data:`MAX_CSV_CHARS`).
* Rates, gains, counts and shapes are checked before anything is allocated: sampling rates finite and in
  (0, :data:`MAX_FS`] Hz, gains finite and positive (0, "uncalibrated", is refused: amplitudes are measured),
  at most :data:`MAX_SIGNALS` signals, MATLAB fields non-negative, NPY headers parsed here (magic, version,
  bounded length, a literal dict with exactly ``descr``/``fortran_order``/``shape``, integer or float dtypes
  only, bounded shape); NPY files are never unpickled and ZIP (``.npz``) files are named as such.
"""

from __future__ import annotations

import ast
import csv
import math
import os
import re
import stat
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, RecordError
from .leads import LEADS8, LEADS12, canonical_lead
from .record import Record

MIN_FS = 100.0
MIN_DURATION_S = 2.0
MAX_FS = 100_000.0  # Hz; a header, a time column or fs= above this is refused
MAX_SECONDS = 13.0  # default read limit: 10 s used (manifest duration_s) + 3 s (edge.signal.PAD_S)
MAX_SIGNALS = 64  # signals of a WFDB record, leads of a CSV/NPY file
MAX_VALUES = 1 << 24  # samples x signals held at once (128 MiB as float64)
MAX_HEADER_BYTES = 64 * 1024  # a WFDB header
MAX_LINE_CHARS = 1 << 20  # one CSV line
MAX_CSV_CHARS = 256 << 20  # the CSV rows read for one record
MAX_NPY_HEADER = 16 * 1024  # the dict of an NPY file (numpy itself writes ~128 bytes)

_WFDB_EXT = {".hea", ".dat", ".mat"}
_CSV_EXT = {".csv", ".txt", ".tsv"}
_NPY_EXT = {".npy"}

__all__ = [
    "read_record",
    "write_wfdb",
    "read_wfdb",
    "read_csv",
    "read_npy",
    "check_fs",
    "patient_meta",
    "MIN_FS",
    "MIN_DURATION_S",
    "MAX_FS",
    "MAX_SECONDS",
    "MAX_SIGNALS",
    "MAX_VALUES",
]


# ----------------------------------------------------------------------------------------------- dispatch


def read_record(
    path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read an ECG record from ``path`` (WFDB, CSV or NPY; see the module docstring) and validate it.

    At most the first ``max_seconds`` of signal are read (the rest of the file is not touched)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext in _WFDB_EXT:
        return read_wfdb(p.with_suffix(".hea"), fs=fs, leads=leads, max_seconds=max_seconds)
    if p.name and _lexists(p.with_name(p.name + ".hea")):  # a record name without extension
        return read_wfdb(p.with_name(p.name + ".hea"), fs=fs, leads=leads, max_seconds=max_seconds)
    if not _lexists(p):
        raise RecordError(f"{p}: no such file")
    if p.is_dir() and not p.is_symlink():
        raise RecordError(f"{p}: is a directory, not a record file")
    if ext in _CSV_EXT:
        return read_csv(p, fs=fs, leads=leads, max_seconds=max_seconds)
    if ext in _NPY_EXT:
        return read_npy(p, fs=fs, leads=leads, max_seconds=max_seconds)
    raise RecordError(
        f"{p}: unknown record format {_q(ext) if ext else '(no extension)'}; "
        f"supported: WFDB (.hea/.dat/.mat), CSV (.csv/.tsv/.txt), NPY (.npy)"
    )


# ----------------------------------------------------------------------------------------------- safe files


def _q(s, n: int = 40) -> str:
    """A short, escaped quotation of text taken from a file, for error messages."""
    s = str(s)
    if len(s) > n:
        return repr(s[:n])[:-1] + f"...{repr(s)[-1]} ({len(s):,} chars)"
    return repr(s)


def _lexists(p: Path) -> bool:
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


def _open_regular(path: Path, where: str, what: str, missing: str | None = None) -> tuple[int, int]:
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
        raise RecordError(f"{where}: {what} {_q(path.name)} is a symbolic link; refused (name the file itself)")
    if not stat.S_ISREG(st.st_mode):
        raise RecordError(f"{where}: {what} {_q(path.name)} is {_kind(st.st_mode)}, not a regular file; refused")
    try:
        fd = os.open(path, _O_READ)
    except OSError as e:
        raise RecordError(f"{where}: unreadable {what} ({_oserr(e)})") from None
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode) or (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino):
            raise RecordError(f"{where}: {what} {_q(path.name)} changed while it was opened; refused")
    except BaseException:
        os.close(fd)
        raise
    return fd, int(st2.st_size)


def _pread(fd: int, offset: int, n: int, where: str) -> bytearray:
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


def _array(buf, dtype, count: int, where: str) -> np.ndarray:
    """``count`` items of ``dtype`` from ``buf``; a file that shrank while it was read is an error, not a crash."""
    dtype = np.dtype(dtype)
    if len(buf) < count * dtype.itemsize:
        raise RecordError(
            f"{where}: the file ended early while it was read ({len(buf)} of {count * dtype.itemsize} bytes)"
        )
    return np.frombuffer(buf, dtype=dtype, count=count)


def _read_small(path: Path, limit: int, where: str, what: str, missing: str | None = None) -> bytes:
    fd, size = _open_regular(path, where, what, missing)
    try:
        if size > limit:
            raise RecordError(f"{where}: {what} is {size:,} bytes, over the {limit // 1024} KiB limit; refused")
        data = _pread(fd, 0, limit + 1, where)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise RecordError(f"{where}: {what} is over the {limit // 1024} KiB limit; refused")
    return bytes(data)


# ----------------------------------------------------------------------------------------------- checks


def check_fs(fs, where: str = "fs", source: str | None = None) -> float:
    """``fs`` as a float if it is a usable sampling rate (finite, positive, at most :data:`MAX_FS`, at least
    :data:`MIN_FS`), else :class:`RecordError`. ``source`` names where the rate came from (None: it was given)."""
    try:
        v = float(fs)
    except (TypeError, ValueError, OverflowError):
        raise RecordError(f"{where}: fs={_q(fs)} was given: a sampling rate must be a number (Hz)") from None
    said = f"the {source} gives {v:g} Hz" if source else f"fs={v:g} Hz was given"
    if not math.isfinite(v):
        raise RecordError(f"{where}: {said}: a sampling rate must be a finite number")
    if v <= 0:
        raise RecordError(f"{where}: {said}: a sampling rate must be positive")
    if v > MAX_FS:
        raise RecordError(f"{where}: {said}: over the maximum of {MAX_FS:g} Hz")
    if v < MIN_FS:
        raise RecordError(f"{where}: sampling rate {v:g} Hz is under the minimum of {MIN_FS:g} Hz")
    return v


def _check_max_seconds(max_seconds) -> float:
    try:
        v = float(max_seconds)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v >= MIN_DURATION_S):
        raise ConfigError(f"max_seconds={max_seconds!r}: must be a number of seconds >= {MIN_DURATION_S:g}")
    return v


def _n_max(fs: float, max_seconds: float) -> int:
    return int(math.ceil(max_seconds * fs - 1e-9))


def _check_values(n: int, n_sig: int, where: str, limit: int = MAX_VALUES) -> None:
    if n * n_sig > limit:
        raise RecordError(
            f"{where}: {n:,} samples x {n_sig} signals is over the {MAX_VALUES:,} values a record may hold; refused"
        )


def _canonical_leads(names: Sequence[str], where: str) -> tuple[str, ...]:
    if len(names) > MAX_SIGNALS:
        raise RecordError(f"{where}: {len(names):,} lead names; at most {MAX_SIGNALS} are supported")
    out: list[str] = []
    unknown: list[str] = []
    for n in names:
        c = canonical_lead(n)
        if c is None:
            unknown.append(str(n).strip())
        else:
            out.append(c)
    if unknown:
        shown = ", ".join(_q(u, 20) for u in unknown[:6]) + (
            f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        )
        raise RecordError(f"{where}: unknown lead name(s) {shown}; known: {', '.join(LEADS12)}")
    dup = sorted(c for c, k in Counter(out).items() if k > 1)
    if dup:
        raise RecordError(f"{where}: duplicate lead(s) {', '.join(dup)}")
    return tuple(out)


def _select(signal: np.ndarray, have: tuple[str, ...], want: Sequence[str] | None, where: str):
    if want is None:
        return signal, have
    want_c = _canonical_leads(want, where)
    missing = [w for w in want_c if w not in have]
    if missing:
        raise RecordError(f"{where}: lead(s) {', '.join(missing)} not in the record (it has {', '.join(have)})")
    idx = [have.index(w) for w in want_c]
    return signal[:, idx], want_c


def _validate(signal: np.ndarray, fs: float, leads: tuple[str, ...], where: str) -> None:
    if signal.ndim != 2 or signal.shape[1] != len(leads):
        raise RecordError(f"{where}: signal shape {signal.shape} does not match {len(leads)} lead name(s)")
    if signal.shape[1] == 0:
        raise RecordError(f"{where}: no leads")
    if not (np.isfinite(fs) and fs >= MIN_FS):
        raise RecordError(f"{where}: sampling rate {fs:g} Hz is under the minimum of {MIN_FS:g} Hz")
    dur = signal.shape[0] / fs
    if dur < MIN_DURATION_S:
        raise RecordError(
            f"{where}: only {dur:.2f} s of signal ({signal.shape[0]} samples at {fs:g} Hz); "
            f"need at least {MIN_DURATION_S:g} s"
        )
    bad = ~np.isfinite(signal)
    if bad.any():
        per = bad.sum(axis=0)
        parts = [f"{leads[j]} ({int(per[j])})" for j in np.flatnonzero(per)]
        raise RecordError(f"{where}: {int(bad.sum())} NaN/Inf sample(s) in lead(s) {', '.join(parts)}")


def _finish(signal, fs, leads, name, meta, where, want) -> Record:
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    signal, leads = _select(signal, leads, want, where)
    _validate(signal, float(fs), leads, where)
    return Record(signal=np.ascontiguousarray(signal), fs=float(fs), leads=tuple(leads), name=name, meta=meta)


def _check_fs(given: float | None, found: float, where: str, source: str) -> None:
    if given is not None and abs(float(given) - found) > 0.01 * found:
        raise RecordError(f"{where}: fs={given:g} Hz was given but the {source} says {found:g} Hz")


def _given(fs, where: str) -> float | None:
    return None if fs is None else check_fs(fs, where)


# ----------------------------------------------------------------------------------------------- WFDB

_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?"
_NAME_TOKEN_RE = re.compile(r"(?P<name>[^\s/]+)(?:/(?P<nseg>[0-9]+))?", re.ASCII)
_FS_RE = re.compile(rf"(?P<fs>{_NUM})(?:/{_NUM})?(?:\({_NUM}\))?", re.ASCII)
_FMT_RE = re.compile(
    r"(?P<fmt>[0-9]{1,4})(?:x(?P<spf>[0-9]{1,6}))?(?::(?P<skew>[0-9]{1,9}))?"
    r"(?:\+(?P<off>[0-9]{1,15}))?",
    re.ASCII,
)
_GAIN_RE = re.compile(rf"(?P<gain>{_NUM})(?:\((?P<base>[+-]?[0-9]{{1,12}})\))?(?:/(?P<units>\S+))?", re.ASCII)
_INT_RE = re.compile(r"[+-]?[0-9]{1,18}", re.ASCII)


def _signal_path(folder: Path, fname: str, where: str) -> Path:
    """The signal file ``fname`` of a header in ``folder``: a plain name there, never a path elsewhere."""
    if (
        not fname
        or fname in (".", "..", "-")
        or "/" in fname
        or "\\" in fname
        or "\0" in fname
        or len(fname.encode("utf-8", "surrogatepass")) > 255
    ):
        raise RecordError(
            f"{where}: signal file {_q(fname)} is not a plain file name in the header's folder; "
            f"refused (signal files must lie next to their header)"
        )
    return folder / fname


def _parse_header(text: str, where: str):
    lines = [ln.strip() for ln in text.splitlines()]
    comments = [ln[1:].strip() for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    if not body:
        raise RecordError(f"{where}: empty WFDB header")
    tokens = body[0].split()
    m = _NAME_TOKEN_RE.fullmatch(tokens[0])
    if not m or len(tokens) < 2 or not re.fullmatch(r"[0-9]+", tokens[1], re.ASCII):
        raise RecordError(f"{where}: malformed WFDB record line {_q(body[0])}")
    if m.group("nseg"):
        raise RecordError(f"{where}: multi-segment WFDB records are not supported")
    if len(tokens[1]) > 6 or not 1 <= int(tokens[1]) <= MAX_SIGNALS:
        raise RecordError(f"{where}: header declares {tokens[1][:12]} signals; 1 to {MAX_SIGNALS} are supported")
    n_sig = int(tokens[1])
    if len(tokens) >= 3:
        fm = _FS_RE.fullmatch(tokens[2])
        if not fm:
            raise RecordError(f"{where}: bad sampling frequency {_q(tokens[2], 20)} in the record line")
        fs = check_fs(float(fm.group("fs")), where, "header")
    else:
        fs = 250.0  # the WFDB default
    n_samp = 0
    if len(tokens) >= 4:
        if not re.fullmatch(r"[0-9]{1,15}", tokens[3], re.ASCII):
            raise RecordError(f"{where}: bad number of samples {_q(tokens[3], 20)} in the record line")
        n_samp = int(tokens[3])
    if len(body) - 1 < n_sig:
        raise RecordError(
            f"{where}: header declares {n_sig} signals but has {len(body) - 1} signal line(s) (truncated header?)"
        )
    sigs = []
    for k, ln in enumerate(body[1 : 1 + n_sig]):
        f = ln.split(None, 8)
        if len(f) < 2:
            raise RecordError(f"{where}: signal line {k + 1} is incomplete: {_q(ln)}")
        fm = _FMT_RE.fullmatch(f[1])
        if not fm:
            raise RecordError(f"{where}: signal line {k + 1}: bad format field {_q(f[1], 20)}")
        gain, base, units = 200.0, None, "mV"
        if len(f) > 2:
            gm = _GAIN_RE.fullmatch(f[2])
            if not gm:
                raise RecordError(f"{where}: signal line {k + 1}: bad gain field {_q(f[2], 20)}")
            gain = float(gm.group("gain"))
            if not math.isfinite(gain) or gain <= 0:
                raise RecordError(
                    f"{where}: signal line {k + 1}: gain {_q(gm.group('gain'), 20)} is not a positive "
                    f"finite number of adu per unit (0, uncalibrated, is refused)"
                )
            base = int(gm.group("base")) if gm.group("base") is not None else None
            units = gm.group("units") or "mV"
        ints = []
        for j in (4, 5, 6):
            if len(f) > j and not _INT_RE.fullmatch(f[j]):
                raise RecordError(f"{where}: signal line {k + 1}: non-integer ADC field {_q(f[j], 20)}")
            ints.append(int(f[j]) if len(f) > j else None)
        adczero, initval, checksum = ints
        desc = f[8].strip() if len(f) > 8 else ""
        sigs.append(
            dict(
                file=f[0],
                fmt=int(fm.group("fmt")),
                spf=int(fm.group("spf") or 1),
                skew=int(fm.group("skew") or 0),
                offset=int(fm.group("off") or 0),
                gain=gain,
                baseline=(adczero or 0) if base is None else base,
                units=units,
                initval=initval,
                checksum=checksum,
                desc=desc,
            )
        )
    return m.group("name"), n_sig, fs, n_samp, sigs, comments, _base_time(tokens[4:6])


_TIME_RE = re.compile(r"([0-9]{1,2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,6})?)?", re.ASCII)
_DATE_RE = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})", re.ASCII)


def _base_time(tokens: list[str]) -> str | None:
    """The acquisition time of a WFDB record line's optional ``base_time [base_date]`` fields
    (``HH:MM:SS``, ``DD/MM/YYYY``) as ``YYYY-MM-DD HH:MM:SS`` (or ``HH:MM:SS`` without a date); None when
    absent or not a valid time (this is metadata: it never refuses the record)."""
    if not tokens:
        return None
    t = _TIME_RE.fullmatch(tokens[0][:20])
    if not t:
        return None
    hh, mm, ss = int(t.group(1)), int(t.group(2)), int(t.group(3) or 0)
    if hh > 23 or mm > 59 or ss > 60:
        return None
    clock = f"{hh:02d}:{mm:02d}:{ss:02d}"
    d = _DATE_RE.fullmatch(tokens[1][:20]) if len(tokens) > 1 else None
    if d and 1 <= int(d.group(1)) <= 31 and 1 <= int(d.group(2)) <= 12:
        return f"{d.group(3)}-{int(d.group(2)):02d}-{int(d.group(1)):02d} {clock}"
    return clock


_MAT_DTYPES = {0: "f8", 1: "f4", 2: "i4", 3: "i2", 4: "u2", 5: "u1"}


def _read_mat_v4(
    path: Path, n_sig: int, n_max: int, where: str, missing: str, budget: int = MAX_VALUES
) -> tuple[np.ndarray, int]:
    """The first ``n_max`` samples of the first matrix of a MATLAB v4 file: ((n, n_sig) array, samples in file).

    Only the 20-byte header and the needed bytes are read."""
    fd, size = _open_regular(path, where, "signal file", missing)
    try:
        head = bytes(_pread(fd, 0, 20, where))
        if len(head) < 20:
            raise RecordError(f"{path}: MATLAB file too short for a v4 header")
        for endian in ("<", ">"):
            mopt, mrows, ncols, imagf, namlen = (int(v) for v in np.frombuffer(head, dtype=endian + "i4"))
            if 0 <= mopt < 5000:
                break
        else:
            raise RecordError(f"{path}: not a MATLAB v4 file (use a v4 .mat as in the CinC 2021 data)")
        m_, o_, p_, t_ = mopt // 1000, (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10
        if m_ not in (0, 1) or o_ != 0 or t_ != 0 or imagf:
            raise RecordError(f"{path}: unsupported MATLAB v4 matrix (type code {mopt})")
        dt = _MAT_DTYPES.get(p_)
        if dt is None:
            raise RecordError(f"{path}: unsupported MATLAB v4 precision code {p_}")
        if mrows < 0 or ncols < 0 or namlen < 0:
            raise RecordError(
                f"{path}: MATLAB v4 header has a negative field (rows {mrows}, columns {ncols}, name length {namlen})"
            )
        dtype = np.dtype((">" if m_ == 1 else "<") + dt)
        start = 20 + namlen
        need = mrows * ncols * dtype.itemsize
        if size - start < need:
            raise RecordError(
                f"{path}: signal file is shorter than its MATLAB header says ({max(0, size - start)} of {need} bytes)"
            )
        if mrows == n_sig:  # column-major (n_sig, n_samples): samples are frame-interleaved
            total = ncols
            n = min(total, n_max)
            _check_values(n, n_sig, where, budget)
            buf = _pread(fd, start, n * n_sig * dtype.itemsize, where)
            return _array(buf, dtype, n * n_sig, where).reshape(n, n_sig), total
        if ncols == n_sig:  # (n_samples, n_sig) column-major: each signal is contiguous
            total = mrows
            n = min(total, n_max)
            _check_values(n, n_sig, where, budget)
            out = np.empty((n, n_sig), dtype=dtype)
            for j in range(n_sig):
                buf = _pread(fd, start + j * mrows * dtype.itemsize, n * dtype.itemsize, where)
                out[:, j] = _array(buf, dtype, n, where)
            return out, total
    finally:
        os.close(fd)
    raise RecordError(f"{where}: {path.name} holds a {mrows}x{ncols} matrix but the header has {n_sig} signals")


def _decode_212(buf: bytes | bytearray, n_values: int) -> np.ndarray:
    b = np.frombuffer(buf, dtype=np.uint8)
    n_pairs = (n_values + 1) // 2
    b = np.concatenate([b, np.zeros(max(0, n_pairs * 3 - b.size), np.uint8)])[: n_pairs * 3]
    b = b.reshape(-1, 3).astype(np.int32)
    out = np.empty(n_pairs * 2, dtype=np.int32)
    out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out[out > 2047] -= 4096
    return out[:n_values]


def _read_signal_file(
    path: Path,
    fmt: int,
    offset: int,
    n_cols: int,
    n_samp: int,
    n_max: int,
    where: str,
    missing: str,
    budget: int = MAX_VALUES,
) -> tuple[np.ndarray, int]:
    """The first ``n_max`` frames of a format 16/212 signal file: ((n, n_cols) digital samples, frames in file).

    The length is checked from the file size; only the needed byte range is read."""
    if fmt not in (16, 212):
        raise RecordError(f"{where}: WFDB signal format {fmt} is not supported (supported: 16, 212, MATLAB v4 .mat)")
    fd, size = _open_regular(path, where, "signal file", missing)
    try:
        avail_bytes = max(0, size - offset)
        avail = avail_bytes // (2 * n_cols) if fmt == 16 else (avail_bytes * 2 // 3) // n_cols
        total = n_samp or avail
        if avail < total:
            raise RecordError(
                f"{where}: signal file {path.name} is shorter than the header says "
                f"({avail} of {total} samples per signal)"
            )
        n = min(total, n_max)
        _check_values(n, n_cols, where, budget)
        if fmt == 16:
            buf = _pread(fd, offset, n * n_cols * 2, where)
            return _array(buf, "<i2", n * n_cols, where).reshape(n, n_cols), total
        buf = _pread(fd, offset, (n * n_cols + 1) // 2 * 3, where)
        return _decode_212(buf, n * n_cols).reshape(n, n_cols), total
    finally:
        os.close(fd)


def read_wfdb(
    header_path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read a WFDB record given its ``.hea`` path (see the module docstring): at most ``max_seconds``."""
    hea = Path(header_path)
    where = str(hea)
    max_seconds = _check_max_seconds(max_seconds)
    fs = _given(fs, where)
    raw = _read_small(hea, MAX_HEADER_BYTES, where, "WFDB header", missing=f"{hea}: no such WFDB header")
    text = raw.decode("utf-8", errors="replace")
    name, n_sig, hfs, n_samp, sigs, comments, acquired = _parse_header(text, where)
    _check_fs(fs, hfs, where, "header")
    for s in sigs:
        if s["spf"] != 1:
            raise RecordError(f"{where}: {s['spf']} samples per frame is not supported (only 1)")
    n_max = _n_max(hfs, max_seconds)
    # group signals by file, in order of appearance (frame-interleaved within a file)
    groups: dict[str, list[int]] = {}
    for k, s in enumerate(sigs):
        groups.setdefault(s["file"], []).append(k)
    digital: dict[int, np.ndarray] = {}  # signal k -> its digital samples (every k of sigs is in one group)
    invalid: dict[int, int | None] = {}  # signal k -> the marker of a missing sample, if its format has one
    totals, lengths, used = set(), set(), 0
    for fname, ks in groups.items():  # all files together hold at most MAX_VALUES samples
        spath = _signal_path(hea.parent, fname, where)
        fmt, off = sigs[ks[0]]["fmt"], sigs[ks[0]]["offset"]
        missing = f"{where}: signal file {repr(fname)[1:-1]} is missing"
        if spath.suffix.lower() == ".mat":
            arr, total = _read_mat_v4(spath, len(ks), n_max, where, missing, MAX_VALUES - used)
            if n_samp and total < n_samp:
                raise RecordError(
                    f"{where}: signal file {fname} is shorter than the header says "
                    f"({total} of {n_samp} samples per signal)"
                )
            if n_samp:
                total = n_samp
                arr = arr[:n_samp]
            marker = -32768 if fmt == 16 else None
        else:
            arr, total = _read_signal_file(spath, fmt, off, len(ks), n_samp, n_max, where, missing, MAX_VALUES - used)
            marker = {16: -32768, 212: -2048}[fmt]
        used += arr.size
        totals.add(total)
        lengths.add(arr.shape[0])
        for j, k in enumerate(ks):
            digital[k] = arr[:, j]
            invalid[k] = marker
    if len(totals) != 1 or len(lengths) != 1:
        raise RecordError(f"{where}: signal files disagree on the number of samples ({sorted(totals)})")
    n = lengths.pop()
    total = totals.pop()
    signal = np.empty((n, n_sig), dtype=np.float64)
    units_out = []
    for k, s in enumerate(sigs):
        d = digital[k].astype(np.float64)
        x = (d - s["baseline"]) / s["gain"]
        if invalid[k] is not None:
            x[digital[k] == invalid[k]] = np.nan
        u = s["units"].lower()
        if u in ("uv", "µv", "microvolt", "microvolts"):
            x /= 1000.0
        elif u in ("v", "volt", "volts"):
            x *= 1000.0
        units_out.append(s["units"])
        signal[:, k] = x
    del digital
    names = [s["desc"] for s in sigs]
    if any(not d for d in names):
        raise RecordError(
            f"{where}: signal line(s) without a lead name "
            f"(lines {', '.join(str(k + 1) for k, d in enumerate(names) if not d)})"
        )
    lead_names = _canonical_leads(names, where)
    parsed = _parse_comments(comments)
    meta = {
        "format": "wfdb",
        "path": str(hea),
        "record_name": name,
        "units": units_out,
        "comment_lines": comments,
        "comments": parsed,
        **patient_meta(parsed),
    }
    if acquired:
        meta["acquired"] = acquired
    if total > n:
        meta["truncated"] = {"read_samples": n, "file_samples": total}
    return _finish(signal, hfs, lead_names, name, meta, where, leads)


def _parse_comments(lines: list[str]) -> dict[str, str]:
    out = {}
    for ln in lines:
        if ":" in ln:
            k, v = ln.split(":", 1)
            if k.strip():
                out[k.strip()] = v.strip()
    return out


# ----------------------------------------------------------------------------------------------- CSV

_TIME_S = {"time", "t", "time_s", "times", "seconds", "sec", "s", "time (s)", "time[s]"}
_TIME_MS = {"time_ms", "ms", "t_ms", "time (ms)", "time[ms]", "milliseconds"}
_CHUNK_ROWS = 4096


_SEX = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}


def patient_meta(comments: dict) -> dict:
    """Age and sex from a WFDB header's comments (``# Age: 63`` / ``# Sex: Male`` as in CinC 2021,
    ``#<age>: 76`` / ``#<sex>: F`` as in LUDB), as optional metadata: ``{"age": int, "sex": "male"|"female"}``
    with only what was found and plausible (age 0-130 years; anything else, e.g. ``NaN`` or ``Unknown``, is
    left out). Bounded: only keys and values of at most 40 characters are looked at; it never raises."""
    out: dict = {}
    if not isinstance(comments, dict):
        return out
    for k, v in comments.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 40 or len(v) > 40:
            continue
        key = k.strip().strip("<>").strip().lower()
        val = v.strip().lower()
        if key == "age" and "age" not in out:
            a = re.fullmatch(r"([0-9]{1,3})(?:\.0+)?", val, re.ASCII)
            if a and int(a.group(1)) <= 130:
                out["age"] = int(a.group(1))
        elif key in ("sex", "gender") and "sex" not in out and val in _SEX:
            out["sex"] = _SEX[val]
    return out


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", "."))
        return True
    except ValueError:
        return False


def _csv_lines(f, where: str):
    """(line number, text) of the non-blank, non-comment lines of a text file, each at most MAX_LINE_CHARS;
    gives up after too many blank or comment lines (a file of empty lines is not read to its end)."""
    lineno = skipped = taken = 0
    while True:
        ln = f.readline(MAX_LINE_CHARS + 1)
        if not ln:
            return
        lineno += 1
        if len(ln) > MAX_LINE_CHARS:
            raise RecordError(f"{where}: line {lineno} is longer than {MAX_LINE_CHARS // (1 << 20)} MiB; refused")
        if ln.strip() and not ln.lstrip().startswith("#"):
            taken += 1
            yield lineno, ln.rstrip("\r\n")
        else:
            skipped += 1
            if skipped > 100_000 + 2 * taken:
                raise RecordError(f"{where}: over {skipped:,} blank or comment lines; refused")


def _row_values(parts: list[str]) -> list[float]:
    try:
        return [float(x) for x in parts]
    except ValueError:  # empty or non-numeric cells are NaN (rejected later, counted per lead)
        out = []
        for x in parts:
            try:
                out.append(float(x))
            except ValueError:
                out.append(math.nan)
        return out


def _parse_rows(rows: list[list[str]]) -> np.ndarray:
    """Rows of cells (all of one width) as a float64 array; empty or non-numeric cells are NaN."""
    try:
        return np.array(rows, dtype=np.float64)  # numbers only: parsed in C
    except ValueError:
        return np.array([_row_values(r) for r in rows], dtype=np.float64)


def read_csv(
    path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read a CSV/TSV record (see the module docstring): at most ``max_seconds``, read line by line."""
    p = Path(path)
    where = str(p)
    max_seconds = _check_max_seconds(max_seconds)
    fs = _given(fs, where)
    fd, _ = _open_regular(p, where, "CSV file", missing=f"{p}: no such file")
    with open(fd, encoding="utf-8-sig", errors="replace", newline=None, closefd=True) as f:
        lines = _csv_lines(f, where)
        try:
            _, first = next(lines)
        except StopIteration:
            raise RecordError(f"{p}: empty CSV file") from None
        delim = max(("\t", ";", ","), key=lambda d: first.count(d))
        if first.count(delim) == 0:
            delim = ","  # single column
        try:
            head = [c.strip().strip('"') for c in next(csv.reader([first], delimiter=delim))]
        except (csv.Error, StopIteration) as e:
            raise RecordError(f"{p}: malformed CSV header row ({_q(e, 60)})") from None
        has_header = not all(_is_number(c) for c in head if c)
        if has_header and len(head) > MAX_SIGNALS + 1:
            raise RecordError(
                f"{p}: header row has {len(head):,} columns; at most {MAX_SIGNALS} leads "
                f"(and a time column) are supported"
            )
        pending = [] if has_header else [first]
        for _, ln in lines:
            pending.append(ln)
            if len(pending) >= 5:
                break
        decimal_comma = delim == ";" and any("," in r for r in pending[:5])
        t_col = head[0].lower() if has_header else ""
        timed = t_col in _TIME_S or t_col in _TIME_MS
        if has_header:
            if not timed and fs is None:
                raise RecordError(f"{p}: sampling rate unknown; give fs (--fs) or add a 'time' column in seconds")
            lead_names = _canonical_leads(head[1:] if timed else head, where)
        elif fs is None:
            raise RecordError(f"{where}: sampling rate unknown; give fs (--fs)")
        # rows to read: max_seconds at the given rate, else (time column) until max_seconds of time have passed
        cap = _n_max(fs, max_seconds) if fs is not None else _n_max(MAX_FS, max_seconds) + 1
        t_scale = 1000.0 if t_col in _TIME_MS else 1.0
        chunks, rows, n, width, t0, rows_per_chunk, more = [], [], 0, None, None, 1, False
        chars = chunk_chars = 0

        def source():
            yield from pending
            for _, ln in lines:
                yield ln

        for ln in source():
            if n >= cap:
                more = True
                break
            if decimal_comma:
                ln = ln.replace(",", ".")
            ln = ln.split("#", 1)[0].strip(" \r\n")  # as numpy.genfromtxt: inline comments, blank rows
            if not ln:
                continue
            chars += len(ln)
            chunk_chars += len(ln)
            if chars > MAX_CSV_CHARS:
                raise RecordError(f"{p}: over {MAX_CSV_CHARS >> 20} MiB of text in the rows read; refused")
            parts = ln.split(delim)
            if width is None:
                width = len(parts)
                if has_header and width != len(head):
                    raise RecordError(f"{p}: header has {len(head)} column(s) but rows have {width}")
                rows_per_chunk = max(1, min(_CHUNK_ROWS, (1 << 18) // width))
            elif len(parts) != width:
                raise RecordError(
                    f"{p}: rows have inconsistent numbers of columns "
                    f"(row {n + 1} has {len(parts)}, the first row {width})"
                )
            if timed and fs is None:
                t = _row_values(parts[:1])[0] / t_scale
                if t0 is None:
                    t0 = t
                    if not math.isfinite(t0):
                        raise RecordError(
                            f"{p}: time column {_q(head[0], 20)} is not increasing (first value {_q(parts[0], 20)})"
                        )
                elif t - t0 >= max_seconds:
                    more = True
                    break
            rows.append(parts)
            n += 1
            if len(rows) == rows_per_chunk or chunk_chars > 1 << 22:  # a chunk: 2^18 cells or 4 MiB of text
                _check_values(n, width, where)
                chunks.append(_parse_rows(rows))
                rows, chunk_chars = [], 0
        if n == 0:
            raise RecordError(f"{p}: no samples in CSV file")
        assert width is not None  # the first of the n > 0 rows set it
        _check_values(n, width, where)
        if rows:
            chunks.append(_parse_rows(rows))
        del rows
    data = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    del chunks
    meta: dict[str, Any] = {"format": "csv", "path": where}
    if more:
        meta["truncated"] = {"read_samples": n, "file_samples": None}  # the rest of the file was not read
    if not has_header:
        return _named_array(data, fs, leads, p.stem, meta, where, max_seconds)
    found_fs = None
    if timed:
        times = data[:, 0] / t_scale
        with np.errstate(all="ignore"):
            dt = np.diff(times)
            if times.size < 2 or not np.all(np.isfinite(dt)) or np.median(dt) <= 0:
                raise RecordError(f"{p}: time column {_q(head[0], 20)} is not increasing")
            found_fs = 1.0 / float(np.median(dt))
        found_fs = check_fs(found_fs, where, "time column")
        meta["time_column"] = head[0]
        data = data[:, 1:]
    if found_fs is not None:
        _check_fs(fs, found_fs, where, "time column")
        use_fs = float(fs) if fs is not None else found_fs
    else:
        assert fs is not None  # without a time column the rate was required above
        use_fs = float(fs)
    keep = _n_max(use_fs, max_seconds)
    if data.shape[0] > keep:
        meta["truncated"] = {"read_samples": keep, "file_samples": None if more else int(data.shape[0])}
        data = data[:keep]
    elif more:
        meta["truncated"]["read_samples"] = int(data.shape[0])
    return _finish(data, use_fs, lead_names, p.stem, meta, where, leads)


# ----------------------------------------------------------------------------------------------- NPY


def _array_layout(shape: tuple[int, ...], fs, leads, where) -> tuple[bool, tuple[str, ...]]:
    """(transposed, lead names) of an array of ``shape``: samples x leads, or leads x samples."""
    if len(shape) != 2:
        raise RecordError(f"{where}: expected a 2-D array (samples x leads), got shape {tuple(shape)}")
    if fs is None:
        raise RecordError(f"{where}: sampling rate unknown; give fs (--fs)")
    n_want = len(leads) if leads is not None else None
    rows, cols = (int(v) for v in shape)
    lead_counts = (n_want,) if n_want else (12, 8)
    transposed = rows in lead_counts and cols not in lead_counts and cols > rows
    shown = (cols, rows) if transposed else (rows, cols)
    n_leads = shown[1]
    if leads is not None:
        if n_leads != len(leads):
            raise RecordError(
                f"{where}: array has {n_leads} column(s) but {len(leads)} lead name(s) were given (shape {shown})"
            )
        return transposed, _canonical_leads(leads, where)
    if n_leads == 12:
        return transposed, LEADS12
    if n_leads == 8:
        return transposed, LEADS8
    raise RecordError(
        f"{where}: array of shape {shown} has {n_leads} column(s); name them with "
        f"leads (--leads), since only 12 (LEADS12) or 8 (I, II, V1-V6) columns have a default"
    )


def _named_array(arr: np.ndarray, fs, leads, name, meta, where, max_seconds: float = MAX_SECONDS) -> Record:
    transposed, names = _array_layout(arr.shape, fs, leads, where)
    if transposed:
        arr = arr.T
        meta["transposed"] = True
    keep = _n_max(float(fs), max_seconds)
    if arr.shape[0] > keep:
        meta["truncated"] = {"read_samples": keep, "file_samples": None if "truncated" in meta else int(arr.shape[0])}
        arr = arr[:keep]
    return _finish(arr, fs, names, name, meta, where, None)


_NPY_MAGIC = b"\x93NUMPY"
_NPY_DESCR_RE = re.compile(r"[<>|=]?[fiu][1248]", re.ASCII)


def _parse_npy_header(b: bytes, where: str) -> tuple[np.dtype, bool, tuple[int, ...], int]:
    """(dtype, fortran_order, shape, data offset) from the first bytes of an NPY file, parsed strictly."""

    def bad(why):
        return RecordError(f"{where}: unreadable NPY file ({why})")

    if b[:4] == b"PK\x03\x04":
        raise bad("it is a ZIP archive, such as an .npz; save a single array with numpy.save")
    if len(b) < 10 or b[:6] != _NPY_MAGIC:
        raise bad("no NPY magic string: not an NPY file")
    major, minor = b[6], b[7]
    if major == 1:
        hlen, start = int.from_bytes(b[8:10], "little"), 10
    elif major in (2, 3) and len(b) >= 12:
        hlen, start = int.from_bytes(b[8:12], "little"), 12
    else:
        raise bad(f"unsupported NPY format version {major}.{minor}")
    if hlen > MAX_NPY_HEADER:
        raise bad(f"header of {hlen:,} bytes, over the {MAX_NPY_HEADER // 1024} KiB limit")
    if len(b) < start + hlen:
        raise bad("the file ends inside its header")
    try:
        text = bytes(b[start : start + hlen]).decode("utf-8" if major == 3 else "latin1")
    except UnicodeDecodeError:
        raise bad("header is not valid text") from None
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")) or not re.fullmatch(r"[ -~]*", text):
        raise bad("header is not a plain dictionary")
    try:
        d = ast.literal_eval(text)  # literals only: no names, calls or attribute access are evaluated
    except Exception as e:  # noqa: BLE001 - SyntaxError, ValueError, MemoryError, RecursionError...
        raise bad(f"malformed header: {type(e).__name__}") from None
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise bad("header must be a dictionary of exactly 'descr', 'fortran_order' and 'shape'")
    descr, fortran, shape = d["descr"], d["fortran_order"], d["shape"]
    if not isinstance(descr, str) or not _NPY_DESCR_RE.fullmatch(descr):
        raise RecordError(
            f"{where}: NPY array has unsupported dtype {_q(descr, 30)} (integer or floating-point numbers only)"
        )
    try:
        dtype = np.dtype(descr)
    except TypeError:
        raise RecordError(f"{where}: NPY array has unsupported dtype {_q(descr, 30)}") from None
    if type(fortran) is not bool:
        raise bad("'fortran_order' is not True or False")
    if type(shape) is not tuple or len(shape) > 32 or any(type(v) is not int or v < 0 or v > 1 << 40 for v in shape):
        raise bad(f"bad shape {_q(shape, 40)}")
    return dtype, fortran, shape, start + hlen


def read_npy(
    path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read an NPY record (see the module docstring): the header is parsed here, never unpickled, and only
    the first ``max_seconds`` of samples are read."""
    p = Path(path)
    where = str(p)
    max_seconds = _check_max_seconds(max_seconds)
    fs = _given(fs, where)
    fd, size = _open_regular(p, where, "NPY file", missing=f"{p}: no such file")
    try:
        dtype, fortran, shape, start = _parse_npy_header(bytes(_pread(fd, 0, 12 + MAX_NPY_HEADER, where)), where)
        n_items = math.prod(shape)
        if size - start < n_items * dtype.itemsize:
            raise RecordError(
                f"{where}: unreadable NPY file (shorter than its header says: "
                f"{max(0, size - start):,} of {n_items * dtype.itemsize:,} bytes)"
            )
        transposed, names = _array_layout(shape, fs, leads, where)
        assert fs is not None  # _array_layout refused a missing rate
        rows, cols = shape
        n_samp, n_lead = (cols, rows) if transposed else (rows, cols)
        n = min(n_samp, _n_max(fs, max_seconds))
        _check_values(n, n_lead, where)
        isz = dtype.itemsize
        if transposed == fortran:  # the first n samples are contiguous: (n, n_lead) in C order
            arr = _array(_pread(fd, start, n * n_lead * isz, where), dtype, n * n_lead, where).reshape(n, n_lead)
        else:  # each lead is contiguous over the whole file: one read per lead
            stride = n_samp * isz
            arr = np.empty((n, n_lead), dtype=dtype)
            for j in range(n_lead):
                arr[:, j] = _array(_pread(fd, start + j * stride, n * isz, where), dtype, n, where)
    finally:
        os.close(fd)
    meta: dict[str, Any] = {"format": "npy", "path": str(p)}
    if transposed:
        meta["transposed"] = True
    if n < n_samp:
        meta["truncated"] = {"read_samples": n, "file_samples": n_samp}
    with np.errstate(all="ignore"):  # float16/float32 -> float64; non-finite values are refused in _finish
        arr = np.asarray(arr, dtype=np.float64)
    return _finish(arr, fs, names, p.stem, meta, where, None)


# ----------------------------------------------------------------------------------------------- writing

_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def write_wfdb(record: Record, directory, name: str, *, gain: float | None = None) -> Path:
    """Write ``record`` as a format-16 WFDB record ``<directory>/<name>.hea`` + ``.dat``; return the header path.

    The gain is 1000 adu/mV (1 uV resolution) unless the signal would overflow 16 bits, in which case the
    largest power-of-ten-friendly gain that fits is used; baseline 0, units mV. Lead names are written as the
    signal descriptions. ``meta['comments']`` (a dict) is written as ``# key: value`` comment lines.
    """
    if not _NAME_RE.match(name):
        raise RecordError(f"bad WFDB record name {name!r}: use letters, digits, '_' and '-'")
    x = np.asarray(record.signal, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(record.leads):
        raise RecordError(f"{name}: signal shape {x.shape} does not match {len(record.leads)} leads")
    if not np.all(np.isfinite(x)):
        raise RecordError(f"{name}: cannot write NaN/Inf samples")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if gain is None:
        gain = 1000.0
        if peak * gain > 32000:
            gain = 10 ** math.floor(math.log10(32000.0 / peak))
    if peak * gain > 32767:
        raise RecordError(f"{name}: gain {gain:g} overflows 16 bits (peak {peak:g} mV)")
    d = np.round(x * gain).astype(np.int16)  # -32768 never produced: it marks invalid samples
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    dat = out / f"{name}.dat"
    d.astype("<i2").tofile(dat)
    fs = float(record.fs)
    fs_s = f"{fs:g}" if fs != int(fs) else str(int(fs))
    lines = [f"{name} {x.shape[1]} {fs_s} {x.shape[0]}"]
    for j, lead in enumerate(record.leads):
        col = d[:, j].astype(np.int64)
        checksum = int(((int(col.sum()) + 32768) % 65536) - 32768)
        init = int(col[0]) if col.size else 0
        lines.append(f"{name}.dat 16 {gain:g}(0)/mV 16 0 {init} {checksum} 0 {lead}")
    comments = record.meta.get("comments") if isinstance(record.meta, dict) else None
    if isinstance(comments, dict):
        for k, v in comments.items():
            lines.append(f"# {k}: {v}".replace("\n", " "))
    hea = out / f"{name}.hea"
    hea.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return hea
