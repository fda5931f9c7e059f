"""The case index: build the angular Annoy index, search exactly, measure recall, tune trees and ``search_k``.

One code path for a bundle's index held in memory and for a large archive's streamed from a memory-mapped
embedding file (:func:`convert.shards.merge_index`): rows are read a chunk at a time, and with a ``workdir``
every candidate index is built on disk (Annoy's ``on_disk_build``: its items are not held in RAM). Recall is
measured against :func:`exact_topk`, the toolkit's one exact search (evaluation and re-ranking use it too).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np

from edge.bundle_format import METRIC
from edge.errors import ArchiveError

from .progress import progress_bar

__all__ = [
    "IndexConfig",
    "build_annoy",
    "leaf_capacity",
    "topk_search",
    "exact_topk",
    "annoy_recall",
    "tune_index",
    "candidate_path",
]

ROWS = 8192  # embedding rows read at a time while adding items
_Metric = Literal["angular", "euclidean", "manhattan", "hamming", "dot"]  # the metrics Annoy knows
EXACT_ROWS = 16384  # archive rows scored at a time by exact search


@dataclass(frozen=True)
class IndexConfig:
    """``[index]`` of ``configs/default.toml``: recall@k target of the tuned index against exact search."""

    k: int = 10
    target_recall: float = 0.99
    trees: tuple = (8, 16, 32, 64)
    max_queries: int = 1625
    threads: int = 1
    seed: int = 0


def build_annoy(
    embeddings, n_trees: int, seed: int = 0, path: Path | None = None, *, on_disk: bool = False, progress: bool = False
):
    """Build the angular Annoy index over the rows of ``embeddings`` (item i = row i; a memmap is fine);
    deterministic for a seed (single-threaded build). Saved to ``path`` if given, or, ``on_disk``, built there
    directly. Returns the AnnoyIndex."""
    from annoy import AnnoyIndex

    n, dim = int(embeddings.shape[0]), int(embeddings.shape[1])
    ann = AnnoyIndex(dim, cast(_Metric, METRIC))  # edge.bundle declares METRIC a plain str
    ann.set_seed(int(seed))
    if on_disk:
        if path is None:
            raise ValueError("an on-disk build needs a path")
        ann.on_disk_build(str(path))
    bar = progress_bar(n, f"index ({n_trees} trees)", progress)
    for s in range(0, n, ROWS):
        block = np.asarray(embeddings[s : s + ROWS], np.float32)
        for j, v in enumerate(block):
            ann.add_item(s + j, v.tolist())
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()
    ann.build(int(n_trees), n_jobs=1)
    if path is not None and not on_disk:
        ann.save(str(path))
    return ann


def leaf_capacity(dim: int) -> int:
    """Annoy's K for an angular index of ``dim`` dimensions: the most items one node lists. An index of at most
    K items is one leaf per tree, and Annoy's loader then counts 2 x n_trees - 1 roots (every tree's root and
    its copy look alike); :func:`edge.index.check_annoy` finds the same, so such an index is built with 1 tree."""
    from edge.index import node_size

    return node_size(dim) // 4 - 1


def topk_search(items, queries: np.ndarray, k: int, chunk: int = EXACT_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (the cosine, for unit rows) of ``queries`` against the rows of ``items`` (an
    array or a memmap, scored ``chunk`` rows at a time): (item ids (n_queries, k), scores (n_queries, k)), best
    first."""
    q = np.asarray(queries, np.float32)
    n = items.shape[0]
    k = min(k, n)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, n, chunk):
        block = np.asarray(items[s : s + chunk], np.float32)
        sims = q @ block.T
        ids = np.broadcast_to(np.arange(s, s + len(block)), sims.shape)
        cs = np.concatenate([best_s, sims], axis=1)
        ci = np.concatenate([best_i, ids], axis=1)
        kk = min(k, cs.shape[1])
        part = np.argpartition(-cs, kk - 1, axis=1)[:, :kk]
        best_s = np.take_along_axis(cs, part, axis=1)
        best_i = np.take_along_axis(ci, part, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1), np.take_along_axis(best_s, order, axis=1)


def exact_topk(embeddings, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item ids by cosine (rows are unit vectors), (n_queries, k): :func:`topk_search`'s ids."""
    return topk_search(embeddings, queries, k)[0]


def annoy_recall(ann, embeddings, query_ids: np.ndarray, truth: np.ndarray, k: int, search_k: int) -> float:
    """Mean recall@k of Annoy's answers against exact search, over the archive items ``query_ids``."""
    hits = 0
    for q, t in zip(query_ids, truth):
        got = ann.get_nns_by_vector(np.asarray(embeddings[q], np.float32).tolist(), k, search_k=int(search_k))
        hits += len(set(got) & set(t.tolist()))
    return hits / float(truth.size)


def candidate_path(workdir, n_trees: int) -> Path:
    """Where :func:`tune_index` with a ``workdir`` leaves the candidate index of ``n_trees`` trees."""
    return Path(workdir) / f"trees-{int(n_trees)}.ann"


def tune_index(
    embeddings,
    k: int = 10,
    target_recall: float = 0.99,
    *,
    seed: int = 0,
    max_queries: int = 500,
    trees=(8, 16, 32, 64),
    factors=(1, 2, 4, 8, 16, 32, 64),
    workdir=None,
    progress: bool = False,
) -> tuple[int, int, float]:
    """Pick the cheapest (n_trees, search_k) reaching ``target_recall`` recall@k against exact search
    over the archive (queries: up to ``max_queries`` archive items, seeded). Cost is search_k (nodes
    inspected), then n_trees. Returns (n_trees, search_k, recall); the best found if none reaches it.

    With ``workdir`` the rows may be a memmap that stays on disk: every candidate index is built on disk at
    :func:`candidate_path` and left there (the caller takes the chosen one)."""
    emb = embeddings if workdir is not None else np.asarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    if n == 0:
        raise ArchiveError("cannot tune an index over an empty archive")
    if n <= leaf_capacity(emb.shape[1]):
        trees = (1,)  # one leaf holds every item: one tree is exact search (and more would not load)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    truth = exact_topk(emb, np.asarray(emb[qids], np.float32), k)
    tried = []
    for nt in trees:
        path = None if workdir is None else candidate_path(workdir, nt)
        ann = build_annoy(emb, nt, seed, path, on_disk=workdir is not None, progress=progress)
        for f in factors:
            sk = int(nt * k * f)
            r = annoy_recall(ann, emb, qids, truth, k, sk)
            tried.append((nt, sk, r))
            if r >= target_recall:
                break
        if workdir is not None:
            ann.unload()
    ok = [t for t in tried if t[2] >= target_recall]
    nt, sk, r = min(ok, key=lambda t: (t[1], t[0])) if ok else max(tried, key=lambda t: (t[2], -t[1]))
    return int(nt), int(sk), float(r)
