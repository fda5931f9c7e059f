"""Ranking with the measurements: the embedding's candidates re-ordered by how alike their rhythm measures.

The encoder sees one 10 s image; rate and regularity are numbers it blurs (sinus bradycardia at 48 bpm and sinus
rhythm at 70 bpm give near images). Every archive case carries its own measurements (computed from its signal when
the bundle is built, ``cases.jsonl`` field ``measured``), so the ranking combines both:

    rank score = cosine(query, case) - weight * d(query, case)

over a candidate pool of the ``pool`` nearest cases by cosine, where d is a rhythm distance in [0, 1]:

    d = min(1, (|ln HR_q - ln HR_c| / 0.15 + |irr_q - irr_c| / 0.10 + |cv_q - cv_c| / 0.10) / 3)

(HR heart rate; irr the irregularity index; cv = RR SD / RR mean; a 15 % rate difference, or 0.1 of either
regularity figure, is one unit). A term missing on either side counts as no difference. The weight and pool are
chosen by cross-validation over PTB-XL folds 1-8 (``ecgret-convert rerank-cv``; docs/TRAINING.md) and stored in the
manifest's ``rerank`` section; a bundle without one ranks by cosine alone. The score shown (and voted with) stays the
cosine similarity: the measurements re-order, they do not inflate similarity.
"""
from __future__ import annotations

import numpy as np

__all__ = ["features", "distance", "rerank", "FEATURES"]

FEATURES = ("ln_hr", "irregularity", "rr_cv")
SCALES = np.array([0.15, 0.10, 0.10])


def features(m) -> np.ndarray:
    """The rhythm feature vector (3,) of a Measurements object or its dict (NaN where not measured)."""
    get = (m.get if isinstance(m, dict) else (lambda k, d=None: getattr(m, k, d)))
    hr, irr, sd, mean = get("heart_rate_bpm"), get("irregularity"), get("rr_sd_ms"), get("rr_mean_ms")
    return np.array([np.log(hr) if hr else np.nan, irr if irr is not None else np.nan,
                     (sd / mean) if sd is not None and mean else np.nan], dtype=np.float64)


def distance(fq: np.ndarray, fc: np.ndarray) -> np.ndarray:
    """Rhythm distance in [0, 1] between one query's features (3,) and cases' features (n, 3)."""
    d = np.abs(np.asarray(fc, dtype=np.float64) - fq[None, :]) / SCALES
    d = np.where(np.isfinite(d), d, 0.0)
    return np.minimum(1.0, d.sum(axis=1) / 3.0)


def rerank(fq: np.ndarray, fc: np.ndarray, cos: np.ndarray, weight: float) -> np.ndarray:
    """Order (indices into the pool) by ``cos - weight * distance``, best first; ties keep the cosine order."""
    score = np.asarray(cos, dtype=np.float64) - float(weight) * distance(fq, fc)
    return np.argsort(-score, kind="stable")
