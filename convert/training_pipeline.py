"""The default bundle, end to end: teacher -> student -> int8 -> index -> bundle, from one config.

``ecgret-convert pipeline --config configs/default.toml`` (``make bundle``); ``distill`` and ``quantize`` run
steps 2 and 3 alone (:func:`run_distill`, :func:`run_quantize`):

1. **teacher**: the run ``[teacher] run`` (default ``<out_dir>/<name>`` of ``[teacher] config``) is reused
   when it exists and matches the teacher config (imaging, model, augmentation, targets, seed, folds; its
   embeddings cover the archive); otherwise (or with ``--retrain``) it is trained. A run that does not match
   is refused with the field that differs, never silently used.
2. **student** (:mod:`convert.student`): distilled into ``<student out_dir>/<name>/``; reused when its
   ``student.json`` holds the same student config and the same teacher model (sha256), unless ``--retrain``.
3. **quantize** (:mod:`convert.quantize`): float32/float16/int8 exports and the quantization report; the gate
   refuses an int8 model that lost more than ``max_auroc_drop`` kNN_macroAUROC unless ``--force``.
4. **bundle**: the archive (``[bundle] folds``) embedded by the int8 encoder through the device interpreter
   (:func:`convert.shards.embed_archive`), the Annoy index tuned to recall@10 >= ``target_recall`` against
   exact search, everything written by :func:`convert.bundle.write_bundle` (staging folder, then rename; a
   folder that holds a different bundle is refused unless ``--force``): :func:`convert.bundle_build.build_bundle`.

Everything is seeded and single-process; the same inputs give the same encoder, index and cases files.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edge.bundle import file_sha256
from edge.errors import ConfigError
from edge.imaging import ImagingConfig

from .bundle_build import STUDENT_KEYS, build_bundle, case_text_vectors
from .config import coerce, read_toml
from .images import augmented_images, cached, image_cache_key, image_cases
from .index_build import IndexConfig
from .ptbxl import open_archive
from .quantize import QuantConfig, check_gate, quant_config, quantize_student
from .student import StudentConfig, distill, student_config
from .teacher_config import load_config
from .teacher_model import load_teacher_model
from .teacher_train import train_teacher

__all__ = [
    "PipelineConfig",
    "BundleConfig",
    "load_pipeline_config",
    "check_teacher_run",
    "run_pipeline",
    "run_distill",
    "run_quantize",
    "prepare_images",
]


@dataclass(frozen=True)
class BundleConfig:
    """``[bundle]`` of ``configs/default.toml``: output folder, bundle name, the archive folds indexed, and
    ``report_weight`` (w > 0: index items carry the case's report, :func:`convert.bundle_build.case_text_vectors`)."""

    out: str = "edge/bundles/default"
    name: str = "ptbxl-default"
    folds: tuple = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    report_weight: float = 0.0  # > 0: index items carry the case's report too (see case_text_vectors)
    # a `distill --cv` JSON of this recipe: checked before any training, its figures go into the model card
    cv_results: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """``configs/default.toml`` as read: name, the file it came from (``path``), the teacher config and run, the
    archive, and the ``student``, ``quantize``, ``index`` and ``bundle`` sections."""

    name: str = "default"
    path: str = ""
    teacher_config: str = "configs/teacher.toml"
    teacher_run: str | None = None
    # several teachers of the recipe, one per seed, distilled into one student (``distill --cv`` only): None = one
    teacher_seeds: tuple[int, ...] | None = None
    archive: str | None = None  # an archive folder; None: the shared PTB-XL subset
    student: StudentConfig = StudentConfig()
    quantize: QuantConfig = QuantConfig()
    index: IndexConfig = IndexConfig()
    bundle: BundleConfig = BundleConfig()

    def to_dict(self) -> dict:
        """The config as a dict of sections, tuples as lists (``path`` left out): the summary's ``pipeline_config``."""
        plain = ("name", "teacher_config", "teacher_run", "archive")
        seeds = {"teacher_seeds": list(self.teacher_seeds)} if self.teacher_seeds else {}
        return {
            **{f: getattr(self, f) for f in plain},
            **seeds,
            "student": self.student.to_dict(),
            "quantize": self.quantize.to_dict(),
            "index": {**asdict(self.index), "trees": list(self.index.trees)},
            "bundle": {**asdict(self.bundle), "folds": list(self.bundle.folds)},
        }


def _table(cls, d: Mapping, where: str):
    return cls(**coerce(cls, d, where))


def load_pipeline_config(path, **overrides) -> PipelineConfig:
    """Read ``configs/default.toml``-style TOML. Relative paths in it are relative to the current folder
    (the repository root, where ``make`` runs). ``overrides``: top-level fields, or ``section__key`` entries of
    the TOML sections (``student__target_images="clean"``). Raises :class:`ConfigError` naming the problem."""
    p = Path(path)
    d = read_toml(p)
    for k in [k for k in overrides if "__" in k]:
        sec, key = k.split("__", 1)
        d.setdefault(sec, {})[key] = overrides.pop(k)
    top = {k: v for k, v in d.items() if not isinstance(v, dict)}
    unknown = sorted(set(top) - {"name", "archive"})
    sections = {"teacher", "student", "quantize", "index", "bundle"}
    unknown += sorted(k for k, v in d.items() if isinstance(v, dict) and k not in sections)
    if unknown:
        raise ConfigError(
            f"{p}: unknown key(s) {', '.join(unknown)}; known: name, archive, [{'], ['.join(sorted(sections))}]"
        )
    t = dict(d.get("teacher", {}))
    bad = sorted(set(t) - {"config", "run", "seeds"})
    if bad:
        raise ConfigError(f"{p} [teacher]: unknown key(s) {', '.join(bad)}; known: config, run, seeds")
    seeds = t.get("seeds")
    if seeds is not None:
        if (
            not isinstance(seeds, list)
            or len(seeds) < 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in seeds)
            or len(set(seeds)) != len(seeds)
        ):
            raise ConfigError(f"{p} [teacher] seeds: a list of two or more distinct seeds >= 0, got {seeds!r}")
        if t.get("run"):
            raise ConfigError(f"{p} [teacher]: seeds and run exclude each other (seeds name the runs themselves)")
    cfg = PipelineConfig(
        name=str(top.get("name", "default")),
        path=str(p),
        archive=top.get("archive") or None,
        teacher_config=str(t.get("config", "configs/teacher.toml")),
        teacher_run=t.get("run") or None,
        teacher_seeds=tuple(seeds) if seeds is not None else None,
        student=student_config(d.get("student"), f"{p} [student]"),
        quantize=quant_config(d.get("quantize"), f"{p} [quantize]"),
        index=_table(IndexConfig, d.get("index", {}), f"{p} [index]"),
        bundle=_table(BundleConfig, d.get("bundle", {}), f"{p} [bundle]"),
    )
    for k, v in overrides.items():
        if v is not None:
            cfg = replace(cfg, **{k: v})
    if not 0 < cfg.index.target_recall <= 1 or cfg.index.k < 1 or not cfg.index.trees:
        raise ConfigError(f"{p} [index]: target_recall in (0, 1], k >= 1 and a list of trees required")
    if cfg.bundle.cv_results is not None and not isinstance(cfg.bundle.cv_results, str):
        raise ConfigError(f"{p} [bundle] cv_results: expected the path of a `distill --cv` JSON")
    return cfg


