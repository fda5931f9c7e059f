"""``ecgret-convert``: the workstation toolkit's command group. Commands are defined in the modules that
implement them and registered here with ``main.add_command``; this file stays thin and imports nothing heavy
(TensorFlow and torch load inside the commands)."""
from __future__ import annotations

import click

from edge.atomicio import atomic_write

from . import index_build as _index_build
from . import pipeline as _pipeline
from . import teacher as _teacher
from . import text as _text
from .bundle import sign_bundle_command as _sign_bundle_command
from .evaluate import evaluate_cmd as _evaluate_cmd
from .importers import import_command as _import_command
from .waveforms import add_waveforms_command as _add_waveforms_command


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
    from pathlib import Path

    from .config import shipped_configs_dir
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
        click.echo(f"kept {', '.join(kept)} in {dst}: they differ from the shipped ones (--force overwrites)",
                   err=True)
    click.echo(f"{len(files)} shipped configs in {dst}/; next: ecgret-convert train-teacher --config {dst / 'teacher.toml'}", err=True)


@click.command("rerank")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="The PTB-XL subset folder the bundle's archive came from (default: the shared data).")
@click.option("--write", is_flag=True, help="Write the measurements and the chosen setting into BUNDLE "
              "(cases.jsonl 'measured', manifest 'rerank'); sign it again afterwards with sign-bundle.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Write the CV table and fold 9 here.")
def rerank_command(bundle: str, data_dir: str | None, write: bool, json_out: str | None) -> None:
    """Measure every archive case, choose the measured-rhythm re-ranking (weight, pool, rhythm bonus) by
    cross-validation over folds 1-8 (4 rotations of 2 query folds), and report fold 9 once for the chosen setting."""
    import json
    from pathlib import Path

    from edge.paths import shared_data_dir

    from .archive import Archive
    from .rerank import add_to_bundle, choose
    archive = Archive.from_ptbxl_subset(Path(data_dir) if data_dir else shared_data_dir() / "ptbxl-subset")
    res, measured = choose(bundle, archive)
    click.echo("| setting | " + " | ".join(("P@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")) + " |")
    click.echo("| --- | --- | --- | --- | --- |")
    for name, v in res["cv"].items():
        click.echo(f"| CV {name} | " + " | ".join(f"{a:.3f} ± {s:.3f}" for a, s in v.values()) + " |")
    for name, v in res["fold9"].items():
        click.echo(f"| fold 9, {name} | " + " | ".join(f"{x:.3f}" for x in v.values()) + " |")
    click.echo(f"chosen: weight {res['weight']:g}, pool {res['pool']}, rhythm bonus {res['rhythm_bonus']:g} "
               f"({res['rule']})")
    if json_out:
        atomic_write(json_out, json.dumps(res, indent=1) + "\n")
    if write:
        add_to_bundle(bundle, measured, res["weight"], res["pool"],
                      {"rule": res["rule"], "fold9": res["fold9"]}, rhythm_bonus=res["rhythm_bonus"])
        click.echo(f"wrote the measurements and the rerank setting into {bundle}; sign it again (sign-bundle)")


for _cmd in (_teacher.train_teacher_command, _teacher.teacher_report_command, _text.embed_text_command,
             _evaluate_cmd, _pipeline.distill_command, _pipeline.quantize_command, _pipeline.bundle_command,
             _pipeline.pipeline_command, _index_build.embed_archive_command, _index_build.merge_index_command,
             init_command, rerank_command):
    main.add_command(_cmd)
main.add_command(_sign_bundle_command)
main.add_command(_import_command)
main.add_command(_add_waveforms_command)

if __name__ == "__main__":
    main()
