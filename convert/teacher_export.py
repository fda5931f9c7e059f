"""A trained teacher's artefacts: written (:func:`export`), read back (:func:`load_teacher`), turned into the
archive's ECG+report case vectors (:func:`case_vectors`) and measured on fold 9 (:func:`measure`,
``ecgret-convert teacher-report``).

Output ``<out>/<name>/`` (see docs/TRAINING.md): ``image_encoder.keras``, ``text_head.keras``,
``image_head.npz``, ``embeddings.npy``, ``features.npy``, ``text_embeddings.npy``, ``leadset_embeddings.npz``,
``case_ids.json``; the training loop (:mod:`convert.teacher_train`) adds ``config.toml``, ``metrics.json``,
``train.log`` (when run through the CLI) and ``checkpoints/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ArchiveError, ConfigError

from .augment import lead_mask
from .evaluate import baselines, default_split, evaluate, evaluate_cross_modal, heading, markdown_table
from .images import embed_images, image_cases
from .ptbxl import open_archive
from .teacher_config import EVAL_LEAD_SETS, TeacherConfig, load_config
from .teacher_model import feature_model

__all__ = ["export", "load_teacher", "case_vectors", "REPORT_WEIGHT", "measure", "report_table"]


def export(
    cfg: TeacherConfig, archive, encoder, text_head, logit_scale, t_all, enc_fn=None, progress: bool = False
) -> None:
    """Write the artefacts of a trained teacher into ``cfg.run_dir``."""
    run_dir = cfg.run_dir
    enc_fn = enc_fn or (lambda x: encoder(x, training=False))
    encoder.save(run_dir / "image_encoder.keras")
    text_head.save(run_dir / "text_head.keras")
    proj = encoder.get_layer("image_projection")
    np.savez(
        run_dir / "image_head.npz",
        kernel=np.asarray(proj.kernel.numpy()),
        bias=np.asarray(proj.bias.numpy()),
        logit_scale=np.float32(logit_scale.numpy()),
    )
    all_idx = np.arange(len(archive))
    images = image_cases(archive, all_idx, cfg.imaging, progress=progress)
    np.save(run_dir / "embeddings.npy", embed_images(enc_fn, images).astype(np.float32))
    feat = feature_model(encoder)
    np.save(run_dir / "features.npy", embed_images(lambda x: feat(x, training=False), images).astype(np.float32))
    del images
    np.save(run_dir / "text_embeddings.npy", np.asarray(text_head(t_all, training=False)).astype(np.float32))
    lead: dict[str, Any] = {}
    for s in EVAL_LEAD_SETS:
        lead[s] = embed_images(
            enc_fn, image_cases(archive, all_idx, cfg.imaging, present=lead_mask(s), progress=progress)
        ).astype(np.float32)
    np.savez(run_dir / "leadset_embeddings.npz", **lead)
    (run_dir / "case_ids.json").write_text(json.dumps(list(archive.ids)))


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


REPORT_WEIGHT = 0.5  # archive case vectors: equal parts ECG embedding and report embedding (not tuned on fold 9)


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
    archive = archive if archive is not None else open_archive()
    q, a = split if split is not None else default_split(archive)
    emb: dict[str, Any] = dict(baselines(archive))
    cross = {}
    loaded = [(Path(r), *load_teacher(r)) for r in run_dirs]
    for d, cfg, e, t, _ in loaded:
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
    archive = archive if archive is not None else open_archive()
    q, a = default_split(archive)
    res, cross = measure(run_dirs, archive, (q, a))
    h = heading(archive, q, a)
    return (
        markdown_table(res, "### ECG -> ECG. " + h)
        + "\n\n"
        + markdown_table(cross, "### ECG -> report text (archive reports' text embeddings). " + h)
        + "\n"
    )
