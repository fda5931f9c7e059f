"""The default bundle, end to end: teacher -> student -> int8 -> index -> bundle, from one config.

``ecgret-convert pipeline --config configs/default.toml`` (``make bundle``):

1. **teacher**: the run ``[teacher] run`` (default ``<out_dir>/<name>`` of ``[teacher] config``) is reused
   when it exists and matches the teacher config (imaging, model, augmentation, targets, seed, folds; its
   embeddings cover the archive); otherwise (or with ``--retrain``) it is trained. A run that does not match
   is refused with the field that differs, never silently used.
2. **student** (:mod:`convert.student`): distilled into ``<student out_dir>/<name>/``; reused when its
   ``student.json`` holds the same student config and the same teacher model (sha256), unless ``--retrain``.
3. **quantize** (:mod:`convert.quantize`): float32/float16/int8 exports and the quantization report; the gate
   refuses an int8 model that lost more than ``max_auroc_drop`` kNN_macroAUROC unless ``--force``.
4. **bundle**: the archive (``[bundle] folds``) embedded by the int8 encoder through the device interpreter
   (:func:`convert.index_build.embed_archive`), the Annoy index tuned to recall@10 >= ``target_recall``
   against exact search, everything written by :func:`convert.bundle.write_bundle` (temporary folder, then
   rename; a folder that holds a different bundle is refused unless ``--force``).

Everything is seeded and single-process; the same inputs give the same encoder, index and cases files.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping

import numpy as np

from edge.errors import ArchiveError, ConfigError, EcgretError
from edge.imaging import ImagingConfig

from .config import read_toml
from .quantize import QuantConfig, check_gate, quant_config
from .student import StudentConfig, file_sha256, student_config

__all__ = ["PipelineConfig", "load_pipeline_config", "check_teacher_run", "load_teacher_model", "run_pipeline",
           "build_bundle", "PREPROCESSING"]

PREPROCESSING = {"target_fs": 100, "duration_s": 10.0, "bandpass_hz": [0.5, 40.0], "order": 4, "notch_hz": 50.0,
                 "zscore": "per-lead"}


@dataclass(frozen=True)
class IndexConfig:
    k: int = 10
    target_recall: float = 0.99
    trees: tuple = (8, 16, 32, 64)
    max_queries: int = 1625
    threads: int = 1
    seed: int = 0


@dataclass(frozen=True)
class BundleConfig:
    out: str = "edge/bundles/default"
    name: str = "ptbxl-default"
    folds: tuple = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    report_weight: float = 0.0      # > 0: index items carry the case's report too (see case_text_vectors)


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "default"
    path: str = ""
    teacher_config: str = "configs/teacher.toml"
    teacher_run: str | None = None
    archive: str | None = None       # an archive folder; None: the shared PTB-XL subset
    student: StudentConfig = StudentConfig()
    quantize: QuantConfig = QuantConfig()
    index: IndexConfig = IndexConfig()
    bundle: BundleConfig = BundleConfig()

    def to_dict(self) -> dict:
        return {"name": self.name, "teacher_config": self.teacher_config, "teacher_run": self.teacher_run,
                "archive": self.archive, "student": self.student.to_dict(), "quantize": self.quantize.to_dict(),
                "index": {**asdict(self.index), "trees": list(self.index.trees)},
                "bundle": {**asdict(self.bundle), "folds": list(self.bundle.folds)}}


def _table(cls, d: Mapping, where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    base = cls()
    kw = {}
    for k, v in d.items():
        dv = getattr(base, k)
        if isinstance(dv, tuple):
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"{where}.{k}: expected a list")
            v = tuple(int(x) for x in v)
        elif isinstance(dv, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}.{k}: expected a number, got {v!r}")
            v = float(v)
        elif isinstance(dv, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{where}.{k}: expected an integer, got {v!r}")
        elif not isinstance(v, str):
            raise ConfigError(f"{where}.{k}: expected a string, got {v!r}")
        kw[k] = v
    return cls(**kw)


def load_pipeline_config(path, **overrides) -> PipelineConfig:
    """Read ``configs/default.toml``-style TOML. Relative paths in it are relative to the current folder
    (the repository root, where ``make`` runs). Raises :class:`ConfigError` naming the problem."""
    p = Path(path)
    d = read_toml(p)
    top = {k: v for k, v in d.items() if not isinstance(v, dict)}
    unknown = sorted(set(top) - {"name", "archive"})
    sections = {"teacher", "student", "quantize", "index", "bundle"}
    unknown += sorted(k for k, v in d.items() if isinstance(v, dict) and k not in sections)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {', '.join(unknown)}; known: name, archive, "
                          f"[{'], ['.join(sorted(sections))}]")
    t = dict(d.get("teacher", {}))
    bad = sorted(set(t) - {"config", "run"})
    if bad:
        raise ConfigError(f"{p} [teacher]: unknown key(s) {', '.join(bad)}; known: config, run")
    cfg = PipelineConfig(
        name=str(top.get("name", "default")), path=str(p), archive=top.get("archive") or None,
        teacher_config=str(t.get("config", "configs/teacher.toml")), teacher_run=t.get("run") or None,
        student=student_config(d.get("student"), f"{p} [student]"),
        quantize=quant_config(d.get("quantize"), f"{p} [quantize]"),
        index=_table(IndexConfig, d.get("index", {}), f"{p} [index]"),
        bundle=_table(BundleConfig, d.get("bundle", {}), f"{p} [bundle]"))
    from dataclasses import replace
    for k, v in overrides.items():
        if v is not None:
            cfg = replace(cfg, **{k: v})
    if not 0 < cfg.index.target_recall <= 1 or cfg.index.k < 1 or not cfg.index.trees:
        raise ConfigError(f"{p} [index]: target_recall in (0, 1], k >= 1 and a list of trees required")
    return cfg


# ============================================================================================ teacher

_TEACHER_TRAIN_KEYS = ("targets", "soft_target_temperature", "seed", "train_folds", "val_folds", "test_folds",
                       "select_metric")


def _flat(d: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def check_teacher_run(run_dir, tcfg, archive) -> dict:
    """Verify that the teacher run at ``run_dir`` was trained with ``tcfg`` (a TeacherConfig) on ``archive``:
    imaging, model, augmentation and the training recipe (targets, seed, folds; not epochs, time budgets or
    threads), and that its embeddings cover the archive's cases in order. Returns provenance; raises
    :class:`ConfigError` naming the first field that differs."""
    from .teacher import load_config
    d = Path(run_dir)
    need = ("config.toml", "image_encoder.keras", "embeddings.npy")
    missing = [f for f in need if not (d / f).is_file()]
    if missing:
        raise ConfigError(f"{d}: not a trained teacher (missing {', '.join(missing)})")
    got = load_config(d / "config.toml").to_dict()
    want = tcfg.to_dict()
    fg, fw = _flat({k: got[k] for k in ("imaging", "model", "augment")}), _flat({k: want[k] for k in
                                                                              ("imaging", "model", "augment")})
    fg.update({f"train.{k}": got["train"][k] for k in _TEACHER_TRAIN_KEYS})
    fw.update({f"train.{k}": want["train"][k] for k in _TEACHER_TRAIN_KEYS})
    for k in sorted(set(fg) | set(fw)):
        if fg.get(k) != fw.get(k):
            raise ConfigError(f"{d}: this teacher run does not match the teacher config: it was trained with "
                              f"{k} = {fg.get(k)!r}, the config says {fw.get(k)!r}; retrain it (--retrain) or "
                              f"point [teacher] run at a matching run")
    emb = np.load(d / "embeddings.npy", mmap_mode="r")
    if emb.shape != (len(archive), tcfg.model.proj_dim):
        raise ConfigError(f"{d}/embeddings.npy: shape {emb.shape}, expected ({len(archive)}, "
                          f"{tcfg.model.proj_dim}) for this archive and config; retrain (--retrain)")
    ids_path = d / "case_ids.json"
    if ids_path.is_file() and json.loads(ids_path.read_text()) != list(archive.ids):
        raise ConfigError(f"{ids_path}: the teacher's embeddings are of other cases than this archive's; "
                          f"retrain (--retrain)")
    metrics = {}
    if (d / "metrics.json").is_file():
        m = json.loads((d / "metrics.json").read_text())
        metrics = {k: m.get(k) for k in ("best_epoch", "select_metric", "val_best", "epochs_run", "stopped",
                                         "train_time_s")}
    return {"run": str(d), "config": want, "metrics": metrics,
            "model_sha256": file_sha256(d / "image_encoder.keras")}


def load_teacher_model(run_dir):
    """The teacher's Keras image encoder (image -> unit embedding)."""
    import keras
    from .teacher import position_embedding_layer
    position_embedding_layer()
    p = Path(run_dir) / "image_encoder.keras"
    try:
        return keras.saving.load_model(p, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise ConfigError(f"{p}: cannot load the teacher model ({e})") from None


def _teacher_leadsets(run_dir) -> dict:
    p = Path(run_dir) / "leadset_embeddings.npz"
    if not p.is_file():
        return {}
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


# ============================================================================================ archive

def open_archive(path=None):
    from .archive import Archive
    if path:
        return Archive.open(path)
    from edge.paths import shared_data_dir
    return Archive.from_ptbxl_subset(shared_data_dir() / "ptbxl-subset")


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent.parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ============================================================================================ bundle

def case_text_vectors(teacher_run, n_cases: int) -> np.ndarray:
    """Each archive case's report vector for the index: the teacher's text embedding of the report (its text
    head's output), L2-normalised, (N_cases, D). The student regresses the teacher's centred image embeddings,
    so its space is the teacher's up to the centring, and the raw text vectors are used as they are: on fold 8
    (students' selection fold) they beat centring them by the image or text mean and a least-squares map
    from teacher to student space (fold-8 kNN_macroAUROC + rhythmP@10_nonSR at w = 0.5: 1.359 vs 1.326, 1.315,
    1.131; ECG-only items 1.332)."""
    run = Path(teacher_run)
    t = np.load(run / "text_embeddings.npy").astype(np.float32)
    if len(t) != n_cases:
        raise ArchiveError(f"{run}: teacher text embeddings cover {len(t)} cases, the archive has {n_cases}")
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def build_bundle(student_dir, out_dir, *, archive=None, folds=None, name: str = "ptbxl-default",
                 index: IndexConfig = IndexConfig(), max_auroc_drop: float = 0.01, force: bool = False,
                 training: dict | None = None, progress: bool = True, log=None,
                 case_text: np.ndarray | None = None, report_weight: float = 0.0) -> dict:
    """Write a bundle from a quantized student run (``encoder_int8.tflite`` + ``quant_report.json``): embed the
    archive cases of ``folds`` with the int8 encoder, tune the index, write via :func:`write_bundle`.
    With ``case_text`` ((N_archive, D) report vectors in the student's space, rows as the full archive) and
    ``report_weight`` w > 0 each index item is :func:`convert.teacher.case_vectors` of the case's int8 ECG
    embedding and its report vector: a query (an ECG) then scores (1 - w) x ECG similarity + w x
    ECG-to-report similarity. Returns the manifest."""
    from .bundle import tune_index, write_bundle
    from .index_build import embed_archive
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    d = Path(student_dir)
    enc_path, rep_path = d / "encoder_int8.tflite", d / "quant_report.json"
    for p in (enc_path, rep_path, d / "student.json"):
        if not p.is_file():
            raise ConfigError(f"{p}: missing; run `ecgret-convert quantize {d}` first")
    report = json.loads(rep_path.read_text())
    warning = check_gate(report, max_auroc_drop, force)
    if warning:
        say(warning)
    info = json.loads((d / "student.json").read_text())
    im = info["imaging"]
    imaging = ImagingConfig.from_dict(im)
    arch = archive if archive is not None else open_archive()
    rows = np.arange(len(arch))
    if folds:
        rows = arch.select(folds=folds)
        if len(rows) == 0:
            raise ArchiveError(f"the archive has no cases in folds {list(folds)}")
        arch = _subset(arch, rows)
    seen, dup = set(), []
    for cid in arch.ids:
        (dup.append(cid) if cid in seen else seen.add(cid))
    if dup:
        raise ArchiveError(f"duplicate case ids in the archive: {', '.join(dup[:5])}")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ecgret-shards-") as td:
        p = embed_archive(arch, enc_path, td, imaging, (0, 1), threads=index.threads, progress=progress)
        emb = np.load(p)
    items = {"ecg_weight": 1.0, "report_weight": 0.0}
    index_rows = {}
    if report_weight > 0:
        if case_text is None:
            raise ConfigError("bundle.report_weight > 0 needs the cases' report vectors")
        from .teacher import case_vectors
        ecg = emb
        emb = case_vectors(ecg, np.asarray(case_text, np.float32)[rows], report_weight)
        index_rows = _index_rows(arch, ecg, emb)
        items = {"ecg_weight": round(1.0 - float(report_weight), 6), "report_weight": float(report_weight),
                 "report_vectors": "the teacher's text embeddings of the reports (convert.pipeline.case_text_vectors)"}
    say(f"bundle: {len(arch)} cases embedded by the int8 encoder in {time.time() - t0:.0f} s; tuning the index")
    n_trees, search_k, recall = tune_index(emb, k=index.k, target_recall=index.target_recall, seed=index.seed,
                                           max_queries=index.max_queries, trees=index.trees)
    if recall < index.target_recall:
        say(f"bundle: warning: recall@{index.k} {recall:.4f} below the target {index.target_recall}")
    training = dict(training or {})
    training.setdefault("student", {k: info.get(k) for k in ("name", "config", "params", "macs", "best_epoch",
                                                             "val_best", "epochs_run", "stopped", "train_time_s",
                                                             "model_sha256")})
    training.setdefault("teacher", info.get("teacher", {}))
    training.setdefault("quantization", {"representative": report.get("representative"),
                                         **report.get("quantization", {}),
                                         "sizes_bytes": report.get("sizes_bytes")})
    training.setdefault("git_commit", _git_commit())
    if warning:
        training["forced"] = warning
    evaluation = {"protocol": "shared/docs/EVALUATION.md", "heading": report.get("heading"),
                  "table_markdown": report["table_markdown"], "metrics": report.get("metrics"),
                  "quantization": report.get("quantization")}
    if index_rows:   # what the device searches: int8 ECG queries against this index's own items
        from .evaluate import markdown_table
        evaluation["metrics"] = {**(evaluation["metrics"] or {}), **index_rows}
        lines = evaluation["table_markdown"].split("\n")
        last = max(k for k, ln in enumerate(lines) if ln.startswith("|"))   # the end of the table
        evaluation["table_markdown"] = "\n".join(lines[:last + 1] + markdown_table(index_rows).splitlines()[2:]
                                                  + lines[last + 1:])
    out = write_bundle(out_dir, tflite_bytes=enc_path.read_bytes(), embeddings=emb, cases=list(arch.cases),
                       preprocessing=dict(PREPROCESSING), imaging=imaging.to_dict(), n_trees=n_trees,
                       search_k=search_k, recall_at_10=recall, training=training, evaluation=evaluation,
                       name=name, force=force, seed=index.seed,
                       encoder_stats={k: (report.get("deployed") or info).get(k) for k in ("params", "macs")},
                       items=items)
    from .waveforms import add_waveforms
    add_waveforms(out, arch)           # the cases' small ECGs for the report (before any signing)
    folds_here = {c.fold for c in arch.cases}
    if set(range(1, 9)) <= folds_here:   # the measured re-ranking needs folds 1-8 to choose its weight by CV
        import os

        from .bundle import ENV_SIGNING_KEY, sign_bundle
        from .rerank import add_to_bundle, choose
        rr, measured = choose(out, arch)
        add_to_bundle(out, measured, rr["weight"], rr["pool"], {"rule": rr["rule"], "fold9": rr["fold9"]},
                      rhythm_bonus=rr["rhythm_bonus"])
        say(f"bundle: measured re-ranking, weight {rr['weight']:g}, pool {rr['pool']}, rhythm bonus "
            f"{rr['rhythm_bonus']:g} ({rr['rule']})")
        if os.environ.get(ENV_SIGNING_KEY):
            sign_bundle(out, os.environ[ENV_SIGNING_KEY])
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    say(f"bundle: {out}: {len(arch)} cases, {n_trees} trees, search_k {search_k}, recall@10 {recall:.4f}")
    return manifest


INDEX_ROW = "bundle index (ECG+report items), int8 queries"


def _index_rows(arch, ecg: np.ndarray, items: np.ndarray) -> dict:
    """Fold-9 queries (their int8 ECG embeddings) against the folds 1-8 items of the index, when the archive
    holds those folds: the figures of what the device searches."""
    from .evaluate import default_split, evaluate
    q, a = default_split(arch)
    if len(q) == 0 or len(a) == 0:
        return {}
    res = evaluate(arch, {INDEX_ROW: (ecg[q], items[a])}, q, a)
    return {k: {m: v for m, v in r.items() if m != "per_class"} for k, r in res.items()}


def _subset(archive, rows):
    from .archive import Archive, _RowView
    rows = np.asarray(rows, np.int64)
    if len(rows) == len(archive):
        return archive
    sig = archive.signals
    view = _RowView(sig, rows) if not isinstance(sig, _RowView) else _RowView(sig.base, sig.rows[rows])
    return Archive(view, [archive.cases[int(i)] for i in rows], meta=archive.meta, path=archive.path)


# ============================================================================================ pipeline

def _cache_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.student.out_dir) / "cache"


