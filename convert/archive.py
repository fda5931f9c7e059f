"""The case archive the toolkit works on: the data model (:class:`Case`, :class:`Archive`) and its reading.

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
  ``created`` (UTC ISO time), importer details, ``n_skipped`` (the records that could not be imported) and
  ``skipped`` (the first 100 of them, each ``{"case_id", "error"}``). It is written last: a folder without it is
  not (yet) an archive.
* while an import runs (or after it was interrupted): ``import-parts/`` with ``plan.json`` (the importer and
  its settings) and ``part-NNNNNN.npy`` + ``part-NNNNNN.jsonl`` (up to 64 records each, the ``.jsonl`` written
  after its ``.npy``); see :func:`convert.archive_write.import_records`.

The streaming, resumable writer is :mod:`convert.archive_write`; the importers that read clinical sources are
:mod:`convert.ptbxl` (the shared PTB-XL subset and the PTB-XL download) and :mod:`convert.importers` (WFDB
folders).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import ArchiveError, ConfigError
from edge.leads import LEADS12

FORMAT_VERSION = 1
FS = 100
SIGNALS_FILE = "signals.npy"
CASES_FILE = "cases.jsonl"
META_FILE = "archive.json"
PARTS_DIR = "import-parts"  # an import in progress: its committed chunks of records (convert.archive_write)

__all__ = [
    "Case",
    "Archive",
    "read_cases",
    "join_text",
    "split_labels",
    "subset",
    "check_device_rules",
    "FORMAT_VERSION",
    "PARTS_DIR",
]

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
        """The case's ``cases.jsonl`` object: label tuples as lists, ``extra`` merged in (never over a field)."""
        d = asdict(self)
        for k in _LIST_FIELDS:
            d[k] = list(d[k])
        extra = d.pop("extra")
        d.update({k: v for k, v in extra.items() if k not in d})
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "case") -> Case:
        """A Case from a ``cases.jsonl`` object: labels as lists or ``;``-joined strings, unknown keys kept in
        ``extra``. Raises :class:`ArchiveError` naming ``where``, the field and the case id."""
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
        return cls(
            case_id=cid,
            patient_id=None if pid is None else str(pid),
            fold=fold,
            statements=d.get("statements", ""),
            report=d.get("report", "") or "",
            source=d.get("source", ""),
            n_samples=n,
            extra={k: v for k, v in d.items() if k not in known},
            **kw,
        )


def join_text(statements: str, report: str) -> str:
    """``statements`` and ``report`` stripped and joined as ``"statements. report"`` (the statements' trailing
    periods not doubled); either alone when the other is empty."""
    s, r = (statements or "").strip(), (report or "").strip()
    if s and r:
        return f"{s.rstrip('.')}. {r}"
    return s or r


def split_labels(s: str | None) -> tuple[str, ...]:
    """``'CD;MI'`` -> ``('CD', 'MI')``; empty/None -> ``()``."""
    return tuple(p.strip() for p in (s or "").split(";") if p.strip())


