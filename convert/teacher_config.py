"""The teacher's configuration: a ViT image encoder trained from scratch against frozen report-text embeddings
(CLIP loss). The model is :mod:`convert.teacher_model`, the training loop :mod:`convert.teacher_train`, the
artefacts and their measurement :mod:`convert.teacher_export`.

Recipe (``configs/teacher.toml``):

* text: each case's English statements plus its translated report, embedded once by a frozen
  sentence-transformers model (:mod:`convert.text`, run in a subprocess; this process never imports torch)
  and projected by a learnable linear head;
* image: :func:`edge.imaging.ecg_image` of the augmented signal (:mod:`convert.augment`), imaged on the fly
  in a ``tf.data`` pipeline; a ViT (patch embedding, learned positions, pre-norm transformer blocks, mean
  pooling, a linear projection, L2 normalisation);
* loss: the symmetric contrastive (CLIP) loss with a learnable temperature. Many reports are identical
  ("sinus rhythm; normal ECG"), so plain CLIP would push apart pairs that say the same thing; with
  ``targets = "soft"`` the cross-entropy targets of row i are softmax(cos(t_i, t_j) / tau_t) over the batch
  (identical texts share the mass equally), ``targets = "clip"`` gives the plain identity targets;
* selection: every ``eval_every`` epochs the fold-8 cases (12 leads, no augmentation) are retrieved from a
  folds 1-7 archive with :func:`convert.evaluate.evaluate`; the best ``select_metric`` is kept, training
  stops after ``patience`` epochs without improvement (never before ``min_epochs``), or at ``max_minutes``;
* scale-out: the loop runs under a ``tf.distribute`` strategy (``default``, ``one-device``, ``mirrored``,
  ``multi-worker`` via ``TF_CONFIG``), fed by ``distribute_datasets_from_function``; each replica computes
  the contrastive loss over its own share of the global batch and gradients are all-reduced.

Output ``<out>/<name>/`` (see docs/TRAINING.md): ``image_encoder.keras``, ``text_head.keras``,
``image_head.npz``, ``embeddings.npy``, ``text_embeddings.npy``, ``leadset_embeddings.npz``,
``config.toml``, ``metrics.json``, ``train.log`` (when run through the CLI), ``checkpoints/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.errors import ConfigError
from edge.imaging import MODES, ImagingConfig

from .augment import AugmentConfig
from .config import coerce, read_toml

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "TeacherConfig",
    "config_from_dict",
    "load_config",
    "validate_config",
    "select_terms",
    "select_score",
    "config_toml",
    "STRATEGIES",
    "TARGETS",
    "EVAL_LEAD_SETS",
]

STRATEGIES = ("default", "one-device", "mirrored", "multi-worker")
TARGETS = ("soft", "clip")
EVAL_LEAD_SETS = ("I", "II", "3", "limb6")


RESIZES = ("area", "bilinear")


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the ViT's input size (None: the image's) and how the image is resized to it, patch size, width,
    depth, heads, MLP ratio, dropout and projection dimension."""

    image_size: tuple[int, int] | None = None  # (H, W) the ViT sees; None: the imaging shape
    resize: str = "area"  # how the image is brought to image_size: "area", or "bilinear" (the paper's PIL resize;
    # TFLite has a builtin bilinear resize and no area resize, so a model to run on the device needs "bilinear")
    patch: int = 16
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    proj_dim: int = 128


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: the loss (targets, temperatures, rhythm terms), optimisation, selection (``eval_every``,
    ``patience``, ``select_metric``), the time budget (``max_minutes``), strategy, threads, folds, checkpoints kept."""

    epochs: int = 60
    batch_size: int = 64  # global batch (split across replicas)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    init_temperature: float = 0.07
    targets: str = "soft"
    soft_target_temperature: float = 0.05
    rhythm_aux_weight: float = 0.0  # > 0: auxiliary CLIP term against the rhythm statements' text alone
    rhythm_target_weight: float = 0.0  # > 0: soft targets also reward pairs that share a rhythm statement
    label_aux_weight: float = 0.0  # > 0: supervised multi-label BCE on the cases' statements beside the CLIP loss
    eval_every: int = 2
    patience: int = 12
    min_epochs: int = 0  # no early stop before this epoch (early checkpoints are noisy: a lucky epoch 2 is no model)
    select_metric: str = "kNN_macroAUROC"
    max_minutes: float = 85.0
    seed: int = 0
    deterministic: bool = True
    threads: int = 2
    strategy: str = "default"
    train_folds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    val_folds: tuple[int, ...] = (8,)
    test_folds: tuple[int, ...] = (9,)
    keep_checkpoints: int = 2


@dataclass(frozen=True)
class TeacherConfig:
    """A teacher run's configuration (``configs/teacher.toml``): name, output folder, archive, text model and
    the ``imaging``, ``model``, ``train`` and ``augment`` sections."""

    name: str = "rhythm"
    out_dir: str = "runs/teacher"
    archive: str | None = None  # an archive folder; None: the shared PTB-XL subset
    text_model: str | None = None  # a sentence-transformers folder; None: the packaged all-MiniLM-L6-v2
    imaging: ImagingConfig = ImagingConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()

    @property
    def image_size(self) -> tuple[int, ...]:
        """(H, W) the ViT sees: ``model.image_size``, else the imaging's image shape."""
        return tuple(self.model.image_size) if self.model.image_size else self.imaging.shape[:2]

    @property
    def run_dir(self) -> Path:
        """``out_dir/name``: the run's folder."""
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        """The config as a dict of sections (the imaging's recipe fields only): what :func:`config_toml` writes
        and the pipeline compares with a run's ``config.toml``."""
        d = {
            "name": self.name,
            "out_dir": self.out_dir,
            "archive": self.archive,
            "text_model": self.text_model,
            "imaging": {k: getattr(self.imaging, k) for k in ("mode", "tile", "mtf_bins", "fs", "rr_scale")},
            "model": asdict(self.model),
            "train": asdict(self.train),
            "augment": asdict(self.augment),
        }
        return d