def _clean_images(archive, imaging: ImagingConfig, progress: bool, cache_dir=None) -> np.ndarray:
    """Clean images of every archive case, float32 (imaged once, cached when ``cache_dir``)."""
    from .student import cached, clean_images, image_cache_key
    idx = np.arange(len(archive))
    key = image_cache_key(archive, idx, imaging, "clean")
    (img,) = cached(cache_dir, key, lambda: (clean_images(archive, idx, imaging, progress=progress, dtype=np.float32),))
    return img.astype(np.float32)


def prepare_images(cfg: PipelineConfig, progress: bool = True) -> None:
    """Image the archive (clean and augmented training copies) into the cache before a teacher exists."""
    from .student import augmented_images, cached, image_cache_key
    from .teacher import load_config
    tcfg = load_config(cfg.teacher_config, **({"archive": cfg.archive} if cfg.archive else {}))
    archive = open_archive(cfg.archive)
    _clean_images(archive, tcfg.imaging, progress, _cache_dir(cfg))
    s = cfg.student
    tr = archive.select(folds=s.train_folds)
    key = image_cache_key(archive, tr, tcfg.imaging, "augmented", copies=s.aug_copies, seed=s.seed)
    cached(_cache_dir(cfg), key, lambda: augmented_images(archive, tr, tcfg.imaging, s.aug_copies, s.seed,
                                                          progress=progress))


