"""The student: a small depthwise-separable CNN distilled from the teacher's image embeddings.

Recipe (``[student]`` of ``configs/default.toml``):

* data: every training-fold record imaged once clean and ``aug_copies`` times augmented
  (:func:`convert.augment.augment`, the teacher's own recipe, which includes reduced lead sets so that
  reduced-lead queries work); images are precomputed once into a float16 array;
* targets: the teacher's L2-normalised embedding *of the very same image* (the teacher's Keras model is run on the
  augmented images; with ``target_images = "clean"`` on the copy's clean 12-lead original instead), centred
  (``center_targets``: minus the mean teacher embedding over the training images, re-normalised) and optionally the
  case's projected text embedding. Contrastively trained embeddings share a large common component (a young teacher's
  pairwise cosines are all ~0.99), so plain cosine regression is satisfied by the mean direction and loses the
  neighbourhoods; the centred targets keep exactly the part retrieval uses (centred teacher embeddings retrieve as
  well or better than raw ones). The student's space is its own: queries and archive are both embedded by the student;
* model: a MobileNet-like stack (a 4x4 stride-4 "patchify" stem, depthwise-separable blocks, BatchNorm, ReLU6
  so that full-int8 quantization keeps the activations in range), then the final 4x4 feature map is *flattened* (not
  average-pooled: in the 128x128 rhythm image each of the 4x4 cells is one lead tile, so position = lead) and
  a Dense layer gives the ``dim``-wide embedding. The model does not normalise (the int8
  ``L2_NORMALIZATION`` op has a fixed 1/128 output scale); normalisation happens on the host;
* loss: ``1 - cos(student, teacher)`` (embedding regression on the sphere) + ``rel_weight`` x the relational
  term KL(softmax(T T^T / tau) || softmax(S S^T / tau)) over the batch (the student keeps the teacher's
  neighbourhood structure, which is what retrieval uses) + ``text_weight`` x ``1 - cos(student, text)``;
* BatchNorm statistics are re-estimated on the clean training images before every evaluation and for the
  saved model (:func:`recalibrate_bn`);
* selection: fold-8 queries (clean, 12 leads) against a folds 1-7 archive, exact cosine; the best
  ``select_metric`` is kept; stops at ``epochs`` or ``max_minutes``.

Output ``<out_dir>/<name>/``: ``student.keras``, ``student.json`` (config, params, MACs, history, teacher
provenance), ``embeddings.npy`` (float student, all archive cases, 12 leads).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import file_sha256
from edge.errors import ConfigError
from edge.imaging import ImagingConfig

from .config import coerce
from .evaluate import evaluate
from .images import augmented_images, cached, image_cache_key, image_cases

__all__ = [
    "StudentConfig",
    "student_config",
    "build_student",
    "count_params_macs",
    "distill",
    "load_student",
    "teacher_targets",
    "unit_parts",
    "embed_keras",
    "recalibrate_bn",
]

DEFAULT_BLOCKS = ((64, 1), (96, 2), (96, 1), (160, 2), (160, 1), (192, 2))


@dataclass(frozen=True)
class StudentConfig:
    """``[student]`` of ``configs/default.toml``: the architecture (stem, blocks, head, ``dim``), the recipe of
    the module docstring (augmented copies, losses, mixup), optimisation, selection, the time budget
    (``max_minutes``), folds, seed and threads."""

    out_dir: str = "runs/student"
    dim: int = 128
    stem: int = 48
    stem_kernel: int = 4  # a 4x4 stride-4 "patchify" stem: cheap, and tiles stay aligned
    stem_stride: int = 4
    blocks: tuple = DEFAULT_BLOCKS  # (channels, stride) of each depthwise-separable block
    head: str = "flatten"  # "flatten" | "gdconv" (per-position depthwise, position-aware,
    # few weights) | "gap" (global average pooling)
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    aug_copies: int = 6
    mixup: float = 0.0  # share of each batch replaced by mixed image pairs, the teacher
    mixup_alpha: float = 1.0  # labelling them on the fly (function matching); lambda ~ Beta
    center_targets: bool = True  # regress l2n(teacher - mean teacher): see the module docstring
    target_images: str = "same"  # "same": the teacher sees the student's very image; "clean": the teacher sees
    # the case's clean 12-lead image, so an augmented (noisy, reduced-lead) copy learns to land where its full
    # recording lands (reduced-lead queries search a 12-lead archive)
    rel_weight: float = 1.0
    rel_temperature: float = 0.1
    text_weight: float = 0.0
    eval_every: int = 2
    select_metric: str = "kNN_macroAUROC"
    max_minutes: float = 20.0
    train_folds: tuple = (1, 2, 3, 4, 5, 6, 7)
    val_folds: tuple = (8,)
    seed: int = 0
    threads: int = 2

    def to_dict(self) -> dict:
        """The fields as a dict, tuples as lists, as ``student.json`` records them."""
        d = asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        d["train_folds"] = list(self.train_folds)
        d["val_folds"] = list(self.val_folds)
        return d


def student_config(d: Mapping | None, where: str = "[student]") -> StudentConfig:
    """A :class:`StudentConfig` from a TOML table; unknown keys and impossible values -> ConfigError."""
    d = dict(d or {})
    blocks = d.pop("blocks", None)
    kw = coerce(StudentConfig, d, where)
    if blocks is not None:
        try:
            kw["blocks"] = tuple((int(c), int(s)) for c, s in blocks)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.blocks: expected a list of [channels, stride] pairs") from None
    cfg = StudentConfig(**kw)
    if cfg.stem_kernel < 1 or cfg.stem_stride < 1:
        raise ConfigError(f"{where}: stem_kernel and stem_stride must be >= 1")
    if cfg.dim < 2 or cfg.stem < 1 or not cfg.blocks or any(c < 1 or s not in (1, 2) for c, s in cfg.blocks):
        raise ConfigError(f"{where}: dim >= 2, stem >= 1 and blocks of [channels >= 1, stride 1 or 2] required")
    if cfg.head not in ("flatten", "gdconv", "gap"):
        raise ConfigError(f"{where}.head: {cfg.head!r} unknown; choose flatten, gdconv or gap")
    if not 0 <= cfg.mixup <= 1 or cfg.mixup_alpha <= 0:
        raise ConfigError(f"{where}: mixup must be in [0, 1] and mixup_alpha > 0")
    if cfg.epochs < 1 or cfg.batch_size < 2 or cfg.lr <= 0 or cfg.aug_copies < 0 or cfg.eval_every < 1:
        raise ConfigError(f"{where}: epochs >= 1, batch_size >= 2, lr > 0, aug_copies >= 0, eval_every >= 1 required")
    if set(cfg.train_folds) & set(cfg.val_folds):
        raise ConfigError(f"{where}: train_folds and val_folds must be disjoint")
    if cfg.target_images not in ("same", "clean"):
        raise ConfigError(f"{where}.target_images: {cfg.target_images!r} unknown; choose same or clean")
    return cfg


# ============================================================================================ model


def build_student(input_shape: Sequence[int], cfg: StudentConfig = StudentConfig(), batch_size: int | None = None):
    """The student CNN: image (H, W, 3) in [-1, 1] -> un-normalised embedding (dim,)."""
    import keras

    L = keras.layers
    inp = keras.Input(tuple(int(x) for x in input_shape), batch_size=batch_size, name="image")
    x = L.Conv2D(cfg.stem, cfg.stem_kernel, strides=cfg.stem_stride, padding="same", use_bias=False, name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(6.0, name="stem_relu")(x)
    for b, (ch, st) in enumerate(cfg.blocks):
        x = L.DepthwiseConv2D(3, strides=st, padding="same", use_bias=False, name=f"b{b}_dw")(x)
        x = L.BatchNormalization(name=f"b{b}_dw_bn")(x)
        x = L.ReLU(6.0, name=f"b{b}_dw_relu")(x)
        x = L.Conv2D(ch, 1, use_bias=False, name=f"b{b}_pw")(x)
        x = L.BatchNormalization(name=f"b{b}_pw_bn")(x)
        x = L.ReLU(6.0, name=f"b{b}_pw_relu")(x)
    if cfg.head == "flatten":
        x = L.Flatten(name="flatten")(x)
    elif cfg.head == "gdconv":
        x = L.DepthwiseConv2D(tuple(int(v) for v in x.shape[1:3]), padding="valid", use_bias=False, name="gdconv")(x)
        x = L.BatchNormalization(name="gdconv_bn")(x)
        x = L.Flatten(name="flatten")(x)
    else:
        x = L.GlobalAveragePooling2D(name="gap")(x)
    if cfg.dropout > 0:
        x = L.Dropout(cfg.dropout, name="drop")(x)
    out = L.Dense(cfg.dim, name="embedding")(x)
    return keras.Model(inp, out, name="student")


def count_params_macs(model) -> tuple[int, int]:
    """(parameters, multiply-accumulates per image) of a Keras model made of Conv2D, DepthwiseConv2D and
    Dense layers (BatchNorm is folded into the convolutions on export and not counted as MACs)."""
    import keras

    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            macs += int(h) * int(w) * int(c) * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, c = layer.output.shape
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            macs += int(h) * int(w) * int(c) * kh * kw * int(cin) // int(layer.groups)
        elif isinstance(layer, keras.layers.Dense):
            macs += int(layer.input.shape[-1]) * int(layer.units)
        elif isinstance(layer, keras.Model):
            macs += count_params_macs(layer)[1]
    return int(model.count_params()), int(macs)


# ============================================================================================ targets


def teacher_targets(teacher_model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The teacher's L2-normalised embeddings of ``images`` (float32)."""
    out = []
    for s in range(0, len(images), batch):
        z = np.asarray(teacher_model(images[s : s + batch].astype(np.float32), training=False), dtype=np.float32)
        out.append(z)
    z = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


