"""Importers: clinical sources -> case archives (:mod:`convert.archive`), and the ``ecgret-convert import``
commands.

* :func:`import_ptbxl`: the PTB-XL download (``ptbxl_database.csv``, ``scp_statements.csv``, ``records100/`` or
  ``records500/``), every record read with :func:`edge.io.read_record` and brought into the archive's space
  with :func:`edge.signal.preprocess`; or, given the shared subset's folder (``cases.csv``,
  ``signals_100hz.npy``: already preprocessed), :func:`import_ptbxl_subset`, which references the shared npy
  and copies nothing.
* :func:`import_wfdb_folder`: any folder of WFDB records plus a CSV of their reports.

Both record importers stream through :func:`convert.archive.import_records`: 64 records at a time are held
and committed, a resumed run skips what the folder already holds, a bad record is reported (one line) and
left out while the rest is imported, and the archive is published only when every record was tried. The
device and the archive share one reader and one signal path.
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

import click
import numpy as np

from edge.errors import ArchiveError, EcgretError

from .archive import (CASES_FILE, FS, META_FILE, PARTS_DIR, SIGNALS_FILE, Archive, Case, ImportSummary,
                      _check_unique, _int_or_none, _need_columns, _prepare_out, _read_csv_rows, _subset_cases,
                      _write_meta_and_cases, import_records, read_cases, split_labels)

__all__ = ["import_ptbxl", "import_ptbxl_subset", "import_wfdb_folder", "read_scp_statements", "ptbxl_labels",
           "ptbxl_layout", "import_command"]

Report = Callable[[str], None]


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

def import_ptbxl_subset(data_dir, out_dir=None, *, folds: Iterable[int] | None = None, limit: int | None = None,
                        overwrite: bool = False) -> Archive:
    """The shared PTB-XL subset (already preprocessed: z-scored, 0.5-40 Hz, 100 Hz) as an archive.

    With ``out_dir=None`` nothing is written (same as :meth:`Archive.from_ptbxl_subset`; ``folds`` and
    ``limit`` are ignored). With ``out_dir``, an archive folder is written whose ``archive.json`` references
    the shared npy (``signals_path``, ``rows``): the signals are never copied. ``folds`` keeps the cases of
    those folds, ``limit`` the first ``limit`` of them (in signal-row order).
    """
    arc = Archive.from_ptbxl_subset(data_dir)
    if out_dir is None:
        return arc
    out = _prepare_out(out_dir, overwrite)
    d = Path(data_dir)
    cases, rows = _subset_cases(d)
    keep = np.arange(len(cases))
    if folds is not None:
        fs = {int(f) for f in folds}
        keep = np.array([i for i in keep if cases[i].fold in fs], dtype=np.int64)
    if limit is not None:
        keep = keep[:max(0, int(limit))]
    meta = arc.meta
    meta["rows"] = rows[keep].tolist()
    meta["n_cases"] = len(keep)
    if folds is not None:
        meta["folds"] = sorted({int(f) for f in folds})
    _write_meta_and_cases(out, [cases[i] for i in keep], meta)
    if (out / SIGNALS_FILE).exists():
        (out / SIGNALS_FILE).unlink()
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
    raise ArchiveError(f"{d}: neither a PTB-XL download (ptbxl_database.csv, scp_statements.csv, records100/) "
                       f"nor the shared PTB-XL subset (cases.csv, signals_100hz.npy)")


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


def _ptbxl_listing(d: Path, resolution: str, folds, limit) -> tuple[list[Case], list[Path]]:
    """The cases and record paths ``ptbxl_database.csv`` lists (of ``folds``, the first ``limit``)."""
    db = d / "ptbxl_database.csv"
    cols, rows = _read_csv_rows(db)
    fcol = f"filename_{resolution}"
    _need_columns(db, cols, ["ecg_id", "patient_id", "scp_codes", "strat_fold", fcol])
    statements = read_scp_statements(d / "scp_statements.csv")
    fold_set = None if folds is None else {int(f) for f in folds}
    cases, paths = [], []
    for k, r in enumerate(rows):
        if limit is not None and len(cases) >= limit:
            break
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
        paths.append(d / (r[fcol] or "").strip())
    _check_unique(cases, str(db))
    return cases, paths


def import_ptbxl(ptbxl_dir, out_dir, *, resolution: str = "lr", folds: Iterable[int] | None = None,
                 limit: int | None = None, dtype="float16", notch_hz: float | None = None,
                 on_error: str = "raise", progress: bool = True, overwrite: bool = False, resume: bool = False,
                 report: Report | None = None) -> ImportSummary:
    """Import PTB-XL into an archive folder: the original download (``ptbxl_database.csv``,
    ``scp_statements.csv``, ``records100/`` or ``records500/``), or the shared subset's folder (then
    :func:`import_ptbxl_subset`: nothing is read record by record or copied).

    ``resolution``: ``'lr'`` reads ``filename_lr`` (records100), ``'hr'`` ``filename_hr`` (records500); both
    are preprocessed to the archive's 100 Hz, 10 s, z-scored 12 leads by :func:`edge.signal.preprocess`
    (``notch_hz`` defaults to None, as PTB-XL's own processing used no notch). Case ids ``ptbxl:<ecg_id>``.
    ``folds`` keeps those ``strat_fold`` values, ``limit`` the first ``limit`` records listed. The other
    arguments are :func:`convert.archive.import_records`'s.
    """
    d = Path(ptbxl_dir)
    if resolution not in ("lr", "hr"):
        raise ValueError("resolution must be 'lr' or 'hr'")
    if ptbxl_layout(d) == "subset":
        out = Path(out_dir)
        if (out / PARTS_DIR).exists() and not overwrite:
            raise ArchiveError(f"{out}: holds an unfinished record import; use another folder (or --overwrite)")
        before: set[str] = set()
        if (out / META_FILE).exists() and not overwrite:
            meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
            if meta.get("importer") != "ptbxl_subset" or meta.get("source_dir") != str(d.resolve()):
                raise ArchiveError(f"{out}: already holds an archive of another source ({meta.get('importer')} "
                                   f"of {meta.get('source_dir')}); use another folder (or --overwrite)")
            before = {c.case_id for c in read_cases(out / CASES_FILE)}
        arc = import_ptbxl_subset(d, out, folds=folds, limit=limit, overwrite=True)   # references: cheap
        n_already = len(before & set(arc.ids))
        return ImportSummary(arc, len(arc), len(arc) - n_already, n_already)
    cases, paths = _ptbxl_listing(d, resolution, folds, limit)
    T = 1000
    load = _preprocess_loader(paths, fs=None, notch_hz=notch_hz, T=T)
    return import_records(out_dir, cases, load, T=T, dtype=dtype, importer="ptbxl", on_error=on_error,
                          progress=progress, overwrite=overwrite, resume=resume, report=report,
                          extra_meta={"source_dir": str(d.resolve()), "resolution": resolution,
                                      "notch_hz": notch_hz})


# ------------------------------------------------------------------------------------------------ generic WFDB

def _wfdb_listing(folder: Path, tpath: Path, source: str) -> tuple[list[Case], list[Path]]:
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
    return cases, paths


def import_wfdb_folder(folder, texts_csv, out_dir, *, source: str = "wfdb", dtype="float16",
                       duration_s: float = 10.0, notch_hz: float | None = 50.0, limit: int | None = None,
                       on_error: str = "raise", progress: bool = True, overwrite: bool = False,
                       resume: bool = False, report: Report | None = None) -> ImportSummary:
    """Import a folder of WFDB records described by a CSV of reports into an archive folder.

    CSV columns: ``record`` (the file stem, or a path relative to ``folder``), ``text`` or ``report`` (the
    report text), and optionally ``statements``, ``super_class``, ``sub_class``, ``form``, ``rhythm``
    (``;``-separated), ``patient_id``, ``fold``. Case ids are ``<source>:<record>``. ``notch_hz`` (default
    50 Hz, the bundles' own setting) is the mains notch of :func:`edge.signal.preprocess`. The other arguments
    are :func:`convert.archive.import_records`'s.
    """
    folder, tpath = Path(folder), Path(texts_csv)
    if not folder.is_dir():
        raise ArchiveError(f"{folder}: no such folder")
    cases, paths = _wfdb_listing(folder, tpath, source)
    if limit is not None:
        cases, paths = cases[:max(0, int(limit))], paths[:max(0, int(limit))]
    T = int(round(duration_s * FS))
    load = _preprocess_loader(paths, fs=None, notch_hz=notch_hz, T=T)
    return import_records(out_dir, cases, load, T=T, dtype=dtype, importer="wfdb_folder", on_error=on_error,
                          progress=progress, overwrite=overwrite, resume=resume, report=report,
                          extra_meta={"source_dir": str(folder.resolve()), "texts_csv": str(tpath.resolve()),
                                      "source": source, "notch_hz": notch_hz})


# ------------------------------------------------------------------------------------------------ commands

def _fold_list(spec: str | None) -> tuple[int, ...] | None:
    if not spec:
        return None
    try:
        if "-" in spec:
            a, b = spec.split("-")
            return tuple(range(int(a), int(b) + 1))
        return tuple(int(x) for x in spec.split(","))
    except ValueError:
        raise click.BadParameter(f"{spec!r}: expected e.g. 1-9 or 1,2,3", param_hint="--folds") from None


def _error_line(line: str) -> None:
    click.echo(f"ecgret-convert: error: {line}", err=True)


def _finish_command(summary: ImportSummary, out: str) -> None:
    """Print the summary of an import run; exit 1 when a record failed."""
    s = summary
    click.echo(f"{out}: {len(s.archive)} cases ({s.n_new} imported now, {s.n_already} already there, "
               f"{s.n_failed} failed) of {s.n_listed} records listed")
    if s.n_failed:
        click.echo(f"ecgret-convert: error: {s.n_failed} record(s) not imported (listed above and in "
                   f"{Path(out) / META_FILE} 'skipped'); fix them and run the same command again to add them",
                   err=True)
    from edge.bundle import default_bundle_path
    click.echo(f"next: ecgret-convert bundle --encoder {default_bundle_path()} --archive {out} --out NEW_BUNDLE",
               err=True)
    if s.n_failed:
        sys.exit(1)


def _fail(e: EcgretError):
    click.echo(f"ecgret-convert: error: {e}", err=True)
    sys.exit(1)


@click.group("import")
def import_command() -> None:
    """Import a clinic's archive (ECG records + reports) into a case archive folder, which
    `ecgret-convert bundle --encoder BUNDLE --archive OUT` then indexes. Runs are resumable: run the same
    command again after an interruption, or after fixing bad records, and what OUT holds is kept."""


_COMMON = [
    click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
                 help="Storage type of the preprocessed signals."),
    click.option("--overwrite", is_flag=True, help="Discard what OUT holds (an archive or an unfinished import) "
                                                   "and import from scratch."),
    click.option("--no-progress", is_flag=True, help="No progress bar."),
]


def _common(f):
    for opt in reversed(_COMMON):
        f = opt(f)
    return f


@import_command.command("ptbxl")
@click.argument("ptbxl_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--resolution", type=click.Choice(["lr", "hr"]), default="lr", show_default=True,
              help="records100 (lr, 100 Hz) or records500 (hr, 500 Hz) of the download.")
@click.option("--folds", default=None, help="Only these strat_fold values: 1-9 or 1,2,3 (default: all).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records listed.")
@click.option("--notch-hz", type=float, default=None, help="Mains notch of the preprocessing (default: none, as "
                                                           "PTB-XL's own processing).")
@_common
def import_ptbxl_command(ptbxl_dir, out, resolution, folds, limit, notch_hz, dtype, overwrite, no_progress):
    """Import PTB-XL from PTBXL_DIR into the archive folder OUT: the PhysioNet download (ptbxl_database.csv,
    scp_statements.csv, records100/ or records500/), or the shared preprocessed subset (cases.csv,
    signals_100hz.npy; referenced, not copied)."""
    try:
        s = import_ptbxl(ptbxl_dir, out, resolution=resolution, folds=_fold_list(folds), limit=limit,
                         dtype=dtype, notch_hz=notch_hz, on_error="skip", progress=not no_progress,
                         overwrite=overwrite, resume=True, report=_error_line)
    except EcgretError as e:
        _fail(e)
    _finish_command(s, out)


@import_command.command("wfdb")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--reports", "reports", required=True, type=click.Path(dir_okay=False),
              help="CSV of the records' reports: columns record (file stem or path relative to FOLDER) and "
                   "report (or text); optional statements, super_class, sub_class, form, rhythm (;-separated "
                   "PTB-XL codes), patient_id, fold.")
@click.option("--source", default="wfdb", show_default=True,
              help="Name of this archive's source: case ids are SOURCE:RECORD.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records of the CSV.")
@click.option("--notch-hz", type=float, default=50.0, show_default=True,
              help="Mains notch of the preprocessing; keep the bundle's (50 Hz) so that archive and queries agree.")
@_common
def import_wfdb_command(folder, out, reports, source, limit, notch_hz, dtype, overwrite, no_progress):
    """Import the WFDB records of FOLDER listed in --reports into the archive folder OUT."""
    try:
        s = import_wfdb_folder(folder, reports, out, source=source, dtype=dtype, notch_hz=notch_hz, limit=limit,
                               on_error="skip", progress=not no_progress, overwrite=overwrite, resume=True,
                               report=_error_line)
    except EcgretError as e:
        _fail(e)
    _finish_command(s, out)