def run_pipeline(cfg: PipelineConfig, *, retrain: bool = False, force: bool = False, progress: bool = True,
                 out: str | None = None, log=None) -> dict:
    """teacher -> student -> int8 -> index -> bundle. Returns a summary dict."""
    from .quantize import quantize_student
    from .student import clean_images, distill, load_student
    from .teacher import load_config, train_teacher
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.time()
    overrides = {"archive": cfg.archive} if cfg.archive else {}
    tcfg = load_config(cfg.teacher_config, **overrides)
    run = Path(cfg.teacher_run) if cfg.teacher_run else tcfg.run_dir
    if cfg.teacher_run:
        from dataclasses import replace
        tcfg = replace(tcfg, name=run.name, out_dir=str(run.parent))
    archive = open_archive(cfg.archive)
    # 1. teacher
    if retrain or not (run / "embeddings.npy").is_file():
        say(f"pipeline: training the teacher into {run} ...")
        train_teacher(tcfg, resume=not retrain, progress=progress, archive=archive)
    else:
        say(f"pipeline: reusing the teacher run {run}")
    tinfo = check_teacher_run(run, tcfg, archive)
    imaging = tcfg.imaging
    # 2. student
    sdir = Path(cfg.student.out_dir) / cfg.name
    clean = _clean_images(archive, imaging, progress, _cache_dir(cfg))
    reuse = False
    if not retrain and (sdir / "student.json").is_file() and (sdir / "student.keras").is_file():
        old = json.loads((sdir / "student.json").read_text())
        reuse = (old.get("config") == cfg.student.to_dict()
                 and old.get("teacher", {}).get("model_sha256") == tinfo["model_sha256"])
    if reuse:
        say(f"pipeline: reusing the student {sdir} (same config, same teacher)")
    else:
        teacher_model = load_teacher_model(run)
        text = None
        if cfg.student.text_weight > 0:
            text = np.load(run / "text_embeddings.npy")
        tprov = {k: tinfo[k] for k in ("run", "metrics", "model_sha256")}
        tprov["config"] = tinfo["config"]
        distill(cfg.student, archive, teacher_model, imaging=imaging, name=cfg.name, text_targets=text,
                teacher_info=tprov, clean=clean, progress=progress, log=say, cache_dir=_cache_dir(cfg))
        del teacher_model
    sinfo = json.loads((sdir / "student.json").read_text())
    # 3. quantize
    teacher = {"name": "teacher (float, Keras)", "embeddings": np.load(run / "embeddings.npy"),
               "leadsets": _teacher_leadsets(run)}
    rep = quantize_student(sdir, archive, imaging, cfg.quantize, teacher=teacher, clean=clean, progress=progress)
    say(rep["table_markdown"])
    check_gate(rep, cfg.quantize.max_auroc_drop, force)
    # 4. bundle
    training = {"pipeline_config": cfg.to_dict(), "config_file": cfg.path, "seed": cfg.student.seed,
                "data": "ptbxl-subset (shared/data/ptbxl-subset): 1,625 PTB-XL records of folds 1-9, 100 Hz",
                "teacher": {k: tinfo[k] for k in ("run", "metrics", "model_sha256", "config")},
                "student": {k: sinfo.get(k) for k in ("name", "config", "params", "macs", "best_epoch", "val_best",
                                                      "epochs_run", "stopped", "train_time_s", "model_sha256",
                                                      "n_train_images")}}
    case_text = None
    if cfg.bundle.report_weight > 0:
        case_text = case_text_vectors(run, len(archive))
    manifest = build_bundle(sdir, out or cfg.bundle.out, archive=archive, folds=cfg.bundle.folds,
                            name=cfg.bundle.name, index=cfg.index, max_auroc_drop=cfg.quantize.max_auroc_drop,
                            force=force, training=training, progress=progress, log=say,
                            case_text=case_text, report_weight=cfg.bundle.report_weight)
    return {"bundle": str(out or cfg.bundle.out), "seconds": round(time.time() - t0, 1),
            "quantization": rep["quantization"], "index": manifest["index"],
            "encoder_bytes": manifest["files"]["encoder.tflite"]["bytes"]}


