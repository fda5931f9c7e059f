"""Archive measurements for the bundle, and the cross-validated choice of the re-ranking weight.

``case_measurements`` measures every archive case from its own signal (the device's :func:`edge.measure.measure`,
on the archive's 100 Hz z-scored signals: rate and regularity are exact there, intervals coarse, the axis absent).
``cross_validate`` rotates queries over folds 1-8 (four rotations, each holding out two folds as queries against the
other six) and scores every (weight, pool, rhythm bonus) of a grid with the EVALUATION.md metrics, ranking with the
device's own :class:`edge.rerank.Ranker` over exact-cosine pools; fold 9 is not looked at. ``choose`` applies the
documented rule and then looks at fold 9 once. ``add_to_bundle`` writes the measurements into the bundle's
``cases.jsonl`` (field ``measured``) and the chosen setting into the manifest's ``rerank`` section, updating the
file hashes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_write
from edge.bundle import load_bundle
from edge.index import cosines
from edge.leads import LEADS12
from edge.measure import measure
from edge.record import Record
from edge.rerank import FEATURES, Ranker, Setting

from .evaluate import ROTATIONS, l2n, mean_sd, retrieval_metrics
from .evaluate import cross_validate as _cv_rotations
from .index_build import topk_search

__all__ = ["case_measurements", "cross_validate", "ranked", "choose", "ROTATIONS", "add_to_bundle", "add_choice"]

METRICS = ("P@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")
GRID_WEIGHTS = (0.0, 0.1, 0.2, 0.3)
GRID_POOLS = (50,)
GRID_BONUSES = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0)
MAX_AUROC_LOSS = 0.01  # the chosen setting may cost at most this much CV kNN_macroAUROC against cosine alone


def case_measurements(archive) -> list[dict]:
    """The measurements (``Measurements.to_dict()``) of every archive case, in archive order."""
    out = []
    for i in range(len(archive)):
        x = np.asarray(archive.signal(i), dtype=np.float64)
        rec = Record(x, float(archive.fs), LEADS12, archive.ids[i])
        out.append(measure(rec, duration_s=x.shape[0] / float(archive.fs), notch_hz=None).to_dict())
    return out


def ranked(q: np.ndarray, a: np.ndarray, q_measured, a_cases, setting: Setting | None, k: int = 10):
    """Top-k (indices into ``a``, cosines) per query: the ``setting.pool`` nearest by exact cosine ordered by
    :class:`edge.rerank.Ranker` (``setting`` None: plain cosine order). ``q_measured``: the queries' measurement
    dicts; ``a_cases``: the archive side's dicts (``measured``, ``rhythm``, ``super_class``, ``statements``)."""
    qn, an = l2n(q), l2n(a)
    idx, part = topk_search(an, qn, setting.pool if setting else k)
    if setting is None or not (setting.weight or setting.rhythm_bonus):
        return idx[:, :k].astype(np.int64), part[:, :k]
    a64 = an.astype(np.float64)
    rk = Ranker(a_cases, lambda vec, ids: cosines(a64, vec, ids), setting)
    out_i, out_s = np.empty((len(q), k), dtype=np.int64), np.empty((len(q), k))
    for r in range(len(q)):
        out_i[r], out_s[r], _, _ = rk.rank(qn[r], idx[r], part[r], q_measured[r], k)
    return out_i, out_s


def _labels(cases, field):
    return [frozenset(getattr(c, field) if not isinstance(c, dict) else c.get(field, ())) for c in cases]


def _metrics(vectors, cases, measured, qi, ai, setting):
    sup, rhy = _labels(cases, "super_class"), _labels(cases, "rhythm")
    a_cases = [
        {
            "measured": measured[i],
            "rhythm": tuple(rhy[i]),
            "super_class": tuple(sup[i]),
            "statements": cases[i].get("statements", ""),
        }
        for i in ai
    ]
    idx, sims = ranked(vectors[qi], vectors[ai], [measured[i] for i in qi], a_cases, setting)
    m = retrieval_metrics(
        [sup[i] for i in qi], [rhy[i] for i in qi], [sup[i] for i in ai], [rhy[i] for i in ai], idx, sims
    )
    return {k: m[k] for k in METRICS}


def cross_validate(vectors: np.ndarray, cases, measured, settings, rotations=ROTATIONS) -> dict:
    """{Setting: {metric: (mean, SD) over the rotations}}. ``cases``: dicts with ``fold``, ``super_class``,
    ``rhythm`` (and ``statements``); ``vectors`` (n, D) the archive embeddings; ``measured`` their measurement
    dicts. Folds 1-8 only."""
    folds = np.array([c["fold"] for c in cases])

    def score(st):
        return lambda qi, ai: _metrics(vectors, cases, measured, qi, ai, st)

    return {st: mean_sd(_cv_rotations(score(st), folds, rotations), METRICS) for st in settings}


