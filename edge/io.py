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
  go into ``meta['comments']`` (a dict) and ``meta['comment_lines']``. If ``fs`` is given it must agree
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
"""
from __future__ import annotations

import csv
import io as _io
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import RecordError
from .leads import LEADS8, LEADS12, canonical_lead
from .record import Record

MIN_FS = 100.0
MIN_DURATION_S = 2.0

_WFDB_EXT = {".hea", ".dat", ".mat"}
_CSV_EXT = {".csv", ".txt", ".tsv"}
_NPY_EXT = {".npy"}

__all__ = ["read_record", "write_wfdb", "read_wfdb", "read_csv", "read_npy", "MIN_FS", "MIN_DURATION_S"]


# ----------------------------------------------------------------------------------------------- dispatch

def read_record(path, fs: float | None = None, leads: Sequence[str] | None = None) -> Record:
    """Read an ECG record from ``path`` (WFDB, CSV or NPY; see the module docstring) and validate it."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext in _WFDB_EXT:
        return read_wfdb(p.with_suffix(".hea"), fs=fs, leads=leads)
    if p.with_name(p.name + ".hea").exists():  # a record name without extension
        return read_wfdb(p.with_name(p.name + ".hea"), fs=fs, leads=leads)
    if not p.exists():
        raise RecordError(f"{p}: no such file")
    if p.is_dir():
        raise RecordError(f"{p}: is a directory, not a record file")
    if ext in _CSV_EXT:
        return read_csv(p, fs=fs, leads=leads)
    if ext in _NPY_EXT:
        return read_npy(p, fs=fs, leads=leads)
    raise RecordError(f"{p}: unknown record format {ext or '(no extension)'!r}; "
                      f"supported: WFDB (.hea/.dat/.mat), CSV (.csv/.tsv/.txt), NPY (.npy)")


# ----------------------------------------------------------------------------------------------- checks

def _canonical_leads(names: Sequence[str], where: str) -> tuple[str, ...]:
    out, unknown = [], []
    for n in names:
        c = canonical_lead(n)
        if c is None:
            unknown.append(str(n).strip())
        out.append(c)
    if unknown:
        raise RecordError(f"{where}: unknown lead name(s) {', '.join(repr(u) for u in unknown)}; "
                          f"known: {', '.join(LEADS12)}")
    dup = sorted({c for c in out if out.count(c) > 1})
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
        raise RecordError(f"{where}: only {dur:.2f} s of signal ({signal.shape[0]} samples at {fs:g} Hz); "
                          f"need at least {MIN_DURATION_S:g} s")
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


# ----------------------------------------------------------------------------------------------- WFDB

_REC_RE = re.compile(r"^(?P<name>[^\s/]+)(?:/(?P<nseg>\d+))?\s+(?P<nsig>\d+)"
                     r"(?:\s+(?P<fs>[0-9.eE+-]+)(?:/[0-9.eE+-]+)?(?:\([0-9.eE+-]+\))?"
                     r"(?:\s+(?P<nsamp>\d+))?)?")
_FMT_RE = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<off>\d+))?$")
_GAIN_RE = re.compile(r"^(?P<gain>[0-9.eE+-]+)(?:\((?P<base>-?\d+)\))?(?:/(?P<units>\S+))?$")


