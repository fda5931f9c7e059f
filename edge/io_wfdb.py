"""WFDB records: the reader (:func:`read_wfdb`, through :func:`edge.io.read_record`) and the format-16 writer
(:func:`write_wfdb`, what ``--save`` keeps).

The header (``.hea``) names one or more signal files in its own folder: format 16 (little-endian int16) or 212
(packed 12-bit pairs), or MATLAB v4 ``.mat`` files as distributed by the PhysioNet/CinC Challenge 2021
(``16x1+24``: an int16 matrix of n_sig rows and n_samples columns, stored column-major after a 24-byte v4
header, i.e. frame-interleaved like format 16). One sample per frame per signal. Physical value =
(digital - baseline) / gain; units of uV or V are converted to mV. Invalid samples (-32768 in format 16, -2048
in format 212) become NaN and are then rejected like any other NaN. Header comments ``# Key: value`` go into
``meta['comments']`` (a dict) and ``meta['comment_lines']``; age and sex found there go into ``meta['age']``
(int) and ``meta['sex']`` (``male``/``female``), and the record line's base time and date into
``meta['acquired']`` (all optional: :func:`patient_meta`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomicio import atomic_path, atomic_write
from .errors import RecordError
from .io_checks import canonical_leads, check_fs, check_fs_agrees, check_values, finish, max_samples, quote, reader_args
from .io_files import array_from, open_regular, pread, read_small
from .io_limits import MAX_HEADER_BYTES, MAX_SECONDS, MAX_SIGNALS, MAX_VALUES
from .record import Record

__all__ = ["read_wfdb", "write_wfdb", "patient_meta"]

_NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?"
_NAME_TOKEN_RE = re.compile(r"(?P<name>[^\s/]+)(?:/(?P<nseg>[0-9]+))?", re.ASCII)
_FS_RE = re.compile(rf"(?P<fs>{_NUM})(?:/{_NUM})?(?:\({_NUM}\))?", re.ASCII)
_FMT_RE = re.compile(
    r"(?P<fmt>[0-9]{1,4})(?:x(?P<spf>[0-9]{1,6}))?(?::(?P<skew>[0-9]{1,9}))?"
    r"(?:\+(?P<off>[0-9]{1,15}))?",
    re.ASCII,
)
MIN_GAIN, MAX_GAIN = 1e-6, 1e12  # adu per unit: 1e-300 made samples of 1e300 (overflow in every later step)
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
            f"{where}: signal file {quote(fname)} is not a plain file name in the header's folder; "
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
        raise RecordError(f"{where}: malformed WFDB record line {quote(body[0])}")
    if m.group("nseg"):
        raise RecordError(f"{where}: multi-segment WFDB records are not supported")
    if len(tokens[1]) > 6 or not 1 <= int(tokens[1]) <= MAX_SIGNALS:
        raise RecordError(f"{where}: header declares {tokens[1][:12]} signals; 1 to {MAX_SIGNALS} are supported")
    n_sig = int(tokens[1])
    if len(tokens) >= 3:
        fm = _FS_RE.fullmatch(tokens[2])
        if not fm:
            raise RecordError(f"{where}: bad sampling frequency {quote(tokens[2], 20)} in the record line")
        fs = check_fs(float(fm.group("fs")), where, "header")
    else:
        fs = 250.0  # the WFDB default
    n_samp = 0
    if len(tokens) >= 4:
        if not re.fullmatch(r"[0-9]{1,15}", tokens[3], re.ASCII):
            raise RecordError(f"{where}: bad number of samples {quote(tokens[3], 20)} in the record line")
        n_samp = int(tokens[3])
    if len(body) - 1 < n_sig:
        raise RecordError(
            f"{where}: header declares {n_sig} signals but has {len(body) - 1} signal line(s) (truncated header?)"
        )
    sigs = []
    for k, ln in enumerate(body[1 : 1 + n_sig]):
        f = ln.split(None, 8)
        if len(f) < 2:
            raise RecordError(f"{where}: signal line {k + 1} is incomplete: {quote(ln)}")
        fm = _FMT_RE.fullmatch(f[1])
        if not fm:
            raise RecordError(f"{where}: signal line {k + 1}: bad format field {quote(f[1], 20)}")
        gain, base, units = 200.0, None, "mV"
        if len(f) > 2:
            gm = _GAIN_RE.fullmatch(f[2])
            if not gm:
                raise RecordError(f"{where}: signal line {k + 1}: bad gain field {quote(f[2], 20)}")
            gain = float(gm.group("gain"))
            if not math.isfinite(gain) or gain <= 0 or not MIN_GAIN <= gain <= MAX_GAIN:
                raise RecordError(
                    f"{where}: signal line {k + 1}: gain {quote(gm.group('gain'), 20)} is not a positive "
                    f"finite number of adu per unit from {MIN_GAIN:g} to {MAX_GAIN:g} (0, uncalibrated, is refused)"
                )
            base = int(gm.group("base")) if gm.group("base") is not None else None
            units = gm.group("units") or "mV"
        ints = []
        for j in (4, 5, 6):
            if len(f) > j and not _INT_RE.fullmatch(f[j]):
                raise RecordError(f"{where}: signal line {k + 1}: non-integer ADC field {quote(f[j], 20)}")
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
    fd, size = open_regular(path, where, "signal file", missing)
    try:
        head = bytes(pread(fd, 0, 20, where))
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
            check_values(n, n_sig, where, budget)
            buf = pread(fd, start, n * n_sig * dtype.itemsize, where)
            return array_from(buf, dtype, n * n_sig, where).reshape(n, n_sig), total
        if ncols == n_sig:  # (n_samples, n_sig) column-major: each signal is contiguous
            total = mrows
            n = min(total, n_max)
            check_values(n, n_sig, where, budget)
            out = np.empty((n, n_sig), dtype=dtype)
            for j in range(n_sig):
                buf = pread(fd, start + j * mrows * dtype.itemsize, n * dtype.itemsize, where)
                out[:, j] = array_from(buf, dtype, n, where)
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
    fd, size = open_regular(path, where, "signal file", missing)
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
        check_values(n, n_cols, where, budget)
        if fmt == 16:
            buf = pread(fd, offset, n * n_cols * 2, where)
            return array_from(buf, "<i2", n * n_cols, where).reshape(n, n_cols), total
        buf = pread(fd, offset, (n * n_cols + 1) // 2 * 3, where)
        return _decode_212(buf, n * n_cols).reshape(n, n_cols), total
    finally:
        os.close(fd)


def read_wfdb(
    header_path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read a WFDB record given its ``.hea`` path (see the module docstring): at most ``max_seconds``."""
    hea, where, fs, max_seconds = reader_args(header_path, fs, max_seconds)
    raw = read_small(hea, MAX_HEADER_BYTES, where, "WFDB header", missing=f"{hea}: no such WFDB header")
    text = raw.decode("utf-8", errors="replace")
    name, n_sig, hfs, n_samp, sigs, comments, acquired = _parse_header(text, where)
    check_fs_agrees(fs, hfs, where, "header")
    for s in sigs:
        if s["spf"] != 1:
            raise RecordError(f"{where}: {s['spf']} samples per frame is not supported (only 1)")
    n_max = max_samples(hfs, max_seconds)
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
    lead_names = canonical_leads(names, where)
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
    return finish(signal, hfs, lead_names, name, meta, where, leads)


def _parse_comments(lines: list[str]) -> dict[str, str]:
    out = {}
    for ln in lines:
        if ":" in ln:
            k, v = ln.split(":", 1)
            if k.strip():
                out[k.strip()] = v.strip()
    return out


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


_NAME_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def write_wfdb(record: Record, directory, name: str, *, gain: float | None = None) -> Path:
    """Write ``record`` as a format-16 WFDB record ``<directory>/<name>.hea`` + ``.dat``; return the header path.

    The gain is 1000 adu/mV (1 uV resolution) unless the signal would overflow 16 bits, in which case the
    largest power-of-ten-friendly gain that fits is used; baseline 0, units mV. Lead names are written as the
    signal descriptions. ``meta['comments']`` (a dict) is written as ``# key: value`` comment lines. Each file is
    written atomically (:mod:`edge.atomicio`): the signal file first, the header last.
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
    with atomic_path(dat) as tmp:
        d.astype("<i2").tofile(tmp)
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
    atomic_write(hea, "\n".join(lines) + "\n")
    return hea
