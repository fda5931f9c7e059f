"""``ecgret-convert`` training commands: ``train-teacher``, ``teacher-report``, ``embed-text``, ``distill``,
``quantize`` and ``pipeline`` (teacher -> student -> int8 -> index -> bundle). TensorFlow and torch load inside
the library calls, never at import."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from edge.atomicio import atomic_write
from edge.errors import ConfigError, EcgretError
from edge.imaging import MODES

from .cli_options import click_errors, path_option
from .evaluate import default_split, dump, heading, markdown_table, results_json
from .ptbxl import open_archive
from .quantize import check_gate
from .teacher_config import STRATEGIES, load_config
from .teacher_export import measure
from .teacher_train import check_texts, train_teacher
from .text import embed_texts
from .training_pipeline import load_pipeline_config, prepare_images, run_distill, run_pipeline, run_quantize

__all__ = [
    "train_teacher_command",
    "teacher_report_command",
    "embed_text_command",
    "distill_command",
    "quantize_command",
    "pipeline_command",
]


# Every option but --config, --set, --cv, --resume and --no-progress overrides the config entry its value is passed as
# (``section__key``: :func:`convert.teacher_config.load_config`).
@click.command("train-teacher")
@click.option("--config", "config_path", type=click.Path(), default="configs/teacher.toml", show_default=True)
@click.option("--name", default=None, help="run name (folder under out_dir); default from the config")
@click.option("--out-dir", default=None, help="where runs go (default from the config: runs/teacher)")
@click.option("--archive", default=None, help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--text-model", default=None, help="a local sentence-transformers folder")
@click.option("--mode", "imaging__mode", type=click.Choice(MODES), default=None, help="override imaging.mode")
@click.option("--epochs", "train__epochs", type=int, default=None)
@click.option("--batch-size", "train__batch_size", type=int, default=None, help="global batch size")
@click.option("--max-minutes", "train__max_minutes", type=float, default=None)
@click.option("--seed", "train__seed", type=int, default=None)
@click.option(
    "--strategy",
    "train__strategy",
    type=click.Choice(STRATEGIES),
    default=None,
    help="tf.distribute strategy: default (one device), one-device, mirrored (all local GPUs), "
    "multi-worker (TF_CONFIG)",
)
@click.option(
    "--resume/--restart",
    default=True,
    show_default=True,
    help="continue from the run's latest checkpoint, or start over",
)
@click.option(
    "--cv",
    "cv_out",
    type=click.Path(),
    default=None,
    help="cross-validate the recipe instead: one teacher per rotation of folds 1-8, each trained without its "
    "query folds (convert.teacher_cv); the table is printed and the JSON written to this file",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="override any config entry, the value in TOML syntax (--set train.label_aux_weight=0.1 "
    "--set imaging.rr_scale='\"linear\"'); repeatable; --name keeps the runs apart",
)
@click.option("--no-progress", is_flag=True)
def train_teacher_command(config_path, resume, no_progress, cv_out, settings, **overrides):
    """Train the teacher image encoder (ViT, CLIP loss against frozen report embeddings)."""
    with click_errors():
        cfg = load_config(config_path, **merge_overrides(parse_settings(settings), overrides))
        if cv_out:
            _cv_teacher(cfg, cv_out, not no_progress)
            return
        m = train_teacher(cfg, resume=resume, progress=not no_progress)
    click.echo(
        json.dumps(
            {
                k: m[k]
                for k in ("name", "best_epoch", "select_metric", "val_best", "epochs_run", "stopped", "train_time_s")
            },
            default=float,
        )
    )
    click.echo(f"artefacts in {cfg.run_dir}", err=True)


def merge_overrides(settings: dict, options: dict) -> dict:
    """``--set`` entries and the options' own overrides (``section__key``: value, None when an option is not given)
    as one dict; the same entry given both ways is a ConfigError (which should win is not obvious)."""
    given = {k: v for k, v in options.items() if v is not None}
    both = sorted(set(settings) & set(given))
    if both:
        names = ", ".join(k.replace("__", ".") for k in both)
        raise ConfigError(f"{names} given both as an option and with --set: give it once")
    return {**settings, **given}


def parse_settings(settings) -> dict:
    """``SECTION.KEY=VALUE`` strings (VALUE in TOML syntax; a bare word is a string) as ``section__key`` overrides
    for :func:`convert.teacher_config.load_config`; a malformed one is a :class:`ConfigError`."""
    import tomllib

    out = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        sec, dot, name = key.strip().partition(".")
        if not sep or not dot or not sec or not name or "." in name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.label_aux_weight=0.1")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word: a string
        out[f"{sec}__{name}"] = value
    return out


def _cv_teacher(cfg, out_path, progress: bool) -> None:
    from .evaluate import cv_heading, cv_json, cv_table
    from .teacher_cv import cv_teacher

    arch = open_archive(cfg.archive)
    res, runs = cv_teacher(cfg, arch, progress=progress)
    h = cv_heading(arch) + "; one teacher trained per rotation without its query folds"
    click.echo(cv_table(res, "### " + h))
    doc = {**cv_json(res, arch), "heading": h, "teacher_runs": runs, "config": str(cfg.name)}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    dump(doc, Path(out_path))


@click.command("teacher-report")
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--archive", default=None, help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--out", "out_path", type=click.Path(), default=None, help="also write the Markdown and a JSON")
def teacher_report_command(run_dirs, archive, out_path):
    """Fold-9 retrieval table of trained teachers beside the baselines, plus ECG -> report retrieval."""
    with click_errors():
        arch = open_archive(archive)
        q, a = default_split(arch)
        res, cross = measure(run_dirs, arch, (q, a))
    h = heading(arch, q, a)
    md = (
        markdown_table(res, "### ECG -> ECG. " + h)
        + "\n\n"
        + markdown_table(cross, "### ECG -> report text. " + h)
        + "\n"
    )
    click.echo(md)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out_path, md)
        dump(results_json({**res, **cross}, arch, q, a), Path(out_path).with_suffix(".json"))


@click.command("embed-text")
@path_option("--archive", "archive_dir", help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--text-model", default=None, help="a local sentence-transformers folder (default: all-MiniLM-L6-v2)")
@click.option("--out", "out_path", type=click.Path(), required=True, help="output .npy (N_cases, d)")
@click.option("--cache-dir", type=click.Path(), default=None, help="embedding cache (default .cache/text)")
def embed_text_command(archive_dir, text_model, out_path, cache_dir):
    """Embed every case's text (statements + report) with a frozen sentence-transformers model."""
    with click_errors():
        archive = open_archive(archive_dir)
        emb = embed_texts(check_texts(archive), text_model, cache_dir, progress=True)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, emb)
    click.echo(f"{out_path}: {emb.shape[0]} x {emb.shape[1]}", err=True)