_SECTIONS = {"imaging": ImagingConfig, "model": ModelConfig, "train": TrainConfig, "augment": AugmentConfig}


def _coerce(cls, d: Mapping, where: str):
    return cls(**coerce(cls, d, where, tuple_keys=("image_size",)))


def config_from_dict(d: Mapping, where: str = "config") -> TeacherConfig:
    """A validated :class:`TeacherConfig` from a TOML dict (top-level fields and the ``[imaging]``, ``[model]``,
    ``[train]``, ``[augment]`` tables); :class:`ConfigError` naming ``where`` and the key."""
    top = {k: v for k, v in d.items() if k not in _SECTIONS}
    unknown = sorted(set(top) - {"name", "out_dir", "archive", "text_model"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known sections: "
            f"{', '.join(_SECTIONS)} and name, out_dir, archive, text_model"
        )
    kw = {k: _coerce(cls, d[k], f"{where} [{k}]") for k, cls in _SECTIONS.items() if k in d}
    for k in ("name", "out_dir", "archive", "text_model"):
        if k in top and top[k] is not None and not isinstance(top[k], str):
            raise ConfigError(f"{where}: {k} must be a string")
    cfg = TeacherConfig(**{k: v for k, v in top.items()}, **kw)
    validate_config(cfg, where)
    return cfg


def load_config(path, **overrides) -> TeacherConfig:
    """Read a TOML config; ``overrides`` replace top-level fields or ``section__key`` entries
    (``train__epochs=3``). Raises :class:`ConfigError` naming the problem."""
    p = Path(path)
    d = read_toml(p)
    for k, v in overrides.items():
        if v is None:
            continue
        if "__" in k:
            sec, key = k.split("__", 1)
            d.setdefault(sec, {})[key] = v
        else:
            d[k] = v
    return config_from_dict(d, str(p))


def validate_config(cfg: TeacherConfig, where: str = "config") -> None:
    """Impossible shapes and values -> :class:`ConfigError` before anything is built."""
    im, m, t = cfg.imaging, cfg.model, cfg.train
    if im.mode not in MODES:
        raise ConfigError(f"{where}: imaging.mode {im.mode!r} unknown; choose one of {', '.join(MODES)}")
    if im.tile < 4 or im.mtf_bins < 2:
        raise ConfigError(f"{where}: imaging.tile must be >= 4 and imaging.mtf_bins >= 2")
    if m.image_size is not None and (len(m.image_size) != 2 or min(m.image_size) < 1):
        raise ConfigError(f"{where}: model.image_size must be [height, width], got {list(m.image_size)}")
    if m.resize not in RESIZES:
        raise ConfigError(f"{where}: model.resize {m.resize!r} unknown; choose one of {', '.join(RESIZES)}")
    h, w = cfg.image_size
    if m.patch < 1 or h % m.patch or w % m.patch:
        raise ConfigError(
            f"{where}: image size {h}x{w} is not divisible by model.patch {m.patch} "
            f"(imaging mode {im.mode!r}, tile {im.tile} gives {im.shape[0]}x{im.shape[1]})"
        )
    for k in ("width", "depth", "heads", "proj_dim"):
        if getattr(m, k) < 1:
            raise ConfigError(f"{where}: model.{k} must be >= 1")
    if m.width % m.heads:
        raise ConfigError(f"{where}: model.width {m.width} is not divisible by model.heads {m.heads}")
    if not 0.0 <= m.dropout < 1.0 or m.mlp_ratio <= 0:
        raise ConfigError(f"{where}: model.dropout must be in [0, 1) and model.mlp_ratio > 0")
    if t.min_epochs < 0 or t.patience < 0:
        raise ConfigError(f"{where}: train.min_epochs and train.patience must be >= 0")
    if t.epochs < 1 or t.batch_size < 2 or t.lr <= 0 or t.eval_every < 1 or t.threads < 1:
        raise ConfigError(f"{where}: train.epochs, eval_every, threads >= 1, batch_size >= 2 and lr > 0 required")
    if t.strategy not in STRATEGIES:
        raise ConfigError(f"{where}: train.strategy {t.strategy!r} unknown; choose one of {', '.join(STRATEGIES)}")
    if t.targets not in TARGETS:
        raise ConfigError(f"{where}: train.targets {t.targets!r} unknown; choose one of {', '.join(TARGETS)}")
    if t.targets == "soft" and t.soft_target_temperature <= 0:
        raise ConfigError(f"{where}: train.soft_target_temperature must be > 0")
    if t.rhythm_aux_weight < 0 or t.rhythm_target_weight < 0 or t.label_aux_weight < 0:
        raise ConfigError(
            f"{where}: train.rhythm_aux_weight, train.rhythm_target_weight and train.label_aux_weight must be >= 0"
        )
    if t.rhythm_target_weight > 0 and t.targets != "soft":
        raise ConfigError(f'{where}: train.rhythm_target_weight needs train.targets = "soft"')
    bad = [m for m in select_terms(t.select_metric) if m not in _SELECTABLE]
    if bad:
        raise ConfigError(
            f"{where}: train.select_metric {t.select_metric!r}: unknown metric(s) {', '.join(bad)}; "
            f"choose from {', '.join(_SELECTABLE)}, joined by '+' to select on their sum"
        )
    if not 0 < t.init_temperature < 1:
        raise ConfigError(f"{where}: train.init_temperature must be in (0, 1)")
    if set(t.train_folds) & (set(t.val_folds) | set(t.test_folds)) or set(t.val_folds) & set(t.test_folds):
        raise ConfigError(f"{where}: train, validation and test folds must be disjoint")
    a = cfg.augment
    if not (0 <= a.p_reduced <= 1 and 0 <= a.p_lead < 1 and 0 <= a.scale < 1 and 0 <= a.lead_scale < 1):
        raise ConfigError(f"{where}: augment probabilities must be in [0, 1] and scales in [0, 1)")


_SELECTABLE = ("P@1", "P@5", "P@10", "P@10_exact", "mAP@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")


def select_terms(select_metric: str) -> list[str]:
    """``"kNN_macroAUROC+rhythmP@10_nonSR"`` -> the metrics whose sum selects the checkpoint."""
    return [m.strip() for m in str(select_metric).split("+")]


def select_score(metrics: Mapping, select_metric: str) -> float:
    """The checkpoint's selection score: the sum of ``metrics`` over :func:`select_terms` of ``select_metric``
    (a term missing from ``metrics`` raises KeyError; :func:`validate_config` checks the names)."""
    return float(sum(metrics[m] for m in select_terms(select_metric)))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def config_toml(cfg: TeacherConfig) -> str:
    """``cfg`` as TOML text (top-level fields, then one table a section; None values left out), which
    :func:`load_config` reads back."""
    d = cfg.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict) and v is not None]
    for sec in _SECTIONS:
        lines += ["", f"[{sec}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[sec].items() if v is not None]
    return "\n".join(lines) + "\n"
