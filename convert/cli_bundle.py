"""``ecgret-convert`` bundle and index commands: ``bundle`` (from a student, or re-indexing an archive),
``sign-bundle``, ``add-waveforms``, ``rerank``, ``embed-archive`` and ``merge-index``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edge.atomicio import atomic_write
from edge.bundle_format import WAVEFORMS_FILE
from edge.errors import BundleError, ConfigError
from edge.imaging import ImagingConfig
from edge.trust import trusted_keys

from .bundle_build import build_bundle, reindex_bundle
from .cli_options import (
    bundle_argument,
    choice_option,
    click_errors,
    count_option,
    folds_option,
    path_option,
    subset_data_option,
)
from .index_build import IndexConfig
from .ptbxl import open_archive, open_subset
from .rerank import add_choice, choose
from .shards import embed_archive, merge_index, parse_shard
from .shards_dask import embed_archive_distributed
from .signing import ENV_SIGNING_KEY, generate_signing_key, sign_bundle
from .waveforms import SCALE, add_waveforms

__all__ = [
    "bundle_command",
    "sign_bundle_command",
    "add_waveforms_command",
    "rerank_command",
    "embed_archive_command",
    "merge_index_command",
]


@click.command("bundle")
@click.argument("student_dir", type=click.Path(), required=False)
@click.option("--out", "out_dir", type=click.Path(), required=True, help="the bundle folder to write")
@path_option(
    "--encoder",
    "encoder_bundle",
    kind="folder",
    help="re-index with the encoder of this existing bundle (e.g. edge/bundles/default) instead of a "
    "student: numpy and the TFLite interpreter only, no TensorFlow; needs --archive",
)
@click.option(
    "--archive",
    default=None,
    help="an archive folder (`ecgret-convert import` writes one; default with STUDENT_DIR: the shared PTB-XL subset)",
)
@click.option(
    "--folds",
    default=None,
    help="archive folds to index: 1-9, or 1,2,3, or all (default: 1-9 with STUDENT_DIR, all with --encoder)",
)
@click.option(
    "--name", default=None, help="bundle name (default: ptbxl-default, or the --out folder's name with --encoder)"
)
@click.option(
    "--target-recall",
    type=float,
    default=0.99,
    show_default=True,
    help="recall@10 of the Annoy index against exact search to reach",
)
@click.option(
    "--max-auroc-drop",
    type=float,
    default=0.01,
    show_default=True,
    help="quality gate of a student's int8 encoder (kNN_macroAUROC lost against float32)",
)
@click.option("--allow-unsigned", is_flag=True, help="accept an --encoder bundle that is not signed by a trusted key")
@click.option(
    "--force", is_flag=True, help="write even if int8 fails the quality gate or the folder holds a different bundle"
)
@click.option("--no-progress", is_flag=True, help="no progress bars")
def bundle_command(
    student_dir,
    out_dir,
    encoder_bundle,
    archive,
    folds,
    name,
    target_recall,
    max_auroc_drop,
    allow_unsigned,
    force,
    no_progress,
):
    """Write a bundle (encoder, index, cases, manifest, model card): from a quantized student (STUDENT_DIR),
    or, with --encoder EXISTING_BUNDLE --archive ARCHIVE, by re-indexing an archive with a shipped encoder."""
    with click_errors():
        spec = folds or ("1-9" if encoder_bundle is None else "all")
        fl = None if spec == "all" else folds_option(spec)
        if encoder_bundle is not None:
            if student_dir is not None or archive is None or fl is not None:
                raise click.UsageError(
                    "--encoder takes --archive ARCHIVE and --out NEW_BUNDLE, without STUDENT_DIR or --folds"
                )
            m = reindex_bundle(
                encoder_bundle,
                open_archive(archive),
                out_dir,
                name=name,
                target_recall=target_recall,
                force=force,
                allow_unsigned=allow_unsigned,
                progress=not no_progress,
            )
        else:
            if student_dir is None:
                raise click.UsageError("give STUDENT_DIR (a quantized student) or --encoder EXISTING_BUNDLE")
            m = build_bundle(
                student_dir,
                out_dir,
                archive=open_archive(archive),
                folds=fl,
                name=name or "ptbxl-default",
                index=IndexConfig(target_recall=target_recall),
                max_auroc_drop=max_auroc_drop,
                force=force,
                progress=not no_progress,
            )
    click.echo(json.dumps({"bundle": out_dir, "index": m["index"], "files": m["files"]}))


@click.command("sign-bundle")
@bundle_argument
@click.option(
    "--key",
    "key_path",
    envvar=ENV_SIGNING_KEY,
    required=True,
    type=click.Path(dir_okay=False),
    help=f"The publisher's private signing key file (env {ENV_SIGNING_KEY}). Never commit it.",
)
@click.option("--new-key", is_flag=True, help="Create the key file first (refused if it exists).")
@click.option(
    "--publisher", default="ecgret bundle publisher", show_default=True, help="Name recorded in a new key file."
)
def sign_bundle_command(bundle, key_path, new_key, publisher):
    """Sign BUNDLE (writes BUNDLE/signature.json) after checking that it loads. Devices load it without
    --allow-unsigned once the key's public part is trusted (edge/trust.py or $ECGRET_TRUSTED_KEYS)."""
    if new_key:
        info = generate_signing_key(key_path, publisher)
        click.echo(f"new signing key {key_path} (key id {info['key_id']}); public key {info['public_key']}", err=True)
    doc = sign_bundle(bundle, key_path)
    known = doc["key_id"] in trusted_keys()
    click.echo(
        f"signed {bundle}: bundle id {doc['bundle_id']}, key {doc['key_id']}"
        + (
            ""
            if known
            else " (not yet trusted by this ecgret: add its public key to edge/trust.py "
            "TRUSTED_KEYS or to a $ECGRET_TRUSTED_KEYS file)"
        )
    )


