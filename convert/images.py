"""Archive cases as images for training: clean (as the index and the queries see them), augmented, cached.

The teacher and the student image the archive alike (:func:`edge.imaging.ecg_image`, the device's own code):
:func:`image_cases` clean (leads reduced on request), :func:`augmented_images` the student's fixed augmented
copies (:func:`convert.augment.augment`, the teacher's recipe), :func:`cached` keeps them on disk keyed by
:func:`image_cache_key`; :func:`embed_images` runs any encoder over them in batches.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_path
from edge.imaging import ImagingConfig, ecg_image

from .augment import AugmentConfig, augment

__all__ = ["n_valid", "image_cases", "augmented_images", "image_cache_key", "cached", "embed_images"]


def n_valid(archive, i: int) -> int | None:
    """Case i's valid samples (before padding), None where the archive does not say."""
    n = archive.cases[int(i)].n_samples
    return int(n) if n else None


def image_cases(
    archive,
    indices,
    imaging: ImagingConfig,
    present: np.ndarray | None = None,
    dtype=np.float16,
    progress: bool = False,
) -> np.ndarray:
    """Images (len(indices), H, W, 3) of the cases, no augmentation; ``present`` (12,) reduces the leads."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(indices),) + imaging.shape, dtype=dtype)
    it = range(len(indices))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"imaging ({imaging.mode})", file=sys.stderr, leave=False)
    for k in it:
        i = int(indices[k])
        x = archive.signal(i)
        if present is not None:
            x = x * present[None, :].astype(np.float32)
        out[k] = ecg_image(x, None if present is None else present, imaging, n_valid(archive, i))
    return out


def augmented_images(
    archive, indices, imaging: ImagingConfig, copies: int, seed: int, augment_cfg=None, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(images (len(indices) * copies, H, W, 3) float16, source case index per image): ``copies`` augmented
    versions of each case (the teacher's augmentation recipe), each a pure function of (seed, copy, case)."""
    acfg = augment_cfg or AugmentConfig()
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(indices) * copies,) + imaging.shape, dtype=np.float16)
    src = np.repeat(indices, copies) if copies else np.zeros(0, np.int64)
    it = range(len(src))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="imaging (augmented)", file=sys.stderr, leave=False)
    for k in it:
        i = int(src[k])
        rng = np.random.default_rng([int(seed), 104729, k % copies, i])
        x, present, n = augment(archive.signal(i), rng, acfg, n_valid(archive, i))
        out[k] = ecg_image(x, present, imaging, n)
    return out, src


def image_cache_key(archive, indices, imaging: ImagingConfig, what: str, **kw) -> str:
    """A key for cached images: the cases (ids), the imaging settings, the imaging/augmentation code, ``kw``."""
    from edge.paths import repo_root

    h = hashlib.sha256(
        json.dumps({"what": what, "imaging": imaging.to_dict(), **kw}, sort_keys=True, default=str).encode()
    )
    for i in np.asarray(indices, np.int64):
        h.update(archive.ids[int(i)].encode() + b"\n")
    for rel in ("edge/imaging.py", "convert/augment.py"):
        p = repo_root() / rel
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def cached(cache_dir, key: str, make):
    """``make()`` (a tuple of arrays) stored as ``<cache_dir>/<key>.npz`` (uncompressed) and reused."""
    if not cache_dir:
        return make()
    d = Path(cache_dir)
    p = d / f"{key}.npz"
    if p.is_file():
        with np.load(p) as z:
            return tuple(z[f"a{k}"] for k in range(len(z.files)))
    out = make()
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(p, suffix=".npz") as tmp:
        np.savez(tmp, **{f"a{k}": a for k, a in enumerate(out)})
    return out


def embed_images(encoder_fn, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """``encoder_fn`` (a batch of float32 images -> embeddings) over ``images``, ``batch`` at a time."""
    out = [np.asarray(encoder_fn(images[s : s + batch].astype(np.float32))) for s in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
