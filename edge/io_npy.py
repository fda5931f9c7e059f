"""NPY records (``.npy``): the header parsed here, never unpickled (:func:`read_npy`, through
:func:`edge.io.read_record`), and the naming of a headerless array's leads (:func:`named_array`, also for CSV
files without a header row).

A 2-D array, samples x leads. An array of 8 or 12 (or ``len(leads)``) rows and many more columns is taken as
leads x samples and transposed (``meta['transposed'] = True``). ``fs`` is required. Leads are ``leads`` if
given, else LEADS12 for 12 columns, LEADS8 (I, II, V1-V6) for 8, else an error. The header must be a literal
dict of exactly ``descr``/``fortran_order``/``shape`` (magic, version, length at most
:data:`~edge.io_checks.MAX_NPY_HEADER`), integer or float dtypes only, a bounded shape; ZIP (``.npz``) files
are named as such.
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from firmware_bridge.info import LEADS8

from .errors import RecordError
from .io_checks import canonical_leads, check_values, finish, max_samples, quote, reader_args
from .io_files import array_from, open_regular, pread
from .io_limits import MAX_NPY_HEADER, MAX_SECONDS
from .leads import LEADS12
from .record import Record

__all__ = ["read_npy", "named_array"]


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
        return transposed, canonical_leads(leads, where)
    if n_leads == 12:
        return transposed, LEADS12
    if n_leads == 8:
        return transposed, LEADS8
    raise RecordError(
        f"{where}: array of shape {shown} has {n_leads} column(s); name them with "
        f"leads (--leads), since only 12 (LEADS12) or 8 (I, II, V1-V6) columns have a default"
    )


def named_array(arr: np.ndarray, fs, leads, name, meta, where, max_seconds: float = MAX_SECONDS) -> Record:
    """A :class:`Record` of a 2-D array without lead names (NPY, headerless CSV): transposed when it is leads x
    samples, leads named as the module docstring says, cut to ``max_seconds`` (``meta['truncated']``)."""
    transposed, names = _array_layout(arr.shape, fs, leads, where)
    if transposed:
        arr = arr.T
        meta["transposed"] = True
    keep = max_samples(float(fs), max_seconds)
    if arr.shape[0] > keep:
        meta["truncated"] = {"read_samples": keep, "file_samples": None if "truncated" in meta else int(arr.shape[0])}
        arr = arr[:keep]
    return finish(arr, fs, names, name, meta, where, None)


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
            f"{where}: NPY array has unsupported dtype {quote(descr, 30)} (integer or floating-point numbers only)"
        )
    try:
        dtype = np.dtype(descr)
    except TypeError:
        raise RecordError(f"{where}: NPY array has unsupported dtype {quote(descr, 30)}") from None
    if type(fortran) is not bool:
        raise bad("'fortran_order' is not True or False")
    if type(shape) is not tuple or len(shape) > 32 or any(type(v) is not int or v < 0 or v > 1 << 40 for v in shape):
        raise bad(f"bad shape {quote(shape, 40)}")
    return dtype, fortran, shape, start + hlen


def read_npy(
    path, fs: float | None = None, leads: Sequence[str] | None = None, *, max_seconds: float = MAX_SECONDS
) -> Record:
    """Read an NPY record (see the module docstring): the header is parsed here, never unpickled, and only
    the first ``max_seconds`` of samples are read."""
    p, where, fs, max_seconds = reader_args(path, fs, max_seconds)
    fd, size = open_regular(p, where, "NPY file", missing=f"{p}: no such file")
    try:
        dtype, fortran, shape, start = _parse_npy_header(bytes(pread(fd, 0, 12 + MAX_NPY_HEADER, where)), where)
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
        n = min(n_samp, max_samples(fs, max_seconds))
        check_values(n, n_lead, where)
        isz = dtype.itemsize
        if transposed == fortran:  # the first n samples are contiguous: (n, n_lead) in C order
            arr = array_from(pread(fd, start, n * n_lead * isz, where), dtype, n * n_lead, where).reshape(n, n_lead)
        else:  # each lead is contiguous over the whole file: one read per lead
            stride = n_samp * isz
            arr = np.empty((n, n_lead), dtype=dtype)
            for j in range(n_lead):
                arr[:, j] = array_from(pread(fd, start + j * stride, n * isz, where), dtype, n, where)
    finally:
        os.close(fd)
    meta: dict[str, Any] = {"format": "npy", "path": str(p)}
    if transposed:
        meta["transposed"] = True
    if n < n_samp:
        meta["truncated"] = {"read_samples": n, "file_samples": n_samp}
    with np.errstate(all="ignore"):  # float16/float32 -> float64; non-finite values are refused in finish
        arr = np.asarray(arr, dtype=np.float64)
    return finish(arr, fs, names, p.stem, meta, where, None)
