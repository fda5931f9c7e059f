"""Retrieval evaluation, exactly as ``shared/docs/EVALUATION.md`` defines it.

Split: queries = fold 9, archive = folds 1-8 (a shipped bundle: archive folds 1-9, queries fold 10).
Relevance: a retrieved case is relevant when it shares at least one diagnostic superclass with the
query; queries without a superclass are skipped. Rhythm is judged separately (``rhythmP@10_nonSR``).

Every variant is an embedding: one (N_cases, D) matrix (queries and archive embedded alike), or a
tuple (query_emb, archive_emb) when queries are embedded differently (a reduced lead set). Search is
exact cosine, so the figures measure the embedding, not the index (whose recall is measured apart).

Choosing without fold 9 (EVALUATION.md, "cross-validation"): :func:`cross_validate` rotates the queries over
folds 1-8 (:data:`ROTATIONS`: four rotations, each holding out two folds as queries against the other six) and
:func:`mean_sd` summarises every metric as mean and SD over the rotations; ``evaluate --cv`` prints that table.
The external set (``evaluate --external ludb-dev``) goes through the device's query path
(:meth:`edge.retrieval.Retriever.query_record`, what ``ecgret query --json`` answers): :func:`external_metrics`
scores the answer's rhythm and the consensus's superclass support against the cardiologists' labels.
"""
from __future__ import annotations

import hashlib
import json
from typing import Callable, Mapping

import numpy as np

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
K = 10
SIM_FLOOR = 1e-3
METRICS: tuple[str, ...] = ("P@1", "P@5", "P@10", "P@10_exact", "mAP@10", "macroP@10", "kNN_macroAUROC",
                            "rhythmP@10_nonSR")


