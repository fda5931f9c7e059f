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
The external set (``evaluate --external ludb-dev``) is :mod:`convert.evaluate_external`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .index_build import topk_search

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
K = 10
SIM_FLOOR = 1e-3
METRICS: tuple[str, ...] = (
    "P@1",
    "P@5",
    "P@10",
    "P@10_exact",
    "mAP@10",
    "macroP@10",
    "kNN_macroAUROC",
    "rhythmP@10_nonSR",
)


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
        out.append(
            (qf, np.flatnonzero(np.isin(folds, qf)), np.flatnonzero(np.isin(folds, [f for f in pool if f not in qf])))
        )
    return out


def cross_validate(
    score: Callable[[np.ndarray, np.ndarray], Mapping], folds, rotations=ROTATIONS, pool=CV_FOLDS
) -> list:
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
    """The rows of ``x`` (n, D) scaled to unit L2 norm, float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def top_k(q: np.ndarray, a: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top-k: (indices into ``a`` (nq, k), similarities (nq, k)), best first."""
    return topk_search(l2n(a), l2n(q), k)


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
        ranks[i : j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty_like(ranks)
    r[order] = ranks
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def retrieval_metrics(
    q_labels: list[frozenset],
    q_rhythm: list[frozenset],
    a_labels: list[frozenset],
    a_rhythm: list[frozenset],
    idx: np.ndarray,
    sims: np.ndarray,
) -> dict:
    """Every metric of EVALUATION.md from the top-k lists (``idx`` into the archive, best first)."""
    k = idx.shape[1]
    n_rel_archive = {}
    keep = [i for i, labels in enumerate(q_labels) if labels]
    p1, p5, p10, p10x, ap = [], [], [], [], []
    per_class_hits: dict[str, list[float]] = {c: [] for c in SUPERCLASSES}
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
                per_class_hits[c].append(float(np.mean([c in a_labels[j] for j in idx[qi]])))
    s = np.clip(sims, SIM_FLOOR, None)
    per_class = {}
    for c in SUPERCLASSES:
        score = np.array([(s[qi] * np.array([c in a_labels[j] for j in idx[qi]])).sum() / s[qi].sum() for qi in keep])
        lab = np.array([c in q_labels[qi] for qi in keep])
        per_class[c] = {
            "P@10": float(np.mean(per_class_hits[c])) if per_class_hits[c] else float("nan"),
            "AUROC": auroc(score, lab),
            "n_queries": int(lab.sum()),
        }
    non_sr = [i for i, r in enumerate(q_rhythm) if r and r != frozenset({"SR"})]
    rhythm = [np.mean([bool(q_rhythm[qi] & a_rhythm[j]) for j in idx[qi]]) for qi in non_sr]
    return {
        "P@1": float(np.mean(p1)),
        "P@5": float(np.mean(p5)),
        "P@10": float(np.mean(p10)),
        "P@10_exact": float(np.mean(p10x)),
        "mAP@10": float(np.mean(ap)),
        "macroP@10": float(np.nanmean([per_class[c]["P@10"] for c in SUPERCLASSES])),
        "kNN_macroAUROC": float(np.nanmean([per_class[c]["AUROC"] for c in SUPERCLASSES])),
        "rhythmP@10_nonSR": float(np.mean(rhythm)) if rhythm else float("nan"),
        "per_class": per_class,
        "n_queries": len(keep),
        "n_queries_nonSR": len(non_sr),
    }


def _labels(archive, indices, field: str) -> list[frozenset]:
    return [frozenset(getattr(archive.cases[int(i)], field)) for i in indices]


def evaluate(
    archive,
    embeddings: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]],
    query_idx: np.ndarray,
    archive_idx: np.ndarray,
    k: int = K,
) -> dict[str, dict]:
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