def add_to_bundle(
    bundle_dir, measurements_by_id: dict, weight: float, pool: int, cv: dict | None = None, rhythm_bonus: float = 0.0
) -> None:
    """Write ``measured`` into each case of ``cases.jsonl`` and ``rerank`` into the manifest (hashes updated)."""
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
    man["rerank"] = {
        "weight": float(weight),
        "pool": int(pool),
        "rhythm_bonus": float(rhythm_bonus),
        "features": list(FEATURES),
        "chosen_by": "cross-validation over PTB-XL folds 1-8 (4 rotations of 2 query folds)",
        **({"cv": cv} if cv else {}),
    }
    atomic_write(d / "manifest.json", (json.dumps(man, indent=1) + "\n").encode("utf-8"))


def add_choice(bundle_dir, choice: dict, measured: dict) -> None:
    """Write what :func:`choose` chose (and its measurements by case id) into the bundle (:func:`add_to_bundle`)."""
    add_to_bundle(
        bundle_dir,
        measured,
        choice["weight"],
        choice["pool"],
        {"rule": choice["rule"], "fold9": choice["fold9"]},
        rhythm_bonus=choice["rhythm_bonus"],
    )


def _name(st: Setting) -> str:
    return f"w={st.weight:g} pool={st.pool} bonus={st.rhythm_bonus:g}"


def choose(
    bundle_dir,
    archive,
    weights=GRID_WEIGHTS,
    pools=GRID_POOLS,
    bonuses=GRID_BONUSES,
    max_auroc_loss: float = MAX_AUROC_LOSS,
):
    """Measure the archive, cross-validate every (weight, pool, rhythm bonus) on folds 1-8 with the bundle's own
    index vectors (what the device searches), and choose: the highest CV mean rhythmP@10_nonSR among the settings
    whose CV mean kNN_macroAUROC is within ``max_auroc_loss`` of cosine alone (ties: the smaller bonus, weight, pool).
    Then, once, fold 9 against folds 1-8 for the chosen setting and for cosine alone. Returns a dict (``weight``,
    ``pool``, ``rhythm_bonus``, ``cv`` table, ``fold9``, ``rule``) and the measurements by case id."""
    b = load_bundle(bundle_dir, allow_unsigned=True)
    pos = {c["case_id"]: i for i, c in enumerate(b.cases)}
    missing = [i for i in archive.ids if i not in pos]
    if missing:
        raise ValueError(f"{len(missing)} archive cases are not in the bundle (e.g. {missing[0]})")
    vecs = np.stack([b.index.item(pos[i]) for i in archive.ids])
    measured = case_measurements(archive)
    cases = [
        {
            "fold": c.fold,
            "super_class": tuple(c.super_class),
            "rhythm": tuple(c.rhythm),
            "statements": getattr(c, "statements", "") or "",
        }
        for c in archive.cases
    ]
    settings = [Setting(float(w), int(p), float(bo)) for p in pools for w in weights for bo in bonuses]
    cv = cross_validate(vecs, cases, measured, settings)
    cosine = Setting(0.0, int(pools[0]), 0.0)
    base = cv[cosine]["kNN_macroAUROC"][0] if cosine in cv else max(v["kNN_macroAUROC"][0] for v in cv.values())
    ok = [(k, v) for k, v in cv.items() if v["kNN_macroAUROC"][0] >= base - max_auroc_loss]
    best, _ = max(
        ok, key=lambda kv: (round(kv[1]["rhythmP@10_nonSR"][0], 4), -kv[0].rhythm_bonus, -kv[0].weight, -kv[0].pool)
    )
    folds = np.array([c["fold"] for c in cases])
    qi, ai = np.flatnonzero(folds == 9), np.flatnonzero((folds >= 1) & (folds <= 8))
    fold9 = {}
    if qi.size and ai.size:
        for name, st in (("cosine", None), ("measured rerank", best)):
            fold9[name] = _metrics(vecs, cases, measured, qi, ai, st)
    table = {_name(k): {m: [round(a, 4), round(s, 4)] for m, (a, s) in v.items()} for k, v in cv.items()}
    return {
        "weight": best.weight,
        "pool": best.pool,
        "rhythm_bonus": best.rhythm_bonus,
        "cv": table,
        "fold9": fold9,
        "chosen": _name(best),
        "rule": f"max CV rhythmP@10_nonSR with CV kNN_macroAUROC >= cosine-alone value - {max_auroc_loss}",
    }, dict(zip(archive.ids, measured))
