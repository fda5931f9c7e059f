"""``overlay.json``, the file of the local overlay (:mod:`edge.overlay`): its format, read boundedly and checked
case by case.

``{"format": "ecgret-overlay", "format_version": 2, "bundle": id, "dim": D, "next_id": n, "cases": [{case
fields..., "embedding": [D floats], "signal": {...}}]}`` (``signal``: :mod:`edge.overlay_signal`); version 1
files (no ``next_id``, no signals) are read too. Reading is bounded (a regular file, not a symlink, FIFO or
device, of at most :data:`MAX_BYTES`, :func:`edge.schema.loads_bounded`) and every case is checked (ids,
types, a finite unit embedding of dimension D, a signal that decodes to its declared shape); a bad file is one
:class:`~edge.errors.OverlayError` naming the field.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np

from .bundle_format import CASE_FIELDS as BUNDLE_CASE_FIELDS
from .bundle_format import CASE_LABEL_FIELDS, CASE_TEXT_FIELDS
from .errors import OverlayError
from .overlay_signal import decode_signal
from .schema import JSONLimitError, loads_bounded, printable, read_bounded

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READ_VERSIONS",
    "FILE",
    "CASE_FIELDS",
    "LIST_FIELDS",
    "MAX_BYTES",
    "MAX_CASES",
    "MAX_TEXT",
    "MAX_NEXT_ID",
    "read_file",
    "parse_overlay",
    "open_any",
    "max_local",
    "check_new_case",
]

FORMAT = "ecgret-overlay"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
FILE = "overlay.json"
CASE_FIELDS = (*BUNDLE_CASE_FIELDS, "enrolled", "record", "signal")  # a bundle case's, and where it came from
LIST_FIELDS = CASE_LABEL_FIELDS
_TEXT_FIELDS = (*CASE_TEXT_FIELDS, "enrolled", "record")
MAX_BYTES = 64 << 20
MAX_CASES = 100_000
MAX_TEXT = 64 << 10
MAX_NEXT_ID = 10**12  # the highest next_id a file may hold, so the highest local:<n> is MAX_NEXT_ID - 1


def read_file(p: Path) -> bytes | None:
    """The bytes of ``overlay.json`` (None if there is none): a regular file, not a symlink, FIFO or device,
    of at most :data:`MAX_BYTES`, read without blocking."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OverlayError(
            f"{p}: file: unreadable ({e.strerror or e}"
            + ("; a symbolic link is not followed" if os.path.islink(p) else "")
            + ")"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OverlayError(f"{p}: file: not a regular file")
        if st.st_size > MAX_BYTES:
            raise OverlayError(f"{p}: file: {st.st_size:,} bytes, more than the {MAX_BYTES:,} allowed")
        data = read_bounded(fd, MAX_BYTES + 1)
    except OSError as e:
        raise OverlayError(f"{p}: file: unreadable ({e.strerror or e})") from None
    finally:
        os.close(fd)
    raw = data
    if len(raw) > MAX_BYTES:
        raise OverlayError(f"{p}: file: more than {MAX_BYTES:,} bytes")
    return raw


def _bad(p, fld, msg) -> OverlayError:
    return OverlayError(f"{p}: {fld}: {msg}")


def max_local(cases) -> int:
    """The highest ``n`` of the ``local:<n>`` case ids in ``cases`` (0 when there is none)."""
    return max((int(m.group(1)) for c in cases if (m := re.fullmatch(r"local:(\d+)", c["case_id"]))), default=0)


