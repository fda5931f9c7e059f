"""The teacher: a ViT image encoder trained from scratch against frozen report-text embeddings (CLIP loss).

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
  stops after ``patience`` epochs without improvement, or at ``max_minutes``;
* scale-out: the loop runs under a ``tf.distribute`` strategy (``default``, ``one-device``, ``mirrored``,
  ``multi-worker`` via ``TF_CONFIG``), fed by ``distribute_datasets_from_function``; each replica computes
  the contrastive loss over its own share of the global batch and gradients are all-reduced.

Output ``<out>/<name>/`` (see docs/TRAINING.md): ``image_encoder.keras``, ``text_head.keras``,
``image_head.npz``, ``embeddings.npy``, ``text_embeddings.npy``, ``leadset_embeddings.npz``,
``config.toml``, ``metrics.json``, ``train.log`` (when run through the CLI), ``checkpoints/``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from edge.atomicio import atomic_path, atomic_write
from edge.errors import ArchiveError, ConfigError
from edge.imaging import MODES, ImagingConfig, ecg_image

from .augment import AugmentConfig, augment, lead_mask
from .config import coerce, read_toml

__all__ = ["case_vectors", "REPORT_WEIGHT", "ModelConfig", "TrainConfig", "TeacherConfig", "load_config", "validate_config", "build_image_encoder",
           "build_text_head", "train_teacher", "image_cases", "load_teacher", "measure", "report_table",
           "STRATEGIES", "EVAL_LEAD_SETS", "rhythm_texts"]

STRATEGIES = ("default", "one-device", "mirrored", "multi-worker")
TARGETS = ("soft", "clip")
EVAL_LEAD_SETS = ("I", "II", "3", "limb6")


# ============================================================================================ configuration

@dataclass(frozen=True)
class ModelConfig:
    image_size: tuple[int, int] | None = None   # (H, W) the ViT sees; None: the imaging shape
    patch: int = 16
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    proj_dim: int = 128


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64            # global batch (split across replicas)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    init_temperature: float = 0.07
    targets: str = "soft"
    soft_target_temperature: float = 0.05
    rhythm_aux_weight: float = 0.0  # > 0: auxiliary CLIP term against the rhythm statements' text alone
    rhythm_target_weight: float = 0.0  # > 0: soft targets also reward pairs that share a rhythm statement
    eval_every: int = 2
    patience: int = 12
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
    name: str = "rhythm"
    out_dir: str = "runs/teacher"
    archive: str | None = None      # an archive folder; None: the shared PTB-XL subset
    text_model: str | None = None   # a sentence-transformers folder; None: the packaged all-MiniLM-L6-v2
    imaging: ImagingConfig = ImagingConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    augment: AugmentConfig = AugmentConfig()

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.model.image_size) if self.model.image_size else self.imaging.shape[:2]

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict:
        d = {"name": self.name, "out_dir": self.out_dir, "archive": self.archive, "text_model": self.text_model,
             "imaging": {k: getattr(self.imaging, k) for k in ("mode", "tile", "mtf_bins", "fs", "rr_scale")},
             "model": asdict(self.model), "train": asdict(self.train), "augment": asdict(self.augment)}
        return d


_SECTIONS = {"imaging": ImagingConfig, "model": ModelConfig, "train": TrainConfig, "augment": AugmentConfig}


def _coerce(cls, d: Mapping, where: str):
    return cls(**coerce(cls, d, where, tuple_keys=("image_size",)))


def config_from_dict(d: Mapping, where: str = "config") -> TeacherConfig:
    top = {k: v for k, v in d.items() if k not in _SECTIONS}
    unknown = sorted(set(top) - {"name", "out_dir", "archive", "text_model"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known sections: "
                          f"{', '.join(_SECTIONS)} and name, out_dir, archive, text_model")
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
    h, w = cfg.image_size
    if m.patch < 1 or h % m.patch or w % m.patch:
        raise ConfigError(f"{where}: image size {h}x{w} is not divisible by model.patch {m.patch} "
                          f"(imaging mode {im.mode!r}, tile {im.tile} gives {im.shape[0]}x{im.shape[1]})")
    for k in ("width", "depth", "heads", "proj_dim"):
        if getattr(m, k) < 1:
            raise ConfigError(f"{where}: model.{k} must be >= 1")
    if m.width % m.heads:
        raise ConfigError(f"{where}: model.width {m.width} is not divisible by model.heads {m.heads}")
    if not 0.0 <= m.dropout < 1.0 or m.mlp_ratio <= 0:
        raise ConfigError(f"{where}: model.dropout must be in [0, 1) and model.mlp_ratio > 0")
    if t.epochs < 1 or t.batch_size < 2 or t.lr <= 0 or t.eval_every < 1 or t.threads < 1:
        raise ConfigError(f"{where}: train.epochs, eval_every, threads >= 1, batch_size >= 2 and lr > 0 required")
    if t.strategy not in STRATEGIES:
        raise ConfigError(f"{where}: train.strategy {t.strategy!r} unknown; choose one of {', '.join(STRATEGIES)}")
    if t.targets not in TARGETS:
        raise ConfigError(f"{where}: train.targets {t.targets!r} unknown; choose one of {', '.join(TARGETS)}")
    if t.targets == "soft" and t.soft_target_temperature <= 0:
        raise ConfigError(f"{where}: train.soft_target_temperature must be > 0")
    if t.rhythm_aux_weight < 0 or t.rhythm_target_weight < 0:
        raise ConfigError(f"{where}: train.rhythm_aux_weight and train.rhythm_target_weight must be >= 0")
    if t.rhythm_target_weight > 0 and t.targets != "soft":
        raise ConfigError(f"{where}: train.rhythm_target_weight needs train.targets = \"soft\"")
    bad = [m for m in select_terms(t.select_metric) if m not in _SELECTABLE]
    if bad:
        raise ConfigError(f"{where}: train.select_metric {t.select_metric!r}: unknown metric(s) {', '.join(bad)}; "
                          f"choose from {', '.join(_SELECTABLE)}, joined by '+' to select on their sum")
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
    return float(sum(metrics[m] for m in select_terms(select_metric)))


def rhythm_codes(archive) -> np.ndarray:
    """(n_cases, n_codes) float32 multi-hot of the cases' rhythm statements (all zero where none is stated)."""
    codes = sorted({c for case in archive.cases for c in case.rhythm})
    pos = {c: k for k, c in enumerate(codes)}
    out = np.zeros((len(archive), max(len(codes), 1)), np.float32)
    for i, case in enumerate(archive.cases):
        for c in case.rhythm:
            out[i, pos[c]] = 1.0
    return out


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
    d = cfg.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict) and v is not None]
    for sec in _SECTIONS:
        lines += ["", f"[{sec}]"] + [f"{k} = {_toml_value(v)}" for k, v in d[sec].items() if v is not None]
    return "\n".join(lines) + "\n"