# ============================================================================================ teacher

_TEACHER_TRAIN_KEYS = (
    "targets",
    "soft_target_temperature",
    "seed",
    "train_folds",
    "val_folds",
    "test_folds",
    "select_metric",
)


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
    d = Path(run_dir)
    need = ("config.toml", "image_encoder.keras", "embeddings.npy")
    missing = [f for f in need if not (d / f).is_file()]
    if missing:
        raise ConfigError(f"{d}: not a trained teacher (missing {', '.join(missing)})")
    got = load_config(d / "config.toml").to_dict()
    want = tcfg.to_dict()
    fg, fw = (
        _flat({k: got[k] for k in ("imaging", "model", "augment")}),
        _flat({k: want[k] for k in ("imaging", "model", "augment")}),
    )
    fg.update({f"train.{k}": got["train"][k] for k in _TEACHER_TRAIN_KEYS})
    fw.update({f"train.{k}": want["train"][k] for k in _TEACHER_TRAIN_KEYS})
    for k in sorted(set(fg) | set(fw)):
        if fg.get(k) != fw.get(k):
            raise ConfigError(
                f"{d}: this teacher run does not match the teacher config: it was trained with "
                f"{k} = {fg.get(k)!r}, the config says {fw.get(k)!r}; retrain it (--retrain) or "
                f"point [teacher] run at a matching run"
            )
    emb = np.load(d / "embeddings.npy", mmap_mode="r")
    if emb.shape != (len(archive), tcfg.model.proj_dim):
        raise ConfigError(
            f"{d}/embeddings.npy: shape {emb.shape}, expected ({len(archive)}, "
            f"{tcfg.model.proj_dim}) for this archive and config; retrain (--retrain)"
        )
    ids_path = d / "case_ids.json"
    if ids_path.is_file() and json.loads(ids_path.read_text()) != list(archive.ids):
        raise ConfigError(
            f"{ids_path}: the teacher's embeddings are of other cases than this archive's; retrain (--retrain)"
        )
    metrics = {}
    if (d / "metrics.json").is_file():
        m = json.loads((d / "metrics.json").read_text())
        metrics = {
            k: m.get(k) for k in ("best_epoch", "select_metric", "val_best", "epochs_run", "stopped", "train_time_s")
        }
    return {"run": str(d), "config": want, "metrics": metrics, "model_sha256": file_sha256(d / "image_encoder.keras")}