# ============================================================================================ CLI
import click  # noqa: E402


def _fail(e: EcgretError):
    raise click.ClickException(str(e)) from None


@click.command("pipeline")
@click.option("--config", "config_path", type=click.Path(), default="configs/default.toml", show_default=True)
@click.option("--retrain", is_flag=True, help="retrain the teacher and the student even if runs exist")
@click.option("--force", is_flag=True, help="write the bundle even if int8 fails the quality gate, and replace "
                                            "a different bundle in the output folder")
@click.option("--out", default=None, help="bundle folder (default: [bundle] out of the config)")
@click.option("--teacher-run", default=None, help="use this teacher run folder (default: [teacher] run, else "
                                                  "the teacher config's out_dir/name)")
@click.option("--images-only", is_flag=True, help="only image the archive into the cache (needs no teacher)")
@click.option("--no-progress", is_flag=True)
def pipeline_command(config_path, retrain, force, out, teacher_run, images_only, no_progress):
    """Build the default bundle end to end: teacher -> student -> int8 -> index -> bundle."""
    try:
        cfg = load_pipeline_config(config_path, teacher_run=teacher_run)
        if images_only:
            prepare_images(cfg, progress=not no_progress)
            return
        summary = run_pipeline(cfg, retrain=retrain, force=force, progress=not no_progress, out=out)
    except EcgretError as e:
        _fail(e)
    click.echo(json.dumps(summary, default=float))