@click.command("pipeline")
@click.option("--config", "config_path", type=click.Path(), default="configs/default.toml", show_default=True)
@click.option("--retrain", is_flag=True, help="retrain the teacher and the student even if runs exist")
@click.option(
    "--force",
    is_flag=True,
    help="write the bundle even if int8 fails the quality gate, and replace a different bundle in the output folder",
)
@click.option("--out", default=None, help="bundle folder (default: [bundle] out of the config)")
@click.option(
    "--teacher-run",
    default=None,
    help="use this teacher run folder (default: [teacher] run, else the teacher config's out_dir/name)",
)
@click.option("--images-only", is_flag=True, help="only image the archive into the cache (needs no teacher)")
@click.option("--no-progress", is_flag=True)
def pipeline_command(config_path, retrain, force, out, teacher_run, images_only, no_progress):
    """Build the default bundle end to end: teacher -> student -> int8 -> index -> bundle."""
    with click_errors():
        cfg = load_pipeline_config(config_path, teacher_run=teacher_run)
        if images_only:
            prepare_images(cfg, progress=not no_progress)
            return
        summary = run_pipeline(cfg, retrain=retrain, force=force, progress=not no_progress, out=out)
    click.echo(json.dumps(summary, default=float))


@click.command("distill")
@click.option("--config", "config_path", type=click.Path(), default="configs/default.toml", show_default=True)
@click.option("--teacher-run", default=None, help="a trained teacher run folder (default from the config)")
@click.option("--name", default=None, help="student run name (default: the config's name)")
@click.option("--epochs", type=int, default=None)
@click.option("--max-minutes", type=float, default=None)
@click.option(
    "--cv",
    "cv_out",
    type=click.Path(),
    default=None,
    help="cross-validate the deployed encoder instead: per rotation of folds 1-8 a teacher, a student and its int8 "
    "export made without the query folds, evaluated through the device interpreter (convert.student_cv); the "
    "table is printed and the JSON written to this file",
)
@click.option(
    "--teacher-config",
    type=click.Path(),
    default=None,
    help="with --cv: the teacher recipe (default: the config's [teacher] config)",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="override any entry of the config's sections, the value in TOML syntax (--set student.target_images=clean; "
    "with --cv, --set teacher.seeds=[0,1] --set student.dim=256 distills two teachers of the recipe into one student)",
)
@click.option(
    "--external",
    "external_dir",
    type=click.Path(),
    default=None,
    help="with --cv: an external LUDB-format set (e.g. ../shared/data/ludb-dev) every rotation's int8 student also "
    "answers through the device's query path (mean ± SD over the rotations)",
)
@click.option("--no-progress", is_flag=True)
def distill_command(
    config_path, teacher_run, name, epochs, max_minutes, cv_out, teacher_config, settings, external_dir, no_progress
):
    """Distill the student CNN from a trained teacher (writes <student out_dir>/<name>/)."""
    with click_errors():
        if cv_out:
            cfg = load_pipeline_config(config_path, name=name, **parse_settings(settings))
            _cv_student(cfg, teacher_config, cv_out, not no_progress, external_dir)
            return
        if settings:
            raise ConfigError("--set goes with --cv (a plain distill takes its settings from the config)")
        info = run_distill(
            load_pipeline_config(config_path),
            teacher_run=teacher_run,
            name=name,
            epochs=epochs,
            max_minutes=max_minutes,
            progress=not no_progress,
        )
    click.echo(
        json.dumps(
            {k: info[k] for k in ("name", "params", "macs", "best_epoch", "val_best", "epochs_run", "train_time_s")},
            default=float,
        )
    )


