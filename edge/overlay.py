"""The local overlay: confirmed cases enrolled on this device, searched together with the bundle's index.

Location: ``$ECGRET_HOME/overlay/<bundle-id>/`` if ``ECGRET_HOME`` is set, else
``$XDG_DATA_HOME/ecgret/overlay/<bundle-id>/`` (default ``~/.local/share/ecgret/overlay/<bundle-id>/``).
An overlay belongs to one bundle (its embeddings come from that bundle's encoder, preprocessing and imaging),
hence the bundle id: the sha256 of the bundle's ``manifest.json``, which covers those settings and every file.
Overlays of ecgret before bundle ids lived under the old 16-digit files hash (it did not cover the manifest);
one of a *trusted* (signed) bundle is copied to the new place on first use (the old file is left as it was).

One file, ``overlay.json``: ``{"format": "ecgret-overlay", "format_version": 2, "bundle": id, "dim": D,
"next_id": n, "cases": [{case fields..., "embedding": [D floats], "signal": {...}}]}``. ``next_id`` is the
number the next ``local:<n>`` id takes: ids are never reused, not even after ``forget``. ``signal`` is the
case's preprocessed recording (the leads it was recorded on, z-scored, at the bundle's rate; float16, base64),
so that ``ecgret cases reembed`` can move the case to another bundle (:func:`reembed`); version 1 files (no
``next_id``, no signals) are read and written back as version 2. Reading it is bounded (a regular file of at
most 64 MiB, :func:`edge.schema.loads_bounded`) and every case is checked (ids, types, a finite unit embedding
of dimension D, a signal that decodes to its declared shape); a bad file is one
:class:`~edge.errors.OverlayError` naming the field. ``strict=False`` (the query path) turns that into
:attr:`Overlay.error` and an empty overlay, so a hand-corrupted file never stops queries; writes (enrol, forget)
always re-read strictly and refuse to overwrite a file they cannot read. Every change is a locked
read-modify-write (``fcntl.flock`` on ``overlay.lock``) that writes a temporary file in the same folder, fsyncs
it, renames it over ``overlay.json`` (``os.replace``, atomic on POSIX) and fsyncs the folder: a process killed
at any point leaves either the old or the new overlay, never a mix. A failed write (full disk) leaves the old
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
from .schema import JSONLimitError, loads_bounded, printable, read_bounded

FORMAT = "ecgret-overlay"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
FILE = "overlay.json"
LOCK = "overlay.lock"
_TMP_PREFIX = ".overlay.json.tmp-"
_CASE_FIELDS = (
    "case_id",
    "super_class",
    "sub_class",
    "form",
    "rhythm",
    "statements",
    "report",
    "source",
    "enrolled",
    "record",
    "signal",
)
_LIST_FIELDS = ("super_class", "sub_class", "form", "rhythm")
_TEXT_FIELDS = ("statements", "report", "source", "enrolled", "record")
MAX_BYTES = 64 << 20
MAX_CASES = 100_000
MAX_TEXT = 64 << 10

__all__ = [
    "Overlay",
    "overlay_home",
    "overlay_dir",
    "atomic_write",
    "stored_signal",
    "decode_signal",
    "reembed",
    "other_overlays",
    "DUPLICATE_R",
    "DUPLICATE_COS",
]

DUPLICATE_R = 0.99  # a recording whose preprocessed signal correlates this well with an enrolled one is the same
DUPLICATE_COS = 0.998  # (for cases enrolled without a signal) an embedding this close is the same recording
MAX_SIGNAL_VALUES = 32 * 10_000  # up to 32 leads x 10,000 samples


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

    def __init__(self, directory, dim: int, bundle_hash: str, *, strict: bool = True):
        self.dir = Path(directory)
        self.dim = int(dim)
        self.bundle_hash = str(bundle_hash)
        self.cases: tuple[dict, ...] = ()
        self.embeddings = np.zeros((0, self.dim), dtype=np.float32)
        self.next_n = 1  # the number of the next local:<n> id (never reused)
        self.error: str | None = None  # why the overlay was ignored (strict=False only)
        self.migrated_from: Path | None = None
        try:
            self._load()
        except OverlayError as e:
            if strict:
                raise
            self.error = str(e)

    @classmethod
    def for_bundle(cls, bundle, *, strict: bool = True) -> Overlay:
        """The overlay of ``bundle`` (keyed by its id). ``strict=False``: an unreadable overlay is ignored
        (:attr:`error` says why) instead of raising."""
        bid = getattr(bundle, "id", "") or bundle.hash
        d = overlay_dir(bid)
        migrated = None
        trust = getattr(bundle, "trust", None)
        if bid != bundle.hash and trust is not None and trust.trusted and not os.path.lexists(d / FILE):
            migrated = _migrate_legacy(overlay_dir(bundle.legacy_hash), bundle.legacy_hash, d, bid, bundle.dim)
        ov = cls(d, bundle.dim, bid, strict=strict)
        ov.migrated_from = migrated
        return ov

    @property
    def file(self) -> Path:
        return self.dir / FILE

    def __len__(self) -> int:
        return len(self.cases)

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        raw = _read_file(self.file)
        if raw is None:
            self.cases, self.embeddings, self.next_n = (), np.zeros((0, self.dim), dtype=np.float32), 1
            return
        self.cases, self.embeddings, self.next_n = _parse(raw, self.file, self.bundle_hash, self.dim)

    # ------------------------------------------------------------------ searching
    def search(self, vec: np.ndarray, k: int) -> list[tuple[dict, float]]:
        """Exact cosine search: the top ``k`` (case, score), best first."""
        if not len(self.cases) or k <= 0:
            return []
        from .index import cosines
        s = cosines(self.embeddings.astype(np.float64), vec)   # the device's one cosine (float64, CPU-independent)
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

    def _write(self, cases: list[dict], emb: np.ndarray, next_n: int | None = None) -> None:
        next_n = max(self.next_n if next_n is None else next_n, _max_local(cases) + 1)
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bundle": self.bundle_hash,
            "dim": self.dim,
            "next_id": next_n,
            "cases": [dict(c, embedding=[float(x) for x in e]) for c, e in zip(cases, emb)],
        }
        data = (json.dumps(doc, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            atomic_write(self.file, data)
        except OSError as e:
            raise OverlayError(
                f"{self.file}: could not write the overlay ({e.strerror or e}); nothing was changed"
            ) from None
        self.cases, self.embeddings = tuple(cases), np.asarray(emb, dtype=np.float32).reshape(-1, self.dim)
        self.next_n = next_n

    def next_id(self) -> str:
        """The id the next case without ``--id`` gets: ``local:<n>``, n never given before in this overlay."""
        return f"local:{max(self.next_n, _max_local(self.cases) + 1)}"

    def duplicate_of(self, embedding: np.ndarray, signal: dict | None = None) -> tuple[str, str] | None:
        """(case id, why) of an enrolled case that is the same recording: preprocessed signals that correlate
        at >= :data:`DUPLICATE_R` over their common leads, or (a case without a signal) embeddings of cosine
        >= :data:`DUPLICATE_COS`. None when there is none."""
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        new = decode_signal(signal) if signal else None
        for c, e in zip(self.cases, self.embeddings):
            old = decode_signal(c["signal"]) if c.get("signal") else None
            if new is not None and old is not None:
                r = _correlation(new, old)
                if r is not None and r >= DUPLICATE_R:
                    return c["case_id"], f"its signal correlates {r:.3f} with {c['case_id']}"
                continue
            cos = float(e @ v)
            if cos >= DUPLICATE_COS:
                return c["case_id"], f"its embedding has similarity {cos:.3f} with {c['case_id']}"
        return None

    def enroll(self, case: dict, embedding: np.ndarray, reserved_ids=(), *, force: bool = False) -> str:
        """Add a case (fields of cases.jsonl; ``case_id`` optional: ``local:<n>``; ``signal`` optional, from
        :func:`stored_signal`). A recording already enrolled (:meth:`duplicate_of`) is refused unless ``force``.
        Returns its id."""
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if v.size != self.dim or not np.all(np.isfinite(v)):
            raise OverlayError(f"embedding of dimension {v.size}, the overlay takes {self.dim}")
        n = float(np.linalg.norm(v))
        if n < 1e-6:
            raise OverlayError("embedding is zero: nothing to enrol")
        v = v / n
        _check_new_case(case)
        with self._locked():
            c = {k: case[k] for k in _CASE_FIELDS if k in case}
            cid = c.get("case_id") or self.next_id()
            if cid in {x["case_id"] for x in self.cases} or cid in reserved_ids:
                raise OverlayError(f"case id {cid!r} already exists; choose another --id")
            dup = None if force else self.duplicate_of(v, c.get("signal"))
            if dup is not None:
                raise OverlayError(
                    f"this recording is already enrolled as {dup[0]} ({dup[1]}); enrol it again only with --force"
                )
            c["case_id"] = cid
            for k in ("super_class", "sub_class", "form", "rhythm"):
                c[k] = list(c.get(k, []))
            c.setdefault("statements", "")
            c.setdefault("report", "")
            c["source"] = c.get("source") or "local"
            self._write(list(self.cases) + [c], np.vstack([self.embeddings, v[None]]))
        return cid

    def forget(self, *case_ids: str) -> dict | list[dict]:
        """Remove enrolled cases, all or none: an unknown id raises OverlayError and nothing is removed.
        Returns the removed case (one id) or the list of them. Their ids are not given again."""
        with self._locked():
            ids = [c["case_id"] for c in self.cases]
            unknown = [c for c in dict.fromkeys(case_ids) if c not in ids]
            if unknown or not case_ids:
                names = ", ".join(repr(c) for c in unknown) or "(none given)"
                raise OverlayError(
                    f"no enrolled case {names} in {self.file}"
                    + (
                        f" (enrolled: {', '.join(ids[:10])}{', ...' if len(ids) > 10 else ''})"
                        if ids
                        else " (the overlay is empty)"
                    )
                    + "; nothing was removed"
                )
            drop = {ids.index(c) for c in case_ids}
            gone = [self.cases[i] for i in sorted(drop)]
            keep = [j for j in range(len(ids)) if j not in drop]
            self._write([self.cases[j] for j in keep], self.embeddings[keep])
        return gone[0] if len(case_ids) == 1 else gone


# ------------------------------------------------------------------ reading and checking overlay.json


def _read_file(p: Path) -> bytes | None:
    """The bytes of ``overlay.json`` (None if there is none): a regular file, not a symlink, FIFO or device,
    of at most :data:`MAX_BYTES`, read without blocking."""
    import stat

    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OverlayError(
            f"{p}: file: unreadable ({e.strerror or e}"
            + ("; a symbolic link is not followed" if os.path.islink(p) else "")
            + ")"
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OverlayError(f"{p}: file: not a regular file")
        if st.st_size > MAX_BYTES:
            raise OverlayError(f"{p}: file: {st.st_size:,} bytes, more than the {MAX_BYTES:,} allowed")
        data = read_bounded(fd, MAX_BYTES + 1)
    except OSError as e:
        raise OverlayError(f"{p}: file: unreadable ({e.strerror or e})") from None
    finally:
        os.close(fd)
    raw = data
    if len(raw) > MAX_BYTES:
        raise OverlayError(f"{p}: file: more than {MAX_BYTES:,} bytes")
    return raw


def _bad(p, fld, msg) -> OverlayError:
    return OverlayError(f"{p}: {fld}: {msg}")


def _max_local(cases) -> int:
    return max((int(m.group(1)) for c in cases if (m := re.fullmatch(r"local:(\d+)", c["case_id"]))), default=0)


def parse_overlay(raw: bytes, p, bundle_id: str, dim: int) -> tuple[tuple[dict, ...], np.ndarray]:
    """Check overlay.json bytes; (cases without embeddings, (n, dim) float32 unit embeddings)."""
    cases, emb, _ = _parse(raw, p, bundle_id, dim)
    return cases, emb


def _parse(raw: bytes, p, bundle_id: str, dim: int) -> tuple[tuple[dict, ...], np.ndarray, int]:
    """:func:`parse_overlay` and the next local id number."""
    try:
        doc = loads_bounded(raw, max_bytes=MAX_BYTES, max_depth=8)
    except JSONLimitError as e:
        raise OverlayError(f"{p}: {e}; move it aside to start a new overlay") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise _bad(p, "format", "not an ecgret overlay")
    if doc.get("format_version") not in READ_VERSIONS or isinstance(doc.get("format_version"), bool):
        raise _bad(
            p,
            "format_version",
            f"{printable(repr(doc.get('format_version')), 20)}, expected one of {', '.join(map(str, READ_VERSIONS))}",
        )
    if doc.get("bundle") != bundle_id:
        raise _bad(p, "bundle", f"overlay belongs to bundle {printable(repr(doc.get('bundle')), 70)}, not {bundle_id}")
    if doc.get("dim") != dim or isinstance(doc.get("dim"), bool):
        raise _bad(p, "dim", f"{printable(repr(doc.get('dim')), 20)}, the bundle's encoder gives {dim}")
    items = doc.get("cases", [])
    if not isinstance(items, list):
        raise _bad(p, "cases", "not an array")
    if len(items) > MAX_CASES:
        raise _bad(p, "cases", f"{len(items)} cases, more than the {MAX_CASES} allowed")
    cases, seen = [], set()
    emb = np.zeros((len(items), dim), dtype=np.float32)
    for i, c in enumerate(items):
        where = f"cases[{i}]"
        if not isinstance(c, dict):
            raise _bad(p, where, "malformed entry (not an object)")
        cid = c.get("case_id")
        if not isinstance(cid, str) or not 0 < len(cid) <= 200 or not cid.isprintable():
            raise _bad(
                p, f"{where}.case_id", "malformed entry (missing, empty, too long or holding control characters)"
            )
        if cid in seen:
            raise _bad(p, f"{where}.case_id", f"malformed entry (duplicate id {cid!r})")
        seen.add(cid)
        for k in _LIST_FIELDS:
            v = c.get(k, [])
            if not isinstance(v, list) or len(v) > 1000 or not all(isinstance(x, str) and len(x) <= 200 for x in v):
                raise _bad(p, f"{where}.{k}", "malformed entry (not a list of short strings)")
        for k in _TEXT_FIELDS:
            v = c.get(k)
            if v is not None and (not isinstance(v, str) or len(v) > MAX_TEXT):
                raise _bad(p, f"{where}.{k}", f"malformed entry (not a string of at most {MAX_TEXT} characters)")
        listed = c.get("embedding")
        if not isinstance(listed, list) or len(listed) != dim or not all(type(x) in (int, float) for x in listed):
            raise _bad(p, f"{where}.embedding", f"malformed entry (not {dim} numbers)")
        v = np.asarray(listed, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            n = float(np.sqrt(v @ v)) if np.all(np.isfinite(v)) else float("nan")
        if not abs(n - 1.0) <= 1e-3:
            raise _bad(p, f"{where}.embedding", f"malformed entry (norm {n:.4g}, enrolled embeddings have norm 1)")
        if c.get("signal") is not None:
            try:
                decode_signal(c["signal"])
            except (ValueError, TypeError, KeyError) as err:
                raise _bad(p, f"{where}.signal", f"malformed entry ({printable(err, 120)})") from None
        emb[i] = v
        cases.append({key: val for key, val in c.items() if key != "embedding"})
    nxt = doc.get("next_id", 1)
    if isinstance(nxt, bool) or not isinstance(nxt, int) or not 1 <= nxt <= 10**12:
        raise _bad(p, "next_id", f"{printable(repr(nxt), 20)}, expected a positive integer")
    return tuple(cases), emb, max(nxt, _max_local(cases) + 1)


# ------------------------------------------------------------------ stored signals and moving to another bundle


def stored_signal(pre) -> dict:
    """The preprocessed recording of an :class:`edge.signal.PreprocessedECG` as the overlay stores it: the
    leads that were recorded (not the derived ones, not the missing ones), float16, base64, with its rate."""
    import base64

    from .leads import LEADS12

    keep = [j for j in range(len(LEADS12)) if pre.present[j] and not pre.derived[j]]
    x = np.ascontiguousarray(pre.signal[: max(int(pre.n_valid), 1), keep], dtype="<f2")
    return {
        "fs": float(pre.fs),
        "leads": [LEADS12[j] for j in keep],
        "dtype": "float16",
        "shape": list(x.shape),
        "data": base64.b64encode(x.tobytes()).decode("ascii"),
    }


def decode_signal(sig: dict) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """(float32 (T, n) signal, rate, lead names) of a stored signal; ValueError when it is malformed."""
    import base64
    import binascii

    from .leads import LEADS12

    if not isinstance(sig, dict):
        raise ValueError("not an object")
    fs, leads, shape, data = sig.get("fs"), sig.get("leads"), sig.get("shape"), sig.get("data")
    if sig.get("dtype") != "float16":
        raise ValueError("dtype must be float16")
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not 10 <= fs <= 32000:
        raise ValueError("fs must be a rate in Hz")
    if (
        not isinstance(leads, list)
        or not leads
        or not all(x in LEADS12 for x in leads)
        or len(set(leads)) != len(leads)
    ):
        raise ValueError("leads must be distinct lead names")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(n) is int and n > 0 for n in shape)
        or shape[1] != len(leads)
        or shape[0] * shape[1] > MAX_SIGNAL_VALUES
    ):
        raise ValueError("shape must be [samples, leads]")
    if not isinstance(data, str) or len(data) > 4 * MAX_SIGNAL_VALUES:
        raise ValueError("data must be base64 text")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data is not base64") from None
    if len(raw) != 2 * shape[0] * shape[1]:
        raise ValueError(f"data holds {len(raw)} bytes, the shape needs {2 * shape[0] * shape[1]}")
    x = np.frombuffer(raw, dtype="<f2").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("data holds NaN or Inf")
    return x, float(fs), tuple(leads)


def _correlation(a, b) -> float | None:
    """Pearson correlation of two decoded signals over their common leads and samples (None: nothing shared)."""
    (xa, fa, la), (xb, fb, lb) = a, b
    common = [x for x in la if x in lb]
    n = min(len(xa), len(xb))
    if fa != fb or not common or n < 10:
        return None
    u = np.stack([xa[:n, la.index(x)] for x in common]).ravel().astype(np.float64)
    w = np.stack([xb[:n, lb.index(x)] for x in common]).ravel().astype(np.float64)
    u, w = u - u.mean(), w - w.mean()
    den = float(np.sqrt((u @ u) * (w @ w)))
    return float(u @ w / den) if den > 0 else None


def other_overlays(bundle_id: str) -> list[tuple[Path, int]]:
    """(folder, number of cases) of the overlays of other bundles under :func:`overlay_home` that hold cases."""
    out = []
    home = overlay_home()
    for d in sorted(home.iterdir()) if home.is_dir() else []:
        if d.name == bundle_id or not (d / FILE).is_file():
            continue
        try:
            src = _open_any(d)
        except OverlayError:
            continue
        if len(src[0]):
            out.append((d, len(src[0])))
    return out


def _open_any(d: Path) -> tuple[tuple[dict, ...], np.ndarray]:
    """The cases of the overlay in folder ``d``, whatever bundle and dimension it belongs to."""
    raw = _read_file(Path(d) / FILE)
    if raw is None:
        raise OverlayError(f"{d}: no {FILE} there")
    try:
        doc = loads_bounded(raw, max_bytes=MAX_BYTES, max_depth=8)
    except JSONLimitError as e:
        raise OverlayError(f"{Path(d) / FILE}: {e}") from None
    dim = doc.get("dim") if isinstance(doc, dict) else None
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= 100_000:
        raise _bad(Path(d) / FILE, "dim", "not a dimension")
    cases, emb, _ = _parse(raw, Path(d) / FILE, str(doc.get("bundle")), dim)
    return cases, emb


def reembed(target: Overlay, retriever, source_dir, *, reserved_ids=()) -> dict:
    """Move the cases of the overlay in ``source_dir`` (another bundle's) to ``target``: each stored signal is
    embedded again by ``retriever`` (an :class:`edge.pipeline.Retriever` of the target's bundle). A case
    without a signal is embedded from its original file (``record``) if that is still readable. Cases whose id
    the target already holds are left (a rerun moves nothing twice). The source is not changed.
    Returns ``{"moved": [ids], "present": [ids], "failed": [(id, why)]}``."""
    from .errors import EcgretError
    from .record import Record

    cases, _ = _open_any(Path(source_dir))
    have = {c["case_id"] for c in target.cases}
    moved, present, failed = [], [], []
    new_cases, new_vecs = [], []
    for c in cases:
        cid = c["case_id"]
        if cid in have:
            present.append(cid)
            continue
        if cid in reserved_ids:
            failed.append((cid, "the new bundle's archive has a case of this id"))
            continue
        try:
            if c.get("signal"):
                x, fs, leads = decode_signal(c["signal"])
                rec = Record(x.astype(np.float64), fs, leads, cid, {})
            elif c.get("record"):
                from .io import read_record

                rec = read_record(c["record"])
            else:
                raise EcgretError("no stored signal and no original file (enrolled before signals were kept)")
            vec, _, pre, _ = retriever.embed_record(rec)
        except (EcgretError, OSError, ValueError) as e:
            failed.append((cid, printable(e, 200)))
            continue
        v = np.asarray(vec, dtype=np.float32)
        new_cases.append(dict(c, signal=stored_signal(pre)))
        new_vecs.append(v / max(float(np.linalg.norm(v)), 1e-12))
        moved.append(cid)
    if new_cases:
        with target._locked():
            taken = {c["case_id"] for c in target.cases}
            keep = [(c, v) for c, v in zip(new_cases, new_vecs) if c["case_id"] not in taken]
            moved = [c["case_id"] for c, _ in keep]
            target._write(
                list(target.cases) + [c for c, _ in keep],
                np.vstack([target.embeddings] + [v[None] for _, v in keep]),
                max(target.next_n, _max_local(cases) + 1),
            )
    return {"moved": moved, "present": present, "failed": failed}


def _check_new_case(case: dict) -> None:
    """A case to enrol: the fields overlay.json can hold, as text that encodes (no lone surrogates)."""
    for k in _CASE_FIELDS:
        v = case.get(k)
        if v is None:
            continue
        if k == "signal":
            try:
                decode_signal(v)
            except (ValueError, TypeError, KeyError) as e:
                raise OverlayError(f"signal: {e}") from None
            continue
        vals = v if k in _LIST_FIELDS and isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if not isinstance(x, str):
                raise OverlayError(f"{k}: must be text, got {type(x).__name__}")
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                raise OverlayError(f"{k}: not valid text (undecodable bytes in the argument?)") from None
            if len(x) > (200 if k == "case_id" or k in _LIST_FIELDS else MAX_TEXT):
                raise OverlayError(f"{k}: too long ({len(x)} characters)")
    cid = case.get("case_id")
    if cid is not None and (not cid or not cid.isprintable()):
        raise OverlayError(f"case_id: {printable(repr(cid), 60)} is empty or holds control characters")


def _migrate_legacy(old_dir: Path, old_hash: str, new_dir: Path, new_id: str, dim: int) -> Path | None:
    """Copy an overlay kept under the old files hash to the bundle id's folder (once; the old file stays).
    Returns the old file's path when it was copied; None when there was nothing (valid) to copy."""
    old = old_dir / FILE
    try:
        raw = _read_file(old)
        if raw is None:
            return None
        cases, emb = parse_overlay(raw, old, old_hash, dim)
    except OverlayError:
        return None  # a broken old overlay is left alone (and not migrated)
    ov = Overlay(new_dir, dim, new_id, strict=False)
    if ov.error is not None:
        return None
    with ov._locked():
        if len(ov.cases) or os.path.lexists(ov.file):
            return None  # another process migrated it first
        ov._write(list(cases), emb)
    return old