@click.command("distill")
@click.option("--config", "config_path", type=click.Path(), default="configs/default.toml", show_default=True)
@click.option("--teacher-run", default=None, help="a trained teacher run folder (default from the config)")
@click.option("--name", default=None, help="student run name (default: the config's name)")
@click.option("--epochs", type=int, default=None)
@click.option("--max-minutes", type=float, default=None)
@click.option("--no-progress", is_flag=True)
def distill_command(config_path, teacher_run, name, epochs, max_minutes, no_progress):
    """Distill the student CNN from a trained teacher (writes <student out_dir>/<name>/)."""
    from dataclasses import replace
    from .student import clean_images, distill
    from .teacher import load_config
    try:
        cfg = load_pipeline_config(config_path)
        s = cfg.student
        if epochs is not None:
            s = replace(s, epochs=epochs)
        if max_minutes is not None:
            s = replace(s, max_minutes=max_minutes)
        tcfg = load_config(cfg.teacher_config, **({"archive": cfg.archive} if cfg.archive else {}))
        run = Path(teacher_run or cfg.teacher_run or tcfg.run_dir)
        tcfg = replace(tcfg, name=run.name, out_dir=str(run.parent))
        archive = open_archive(cfg.archive)
        tinfo = check_teacher_run(run, tcfg, archive)
        model = load_teacher_model(run)
        clean = clean_images(archive, np.arange(len(archive)), tcfg.imaging, progress=not no_progress)
        info = distill(s, archive, model, imaging=tcfg.imaging, name=name or cfg.name,
                       teacher_info={k: tinfo[k] for k in ("run", "metrics", "model_sha256", "config")},
                       clean=clean.astype(np.float32), progress=not no_progress)
    except EcgretError as e:
        _fail(e)
    click.echo(json.dumps({k: info[k] for k in ("name", "params", "macs", "best_epoch", "val_best", "epochs_run",
                                                "train_time_s")}, default=float))


