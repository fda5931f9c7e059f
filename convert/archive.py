"""The case archive the toolkit works on: the data model and its streaming, resumable writer.

A case archive is a folder:

* ``signals.npy``: float16 or float32, shape (N, T, 12): preprocessed (0.5-40 Hz, 100 Hz, z-scored per lead)
  12-lead signals in LEADS12 order, zero-padded after ``n_samples``; opened with ``mmap_mode='r'`` so large
  archives stream from disk. An archive may instead reference an external signals file:
  ``archive.json`` then has ``signals_path`` (absolute, or relative to the archive folder) and optionally
  ``rows`` (case i is row ``rows[i]`` of that file), so the shared PTB-XL subset is never copied.
* ``cases.jsonl``: line i describes case i: ``case_id``, ``patient_id``, ``fold`` (int or null),
  ``super_class``, ``sub_class``, ``form``, ``rhythm`` (lists of str), ``statements`` (str), ``report``
  (str, may be empty), ``source`` (str), ``n_samples`` (valid samples before padding).
* ``archive.json``: ``format_version``, ``fs`` (100), ``leads``, ``n_cases``, ``T``, ``dtype``, ``importer``,
  ``created`` (UTC ISO time), importer details and ``skipped`` (the records that could not be imported, each
  ``{"case_id", "error"}``). It is written last: a folder without it is not (yet) an archive.
* while an import runs (or after it was interrupted): ``import-parts/`` with ``plan.json`` (the importer and
  its settings) and ``part-NNNNNN.npy`` + ``part-NNNNNN.jsonl`` (up to 64 records each, the ``.jsonl`` written
  after its ``.npy``); see :func:`import_records`.

The importers that read clinical sources (the PTB-XL subset and download, WFDB folders) are in
:mod:`convert.importers`.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edge.atomicio import TMP_MARK, atomic_open, atomic_path, atomic_write
from edge.errors import ArchiveError, EcgretError
from edge.leads import LEADS12

FORMAT_VERSION = 1
FS = 100
SIGNALS_FILE = "signals.npy"
CASES_FILE = "cases.jsonl"
META_FILE = "archive.json"

__all__ = ["Case", "Archive", "ImportSummary", "import_records", "write_archive", "read_cases", "join_text",
           "split_labels", "FORMAT_VERSION", "PARTS_DIR"]

_LIST_FIELDS = ("super_class", "sub_class", "form", "rhythm")


@dataclass(frozen=True)
class Case:
    """One archived case (a line of ``cases.jsonl``)."""

    case_id: str
    patient_id: str | None = None
    fold: int | None = None
    super_class: tuple[str, ...] = ()
    sub_class: tuple[str, ...] = ()
    form: tuple[str, ...] = ()
    rhythm: tuple[str, ...] = ()
    statements: str = ""
    report: str = ""
    source: str = ""
    n_samples: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str:
        """The text the teacher embeds: ``"statements. report"`` (either part alone when the other is empty)."""
        return join_text(self.statements, self.report)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in _LIST_FIELDS:
            d[k] = list(d[k])
        extra = d.pop("extra")
        d.update({k: v for k, v in extra.items() if k not in d})
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "case") -> "Case":
        if not isinstance(d, dict):
            raise ArchiveError(f"{where}: expected a JSON object, got {type(d).__name__}")
        cid = d.get("case_id")
        if not isinstance(cid, str) or not cid:
            raise ArchiveError(f"{where}: missing or empty 'case_id'")
        kw = {}
        for k in _LIST_FIELDS:
            v = d.get(k, [])
            if isinstance(v, str):
                v = split_labels(v)
            if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
                raise ArchiveError(f"{where}: field {k!r} of {cid} must be a list of strings")
            kw[k] = tuple(v)
        fold = d.get("fold")
        if fold is not None and (isinstance(fold, bool) or not isinstance(fold, int)):
            raise ArchiveError(f"{where}: field 'fold' of {cid} must be an integer or null, got {fold!r}")
        n = d.get("n_samples", 0)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ArchiveError(f"{where}: field 'n_samples' of {cid} must be a non-negative integer")
        for k in ("statements", "report", "source"):
            if not isinstance(d.get(k, ""), str):
                raise ArchiveError(f"{where}: field {k!r} of {cid} must be a string")
        pid = d.get("patient_id")
        known = {f for f in cls.__dataclass_fields__}
        return cls(case_id=cid, patient_id=None if pid is None else str(pid), fold=fold,
                   statements=d.get("statements", ""), report=d.get("report", "") or "",
                   source=d.get("source", ""), n_samples=n,
                   extra={k: v for k, v in d.items() if k not in known}, **kw)


def join_text(statements: str, report: str) -> str:
    s, r = (statements or "").strip(), (report or "").strip()
    if s and r:
        return f"{s.rstrip('.')}. {r}"
    return s or r


def split_labels(s: str | None) -> tuple[str, ...]:
    """``'CD;MI'`` -> ``('CD', 'MI')``; empty/None -> ``()``."""
    return tuple(p.strip() for p in (s or "").split(";") if p.strip())


class _RowView:
    """Read-only view of a (M, T, 12) array through a row mapping: ``view[i] == base[rows[i]]``."""

    def __init__(self, base: np.ndarray, rows: np.ndarray):
        self.base, self.rows = base, rows

    @property
    def shape(self):
        return (len(self.rows),) + tuple(self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    ndim = 3

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            first, rest = key[0], key[1:]
        else:
            first, rest = key, ()
        r = self.rows[first]
        if np.ndim(r) == 0:
            out = self.base[int(r)]
        else:
            r = np.asarray(r)
            order = np.argsort(r, kind="stable")  # read the memmap in file order
            out = np.empty((len(r),) + self.base.shape[1:], self.base.dtype)
            out[order] = self.base[r[order]]
        return out[rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        a = self[:]
        return a if dtype is None else a.astype(dtype)


class Archive:
    """A case archive: signals (memory-mapped) and one :class:`Case` per row. Read-only once built."""

    __slots__ = ("_signals", "_cases", "_ids", "_index", "_meta", "_path")

    def __init__(self, signals, cases: Sequence[Case], meta: dict | None = None, path: Path | None = None):
        cases = tuple(cases)
        where = str(path) if path else "archive"
        index: dict[str, int] = {}
        for i, c in enumerate(cases):
            if c.case_id in index:
                raise ArchiveError(f"{where}: duplicate case id {c.case_id!r} (lines {index[c.case_id] + 1} "
                                   f"and {i + 1})")
            index[c.case_id] = i
        shape = tuple(signals.shape)
        if len(shape) != 3 or shape[2] != 12:
            raise ArchiveError(f"{where}: signals must have shape (N, T, 12), got {shape}")
        if shape[0] != len(cases):
            raise ArchiveError(f"{where}: {shape[0]} signal rows but {len(cases)} cases")
        self._signals = signals
        self._cases = cases
        self._ids = tuple(c.case_id for c in cases)
        self._index = index
        self._meta = dict(meta or {})
        self._meta.setdefault("format_version", FORMAT_VERSION)
        self._meta.setdefault("fs", FS)
        self._meta.setdefault("leads", list(LEADS12))
        self._meta["n_cases"] = len(cases)
        self._meta["T"] = shape[1]
        self._meta.setdefault("dtype", str(signals.dtype))
        self._path = path

    # ------------------------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._cases)

    def __repr__(self) -> str:
        return f"Archive({len(self)} cases, T={self.T}, {self._path or 'in memory'})"

    @property
    def signals(self):
        """(N, T, 12) array (a read-only memmap; or a row-mapped view of an external file)."""
        return self._signals

    @property
    def cases(self) -> tuple[Case, ...]:
        return self._cases

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def T(self) -> int:
        return int(self._signals.shape[1])

    @property
    def fs(self) -> int:
        return int(self._meta.get("fs", FS))

    def signal(self, i: int) -> np.ndarray:
        """Case i's signal, float32 (T, 12)."""
        return np.asarray(self._signals[int(i)], dtype=np.float32)

    def batch(self, indices) -> np.ndarray:
        """Signals of several cases, float32 (len(indices), T, 12)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self._signals, _RowView):
            return self._signals[idx].astype(np.float32)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), self.T, 12), np.float32)
        out[order] = self._signals[idx[order]]
        return out

    def index_of(self, case_id: str) -> int:
        try:
            return self._index[case_id]
        except KeyError:
            raise ArchiveError(f"case id {case_id!r} is not in the archive") from None

    def text(self, i: int) -> str:
        """The text the teacher embeds for case i: statements, then the report when there is one."""
        return self._cases[int(i)].text

    def texts(self) -> list[str]:
        return [c.text for c in self._cases]

    def select(self, folds: Iterable[int] | int | None = None, *, sources: Iterable[str] | None = None,
               with_report: bool | None = None) -> np.ndarray:
        """Indices (int64, ascending) of the cases in ``folds`` (None: any fold, including null)."""
        keep = np.ones(len(self), dtype=bool)
        if folds is not None:
            fs = {int(folds)} if isinstance(folds, (int, np.integer)) else {int(f) for f in folds}
            keep &= np.array([c.fold in fs for c in self._cases], dtype=bool)
        if sources is not None:
            ss = {sources} if isinstance(sources, str) else set(sources)
            keep &= np.array([c.source in ss for c in self._cases], dtype=bool)
        if with_report is not None:
            keep &= np.array([bool(c.report.strip()) == with_report for c in self._cases], dtype=bool)
        return np.flatnonzero(keep).astype(np.int64)

    # ------------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path) -> "Archive":
        """Open an archive folder, validating archive.json, cases.jsonl and the signals' shape."""
        d = Path(path)
        mpath = d / META_FILE
        if not d.is_dir():
            raise ArchiveError(f"{d}: not an archive folder (no such directory)")
        if not mpath.exists():
            if (d / PARTS_DIR).is_dir():
                raise ArchiveError(f"{mpath}: missing: the import into {d} did not finish; run the same import "
                                   f"command again to finish it")
            raise ArchiveError(f"{mpath}: missing; {d} is not a case archive")
        try:
            meta = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{mpath}: unreadable ({e})") from None
        if not isinstance(meta, dict):
            raise ArchiveError(f"{mpath}: expected a JSON object")
        ver = meta.get("format_version")
        if not isinstance(ver, int) or ver > FORMAT_VERSION or ver < 1:
            raise ArchiveError(f"{mpath}: unsupported format_version {ver!r} (this toolkit reads "
                               f"up to {FORMAT_VERSION})")
        if meta.get("fs", FS) != FS or list(meta.get("leads", LEADS12)) != list(LEADS12):
            raise ArchiveError(f"{mpath}: archives hold 100 Hz signals in LEADS12 order; this one says "
                               f"fs={meta.get('fs')!r}, leads={meta.get('leads')!r}")
        cases = read_cases(d / CASES_FILE)
        spath = Path(meta.get("signals_path") or SIGNALS_FILE)
        if not spath.is_absolute():
            spath = d / spath
        try:
            sig = np.load(spath, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise ArchiveError(f"{spath}: signals file missing") from None
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{spath}: unreadable signals file ({e})") from None
        if sig.ndim != 3 or sig.shape[2] != 12 or sig.dtype not in (np.float16, np.float32):
            raise ArchiveError(f"{spath}: expected float16/float32 of shape (N, T, 12), got {sig.dtype} "
                               f"{sig.shape}")
        rows = meta.get("rows")
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= sig.shape[0])):
                raise ArchiveError(f"{mpath}: 'rows' must index rows 0..{sig.shape[0] - 1} of {spath}")
            n_rows = rows.size
        else:
            n_rows = sig.shape[0]
        if n_rows != len(cases):
            raise ArchiveError(f"{spath}: {n_rows} signal rows but {d / CASES_FILE} has {len(cases)} cases")
        if meta.get("n_cases") is not None and meta["n_cases"] != len(cases):
            raise ArchiveError(f"{mpath}: n_cases is {meta['n_cases']} but {d / CASES_FILE} has {len(cases)}")
        if meta.get("T") is not None and meta["T"] != sig.shape[1]:
            raise ArchiveError(f"{spath}: T={sig.shape[1]} but {mpath} says T={meta['T']}")
        if rows is not None and not np.array_equal(rows, np.arange(sig.shape[0])):
            signals = _RowView(sig, rows)
        else:
            signals = sig
        return cls(signals, cases, meta=meta, path=d)

    @classmethod
    def from_ptbxl_subset(cls, data_dir) -> "Archive":
        """The shared PTB-XL subset as an archive, built in memory over the memory-mapped shared npy.

        Only rows with a waveform (``signal_row`` non-empty) become cases; case i is signal row i when the
        subset's rows are 0..N-1 (they are), else a row-mapped view. Nothing is written.
        """
        d = Path(data_dir)
        cases, rows = _subset_cases(d)
        spath = d / "signals_100hz.npy"
        try:
            sig = np.load(spath, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{spath}: unreadable signals file ({e})") from None
        if sig.ndim != 3 or sig.shape[2] != 12:
            raise ArchiveError(f"{spath}: expected shape (N, T, 12), got {sig.shape}")
        if rows.size and rows.max() >= sig.shape[0]:
            raise ArchiveError(f"{d / 'cases.csv'}: signal_row {int(rows.max())} is beyond the "
                               f"{sig.shape[0]} rows of {spath}")
        signals = sig if np.array_equal(rows, np.arange(sig.shape[0])) else _RowView(sig, rows)
        meta = _meta("ptbxl_subset", T=sig.shape[1], dtype=str(sig.dtype),
                     signals_path=str(spath.resolve()), source_dir=str(d.resolve()))
        return cls(signals, cases, meta=meta, path=None)


def read_cases(path) -> tuple[Case, ...]:
    """Read ``cases.jsonl`` (line i = case i); errors name the file and line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ArchiveError(f"{p}: missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{p}: unreadable ({e})") from None
    cases = []
    for k, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            obj = json.loads(ln)
        except ValueError as e:
            raise ArchiveError(f"{p}:{k + 1}: invalid JSON ({e.args[0] if e.args else e})") from None
        cases.append(Case.from_dict(obj, where=f"{p}:{k + 1}"))
    seen: dict[str, int] = {}
    for i, c in enumerate(cases):
        if c.case_id in seen:
            raise ArchiveError(f"{p}: duplicate case id {c.case_id!r} (cases {seen[c.case_id] + 1} and {i + 1})")
        seen[c.case_id] = i
    return tuple(cases)


def _meta(importer: str, **kw) -> dict:
    m = {"format_version": FORMAT_VERSION, "fs": FS, "leads": list(LEADS12), "importer": importer,
         "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    m.update(kw)
    return m


def _check_unique(cases: Sequence[Case], where: str) -> None:
    seen = set()
    for c in cases:
        if c.case_id in seen:
            raise ArchiveError(f"{where}: duplicate case id {c.case_id!r}")
        seen.add(c.case_id)


def _write_meta_and_cases(out: Path, cases: Sequence[Case], meta: dict) -> None:
    """``cases.jsonl`` then ``archive.json`` (the archive's "complete" mark), each written atomically."""
    with atomic_open(out / CASES_FILE, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
    atomic_write(out / META_FILE, json.dumps(meta, indent=2) + "\n")


def _prepare_out(out_dir, overwrite: bool) -> Path:
    out = Path(out_dir)
    if (out / META_FILE).exists() and not overwrite:
        raise ArchiveError(f"{out}: already holds an archive (pass overwrite=True to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _progress(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc=desc, unit="rec", file=sys.stderr, leave=False)


# ------------------------------------------------------------------------------------------------ writing

PARTS_DIR = "import-parts"      # an import in progress: its committed chunks of records (see write_archive)
PLAN_FILE = "plan.json"
CHUNK = 64                       # records a part holds (1.5 MB of float16 at T=1000): what a kill can cost


@dataclass(frozen=True)
class ImportSummary:
    """What one run of :func:`import_records` did. ``failed``: ``{"case_id", "error"}`` of each record that
    could not be imported in this run (it is tried again by the next run)."""

    archive: "Archive"
    n_listed: int                # records the source lists (after folds/limit)
    n_new: int                   # imported by this run
    n_already: int               # already in the folder (a resumed run skips them)
    failed: tuple[dict, ...] = ()

    @property
    def n_failed(self) -> int:
        return len(self.failed)


def _plan(importer: str, T: int, dtype: np.dtype, extra_meta: dict) -> dict:
    return {"importer": importer, "T": int(T), "dtype": str(dtype), **extra_meta}


def _check_plan(out: Path, old: dict, new: dict, what: str) -> None:
    for k in sorted(set(old) | set(new)):
        if k in ("format", "created") or old.get(k) == new.get(k):
            continue
        raise ArchiveError(f"{out}: {what} was made with {k} = {old.get(k)!r}, this import has {new.get(k)!r}; "
                           f"import into a new folder, or replace it (--overwrite)")


def _read_parts(parts: Path) -> tuple[dict[str, tuple[Case, Path, int]], int]:
    """The committed parts of an import in progress: {case_id: (case, part .npy, row)} and the highest part
    number. A part counts once its ``.jsonl`` (written after its ``.npy``) is there; anything else (a part
    whose ``.jsonl`` never came, temporary files of a killed run) is removed."""
    done: dict[str, tuple[Case, Path, int]] = {}
    top = -1
    for p in sorted(parts.iterdir()):
        if p.name.startswith(".") and TMP_MARK in p.name:
            p.unlink(missing_ok=True)
            continue
        if not (p.name.startswith("part-") and p.suffix == ".npy"):
            continue
        mark = p.with_suffix(".jsonl")
        if not mark.is_file():
            p.unlink(missing_ok=True)
            continue
        top = max(top, int(p.stem.split("-")[1]))
        for row, c in enumerate(read_cases(mark)):
            done.setdefault(c.case_id, (c, p, row))
    return done, top


def _write_part(parts: Path, k: int, x: np.ndarray, cases: Sequence[Case]) -> None:
    """Commit one part: its signals, then its cases (the mark that the part is complete)."""
    base = parts / f"part-{k:06d}"
    with atomic_path(base.with_suffix(".npy"), suffix=".npy") as tmp:
        np.save(tmp, x, allow_pickle=False)
    with atomic_open(base.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")


def _reopen_as_part(out: Path, parts: Path) -> None:
    """Turn a finished archive into part 0 of a new import run (a hard link: no copy, and the archive stays
    readable, unchanged, until the run finishes)."""
    meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    if meta.get("signals_path") or meta.get("rows") is not None:
        raise ArchiveError(f"{out}: references another signals file; it cannot be added to (import into a new "
                           f"folder)")
    dst = parts / "part-000000.npy"
    dst.unlink(missing_ok=True)
    os.link(out / SIGNALS_FILE, dst)
    with atomic_open(parts / "part-000000.jsonl", "w", encoding="utf-8") as f:
        f.write((out / CASES_FILE).read_text(encoding="utf-8"))


def _finish(out: Path, parts: Path, cases: Sequence[Case], done: dict, T: int, dtype: np.dtype,
            meta: dict) -> None:
    """Publish the archive from the committed parts, in the order of ``cases``; then remove the parts. Until
    ``archive.json`` is written again the folder is an unfinished import (a rerun finishes it)."""
    keep = [done[c.case_id] for c in cases if c.case_id in done]
    (out / META_FILE).unlink(missing_ok=True)
    with atomic_path(out / SIGNALS_FILE, suffix=".npy") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(keep), T, 12))
        src: dict[Path, np.ndarray] = {}
        for k, (_, part, row) in enumerate(keep):
            if part not in src:
                src = {part: np.load(part, mmap_mode="r", allow_pickle=False)}   # parts come in order
            mm[k] = src[part][row]
            if k % 1024 == 1023:
                mm.flush()
        mm.flush()
        del mm, src
    _write_meta_and_cases(out, [c for c, _, _ in keep], meta)
    shutil.rmtree(parts, ignore_errors=True)


def _say(bar, say, line: str) -> None:
    """Print a line above a running progress bar (tqdm's external write mode), or just print it."""
    ext = getattr(bar, "external_write_mode", None)
    if ext is None:
        say(line)
        return
    with ext(file=sys.stderr):
        say(line)


def import_records(out_dir, cases: Sequence[Case], load: Callable[[int], tuple[np.ndarray, int]], *,
                   T: int = 1000, dtype="float16", importer: str = "custom", extra_meta: dict | None = None,
                   on_error: str = "raise", progress: bool = True, overwrite: bool = False, resume: bool = False,
                   report: Callable[[str], None] | None = None, chunk: int = CHUNK) -> ImportSummary:
    """Write an archive folder, streaming: ``load(i)`` returns case i's preprocessed (T, 12) signal and its
    valid length. At most ``chunk`` records are held in memory.

    Records are committed ``chunk`` at a time into ``<out>/import-parts/`` (each part written atomically: its
    ``.npy``, then its ``.jsonl``); when every record was tried, the archive (``signals.npy``, ``cases.jsonl``
    in the order of ``cases``, then ``archive.json``, the mark that it is complete) is published from the parts
    and the parts are removed. ``resume=True`` continues what the folder holds (an interrupted import, or a
    finished archive made with the same importer and settings): records already there are skipped, the others
    (including those that failed before) are tried. A killed run loses at most the records of its unfinished
    part; an exception or Ctrl-C commits the loaded records first.

    ``on_error='raise'`` turns the first :class:`~edge.errors.EcgretError` of ``load`` into an ArchiveError
    naming the case; ``'skip'`` reports it (``report(line)``), leaves the case out, and lists it in
    ``archive.json`` (``skipped``). Without ``resume``, a folder that already holds an archive or an import is
    refused unless ``overwrite``, and a failed run leaves nothing behind.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    dtype = np.dtype(dtype)
    if dtype not in (np.float16, np.float32):
        raise ArchiveError(f"archive dtype must be float16 or float32, not {dtype}")
    out = Path(out_dir)
    _check_unique(cases, str(out))
    parts = out / PARTS_DIR
    extra = dict(extra_meta or {})
    plan = _plan(importer, T, dtype, extra)
    if out.exists() and not out.is_dir():
        raise ArchiveError(f"{out}: exists and is not a folder")
    if overwrite:
        shutil.rmtree(parts, ignore_errors=True)
        for name in (META_FILE, CASES_FILE, SIGNALS_FILE):
            (out / name).unlink(missing_ok=True)
    elif not resume and ((out / META_FILE).exists() or parts.exists()):
        held = "an archive" if (out / META_FILE).exists() else "an unfinished import"
        raise ArchiveError(f"{out}: already holds {held} (pass overwrite=True to replace it, or resume=True "
                           f"to continue it)")
    out.mkdir(parents=True, exist_ok=True)
    fresh = not parts.exists()
    reopen = False
    if not fresh:
        if (parts / PLAN_FILE).is_file():          # (absent only if a run was killed before its first part)
            _check_plan(out, json.loads((parts / PLAN_FILE).read_text(encoding="utf-8")), plan,
                        "the unfinished import there")
    elif (out / META_FILE).exists():
        meta_old = json.loads((out / META_FILE).read_text(encoding="utf-8"))
        _check_plan(out, {k: meta_old.get(k) for k in plan}, plan, "the archive there")
        if {c.case_id for c in read_cases(out / CASES_FILE)} == {c.case_id for c in cases}:
            return ImportSummary(Archive.open(out), len(cases), 0, len(cases))   # nothing to add or drop
        reopen = True
    parts.mkdir(exist_ok=True)
    atomic_write(parts / PLAN_FILE, json.dumps({"format": "ecgret-import", **plan}, indent=1) + "\n")
    if reopen:
        _reopen_as_part(out, parts)
    done, top = _read_parts(parts)
    n_already = sum(c.case_id in done for c in cases)
    todo = [i for i, c in enumerate(cases) if c.case_id not in done]
    failed: list[dict] = []
    say = report or (lambda line: None)
    buf = np.zeros((max(1, int(chunk)), T, 12), dtype=dtype)
    got: list[Case] = []

    def commit():
        nonlocal top
        if got:
            top += 1
            _write_part(parts, top, buf[:len(got)], got)
            part = parts / f"part-{top:06d}.npy"
            for row, c in enumerate(got):
                done[c.case_id] = (c, part, row)
            got.clear()

    bar = _progress(todo, len(todo), f"importing {out.name}", progress)
    try:
        for i in bar:
            c = cases[i]
            try:
                x, n_valid = load(i)
            except EcgretError as e:
                if on_error == "raise":
                    raise ArchiveError(f"{c.case_id}: {e}") from None
                failed.append({"case_id": c.case_id, "error": str(e)})
                _say(bar, say, f"{c.case_id}: {e}")
                continue
            x = np.asarray(x, dtype=np.float32)
            if x.shape != (T, 12):
                raise ArchiveError(f"{c.case_id}: preprocessed signal has shape {x.shape}, expected ({T}, 12)")
            buf[len(got)] = x
            got.append(replace(c, n_samples=int(n_valid)))
            if len(got) == len(buf):
                commit()
        commit()
    except BaseException:
        if resume:
            with contextlib.suppress(Exception):
                commit()                             # what was read is kept for the next run
        elif fresh:
            shutil.rmtree(parts, ignore_errors=True)
        raise
    finally:
        close = getattr(bar, "close", None)
        if close is not None:
            close()
    meta = _meta(importer, n_cases=sum(c.case_id in done for c in cases), T=T, dtype=str(dtype), **extra)
    if failed:
        meta["skipped"] = failed
    _finish(out, parts, cases, done, T, dtype, meta)
    return ImportSummary(Archive.open(out), len(cases), len(cases) - n_already - len(failed), n_already,
                         tuple(failed))


def write_archive(out_dir, cases: Sequence[Case], load: Callable[[int], tuple[np.ndarray, int]], *,
                  T: int = 1000, dtype="float16", importer: str = "custom", extra_meta: dict | None = None,
                  on_error: str = "raise", progress: bool = True, overwrite: bool = False) -> Archive:
    """Write an archive folder in one go (:func:`import_records` without resuming); returns the archive."""
    return import_records(out_dir, cases, load, T=T, dtype=dtype, importer=importer, extra_meta=extra_meta,
                          on_error=on_error, progress=progress, overwrite=overwrite).archive


# ------------------------------------------------------------------------------------------------ PTB-XL subset listing

def _read_csv_rows(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            r = csv.DictReader(f)
            rows = list(r)
            return list(r.fieldnames or []), rows
    except FileNotFoundError:
        raise ArchiveError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ArchiveError(f"{path}: unreadable CSV ({e})") from None


def _need_columns(path: Path, have: Sequence[str], need: Sequence[str]) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        raise ArchiveError(f"{path}: missing column(s) {', '.join(missing)}")


def _int_or_none(s, where: str, col: str) -> int | None:
    s = (s or "").strip()
    if not s:
        return None
    try:
        return int(float(s))
    except ValueError:
        raise ArchiveError(f"{where}: column {col!r} is not an integer: {s!r}") from None


def _subset_cases(d: Path) -> tuple[list[Case], np.ndarray]:
    path = d / "cases.csv"
    cols, rows = _read_csv_rows(path)
    _need_columns(path, cols, ["ecg_id", "patient_id", "strat_fold", "super_class", "sub_class", "form",
                               "rhythm", "statements_en", "report_en", "signal_row"])
    items = []
    for k, r in enumerate(rows):
        where = f"{path}:{k + 2}"
        sr = _int_or_none(r["signal_row"], where, "signal_row")
        if sr is None:
            continue
        items.append((sr, Case(
            case_id=f"ptbxl:{int(r['ecg_id'])}", patient_id=str(_int_or_none(r["patient_id"], where, "patient_id")),
            fold=_int_or_none(r["strat_fold"], where, "strat_fold"),
            super_class=split_labels(r["super_class"]), sub_class=split_labels(r["sub_class"]),
            form=split_labels(r["form"]), rhythm=split_labels(r["rhythm"]),
            statements=r["statements_en"].strip(), report=(r["report_en"] or "").strip(), source="ptbxl",
            n_samples=1000)))
    items.sort(key=lambda t: t[0])
    cases = [c for _, c in items]
    _check_unique(cases, str(path))
    rows_arr = np.array([sr for sr, _ in items], dtype=np.int64)
    if len(set(rows_arr.tolist())) != len(rows_arr):
        raise ArchiveError(f"{path}: two cases share a signal_row")
    return cases, rows_arr


_MOVED = ("import_ptbxl_subset", "import_ptbxl", "import_wfdb_folder", "read_scp_statements", "ptbxl_labels")


def __getattr__(name):  # the importers moved to convert.importers; old imports of them keep working
    if name in _MOVED:
        from . import importers
        return getattr(importers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
