"""The case archive the toolkit works on, and importers that build one.

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
  ``created`` (UTC ISO time) and importer details.

Importers: :func:`import_ptbxl_subset` (the shared, already preprocessed subset; no copy),
:func:`import_ptbxl` (the original PTB-XL download layout) and :func:`import_wfdb_folder` (any folder of WFDB
records plus a CSV of texts). The last two read records with :func:`edge.io.read_record` and bring them into the
archive's space with :func:`edge.signal.preprocess`, so the archive and the device share one signal path.
"""
from __future__ import annotations

import ast
import csv
import datetime as _dt
import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edge.atomicio import atomic_open, atomic_path, atomic_write, publish, staging_dir
from edge.errors import ArchiveError, EcgretError
from edge.leads import LEADS12

FORMAT_VERSION = 1
FS = 100
SIGNALS_FILE = "signals.npy"
CASES_FILE = "cases.jsonl"
META_FILE = "archive.json"

__all__ = ["Case", "Archive", "write_archive", "read_cases", "import_ptbxl_subset", "import_ptbxl",
           "import_wfdb_folder", "read_scp_statements", "ptbxl_labels", "join_text", "split_labels",
           "FORMAT_VERSION"]

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

def write_archive(out_dir, cases: Sequence[Case], load: Callable[[int], tuple[np.ndarray, int]], *,
                  T: int = 1000, dtype="float16", importer: str = "custom", extra_meta: dict | None = None,
                  on_error: str = "raise", progress: bool = True, overwrite: bool = False) -> Archive:
    """Write an archive folder, streaming: ``load(i)`` returns case i's (T, 12) signal and its valid length.

    ``on_error='raise'`` turns the first :class:`~edge.errors.EcgretError` into an ArchiveError (it names the
    file); ``'skip'`` leaves such cases out and lists them in ``archive.json`` (``skipped``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    dtype = np.dtype(dtype)
    if dtype not in (np.float16, np.float32):
        raise ArchiveError(f"archive dtype must be float16 or float32, not {dtype}")
    out = _prepare_out(out_dir, overwrite)
    _check_unique(cases, str(out))
    for name in (SIGNALS_FILE, CASES_FILE, META_FILE):
        if (out / name).exists():
            (out / name).unlink()
    n = len(cases)
    kept: list[Case] = []
    skipped: list[dict] = []
    with staging_dir(out) as scratch:  # a private folder: removed, with the partial file, if anything fails
        tmp = scratch / SIGNALS_FILE
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(n, T, 12))
        for i in _progress(range(n), n, f"importing {out.name}", progress):
            c = cases[i]
            try:
                x, n_valid = load(i)
            except EcgretError as e:
                if on_error == "raise":
                    raise ArchiveError(f"{c.case_id}: {e}") from None
                skipped.append({"case_id": c.case_id, "error": str(e)})
                continue
            x = np.asarray(x, dtype=np.float32)
            if x.shape != (T, 12):
                raise ArchiveError(f"{c.case_id}: preprocessed signal has shape {x.shape}, expected ({T}, 12)")
            mm[len(kept)] = x
            kept.append(replace(c, n_samples=int(n_valid)))
        mm.flush()
        del mm
        if len(kept) < n:  # compact: copy the kept rows into a right-sized file, chunk by chunk
            src = np.load(tmp, mmap_mode="r")
            with atomic_path(out / SIGNALS_FILE, suffix=".npy") as small:
                dst = np.lib.format.open_memmap(small, mode="w+", dtype=dtype, shape=(len(kept), T, 12))
                for a in range(0, len(kept), 512):
                    dst[a:a + 512] = src[a:min(a + 512, len(kept))]
                dst.flush()
                del dst, src
        else:
            publish(tmp, out / SIGNALS_FILE)
    meta = _meta(importer, n_cases=len(kept), T=T, dtype=str(dtype), **(extra_meta or {}))
    if skipped:
        meta["skipped"] = skipped
    _write_meta_and_cases(out, kept, meta)
    return Archive.open(out)


def _preprocess_loader(paths: Sequence[Path], *, fs: float | None, notch_hz: float | None, T: int):
    from edge.io import read_record
    from edge.signal import preprocess

    def load(i: int):
        p = paths[i]
        if not (p.exists() or p.with_name(p.name + ".hea").exists()):
            raise ArchiveError(f"{p}: record file missing")
        rec = read_record(p, fs=fs)
        pre = preprocess(rec, target_fs=FS, duration_s=T / FS, notch_hz=notch_hz)
        return pre.signal, pre.n_valid

    return load


# ------------------------------------------------------------------------------------------------ PTB-XL subset

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


def import_ptbxl_subset(data_dir, out_dir=None, *, overwrite: bool = False) -> Archive:
    """The shared PTB-XL subset (already preprocessed: z-scored, 0.5-40 Hz, 100 Hz) as an archive.

    With ``out_dir=None`` nothing is written (same as :meth:`Archive.from_ptbxl_subset`). With ``out_dir``, an
    archive folder is written whose ``archive.json`` references the shared npy (``signals_path``, ``rows``):
    the 39 MB of signals are never copied.
    """
    arc = Archive.from_ptbxl_subset(data_dir)
    if out_dir is None:
        return arc
    out = _prepare_out(out_dir, overwrite)
    d = Path(data_dir)
    _, rows = _subset_cases(d)
    meta = arc.meta
    meta["rows"] = rows.tolist()
    _write_meta_and_cases(out, arc.cases, meta)
    if (out / SIGNALS_FILE).exists():
        (out / SIGNALS_FILE).unlink()
    return Archive.open(out)


# ------------------------------------------------------------------------------------------------ PTB-XL original

def _truthy(s) -> bool:
    s = (s or "").strip()
    try:
        return float(s) == 1.0
    except ValueError:
        return False


def read_scp_statements(path) -> dict[str, dict]:
    """PTB-XL's ``scp_statements.csv`` as {code: {description, diagnostic, form, rhythm, class, subclass}}."""
    p = Path(path)
    cols, rows = _read_csv_rows(p)
    code_col = cols[0] if cols else ""
    _need_columns(p, cols, ["description", "diagnostic", "form", "rhythm", "diagnostic_class",
                            "diagnostic_subclass"])
    out = {}
    for r in rows:
        code = (r[code_col] or "").strip()
        if not code:
            continue
        out[code] = {"description": (r["description"] or "").strip(), "diagnostic": _truthy(r["diagnostic"]),
                     "form": _truthy(r["form"]), "rhythm": _truthy(r["rhythm"]),
                     "class": (r["diagnostic_class"] or "").strip(),
                     "subclass": (r["diagnostic_subclass"] or "").strip()}
    return out