def default_split(archive, query_folds=(9,), archive_folds=tuple(range(1, 9))) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, archive indices) for the test protocol: fold 9 against folds 1-8."""
    return archive.select(folds=query_folds), archive.select(folds=archive_folds)


# The cross-validation rotations over folds 1-8 (fold 9 is the test fold, looked at once per bundle): each
# rotation's two folds are the queries, the other six folds of CV_FOLDS the archive.
ROTATIONS: tuple[tuple[int, ...], ...] = ((1, 2), (3, 4), (5, 6), (7, 8))
CV_FOLDS: tuple[int, ...] = tuple(range(1, 9))


def cv_splits(folds, rotations=ROTATIONS, pool=CV_FOLDS) -> list[tuple[tuple[int, ...], np.ndarray, np.ndarray]]:
    """Per rotation: (query folds, query indices, archive indices) into an array of case ``folds``; the archive
    of a rotation is every case of ``pool`` outside its query folds."""
    folds = np.asarray(folds)
    out = []
    for qf in rotations:
        qf = tuple(int(f) for f in qf)
        if not set(qf) <= set(pool):
            raise ValueError(f"rotation {qf} holds folds outside {tuple(pool)}")
        out.append((qf, np.flatnonzero(np.isin(folds, qf)),
                    np.flatnonzero(np.isin(folds, [f for f in pool if f not in qf]))))
    return out


def cross_validate(score: Callable[[np.ndarray, np.ndarray], Mapping], folds, rotations=ROTATIONS,
                   pool=CV_FOLDS) -> list:
    """``score(query_idx, archive_idx)`` on every rotation of :func:`cv_splits`, in rotation order (summarise
    with :func:`mean_sd`). The one CV loop of the toolkit (the re-ranking choice uses it too)."""
    return [score(qi, ai) for _, qi, ai in cv_splits(folds, rotations, pool)]


def mean_sd(per_rotation, metrics=METRICS) -> dict[str, tuple[float, float]]:
    """{metric: (mean, SD)} over the rotations' metric dicts (SD of the population of rotations, ``np.std``;
    NaN-free rotations only)."""
    out = {}
    for m in metrics:
        v = np.array([float(p[m]) for p in per_rotation], dtype=np.float64)
        v = v[np.isfinite(v)]
        out[m] = (float(v.mean()), float(v.std())) if v.size else (float("nan"), float("nan"))
    return out


def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def top_k(q: np.ndarray, a: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: (indices into ``a`` (nq, k), similarities (nq, k)), best first."""
    s = l2n(q) @ l2n(a).T
    k = min(k, s.shape[1])
    idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(s, idx, axis=1)
    order = np.argsort(-part, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties); NaN if one class is absent."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores)[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):  # mid-ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def retrieval_metrics(q_labels: list[frozenset], q_rhythm: list[frozenset], a_labels: list[frozenset],
                      a_rhythm: list[frozenset], idx: np.ndarray, sims: np.ndarray) -> dict:
    """Every metric of EVALUATION.md from the top-k lists (``idx`` into the archive, best first)."""
    k = idx.shape[1]
    n_rel_archive = {}
    keep = [i for i, l in enumerate(q_labels) if l]
    p1, p5, p10, p10x, ap = [], [], [], [], []
    per_class_hits = {c: [] for c in SUPERCLASSES}
    for qi in keep:
        ql = q_labels[qi]
        rel = np.array([bool(ql & a_labels[j]) for j in idx[qi]], dtype=float)
        exact = np.array([ql == a_labels[j] for j in idx[qi]], dtype=float)
        p1.append(rel[:1].mean())
        p5.append(rel[:5].mean())
        p10.append(rel[:10].mean())
        p10x.append(exact[:10].mean())
        key = ql
        if key not in n_rel_archive:
            n_rel_archive[key] = sum(1 for al in a_labels if ql & al)
        denom = min(k, n_rel_archive[key])
        prec_at = np.cumsum(rel) / np.arange(1, k + 1)
        ap.append(float((prec_at * rel).sum() / denom) if denom else 0.0)
        for c in ql:
            if c in per_class_hits:
                per_class_hits[c].append(np.mean([c in a_labels[j] for j in idx[qi]]))
    s = np.clip(sims, SIM_FLOOR, None)
    per_class = {}
    for c in SUPERCLASSES:
        score = np.array([(s[qi] * np.array([c in a_labels[j] for j in idx[qi]])).sum() / s[qi].sum()
                          for qi in keep])
        lab = np.array([c in q_labels[qi] for qi in keep])
        per_class[c] = {"P@10": float(np.mean(per_class_hits[c])) if per_class_hits[c] else float("nan"),
                        "AUROC": auroc(score, lab), "n_queries": int(lab.sum())}
    non_sr = [i for i, r in enumerate(q_rhythm) if r and r != frozenset({"SR"})]
    rhythm = [np.mean([bool(q_rhythm[qi] & a_rhythm[j]) for j in idx[qi]]) for qi in non_sr]
    return {
        "P@1": float(np.mean(p1)), "P@5": float(np.mean(p5)), "P@10": float(np.mean(p10)),
        "P@10_exact": float(np.mean(p10x)), "mAP@10": float(np.mean(ap)),
        "macroP@10": float(np.nanmean([per_class[c]["P@10"] for c in SUPERCLASSES])),
        "kNN_macroAUROC": float(np.nanmean([per_class[c]["AUROC"] for c in SUPERCLASSES])),
        "rhythmP@10_nonSR": float(np.mean(rhythm)) if rhythm else float("nan"),
        "per_class": per_class, "n_queries": len(keep), "n_queries_nonSR": len(non_sr),
    }


def _labels(archive, indices, field: str) -> list[frozenset]:
    return [frozenset(getattr(archive.cases[int(i)], field)) for i in indices]