# ============================================================================================ data

def _open_archive(cfg: TeacherConfig):
    from .archive import Archive
    if cfg.archive:
        return Archive.open(cfg.archive)
    from edge.paths import shared_data_dir
    return Archive.from_ptbxl_subset(shared_data_dir() / "ptbxl-subset")


def check_texts(archive, indices=None) -> list[str]:
    """Every case's text; :class:`ArchiveError` naming the cases that have none."""
    idx = range(len(archive)) if indices is None else indices
    texts = [archive.text(int(i)) for i in idx]
    empty = [archive.ids[int(i)] for i, t in zip(idx, texts) if not t.strip()]
    if empty:
        raise ArchiveError(f"{len(empty)} case(s) have no text (statements or report) to train on, e.g. "
                           f"{', '.join(empty[:5])}; the teacher needs a text for every case")
    return texts


def rhythm_texts(archive, statements: dict | None = None) -> list[str]:
    """Each case's rhythm statements as text (``'atrial fibrillation'``), from its rhythm codes and the SCP
    dictionary of the shared data (codes as they are where the dictionary lacks them); ``'rhythm not
    stated'`` where a case has none. The text of the auxiliary rhythm term."""
    if statements is None:
        from edge.paths import shared_data_dir
        from .archive import read_scp_statements
        f = shared_data_dir() / "ptbxl-subset" / "scp_statements.csv"
        statements = read_scp_statements(f) if f.is_file() else {}
    out = []
    for c in archive.cases:
        names = [str(statements.get(code, {}).get("description") or code) for code in c.rhythm]
        out.append("; ".join(names) if names else "rhythm not stated")
    return out


def _n_valid(archive, i: int) -> int | None:
    n = archive.cases[int(i)].n_samples
    return int(n) if n else None


def image_cases(archive, indices, imaging: ImagingConfig, present: np.ndarray | None = None,
                dtype=np.float16, progress: bool = False) -> np.ndarray:
    """Images (len(indices), H, W, 3) of the cases, no augmentation; ``present`` (12,) reduces the leads."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(indices),) + imaging.shape, dtype=dtype)
    it = range(len(indices))
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"imaging ({imaging.mode})", file=sys.stderr, leave=False)
    for k in it:
        i = int(indices[k])
        x = archive.signal(i)
        if present is not None:
            x = x * present[None, :].astype(np.float32)
        out[k] = ecg_image(x, None if present is None else present, imaging, _n_valid(archive, i))
    return out


def _augmented_image(archive, i: int, epoch: int, cfg: TeacherConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.train.seed, epoch, int(i)])
    x, present, n = augment(archive.signal(int(i)), rng, cfg.augment, _n_valid(archive, i))
    return ecg_image(x, present, cfg.imaging, n)


def epoch_batches(n_train: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, global_batch) positions into the training set for one epoch (drop remainder)."""
    perm = np.random.default_rng([seed, epoch, 7919]).permutation(n_train)
    steps = n_train // global_batch
    return perm[: steps * global_batch].reshape(steps, global_batch)


