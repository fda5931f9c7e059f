"""PTB-XL: the shared, preprocessed subset as an archive, and the PhysioNet download imported into one.

* :func:`open_subset`: the shared subset (``cases.csv``, ``signals_100hz.npy``: already preprocessed) as an
  archive in memory over the memory-mapped npy; :func:`open_archive` opens an archive folder or, by default,
  that subset. :func:`import_ptbxl_subset` writes an archive folder that references the shared npy (nothing is
  copied).
* :func:`import_ptbxl`: the PTB-XL download (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/`` or
  ``records500/``), every record read with :func:`edge.io.read_record` and brought into the archive's space
  with :func:`edge.signal.preprocess`, streamed through :func:`convert.archive_write.import_records`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ArchiveError
from edge.schema import printable

from .archive import Archive, Case, RowView, archive_meta, check_device_rules, check_unique_ids, split_labels
from .archive_write import ImportSummary, already_imported, check_kept, prepare_out, write_reference_archive
from .importers import import_record_files, int_or_none, need_columns, read_csv_rows, record_path

__all__ = [
    "open_subset",
    "open_archive",
    "import_ptbxl",
    "import_ptbxl_subset",
    "read_scp_statements",
    "ptbxl_labels",
    "ptbxl_layout",
]


# ------------------------------------------------------------------------------------------------ PTB-XL subset


def _subset_cases(d: Path) -> tuple[list[Case], np.ndarray]:
    path = d / "cases.csv"
    cols, rows = read_csv_rows(path)
    need_columns(
        path,
        cols,
        [
            "ecg_id",
            "patient_id",
            "strat_fold",
            "super_class",
            "sub_class",
            "form",
            "rhythm",
            "statements_en",
            "report_en",
            "signal_row",
        ],
    )
    items = []
    for k, r in enumerate(rows):
        where = f"{path}:{k + 2}"
        sr = int_or_none(r["signal_row"], where, "signal_row")
        if sr is None:
            continue
        items.append(
            (
                sr,
                Case(
                    case_id=f"ptbxl:{int(r['ecg_id'])}",
                    patient_id=str(int_or_none(r["patient_id"], where, "patient_id")),
                    fold=int_or_none(r["strat_fold"], where, "strat_fold"),
                    super_class=split_labels(r["super_class"]),
                    sub_class=split_labels(r["sub_class"]),
                    form=split_labels(r["form"]),
                    rhythm=split_labels(r["rhythm"]),
                    statements=r["statements_en"].strip(),
                    report=(r["report_en"] or "").strip(),
                    source="ptbxl",
                    n_samples=1000,
                ),
            )
        )
    items.sort(key=lambda t: t[0])
    cases = [c for _, c in items]
    check_unique_ids(cases, str(path))
    rows_arr = np.array([sr for sr, _ in items], dtype=np.int64)
    if len(set(rows_arr.tolist())) != len(rows_arr):
        raise ArchiveError(f"{path}: two cases share a signal_row")
    return cases, rows_arr


def open_subset(data_dir=None) -> Archive:
    """The shared PTB-XL subset (``data_dir``; default: the shared data's ``ptbxl-subset``) as an archive, built
    in memory over the memory-mapped shared npy.

    Only rows with a waveform (``signal_row`` non-empty) become cases; case i is signal row i when the
    subset's rows are 0..N-1 (they are), else a row-mapped view. Nothing is written.
    """
    if data_dir is None:
        from edge.paths import shared_data_dir

        data_dir = shared_data_dir() / "ptbxl-subset"
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
        raise ArchiveError(
            f"{d / 'cases.csv'}: signal_row {int(rows.max())} is beyond the {sig.shape[0]} rows of {spath}"
        )
    signals = sig if np.array_equal(rows, np.arange(sig.shape[0])) else RowView(sig, rows)
    meta = archive_meta(
        "ptbxl_subset",
        T=sig.shape[1],
        dtype=str(sig.dtype),
        signals_path=str(spath.resolve()),
        source_dir=str(d.resolve()),
    )
    return Archive(signals, cases, meta=meta, path=None)


def open_archive(path=None) -> Archive:
    """The archive folder at ``path`` (:meth:`convert.archive.Archive.open`), or the shared PTB-XL subset."""
    return Archive.open(path) if path else open_subset()


def _subset_keep(cases: list[Case], folds: Iterable[int] | None, limit: int | None) -> np.ndarray:
    """The indices of ``cases`` in ``folds`` (None: all), the first ``limit`` of them."""
    keep = np.arange(len(cases))
    if folds is not None:
        fs = {int(f) for f in folds}
        keep = np.array([i for i in keep if cases[i].fold in fs], dtype=np.int64)
    if limit is not None:
        keep = keep[: max(0, int(limit))]
    return keep


def import_ptbxl_subset(
    data_dir, out_dir=None, *, folds: Iterable[int] | None = None, limit: int | None = None, overwrite: bool = False
) -> Archive:
    """The shared PTB-XL subset (already preprocessed: z-scored, 0.5-40 Hz, 100 Hz) as an archive.

    With ``out_dir=None`` nothing is written (same as :func:`open_subset`; ``folds`` and
    ``limit`` are ignored). With ``out_dir``, an archive folder is written whose ``archive.json`` references
    the shared npy (``signals_path``, ``rows``): the signals are never copied. ``folds`` keeps the cases of
    those folds, ``limit`` the first ``limit`` of them (in signal-row order).
    """
    arc = open_subset(data_dir)
    if out_dir is None:
        return arc
    out = prepare_out(out_dir, overwrite)
    cases, rows = _subset_cases(Path(data_dir))
    keep = _subset_keep(cases, folds, limit)
    meta = arc.meta
    meta["rows"] = rows[keep].tolist()
    meta["n_cases"] = len(keep)
    if folds is not None:
        meta["folds"] = sorted({int(f) for f in folds})
    write_reference_archive(out, [cases[i] for i in keep], meta)
    return Archive.open(out)


def ptbxl_layout(d) -> str:
    """``"download"`` (PTB-XL as PhysioNet distributes it) or ``"subset"`` (the shared, preprocessed subset)
    for a folder; an ArchiveError saying what is missing for anything else."""
    d = Path(d)
    if not d.is_dir():
        raise ArchiveError(f"{d}: no such folder")
    if (d / "ptbxl_database.csv").is_file():
        return "download"
    if (d / "cases.csv").is_file() and (d / "signals_100hz.npy").is_file():
        return "subset"
    raise ArchiveError(
        f"{d}: neither a PTB-XL download (ptbxl_database.csv, scp_statements.csv, records100/) "
        f"nor the shared PTB-XL subset (cases.csv, signals_100hz.npy)"
    )


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
    cols, rows = read_csv_rows(p)
    code_col = cols[0] if cols else ""
    need_columns(p, cols, ["description", "diagnostic", "form", "rhythm", "diagnostic_class", "diagnostic_subclass"])
    out = {}
    for r in rows:
        code = (r[code_col] or "").strip()
        if not code:
            continue
        out[code] = {
            "description": (r["description"] or "").strip(),
            "diagnostic": _truthy(r["diagnostic"]),
            "form": _truthy(r["form"]),
            "rhythm": _truthy(r["rhythm"]),
            "class": (r["diagnostic_class"] or "").strip(),
            "subclass": (r["diagnostic_subclass"] or "").strip(),
        }
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
    sup = sorted({n(statements[c]["class"]) for c in known if statements[c]["diagnostic"] and statements[c]["class"]})
    sub = sorted(
        {n(statements[c]["subclass"]) for c in known if statements[c]["diagnostic"] and statements[c]["subclass"]}
    )
    form = sorted({n(c) for c in known if statements[c]["form"]})
    rhythm = sorted({n(c) for c in known if statements[c]["rhythm"]})
    order = (
        [c for c in known if statements[c]["rhythm"]]
        + [c for c in known if statements[c]["diagnostic"]]
        + [c for c in known if statements[c]["form"] and not statements[c]["diagnostic"]]
    )
    seen, desc = set(), []
    for c in order:
        if c not in seen and statements[c]["description"]:
            seen.add(c)
            desc.append(statements[c]["description"])
    return {
        "super_class": tuple(sup),
        "sub_class": tuple(sub),
        "form": tuple(form),
        "rhythm": tuple(rhythm),
        "statements": "; ".join(desc),
    }


def _ptbxl_listing(d: Path, resolution: str, folds, limit) -> tuple[list[Case], list[Path]]:
    """The cases and record paths ``ptbxl_database.csv`` lists (of ``folds``, the first ``limit``)."""
    db = d / "ptbxl_database.csv"
    cols, rows = read_csv_rows(db)
    fcol = f"filename_{resolution}"
    need_columns(db, cols, ["ecg_id", "patient_id", "scp_codes", "strat_fold", fcol])
    statements = read_scp_statements(d / "scp_statements.csv")
    fold_set = None if folds is None else {int(f) for f in folds}
    cases: list[Case] = []
    paths: list[Path] = []
    for k, r in enumerate(rows):
        if limit is not None and len(cases) >= limit:
            break
        where = f"{db}:{k + 2}"
        fold = int_or_none(r["strat_fold"], where, "strat_fold")
        if fold_set is not None and fold not in fold_set:
            continue
        try:
            codes = ast.literal_eval(r["scp_codes"] or "{}")
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: {[]: 1}
            raise ArchiveError(
                f"{where}: scp_codes is not a dict literal: {printable(repr(r['scp_codes']), 80)}"
            ) from None
        if not isinstance(codes, dict) or not all(isinstance(c, str) for c in codes):
            raise ArchiveError(f"{where}: scp_codes is not a dict of codes: {printable(repr(r['scp_codes']), 80)}")
        lab = ptbxl_labels(codes, statements)
        pid = int_or_none(r["patient_id"], where, "patient_id")
        cases.append(
            Case(
                case_id=f"ptbxl:{int_or_none(r['ecg_id'], where, 'ecg_id')}",
                patient_id=None if pid is None else str(pid),
                fold=fold,
                report=(r.get("report") or "").strip(),
                source="ptbxl",
                **lab,
            )
        )
        check_device_rules(cases[-1:], where)
        paths.append(record_path(d, (r[fcol] or "").strip(), where))
    check_unique_ids(cases, str(db))
    return cases, paths


def import_ptbxl(
    ptbxl_dir,
    out_dir,
    *,
    resolution: str = "lr",
    folds: Iterable[int] | None = None,
    limit: int | None = None,
    notch_hz: float | None = None,
    **options: Any,
) -> ImportSummary:
    """Import PTB-XL into an archive folder: the original download (``ptbxl_database.csv``,
    ``scp_statements.csv``, ``records100/`` or ``records500/``), or the shared subset's folder (then
    :func:`import_ptbxl_subset`: nothing is read record by record or copied).

    ``resolution``: ``'lr'`` reads ``filename_lr`` (records100), ``'hr'`` ``filename_hr`` (records500); both
    are preprocessed to the archive's 100 Hz, 10 s, z-scored 12 leads by :func:`edge.signal.preprocess`
    (``notch_hz`` defaults to None, as PTB-XL's own processing used no notch). Case ids ``ptbxl:<ecg_id>``.
    ``folds`` keeps those ``strat_fold`` values, ``limit`` the first ``limit`` records listed. ``options`` are
    :func:`convert.archive_write.import_records`'s (dtype, on_error, progress, overwrite, resume, report).
    """
    d = Path(ptbxl_dir)
    if resolution not in ("lr", "hr"):
        raise ValueError("resolution must be 'lr' or 'hr'")
    if ptbxl_layout(d) == "subset":
        out, overwrite = Path(out_dir), bool(options.get("overwrite", False))
        before = already_imported(out, overwrite, "ptbxl_subset", str(d.resolve()))
        cases, _ = _subset_cases(d)
        check_kept(out, before, [cases[i] for i in _subset_keep(cases, folds, limit)], "the archive there")
        arc = import_ptbxl_subset(d, out, folds=folds, limit=limit, overwrite=True)  # references: cheap
        n_already = len(before & set(arc.ids))
        return ImportSummary(arc, len(arc), len(arc) - n_already, n_already)
    cases, paths = _ptbxl_listing(d, resolution, folds, limit)
    meta = {"source_dir": str(d.resolve()), "resolution": resolution, "notch_hz": notch_hz}
    return import_record_files(
        out_dir, cases, paths, T=1000, notch_hz=notch_hz, importer="ptbxl", extra_meta=meta, **options
    )