def evaluate(archive, embeddings: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]],
             query_idx: np.ndarray, archive_idx: np.ndarray, k: int = K) -> dict[str, dict]:
    """Evaluate each variant. A value is an (N_cases, D) matrix, or (query_emb, archive_emb) where
    query_emb has one row per case (N_cases, D) or one per query (len(query_idx), D), and archive_emb
    likewise (N_cases, D) or (len(archive_idx), D)."""
    query_idx, archive_idx = np.asarray(query_idx), np.asarray(archive_idx)
    ql, qr = _labels(archive, query_idx, "super_class"), _labels(archive, query_idx, "rhythm")
    al, ar = _labels(archive, archive_idx, "super_class"), _labels(archive, archive_idx, "rhythm")
    n = len(archive)
    out = {}
    for name, emb in embeddings.items():
        qe, ae = emb if isinstance(emb, tuple) else (emb, emb)
        qe = qe[query_idx] if len(qe) == n and len(qe) != len(query_idx) else qe
        ae = ae[archive_idx] if len(ae) == n and len(ae) != len(archive_idx) else ae
        idx, sims = top_k(qe, ae, k)
        out[name] = retrieval_metrics(ql, qr, al, ar, idx, sims)
    return out


def evaluate_cv(archive, embeddings: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]],
                rotations=ROTATIONS, pool=CV_FOLDS, k: int = K) -> dict[str, dict]:
    """Every variant of :func:`evaluate` on every rotation of :func:`cv_splits` (queries = a rotation's folds,
    archive = the other folds of ``pool``). Values must hold one row per archive case (``(N_cases, D)`` or a
    pair of them). Returns {variant: {"mean": {metric: m}, "sd": {metric: s}, "per_rotation": [metrics]}};
    the per-class AUROCs are summarised too (``AUROC_<class>``)."""
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    per = cross_validate(lambda qi, ai: evaluate(archive, embeddings, qi, ai, k), folds, rotations, pool)
    names = list(per[0]) if per else []
    cls = tuple(f"AUROC_{c}" for c in SUPERCLASSES)
    out = {}
    for name in names:
        rows = [{**p[name], **{f"AUROC_{c}": p[name]["per_class"][c]["AUROC"] for c in SUPERCLASSES}} for p in per]
        ms = mean_sd(rows, METRICS + cls)
        out[name] = {"mean": {m: v[0] for m, v in ms.items()}, "sd": {m: v[1] for m, v in ms.items()},
                     "per_rotation": [p[name] for p in per]}
    return out