# ============================================================================================ model

def _keras():
    import warnings
    # Keras 3 warns when a one-input functional model is called with a bare tensor (harmless)
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    import keras
    return keras


def _register():
    keras = _keras()

    @keras.saving.register_keras_serializable(package="ecgret")
    class PositionEmbedding(keras.layers.Layer):
        """Adds a learned embedding per token position: (B, N, D) -> (B, N, D)."""

        def build(self, input_shape):
            self.pos = self.add_weight(shape=(1, input_shape[1], input_shape[2]), name="pos",
                                       initializer=keras.initializers.RandomNormal(stddev=0.02))

        def call(self, x):
            return x + self.pos

    return PositionEmbedding


_PE = None


def position_embedding_layer():
    global _PE
    if _PE is None:
        _PE = _register()
    return _PE


def build_image_encoder(cfg: TeacherConfig, name: str = "image_encoder"):
    """ViT: image (H, W, 3) in [-1, 1] -> L2-normalised embedding (proj_dim,). The last two layers are the
    projection head (``image_projection``, a Dense) and ``l2norm``; ``features`` is the pooled output."""
    keras = _keras()
    L = keras.layers
    m = cfg.model
    h0, w0, _ = cfg.imaging.shape
    h, w = cfg.image_size
    inp = keras.Input((h0, w0, 3), name="image")
    x = inp if (h, w) == (h0, w0) else L.Resizing(h, w, interpolation="area", name="resize")(inp)
    x = L.Conv2D(m.width, m.patch, strides=m.patch, name="patch_embed")(x)
    n_tok = (h // m.patch) * (w // m.patch)
    x = L.Reshape((n_tok, m.width), name="tokens")(x)
    x = position_embedding_layer()(name="pos_embed")(x)
    x = L.Dropout(m.dropout, name="embed_drop")(x)
    mlp = int(round(m.width * m.mlp_ratio))
    for b in range(m.depth):
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln1")(x)
        y = L.MultiHeadAttention(m.heads, m.width // m.heads, dropout=m.dropout, name=f"b{b}_attn")(y, y)
        x = L.Add(name=f"b{b}_add1")([x, L.Dropout(m.dropout, name=f"b{b}_drop1")(y)])
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln2")(x)
        y = L.Dense(mlp, activation="gelu", name=f"b{b}_mlp1")(y)
        y = L.Dense(m.width, name=f"b{b}_mlp2")(y)
        x = L.Add(name=f"b{b}_add2")([x, L.Dropout(m.dropout, name=f"b{b}_drop2")(y)])
    x = L.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    feat = L.GlobalAveragePooling1D(name="features")(x)
    z = L.Dense(m.proj_dim, name="image_projection")(feat)
    z = L.UnitNormalization(name="l2norm")(z)
    return keras.Model(inp, z, name=name)


def build_text_head(cfg: TeacherConfig, text_dim: int, name: str = "text_head"):
    """Frozen text embedding (text_dim,) -> L2-normalised projection (proj_dim,)."""
    keras = _keras()
    inp = keras.Input((text_dim,), name="text_embedding")
    z = keras.layers.Dense(cfg.model.proj_dim, name="text_projection")(inp)
    z = keras.layers.UnitNormalization(name="l2norm")(z)
    return keras.Model(inp, z, name=name)


def feature_model(encoder):
    """The encoder up to the pooled features (the projection head's input)."""
    keras = _keras()
    return keras.Model(encoder.inputs, encoder.get_layer("features").output, name="features")


def clip_loss(zi, zt, t_raw, logit_scale, targets: str, tau_t: float, rhythm=None, w_rhythm: float = 0.0):
    """Symmetric contrastive loss. zi, zt: (B, D) normalised; t_raw: (B, Dt) normalised frozen text vectors.
    With ``rhythm`` (B, R) multi-hot rhythm statements and ``w_rhythm`` > 0 the soft targets are
    softmax((cos(t_i, t_j) + w_rhythm * [i and j share a rhythm statement]) / tau_t): the report texts
    differ in many words besides the rhythm, so this makes "same rhythm" count as much as the words do."""
    import tensorflow as tf
    scale = tf.exp(tf.minimum(logit_scale, math.log(100.0)))
    logits = scale * tf.matmul(zi, zt, transpose_b=True)
    if targets == "clip":
        y = tf.eye(tf.shape(zi)[0], dtype=logits.dtype)
    else:
        sim = tf.matmul(t_raw, t_raw, transpose_b=True)
        if rhythm is not None and w_rhythm > 0:
            shared = tf.cast(tf.matmul(rhythm, rhythm, transpose_b=True) > 0.5, sim.dtype)
            sim = sim + w_rhythm * shared
        y = tf.nn.softmax(sim / tau_t, axis=1)
    li = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits)
    lt = tf.nn.softmax_cross_entropy_with_logits(labels=tf.transpose(y), logits=tf.transpose(logits))
    return 0.5 * (tf.reduce_mean(li) + tf.reduce_mean(lt))


# ============================================================================================ strategy

def make_strategy(name: str):
    import tensorflow as tf
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one-device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        # every local GPU; on a machine without one, the logical CPU devices (one unless configured with
        # tf.config.set_logical_device_configuration, which is how the tests run two replicas on a CPU)
        gpus = tf.config.list_logical_devices("GPU")
        devs = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devs)
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            print("warning: strategy multi-worker without TF_CONFIG runs as a single worker", file=sys.stderr)
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _is_chief() -> bool:
    tfc = os.environ.get("TF_CONFIG")
    if not tfc:
        return True
    task = json.loads(tfc).get("task", {})
    return task.get("type") == "chief" or (task.get("type") in (None, "worker") and int(task.get("index", 0)) == 0
                                           and "chief" not in json.loads(tfc).get("cluster", {}))


