"""CSV/TSV records (``.csv``, ``.txt``, ``.tsv``), read line by line (:func:`read_csv`, through
:func:`edge.io.read_record`).

A header row of lead names, one row per sample, delimiter comma, semicolon or tab (detected from the header
row; with ``;`` a decimal comma is accepted). An optional first column ``time``/``t``/``time_s``/``seconds``
(seconds) or ``time_ms``/``ms`` (milliseconds) gives the sampling rate as 1/median(step); otherwise ``fs`` must
be given. A given ``fs`` must agree with a time column within 1%. A file without a header row (first row
numeric) is named like an NPY array (:func:`edge.io_npy.named_array`). ``leads`` selects leads from a file
with a header row. Lines are at most :data:`~edge.io_checks.MAX_LINE_CHARS`, the rows read at most
:data:`~edge.io_checks.MAX_CSV_CHARS`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import RecordError
from .io_checks import canonical_leads, check_fs, check_fs_agrees, check_values, finish, max_samples, quote, reader_args
from .io_files import open_regular
from .io_limits import MAX_CSV_CHARS, MAX_FS, MAX_LINE_CHARS, MAX_SECONDS, MAX_SIGNALS
from .io_npy import named_array
from .record import Record

__all__ = ["read_csv"]

_TIME_S = {"time", "t", "time_s", "times", "seconds", "sec", "s", "time (s)", "time[s]"}
_TIME_MS = {"time_ms", "ms", "t_ms", "time (ms)", "time[ms]", "milliseconds"}
_CHUNK_ROWS = 4096


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
    p, where, fs, max_seconds = reader_args(path, fs, max_seconds)
    fd, _ = open_regular(p, where, "CSV file", missing=f"{p}: no such file")
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
            raise RecordError(f"{p}: malformed CSV header row ({quote(e, 60)})") from None
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
            lead_names = canonical_leads(head[1:] if timed else head, where)
        elif fs is None:
            raise RecordError(f"{where}: sampling rate unknown; give fs (--fs)")
        # rows to read: max_seconds at the given rate, else (time column) until max_seconds of time have passed
        cap = max_samples(fs, max_seconds) if fs is not None else max_samples(MAX_FS, max_seconds) + 1
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
                            f"{p}: time column {quote(head[0], 20)} is not increasing "
                            f"(first value {quote(parts[0], 20)})"
                        )
                elif t - t0 >= max_seconds:
                    more = True
                    break
            rows.append(parts)
            n += 1
            if len(rows) == rows_per_chunk or chunk_chars > 1 << 22:  # a chunk: 2^18 cells or 4 MiB of text
                check_values(n, width, where)
                chunks.append(_parse_rows(rows))
                rows, chunk_chars = [], 0
        if n == 0:
            raise RecordError(f"{p}: no samples in CSV file")
        assert width is not None  # the first of the n > 0 rows set it
        check_values(n, width, where)
        if rows:
            chunks.append(_parse_rows(rows))
        del rows
    data = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    del chunks
    meta: dict[str, Any] = {"format": "csv", "path": where}
    if more:
        meta["truncated"] = {"read_samples": n, "file_samples": None}  # the rest of the file was not read
    if not has_header:
        return named_array(data, fs, leads, p.stem, meta, where, max_seconds)
    found_fs = None
    if timed:
        times = data[:, 0] / t_scale
        with np.errstate(all="ignore"):
            dt = np.diff(times)
            if times.size < 2 or not np.all(np.isfinite(dt)) or np.median(dt) <= 0:
                raise RecordError(f"{p}: time column {quote(head[0], 20)} is not increasing")
            found_fs = 1.0 / float(np.median(dt))
        found_fs = check_fs(found_fs, where, "time column")
        meta["time_column"] = head[0]
        data = data[:, 1:]
    if found_fs is not None:
        check_fs_agrees(fs, found_fs, where, "time column")
        use_fs = float(fs) if fs is not None else found_fs
    else:
        assert fs is not None  # without a time column the rate was required above
        use_fs = float(fs)
    keep = max_samples(use_fs, max_seconds)
    if data.shape[0] > keep:
        meta["truncated"] = {"read_samples": keep, "file_samples": None if more else int(data.shape[0])}
        data = data[:keep]
    elif more:
        meta["truncated"]["read_samples"] = int(data.shape[0])
    return finish(data, use_fs, lead_names, p.stem, meta, where, leads)
