"""Ranking with the measurements: the embedding's candidates re-ordered by how alike their rhythm measures, and
by the rhythm the measurements name.

The encoder sees one 10 s image; rate and regularity are numbers it blurs (sinus bradycardia at 48 bpm and sinus
rhythm at 70 bpm give near images). Every archive case carries its own measurements (computed from its signal when
the bundle is built, ``cases.jsonl`` field ``measured``) and its cardiologist's rhythm statements, so the ranking
combines three things, in two steps:

1. Over a candidate pool of the ``pool`` nearest cases by cosine:

       key = cosine(query, case) - weight * d(query, case)

   where d is a rhythm distance in [0, 1]:

       d = min(1, (|ln HR_q - ln HR_c| / 0.15 + |irr_q - irr_c| / 0.10 + |cv_q - cv_c| / 0.10) / 3)

   (HR heart rate; irr the irregularity index; cv = RR SD / RR mean; a 15 % rate difference, or 0.1 of either
   regularity figure, is one unit). A term missing on either side counts as no difference.
2. The answer's rhythm from the first step's top k (:func:`edge.rhythm.ground`: the similar cases' rhythm checked
   against the measurements). When it is not plain sinus rhythm, every archive case whose statements carry that
   rhythm joins the pool (exact cosine; at most a few hundred vectors in a PTB-XL-sized archive) and

       key += rhythm_bonus   for the cases with that rhythm statement.

   A sinus-rhythm answer re-orders nothing more: it is the common case, and the measured rhythm distance already
   keeps its neighbours regular.

``weight``, ``pool`` and ``rhythm_bonus`` are chosen by cross-validation over PTB-XL folds 1-8
(``ecgret-convert rerank``; docs/TRAINING.md) and stored in the manifest's ``rerank`` section; a bundle without
one ranks by cosine alone, one without ``rhythm_bonus`` does step 1 only. The score shown (and voted with) stays
the cosine similarity: the measurements re-order, they do not inflate similarity.

The same :class:`Ranker` orders the device's Annoy candidates and the cross-validation's exact ones
(``convert/rerank.py``), so the setting chosen is the setting run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import BundleError

__all__ = ["features", "distance", "rerank", "FEATURES", "Setting", "setting_of", "Ranker"]

FEATURES = ("ln_hr", "irregularity", "rr_cv")
SCALES = np.array([0.15, 0.10, 0.10])


def features(m) -> np.ndarray:
    """The rhythm feature vector (3,) of a Measurements object or its dict (NaN where not measured)."""
    get = m.get if isinstance(m, dict) else (lambda k, d=None: getattr(m, k, d))
    hr, irr, sd, mean = get("heart_rate_bpm"), get("irregularity"), get("rr_sd_ms"), get("rr_mean_ms")
    return np.array(
        [
            np.log(hr) if hr else np.nan,
            irr if irr is not None else np.nan,
            (sd / mean) if sd is not None and mean else np.nan,
        ],
        dtype=np.float64,
    )


def distance(fq: np.ndarray, fc: np.ndarray) -> np.ndarray:
    """Rhythm distance in [0, 1] between one query's features (3,) and cases' features (n, 3)."""
    d = np.abs(np.asarray(fc, dtype=np.float64) - fq[None, :]) / SCALES
    d = np.where(np.isfinite(d), d, 0.0)
    return np.minimum(1.0, d.sum(axis=1) / 3.0)


def rerank(fq: np.ndarray, fc: np.ndarray, cos: np.ndarray, weight: float) -> np.ndarray:
    """Order (indices into the pool) by ``cos - weight * distance``, best first; ties keep the cosine order."""
    score = np.asarray(cos, dtype=np.float64) - float(weight) * distance(fq, fc)
    return np.argsort(-score, kind="stable")


@dataclass(frozen=True)
class Setting:
    """The manifest's ``rerank`` section: step 1's ``weight`` and ``pool``, step 2's ``rhythm_bonus``."""

    weight: float
    pool: int
    rhythm_bonus: float = 0.0


def _num(sec: dict, key: str, lo: float, hi: float, default=None, integer: bool = False):
    v = sec.get(key, default)
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or not (lo <= v <= hi) or v != v:
        kind = "an integer" if integer else "a number"
        raise BundleError(f"manifest.json: rerank.{key}: must be {kind} in [{lo:g}, {hi:g}], got {v!r:.40}")
    return v