@click.command("add-waveforms")
@bundle_argument
@subset_data_option
@click.option(
    "--scale",
    default=SCALE,
    show_default=True,
    type=click.FloatRange(1e-4, 1.0),
    help="z-units per int8 step of the stored waveforms.",
)
@path_option(
    "--key",
    "sign_key",
    kind="file",
    envvar="ECGRET_SIGNING_KEY",
    help="Sign the bundle again with this key file afterwards (env ECGRET_SIGNING_KEY); without it the "
    "bundle is left unsigned (its old signature no longer matches).",
)
def add_waveforms_command(bundle: str, data_dir: str | None, scale: float, sign_key: str | None) -> None:
    """Add each case's compact waveform (int8 median beats of the 12 leads and a 10 s lead II strip) to BUNDLE,
    for the report's pictures of the retrieved cases."""
    archive = open_subset(data_dir) if data_dir else None
    try:
        st = add_waveforms(bundle, archive, scale, sign_key)
    except BundleError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"{bundle}: {WAVEFORMS_FILE} {st['bytes']:,} bytes for {st['cases']} cases "
        f"({st['clipped_fraction']:.2%} of samples clipped at +-{127 * scale:.1f} SD); bundle now "
        f"{st['bundle_bytes']:,} bytes; "
        + ("signed" if st["signed"] else "unsigned: sign it again (ecgret-convert sign-bundle)")
    )


@click.command("rerank")
@bundle_argument
@subset_data_option
@click.option(
    "--write",
    is_flag=True,
    help="Write the measurements and the chosen setting into BUNDLE "
    "(cases.jsonl 'measured', manifest 'rerank'); sign it again afterwards with sign-bundle.",
)
@path_option("--json-out", kind="file", help="Write the CV table and fold 9 here.")
def rerank_command(bundle: str, data_dir: str | None, write: bool, json_out: str | None) -> None:
    """Measure every archive case, choose the measured-rhythm re-ranking (weight, pool, rhythm bonus) by
    cross-validation over folds 1-8 (4 rotations of 2 query folds), and report fold 9 once for the chosen setting."""
    archive = open_subset(data_dir)
    res, measured = choose(bundle, archive)
    click.echo("| setting | " + " | ".join(("P@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")) + " |")
    click.echo("| --- | --- | --- | --- | --- |")
    for name, v in res["cv"].items():
        click.echo(f"| CV {name} | " + " | ".join(f"{a:.3f} ± {s:.3f}" for a, s in v.values()) + " |")
    for name, v in res["fold9"].items():
        click.echo(f"| fold 9, {name} | " + " | ".join(f"{x:.3f}" for x in v.values()) + " |")
    click.echo(
        f"chosen: weight {res['weight']:g}, pool {res['pool']}, rhythm bonus {res['rhythm_bonus']:g} ({res['rule']})"
    )
    if json_out:
        atomic_write(json_out, json.dumps(res, indent=1) + "\n")
    if write:
        add_choice(bundle, res, measured)
        click.echo(f"wrote the measurements and the rerank setting into {bundle}; sign it again (sign-bundle)")