def _parse_header(text: str, where: str):
    lines = [ln.strip() for ln in text.splitlines()]
    comments = [ln[1:].strip() for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if ln and not ln.startswith("#")]
    if not body:
        raise RecordError(f"{where}: empty WFDB header")
    m = _REC_RE.match(body[0])
    if not m:
        raise RecordError(f"{where}: malformed WFDB record line {body[0]!r}")
    if m.group("nseg"):
        raise RecordError(f"{where}: multi-segment WFDB records are not supported")
    n_sig = int(m.group("nsig"))
    try:
        fs = float(m.group("fs")) if m.group("fs") else 250.0
    except ValueError:
        raise RecordError(f"{where}: bad sampling frequency in {body[0]!r}") from None
    n_samp = int(m.group("nsamp")) if m.group("nsamp") else 0
    tokens = body[0].split()
    if len(tokens) >= 4 and not tokens[3].isdigit():
        raise RecordError(f"{where}: bad number of samples {tokens[3]!r} in record line {body[0]!r}")
    if n_sig < 1:
        raise RecordError(f"{where}: header declares {n_sig} signals")
    if len(body) - 1 < n_sig:
        raise RecordError(f"{where}: header declares {n_sig} signals but has {len(body) - 1} signal line(s) "
                          f"(truncated header?)")
    sigs = []
    for k, ln in enumerate(body[1:1 + n_sig]):
        f = ln.split(None, 8)
        if len(f) < 2:
            raise RecordError(f"{where}: signal line {k + 1} is incomplete: {ln!r}")
        fm = _FMT_RE.match(f[1])
        if not fm:
            raise RecordError(f"{where}: signal line {k + 1}: bad format field {f[1]!r}")
        gain, base, units = 200.0, None, "mV"
        if len(f) > 2:
            gm = _GAIN_RE.match(f[2])
            if not gm:
                raise RecordError(f"{where}: signal line {k + 1}: bad gain field {f[2]!r}")
            try:
                gain = float(gm.group("gain")) or 200.0
            except ValueError:
                raise RecordError(f"{where}: signal line {k + 1}: bad gain {f[2]!r}") from None
            base = int(gm.group("base")) if gm.group("base") is not None else None
            units = gm.group("units") or "mV"
        try:
            adczero = int(f[4]) if len(f) > 4 else 0
            initval = int(f[5]) if len(f) > 5 else None
            checksum = int(f[6]) if len(f) > 6 else None
        except ValueError:
            raise RecordError(f"{where}: signal line {k + 1}: non-integer ADC field in {ln!r}") from None
        desc = f[8].strip() if len(f) > 8 else ""
        sigs.append(dict(file=f[0], fmt=int(fm.group("fmt")), spf=int(fm.group("spf") or 1),
                         skew=int(fm.group("skew") or 0), offset=int(fm.group("off") or 0),
                         gain=gain, baseline=adczero if base is None else base, units=units,
                         initval=initval, checksum=checksum, desc=desc))
    return m.group("name"), n_sig, fs, n_samp, sigs, comments


def _read_mat_v4(path: Path, n_sig: int, where: str) -> np.ndarray:
    """Read the first matrix of a MATLAB v4 file; returns (n_samples, n_sig) int16/float array."""
    raw = path.read_bytes()
    if len(raw) < 20:
        raise RecordError(f"{path}: MATLAB file too short for a v4 header")
    for endian in ("<", ">"):
        mopt, mrows, ncols, imagf, namlen = np.frombuffer(raw[:20], dtype=endian + "i4")
        if 0 <= mopt < 5000:
            break
    else:
        raise RecordError(f"{path}: not a MATLAB v4 file (use a v4 .mat as in the CinC 2021 data)")
    m_, o_, p_, t_ = mopt // 1000, (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10
    if m_ not in (0, 1) or o_ != 0 or t_ != 0 or imagf:
        raise RecordError(f"{path}: unsupported MATLAB v4 matrix (type code {mopt})")
    dt = {0: "f8", 1: "f4", 2: "i4", 3: "i2", 4: "u2", 5: "u1"}.get(p_)
    if dt is None:
        raise RecordError(f"{path}: unsupported MATLAB v4 precision code {p_}")
    dtype = np.dtype((">" if m_ == 1 else "<") + dt)
    start = 20 + int(namlen)
    need = int(mrows) * int(ncols) * dtype.itemsize
    if len(raw) - start < need:
        raise RecordError(f"{path}: signal file is shorter than its MATLAB header says "
                          f"({len(raw) - start} of {need} bytes)")
    data = np.frombuffer(raw, dtype=dtype, count=int(mrows) * int(ncols), offset=start)
    if mrows == n_sig:  # column-major (n_sig, n_samples): samples are frame-interleaved
        return data.reshape(int(ncols), int(mrows))
    if ncols == n_sig:
        return data.reshape(int(ncols), int(mrows)).T
    raise RecordError(f"{where}: {path.name} holds a {mrows}x{ncols} matrix but the header has {n_sig} signals")


def _decode_212(buf: bytes, n_values: int) -> np.ndarray:
    b = np.frombuffer(buf, dtype=np.uint8)
    n_pairs = (n_values + 1) // 2
    b = np.concatenate([b, np.zeros(max(0, n_pairs * 3 - b.size), np.uint8)])[: n_pairs * 3]
    b = b.reshape(-1, 3).astype(np.int32)
    out = np.empty(n_pairs * 2, dtype=np.int32)
    out[0::2] = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
    out[1::2] = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
    out[out > 2047] -= 4096
    return out[:n_values]


