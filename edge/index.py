"""The bundle's Annoy case index (angular metric, dense ids 0..N-1 = lines of cases.jsonl).

Annoy stores neither the metric nor the dimension; both come from the manifest and are checked on load
(:func:`edge.bundle.load_bundle`). Scores are cosine similarities: for unit vectors Annoy's angular
distance is d = sqrt(2 - 2 cos), so cos = 1 - d^2 / 2.

Annoy trusts its file: a node pointer out of range is read through (SIGSEGV), a cycle of split nodes makes a
search loop and grow forever. So :func:`check_annoy` checks the bytes in numpy *before* Annoy sees them, and
Annoy then loads exactly those bytes (a sealed in-memory copy, :mod:`edge.sealed`). The on-disk format,
from ``annoylib.h`` (spotify/annoy 1.17, angular metric, ``S`` = int32, ``T`` = float32, little-endian)::

    node i (size s = 12 + 4 f bytes, f = dimension):  int32 n_descendants
                                                      union { int32 children[2]; float32 norm }
                                                      float32 v[f]
    n_nodes = file size / s;  K = (s - 4) / 4 = f + 2 (ids a leaf-list node holds, from ``children``)
    roots = the trailing run of nodes whose n_descendants equals the last node's (minus the last
            original root when it precedes its copy); n_items = that n_descendants

A search (``_get_all_nns``) pops a node i and: if n_descendants == 1 and i < n_items, takes item i; elif
n_descendants <= K, takes the n_descendants ids in ``children`` as items; else (a split node) pushes
children[0] and [1]. Hence the rules checked here, in the order a search relies on them:

- the size is a positive multiple of s; n_items (from the roots) equals the manifest's, the root count
  equals ``index.n_trees``;
- items 0..n_items-1 have n_descendants == 1, finite vectors of unit norm (within 1e-2) and a finite
  ``norm`` field (Angular's cached |v|^2, used by the distance);
- every other node has n_descendants >= 1; one with n_descendants <= K lists only item ids
  (0 <= id < n_items); a split node's two children point *below it* (0 <= child < i: Annoy writes children
  before their parent, so this also rules out cycles) and its plane normal is finite with norm <= 1.01.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BundleError

__all__ = ["CaseIndex", "check_annoy", "AnnoyLayout", "cosines", "node_size", "unit_items"]

_NODE_HEAD = 12  # offsetof(Node, v): n_descendants + children[2] (int32)
MAX_NODES = 2**31 - 1


def unit_items(data, dim: int, n_items: int) -> np.ndarray:
    """The first ``n_items`` item vectors of an Annoy index's bytes (checked by :func:`check_annoy`) as float64
    unit rows.

    Annoy ranks candidates with float32 arithmetic whose last bit depends on the CPU (FMA contraction, vector
    width): the same int8 encoder output gave 0.9029 on x86 and 0.903 on a Cortex-A72 for one 2nd-ranked case.
    The device therefore takes only the candidate *ids* from Annoy and scores them here: products of two float32
    numbers are exact in float64 and a 128-term float64 sum is off by ~1e-16, far below the 4 decimals shown."""
    s = node_size(dim)
    flts = np.frombuffer(memoryview(data).cast("B"), dtype="<f4", count=n_items * s // 4).reshape(n_items, s // 4)
    v = flts[:, _NODE_HEAD // 4 :].astype(np.float64)
    return v / np.maximum(np.sqrt(np.einsum("ij,ij->i", v, v)), 1e-300)[:, None]


def cosines(unit: np.ndarray, vec: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """float64 cosines of ``vec`` with rows ``ids`` (None: all) of the float64 unit matrix ``unit``; the one
    cosine of the device (Annoy candidates, rhythm-favoured cases) and of the cross-validation."""
    q = np.asarray(vec, dtype=np.float64).reshape(-1)
    q = q / max(float(np.sqrt(q @ q)), 1e-300)
    rows = unit if ids is None else unit[np.asarray(ids, dtype=np.int64)]
    return rows @ q


def node_size(dim: int) -> int:
    """Bytes of one node of an angular Annoy index of dimension ``dim`` (12 + 4 dim)."""
    return _NODE_HEAD + 4 * int(dim)


class AnnoyLayout:
    """What :func:`check_annoy` found: ``n_nodes``, ``n_items``, ``roots`` (node ids), ``node_size``."""

    def __init__(self, n_nodes, n_items, roots, size):
        self.n_nodes, self.n_items, self.roots, self.node_size = n_nodes, n_items, roots, size

    @property
    def n_trees(self) -> int:
        """The number of trees: one per root."""
        return len(self.roots)


def _bad(where, fld, msg):
    return BundleError(f"{where}: {fld}: {msg}")


def check_annoy(
    data, dim: int, n_items: int | None = None, n_trees: int | None = None, where="index.ann"
) -> AnnoyLayout:
    """Check an angular Annoy index's bytes (see the module docstring); :class:`BundleError` naming the field
    on the first violation. ``n_items``/``n_trees``: what the manifest says (None: not checked)."""
    dim = int(dim)
    s = node_size(dim)
    buf = memoryview(data).cast("B")
    size = len(buf)
    if size == 0:
        raise _bad(where, "size", "empty file")
    if size % s:
        raise _bad(
            where,
            "dim",
            f"{size} bytes is not a whole number of {s}-byte nodes (dimension {dim}): "
            "wrong dimension or not an angular Annoy index",
        )
    n = size // s
    if n > MAX_NODES:
        raise _bad(where, "size", f"{n} nodes, more than Annoy's int32 ids address")
    w = s // 4
    ints = np.frombuffer(buf, dtype="<i4").reshape(n, w)
    flts = np.frombuffer(buf, dtype="<f4").reshape(n, w)
    nd = ints[:, 0]
    k_max = w - 1  # K = (s - offsetof(children)) / sizeof(int32)
    # roots exactly as AnnoyIndex::load finds them
    m = int(nd[-1])
    differ = np.flatnonzero(nd != m)
    first = int(differ[-1]) + 1 if differ.size else 0
    roots = list(range(n - 1, first - 1, -1))
    if len(roots) > 1 and ints[roots[0], 1] == ints[roots[-1], 1]:
        roots.pop()
    if m < 1 or m >= n:
        raise _bad(where, "n_items", f"the roots give {m} items in a file of {n} nodes: not a built index")
    if n_items is not None and m != int(n_items):
        raise _bad(where, "n_items", f"index holds {m} items, manifest says {n_items}")
    if n_trees is not None and len(roots) != int(n_trees):
        raise _bad(where, "n_trees", f"index has {len(roots)} roots, manifest says {n_trees} trees")
    # items
    if np.any(nd[:m] != 1):
        i = int(np.flatnonzero(nd[:m] != 1)[0])
        raise _bad(where, f"node {i}", f"item node with n_descendants {int(nd[i])} (must be 1)")
    vec = flts[:m, 3:]
    if not np.all(np.isfinite(vec)) or not np.all(np.isfinite(flts[:m, 1])):
        i = int(np.flatnonzero(~(np.isfinite(vec).all(axis=1) & np.isfinite(flts[:m, 1])))[0])
        raise _bad(where, f"node {i}", "item vector or norm is not finite")
    norms = np.sqrt(np.einsum("ij,ij->i", vec, vec, dtype=np.float64))
    off = np.abs(norms - 1.0) > 1e-2
    if np.any(off):
        i = int(np.flatnonzero(off)[0])
        raise _bad(
            where,
            "dim",
            f"item {i} is not a unit vector of dimension {dim} (norm {norms[i]:.3g}): "
            "wrong dimension or not this bundle's index",
        )
    # inner nodes: leaf lists and splits
    ids = np.arange(m, n)
    ndi = nd[m:]
    if np.any(ndi < 1):
        i = int(ids[ndi < 1][0])
        raise _bad(where, f"node {i}", f"n_descendants {int(nd[i])} (must be >= 1)")
    leaf = ndi <= k_max
    if np.any(leaf):
        rows = ids[leaf]
        kids = ints[rows, 1:]
        used = np.arange(k_max)[None, :] < nd[rows][:, None]
        badk = used & ((kids < 0) | (kids >= m))
        if np.any(badk):
            r = int(np.flatnonzero(badk.any(axis=1))[0])
            c = int(np.flatnonzero(badk[r])[0])
            raise _bad(
                where, f"node {int(rows[r])}", f"leaf list entry {c} = {int(kids[r, c])} is not an item id in [0, {m})"
            )
    split = ~leaf
    if np.any(split):
        rows = ids[split]
        ch = ints[rows, 1:3]
        badc = (ch < 0) | (ch >= rows[:, None])
        if np.any(badc):
            r = int(np.flatnonzero(badc.any(axis=1))[0])
            raise _bad(where, f"node {int(rows[r])}", f"split children {ch[r].tolist()} not in [0, {int(rows[r])})")
        pv = flts[rows, 3:]
        fin = np.isfinite(pv).all(axis=1)
        pn = np.sqrt(
            np.einsum("ij,ij->i", np.where(fin[:, None], pv, 0), np.where(fin[:, None], pv, 0), dtype=np.float64)
        )
        badp = ~fin | (pn > 1.01)
        if np.any(badp):
            r = int(np.flatnonzero(badp)[0])
            raise _bad(where, f"node {int(rows[r])}", "split plane normal is not finite or not of unit norm")
    return AnnoyLayout(n, m, tuple(roots), s)


class CaseIndex:
    """A loaded Annoy index: ``search(vec, k, search_k) -> (ids int array, cosine scores float array)``.

    The bytes (``data``, else the file at ``path`` read once) are checked by :func:`check_annoy` and Annoy
    loads that very copy (sealed in memory where the platform allows, see :mod:`edge.sealed`)."""

    def __init__(
        self,
        path,
        dim: int,
        metric: str = "angular",
        search_k: int = -1,
        *,
        data=None,
        n_items: int | None = None,
        n_trees: int | None = None,
    ):
        from annoy import AnnoyIndex

        from .sealed import sealed_copy

        self.path = Path(path)
        self.dim, self.metric, self.search_k = int(dim), str(metric), int(search_k)
        if self.metric != "angular":
            raise BundleError(f"{self.path}: metric {self.metric!r} is not supported (only 'angular')")
        if not 1 <= self.dim <= 65536:
            raise BundleError(f"{self.path}: dim: {self.dim} is out of range")
        if data is None:
            try:
                data = self.path.read_bytes()
            except OSError as e:
                raise BundleError(f"{self.path}: file: unreadable ({e.strerror or e})") from None
        self.layout = check_annoy(data, self.dim, n_items, n_trees, where=self.path)
        self._sealed = sealed_copy(data, self.path.name)
        src = self._sealed.path if self._sealed is not None else str(self.path)
        self._ann = AnnoyIndex(self.dim, "angular")  # the one metric (checked above)
        from .encoder import quiet_native_stderr

        try:
            with quiet_native_stderr():  # Annoy prints its own copy of the error on fd 2
                self._ann.load(src, prefault=False)
        except OSError as e:
            raise BundleError(f"{self.path}: Annoy cannot load the index ({e})") from None
        self.n_items = int(self._ann.get_n_items())
        if self.n_items != self.layout.n_items:
            raise BundleError(
                f"{self.path}: n_items: Annoy found {self.n_items} items, the check {self.layout.n_items}"
            )
        self._unit = unit_items(data, self.dim, self.n_items)

    def __len__(self) -> int:
        return self.n_items

    def item(self, i: int) -> np.ndarray:
        """Item ``i``'s stored vector, float32 (dim,); :class:`IndexError` outside [0, n_items)."""
        i = int(i)
        if not 0 <= i < self.n_items:
            raise IndexError(f"item {i} is not in [0, {self.n_items})")
        return np.asarray(self._ann.get_item_vector(i), dtype=np.float32)

    def cosines(self, vec: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """float64 cosines of ``vec`` with the items ``ids`` (see :func:`unit_items`)."""
        return cosines(self._unit, vec, ids)

    def search(self, vec: np.ndarray, k: int = 10, search_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``k`` nearest items of ``vec``, Annoy inspecting ``search_k`` nodes (None: the index's own):
        (ids int64, float64 cosines), best first, ties by id. A wrong-sized or non-finite ``vec`` is a
        :class:`BundleError`."""
        sk = self.search_k if search_k is None else int(search_k)
        v = np.asarray(vec, dtype=np.float32).reshape(-1)
        if v.size != self.dim or not np.all(np.isfinite(v)):
            raise BundleError(
                f"{self.path}: query vector of dimension {v.size} (finite: {bool(np.isfinite(v).all())}), "
                f"the index takes {self.dim}"
            )
        found = np.asarray(self._ann.get_nns_by_vector(v.tolist(), int(k), search_k=sk), dtype=np.int64)
        cos = self.cosines(v, found)
        o = np.lexsort((found, -cos))  # best first; equal cosines by item id, never by the CPU's rounding
        return found[o], cos[o]

    def unload(self) -> None:
        """Release Annoy's mapping of the index; the object cannot search afterwards."""
        self._ann.unload()
