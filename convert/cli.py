"""``ecgret-convert``: the workstation toolkit's command group. Commands only parse options, call the library and
print; they live in :mod:`convert.cli_train` (teacher, text, student, int8, the pipeline), :mod:`convert.cli_bundle`
(bundles, signing, waveforms, re-ranking, sharded indexes) and :mod:`convert.cli_data` (imports, evaluation), and
are registered here. Nothing heavy is imported here (TensorFlow and torch load inside the library calls)."""

from __future__ import annotations

from pathlib import Path

import click

from edge.atomicio import atomic_write

from .cli_bundle import (
    add_waveforms_command,
    bundle_command,
    embed_archive_command,
    merge_index_command,
    rerank_command,
    sign_bundle_command,
)
from .cli_data import evaluate_command, import_command
from .cli_train import (
    distill_command,
    embed_text_command,
    pipeline_command,
    quantize_command,
    teacher_report_command,
    train_teacher_command,
)
from .config import shipped_configs_dir


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ecgret", prog_name="ecgret-convert")
def main() -> None:
    """Train, evaluate, quantize and bundle ECG retrieval models."""


@click.command("init")
@click.argument("folder", default=".", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite configs there that differ from the shipped ones.")
def init_command(folder: str, force: bool) -> None:
    """Write the shipped training configs into FOLDER/configs/ (default: here), to edit and to run
    `train-teacher`, `distill`, `pipeline` with. Identical files are left alone; different ones are kept
    unless --force."""
    src = shipped_configs_dir()
    files = sorted(src.glob("*.toml"))
    if not files:
        raise click.ClickException(f"no shipped configs found in {src} (a broken install?)")
    dst = Path(folder) / "configs"
    dst.mkdir(parents=True, exist_ok=True)
    kept = []
    for f in files:
        t = dst / f.name
        data = f.read_bytes()
        if t.exists() and t.read_bytes() == data:
            continue
        if t.exists() and not force:
            kept.append(t.name)
            continue
        atomic_write(t, data)
        click.echo(f"wrote {t}")
    if kept:
        click.echo(f"kept {', '.join(kept)} in {dst}: they differ from the shipped ones (--force overwrites)", err=True)
    click.echo(
        f"{len(files)} shipped configs in {dst}/; next: ecgret-convert train-teacher --config {dst / 'teacher.toml'}",
        err=True,
    )


for _cmd in (
    train_teacher_command,
    teacher_report_command,
    embed_text_command,
    evaluate_command,
    distill_command,
    quantize_command,
    bundle_command,
    pipeline_command,
    embed_archive_command,
    merge_index_command,
    init_command,
    rerank_command,
    sign_bundle_command,
    import_command,
    add_waveforms_command,
):
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
