"""The local overlay: confirmed cases enrolled on this device, searched together with the bundle's index.

Location: ``$ECGRET_HOME/overlay/<bundle-hash>/`` if ``ECGRET_HOME`` is set, else
``$XDG_DATA_HOME/ecgret/overlay/<bundle-hash>/`` (default ``~/.local/share/ecgret/overlay/<bundle-hash>/``).
An overlay belongs to one bundle (its embeddings come from that bundle's encoder), hence the hash.

One file, ``overlay.json``: ``{"format": "ecgret-overlay", "format_version": 1, "bundle": hash, "dim": D,
"cases": [{case fields..., "embedding": [D floats]}]}``. Every change is a locked read-modify-write
(``fcntl.flock`` on ``overlay.lock``) that writes a temporary file in the same folder, fsyncs it, renames
it over ``overlay.json`` (``os.replace``, atomic on POSIX) and fsyncs the folder: a process killed at any
point leaves either the old or the new overlay, never a mix. A failed write (full disk) leaves the old
one and raises :class:`~edge.errors.OverlayError`. Search over the overlay is exact (cosine).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import OverlayError

FORMAT = "ecgret-overlay"
FORMAT_VERSION = 1
FILE = "overlay.json"
LOCK = "overlay.lock"
_TMP_PREFIX = ".overlay.json.tmp-"
_CASE_FIELDS = ("case_id", "super_class", "sub_class", "form", "rhythm", "statements", "report", "source",
                "enrolled", "record")

__all__ = ["Overlay", "overlay_home", "overlay_dir", "atomic_write"]


def overlay_home() -> Path:
    env = os.environ.get("ECGRET_HOME")
    if env:
        return Path(env).expanduser() / "overlay"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "ecgret" / "overlay"


def overlay_dir(bundle_hash: str) -> Path:
    return overlay_home() / bundle_hash


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: :func:`edge.atomicio.atomic_write` (an ``O_EXCL`` temp file
    ``_TMP_PREFIX + <random>`` in the same folder, fsync, rename, fsync folder)."""
    from .atomicio import atomic_write as _atomic_write

    _atomic_write(path, data)


class Overlay:
    """The enrolled cases of one bundle. ``cases`` (dicts without the embedding) and ``embeddings`` (n, D)."""

    def __init__(self, directory, dim: int, bundle_hash: str):
        self.dir = Path(directory)
        self.dim = int(dim)
        self.bundle_hash = str(bundle_hash)
        self.cases: tuple[dict, ...] = ()
        self.embeddings = np.zeros((0, self.dim), dtype=np.float32)
        self._load()

    @classmethod
    def for_bundle(cls, bundle) -> "Overlay":
        return cls(overlay_dir(bundle.hash), bundle.dim, bundle.hash)

    @property
    def file(self) -> Path:
        return self.dir / FILE

    def __len__(self) -> int:
        return len(self.cases)

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        cases, emb = self._read()
        self.cases, self.embeddings = cases, emb

    def _read(self) -> tuple[tuple[dict, ...], np.ndarray]:
        p = self.file
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            return (), np.zeros((0, self.dim), dtype=np.float32)
        except OSError as e:
            raise OverlayError(f"{p}: unreadable ({e})") from None
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise OverlayError(f"{p}: not valid JSON ({e}); move it aside to start a new overlay") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise OverlayError(f"{p}: format: not an ecgret overlay")
        if doc.get("format_version") != FORMAT_VERSION:
            raise OverlayError(f"{p}: format_version: {doc.get('format_version')!r}, expected {FORMAT_VERSION}")
        if doc.get("bundle") != self.bundle_hash:
            raise OverlayError(f"{p}: bundle: overlay belongs to bundle {doc.get('bundle')!r}, not {self.bundle_hash}")
        if doc.get("dim") != self.dim:
            raise OverlayError(f"{p}: dim: {doc.get('dim')!r}, the bundle's encoder gives {self.dim}")
        cases, vecs = [], []
        for i, c in enumerate(doc.get("cases", [])):
            e = c.get("embedding") if isinstance(c, dict) else None
            if not isinstance(c, dict) or not isinstance(c.get("case_id"), str) or not isinstance(e, list) \
                    or len(e) != self.dim:
                raise OverlayError(f"{p}: cases[{i}]: malformed entry")
            cases.append({k: v for k, v in c.items() if k != "embedding"})
            vecs.append(e)
        emb = np.asarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        return tuple(cases), emb

    # ------------------------------------------------------------------ searching
    def search(self, vec: np.ndarray, k: int) -> list[tuple[dict, float]]:
        """Exact cosine search: the top ``k`` (case, score), best first."""
        if not len(self.cases) or k <= 0:
            return []
        s = self.embeddings @ np.asarray(vec, dtype=np.float32)
        order = np.argsort(-s, kind="stable")[:k]
        return [(self.cases[i], float(s[i])) for i in order]

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self):
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OverlayError(f"{self.dir}: cannot create the overlay folder ({e})") from None
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
            for stale in self.dir.glob(_TMP_PREFIX + "*"):  # left by a writer killed mid-write
                with contextlib.suppress(OSError):
                    stale.unlink()
            self._load()  # another process may have written since we read
            yield
        finally:
            os.close(fd)

    def _write(self, cases: list[dict], emb: np.ndarray) -> None:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "bundle": self.bundle_hash, "dim": self.dim,
               "cases": [dict(c, embedding=[float(x) for x in e]) for c, e in zip(cases, emb)]}
        data = (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            atomic_write(self.file, data)
        except OSError as e:
            raise OverlayError(f"{self.file}: could not write the overlay ({e.strerror or e}); "
                               "nothing was changed") from None
        self.cases, self.embeddings = tuple(cases), np.asarray(emb, dtype=np.float32).reshape(-1, self.dim)

    def next_id(self) -> str:
        n = [int(m.group(1)) for c in self.cases if (m := re.fullmatch(r"local:(\d+)", c["case_id"]))]
        return f"local:{max(n, default=0) + 1}"

    def enroll(self, case: dict, embedding: np.ndarray, reserved_ids=()) -> str:
        """Add a case (fields of cases.jsonl; ``case_id`` optional: ``local:<n>``). Returns its id."""
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if v.size != self.dim or not np.all(np.isfinite(v)):
            raise OverlayError(f"embedding of dimension {v.size}, the overlay takes {self.dim}")
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        with self._locked():
            c = {k: case[k] for k in _CASE_FIELDS if k in case}
            cid = c.get("case_id") or self.next_id()
            if cid in {x["case_id"] for x in self.cases} or cid in reserved_ids:
                raise OverlayError(f"case id {cid!r} already exists; choose another --id")
            c["case_id"] = cid
            for k in ("super_class", "sub_class", "form", "rhythm"):
                c[k] = list(c.get(k, []))
            c.setdefault("statements", "")
            c.setdefault("report", "")
            c["source"] = c.get("source") or "local"
            self._write(list(self.cases) + [c], np.vstack([self.embeddings, v[None]]))
        return cid

    def forget(self, case_id: str) -> dict:
        """Remove one enrolled case; returns it. Unknown ids raise OverlayError."""
        with self._locked():
            ids = [c["case_id"] for c in self.cases]
            if case_id not in ids:
                raise OverlayError(f"no enrolled case {case_id!r} in {self.file}"
                                   + (f" (enrolled: {', '.join(ids[:10])})" if ids else " (the overlay is empty)"))
            i = ids.index(case_id)
            gone = self.cases[i]
            keep = [j for j in range(len(ids)) if j != i]
            self._write([self.cases[j] for j in keep], self.embeddings[keep])
        return gone