def setting_of(manifest: dict) -> Setting | None:
    """The :class:`Setting` of a manifest, or None when it has no ``rerank`` section or a zero weight and bonus
    (ranking by cosine alone). A malformed section is a :class:`~edge.errors.BundleError` naming the field."""
    sec = manifest.get("rerank")
    if sec is None:
        return None
    if not isinstance(sec, dict):
        raise BundleError(f"manifest.json: rerank: must be an object, got {type(sec).__name__}")
    s = Setting(
        float(_num(sec, "weight", 0.0, 10.0, 0.0)),
        int(_num(sec, "pool", 1, 100_000, 100, integer=True)),
        float(_num(sec, "rhythm_bonus", 0.0, 10.0, 0.0)),
    )
    return s if (s.weight or s.rhythm_bonus) else None


def _member(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.isin(a, b)`` for 1-D integer arrays (the same result), without np.isin's first call importing
    ``numpy.ma`` (a noticeable share of a device's cold start: docs/PERFORMANCE.md)."""
    b = np.sort(b)
    if not b.size:
        return np.zeros(a.shape, dtype=bool)
    j = np.minimum(np.searchsorted(b, a), b.size - 1)
    return b[j] == a


class _Vote:
    __slots__ = ("score", "rhythm")

    def __init__(self, case: dict, score: float):
        self.score = score
        self.rhythm = tuple(case.get("rhythm", ()))


class Ranker:
    """Orders candidates for one archive: ``cases`` (dicts with ``measured``, ``rhythm``, ``super_class``,
    ``statements``), ``cosines_of(vec, ids) -> (m,)`` float64 cosines of a unit query with the cases ``ids``
    (:meth:`edge.index.CaseIndex.cosines` on the device, :func:`edge.index.cosines` in the cross-validation), and
    a :class:`Setting`. Each rhythm's case list is gathered once, on first use."""

    def __init__(
        self, cases: Sequence[dict], cosines_of: Callable[[np.ndarray, np.ndarray], np.ndarray], setting: Setting
    ):
        self.cases = cases
        self.setting = setting
        self._cosines_of = cosines_of
        self.feats = np.stack([features(c.get("measured") or {}) for c in cases]) if len(cases) else np.zeros((0, 3))
        self._by_rhythm: dict[str, list[int]] = {}
        for i, c in enumerate(cases):
            for r in c.get("rhythm", ()) or ():
                self._by_rhythm.setdefault(r, []).append(i)
        self._rhythm_cache: dict[str, np.ndarray] = {}

    def _rhythm_cases(self, label: str) -> np.ndarray:
        got = self._rhythm_cache.get(label)
        if got is None:
            got = self._rhythm_cache[label] = np.asarray(self._by_rhythm.get(label, ()), dtype=np.int64)
        return got

    def _keys(self, fq, ids, cos):
        if fq is None or not np.isfinite(fq).any() or not self.setting.weight:
            return np.asarray(cos, dtype=np.float64)
        return np.asarray(cos, dtype=np.float64) - self.setting.weight * distance(fq, self.feats[ids])

    def rank(self, vec: np.ndarray, ids: np.ndarray, cos: np.ndarray, measurements, k: int):
        """(ids, cosines, keys, rhythm) of the top ``k``, best first, from a candidate pool (``ids``, ``cos``, in
        any order) and the query's unit vector and measurements (None: cosine order). ``rhythm`` is the
        :class:`edge.rhythm.RhythmAnswer` step 2 used (grounded in step 1's top k, before any case was favoured
        for its rhythm, so the answer's rhythm is never its own echo), or None when there was no step 2."""
        ids, cos = np.asarray(ids, dtype=np.int64), np.asarray(cos, dtype=np.float64)
        fq = None if measurements is None else features(measurements)
        if fq is None or not np.isfinite(fq).any():
            o = np.argsort(-cos, kind="stable")[:k]
            return ids[o], cos[o], cos[o], None
        keys = self._keys(fq, ids, cos)
        o = np.argsort(-keys, kind="stable")
        answer = None
        if self.setting.rhythm_bonus:
            from .consensus import vote
            from .rhythm import as_measurements, ground

            top = [_Vote(self.cases[i], float(s)) for i, s in zip(ids[o[:k]].tolist(), cos[o[:k]].tolist())]
            answer = ground(vote(top, rhythm_only=True), as_measurements(measurements))
            label = answer.label
            if label and label != "SR":
                rid = self._rhythm_cases(label)
                if rid.size:
                    new = ~_member(rid, ids)
                    if new.any():
                        ids = np.concatenate([ids, rid[new]])
                        cos = np.concatenate([cos, np.asarray(self._cosines_of(vec, rid[new]), dtype=np.float64)])
                        keys = self._keys(fq, ids, cos)
                    has = _member(ids, rid)
                    keys = keys + self.setting.rhythm_bonus * has
                    o = np.argsort(-keys, kind="stable")
        o = o[:k]
        return ids[o], cos[o], keys[o], answer
