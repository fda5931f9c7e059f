"""Export the student to TFLite (float32, float16, full-integer int8) and measure what quantization costs.

* int8: post-training full-integer quantization (``TFLITE_BUILTINS_INT8``, int8 input and output), calibrated
  on a representative set of real images from the training and validation folds (never the test fold), part
  of them with a reduced lead set, so that the activation ranges cover reduced-lead queries too. Batch size is
  fixed to 1 (no shape ops; loads on tflite-runtime 2.14). No in-model L2 normalisation (see
  :mod:`edge.encoder`). The student's head (per-position depthwise + BatchNorm + Dense, or flatten/average +
  Dense) is folded into one full ``CONV_2D`` over the last feature map before conversion (:func:`fold_head`):
  the same function in float, but the int8 graph is then made of CONV_2D and 3x3 DEPTHWISE_CONV_2D only,
  whose built-in int8 kernels give bit-identical outputs in LiteRT and tflite-runtime 2.14 (a 4x4
  depthwise and FULLY_CONNECTED did not: 1.7 % of the outputs moved by one step).
* float32 and float16 (weights in float16) exports for comparison.
* the report (``quant_report.json`` / ``.md`` in the student's run folder): cosine(float, int8) on fold 9
  (mean, min), the overlap of the top-10 retrieved cases (fold-9 queries, folds 1-8 archive, float vs int8
  embeddings), and every metric of ``shared/docs/EVALUATION.md`` for the baselines, the teacher, the student in
  float32, float16 and int8 (int8 run through ``edge.encoder`` on the device interpreter, LiteRT) in one
  table, plus reduced-lead query rows.
* the gate (:func:`check_gate`): a bundle is refused when the int8 kNN_macroAUROC falls more than
  ``max_auroc_drop`` below the float student's, unless forced.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomicio import atomic_write
from edge.errors import BundleError, ConfigError
from edge.imaging import ImagingConfig, ecg_image

from .augment import REDUCED_SETS, lead_mask
from .config import coerce
from .evaluate import baselines, default_split, evaluate, heading, markdown_table, top_k
from .images import image_cases
from .student import count_params_macs, load_student
from .teacher_config import EVAL_LEAD_SETS

__all__ = [
    "QuantConfig",
    "quant_config",
    "QuantizationError",
    "representative_images",
    "export_tflite",
    "fold_head",
    "embed_tflite",
    "quant_report",
    "check_gate",
    "quantize_student",
    "EXPORTS",
]

EXPORTS = ("float32", "float16", "int8")


class QuantizationError(BundleError):
    """The int8 encoder is too far from the float one to ship (or cannot be calibrated)."""


@dataclass(frozen=True)
class QuantConfig:
    """``[quantize]`` of ``configs/default.toml``: the calibration set (folds, size, reduced-lead share, the
    minimum), the gate (``max_auroc_drop``, absolute kNN_macroAUROC), the seed and the interpreter threads."""

    rep_folds: tuple = (1, 2, 3, 4, 5, 6, 7, 8)  # training + validation folds: never the test fold
    rep_size: int = 256
    rep_reduced: float = 0.25  # share of representative images with a reduced lead set
    min_rep: int = 32  # fewer images than this cannot calibrate int8 ranges
    max_auroc_drop: float = 0.01
    seed: int = 0
    threads: int = 1

    def to_dict(self) -> dict:
        """The fields as a dict (``rep_folds`` a list), as the quantization report records them."""
        d = asdict(self)
        d["rep_folds"] = list(self.rep_folds)
        return d


def quant_config(d: Mapping | None, where: str = "[quantize]") -> QuantConfig:
    """A :class:`QuantConfig` from a TOML table; unknown keys and impossible values -> ConfigError."""
    kw = coerce(QuantConfig, dict(d or {}), where)
    cfg = QuantConfig(**kw)
    if not 0 <= cfg.rep_reduced <= 1 or cfg.max_auroc_drop < 0 or cfg.min_rep < 1 or cfg.threads < 1:
        raise ConfigError(f"{where}: rep_reduced in [0, 1], max_auroc_drop >= 0, min_rep >= 1, threads >= 1 required")
    return cfg


# ============================================================================================ calibration


def representative_images(
    archive, imaging: ImagingConfig, cfg: QuantConfig = QuantConfig(), exclude_folds=(9, 10)
) -> np.ndarray:
    """Calibration images (n, H, W, 3) float32: ``rep_size`` cases drawn (seeded) from ``rep_folds``, a share
    ``rep_reduced`` of them imaged with a reduced lead set. Raises :class:`QuantizationError` when fewer than
    ``min_rep`` images can be drawn, and refuses test folds."""
    bad = sorted(set(cfg.rep_folds) & set(exclude_folds))
    if bad:
        raise ConfigError(
            f"quantize.rep_folds {list(cfg.rep_folds)} include test fold(s) {bad}: calibrate on "
            f"training/validation folds only"
        )
    pool = archive.select(folds=cfg.rep_folds)
    n = min(cfg.rep_size, len(pool))
    if n < cfg.min_rep:
        raise QuantizationError(
            f"representative set too small to calibrate int8: {n} image(s) from folds "
            f"{list(cfg.rep_folds)} (need at least {cfg.min_rep}; quantize.min_rep)"
        )
    rng = np.random.default_rng([cfg.seed, 271828])
    pick = np.sort(rng.choice(pool, size=n, replace=False))
    out = np.empty((n,) + imaging.shape, np.float32)
    for k, i in enumerate(pick):
        x = archive.signal(int(i))
        nv = archive.cases[int(i)].n_samples or None
        if rng.random() < cfg.rep_reduced:
            present = lead_mask(REDUCED_SETS[int(rng.integers(len(REDUCED_SETS)))])
            out[k] = ecg_image(x * present[None, :], present, imaging, nv)
        else:
            out[k] = ecg_image(x, None, imaging, nv)
    return out


# ============================================================================================ export


def fold_head(model):
    """The student with its head folded into a single ``Conv2D(dim, (h, w), "valid")`` + ``Reshape`` over the
    last feature map (h, w, C): ``gdconv`` (depthwise (h, w) + BatchNorm + Dense), ``flatten`` (+ Dense) or
    ``gap`` (+ Dense). The same function in float; models without one of these heads are returned as they are."""
    import keras

    names = {layer.name for layer in model.layers}
    if "embedding" not in names or not names & {"gdconv", "flatten", "gap"}:
        return model
    dense = model.get_layer("embedding")
    W, bias = [np.asarray(a, np.float64) for a in dense.get_weights()]
    if "gdconv" in names:
        gd = model.get_layer("gdconv")
        feat = gd.input
        h, w, c = (int(v) for v in feat.shape[1:])
        k = np.asarray(gd.get_weights()[0], np.float64)
        if k.shape != (h, w, c, 1):
            return model
        bn = model.get_layer("gdconv_bn")
        g, beta, mu, var = [np.asarray(a, np.float64) for a in bn.get_weights()]
        a = g / np.sqrt(var + bn.epsilon)
        K = (k[..., 0] * a)[..., None] * W[None, None]
        b = (beta - mu * a) @ W + bias
    elif "flatten" in names:
        feat = model.get_layer("flatten").input
        h, w, c = (int(v) for v in feat.shape[1:])
        K, b = W.reshape(h, w, c, W.shape[1]), bias
    else:
        feat = model.get_layer("gap").input
        h, w, c = (int(v) for v in feat.shape[1:])
        K, b = np.broadcast_to(W[None, None] / (h * w), (h, w) + W.shape), bias
    conv = keras.layers.Conv2D(W.shape[1], (h, w), padding="valid", name="embedding_conv")
    out = keras.layers.Reshape((W.shape[1],), name="embedding_out")(conv(feat))
    folded = keras.Model(model.input, out, name=f"{model.name}_folded")
    conv.set_weights([K.astype(np.float32), b.astype(np.float32)])
    return folded


def export_tflite(model, kind: str, rep_images: np.ndarray | None = None) -> bytes:
    """A Keras model (image -> embedding) as TFLite bytes with batch size 1: ``float32``, ``float16``
    (float16 weights) or ``int8`` (full integer, int8 input and output, calibrated on ``rep_images``)."""
    import tensorflow as tf

    if kind not in EXPORTS:
        raise ConfigError(f"unknown export {kind!r}; choose one of {', '.join(EXPORTS)}")
    import keras

    model = fold_head(model)
    # a batch size of 1 removes the shape ops (and keeps the model loadable on tflite-runtime 2.14)
    inp = keras.Input(tuple(int(x) for x in model.input_shape[1:]), batch_size=1, name="image")
    fixed = keras.models.clone_model(model, input_tensors=inp)
    fixed.set_weights(model.get_weights())
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    if kind == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if rep_images is None or len(rep_images) == 0:
            raise QuantizationError("int8 export needs a representative set")
        reps = np.asarray(rep_images, np.float32)

        def rep():
            for img in reps:
                yield [img[None]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


def embed_tflite(tflite_bytes: bytes, images: np.ndarray, threads: int = 1, progress: bool = False) -> np.ndarray:
    """L2-normalised embeddings of ``images`` through the device interpreter (:class:`edge.encoder.Encoder`:
    host-side int8 quantize/dequantize, LiteRT when installed)."""
    from edge.encoder import Encoder

    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "encoder.tflite"
        p.write_bytes(tflite_bytes)
        enc = Encoder(p, threads=threads)
        out = np.empty((len(images), enc.dim), np.float32)
        it = range(len(images))
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc="encoding", file=sys.stderr, leave=False)
        for k in it:
            out[k] = enc.encode(np.asarray(images[k], np.float32))
    return out


# ============================================================================================ report


def _topk_overlap(qa: np.ndarray, aa: np.ndarray, qb: np.ndarray, ab: np.ndarray, k: int = 10) -> np.ndarray:
    ia, _ = top_k(qa, aa, k)
    ib, _ = top_k(qb, ab, k)
    return np.array([len(set(x.tolist()) & set(y.tolist())) / float(k) for x, y in zip(ia, ib)])


def quant_report(
    archive, variants: Mapping, float_name: str, int8_name: str, query_idx, archive_idx, extra: dict | None = None
) -> dict:
    """Every metric for ``variants`` ({name: (N, D) or (q, a)}) plus cosine(float, int8) over the queries and
    the top-10 overlap of float and int8 retrieval. Returns a JSON-able dict with ``table_markdown``."""
    q, a = np.asarray(query_idx), np.asarray(archive_idx)
    res = evaluate(archive, variants, q, a)
    f, i8 = np.asarray(variants[float_name]), np.asarray(variants[int8_name])
    cos = np.sum(f[q] * i8[q], axis=1)
    ov = _topk_overlap(f[q], f[a], i8[q], i8[a])
    quant = {
        "cosine_float_int8_mean": float(cos.mean()),
        "cosine_float_int8_min": float(cos.min()),
        "top10_overlap_mean": float(ov.mean()),
        "top10_overlap_min": float(ov.min()),
        "kNN_macroAUROC_float": float(res[float_name]["kNN_macroAUROC"]),
        "kNN_macroAUROC_int8": float(res[int8_name]["kNN_macroAUROC"]),
        "n_queries": int(len(q)),
    }
    quant["kNN_macroAUROC_drop"] = quant["kNN_macroAUROC_float"] - quant["kNN_macroAUROC_int8"]
    head = heading(archive, q, a)
    qfolds = ",".join(str(x) for x in sorted({archive.cases[int(j)].fold for j in q}))
    md = (
        markdown_table(res, "### " + head) + "\n\n" + f"Quantization ({int8_name} vs {float_name}, fold-{qfolds} "
        f"queries): cosine mean {quant['cosine_float_int8_mean']:.4f}, min {quant['cosine_float_int8_min']:.4f}; "
        f"top-10 overlap mean {quant['top10_overlap_mean']:.3f}, min {quant['top10_overlap_min']:.2f}; "
        f"kNN_macroAUROC {quant['kNN_macroAUROC_float']:.4f} -> {quant['kNN_macroAUROC_int8']:.4f} "
        f"(drop {quant['kNN_macroAUROC_drop']:+.4f})\n"
    )
    metrics = {k: {m: v for m, v in r.items()} for k, r in res.items()}
    return {
        "table_markdown": md,
        "heading": head,
        "metrics": metrics,
        "quantization": quant,
        "float_variant": float_name,
        "int8_variant": int8_name,
        **(extra or {}),
    }


def check_gate(report: dict, max_drop: float = 0.01, force: bool = False) -> str | None:
    """Refuse (:class:`QuantizationError`) an int8 encoder whose kNN_macroAUROC is more than ``max_drop``
    below the float student's; with ``force`` return the reason as a warning instead. None when it passes."""
    q = report["quantization"]
    drop = q["kNN_macroAUROC_float"] - q["kNN_macroAUROC_int8"]
    if drop <= max_drop + 1e-12:
        return None
    msg = (
        f"int8 kNN_macroAUROC {q['kNN_macroAUROC_int8']:.4f} is {drop:.4f} below the float student's "
        f"{q['kNN_macroAUROC_float']:.4f} (allowed: {max_drop}); post-training quantization lost too much - "
        f"recalibrate (more/representative images) or use quantization-aware training, or force"
    )
    if not force:
        raise QuantizationError(msg)
    return "forced: " + msg