def configure_threads(threads: int) -> None:
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # already initialised (e.g. a second run in one process)


# ============================================================================================ training

class _State:
    """Everything a checkpoint holds, as numpy: model weights, optimizer variables, loop state."""

    def __init__(self, encoder, text_head, logit_scale, optimizer, rhythm_head=None):
        self.encoder, self.text_head, self.logit_scale, self.optimizer = encoder, text_head, logit_scale, optimizer
        self.rhythm_head = rhythm_head

    def variables(self):
        # ``variables`` (not ``weights``) so that dropout seed-generator states resume too
        extra = list(self.rhythm_head.variables) if self.rhythm_head is not None else []
        return list(self.encoder.variables) + list(self.text_head.variables) + [self.logit_scale] + \
            extra + list(self.optimizer.variables)

    def save(self, path: Path, loop: dict) -> None:
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "state.npz", suffix=".npz") as tmp:
            np.savez(tmp, *[np.asarray(v.numpy()) for v in self.variables()])
        atomic_write(path / "loop.json", json.dumps(loop, indent=1, default=float))

    def restore(self, path: Path) -> dict:
        with np.load(path / "state.npz") as z:
            arrays = [z[f"arr_{k}"] for k in range(len(z.files))]
        vs = self.variables()
        if len(arrays) != len(vs):  # a checkpoint written before seed states were saved: weights only
            extra = list(self.rhythm_head.weights) if self.rhythm_head is not None else []
            old = list(self.encoder.weights) + list(self.text_head.weights) + [self.logit_scale] + extra + \
                list(self.optimizer.variables)
            if len(arrays) == len(old):
                vs = old
        if len(arrays) != len(vs):
            raise ConfigError(f"{path}: checkpoint holds {len(arrays)} variables, the model has {len(vs)} "
                              f"(was it written with another config?)")
        for v, a in zip(vs, arrays):
            if tuple(v.shape) != a.shape:
                raise ConfigError(f"{path}: checkpoint variable {v.name} has shape {a.shape}, model {tuple(v.shape)}")
            v.assign(a)
        return json.loads((path / "loop.json").read_text())


def _latest_checkpoint(ckdir: Path) -> Path | None:
    cands = sorted(p for p in ckdir.glob("epoch-*") if (p / "loop.json").is_file() and (p / "state.npz").is_file())
    return cands[-1] if cands else None