def cv_table(results: Mapping[str, dict], heading: str = "", metrics=METRICS) -> str:
    """Markdown: one row a variant, ``mean ± SD`` over the rotations in each metric column."""
    lines = [heading, ""] if heading else []
    lines.append("| variant | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for name, r in results.items():
        cells = ["—" if not np.isfinite(r["mean"][x]) else f"{r['mean'][x]:.3f} ± {r['sd'][x]:.3f}" for x in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cv_heading(archive, rotations=ROTATIONS, pool=CV_FOLDS, bundle_hash: str | None = None) -> str:
    """The CV table's heading: rotations, query and archive sizes per rotation, bundle hash."""
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    sp = cv_splits(folds, rotations, pool)
    nq = "/".join(str(len(qi)) for _, qi, _ in sp)
    na = "/".join(str(len(ai)) for _, _, ai in sp)
    rot = " ".join("+".join(map(str, qf)) for qf, _, _ in sp)
    return (f"Cross-validated retrieval over folds {','.join(map(str, pool))}: {len(sp)} rotations (query folds "
            f"{rot}) against the other folds; {nq} queries against {na} cases; mean ± SD over the rotations; k=10; "
            f"exact cosine search" + (f"; bundle {bundle_hash[:12]}" if bundle_hash else ""))


def cv_json(results: Mapping[str, dict], archive, rotations=ROTATIONS, pool=CV_FOLDS, bundle_hash=None) -> dict:
    """The JSON of ``evaluate --cv``: the rotations with their sizes and, per variant, mean, SD and every
    rotation's metrics (per class too)."""
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    return {"protocol": "shared/docs/EVALUATION.md (cross-validation over folds 1-8)", "k": K,
            "rotations": [{"query_folds": list(qf), "archive_folds": [f for f in pool if f not in qf],
                           "n_queries": int(len(qi)), "n_archive": int(len(ai))}
                          for qf, qi, ai in cv_splits(folds, rotations, pool)],
            "bundle_sha256": bundle_hash, "variants": dict(results)}


def evaluate_cross_modal(archive, image_emb_queries: np.ndarray, text_emb_archive: np.ndarray,
                         query_idx: np.ndarray, archive_idx: np.ndarray, k: int = K) -> dict:
    """ECG -> report retrieval: query image embeddings against the archive cases' text embeddings
    (both in the shared projection space); same relevance rule and metrics."""
    return evaluate(archive, {"ecg->report": (image_emb_queries, text_emb_archive)}, query_idx, archive_idx, k)["ecg->report"]


# ----------------------------------------------------------------------------- the external set (ludb-dev)

EXTERNAL_METRICS: tuple[str, ...] = ("rhythm_all", "rhythm_nonSR", "rhythm_balanced", "rhythm_cases_all",
                                     "super_macroAUROC")


def external_answers(cases, retriever, leads=None, progress: bool = False) -> list[dict]:
    """Answer every external case (:class:`convert.ludb.LudbCase`: raw record, cardiologists' rhythm and
    superclasses) through the device's query path, ``retriever.query_record`` on the record read as
    ``ecgret query`` reads it. One row per case: the labels, ``ok``, the answer's rhythm (``rhythm.label``), the
    similar cases' top rhythm, the consensus superclass supports and the top-10 case ids; a record the device
    refuses gives ``ok: false`` and its one-line error."""
    from edge.errors import EcgretError
    from edge.io import read_record
    from edge.signal import PAD_S
    max_s = retriever.duration_s + PAD_S          # what `ecgret query` reads
    it = list(cases)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="external", unit="record", leave=False)
    rows = []
    for c in it:
        row = {"record": c.record, "rhythm": c.rhythm, "super_class": list(c.super_class)}
        try:
            res = retriever.query_record(read_record(c.path.with_suffix(".hea"), max_seconds=max_s), leads=leads)
        except EcgretError as e:
            row.update(ok=False, error=str(e))
        else:
            row.update(ok=True, answer_rhythm=res.rhythm.label if res.rhythm is not None else None,
                       retrieved_rhythm=res.consensus.rhythm[0].label if res.consensus.rhythm else None,
                       support={v.label: float(v.support) for v in res.consensus.super_class},
                       matches=[m.case_id for m in res.matches])
        rows.append(row)
    return rows


def rhythm_agreement(truth, answer) -> dict:
    """Agreement of answered rhythms with the reference (PTB-XL codes; a missing answer counts as wrong): over
    all records, over the non-sinus ones (reference not SR) and balanced (the mean of the per-rhythm
    accuracies). Records without a reference rhythm are left out."""
    pairs = [(t, a) for t, a in zip(truth, answer) if t is not None]
    per: dict[str, list[bool]] = {}
    for t, a in pairs:
        per.setdefault(t, []).append(t == a)
    non = [t == a for t, a in pairs if t != "SR"]
    return {"all": float(np.mean([t == a for t, a in pairs])) if pairs else float("nan"),
            "non_sinus": float(np.mean(non)) if non else float("nan"), "n": len(pairs), "n_non_sinus": len(non),
            "balanced": float(np.mean([np.mean(v) for v in per.values()])) if per else float("nan"),
            "per_rhythm": {k: [int(sum(v)), len(v)] for k, v in sorted(per.items())}}


def external_metrics(rows: list[dict]) -> dict:
    """The external-set figures of EVALUATION.md from :func:`external_answers` rows: the answer's rhythm
    agreement (all, non-sinus, balanced; refused records count as wrong), the similar cases' top rhythm alone
    (``rhythm_cases_all``), and the AUROC per superclass of the consensus support (0 where the consensus does not
    name the class) across the answered records, with their macro mean over the classes both present and absent
    (``super_macroAUROC``)."""
    ok = [r for r in rows if r.get("ok")]
    ans = rhythm_agreement([r["rhythm"] for r in rows], [r.get("answer_rhythm") for r in rows])
    cases = rhythm_agreement([r["rhythm"] for r in rows], [r.get("retrieved_rhythm") for r in rows])
    per_class = {}
    for c in SUPERCLASSES:
        score = np.array([r["support"].get(c, 0.0) for r in ok])
        lab = np.array([c in r["super_class"] for r in ok])
        per_class[c] = {"AUROC": auroc(score, lab), "n_records": int(lab.sum())}
    aucs = [v["AUROC"] for v in per_class.values() if np.isfinite(v["AUROC"])]
    return {"rhythm_all": ans["all"], "rhythm_nonSR": ans["non_sinus"], "rhythm_balanced": ans["balanced"],
            "rhythm_cases_all": cases["all"], "super_macroAUROC": float(np.mean(aucs)) if aucs else float("nan"),
            "per_class": per_class, "rhythm": ans, "rhythm_cases": cases, "n_records": len(rows),
            "n_answered": len(ok), "refused": {r["record"]: r["error"] for r in rows if not r.get("ok")}}


def external_table(results: Mapping[str, dict], heading: str = "") -> str:
    """Markdown: one row a variant; rhythm agreement, the cases' rhythm alone, superclass AUROCs."""
    cols = EXTERNAL_METRICS + tuple(f"AUROC {c}" for c in SUPERCLASSES)
    lines = [heading, ""] if heading else []
    lines.append("| variant | answered | " + " | ".join(cols) + " |")
    lines.append("|---|---|" + "---|" * len(cols))
    f = (lambda v: "—" if v is None or not np.isfinite(v) else f"{v:.3f}")
    for name, m in results.items():
        cells = [f(m[x]) for x in EXTERNAL_METRICS] + [f(m["per_class"][c]["AUROC"]) for c in SUPERCLASSES]
        lines.append(f"| {name} | {m['n_answered']}/{m['n_records']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def external_variants(external_dir, bundles, lead_sets=("12",), threads=None, progress: bool = True) -> dict:
    """{variant: external_metrics + the per-record rows} for each bundle and query lead set on an external
    LUDB-format folder (``cases.csv`` + ``data/``), queried through :class:`edge.retrieval.Retriever` without
    the local overlay."""
    from edge.bundle import load_bundle
    from edge.leads import LEAD_SETS, parse_lead_set
    from edge.retrieval import Retriever

    from .ludb import load_cases
    cases = load_cases(external_dir)
    out = {}
    for bp in bundles:
        b = load_bundle(bp, threads=threads)
        r = Retriever(b)
        for ls in lead_sets:
            leads = None if ls == "12" else (LEAD_SETS.get(ls) or parse_lead_set(ls))
            rows = external_answers(cases, r, leads, progress)
            m = external_metrics(rows)
            m.update(records=rows, bundle_sha256=b.hash, leads=ls)
            out[f"{b.name} int8" + ("" if ls == "12" else f" [{ls}]")] = m
    return out


# ----------------------------------------------------------------------------- baselines

def random_embeddings(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """The chance level: seeded random unit vectors."""
    return l2n(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def raw_signal_embeddings(archive, indices: np.ndarray | None = None, present: np.ndarray | None = None,
                          chunk: int = 2048) -> np.ndarray:
    """The preprocessed signal itself: 12 leads at 25 Hz (mean of 4 samples), flattened, centred
    (each vector minus its own mean, so cosine is Pearson correlation). ``present`` (12,) zeroes the
    leads a reduced query lacks."""
    indices = np.arange(len(archive)) if indices is None else np.asarray(indices)
    out = []
    for s in range(0, len(indices), chunk):
        x = archive.batch(indices[s:s + chunk])                     # (b, T, 12)
        b, t, _ = x.shape
        x = x[:, : t - t % 4].reshape(b, t // 4, 4, 12).mean(axis=2)
        if present is not None:
            x = x * np.asarray(present, dtype=np.float32)[None, None, :]
        v = x.reshape(b, -1)
        out.append(v - v.mean(axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def baselines(archive, dim: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    return {"random": random_embeddings(len(archive), dim, seed), "raw-signal": raw_signal_embeddings(archive)}


# ----------------------------------------------------------------------------- output

def markdown_table(results: Mapping[str, dict], heading: str = "", metrics=METRICS) -> str:
    lines = [heading, ""] if heading else []
    lines.append("| variant | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for name, m in results.items():
        cells = ["—" if (v := m.get(x)) is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"
                 for x in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heading(archive, query_idx, archive_idx, bundle_hash: str | None = None) -> str:
    qf = sorted({archive.cases[int(i)].fold for i in query_idx if archive.cases[int(i)].fold is not None})
    af = sorted({archive.cases[int(i)].fold for i in archive_idx if archive.cases[int(i)].fold is not None})
    return (f"Retrieval on {len(query_idx)} queries (folds {','.join(map(str, qf))}) against an archive of "
            f"{len(archive_idx)} cases (folds {','.join(map(str, af))}); k=10; exact cosine search"
            + (f"; bundle {bundle_hash[:12]}" if bundle_hash else ""))


def results_json(results: Mapping[str, dict], archive, query_idx, archive_idx, bundle_hash=None, extra=None) -> dict:
    return {"protocol": "shared/docs/EVALUATION.md", "k": K, "n_queries": int(len(query_idx)),
            "n_archive": int(len(archive_idx)),
            "query_folds": sorted({c.fold for c in (archive.cases[int(i)] for i in query_idx)} - {None}),
            "archive_folds": sorted({c.fold for c in (archive.cases[int(i)] for i in archive_idx)} - {None}),
            "bundle_sha256": bundle_hash, "variants": dict(results), **(extra or {})}


def bundle_hash(path) -> str:
    """sha256 of a bundle's manifest.json (which itself pins every file's sha256)."""
    from pathlib import Path
    return hashlib.sha256((Path(path) / "manifest.json").read_bytes()).hexdigest()


EmbedFn = Callable[[object, np.ndarray, "np.ndarray | None"], np.ndarray]


def dump(results: dict, path) -> None:
    from pathlib import Path
    Path(path).write_text(json.dumps(results, indent=2, default=float) + "\n")


# ----------------------------------------------------------------------------- pluggable embedders

def case_image(archive, i: int, config, leads: tuple[str, ...] | None = None) -> np.ndarray:
    """Image archive case i as the device would: the leads outside ``leads`` are treated as missing."""
    from edge.imaging import ecg_image
    from edge.leads import LEADS12
    x = archive.signal(i)
    present = np.any(x != 0, axis=0)
    if leads is not None:
        present &= np.isin(np.array(LEADS12), list(leads))
        x = np.where(present[None, :], x, 0.0).astype(np.float32)
    n = archive.cases[int(i)].n_samples or None
    return ecg_image(x, present, config, n_valid=n)


def encoder_embeddings(archive, indices, encode: Callable[[np.ndarray], np.ndarray], config,
                       leads: tuple[str, ...] | None = None, progress: bool = False) -> np.ndarray:
    """Embed cases with any image encoder (``encode(image) -> (D,)``), e.g. a bundle's TFLite encoder."""
    it = list(np.asarray(indices))
    if progress:
        try:
            from tqdm import tqdm
            it = tqdm(it, desc="embed", unit="case", leave=False)
        except ImportError:
            pass
    return np.stack([encode(case_image(archive, i, config, leads)) for i in it]).astype(np.float32)


def bundle_variants(archive, bundle_path, query_idx, archive_idx, lead_sets=("12",), threads=None,
                    progress=True) -> tuple[dict, str]:
    """The int8 encoder of a bundle through the device interpreter: one variant per query lead set
    (archive always 12 leads). The archive side is what the device searches: the bundle's own index items
    where every archive case is in the bundle (they may carry the case's report as well as its ECG, see
    ``manifest.index.items``), else the archive's ECGs embedded by the encoder.
    Returns ({name: (q_emb, a_emb)}, bundle hash)."""
    from edge.bundle import load_bundle
    from edge.leads import LEAD_SETS, parse_lead_set
    b = load_bundle(bundle_path, threads=threads)
    enc, cfg = b.encoder, b.imaging_config
    pos = {c["case_id"]: i for i, c in enumerate(b.cases)}
    ids = [archive.ids[int(i)] for i in archive_idx]
    if all(c in pos for c in ids):
        a_emb = np.stack([np.asarray(b.index.item(pos[c]), np.float32) for c in ids])
    else:
        a_emb = encoder_embeddings(archive, archive_idx, enc.encode, cfg, progress=progress)
    out = {}
    for ls in lead_sets:
        leads = LEAD_SETS.get(ls) or parse_lead_set(ls)
        q_emb = encoder_embeddings(archive, query_idx, enc.encode, cfg, leads=None if ls == "12" else leads,
                                   progress=progress)
        out[f"{b.name} int8" + ("" if ls == "12" else f" [{ls}]")] = (q_emb, a_emb)
    return out, b.hash


def _expand(n: int, idx: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Rows ``emb`` of cases ``idx`` placed into an (n, D) matrix in archive order (zeros elsewhere)."""
    full = np.zeros((n, emb.shape[1]), np.float32)
    full[np.asarray(idx)] = emb
    return full


def _evaluate_command():
    import click

    @click.command("evaluate")
    @click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
                  help="PTB-XL subset folder (default: ../shared/data/ptbxl-subset or $ECGRET_DATA).")
    @click.option("--archive", "archive_dir", type=click.Path(file_okay=False), default=None,
                  help="A case archive folder (instead of --data).")
    @click.option("--bundle", "bundles", multiple=True, type=click.Path(exists=True, file_okay=False),
                  help="Evaluate a bundle's encoder through the device interpreter (repeatable).")
    @click.option("--embeddings", "emb_files", multiple=True, metavar="NAME=FILE.npy",
                  help="Any embedding: an (N_cases, D) .npy in archive order (repeatable).")
    @click.option("--lead-sets", default="12", show_default=True,
                  help="Query lead sets for bundle variants, comma-separated (12, limb6, 3, I, II).")
    @click.option("--cv", is_flag=True,
                  help="Cross-validate over folds 1-8 instead of the fold-9 test: 4 rotations, each holding out 2 "
                       "folds as queries against the other 6; mean ± SD of every metric. Fold 9 is not used.")
    @click.option("--external", "external_dir", type=click.Path(exists=True, file_okay=False), default=None,
                  help="An external LUDB-format set (cases.csv + data/, e.g. ../shared/data/ludb-dev): every "
                       "--bundle answers its raw records through the device query path (what `ecgret query "
                       "--json` answers); rhythm agreement and the consensus's superclass AUROC.")
    @click.option("--query-folds", default=None, help="Query folds of the test split  [default: 9].")
    @click.option("--archive-folds", default=None, help="Archive folds of the test split  [default: 1-8].")
    @click.option("--out", "out_json", type=click.Path(dir_okay=False), default=None,
                  help="Write every metric per variant and per class as JSON.")
    @click.option("--threads", type=click.IntRange(min=1), default=None,
                  help="Interpreter threads for bundle encoders (default: the bundle's, 1).")
    def evaluate_cmd(data_dir, archive_dir, bundles, emb_files, lead_sets, cv, external_dir, query_folds,
                     archive_folds, out_json, threads):
        """Retrieval quality per shared/docs/EVALUATION.md, baselines in the same table: the fold-9 test
        (default), cross-validation over folds 1-8 (--cv), or an external set through the device (--external)."""
        from pathlib import Path

        from edge.errors import EcgretError
        from edge.paths import shared_data_dir

        from .archive import Archive
        if (cv or external_dir) and (query_folds or archive_folds):
            raise click.UsageError("--query-folds/--archive-folds choose the test split; --cv and --external "
                                   "choose their own")
        if cv and external_dir:
            raise click.UsageError("--cv and --external are separate evaluations; run them one at a time")
        sets = tuple(x.strip() for x in lead_sets.split(",") if x.strip())
        try:
            if external_dir:
                if not bundles or emb_files:
                    raise click.UsageError("--external evaluates bundles through the device: give --bundle "
                                           "(and no --embeddings)")
                res = external_variants(external_dir, bundles, sets, threads)
                hashes = ",".join(dict.fromkeys(m["bundle_sha256"] for m in res.values()))
                n = next(iter(res.values()))["n_records"]
                click.echo(external_table(res, f"External set {external_dir}: {n} raw records through the device "
                                               f"query path; bundle {hashes}"))
                if out_json:
                    dump({"protocol": "shared/docs/EVALUATION.md (external set)", "external": str(external_dir),
                          "bundle_sha256": hashes, "variants": res}, out_json)
                    click.echo(f"wrote {out_json}", err=True)
                return
            if archive_dir:
                archive = Archive.open(archive_dir)
            else:
                archive = Archive.from_ptbxl_subset(Path(data_dir) if data_dir else shared_data_dir() / "ptbxl-subset")
            if cv:
                q_idx = a_idx = archive.select(folds=CV_FOLDS)
                if len(q_idx) == 0:
                    raise click.UsageError(f"no cases in folds {CV_FOLDS[0]}-{CV_FOLDS[-1]} to cross-validate on")
            else:
                q_idx, a_idx = default_split(archive, _folds(query_folds or "9"), _folds(archive_folds or "1-8"))
            if len(q_idx) == 0 or len(a_idx) == 0:
                raise click.UsageError(f"no queries ({len(q_idx)}) or no archive cases ({len(a_idx)}) in those folds")
            variants: dict = dict(baselines(archive))
            hashes = []
            for spec in emb_files:
                name, _, path = spec.partition("=")
                if not path:
                    raise click.UsageError(f"--embeddings wants NAME=FILE.npy, got {spec!r}")
                try:
                    e = np.load(path)
                except (OSError, ValueError) as exc:
                    raise click.UsageError(f"--embeddings {name}: cannot read {path} ({exc})") from None
                if e.ndim != 2 or len(e) != len(archive):
                    raise click.UsageError(f"{path}: expected ({len(archive)}, D), got {e.shape}")
                variants[name] = e
            for b in bundles:
                v, h = bundle_variants(archive, b, q_idx, a_idx, sets, threads)
                if cv:   # every case of folds 1-8 embedded once, as query and as archive item
                    v = {k: (_expand(len(archive), q_idx, qe), _expand(len(archive), a_idx, ae))
                         for k, (qe, ae) in v.items()}
                variants.update(v)
                hashes.append(h)
        except EcgretError as e:
            raise click.ClickException(str(e)) from None
        bh = ",".join(hashes) or None
        if cv:
            res = evaluate_cv(archive, variants)
            click.echo(cv_table(res, cv_heading(archive, bundle_hash=bh)))
            if out_json:
                dump(cv_json(res, archive, bundle_hash=bh), out_json)
        else:
            res = evaluate(archive, variants, q_idx, a_idx)
            click.echo(markdown_table(res, heading(archive, q_idx, a_idx, bh)))
            if out_json:
                dump(results_json(res, archive, q_idx, a_idx, bh), out_json)
        if out_json:
            click.echo(f"wrote {out_json}", err=True)

    return evaluate_cmd


def _folds(spec: str) -> tuple[int, ...]:
    out = []
    for part in str(spec).split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return tuple(out)


evaluate_cmd = _evaluate_command()