def parse_overlay(raw: bytes, p, bundle_id: str, dim: int) -> tuple[tuple[dict, ...], np.ndarray, int]:
    """Check overlay.json bytes: (cases without embeddings, (n, dim) float32 unit embeddings, the number of the
    next ``local:<n>`` id)."""
    try:
        doc = loads_bounded(raw, max_bytes=MAX_BYTES, max_depth=8)
    except JSONLimitError as e:
        raise OverlayError(f"{p}: {e}; move it aside to start a new overlay") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(p, "format", "not an ecgret overlay")
    if doc.get("format_version") not in READ_VERSIONS or isinstance(doc.get("format_version"), bool):
        raise _bad(
            p,
            "format_version",
            f"{printable(repr(doc.get('format_version')), 20)}, expected one of {', '.join(map(str, READ_VERSIONS))}",
        )
    if doc.get("bundle") != bundle_id:
        raise _bad(p, "bundle", f"overlay belongs to bundle {printable(repr(doc.get('bundle')), 70)}, not {bundle_id}")
    if doc.get("dim") != dim or isinstance(doc.get("dim"), bool):
        raise _bad(p, "dim", f"{printable(repr(doc.get('dim')), 20)}, the bundle's encoder gives {dim}")
    items = doc.get("cases", [])
    if not isinstance(items, list):
        raise _bad(p, "cases", "not an array")
    if len(items) > MAX_CASES:
        raise _bad(p, "cases", f"{len(items)} cases, more than the {MAX_CASES} allowed")
    cases, seen = [], set()
    emb = np.zeros((len(items), dim), dtype=np.float32)
    for i, c in enumerate(items):
        where = f"cases[{i}]"
        if not isinstance(c, dict):
            raise _bad(p, where, "malformed entry (not an object)")
        cid = c.get("case_id")
        if not isinstance(cid, str) or not 0 < len(cid) <= 200 or not cid.isprintable():
            raise _bad(
                p, f"{where}.case_id", "malformed entry (missing, empty, too long or holding control characters)"
            )
        if cid in seen:
            raise _bad(p, f"{where}.case_id", f"malformed entry (duplicate id {cid!r})")
        m = re.fullmatch(r"local:(\d+)", cid)
        if m and int(m.group(1)) >= MAX_NEXT_ID:
            raise _bad(p, f"{where}.case_id", f"malformed entry (local:<n> ids go up to local:{MAX_NEXT_ID - 1})")
        seen.add(cid)
        for k in LIST_FIELDS:
            v = c.get(k, [])
            if not isinstance(v, list) or len(v) > 1000 or not all(isinstance(x, str) and len(x) <= 200 for x in v):
                raise _bad(p, f"{where}.{k}", "malformed entry (not a list of short strings)")
        for k in _TEXT_FIELDS:
            v = c.get(k)
            if v is not None and (not isinstance(v, str) or len(v) > MAX_TEXT):
                raise _bad(p, f"{where}.{k}", f"malformed entry (not a string of at most {MAX_TEXT} characters)")
        listed = c.get("embedding")
        if not isinstance(listed, list) or len(listed) != dim or not all(type(x) in (int, float) for x in listed):
            raise _bad(p, f"{where}.embedding", f"malformed entry (not {dim} numbers)")
        v = np.asarray(listed, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            n = float(np.sqrt(v @ v)) if np.all(np.isfinite(v)) else float("nan")
        if not abs(n - 1.0) <= 1e-3:
            raise _bad(p, f"{where}.embedding", f"malformed entry (norm {n:.4g}, enrolled embeddings have norm 1)")
        if c.get("signal") is not None:
            try:
                decode_signal(c["signal"])
            except (ValueError, TypeError, KeyError) as err:
                raise _bad(p, f"{where}.signal", f"malformed entry ({printable(err, 120)})") from None
        emb[i] = v
        cases.append({key: val for key, val in c.items() if key != "embedding"})
    nxt = doc.get("next_id", 1)
    if isinstance(nxt, bool) or not isinstance(nxt, int) or not 1 <= nxt <= MAX_NEXT_ID:
        raise _bad(p, "next_id", f"{printable(repr(nxt), 20)}, expected a positive integer")
    return tuple(cases), emb, max(nxt, max_local(cases) + 1)


def open_any(d: Path) -> tuple[tuple[dict, ...], np.ndarray]:
    """The cases of the overlay in folder ``d``, whatever bundle and dimension it belongs to."""
    raw = read_file(Path(d) / FILE)
    if raw is None:
        raise OverlayError(f"{d}: no {FILE} there")
    try:
        doc = loads_bounded(raw, max_bytes=MAX_BYTES, max_depth=8)
    except JSONLimitError as e:
        raise OverlayError(f"{Path(d) / FILE}: {e}") from None
    dim = doc.get("dim") if isinstance(doc, dict) else None
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 100_000:
        raise _bad(Path(d) / FILE, "dim", "not a dimension")
    cases, emb, _ = parse_overlay(raw, Path(d) / FILE, str(doc.get("bundle")), dim)
    return cases, emb


def check_new_case(case: dict) -> None:
    """A case to enrol: the fields overlay.json can hold, as text that encodes (no lone surrogates)."""
    for k in CASE_FIELDS:
        v = case.get(k)
        if v is None:
            continue
        if k == "signal":
            try:
                decode_signal(v)
            except (ValueError, TypeError, KeyError) as e:
                raise OverlayError(f"signal: {e}") from None
            continue
        vals = v if k in LIST_FIELDS and isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if not isinstance(x, str):
                raise OverlayError(f"{k}: must be text, got {type(x).__name__}")
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                raise OverlayError(f"{k}: not valid text (undecodable bytes in the argument?)") from None
            if len(x) > (200 if k == "case_id" or k in LIST_FIELDS else MAX_TEXT):
                raise OverlayError(f"{k}: too long ({len(x)} characters)")
    cid = case.get("case_id")
    if cid is not None and (not cid or not cid.isprintable()):
        raise OverlayError(f"case_id: {printable(repr(cid), 60)} is empty or holds control characters")
    m = re.fullmatch(r"local:(\d+)", cid or "")
    if m and int(m.group(1)) >= MAX_NEXT_ID:  # its next_id would make the file unreadable
        raise OverlayError(f"case_id: local:<n> ids go up to local:{MAX_NEXT_ID - 1}, got {printable(cid, 60)}")