def _embed(encoder_fn, images: np.ndarray, batch: int = 256) -> np.ndarray:
    out = [np.asarray(encoder_fn(images[s:s + batch].astype(np.float32))) for s in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def train_teacher(cfg: TeacherConfig, *, resume: bool = True, progress: bool = True, archive=None,
                  log=None, until_epoch: int | None = None) -> dict:
    """Train (or resume) the teacher described by ``cfg``; write its artefacts under ``cfg.run_dir``.
    ``until_epoch`` ends this call after that epoch (as an interruption would; a later call resumes).
    Returns the metrics dict also written to ``metrics.json``."""
    validate_config(cfg)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.time()
    archive = archive if archive is not None else _open_archive(cfg)
    tr = cfg.train
    train_idx = archive.select(folds=tr.train_folds)
    val_idx = archive.select(folds=tr.val_folds)
    if len(train_idx) < tr.batch_size:
        raise ArchiveError(f"only {len(train_idx)} training cases in folds {list(tr.train_folds)}; "
                           f"need at least one batch of {tr.batch_size}")
    texts = check_texts(archive)
    from .text import embed_texts, resolve_text_model
    resolve_text_model(cfg.text_model)                      # a clear error before anything heavy
    say(f"text embeddings of {len(texts)} cases ...")
    t_all = embed_texts(texts, cfg.text_model, progress=progress)
    aux = tr.rhythm_aux_weight > 0
    r_all = embed_texts(rhythm_texts(archive), cfg.text_model) if aux else np.zeros((len(archive), 1), np.float32)
    h_all = rhythm_codes(archive)

    # ---- TensorFlow from here on (never torch in this process)
    configure_threads(tr.threads)
    import tensorflow as tf
    keras = _keras()
    keras.utils.set_random_seed(tr.seed)
    if tr.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(tr.strategy)
    n_rep = strategy.num_replicas_in_sync
    if tr.batch_size % n_rep:
        raise ConfigError(f"train.batch_size {tr.batch_size} is not divisible by the {n_rep} replicas")
    chief = _is_chief()
    run_dir = cfg.run_dir
    ckdir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        (run_dir / "config.toml").write_text(config_toml(cfg))

    steps_per_epoch = len(train_idx) // tr.batch_size
    total_steps = steps_per_epoch * tr.epochs
    warm = min(tr.warmup_epochs * steps_per_epoch, max(total_steps - 1, 0))
    with strategy.scope():
        encoder = build_image_encoder(cfg)
        text_head = build_text_head(cfg, t_all.shape[1])
        rhythm_head = build_text_head(cfg, r_all.shape[1], name="rhythm_head") if aux else None
        logit_scale = keras.Variable(math.log(1.0 / tr.init_temperature), name="logit_scale", dtype="float32")
        sched = keras.optimizers.schedules.CosineDecay(0.0, max(total_steps - warm, 1), alpha=0.02,
                                                       warmup_target=tr.lr, warmup_steps=warm)
        opt = keras.optimizers.AdamW(sched, weight_decay=tr.weight_decay, beta_2=0.98, clipnorm=None)
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "pos", "logit_scale"])
        train_vars = encoder.trainable_variables + text_head.trainable_variables + [logit_scale]
        if aux:
            train_vars += rhythm_head.trainable_variables
        opt.build(train_vars)
    state = _State(encoder, text_head, logit_scale, opt, rhythm_head)
    loop = {"epoch": 0, "best": -math.inf, "best_epoch": None, "since_best": 0, "history": [], "elapsed_s": 0.0}
    last = _latest_checkpoint(ckdir) if resume else None
    if last is not None:
        loop = state.restore(last)
        if str(loop.get("stopped") or "").startswith("time budget") and loop["elapsed_s"] < tr.max_minutes * 60:
            loop["stopped"] = None  # stopped by the clock only: a larger budget continues the run
        say(f"resumed from {last} (epoch {loop['epoch']}, best {loop['best']:.4f})")
    elif ckdir.exists() and chief and not resume:
        import shutil
        shutil.rmtree(ckdir)
    done = loop["epoch"] >= tr.epochs or loop.get("stopped")

    # ---- the data pipeline: per replica, an epoch's share of each global batch, imaged on the fly
    t_train, r_train, h_train = t_all[train_idx], r_all[train_idx], h_all[train_idx]
    img_shape = cfg.imaging.shape

    def make_dataset(epoch: int):
        def fn(ctx):
            per_rep = ctx.get_per_replica_batch_size(tr.batch_size)
            reps_per_pipe = n_rep // ctx.num_input_pipelines
            my_reps = range(ctx.input_pipeline_id * reps_per_pipe, (ctx.input_pipeline_id + 1) * reps_per_pipe)

            def gen():
                for row in epoch_batches(len(train_idx), tr.batch_size, tr.seed, epoch):
                    for r in my_reps:
                        pos = row[r * per_rep:(r + 1) * per_rep]
                        imgs = np.stack([_augmented_image(archive, train_idx[p], epoch, cfg) for p in pos])
                        yield imgs.astype(np.float32), t_train[pos], r_train[pos], h_train[pos]

            ds = tf.data.Dataset.from_generator(gen, output_signature=(
                tf.TensorSpec((per_rep,) + img_shape, tf.float32),
                tf.TensorSpec((per_rep, t_all.shape[1]), tf.float32),
                tf.TensorSpec((per_rep, r_all.shape[1]), tf.float32),
                tf.TensorSpec((per_rep, h_all.shape[1]), tf.float32)))
            opts = tf.data.Options()
            opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return ds.with_options(opts).prefetch(2)
        return strategy.distribute_datasets_from_function(fn)

    tau_t, targets = float(tr.soft_target_temperature), tr.targets

    w_aux, w_rhythm = float(tr.rhythm_aux_weight), float(tr.rhythm_target_weight)

    def replica_step(img, temb, remb, rhy):
        with tf.GradientTape() as tape:
            zi = encoder(img, training=True)
            zt = text_head(temb, training=True)
            loss = clip_loss(zi, zt, temb, logit_scale, targets, tau_t, rhy, w_rhythm)
            if aux:  # the same contrastive loss against the rhythm statements' text (soft targets always:
                #      identical rhythm texts are the norm)
                loss = loss + w_aux * clip_loss(zi, rhythm_head(remb, training=True), remb, logit_scale,
                                                "soft", tau_t)
            scaled = loss / n_rep
        grads = tape.gradient(scaled, train_vars)
        opt.apply_gradients(zip(grads, train_vars))
        return loss

    @tf.function
    def train_step(batch):
        per = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per, axis=None)

    enc_fn = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)

    # ---- validation: fold-8 queries against a folds 1-7 archive, 12 leads, no augmentation
    from .evaluate import evaluate
    val_cases = np.concatenate([train_idx, val_idx])
    clean = None

    def validate() -> dict:
        nonlocal clean
        if clean is None:
            clean = image_cases(archive, val_cases, cfg.imaging, progress=progress)
        emb = np.zeros((len(archive), cfg.model.proj_dim), np.float32)
        emb[val_cases] = _embed(enc_fn, clean)
        m = evaluate(archive, {"teacher": emb}, val_idx, train_idx)["teacher"]
        return {k: v for k, v in m.items() if k != "per_class"}

    best_path = run_dir / "best.npz"
    budget_s = tr.max_minutes * 60.0
    start_elapsed = float(loop.get("elapsed_s", 0.0))
    t_loop = time.time()
    while not done:
        epoch = loop["epoch"]
        ds = make_dataset(epoch)
        losses = []
        it = iter(ds)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tr.epochs}", file=sys.stderr, leave=False)
        for _ in range(steps_per_epoch):
            loss = float(train_step(next(it)))
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at epoch {epoch + 1}; lower train.lr")
            losses.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        if bar is not None:
            bar.close()
        loop["epoch"] = epoch + 1
        elapsed = start_elapsed + (time.time() - t_loop)
        loop["elapsed_s"] = elapsed
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
               "temperature": float(1.0 / math.exp(min(float(logit_scale.numpy()), math.log(100.0)))),
               "elapsed_s": round(elapsed, 1)}
        last_epoch = loop["epoch"] >= tr.epochs or elapsed > budget_s
        if loop["epoch"] % tr.eval_every == 0 or last_epoch:
            m = validate()
            rec["val"] = m
            score = select_score(m, tr.select_metric)
            if score > loop["best"]:
                loop.update(best=float(score), best_epoch=epoch + 1, since_best=0)
                if chief:
                    with atomic_path(best_path, suffix=".npz") as tmp:
                        np.savez(tmp, *[np.asarray(v.numpy()) for v in
                                        list(encoder.weights) + list(text_head.weights) + [logit_scale]])
            else:
                loop["since_best"] += tr.eval_every
            if loop["since_best"] >= tr.patience:
                loop["stopped"] = f"early stop: no {tr.select_metric} gain for {tr.patience} epochs"
            say(f"epoch {epoch + 1}: loss {rec['loss']:.4f} T {rec['temperature']:.4f} val "
                f"{tr.select_metric} {score:.4f} rhythmP@10_nonSR {m['rhythmP@10_nonSR']:.3f} "
                f"P@10 {m['P@10']:.3f} (best {loop['best']:.4f} @ {loop['best_epoch']}) [{elapsed / 60:.1f} min]")
        else:
            say(f"epoch {epoch + 1}: loss {rec['loss']:.4f} T {rec['temperature']:.4f} [{elapsed / 60:.1f} min]")
        if elapsed > budget_s and not loop.get("stopped"):
            loop["stopped"] = f"time budget of {tr.max_minutes} min reached"
        loop["history"].append(rec)
        if chief:
            state.save(ckdir / f"epoch-{epoch + 1:04d}", loop)
            for old in sorted(ckdir.glob("epoch-*"))[:-max(1, tr.keep_checkpoints)]:
                import shutil
                shutil.rmtree(old, ignore_errors=True)
        done = loop["epoch"] >= tr.epochs or bool(loop.get("stopped")) or \
            (until_epoch is not None and loop["epoch"] >= until_epoch)

    # ---- export the best weights
    if best_path.exists():
        with np.load(best_path) as z:
            arrays = [z[f"arr_{k}"] for k in range(len(z.files))]
        for v, a in zip(list(encoder.weights) + list(text_head.weights) + [logit_scale], arrays):
            v.assign(a)
    metrics = {"name": cfg.name, "imaging": cfg.imaging.to_dict(), "best_epoch": loop["best_epoch"],
               "select_metric": tr.select_metric, "val_best": loop["best"], "epochs_run": loop["epoch"],
               "stopped": loop.get("stopped"), "train_time_s": round(float(loop["elapsed_s"]), 1),
               "replicas": n_rep, "strategy": tr.strategy, "history": loop["history"]}
    if chief:
        export(cfg, archive, encoder, text_head, logit_scale, t_all, enc_fn, progress=progress)
        metrics["wall_time_s"] = round(time.time() - t0, 1)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    return metrics