def _teacher_leadsets(run_dir) -> dict:
    p = Path(run_dir) / "leadset_embeddings.npz"
    if not p.is_file():
        return {}
    with np.load(p) as z:
        return {k: z[k] for k in z.files}


def _cache_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.student.out_dir) / "cache"


def _clean_images(archive, imaging: ImagingConfig, progress: bool, cache_dir=None) -> np.ndarray:
    """Clean images of every archive case, float32 (imaged once, cached when ``cache_dir``)."""
    idx = np.arange(len(archive))
    key = image_cache_key(archive, idx, imaging, "clean")
    (img,) = cached(cache_dir, key, lambda: (image_cases(archive, idx, imaging, progress=progress, dtype=np.float32),))
    return img.astype(np.float32)


def prepare_images(cfg: PipelineConfig, progress: bool = True) -> None:
    """Image the archive (clean and augmented training copies) into the cache before a teacher exists."""
    tcfg = load_config(cfg.teacher_config, **({"archive": cfg.archive} if cfg.archive else {}))
    archive = open_archive(cfg.archive)
    _clean_images(archive, tcfg.imaging, progress, _cache_dir(cfg))
    s = cfg.student
    tr = archive.select(folds=s.train_folds)
    key = image_cache_key(archive, tr, tcfg.imaging, "augmented", copies=s.aug_copies, seed=s.seed)
    cached(
        _cache_dir(cfg),
        key,
        lambda: augmented_images(archive, tr, tcfg.imaging, s.aug_copies, s.seed, progress=progress),
    )


def run_pipeline(
    cfg: PipelineConfig,
    *,
    retrain: bool = False,
    force: bool = False,
    progress: bool = True,
    out: str | None = None,
    log=None,
) -> dict:
    """teacher -> student -> int8 -> index -> bundle. Returns a summary dict."""
    _one_teacher(cfg)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.time()
    overrides = {"archive": cfg.archive} if cfg.archive else {}
    tcfg = load_config(cfg.teacher_config, **overrides)
    run = Path(cfg.teacher_run) if cfg.teacher_run else tcfg.run_dir
    if cfg.teacher_run:
        tcfg = replace(tcfg, name=run.name, out_dir=str(run.parent))
    cv = None
    if cfg.bundle.cv_results:  # before any training: a CV of another recipe is refused now, not after an hour
        from .student_cv import cv_evaluation

        cv = cv_evaluation(cfg.bundle.cv_results, cfg, tcfg)
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
        reuse = (
            old.get("config") == cfg.student.to_dict()
            and old.get("teacher", {}).get("model_sha256") == tinfo["model_sha256"]
        )
    if reuse:
        say(f"pipeline: reusing the student {sdir} (same config, same teacher)")
    else:
        teacher_model = load_teacher_model(run)
        text = None
        if cfg.student.text_weight > 0:
            text = np.load(run / "text_embeddings.npy")
        tprov = {k: tinfo[k] for k in ("run", "metrics", "model_sha256")}
        tprov["config"] = tinfo["config"]
        distill(
            cfg.student,
            archive,
            teacher_model,
            imaging=imaging,
            name=cfg.name,
            text_targets=text,
            teacher_info=tprov,
            clean=clean,
            progress=progress,
            log=say,
            cache_dir=_cache_dir(cfg),
        )
        del teacher_model
    sinfo = json.loads((sdir / "student.json").read_text())
    # 3. quantize
    teacher = {
        "name": "teacher (float, Keras)",
        "embeddings": np.load(run / "embeddings.npy"),
        "leadsets": _teacher_leadsets(run),
    }
    rep = quantize_student(sdir, archive, imaging, cfg.quantize, teacher=teacher, clean=clean, progress=progress)
    say(rep["table_markdown"])
    check_gate(rep, cfg.quantize.max_auroc_drop, force)
    # 4. bundle
    training = {
        "pipeline_config": cfg.to_dict(),
        "config_file": cfg.path,
        "seed": cfg.student.seed,
        "data": "ptbxl-subset (shared/data/ptbxl-subset): 1,625 PTB-XL records of folds 1-9, 100 Hz",
        "teacher": {k: tinfo[k] for k in ("run", "metrics", "model_sha256", "config")},
        "student": {k: sinfo.get(k) for k in STUDENT_KEYS + ("n_train_images",)},
    }
    case_text = None
    if cfg.bundle.report_weight > 0:
        case_text = case_text_vectors(run, len(archive))
    manifest = build_bundle(
        sdir,
        out or cfg.bundle.out,
        archive=archive,
        folds=cfg.bundle.folds,
        name=cfg.bundle.name,
        index=cfg.index,
        max_auroc_drop=cfg.quantize.max_auroc_drop,
        force=force,
        training=training,
        progress=progress,
        log=say,
        case_text=case_text,
        report_weight=cfg.bundle.report_weight,
        cv=cv,
    )
    return {
        "bundle": str(out or cfg.bundle.out),
        "seconds": round(time.time() - t0, 1),
        "quantization": rep["quantization"],
        "index": manifest["index"],
        "encoder_bytes": manifest["files"]["encoder.tflite"]["bytes"],
    }


