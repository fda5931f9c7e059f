"""Archive measurements for the bundle, and the cross-validated choice of the re-ranking weight.

``case_measurements`` measures every archive case from its own signal (the device's :func:`edge.measure.measure`,
on the archive's 100 Hz z-scored signals: rate and regularity are exact there, intervals coarse, the axis absent).
``cross_validate`` rotates queries over folds 1-8 (four rotations, each holding out two folds as queries against the
other six) and scores every (weight, pool) of a grid with the EVALUATION.md metrics; fold 9 is not looked at.
``add_to_bundle`` writes the measurements into the bundle's ``cases.jsonl`` (field ``measured``) and the chosen
setting into the manifest's ``rerank`` section, updating the file hashes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.leads import LEADS12
from edge.measure import measure
from edge.record import Record
from edge.rerank import features, rerank

from .evaluate import l2n, retrieval_metrics

__all__ = ["case_measurements", "cross_validate", "ranked", "ROTATIONS", "add_to_bundle"]

ROTATIONS = ((1, 2), (3, 4), (5, 6), (7, 8))
METRICS = ("P@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")


def case_measurements(archive) -> list[dict]:
    """The measurements (``Measurements.to_dict()``) of every archive case, in archive order."""
    out = []
    for i in range(len(archive)):
        x = np.asarray(archive.signal(i), dtype=np.float64)
        rec = Record(x, float(archive.fs), LEADS12, archive.ids[i])
        out.append(measure(rec, duration_s=x.shape[0] / float(archive.fs), notch_hz=None).to_dict())
    return out


def ranked(q: np.ndarray, a: np.ndarray, fq: np.ndarray, fa: np.ndarray, weight: float, pool: int, k: int = 10):
    """Top-k (indices into ``a``, cosines) per query: the ``pool`` nearest by cosine re-ordered by
    ``edge.rerank.rerank`` (weight 0: plain cosine order)."""
    s = l2n(q) @ l2n(a).T
    pool = min(pool, s.shape[1])
    idx = np.argpartition(-s, pool - 1, axis=1)[:, :pool]
    part = np.take_along_axis(s, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    idx, part = np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)
    out_i, out_s = np.empty((len(q), k), dtype=np.int64), np.empty((len(q), k))
    for r in range(len(q)):
        o = rerank(fq[r], fa[idx[r]], part[r], weight)[:k] if weight else np.arange(k)
        out_i[r], out_s[r] = idx[r][o], part[r][o]
    return out_i, out_s


def _labels(cases, field):
    return [frozenset(getattr(c, field) if not isinstance(c, dict) else c.get(field, ())) for c in cases]


def cross_validate(vectors: np.ndarray, cases, feats: np.ndarray, weights, pools=(100,),
                   rotations=ROTATIONS) -> dict:
    """Mean and SD over the rotations of each metric, for every (weight, pool). ``cases``: dicts or Case objects
    with ``fold``, ``super_class``, ``rhythm``; ``vectors`` (n, D) the archive embeddings; ``feats`` (n, 3)."""
    folds = np.array([c["fold"] if isinstance(c, dict) else c.fold for c in cases])
    sup, rhy = _labels(cases, "super_class"), _labels(cases, "rhythm")
    res = {}
    for pool in pools:
        for w in weights:
            per = []
            for qf in rotations:
                qi = np.flatnonzero(np.isin(folds, qf))
                ai = np.flatnonzero(np.isin(folds, [f for f in range(1, 9) if f not in qf]))
                idx, sims = ranked(vectors[qi], vectors[ai], feats[qi], feats[ai], w, pool)
                m = retrieval_metrics([sup[i] for i in qi], [rhy[i] for i in qi], [sup[i] for i in ai],
                                      [rhy[i] for i in ai], idx, sims)
                per.append({k: m[k] for k in METRICS})
            res[(float(w), int(pool))] = {k: (float(np.mean([p[k] for p in per])), float(np.std([p[k] for p in per])))
                                          for k in METRICS}
    return res


def add_to_bundle(bundle_dir, measurements_by_id: dict, weight: float, pool: int, cv: dict | None = None) -> None:
    """Write ``measured`` into each case of ``cases.jsonl`` and ``rerank`` into the manifest (hashes updated)."""
    from edge.atomicio import atomic_write
    import hashlib
    d = Path(bundle_dir)
    lines = []
    for line in (d / "cases.jsonl").read_text(encoding="utf-8").splitlines():
        c = json.loads(line)
        c["measured"] = measurements_by_id[c["case_id"]]
        lines.append(json.dumps(c, separators=(",", ":"), ensure_ascii=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    atomic_write(d / "cases.jsonl", data)
    man = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    man["files"]["cases.jsonl"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    man["rerank"] = {"weight": float(weight), "pool": int(pool), "features": list(("ln_hr", "irregularity", "rr_cv")),
                     "chosen_by": "cross-validation over PTB-XL folds 1-8 (4 rotations of 2 query folds)",
                     **({"cv": cv} if cv else {})}
    atomic_write(d / "manifest.json", (json.dumps(man, indent=1) + "\n").encode("utf-8"))


def features_of(measured: list[dict]) -> np.ndarray:
    return np.stack([features(m) for m in measured])


GRID_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
GRID_POOLS = (50, 100)
MAX_AUROC_LOSS = 0.005   # the chosen weight may cost at most this much CV kNN_macroAUROC against weight 0


def choose(bundle_dir, archive, weights=GRID_WEIGHTS, pools=GRID_POOLS, max_auroc_loss: float = MAX_AUROC_LOSS):
    """Measure the archive, cross-validate every (weight, pool) on folds 1-8 with the bundle's own index vectors
    (what the device searches), and choose: the highest CV mean rhythmP@10_nonSR among the settings whose CV mean
    kNN_macroAUROC is within ``max_auroc_loss`` of cosine alone (ties: the smaller weight, then pool). Then, once,
    fold 9 against folds 1-8 for the chosen setting and for cosine alone. Returns a dict (and the measurements)."""
    from edge.bundle import load_bundle
    b = load_bundle(bundle_dir, allow_unsigned=True)
    pos = {c["case_id"]: i for i, c in enumerate(b.cases)}
    missing = [i for i in archive.ids if i not in pos]
    if missing:
        raise ValueError(f"{len(missing)} archive cases are not in the bundle (e.g. {missing[0]})")
    vecs = np.stack([b.index.item(pos[i]) for i in archive.ids])
    measured = case_measurements(archive)
    feats = features_of(measured)
    cases = [{"fold": c.fold, "super_class": c.super_class, "rhythm": c.rhythm} for c in archive.cases]
    cv = cross_validate(vecs, cases, feats, weights, pools)
    base = cv[(0.0, pools[0])]["kNN_macroAUROC"][0] if (0.0, pools[0]) in cv else max(
        v["kNN_macroAUROC"][0] for v in cv.values())
    ok = [(k, v) for k, v in cv.items() if v["kNN_macroAUROC"][0] >= base - max_auroc_loss]
    (w, pool), _ = max(ok, key=lambda kv: (round(kv[1]["rhythmP@10_nonSR"][0], 4), -kv[0][0], -kv[0][1]))
    fold9 = {}
    folds = np.array([c.fold for c in archive.cases])
    qi, ai = np.flatnonzero(folds == 9), np.flatnonzero((folds >= 1) & (folds <= 8))
    sup, rhy = _labels(cases, "super_class"), _labels(cases, "rhythm")
    for name, ww in (("cosine", 0.0), ("measured rerank", w)):
        idx, sims = ranked(vecs[qi], vecs[ai], feats[qi], feats[ai], ww, pool)
        m = retrieval_metrics([sup[i] for i in qi], [rhy[i] for i in qi], [sup[i] for i in ai], [rhy[i] for i in ai],
                              idx, sims)
        fold9[name] = {k: m[k] for k in METRICS}
    table = {f"w={k[0]:g} pool={k[1]}": {m: [round(a, 4), round(s, 4)] for m, (a, s) in v.items()}
             for k, v in cv.items()}
    return {"weight": w, "pool": pool, "cv": table, "fold9": fold9,
            "rule": f"max CV rhythmP@10_nonSR with CV kNN_macroAUROC >= weight-0 value - {max_auroc_loss}"}, \
        dict(zip(archive.ids, measured))
