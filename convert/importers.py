"""What the record importers share, and the WFDB folder importer.

* :func:`read_csv_rows`, :func:`need_columns`, :func:`int_or_none`: reading a source's CSV listing, errors naming
  the file, line and column;
* :func:`preprocess_loader`: a record file read with :func:`edge.io.read_record` and brought into the archive's
  space with :func:`edge.signal.preprocess` (the device and the archive share one reader and one signal path);
* :func:`import_wfdb_folder`: any folder of WFDB records plus a CSV of their reports.

Record importers (this one and :func:`convert.ptbxl.import_ptbxl`) stream through
:func:`convert.archive_write.import_records`: 64 records at a time are held and committed, a resumed run skips
what the folder already holds, a bad record is reported (one line) and left out while the rest is imported, and
the archive is published only when every record was tried.
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge.errors import ArchiveError
from edge.schema import printable

from .archive import FS, Case, check_device_rules, check_unique_ids, split_labels
from .archive_write import ImportSummary, import_records

__all__ = [
    "import_wfdb_folder",
    "import_record_files",
    "preprocess_loader",
    "read_csv_rows",
    "need_columns",
    "int_or_none",
    "record_path",
    "Report",
]

Report = Callable[[str], None]


MAX_CSV_ROWS = 200_000  # 9 times PTB-XL; a listing is held in memory (about 2 kB a row with its case)


def read_csv_rows(path: Path, max_rows: int = MAX_CSV_ROWS) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts) of a UTF-8 CSV file (a byte-order mark, as Excel writes, is allowed); at most
    ``max_rows`` rows. :class:`ArchiveError` when it is missing, not a regular file, unreadable, holds an
    unterminated quote or more rows than that."""
    rows: list[dict] = []
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would hang the read, a device never end
            raise ArchiveError(f"{path}: not a regular file (a folder, FIFO or device)")
        with open(path, newline="", encoding="utf-8-sig") as f:
            r = csv.DictReader(f, strict=True)  # strict: an unterminated quote is an error, not the rest of the file
            for row in r:
                if len(rows) == max_rows:
                    raise ArchiveError(
                        f"{path}: more than {max_rows:,} rows; import it as several archives of at most that many"
                    )
                rows.append(row)
            return list(r.fieldnames or []), rows
    except FileNotFoundError:
        raise ArchiveError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        at = f":{len(rows) + 2}" if isinstance(e, csv.Error) else ""  # the row it stopped in, as the listings count
        raise ArchiveError(f"{path}{at}: unreadable CSV ({printable(str(e), 120)})") from None


def need_columns(path: Path, have: Sequence[str], need: Sequence[str]) -> None:
    """Raise :class:`ArchiveError` naming ``path`` and the columns of ``need`` that ``have`` lacks."""
    missing = [c for c in need if c not in have]
    if missing:
        raise ArchiveError(f"{path}: missing column(s) {', '.join(missing)}")


def int_or_none(s, where: str, col: str) -> int | None:
    """A CSV cell as an int (``"3"`` or ``"3.0"``), None when blank; :class:`ArchiveError` naming ``where`` and
    ``col`` when it is not a number."""
    s = (s or "").strip()
    if not s:
        return None
    try:
        return int(float(s))
    except (ValueError, OverflowError):  # not a number; nan; inf, 1e400
        raise ArchiveError(f"{where}: column {col!r} is not an integer: {printable(repr(s), 80)}") from None


def record_path(folder: Path, rel: str, where: str) -> Path:
    """``folder / rel``, a record a listing names: :class:`ArchiveError` naming ``where`` and ``rel`` unless it
    and the files of the record (``rel``, ``rel.hea``, ``.mat``, ``.dat``) resolve inside ``folder``, so that
    no ``..``, absolute path or symbolic link in a listing reads a file outside the folder it was given."""
    root = folder.resolve()
    p = folder / rel
    files = [p.with_name(p.name + ext) for ext in (".hea", ".mat", ".dat")] if p.name else []
    for q in (p, *files):
        if not q.resolve().is_relative_to(root):
            raise ArchiveError(f"{where}: record {rel!r} is outside {folder}; records must be inside it")
    return p