def export(cfg: TeacherConfig, archive, encoder, text_head, logit_scale, t_all, enc_fn=None,
           progress: bool = False) -> None:
    """Write the artefacts of a trained teacher into ``cfg.run_dir``."""
    run_dir = cfg.run_dir
    enc_fn = enc_fn or (lambda x: encoder(x, training=False))
    encoder.save(run_dir / "image_encoder.keras")
    text_head.save(run_dir / "text_head.keras")
    proj = encoder.get_layer("image_projection")
    np.savez(run_dir / "image_head.npz", kernel=np.asarray(proj.kernel.numpy()), bias=np.asarray(proj.bias.numpy()),
             logit_scale=np.float32(logit_scale.numpy()))
    all_idx = np.arange(len(archive))
    images = image_cases(archive, all_idx, cfg.imaging, progress=progress)
    np.save(run_dir / "embeddings.npy", _embed(enc_fn, images).astype(np.float32))
    feat = feature_model(encoder)
    np.save(run_dir / "features.npy", _embed(lambda x: feat(x, training=False), images).astype(np.float32))
    del images
    np.save(run_dir / "text_embeddings.npy", np.asarray(text_head(t_all, training=False)).astype(np.float32))
    lead = {}
    for s in EVAL_LEAD_SETS:
        lead[s] = _embed(enc_fn, image_cases(archive, all_idx, cfg.imaging, present=lead_mask(s),
                                             progress=progress)).astype(np.float32)
    np.savez(run_dir / "leadset_embeddings.npz", **lead)
    (run_dir / "case_ids.json").write_text(json.dumps(list(archive.ids)))