def _read_signal_file(path: Path, fmt: int, offset: int, n_cols: int, n_samp: int, where: str) -> np.ndarray:
    """Return (n_samples, n_cols) digital samples (int) and the invalid-sample marker."""
    if not path.exists():
        raise RecordError(f"{where}: signal file {path.name} is missing")
    try:
        raw = path.read_bytes()[offset:]
    except OSError as e:
        raise RecordError(f"{path}: unreadable signal file ({e.strerror or e})") from None
    if fmt == 16:
        avail = len(raw) // (2 * n_cols)
        if n_samp == 0:
            n_samp = avail
        if avail < n_samp:
            raise RecordError(f"{where}: signal file {path.name} is shorter than the header says "
                              f"({avail} of {n_samp} samples per signal)")
        return np.frombuffer(raw, dtype="<i2", count=n_samp * n_cols).reshape(n_samp, n_cols)
    if fmt == 212:
        avail = (len(raw) * 2 // 3) // n_cols
        if n_samp == 0:
            n_samp = avail
        if avail < n_samp:
            raise RecordError(f"{where}: signal file {path.name} is shorter than the header says "
                              f"({avail} of {n_samp} samples per signal)")
        return _decode_212(raw, n_samp * n_cols).reshape(n_samp, n_cols)
    raise RecordError(f"{where}: WFDB signal format {fmt} is not supported (supported: 16, 212, MATLAB v4 .mat)")


def read_wfdb(header_path, fs: float | None = None, leads: Sequence[str] | None = None) -> Record:
    """Read a WFDB record given its ``.hea`` path (see the module docstring)."""
    hea = Path(header_path)
    if not hea.exists():
        raise RecordError(f"{hea}: no such WFDB header")
    try:
        text = hea.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise RecordError(f"{hea}: unreadable header ({e.strerror or e})") from None
    where = str(hea)
    name, n_sig, hfs, n_samp, sigs, comments = _parse_header(text, where)
    _check_fs(fs, hfs, where, "header")
    for s in sigs:
        if s["spf"] != 1:
            raise RecordError(f"{where}: {s['spf']} samples per frame is not supported (only 1)")
    # group signals by file, in order of appearance (frame-interleaved within a file)
    groups: dict[str, list[int]] = {}
    for k, s in enumerate(sigs):
        groups.setdefault(s["file"], []).append(k)
    digital = [None] * n_sig
    invalid = [None] * n_sig
    lengths = set()
    for fname, ks in groups.items():
        spath = hea.parent / fname
        fmt, off = sigs[ks[0]]["fmt"], sigs[ks[0]]["offset"]
        if spath.suffix.lower() == ".mat":
            if not spath.exists():
                raise RecordError(f"{where}: signal file {fname} is missing")
            arr = _read_mat_v4(spath, len(ks), where)
            if n_samp and arr.shape[0] < n_samp:
                raise RecordError(f"{where}: signal file {fname} is shorter than the header says "
                                  f"({arr.shape[0]} of {n_samp} samples per signal)")
            if n_samp:
                arr = arr[:n_samp]
            marker = -32768 if fmt == 16 else None
        else:
            arr = _read_signal_file(spath, fmt, off, len(ks), n_samp, where)
            marker = {16: -32768, 212: -2048}[fmt]
        lengths.add(arr.shape[0])
        for j, k in enumerate(ks):
            digital[k] = arr[:, j]
            invalid[k] = marker
    if len(lengths) != 1:
        raise RecordError(f"{where}: signal files disagree on the number of samples ({sorted(lengths)})")
    n = lengths.pop()
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
    names = [s["desc"] for s in sigs]
    if any(not d for d in names):
        raise RecordError(f"{where}: signal line(s) without a lead name "
                          f"(lines {', '.join(str(k + 1) for k, d in enumerate(names) if not d)})")
    lead_names = _canonical_leads(names, where)
    meta = {"format": "wfdb", "path": str(hea), "record_name": name, "units": units_out,
            "comment_lines": comments, "comments": _parse_comments(comments)}
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


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", "."))
        return True
    except ValueError:
        return False


def read_csv(path, fs: float | None = None, leads: Sequence[str] | None = None) -> Record:
    """Read a CSV/TSV record (see the module docstring)."""
    p = Path(path)
    where = str(p)
    try:
        text = p.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise RecordError(f"{p}: unreadable file ({e.strerror or e})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise RecordError(f"{p}: empty CSV file")
    first = lines[0]
    delim = max(("\t", ";", ","), key=lambda d: first.count(d))
    if first.count(delim) == 0:
        delim = ","  # single column
    head = [c.strip().strip('"') for c in next(csv.reader([first], delimiter=delim))]
    has_header = not all(_is_number(c) for c in head if c)
    rows = lines[1:] if has_header else lines
    decimal_comma = delim == ";" and any("," in r for r in rows[:5])
    body = "\n".join(rows)
    if decimal_comma:
        body = body.replace(",", ".")
    ncol = len(head)
    try:
        with np.errstate(all="ignore"):
            data = np.genfromtxt(_io.StringIO(body), delimiter=delim, dtype=np.float64, ndmin=2,
                                 invalid_raise=True, filling_values=np.nan, autostrip=True)
    except ValueError as e:
        msg = str(e).strip().splitlines()
        raise RecordError(f"{p}: rows have inconsistent numbers of columns "
                          f"({msg[-1].strip() if msg else 'parse error'})") from None
    if data.size == 0:
        raise RecordError(f"{p}: no samples in CSV file")
    if data.shape[1] != ncol:
        raise RecordError(f"{p}: header has {ncol} column(s) but rows have {data.shape[1]}")
    meta = {"format": "csv", "path": where}
    if not has_header:
        return _named_array(data, fs, leads, p.stem, meta, where)
    t_col = head[0].lower()
    found_fs = None
    if t_col in _TIME_S or t_col in _TIME_MS:
        t = data[:, 0] / (1000.0 if t_col in _TIME_MS else 1.0)
        dt = np.diff(t)
        if t.size < 2 or not np.all(np.isfinite(dt)) or np.median(dt) <= 0:
            raise RecordError(f"{p}: time column {head[0]!r} is not increasing")
        found_fs = 1.0 / float(np.median(dt))
        meta["time_column"] = head[0]
        data, head = data[:, 1:], head[1:]
    if found_fs is not None:
        _check_fs(fs, found_fs, where, "time column")
        use_fs = float(fs) if fs is not None else found_fs
    elif fs is None:
        raise RecordError(f"{p}: sampling rate unknown; give fs (--fs) or add a 'time' column in seconds")
    else:
        use_fs = float(fs)
    lead_names = _canonical_leads(head, where)
    return _finish(data, use_fs, lead_names, p.stem, meta, where, leads)


# ----------------------------------------------------------------------------------------------- NPY

def _named_array(arr: np.ndarray, fs, leads, name, meta, where) -> Record:
    if arr.ndim != 2:
        raise RecordError(f"{where}: expected a 2-D array (samples x leads), got shape {arr.shape}")
    if fs is None:
        raise RecordError(f"{where}: sampling rate unknown; give fs (--fs)")
    n_want = len(leads) if leads is not None else None
    rows, cols = arr.shape
    lead_counts = (n_want,) if n_want else (12, 8)
    if rows in lead_counts and cols not in lead_counts and cols > rows:
        arr = arr.T
        meta["transposed"] = True
    if leads is not None:
        if arr.shape[1] != len(leads):
            raise RecordError(f"{where}: array has {arr.shape[1]} column(s) but {len(leads)} lead name(s) "
                              f"were given (shape {arr.shape})")
        names = _canonical_leads(leads, where)
    elif arr.shape[1] == 12:
        names = LEADS12
    elif arr.shape[1] == 8:
        names = LEADS8
    else:
        raise RecordError(f"{where}: array of shape {arr.shape} has {arr.shape[1]} column(s); name them with "
                          f"leads (--leads), since only 12 (LEADS12) or 8 (I, II, V1-V6) columns have a default")
    return _finish(arr, fs, names, name, meta, where, None)


def read_npy(path, fs: float | None = None, leads: Sequence[str] | None = None) -> Record:
    """Read an NPY record (see the module docstring)."""
    p = Path(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise RecordError(f"{p}: unreadable NPY file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise RecordError(f"{p}: NPY array has non-numeric dtype {arr.dtype}")
    return _named_array(np.asarray(arr, dtype=np.float64), fs, leads, p.stem, {"format": "npy", "path": str(p)},
                        str(p))


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