def preprocess_loader(paths: Sequence[Path], *, fs: float | None, notch_hz: float | None, T: int):
    """``load(i) -> (signal (T, 12), n_valid)`` for :func:`convert.archive_write.import_records`: ``paths[i]``
    read by :func:`edge.io.read_record` (``fs``: the rate of a file that does not state one) and preprocessed to
    ``T`` samples at 100 Hz (``notch_hz``: the mains notch, None: none); :class:`ArchiveError` for a missing file."""
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


# ------------------------------------------------------------------------------------------------ generic WFDB


def _wfdb_listing(folder: Path, tpath: Path, source: str) -> tuple[list[Case], list[Path]]:
    cols, rows = read_csv_rows(tpath)
    need_columns(tpath, cols, ["record"])
    if "text" not in cols and "report" not in cols and "statements" not in cols:
        raise ArchiveError(f"{tpath}: needs a 'text' or 'report' column")
    cases: list[Case] = []
    paths: list[Path] = []
    for k, r in enumerate(rows):
        where = f"{tpath}:{k + 2}"
        rec = (r.get("record") or "").strip()
        if not rec:
            raise ArchiveError(f"{where}: empty 'record'")
        stem = rec[:-4] if rec.lower().endswith((".hea", ".mat", ".dat")) else rec
        pid = (r.get("patient_id") or "").strip() or None
        cases.append(
            case := Case(
                case_id=f"{source}:{stem}",
                patient_id=pid,
                fold=int_or_none(r.get("fold"), where, "fold"),
                super_class=split_labels(r.get("super_class")),
                sub_class=split_labels(r.get("sub_class")),
                form=split_labels(r.get("form")),
                rhythm=split_labels(r.get("rhythm")),
                statements=(r.get("statements") or "").strip(),
                report=((r.get("text") or r.get("report")) or "").strip(),
                source=source,
            )
        )
        check_device_rules([case], where)
        paths.append(record_path(folder, stem, where))
    check_unique_ids(cases, str(tpath))
    return cases, paths


def import_record_files(
    out_dir,
    cases: Sequence[Case],
    paths: Sequence[Path],
    *,
    T: int,
    notch_hz: float | None,
    importer: str,
    extra_meta: dict,
    **options: Any,
) -> ImportSummary:
    """Import record files (case i is ``paths[i]``, read and preprocessed to ``T`` samples by
    :func:`preprocess_loader`) into ``out_dir`` with :func:`convert.archive_write.import_records`; ``options`` are
    its dtype, on_error, progress, overwrite, resume and report."""
    load = preprocess_loader(paths, fs=None, notch_hz=notch_hz, T=T)
    return import_records(out_dir, cases, load, T=T, importer=importer, extra_meta=extra_meta, **options)


def import_wfdb_folder(
    folder,
    texts_csv,
    out_dir,
    *,
    source: str = "wfdb",
    duration_s: float = 10.0,
    notch_hz: float | None = 50.0,
    limit: int | None = None,
    **options: Any,
) -> ImportSummary:
    """Import a folder of WFDB records described by a CSV of reports into an archive folder.

    CSV columns: ``record`` (the file stem, or a path relative to ``folder``), ``text`` or ``report`` (the
    report text), and optionally ``statements``, ``super_class``, ``sub_class``, ``form``, ``rhythm``
    (``;``-separated), ``patient_id``, ``fold``. Case ids are ``<source>:<record>``. ``notch_hz`` (default
    50 Hz, the bundles' own setting) is the mains notch of :func:`edge.signal.preprocess`. ``options`` are
    :func:`convert.archive_write.import_records`'s (dtype, on_error, progress, overwrite, resume, report).
    """
    folder, tpath = Path(folder), Path(texts_csv)
    if not folder.is_dir():
        raise ArchiveError(f"{folder}: no such folder")
    cases, paths = _wfdb_listing(folder, tpath, source)
    if limit is not None:
        cases, paths = cases[: max(0, int(limit))], paths[: max(0, int(limit))]
    meta = {
        "source_dir": str(folder.resolve()),
        "texts_csv": str(tpath.resolve()),
        "source": source,
        "notch_hz": notch_hz,
    }
    return import_record_files(
        out_dir,
        cases,
        paths,
        T=int(round(duration_s * FS)),
        notch_hz=notch_hz,
        importer="wfdb_folder",
        extra_meta=meta,
        **options,
    )