def _one_teacher(cfg: PipelineConfig) -> None:
    """Several teachers (``[teacher] seeds``) are measured by ``distill --cv`` only: a ConfigError elsewhere."""
    if cfg.teacher_seeds:
        raise ConfigError(
            f"{cfg.path or 'config'} [teacher] seeds: several teachers distilled into one student are measured by "
            "`ecgret-convert distill --cv` only; a bundle is built from one teacher (docs/TRAINING.md)"
        )


def _teacher_run(cfg: PipelineConfig, teacher_run=None):
    """(teacher config, teacher run folder) of a pipeline config: ``teacher_run``, else ``[teacher] run``, else
    the teacher config's ``out_dir/name``."""
    _one_teacher(cfg)
    tcfg = load_config(cfg.teacher_config, **({"archive": cfg.archive} if cfg.archive else {}))
    return tcfg, Path(teacher_run or cfg.teacher_run or tcfg.run_dir)


def run_distill(
    cfg: PipelineConfig,
    *,
    teacher_run=None,
    name: str | None = None,
    epochs: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
) -> dict:
    """Distill the student of ``cfg`` (``epochs`` and ``max_minutes`` overriding its own) from a trained teacher
    run (checked against the teacher config first); returns the ``student.json`` dict."""
    s = cfg.student
    if epochs is not None:
        s = replace(s, epochs=epochs)
    if max_minutes is not None:
        s = replace(s, max_minutes=max_minutes)
    tcfg, run = _teacher_run(cfg, teacher_run)
    tcfg = replace(tcfg, name=run.name, out_dir=str(run.parent))
    archive = open_archive(cfg.archive)
    tinfo = check_teacher_run(run, tcfg, archive)
    model = load_teacher_model(run)
    clean = image_cases(archive, np.arange(len(archive)), tcfg.imaging, progress=progress)
    return distill(
        s,
        archive,
        model,
        imaging=tcfg.imaging,
        name=name or cfg.name,
        teacher_info={k: tinfo[k] for k in ("run", "metrics", "model_sha256", "config")},
        clean=clean.astype(np.float32),
        progress=progress,
    )


def run_quantize(cfg: PipelineConfig, student_dir, *, teacher_run=None, progress: bool = True) -> dict:
    """Export the distilled student at ``student_dir`` to TFLite and write its quantization report, with the
    teacher run's rows beside it when the run exists; returns the report."""
    info_p = Path(student_dir) / "student.json"
    if not info_p.is_file():
        raise ConfigError(f"{student_dir}: not a distilled student (missing student.json)")
    imaging = ImagingConfig.from_dict(json.loads(info_p.read_text())["imaging"])
    archive = open_archive(cfg.archive)
    _, run = _teacher_run(cfg, teacher_run)
    teacher = None
    if (run / "embeddings.npy").is_file():
        teacher = {
            "name": "teacher (float, Keras)",
            "embeddings": np.load(run / "embeddings.npy"),
            "leadsets": _teacher_leadsets(run),
        }
    return quantize_student(student_dir, archive, imaging, cfg.quantize, teacher=teacher, progress=progress)