# ============================================================================================ training


def _configure(cfg: StudentConfig) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # already initialised in this process
    keras.utils.set_random_seed(cfg.seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - older TF
        pass


def recalibrate_bn(model, images: np.ndarray, batch: int = 256) -> None:
    """Re-estimate every BatchNormalization layer's moving mean and variance on ``images`` (the clean,
    unaugmented training images): a cumulative average of the batch statistics over all of them, with the
    weights unchanged. The moving averages gathered during training (augmented and mixed batches, weights
    still moving) left the inference-mode network collapsed (all embeddings within cosine 0.9999 of each
    other, which int8 cannot resolve); re-estimated statistics make inference mode match training mode."""
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return
    saved = [bn.momentum for bn in bns]
    try:
        for k, s in enumerate(range(0, len(images), batch)):
            for bn in bns:
                bn.momentum = k / (k + 1.0)  # moving = mean of the batch statistics so far
            model(np.asarray(images[s : s + batch], np.float32), training=True)
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m


def embed_keras(model, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """A Keras model's outputs for ``images``, L2-normalised (float32)."""
    out = []
    for s in range(0, len(images), batch):
        out.append(np.asarray(model(images[s : s + batch].astype(np.float32), training=False), np.float32))
    z = np.concatenate(out)
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def unit_parts(y: np.ndarray, parts: int) -> np.ndarray:
    """Each row of ``y`` (N, D) cut into ``parts`` equal parts, each L2-normalised and scaled by 1/sqrt(parts): the
    form of :class:`convert.teacher_model.TeacherEnsemble`'s output (a unit row)."""
    n, d = y.shape
    z = np.asarray(y, np.float32).reshape(n, parts, d // parts)
    z = z / np.maximum(np.linalg.norm(z, axis=2, keepdims=True), 1e-12)
    return (z.reshape(n, d) / np.float32(np.sqrt(parts))).astype(np.float32)


def distill(
    cfg: StudentConfig,
    archive,
    teacher_model,
    *,
    imaging: ImagingConfig,
    name: str,
    text_targets: np.ndarray | None = None,
    teacher_info: dict | None = None,
    clean: np.ndarray | None = None,
    progress: bool = True,
    log=None,
    cache_dir=None,
) -> dict:
    """Distill a student from ``teacher_model`` (a Keras model: image -> unit embedding) and write
    ``<cfg.out_dir>/<name>/``. ``clean``: precomputed clean images of every archive case (else imaged here).
    ``cache_dir``: keep the augmented training images there (keyed by cases, imaging, code, copies, seed).
    Returns the ``student.json`` dict."""
    _configure(cfg)
    import keras
    import tensorflow as tf

    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.time()
    run_dir = Path(cfg.out_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)

    tr_idx, va_idx = archive.training_split(cfg.train_folds, cfg.val_folds, cfg.batch_size, "student")
    if clean is None:
        clean = image_cases(archive, np.arange(len(archive)), imaging, progress=progress)
    key = image_cache_key(archive, tr_idx, imaging, "augmented", copies=cfg.aug_copies, seed=cfg.seed)
    aug, aug_src = cached(
        cache_dir, key, lambda: augmented_images(archive, tr_idx, imaging, cfg.aug_copies, cfg.seed, progress=progress)
    )
    x_train = np.concatenate([clean[tr_idx].astype(np.float16), aug]) if len(aug) else clean[tr_idx]
    src = np.concatenate([tr_idx, aug_src])
    del aug
    say(f"student: {len(x_train)} training images ({len(tr_idx)} cases x {1 + cfg.aug_copies}); teacher targets ...")
    if cfg.target_images == "clean":  # the teacher's view of each copy's clean 12-lead original
        y_train = teacher_targets(teacher_model, clean[src])
    else:
        y_train = teacher_targets(teacher_model, x_train)
    # a teacher ensemble (convert.teacher_model.TeacherEnsemble) gives k teachers' unit embeddings side by side;
    # each part is centred and normalised on its own, so that every teacher keeps its 1/k share of the cosine
    parts = int(getattr(teacher_model, "parts", 1))
    if y_train.shape[1] != cfg.dim:
        raise ConfigError(
            f"[student] dim {cfg.dim} differs from the teacher targets' width {y_train.shape[1]}"
            + (f" ({parts} teachers side by side)" if parts > 1 else "")
        )
    mu = np.zeros(y_train.shape[1], np.float32)
    if cfg.center_targets:
        mu = y_train.mean(axis=0)
        y_train = y_train - mu
        if parts == 1:
            y_train /= np.maximum(np.linalg.norm(y_train, axis=1, keepdims=True), 1e-12)
        else:
            y_train = unit_parts(y_train, parts)
        say(
            f"student: teacher targets centred (|mean| {np.linalg.norm(mu):.3f}; mean pairwise cosine after "
            f"centring {float(np.mean(y_train[:512] @ y_train[:512].T)):.3f})"
        )
    txt = None
    if cfg.text_weight > 0:
        if text_targets is None:
            raise ConfigError("student.text_weight > 0 needs the teacher's text embeddings")
        txt = np.asarray(text_targets, np.float32)[src]

    model = build_student(imaging.shape, cfg)
    params, macs = count_params_macs(model)
    say(f"student: {params:,} parameters, {macs:,} MACs per image; {time.time() - t0:.0f} s of data prep")
    steps = len(x_train) // cfg.batch_size
    total = steps * cfg.epochs
    warm = steps * cfg.warmup_epochs
    sched = keras.optimizers.schedules.CosineDecay(
        cfg.lr * 0.1, max(1, total - warm), alpha=0.01, warmup_target=cfg.lr, warmup_steps=max(1, warm)
    )
    opt = keras.optimizers.AdamW(learning_rate=sched, weight_decay=cfg.weight_decay)
    tau = float(cfg.rel_temperature)

    mu_t = tf.constant(mu)
    n_mix = int(round(cfg.mixup * cfg.batch_size))

    def mixed_targets(xm):
        z = tf.math.l2_normalize(teacher_model(xm, training=False), axis=1)
        if cfg.center_targets:
            if parts == 1:
                z = tf.math.l2_normalize(z - mu_t, axis=1)
            else:
                z = tf.reshape(z - mu_t, (-1, parts, cfg.dim // parts))
                z = tf.reshape(tf.math.l2_normalize(z, axis=2), (-1, cfg.dim)) * (1.0 / float(np.sqrt(parts)))
        return z

    @tf.function(reduce_retracing=True)
    def mix(x, y, lam, perm, xt):
        # xt: the images the teacher labels (x itself, or the copies' clean originals with target_images "clean")
        la = lam[:, None, None, None]
        xm = la * x[:n_mix] + (1.0 - la) * tf.gather(x, perm)
        xtm = xm if xt is None else la * xt[:n_mix] + (1.0 - la) * tf.gather(xt, perm)
        return tf.concat([xm, x[n_mix:]], 0), tf.concat([mixed_targets(xtm), y[n_mix:]], 0)

    @tf.function(reduce_retracing=True)
    def step(x, y, t):
        with tf.GradientTape() as tape:
            s = tf.math.l2_normalize(model(x, training=True), axis=1)
            loss_cos = tf.reduce_mean(1.0 - tf.reduce_sum(s * y, axis=1))
            loss = loss_cos
            if cfg.rel_weight > 0:
                n = tf.shape(s)[0]
                mask = tf.eye(n) * 1e9
                ps = tf.nn.log_softmax(tf.matmul(s, s, transpose_b=True) / tau - mask, axis=1)
                pt = tf.nn.softmax(tf.matmul(y, y, transpose_b=True) / tau - mask, axis=1)
                rel = tf.reduce_mean(tf.reduce_sum(pt * (tf.math.log(pt + 1e-12) - ps), axis=1))
                loss = loss + cfg.rel_weight * rel
            if t is not None:
                loss = loss + cfg.text_weight * tf.reduce_mean(1.0 - tf.reduce_sum(s * t, axis=1))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss, loss_cos

    a_idx = archive.select(folds=cfg.train_folds)
    best, best_epoch, history, best_w = -1.0, 0, [], None
    stopped = None
    budget = cfg.max_minutes * 60.0
    for epoch in range(cfg.epochs):
        perm = np.random.default_rng([cfg.seed, epoch, 31]).permutation(len(x_train))
        ls, lc = [], []
        it = range(steps)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"epoch {epoch + 1}/{cfg.epochs}", file=sys.stderr, leave=False)
        for b in it:
            sel = np.sort(perm[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            x = tf.constant(x_train[sel].astype(np.float32))
            y = tf.constant(y_train[sel])
            t = tf.constant(txt[sel]) if txt is not None else None
            if n_mix > 0:
                r = np.random.default_rng([cfg.seed, epoch, b, 17])
                lam = r.beta(cfg.mixup_alpha, cfg.mixup_alpha, n_mix).astype(np.float32)
                xt = tf.constant(clean[src[sel]].astype(np.float32)) if cfg.target_images == "clean" else None
                x, y = mix(x, y, tf.constant(lam), tf.constant(r.permutation(len(sel))[:n_mix]), xt)
            loss, lcos = step(x, y, t)
            ls.append(float(loss))
            lc.append(float(lcos))
        rec: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": float(np.mean(ls)),
            "cos": float(1 - np.mean(lc)),
            "elapsed_s": round(time.time() - t0, 1),
        }
        last = epoch + 1 == cfg.epochs or time.time() - t0 > budget
        if (epoch + 1) % cfg.eval_every == 0 or last:
            recalibrate_bn(model, clean[tr_idx])
            emb = embed_keras(model, clean[np.concatenate([va_idx, a_idx])])
            m = evaluate(archive, {"s": (emb[: len(va_idx)], emb[len(va_idx) :])}, va_idx, a_idx)["s"]
            rec["val"] = {k: m[k] for k in ("P@10", "kNN_macroAUROC", "rhythmP@10_nonSR")}
            if m[cfg.select_metric] > best:
                best, best_epoch = float(m[cfg.select_metric]), epoch + 1
                best_w = [np.array(w) for w in model.get_weights()]
            say(
                f"student epoch {epoch + 1}: loss {rec['loss']:.4f} cos {rec['cos']:.4f} val "
                f"{cfg.select_metric} {m[cfg.select_metric]:.4f} P@10 {m['P@10']:.3f} (best {best:.4f} @ "
                f"{best_epoch}) [{rec['elapsed_s'] / 60:.1f} min]"
            )
        else:
            say(
                f"student epoch {epoch + 1}: loss {rec['loss']:.4f} cos {rec['cos']:.4f} "
                f"[{rec['elapsed_s'] / 60:.1f} min]"
            )
        history.append(rec)
        if time.time() - t0 > budget:
            stopped = f"time budget of {cfg.max_minutes} min reached"
            break
    if best_w is not None:
        model.set_weights(best_w)  # (BN statistics re-estimated before that evaluation)
    else:
        recalibrate_bn(model, clean[tr_idx])
    model.save(run_dir / "student.keras")
    emb = embed_keras(model, clean)
    np.save(run_dir / "embeddings.npy", emb.astype(np.float32))
    info = {
        "name": name,
        "config": cfg.to_dict(),
        "imaging": imaging.to_dict(),
        "params": params,
        "macs": macs,
        "best_epoch": best_epoch,
        "select_metric": cfg.select_metric,
        "val_best": best,
        "epochs_run": len(history),
        "stopped": stopped,
        "train_time_s": round(time.time() - t0, 1),
        "n_train_images": int(len(x_train)),
        "target_mean_norm": float(np.linalg.norm(mu)),
        "teacher": dict(teacher_info or {}),
        "history": history,
        "model_sha256": file_sha256(run_dir / "student.keras"),
    }
    (run_dir / "student.json").write_text(json.dumps(info, indent=1, default=float) + "\n")
    return info


def load_student(run_dir):
    """(Keras model, student.json dict) of a distilled student."""
    import keras

    d = Path(run_dir)
    for f in ("student.keras", "student.json"):
        if not (d / f).is_file():
            raise ConfigError(f"{d}: not a distilled student (missing {f})")
    info = json.loads((d / "student.json").read_text())
    return keras.saving.load_model(d / "student.keras", compile=False), info