def evaluate_cv(
    archive,
    embeddings: Mapping[str, np.ndarray | tuple[np.ndarray, np.ndarray]],
    rotations=ROTATIONS,
    pool=CV_FOLDS,
    k: int = K,
) -> dict[str, dict]:
    """Every variant of :func:`evaluate` on every rotation of :func:`cv_splits` (queries = a rotation's folds,
    archive = the other folds of ``pool``). Values must hold one row per archive case (``(N_cases, D)`` or a
    pair of them). Returns {variant: {"mean": {metric: m}, "sd": {metric: s}, "per_rotation": [metrics]}};
    the per-class AUROCs are summarised too (``AUROC_<class>``)."""
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    per = cross_validate(lambda qi, ai: evaluate(archive, embeddings, qi, ai, k), folds, rotations, pool)
    return summarise_cv(per)


def summarise_cv(per: Sequence[Mapping[str, dict]]) -> dict[str, dict]:
    """Per-rotation :func:`evaluate` results (one {variant: metrics} a rotation) as :func:`evaluate_cv` returns
    them: {variant: {"mean", "sd", "per_rotation"}}, the per-class AUROCs summarised too."""
    names = list(per[0]) if per else []
    cls = tuple(f"AUROC_{c}" for c in SUPERCLASSES)
    out = {}
    for name in names:
        rows = [{**p[name], **{f"AUROC_{c}": p[name]["per_class"][c]["AUROC"] for c in SUPERCLASSES}} for p in per]
        ms = mean_sd(rows, METRICS + cls)
        out[name] = {
            "mean": {m: v[0] for m, v in ms.items()},
            "sd": {m: v[1] for m, v in ms.items()},
            "per_rotation": [p[name] for p in per],
        }
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
    return (
        f"Cross-validated retrieval over folds {','.join(map(str, pool))}: {len(sp)} rotations (query folds "
        f"{rot}) against the other folds; {nq} queries against {na} cases; mean ± SD over the rotations; k=10; "
        f"exact cosine search" + (f"; bundle {bundle_hash[:12]}" if bundle_hash else "")
    )


def cv_json(results: Mapping[str, dict], archive, rotations=ROTATIONS, pool=CV_FOLDS, bundle_hash=None) -> dict:
    """The JSON of ``evaluate --cv``: the rotations with their sizes and, per variant, mean, SD and every
    rotation's metrics (per class too)."""
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    return {
        "protocol": "shared/docs/EVALUATION.md (cross-validation over folds 1-8)",
        "k": K,
        "rotations": [
            {
                "query_folds": list(qf),
                "archive_folds": [f for f in pool if f not in qf],
                "n_queries": int(len(qi)),
                "n_archive": int(len(ai)),
            }
            for qf, qi, ai in cv_splits(folds, rotations, pool)
        ],
        "bundle_sha256": bundle_hash,
        "variants": dict(results),
    }


def evaluate_cross_modal(
    archive,
    image_emb_queries: np.ndarray,
    text_emb_archive: np.ndarray,
    query_idx: np.ndarray,
    archive_idx: np.ndarray,
    k: int = K,
) -> dict:
    """ECG -> report retrieval: query image embeddings against the archive cases' text embeddings
    (both in the shared projection space); same relevance rule and metrics."""
    return evaluate(archive, {"ecg->report": (image_emb_queries, text_emb_archive)}, query_idx, archive_idx, k)[
        "ecg->report"
    ]


# ----------------------------------------------------------------------------- baselines


def random_embeddings(n: int, dim: int = 128, seed: int = 0) -> np.ndarray:
    """The chance level: seeded random unit vectors."""
    return l2n(np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32))