# ============================================================================================ measuring

def load_teacher(run_dir):
    """(config, embeddings (N, D), text_embeddings (N, D), leadset embeddings dict) of a trained teacher."""
    d = Path(run_dir)
    for f in ("config.toml", "embeddings.npy", "text_embeddings.npy", "leadset_embeddings.npz"):
        if not (d / f).is_file():
            raise ConfigError(f"{d}: not a trained teacher (missing {f})")
    cfg = load_config(d / "config.toml")
    with np.load(d / "leadset_embeddings.npz") as z:
        lead = {k: z[k] for k in z.files}
    return cfg, np.load(d / "embeddings.npy"), np.load(d / "text_embeddings.npy"), lead


REPORT_WEIGHT = 0.5   # archive case vectors: equal parts ECG embedding and report embedding (not tuned on fold 9)


def case_vectors(image_emb: np.ndarray, text_emb: np.ndarray, report_weight: float = REPORT_WEIGHT) -> np.ndarray:
    """Archive case vectors that carry the case's ECG *and* its cardiologist's report:
    l2n((1 - w) l2n(image) + w l2n(text)). A query is still an ECG alone (its image embedding); its score
    against a case is (1 - w) x ECG-ECG similarity + w x ECG-report similarity, up to the case's norm."""
    def n(v):
        v = np.asarray(v, np.float32)
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    w = float(report_weight)
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"report_weight must be in [0, 1], got {w}")
    return n((1.0 - w) * n(image_emb) + w * n(text_emb))