def _norm_label(code: str) -> str:
    """PTB-XL codes and subclasses without their padding underscores (``NST_`` -> ``NST``, ``_AVB`` -> ``AVB``),
    the spelling the shared subset's labels use."""
    return code.strip().strip("_")


def ptbxl_labels(scp_codes: dict, statements: dict[str, dict]) -> dict:
    """Labels and the statement text of one PTB-XL record from its ``scp_codes`` dict.

    Label names drop PTB-XL's padding underscores (``NST_`` -> ``NST``) to match the shared subset.

    All codes count, whatever their likelihood (PTB-XL gives 0 to non-diagnostic statements). super_class and
    sub_class: the diagnostic class/subclass of the diagnostic codes; form: codes with form == 1; rhythm:
    codes with rhythm == 1 (each sorted). Statements: the codes' descriptions joined by ``'; '``, rhythm
    first, then diagnostic, then form-only codes, each in the record's order. Unknown codes are ignored.
    """
    known = [c for c in scp_codes if c in statements]
    n = _norm_label
    sup = sorted({n(statements[c]["class"]) for c in known
                  if statements[c]["diagnostic"] and statements[c]["class"]})
    sub = sorted({n(statements[c]["subclass"]) for c in known
                  if statements[c]["diagnostic"] and statements[c]["subclass"]})
    form = sorted({n(c) for c in known if statements[c]["form"]})
    rhythm = sorted({n(c) for c in known if statements[c]["rhythm"]})
    order = ([c for c in known if statements[c]["rhythm"]] + [c for c in known if statements[c]["diagnostic"]]
             + [c for c in known if statements[c]["form"] and not statements[c]["diagnostic"]])
    seen, desc = set(), []
    for c in order:
        if c not in seen and statements[c]["description"]:
            seen.add(c)
            desc.append(statements[c]["description"])
    return {"super_class": tuple(sup), "sub_class": tuple(sub), "form": tuple(form), "rhythm": tuple(rhythm),
            "statements": "; ".join(desc)}