@click.command("quantize")
@click.argument("student_dir", type=click.Path())
@click.option("--config", "config_path", type=click.Path(), default="configs/default.toml", show_default=True,
              help="for the [quantize] settings and the teacher run")
@click.option("--teacher-run", default=None, help="teacher run for the comparison rows (default from the config)")
@click.option("--no-progress", is_flag=True)
def quantize_command(student_dir, config_path, teacher_run, no_progress):
    """Export a student to float32/float16/int8 TFLite and write the quantization report beside it."""
    from .quantize import quantize_student
    from .teacher import load_config
    try:
        cfg = load_pipeline_config(config_path)
        info_p = Path(student_dir) / "student.json"
        if not info_p.is_file():
            raise ConfigError(f"{student_dir}: not a distilled student (missing student.json)")
        im = json.loads(info_p.read_text())["imaging"]
        imaging = ImagingConfig.from_dict(im)
        archive = open_archive(cfg.archive)
        tcfg = load_config(cfg.teacher_config)
        run = Path(teacher_run or cfg.teacher_run or tcfg.run_dir)
        teacher = None
        if (run / "embeddings.npy").is_file():
            teacher = {"name": "teacher (float, Keras)", "embeddings": np.load(run / "embeddings.npy"),
                       "leadsets": _teacher_leadsets(run)}
        rep = quantize_student(student_dir, archive, imaging, cfg.quantize, teacher=teacher,
                               progress=not no_progress)
    except EcgretError as e:
        _fail(e)
    click.echo(rep["table_markdown"])
    try:
        check_gate(rep, cfg.quantize.max_auroc_drop, False)
    except EcgretError as e:
        click.echo(f"warning: {e}", err=True)