def measure(run_dirs, archive=None, split=None, lead_sets: bool = True) -> tuple[dict, dict]:
    """Fold-9 retrieval (EVALUATION.md) of the teachers in ``run_dirs`` beside ``random`` and ``raw-signal``.

    Returns (image results {variant: metrics}, cross-modal results {variant: metrics}). Each teacher also
    gets a row with the archive as ECG+report case vectors (:func:`case_vectors`); the first run's lead-set
    rows (queries reduced, archive 12-lead ECG) are included when ``lead_sets``."""
    from .evaluate import baselines, default_split, evaluate, evaluate_cross_modal
    archive = archive if archive is not None else _open_archive(TeacherConfig())
    q, a = split if split is not None else default_split(archive)
    emb = dict(baselines(archive))
    cross = {}
    loaded = [(Path(r), *load_teacher(r)) for r in run_dirs]
    for k, (d, cfg, e, t, lead) in enumerate(loaded):
        label = f"teacher {cfg.imaging.mode}" + ("" if cfg.name == cfg.imaging.mode else f" ({cfg.name})")
        if len(e) != len(archive):
            raise ArchiveError(f"{d}: embeddings cover {len(e)} cases, the archive has {len(archive)}")
        emb[label] = e
        emb[f"{label}, archive ECG+report"] = (e[q], case_vectors(e, t)[a])
        cross[f"{label}: ECG -> report"] = evaluate_cross_modal(archive, e[q], t[a], q, a)
    if lead_sets and loaded:
        d, cfg, e, t, lead = loaded[0]
        label = f"teacher {cfg.imaging.mode}"
        cases = case_vectors(e, t)
        for s in EVAL_LEAD_SETS:
            if s in lead:
                emb[f"{label}, query leads {s}"] = (lead[s][q], e[a])
        for s in EVAL_LEAD_SETS:
            if s in lead:
                emb[f"{label}, query leads {s}, archive ECG+report"] = (lead[s][q], cases[a])
    res = evaluate(archive, emb, q, a)
    return res, cross


def report_table(run_dirs, archive=None) -> str:
    """Markdown: the fold-9 table of :func:`measure` and the cross-modal table."""
    from .evaluate import default_split, heading, markdown_table
    archive = archive if archive is not None else _open_archive(TeacherConfig())
    q, a = default_split(archive)
    res, cross = measure(run_dirs, archive, (q, a))
    h = heading(archive, q, a)
    return (markdown_table(res, "### ECG -> ECG. " + h) + "\n\n" +
            markdown_table(cross, "### ECG -> report text (archive reports' text embeddings). " + h) + "\n")


# ============================================================================================ CLI
import click  # noqa: E402


@click.command("train-teacher")
@click.option("--config", "config_path", type=click.Path(), default="configs/teacher.toml", show_default=True)
@click.option("--name", default=None, help="run name (folder under out_dir); default from the config")
@click.option("--out-dir", default=None, help="where runs go (default from the config: runs/teacher)")
@click.option("--archive", default=None, help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--text-model", default=None, help="a local sentence-transformers folder")
@click.option("--mode", type=click.Choice(MODES), default=None, help="override imaging.mode")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None, help="global batch size")
@click.option("--max-minutes", type=float, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--strategy", type=click.Choice(STRATEGIES), default=None,
              help="tf.distribute strategy: default (one device), one-device, mirrored (all local GPUs), "
                   "multi-worker (TF_CONFIG)")
@click.option("--resume/--restart", default=True, show_default=True,
              help="continue from the run's latest checkpoint, or start over")
@click.option("--no-progress", is_flag=True)
def train_teacher_command(config_path, name, out_dir, archive, text_model, mode, epochs, batch_size, max_minutes,
                          seed, strategy, resume, no_progress):
    """Train the teacher image encoder (ViT, CLIP loss against frozen report embeddings)."""
    from edge.errors import EcgretError
    try:
        cfg = load_config(config_path, name=name, out_dir=out_dir, archive=archive, text_model=text_model,
                          imaging__mode=mode, train__epochs=epochs, train__batch_size=batch_size,
                          train__max_minutes=max_minutes, train__seed=seed, train__strategy=strategy)
        m = train_teacher(cfg, resume=resume, progress=not no_progress)
    except EcgretError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps({k: m[k] for k in ("name", "best_epoch", "select_metric", "val_best", "epochs_run",
                                             "stopped", "train_time_s")}, default=float))
    click.echo(f"artefacts in {cfg.run_dir}", err=True)


@click.command("teacher-report")
@click.argument("run_dirs", nargs=-1, required=True)
@click.option("--archive", default=None, help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--out", "out_path", type=click.Path(), default=None, help="also write the Markdown and a JSON")
def teacher_report_command(run_dirs, archive, out_path):
    """Fold-9 retrieval table of trained teachers beside the baselines, plus ECG -> report retrieval."""
    from edge.errors import EcgretError
    try:
        arch = _open_archive(TeacherConfig(archive=archive))
        from .evaluate import default_split, dump, heading, markdown_table, results_json
        q, a = default_split(arch)
        res, cross = measure(run_dirs, arch, (q, a))
    except EcgretError as e:
        raise click.ClickException(str(e)) from None
    h = heading(arch, q, a)
    md = (markdown_table(res, "### ECG -> ECG. " + h) + "\n\n" +
          markdown_table(cross, "### ECG -> report text. " + h) + "\n")
    click.echo(md)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(md)
        dump(results_json({**res, **cross}, arch, q, a), Path(out_path).with_suffix(".json"))
