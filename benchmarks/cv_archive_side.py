"""Retrieval-side candidates on the cross-validation rotations, without retraining: what the archive vectors or the
query vector could be given the encoder a rotation's teacher already has.

    python benchmarks/cv_archive_side.py [--runs 'runs/teacher/cv/rhythm-q*'] [--json FILE]

Reads each rotation's teacher run (``ecgret-convert train-teacher --cv``: ``embeddings.npy``, the 12-lead vector of
every case, and ``leadset_embeddings.npz``, every case imaged with a reduced lead set only; rotations in
:data:`convert.evaluate.ROTATIONS` order) and prints the CV mean ± SD (docs/EVALUATION.md, folds 1-8) of:

- database-side augmentation (DBA, Radenović et al., TPAMI 2019): each archive vector replaced by the normalised,
  rank-weighted sum of itself and its k nearest archive neighbours (``dbaK``), or weighted by cosine^3
  (``dbaK a3``);
- alpha query expansion (αQE, same paper): the query replaced by itself plus its k nearest archive vectors
  weighted by cosine^3 (``aqeK``), and both together;
- archive items per lead set: a reduced-lead query against the archive imaged with the same leads (``I vs I``),
  against the 12-lead archive (``I vs 12``, what the device does) and against their normalised mean (``mix``).

A candidate is worth building only if it beats the plain row by more than the SD over rotations.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convert.evaluate import ROTATIONS, cv_splits, evaluate, l2n, summarise_cv  # noqa: E402
from convert.ptbxl import open_archive  # noqa: E402

SHOWN = ("kNN_macroAUROC", "macroP@10", "P@10", "rhythmP@10_nonSR")


def dba(a: np.ndarray, k: int, alpha: float | None = None) -> np.ndarray:
    """Each row of ``a`` (unit vectors) as the normalised weighted sum of itself and its k nearest rows: weights
    falling linearly with rank (``alpha`` None) or cosine**alpha."""
    s = a @ a.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, : k + 1]
    if alpha is None:
        w = np.broadcast_to(np.linspace(1.0, 0.0, k + 2)[:-1], idx.shape)
    else:
        w = np.maximum(np.take_along_axis(s, idx, 1), 0.0) ** alpha
    return l2n(np.einsum("nk,nkd->nd", w, a[idx]))


def aqe(q: np.ndarray, a: np.ndarray, k: int, alpha: float = 3.0) -> np.ndarray:
    """Each query plus its k nearest rows of ``a`` weighted by cosine**alpha, normalised."""
    s = q @ a.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    w = np.maximum(np.take_along_axis(s, idx, 1), 0.0) ** alpha
    return l2n(q + np.einsum("nk,nkd->nd", w, a[idx]))


def variants(e: np.ndarray, lead: dict, qi: np.ndarray, ai: np.ndarray) -> dict:
    """The rows of the table for one rotation: {name: (query vectors, archive vectors)}."""
    q, a = e[qi], e[ai]
    v = {"plain (12 leads)": (q, a)}
    for k in (1, 2, 3, 5):
        v[f"dba{k}"] = (q, dba(a, k))
        v[f"dba{k} a3"] = (q, dba(a, k, 3.0))
        v[f"aqe{k}"] = (aqe(q, a, k), a)
    for k in (1, 2, 3):
        ad = dba(a, k)
        v[f"dba{k}+aqe{k}"] = (aqe(q, ad, k), ad)
    for name, vec in lead.items():
        L = l2n(np.asarray(vec, dtype=np.float64))
        v[f"{name} vs 12"] = (L[qi], a)
        v[f"{name} vs {name}"] = (L[qi], L[ai])
        v[f"{name} vs mix"] = (L[qi], l2n(L[ai] + a))
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="runs/teacher/cv/rhythm-q*", help="glob of the rotations' teacher run folders")
    ap.add_argument("--json", help="write the summary here")
    args = ap.parse_args(argv)
    runs = sorted(glob.glob(args.runs))
    if len(runs) != len(ROTATIONS):
        ap.error(f"{args.runs!r} matches {len(runs)} run folders; one per rotation ({len(ROTATIONS)}) is needed")
    archive = open_archive()
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    per = []
    for (qf, qi, ai), run in zip(cv_splits(folds), runs):
        e = l2n(np.load(Path(run) / "embeddings.npy").astype(np.float64))
        with np.load(Path(run) / "leadset_embeddings.npz") as z:
            lead = {k: z[k] for k in z.files}
        per.append(evaluate(archive, variants(e, lead, qi, ai), qi, ai))
    res = summarise_cv(per)
    print(f"teacher runs {', '.join(runs)}; CV over folds 1-8, rotations {ROTATIONS}")
    print("| variant | " + " | ".join(SHOWN) + " |")
    print("| --- |" + " --- |" * len(SHOWN))
    for name, m in res.items():
        print(f"| {name} | " + " | ".join(f"{m['mean'][k]:.3f} ± {m['sd'][k]:.3f}" for k in SHOWN) + " |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": runs, "cv": {n: {"mean": m["mean"], "sd": m["sd"]} for n, m in res.items()}}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