def raw_signal_embeddings(
    archive, indices: np.ndarray | None = None, present: np.ndarray | None = None, chunk: int = 2048
) -> np.ndarray:
    """The preprocessed signal itself: 12 leads at 25 Hz (mean of 4 samples), flattened, centred
    (each vector minus its own mean, so cosine is Pearson correlation). ``present`` (12,) zeroes the
    leads a reduced query lacks."""
    indices = np.arange(len(archive)) if indices is None else np.asarray(indices)
    out = []
    for s in range(0, len(indices), chunk):
        x = archive.batch(indices[s : s + chunk])  # (b, T, 12)
        b, t, _ = x.shape
        x = x[:, : t - t % 4].reshape(b, t // 4, 4, 12).mean(axis=2)
        if present is not None:
            x = x * np.asarray(present, dtype=np.float32)[None, None, :]
        v = x.reshape(b, -1)
        out.append(v - v.mean(axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def baselines(archive, dim: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """The chance and raw-signal variants of ``archive``: ``{"random": (N, dim), "raw-signal": (N, D)}``
    (:func:`random_embeddings` seeded by ``seed``, :func:`raw_signal_embeddings`)."""
    return {"random": random_embeddings(len(archive), dim, seed), "raw-signal": raw_signal_embeddings(archive)}


# ----------------------------------------------------------------------------- output


def markdown_table(results: Mapping[str, dict], heading: str = "", metrics=METRICS) -> str:
    """Markdown: one row a variant of ``results`` ({name: metrics}), one column a name of ``metrics`` (3
    decimals; missing or NaN: —), under ``heading`` when given."""
    lines = [heading, ""] if heading else []
    lines.append("| variant | " + " | ".join(metrics) + " |")
    lines.append("|---|" + "---|" * len(metrics))
    for name, m in results.items():
        cells = [
            "—" if (v := m.get(x)) is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}" for x in metrics
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def heading(archive, query_idx, archive_idx, bundle_hash: str | None = None) -> str:
    """A table's heading: the queries' and the archive's sizes and folds, k=10, exact cosine, and the first 12
    hex digits of ``bundle_hash`` when given."""
    qf = sorted({archive.cases[int(i)].fold for i in query_idx if archive.cases[int(i)].fold is not None})
    af = sorted({archive.cases[int(i)].fold for i in archive_idx if archive.cases[int(i)].fold is not None})
    return (
        f"Retrieval on {len(query_idx)} queries (folds {','.join(map(str, qf))}) against an archive of "
        f"{len(archive_idx)} cases (folds {','.join(map(str, af))}); k=10; exact cosine search"
        + (f"; bundle {bundle_hash[:12]}" if bundle_hash else "")
    )


def results_json(results: Mapping[str, dict], archive, query_idx, archive_idx, bundle_hash=None, extra=None) -> dict:
    """The ``--out`` JSON of a split: protocol, k, query and archive sizes and folds, ``bundle_hash``, the
    ``results`` per variant, and ``extra``'s keys."""
    return {
        "protocol": "shared/docs/EVALUATION.md",
        "k": K,
        "n_queries": int(len(query_idx)),
        "n_archive": int(len(archive_idx)),
        "query_folds": sorted({c.fold for c in (archive.cases[int(i)] for i in query_idx)} - {None}),
        "archive_folds": sorted({c.fold for c in (archive.cases[int(i)] for i in archive_idx)} - {None}),
        "bundle_sha256": bundle_hash,
        "variants": dict(results),
        **(extra or {}),
    }


EmbedFn = Callable[[object, np.ndarray, "np.ndarray | None"], np.ndarray]


def results_target(path) -> str | None:
    """Why the results JSON must not be written to ``path``, or None: its folder must exist, and the name be a new
    file or an earlier results JSON (:func:`edge.atomicio.refuse_replacing`: never a symbolic link, a folder, a
    device or another file). Checked before any work, and again by :func:`dump`."""
    from edge.atomicio import refuse_replacing

    why = refuse_replacing(path, b"{", "a JSON results file", "results.json")
    if why is None and not Path(path).absolute().parent.is_dir():
        why = f"the folder {Path(path).absolute().parent} does not exist"
    return why


def dump(results: dict, path) -> None:
    """Write ``results`` to ``path`` as indented JSON (numpy scalars as floats), atomically
    (:func:`edge.atomicio.atomic_write`); :class:`~edge.errors.ConfigError` when :func:`results_target` refuses
    ``path`` or it cannot be written."""
    from edge.atomicio import atomic_write
    from edge.errors import ConfigError

    why = results_target(path)
    if why:
        raise ConfigError(f"{path}: not written: {why}")
    try:
        atomic_write(Path(path), json.dumps(results, indent=2, default=float) + "\n")
    except OSError as e:
        raise ConfigError(f"{path}: not written ({e.strerror or e})") from None


def load_embeddings(spec: str, n: int, taken=()) -> tuple[str, np.ndarray]:
    """``NAME=FILE.npy`` as (name, its (n, D) array): the header is checked before the data is read (memory
    mapped), and the values must be real numbers (float or integer, not bool or complex), finite, D >= 1 and
    every row of non-zero norm (a cosine of a zero or NaN row scores by chance). ``taken``: names already in use
    (the baselines, earlier --embeddings). :class:`~edge.errors.ConfigError` naming the option and the file."""
    import os
    import stat

    from edge.errors import ConfigError

    name, _, path = spec.partition("=")
    name = name.strip()
    if not name or not path:
        raise ConfigError(f"--embeddings wants NAME=FILE.npy, got {spec!r}")
    if name in taken:
        raise ConfigError(f"--embeddings {name}: the name is already taken (a baseline or an earlier --embeddings)")
    where = f"--embeddings {name}: {path}"
    try:
        st = os.stat(path)
    except OSError as err:
        raise ConfigError(f"{where}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: not a regular file (a folder, FIFO or device)")
    try:
        e = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{where}: not a readable .npy array ({exc})") from None
    if not isinstance(e, np.ndarray):  # an .npz archive
        raise ConfigError(f"{where}: not a .npy array (an .npz archive?)")
    if e.ndim != 2 or len(e) != n or e.shape[1] < 1:
        raise ConfigError(f"{where}: expected shape ({n}, D) with D >= 1, got {e.shape}")
    if e.dtype.kind not in "fiu":
        raise ConfigError(f"{where}: expected real numbers (float or integer), got {e.dtype}")
    e = np.asarray(e, dtype=np.float64 if e.dtype.itemsize > 4 else np.float32)
    if not np.isfinite(e).all():
        raise ConfigError(f"{where}: holds NaN or infinite values")
    norms = np.linalg.norm(e.astype(np.float64), axis=1)
    bad = np.flatnonzero(~(np.isfinite(norms) & (norms > 0)))
    if bad.size:
        raise ConfigError(f"{where}: {bad.size} row(s) of zero (or overflowing) norm, the first row {int(bad[0])}")
    return name, e


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


def encoder_embeddings(
    archive,
    indices,
    encode: Callable[[np.ndarray], np.ndarray],
    config,
    leads: tuple[str, ...] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed cases with any image encoder (``encode(image) -> (D,)``), e.g. a bundle's TFLite encoder."""
    it = list(np.asarray(indices))
    if progress:
        try:
            from tqdm import tqdm

            it = tqdm(it, desc="embed", unit="case", leave=False)
        except ImportError:
            pass
    return np.stack([encode(case_image(archive, i, config, leads)) for i in it]).astype(np.float32)


def bundle_variants(
    archive, bundle_path, query_idx, archive_idx, lead_sets=("12",), threads=None, progress=True
) -> tuple[dict, str]:
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
        q_emb = encoder_embeddings(
            archive, query_idx, enc.encode, cfg, leads=None if ls == "12" else leads, progress=progress
        )
        out[f"{b.name} int8" + ("" if ls == "12" else f" [{ls}]")] = (q_emb, a_emb)
    return out, b.hash


def expand_rows(n: int, idx: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """Rows ``emb`` of cases ``idx`` placed into an (n, D) matrix in archive order (zeros elsewhere)."""
    full = np.zeros((n, emb.shape[1]), np.float32)
    full[np.asarray(idx)] = emb
    return full