@click.command("embed-archive")
@click.option("--encoder", "encoder_path", type=click.Path(), required=True, help="the encoder .tflite")
@click.option("--archive", default=None, help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="the shard folder")
@click.option("--shard", default=None, help="i/N: embed the i-th of N row ranges (0-based)  [default: 0/1]")
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS|local",
    help="embed every shard as a Dask task instead: 'local' starts a cluster of worker processes here "
    "(--workers), an address (tcp://host:8786) uses a running scheduler (dask scheduler / dask "
    "worker, dask-jobqueue, dask-kubernetes); paths must be readable by every worker",
)
@count_option("--workers", help="--scheduler local: worker processes, one thread each (default: one per core)")
@count_option("--tasks", help="--scheduler: number of shards (default: two per worker thread)")
@path_option(
    "--index",
    "index_dir",
    help="--scheduler: then merge the shards into this new index folder (merge-index, as a task)",
)
@click.option("--target-recall", type=float, default=0.99, show_default=True, help="--index: recall@10 target")
@click.option("--mode", default="rhythm", show_default=True, help="imaging mode the encoder was trained on")
@click.option("--tile", type=int, default=32, show_default=True, help="imaging tile size the encoder was trained on")
@choice_option(
    "--rr-scale",
    ("angle", "linear"),
    "mode rhythm: the RR map the encoder was trained with (bundles before it existed: linear)",
)
@click.option("--threads", type=int, default=1, show_default=True, help="interpreter threads")
@click.option("--chunk", type=int, default=256, show_default=True, help="cases imaged per chunk (bounds memory)")
@click.option("--no-progress", is_flag=True, help="no progress bar on stderr")
def embed_archive_command(
    encoder_path,
    archive,
    out_dir,
    shard,
    scheduler,
    workers,
    tasks,
    index_dir,
    target_recall,
    mode,
    tile,
    rr_scale,
    threads,
    chunk,
    no_progress,
):
    """Embed one shard of an archive with a TFLite encoder (run N of these anywhere, then merge-index), or all
    shards on a Dask cluster (--scheduler, optionally merged with --index)."""
    with click_errors():
        if not Path(encoder_path).is_file():
            raise ConfigError(f"{encoder_path}: encoder file not found")
        imaging = ImagingConfig(mode=mode, tile=tile, rr_scale=rr_scale)
        run = {"chunk": chunk, "threads": threads, "progress": not no_progress}  # a shard's work, either way
        if scheduler is None:
            for opt, v in (("--workers", workers), ("--tasks", tasks), ("--index", index_dir)):
                if v is not None:
                    raise ConfigError(f"{opt} goes with --scheduler")
            i, n = parse_shard(shard or "0/1")
            p = embed_archive(open_archive(archive), encoder_path, out_dir, imaging, (i, n), **run)
            click.echo(str(p))
            return
        if shard is not None:
            raise ConfigError("--shard and --scheduler exclude each other: the scheduler runs every shard")
        if archive:
            open_archive(archive)  # a clear error here, not in every task
        res = embed_archive_distributed(
            archive,
            encoder_path,
            out_dir,
            imaging,
            scheduler,
            n_workers=workers,
            tasks=tasks,
            index_dir=index_dir,
            target_recall=target_recall,
            **run,
        )
    click.echo(json.dumps(res))


@click.command("merge-index")
@click.option("--shards", "shard_dir", type=click.Path(), required=True, help="the folder of embed-archive shards")
@click.option("--archive", default=None, help="the archive the shards came from (for cases.jsonl and a check)")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="a new folder for the merged index")
@click.option("--target-recall", type=float, default=0.99, show_default=True, help="recall@10 target")
@click.option("--seed", type=int, default=0, show_default=True, help="Annoy seed and recall query sample seed")
@click.option("--no-progress", is_flag=True, help="no progress bar on stderr")
def merge_index_command(shard_dir, archive, out_dir, target_recall, seed, no_progress):
    """Merge embedding shards into one Annoy index tuned to a recall@10 target against exact search."""
    with click_errors():
        arch = open_archive(archive)
        info = merge_index(shard_dir, out_dir, arch, target_recall=target_recall, seed=seed, progress=not no_progress)
    click.echo(json.dumps(info))
