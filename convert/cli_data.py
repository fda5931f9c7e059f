"""``ecgret-convert import ptbxl|wfdb`` and ``ecgret-convert evaluate``: archives in, figures out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edge.errors import EcgretError

from .archive import META_FILE, Archive
from .archive_write import ImportSummary
from .cli_options import choice_option, click_errors, count_option, error_line, exit_error, folds_option, path_option
from .evaluate import (
    CV_FOLDS,
    baselines,
    bundle_variants,
    cv_heading,
    cv_json,
    cv_table,
    default_split,
    dump,
    evaluate,
    evaluate_cv,
    expand_rows,
    heading,
    load_embeddings,
    markdown_table,
    results_json,
    results_target,
)
from .evaluate_external import external_table, external_variants
from .importers import import_wfdb_folder
from .ptbxl import import_ptbxl, open_subset

__all__ = ["import_command", "evaluate_command"]


def _finish_command(summary: ImportSummary, out: str) -> None:
    """Print the summary of an import run; exit 1 when a record failed."""
    s = summary
    click.echo(
        f"{out}: {len(s.archive)} cases ({s.n_new} imported now, {s.n_already} already there"
        f"{f' ({s.n_updated} with a report or labels the source changed: updated)' if s.n_updated else ''}, "
        f"{s.n_failed} failed) of {s.n_listed} records listed"
    )
    if s.n_failed:
        click.echo(
            f"ecgret-convert: error: {s.n_failed} record(s) not imported (listed above and in "
            f"{Path(out) / META_FILE} 'skipped', the first 100); fix them and run the same command again to add them",
            err=True,
        )
    from edge.bundle import default_bundle_path

    click.echo(
        f"next: ecgret-convert bundle --encoder {default_bundle_path()} --archive {out} --out NEW_BUNDLE", err=True
    )
    if s.n_failed:
        sys.exit(1)


def _run_import(importer, records, out: str, no_progress: bool, overwrite: bool, /, **options) -> None:
    """Run a record importer resumably into OUT (bad records reported and skipped) and print the summary."""
    try:
        s = importer(
            records,
            out_dir=out,
            on_error="skip",
            progress=not no_progress,
            overwrite=overwrite,
            resume=True,
            report=error_line,
            **options,
        )
    except EcgretError as e:
        exit_error(e)
    _finish_command(s, out)


@click.group("import")
def import_command() -> None:
    """Import a clinic's archive (ECG records + reports) into a case archive folder, which
    `ecgret-convert bundle --encoder BUNDLE --archive OUT` then indexes. Runs are resumable: run the same
    command again after an interruption, or after fixing bad records, and what OUT holds is kept."""


_COMMON = [
    choice_option("--dtype", ("float16", "float32"), "Storage type of the preprocessed signals."),
    click.option(
        "--overwrite",
        is_flag=True,
        help="Discard what OUT holds (an archive or an unfinished import) and import from scratch; a folder "
        "holding other files is refused, with or without it.",
    ),
    click.option("--no-progress", is_flag=True, help="No progress bar."),
]


def _common(f):
    for opt in reversed(_COMMON):
        f = opt(f)
    return f


@import_command.command("ptbxl")
@click.argument("ptbxl_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@choice_option("--resolution", ("lr", "hr"), "records100 (lr, 100 Hz) or records500 (hr, 500 Hz) of the download.")
@click.option("--folds", default=None, help="Only these strat_fold values: 1-9 or 1,2,3 (default: all).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records listed.")
@click.option(
    "--notch-hz",
    type=float,
    default=None,
    help="Mains notch of the preprocessing (default: none, as PTB-XL's own processing).",
)
@_common
def import_ptbxl_command(ptbxl_dir, out, resolution, folds, limit, notch_hz, dtype, overwrite, no_progress):
    """Import PTB-XL from PTBXL_DIR into the archive folder OUT: the PhysioNet download (ptbxl_database.csv,
    scp_statements.csv, records100/ or records500/), or the shared preprocessed subset (cases.csv,
    signals_100hz.npy; referenced, not copied)."""
    _run_import(
        import_ptbxl,
        ptbxl_dir,
        out,
        no_progress,
        overwrite,
        resolution=resolution,
        folds=folds_option(folds),
        limit=limit,
        dtype=dtype,
        notch_hz=notch_hz,
    )


@import_command.command("wfdb")
@click.argument("folder", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--reports",
    "reports",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV of the records' reports: columns record (file stem or path relative to FOLDER) and "
    "report (or text); optional statements, super_class, sub_class, form, rhythm (;-separated "
    "PTB-XL codes), patient_id, fold.",
)
@click.option(
    "--source", default="wfdb", show_default=True, help="Name of this archive's source: case ids are SOURCE:RECORD."
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N records of the CSV.")
@click.option(
    "--notch-hz",
    type=float,
    default=50.0,
    show_default=True,
    help="Mains notch of the preprocessing; keep the bundle's (50 Hz) so that archive and queries agree.",
)
@_common
def import_wfdb_command(folder, out, reports, source, limit, notch_hz, dtype, overwrite, no_progress):
    """Import the WFDB records of FOLDER listed in --reports into the archive folder OUT."""
    _run_import(
        import_wfdb_folder,
        folder,
        out,
        no_progress,
        overwrite,
        texts_csv=reports,
        source=source,
        dtype=dtype,
        notch_hz=notch_hz,
        limit=limit,
    )


@click.command("evaluate")
@path_option(
    "--data",
    "data_dir",
    kind="folder",
    help="PTB-XL subset folder (default: ../shared/data/ptbxl-subset or $ECGRET_DATA).",
)
@path_option("--archive", "archive_dir", kind="folder", help="A case archive folder (instead of --data).")
@click.option(
    "--bundle",
    "bundles",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Evaluate a bundle's encoder through the device interpreter (repeatable).",
)
@click.option(
    "--embeddings",
    "emb_files",
    multiple=True,
    metavar="NAME=FILE.npy",
    help="Any embedding: an (N_cases, D) .npy in archive order (repeatable).",
)
@click.option(
    "--lead-sets",
    default="12",
    show_default=True,
    help="Query lead sets for bundle variants, comma-separated (12, limb6, 3, I, II).",
)
@click.option(
    "--cv",
    is_flag=True,
    help="Cross-validate over folds 1-8 instead of the fold-9 test: 4 rotations, each holding out 2 "
    "folds as queries against the other 6; mean ± SD of every metric. Fold 9 is not used.",
)
@path_option(
    "--external",
    "external_dir",
    kind="folder",
    exists=True,
    help="An external LUDB-format set (cases.csv + data/, e.g. ../shared/data/ludb-dev): every "
    "--bundle answers its raw records through the device query path (what `ecgret query "
    "--json` answers); rhythm agreement and the consensus's superclass AUROC.",
)
@click.option("--query-folds", default=None, help="Query folds of the test split  [default: 9].")
@click.option("--archive-folds", default=None, help="Archive folds of the test split  [default: 1-8].")
@path_option("--out", "out_json", kind="file", help="Write every metric per variant and per class as JSON.")
@count_option("--threads", help="Interpreter threads for bundle encoders (default: the bundle's, 1).")
def evaluate_command(
    data_dir,
    archive_dir,
    bundles,
    emb_files,
    lead_sets,
    cv,
    external_dir,
    query_folds,
    archive_folds,
    out_json,
    threads,
):
    """Retrieval quality per shared/docs/EVALUATION.md, baselines in the same table: the fold-9 test
    (default), cross-validation over folds 1-8 (--cv), or an external set through the device (--external)."""
    if (cv or external_dir) and (query_folds or archive_folds):
        raise click.UsageError(
            "--query-folds/--archive-folds choose the test split; --cv and --external choose their own"
        )
    if cv and external_dir:
        raise click.UsageError("--cv and --external are separate evaluations; run them one at a time")
    sets = tuple(x.strip() for x in lead_sets.split(",") if x.strip())
    if out_json is not None and (why := results_target(out_json)):
        raise click.BadParameter(f"{out_json}: {why}", param_hint="--out")
    with click_errors():
        if external_dir:
            if not bundles or emb_files:
                raise click.UsageError(
                    "--external evaluates bundles through the device: give --bundle (and no --embeddings)"
                )
            res = external_variants(external_dir, bundles, sets, threads)
            ids = ",".join(dict.fromkeys(m["bundle_sha256"] for m in res.values()))
            n = next(iter(res.values()))["n_records"]
            click.echo(
                external_table(
                    res, f"External set {external_dir}: {n} raw records through the device query path; bundle {ids}"
                )
            )
            if out_json:
                dump(
                    {
                        "protocol": "shared/docs/EVALUATION.md (external set)",
                        "external": str(external_dir),
                        "bundle_sha256": ids,
                        "variants": res,
                    },
                    out_json,
                )
                click.echo(f"wrote {out_json}", err=True)
            return
        if archive_dir:
            archive = Archive.open(archive_dir)
        else:
            archive = open_subset(data_dir)
        if cv:
            q_idx = a_idx = archive.select(folds=CV_FOLDS)
            if len(q_idx) == 0:
                raise click.UsageError(f"no cases in folds {CV_FOLDS[0]}-{CV_FOLDS[-1]} to cross-validate on")
        else:
            q_idx, a_idx = default_split(
                archive,
                folds_option(query_folds or "9", "--query-folds"),
                folds_option(archive_folds or "1-8", "--archive-folds"),
            )
        if len(q_idx) == 0 or len(a_idx) == 0:
            raise click.UsageError(f"no queries ({len(q_idx)}) or no archive cases ({len(a_idx)}) in those folds")
        variants: dict = dict(baselines(archive))
        hashes = []
        for spec in emb_files:
            name, e = load_embeddings(spec, len(archive), variants)
            variants[name] = e
        for b in bundles:
            v, h = bundle_variants(archive, b, q_idx, a_idx, sets, threads)
            if cv:  # every case of folds 1-8 embedded once, as query and as archive item
                v = {
                    k: (expand_rows(len(archive), q_idx, qe), expand_rows(len(archive), a_idx, ae))
                    for k, (qe, ae) in v.items()
                }
            variants.update(v)
            hashes.append(h)
    bh = ",".join(hashes) or None
    with click_errors():
        if cv:
            res = evaluate_cv(archive, variants)
            click.echo(cv_table(res, cv_heading(archive, bundle_hash=bh)))
            if out_json:
                dump(cv_json(res, archive, bundle_hash=bh), out_json)
        else:
            res = evaluate(archive, variants, q_idx, a_idx)
            click.echo(markdown_table(res, heading(archive, q_idx, a_idx, bh)))
            if out_json:
                dump(results_json(res, archive, q_idx, a_idx, bh), out_json)
    if out_json:
        click.echo(f"wrote {out_json}", err=True)