@click.command("bundle")
@click.argument("student_dir", type=click.Path(), required=False)
@click.option("--out", "out_dir", type=click.Path(), required=True, help="the bundle folder to write")
@click.option("--encoder", "encoder_bundle", type=click.Path(file_okay=False), default=None,
              help="re-index with the encoder of this existing bundle (e.g. edge/bundles/default) instead of a "
                   "student: numpy and the TFLite interpreter only, no TensorFlow; needs --archive")
@click.option("--archive", default=None, help="an archive folder (`ecgret-convert import` writes one; default "
                                              "with STUDENT_DIR: the shared PTB-XL subset)")
@click.option("--folds", default=None, help="archive folds to index: 1-9, or 1,2,3, or all (default: 1-9 with "
                                            "STUDENT_DIR, all with --encoder)")
@click.option("--name", default=None, help="bundle name (default: ptbxl-default, or the --out folder's name "
                                           "with --encoder)")
@click.option("--target-recall", type=float, default=0.99, show_default=True,
              help="recall@10 of the Annoy index against exact search to reach")
@click.option("--max-auroc-drop", type=float, default=0.01, show_default=True,
              help="quality gate of a student's int8 encoder (kNN_macroAUROC lost against float32)")
@click.option("--allow-unsigned", is_flag=True, help="accept an --encoder bundle that is not signed by a trusted "
                                                     "key")
