"""The bundle's Annoy case index (angular metric, dense ids 0..N-1 = lines of cases.jsonl).

Annoy stores neither the metric nor the dimension; both come from the manifest and are checked on load
(:func:`edge.bundle.load_bundle`). Scores are cosine similarities: for unit vectors Annoy's angular
distance is d = sqrt(2 - 2 cos), so cos = 1 - d^2 / 2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BundleError

__all__ = ["CaseIndex", "angular_to_cosine"]


def angular_to_cosine(d) -> np.ndarray:
    d = np.asarray(d, dtype=np.float64)
    return 1.0 - d * d / 2.0


class CaseIndex:
    """A loaded Annoy index: ``search(vec, k, search_k) -> (ids int array, cosine scores float array)``."""

    def __init__(self, path, dim: int, metric: str = "angular", search_k: int = -1):
        from annoy import AnnoyIndex
        self.path = Path(path)
        self.dim, self.metric, self.search_k = int(dim), str(metric), int(search_k)
        if self.metric != "angular":
            raise BundleError(f"{self.path}: metric {self.metric!r} is not supported (only 'angular')")
        self._ann = AnnoyIndex(self.dim, self.metric)
        from .encoder import quiet_native_stderr
        try:
            with quiet_native_stderr():  # Annoy prints its own copy of the error on fd 2
                self._ann.load(str(self.path), prefault=False)
        except OSError as e:
            raise BundleError(f"{self.path}: Annoy cannot load the index ({e})") from None
        self.n_items = int(self._ann.get_n_items())

    def __len__(self) -> int:
        return self.n_items

    def item(self, i: int) -> np.ndarray:
        return np.asarray(self._ann.get_item_vector(int(i)), dtype=np.float32)

    def search(self, vec: np.ndarray, k: int = 10, search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        sk = self.search_k if search_k is None else int(search_k)
        ids, dist = self._ann.get_nns_by_vector(np.asarray(vec, dtype=np.float32).tolist(), int(k),
                                                search_k=sk, include_distances=True)
        return np.asarray(ids, dtype=np.int64), angular_to_cosine(dist)

    def unload(self) -> None:
        self._ann.unload()