def import_ptbxl(ptbxl_dir, out_dir, *, resolution: str = "lr", folds: Iterable[int] | None = None,
                 limit: int | None = None, dtype="float16", notch_hz: float | None = None,
                 on_error: str = "raise", progress: bool = True, overwrite: bool = False) -> Archive:
    """Import the original PTB-XL download (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/`` or
    ``records500/``) into an archive folder.

    ``resolution``: ``'lr'`` reads ``filename_lr`` (records100), ``'hr'`` ``filename_hr`` (records500); both
    are preprocessed to the archive's 100 Hz, 10 s, z-scored 12 leads by :func:`edge.signal.preprocess`
    (``notch_hz`` defaults to None, as PTB-XL's own processing used no notch). Case ids ``ptbxl:<ecg_id>``.
    """
    d = Path(ptbxl_dir)
    if resolution not in ("lr", "hr"):
        raise ValueError("resolution must be 'lr' or 'hr'")
    db = d / "ptbxl_database.csv"
    cols, rows = _read_csv_rows(db)
    fcol = f"filename_{resolution}"
    _need_columns(db, cols, ["ecg_id", "patient_id", "scp_codes", "strat_fold", fcol])
    statements = read_scp_statements(d / "scp_statements.csv")
    fold_set = None if folds is None else {int(f) for f in folds}
    cases, paths = [], []
    for k, r in enumerate(rows):
        where = f"{db}:{k + 2}"
        fold = _int_or_none(r["strat_fold"], where, "strat_fold")
        if fold_set is not None and fold not in fold_set:
            continue
        try:
            codes = ast.literal_eval(r["scp_codes"] or "{}")
        except (ValueError, SyntaxError):
            raise ArchiveError(f"{where}: scp_codes is not a dict literal: {r['scp_codes']!r}") from None
        if not isinstance(codes, dict):
            raise ArchiveError(f"{where}: scp_codes is not a dict literal: {r['scp_codes']!r}")
        lab = ptbxl_labels(codes, statements)
        pid = _int_or_none(r["patient_id"], where, "patient_id")
        cases.append(Case(case_id=f"ptbxl:{_int_or_none(r['ecg_id'], where, 'ecg_id')}",
                          patient_id=None if pid is None else str(pid), fold=fold,
                          report=(r.get("report") or "").strip(), source="ptbxl", **lab))
        paths.append(d / r[fcol].strip())
        if limit is not None and len(cases) >= limit:
            break
    _check_unique(cases, str(db))
    T = 1000
    load = _preprocess_loader(paths, fs=None, notch_hz=notch_hz, T=T)
    return write_archive(out_dir, cases, load, T=T, dtype=dtype, importer="ptbxl", on_error=on_error,
                         progress=progress, overwrite=overwrite,
                         extra_meta={"source_dir": str(d.resolve()), "resolution": resolution,
                                     "notch_hz": notch_hz})


# ------------------------------------------------------------------------------------------------ generic WFDB

def import_wfdb_folder(folder, texts_csv, out_dir, *, source: str = "wfdb", dtype="float16",
                       duration_s: float = 10.0, notch_hz: float | None = 50.0, on_error: str = "raise",
                       progress: bool = True, overwrite: bool = False) -> Archive:
    """Import a folder of WFDB records described by a CSV of texts into an archive folder.

    CSV columns: ``record`` (the file stem, or a path relative to ``folder``), ``text`` or ``report`` (the
    report text), and optionally ``statements``, ``super_class``, ``sub_class``, ``form``, ``rhythm``
    (``;``-separated), ``patient_id``, ``fold``. Case ids are ``<source>:<record>``.
    """
    folder = Path(folder)
    tpath = Path(texts_csv)
    cols, rows = _read_csv_rows(tpath)
    _need_columns(tpath, cols, ["record"])
    if "text" not in cols and "report" not in cols and "statements" not in cols:
        raise ArchiveError(f"{tpath}: needs a 'text' or 'report' column")
    cases, paths = [], []
    for k, r in enumerate(rows):
        where = f"{tpath}:{k + 2}"
        rec = (r.get("record") or "").strip()
        if not rec:
            raise ArchiveError(f"{where}: empty 'record'")
        stem = rec[:-4] if rec.lower().endswith((".hea", ".mat", ".dat")) else rec
        pid = (r.get("patient_id") or "").strip() or None
        cases.append(Case(case_id=f"{source}:{stem}", patient_id=pid,
                          fold=_int_or_none(r.get("fold"), where, "fold"),
                          super_class=split_labels(r.get("super_class")), sub_class=split_labels(r.get("sub_class")),
                          form=split_labels(r.get("form")), rhythm=split_labels(r.get("rhythm")),
                          statements=(r.get("statements") or "").strip(),
                          report=((r.get("text") or r.get("report")) or "").strip(), source=source))
        paths.append(folder / stem)
    _check_unique(cases, str(tpath))
    T = int(round(duration_s * FS))
    load = _preprocess_loader(paths, fs=None, notch_hz=notch_hz, T=T)
    return write_archive(out_dir, cases, load, T=T, dtype=dtype, importer="wfdb_folder", on_error=on_error,
                         progress=progress, overwrite=overwrite,
                         extra_meta={"source_dir": str(folder.resolve()), "texts_csv": str(tpath.resolve()),
                                     "notch_hz": notch_hz})