# ============================================================================================ the step


def _deployed_stats(model) -> dict:
    """Parameters and multiply-accumulates of the graph that is exported (the head folded into one conv)."""
    params, macs = count_params_macs(fold_head(model))
    return {"params": int(params), "macs": int(macs), "head": "folded into one Conv2D (fold_head)"}


def quantize_student(
    run_dir,
    archive,
    imaging: ImagingConfig,
    cfg: QuantConfig = QuantConfig(),
    *,
    teacher: dict | None = None,
    clean: np.ndarray | None = None,
    lead_sets: bool = True,
    progress: bool = True,
) -> dict:
    """Export ``run_dir/student.keras`` as ``encoder_{float32,float16,int8}.tflite`` beside it, measure them
    (fold-9 queries, folds 1-8 archive) and write ``quant_report.json`` and ``quant_report.md``.

    teacher: optional ``{"name": str, "embeddings": (N, D), "leadsets": {set: (N, D)}}`` for the table.
    clean: precomputed clean images of every archive case."""
    d = Path(run_dir)
    model, info = load_student(d)
    if tuple(model.input_shape[1:]) != tuple(imaging.shape):
        raise ConfigError(
            f"{d}: student input {model.input_shape[1:]} does not match the imaging shape {imaging.shape}"
        )
    reps = representative_images(archive, imaging, cfg)
    blobs = {}
    for kind in EXPORTS:
        blobs[kind] = export_tflite(model, kind, reps if kind == "int8" else None)
        atomic_write(d / f"encoder_{kind}.tflite", blobs[kind])
    if clean is None:
        clean = image_cases(archive, np.arange(len(archive)), imaging, progress=progress)
    q, a = default_split(archive)
    variants: dict[str, Any] = dict(baselines(archive))
    if teacher is not None:
        variants[teacher.get("name", "teacher")] = np.asarray(teacher["embeddings"], np.float32)
    embs = {}
    for kind in EXPORTS:
        embs[kind] = embed_tflite(blobs[kind], clean, threads=cfg.threads, progress=progress)
        variants[f"student {kind}" + (" (int8 in/out, LiteRT)" if kind == "int8" else "")] = embs[kind]
    int8_name = "student int8 (int8 in/out, LiteRT)"
    np.save(d / "embeddings_int8.npy", embs["int8"])
    if lead_sets:
        int8_blob = blobs["int8"]
        for s in EVAL_LEAD_SETS:
            m = lead_mask(s)
            imgs = np.stack(
                [
                    ecg_image(archive.signal(int(i)) * m[None, :], m, imaging, archive.cases[int(i)].n_samples or None)
                    for i in q
                ]
            )
            if teacher is not None and s in (teacher.get("leadsets") or {}):
                variants[f"{teacher.get('name', 'teacher')}, query leads {s}"] = (
                    np.asarray(teacher["leadsets"][s], np.float32)[q],
                    variants[teacher.get("name", "teacher")][a],
                )
            variants[f"student int8, query leads {s}"] = (embed_tflite(int8_blob, imgs, cfg.threads), embs["int8"][a])
    sizes = {k: len(v) for k, v in blobs.items()}
    rep = quant_report(
        archive,
        variants,
        "student float32",
        int8_name,
        q,
        a,
        extra={
            "sizes_bytes": sizes,
            "params": info.get("params"),
            "macs": info.get("macs"),
            "deployed": _deployed_stats(model),
            "representative": {**cfg.to_dict(), "n_images": int(len(reps))},
        },
    )
    (d / "quant_report.json").write_text(json.dumps(rep, indent=1, default=float) + "\n")
    (d / "quant_report.md").write_text(rep["table_markdown"])
    return rep