def _cv_student(cfg, teacher_config, out_path, progress: bool, external_dir=None) -> None:
    from .evaluate import cv_table
    from .student_cv import cv_document, cv_student

    tcfg = load_config(teacher_config or cfg.teacher_config, **({"archive": cfg.archive} if cfg.archive else {}))
    arch = open_archive(cfg.archive)
    res, runs = cv_student(cfg, tcfg, arch, progress=progress, external_dir=external_dir)
    doc = cv_document(res, runs, arch, cfg, tcfg, external_dir)
    click.echo(cv_table(res, "### " + doc["heading"]))
    if external_dir:
        click.echo(
            f"\nexternal {external_dir}, each rotation's int8 student and its six archive folds through the device "
            "query path (no re-ranking), mean ± SD over the rotations:"
        )
        click.echo("  " + "  ".join(f"{k} {m:.3f} ± {sd:.3f}" for k, (m, sd) in doc["external"]["mean_sd"].items()))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    dump(doc, Path(out_path))


@click.command("quantize")
@click.argument("student_dir", type=click.Path())
@click.option(
    "--config",
    "config_path",
    type=click.Path(),
    default="configs/default.toml",
    show_default=True,
    help="for the [quantize] settings and the teacher run",
)
@click.option("--teacher-run", default=None, help="teacher run for the comparison rows (default from the config)")
@click.option("--no-progress", is_flag=True)
def quantize_command(student_dir, config_path, teacher_run, no_progress):
    """Export a student to float32/float16/int8 TFLite and write the quantization report beside it."""
    with click_errors():
        cfg = load_pipeline_config(config_path)
        rep = run_quantize(cfg, student_dir, teacher_run=teacher_run, progress=not no_progress)
    click.echo(rep["table_markdown"])
    try:
        check_gate(rep, cfg.quantize.max_auroc_drop, False)
    except EcgretError as e:
        click.echo(f"warning: {e}", err=True)