@click.option("--force", is_flag=True, help="write even if int8 fails the quality gate or the folder holds a "
                                            "different bundle")
@click.option("--no-progress", is_flag=True, help="no progress bars")
def bundle_command(student_dir, out_dir, encoder_bundle, archive, folds, name, target_recall, max_auroc_drop,
                   allow_unsigned, force, no_progress):
    """Write a bundle (encoder, index, cases, manifest, model card): from a quantized student (STUDENT_DIR),
    or, with --encoder EXISTING_BUNDLE --archive ARCHIVE, by re-indexing an archive with a shipped encoder."""
    try:
        fl = None
        spec = folds or ("1-9" if encoder_bundle is None else "all")
        if spec != "all":
            try:
                if "-" in spec:
                    a, b = spec.split("-")
                    fl = tuple(range(int(a), int(b) + 1))
                else:
                    fl = tuple(int(x) for x in spec.split(","))
            except ValueError:
                raise ConfigError(f"--folds {spec!r}: expected e.g. 1-9, 1,2,3 or all") from None
        if encoder_bundle is not None:
            if student_dir is not None or archive is None or fl is not None:
                raise click.UsageError("--encoder takes --archive ARCHIVE and --out NEW_BUNDLE, without "
                                       "STUDENT_DIR or --folds")
            from .bundle import reindex_bundle
            m = reindex_bundle(encoder_bundle, open_archive(archive), out_dir, name=name,
                               target_recall=target_recall, force=force, allow_unsigned=allow_unsigned,
                               progress=not no_progress)
        else:
            if student_dir is None:
                raise click.UsageError("give STUDENT_DIR (a quantized student) or --encoder EXISTING_BUNDLE")
            m = build_bundle(student_dir, out_dir, archive=open_archive(archive), folds=fl,
                             name=name or "ptbxl-default", index=IndexConfig(target_recall=target_recall),
                             max_auroc_drop=max_auroc_drop, force=force, progress=not no_progress)
    except EcgretError as e:
        _fail(e)
    click.echo(json.dumps({"bundle": out_dir, "index": m["index"], "files": m["files"]}))