class RowView:
    """Read-only view of a (M, T, 12) array through a row mapping: ``view[i] == base[rows[i]]``."""

    def __init__(self, base: np.ndarray, rows: np.ndarray):
        self.base, self.rows = base, rows

    @property
    def shape(self):
        """(len(rows), T, 12)."""
        return (len(self.rows),) + tuple(self.base.shape[1:])

    @property
    def dtype(self):
        """The base array's dtype."""
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
                raise ArchiveError(
                    f"{where}: duplicate case id {c.case_id!r} (lines {index[c.case_id] + 1} and {i + 1})"
                )
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
        """The cases in row order (case i = signal row i)."""
        return self._cases

    @property
    def ids(self) -> tuple[str, ...]:
        """The case ids in row order."""
        return self._ids

    @property
    def meta(self) -> dict:
        """A copy of the ``archive.json`` fields (``n_cases`` and ``T`` as built)."""
        return dict(self._meta)

    @property
    def path(self) -> Path | None:
        """The archive folder; None for an archive built in memory."""
        return self._path

    @property
    def T(self) -> int:
        """Samples per signal row (the padded length)."""
        return int(self._signals.shape[1])

    @property
    def fs(self) -> int:
        """The signals' sampling rate, Hz (100)."""
        return int(self._meta.get("fs", FS))

    def signal(self, i: int) -> np.ndarray:
        """Case i's signal, float32 (T, 12)."""
        return np.asarray(self._signals[int(i)], dtype=np.float32)

    def batch(self, indices) -> np.ndarray:
        """Signals of several cases, float32 (len(indices), T, 12)."""
        idx = np.asarray(indices, dtype=np.int64)
        if isinstance(self._signals, RowView):
            return self._signals[idx].astype(np.float32)
        order = np.argsort(idx, kind="stable")
        out = np.empty((len(idx), self.T, 12), np.float32)
        out[order] = self._signals[idx[order]]
        return out

    def index_of(self, case_id: str) -> int:
        """The row of ``case_id``; :class:`ArchiveError` when the archive does not hold it."""
        try:
            return self._index[case_id]
        except KeyError:
            raise ArchiveError(f"case id {case_id!r} is not in the archive") from None

    def text(self, i: int) -> str:
        """The text the teacher embeds for case i: statements, then the report when there is one."""
        return self._cases[int(i)].text

    def texts(self) -> list[str]:
        """Every case's text (:attr:`Case.text`), in row order."""
        return [c.text for c in self._cases]

    def select(
        self,
        folds: Iterable[int] | int | None = None,
        *,
        sources: Iterable[str] | None = None,
        with_report: bool | None = None,
    ) -> np.ndarray:
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

    def training_split(
        self, train_folds: Iterable[int], val_folds: Iterable[int], batch_size: int, who: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """The indices of the training and the validation folds (:meth:`select`); :class:`ConfigError` (``who``:
        the model trained, for the message) when the training folds hold fewer cases than one batch."""
        train, val = self.select(folds=train_folds), self.select(folds=val_folds)
        if len(train) < batch_size:
            raise ConfigError(
                f"{who}: {len(train)} training cases in folds {list(train_folds)}, fewer than one batch of {batch_size}"
            )
        return train, val

    # ------------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path) -> Archive:
        """Open an archive folder, validating archive.json, cases.jsonl and the signals' shape."""
        d = Path(path)
        mpath = d / META_FILE
        if not d.is_dir():
            raise ArchiveError(f"{d}: not an archive folder (no such directory)")
        if not mpath.exists():
            if (d / PARTS_DIR).is_dir():
                raise ArchiveError(
                    f"{mpath}: missing: the import into {d} did not finish; run the same import "
                    f"command again to finish it"
                )
            raise ArchiveError(f"{mpath}: missing; {d} is not a case archive")
        try:
            meta = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{mpath}: unreadable ({e})") from None
        if not isinstance(meta, dict):
            raise ArchiveError(f"{mpath}: expected a JSON object")
        ver = meta.get("format_version")
        if not isinstance(ver, int) or ver > FORMAT_VERSION or ver < 1:
            raise ArchiveError(
                f"{mpath}: unsupported format_version {ver!r} (this toolkit reads up to {FORMAT_VERSION})"
            )
        if meta.get("fs", FS) != FS or list(meta.get("leads", LEADS12)) != list(LEADS12):
            raise ArchiveError(
                f"{mpath}: archives hold 100 Hz signals in LEADS12 order; this one says "
                f"fs={meta.get('fs')!r}, leads={meta.get('leads')!r}"
            )
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
            raise ArchiveError(f"{spath}: expected float16/float32 of shape (N, T, 12), got {sig.dtype} {sig.shape}")
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
            signals = RowView(sig, rows)
        else:
            signals = sig
        return cls(signals, cases, meta=meta, path=d)


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


def archive_meta(importer: str, **kw) -> dict:
    """The ``archive.json`` fields every importer writes (format version, ``fs``, ``leads``, ``importer``,
    ``created``: now, UTC) updated with ``kw``."""
    m = {
        "format_version": FORMAT_VERSION,
        "fs": FS,
        "leads": list(LEADS12),
        "importer": importer,
        "created": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
    }
    m.update(kw)
    return m


def check_device_rules(cases: Iterable[Case], where: str) -> None:
    """Raise :class:`ArchiveError` (prefixed ``where``) at the first case the device would refuse in a bundle, by
    the device's own rules (:func:`edge.schema.case_problem`: the id, fold, source and label names)."""
    from edge.schema import case_problem, printable

    for c in cases:
        bad = case_problem(c.to_dict())
        if bad:
            raise ArchiveError(
                f"{where}: case {printable(repr(c.case_id), 80)}: {bad[0]} {bad[1]} (the device refuses a bundle "
                f"holding it)"
            )


def check_unique_ids(cases: Sequence[Case], where: str) -> None:
    """Raise :class:`ArchiveError` (prefixed ``where``) at the first case id that occurs twice."""
    seen = set()
    for c in cases:
        if c.case_id in seen:
            raise ArchiveError(f"{where}: duplicate case id {c.case_id!r}")
        seen.add(c.case_id)


def subset(archive: Archive, rows) -> Archive:
    """The cases ``rows`` of ``archive`` (in that order) as an archive over the same signals (no copy)."""
    rows = np.asarray(rows, np.int64)
    if len(rows) == len(archive):
        return archive
    sig = archive.signals
    view = RowView(sig, rows) if not isinstance(sig, RowView) else RowView(sig.base, sig.rows[rows])
    return Archive(view, [archive.cases[int(i)] for i in rows], meta=archive.meta, path=archive.path)
