"""The local overlay: confirmed cases enrolled on this device, searched together with the bundle's index.

Location: ``$ECGRET_HOME/overlay/<bundle-id>/`` if ``ECGRET_HOME`` is set, else
``$XDG_DATA_HOME/ecgret/overlay/<bundle-id>/`` (default ``~/.local/share/ecgret/overlay/<bundle-id>/``).
An overlay belongs to one bundle (its embeddings come from that bundle's encoder, preprocessing and imaging),
hence the bundle id: the sha256 of the bundle's ``manifest.json``, which covers those settings and every file.
Overlays of ecgret before bundle ids lived under the old 16-digit files hash (it did not cover the manifest);
one of a *trusted* (signed) bundle is copied to the new place on first use (the old file is left as it was).

One file, ``overlay.json`` (:mod:`edge.overlay_file`: its format, bounded reading and checks). ``next_id`` is the
number the next ``local:<n>`` id takes: ids are never reused, not even after ``forget``. Each case keeps its
preprocessed recording (:mod:`edge.overlay_signal`), so that ``ecgret cases reembed`` can move it to another
bundle (:func:`reembed`). A bad file is one :class:`~edge.errors.OverlayError` naming the field.
``strict=False`` (the query path) turns that into :attr:`Overlay.error` and an empty overlay, so a
hand-corrupted file never stops queries; writes (enrol, forget) always re-read strictly and refuse to overwrite
a file they cannot read. Every change is a locked read-modify-write (``fcntl.flock`` on
``overlay.lock``) that writes a temporary file in the same folder, fsyncs it, renames it over ``overlay.json``
(:func:`edge.atomicio.atomic_write`) and fsyncs the folder: a process killed at any point leaves either the old
or the new overlay, never a mix. A failed write (full disk) leaves the old one and raises
:class:`~edge.errors.OverlayError`. Search over the overlay is exact (cosine).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from .atomicio import TMP_MARK, atomic_write
from .errors import OverlayError
from .overlay_file import (
    CASE_FIELDS,
    FILE,
    FORMAT,
    FORMAT_VERSION,
    MAX_BYTES,
    MAX_CASES,
    MAX_NEXT_ID,
    check_new_case,
    max_local,
    open_any,
    parse_overlay,
    read_file,
)
from .overlay_signal import correlation, decode_signal, stored_signal
from .schema import printable
from .termtext import encodable

LOCK = "overlay.lock"
_TMP_PREFIX = f".{FILE}{TMP_MARK}"  # the temporary files of edge.atomicio: swept when a writer was killed

__all__ = [
    "Overlay",
    "overlay_home",
    "overlay_dir",
    "local_case",
    "reembed",
    "reembed_source",
    "own_overlay",
    "other_overlays",
    "DUPLICATE_R",
    "DUPLICATE_COS",
]

DUPLICATE_R = 0.99  # a recording whose preprocessed signal correlates this well with an enrolled one is the same
DUPLICATE_COS = 0.998  # (for cases enrolled without a signal) an embedding this close is the same recording


def overlay_home() -> Path:
    """The folder holding every bundle's overlay: ``$ECGRET_HOME/overlay``, else
    ``$XDG_DATA_HOME/ecgret/overlay`` (default ``~/.local/share/ecgret/overlay``)."""
    env = os.environ.get("ECGRET_HOME")
    if env:
        return Path(env).expanduser() / "overlay"
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "ecgret" / "overlay"


def overlay_dir(bundle_hash: str) -> Path:
    """The overlay folder of one bundle, named by its id (or, for old overlays, its legacy hash)."""
    return overlay_home() / bundle_hash


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
        """The path of this overlay's ``overlay.json``."""
        return self.dir / FILE

    def __len__(self) -> int:
        return len(self.cases)

    # ------------------------------------------------------------------ reading
    def _load(self) -> None:
        raw = read_file(self.file)
        if raw is None:
            self.cases, self.embeddings, self.next_n = (), np.zeros((0, self.dim), dtype=np.float32), 1
            return
        self.cases, self.embeddings, self.next_n = parse_overlay(raw, self.file, self.bundle_hash, self.dim)

    # ------------------------------------------------------------------ searching
    def search(self, vec: np.ndarray, k: int) -> list[tuple[dict, float]]:
        """Exact cosine search: the top ``k`` (case, score), best first."""
        if not len(self.cases) or k <= 0:
            return []
        from .index import cosines

        s = cosines(self.embeddings.astype(np.float64), vec)  # the device's one cosine (float64, CPU-independent)
        order = np.argsort(-s, kind="stable")[:k]
        return [(self.cases[i], float(s[i])) for i in order]

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def _locked(self):
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OverlayError(f"{self.dir}: cannot create the overlay folder ({e})") from None
        try:  # never through a planted link: O_NOFOLLOW (it would create or lock a file outside the overlay folder)
            fd = os.open(
                self.dir / LOCK,
                os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                0o644,
            )
        except OSError as e:
            why = "a symbolic link is not followed" if os.path.islink(self.dir / LOCK) else (e.strerror or str(e))
            raise OverlayError(
                f"{self.dir / LOCK}: cannot open the overlay's lock ({why}); nothing was changed"
            ) from None
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
        next_n = max(self.next_n if next_n is None else next_n, max_local(cases) + 1)
        if next_n > MAX_NEXT_ID:  # a file reading would refuse: never written
            raise OverlayError(
                f"{self.file}: the local ids are used up to local:{MAX_NEXT_ID - 1}; give the case an --id of its own "
                "(nothing was changed)"
            )
        doc = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "bundle": self.bundle_hash,
            "dim": self.dim,
            "next_id": next_n,
            "cases": [dict(c, embedding=[float(x) for x in e]) for c, e in zip(cases, emb)],
        }
        # a lone surrogate a file once held (JSON escapes allow one) becomes U+FFFD rather than an encoding error
        data = (encodable(json.dumps(doc, ensure_ascii=False)) + "\n").encode("utf-8")
        if len(cases) > MAX_CASES or len(data) > MAX_BYTES:  # reading would refuse the file: never written
            raise OverlayError(
                f"{self.file}: the overlay would hold {len(cases):,} cases in {len(data):,} bytes, over the "
                f"{MAX_CASES:,} cases or {MAX_BYTES:,} bytes one overlay may hold; forget cases no longer needed "
                "(nothing was changed)"
            )
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
        return f"local:{max(self.next_n, max_local(self.cases) + 1)}"

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
                r = correlation(new, old)
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
        check_new_case(case)
        with self._locked():
            c = {k: case[k] for k in CASE_FIELDS if k in case}
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


def other_overlays(bundle_id: str) -> list[tuple[Path, int]]:
    """(folder, number of cases) of the overlays of other bundles under :func:`overlay_home` that hold cases."""
    out = []
    home = overlay_home()
    for d in sorted(home.iterdir()) if home.is_dir() else []:
        if d.name == bundle_id or not (d / FILE).is_file():
            continue
        try:
            src = open_any(d)
        except OverlayError:
            continue
        if len(src[0]):
            out.append((d, len(src[0])))
    return out


def reembed(target: Overlay, retriever, source_dir, *, reserved_ids=(), follow_records: bool = True) -> dict:
    """Move the cases of the overlay in ``source_dir`` (another bundle's) to ``target``: each stored signal is
    embedded again by ``retriever`` (an :class:`edge.retrieval.Retriever` of the target's bundle). A case
    without a signal is embedded from its original file (``record``) if that is still readable, and only with
    ``follow_records`` (this device's own overlays): an overlay handed over from elsewhere names whatever files it
    likes (``/etc/passwd`` was opened, another record copied in). Cases whose id
    the target already holds are left (a rerun moves nothing twice). The source is not changed.
    Returns ``{"moved": [ids], "present": [ids], "failed": [(id, why)]}``."""
    from .errors import EcgretError
    from .record import Record

    cases, _ = open_any(Path(source_dir))
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
            elif c.get("record") and not follow_records:
                raise EcgretError(
                    "no stored signal, and the file it names is not read from an overlay that is not this device's "
                    f"own ({printable(c['record'], 120)}); enrol it again from its recording"
                )
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
                max(target.next_n, max_local(cases) + 1),
            )
    return {"moved": moved, "present": present, "failed": failed}


def _migrate_legacy(old_dir: Path, old_hash: str, new_dir: Path, new_id: str, dim: int) -> Path | None:
    """Copy an overlay kept under the old files hash to the bundle id's folder (once; the old file stays).
    Returns the old file's path when it was copied; None when there was nothing (valid) to copy."""
    old = old_dir / FILE
    try:
        raw = read_file(old)
        if raw is None:
            return None
        cases, emb, _ = parse_overlay(raw, old, old_hash, dim)
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


def local_case(file, pre, labels: dict | None, report: str, statements: str | None, case_id: str | None) -> dict:
    """The case ``ecgret enroll`` adds for the recording ``file``: its labels (:func:`edge.labels.parse_labels`;
    None: none), the confirmed ``report``, the statement line (default: the labels' descriptions), the original
    file's absolute path, the time (UTC) and the preprocessed signal ``pre`` (:func:`stored_signal`); ``case_id``
    None lets :meth:`Overlay.enroll` number it."""
    import time

    lab = labels or {"super_class": [], "sub_class": [], "form": [], "rhythm": [], "statements": ""}
    case = dict(
        super_class=lab["super_class"],
        sub_class=lab["sub_class"],
        form=lab["form"],
        rhythm=lab["rhythm"],
        report=report,
        statements=statements if statements is not None else lab["statements"],
        source="local",
        record=os.fsencode(os.path.abspath(file)).decode("utf-8", "replace"),  # a file name need not be UTF-8
        enrolled=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        signal=stored_signal(pre),
    )
    if case_id:
        case["case_id"] = case_id
    return case


def own_overlay(src: Path, target: Overlay) -> bool:
    """Whether the overlay folder ``src`` is one of this device's (beside ``target``'s, under the overlay root)."""
    try:
        return src.resolve().parent == target.dir.resolve().parent
    except OSError:
        return False


def reembed_source(source: str | None, target: Overlay) -> Path | None:
    """The overlay folder ``ecgret cases reembed`` moves cases from: ``source`` (another bundle's id, or an
    overlay folder), else the only other bundle's overlay that holds cases (None: there is none).
    :class:`~edge.errors.OverlayError` when ``source`` holds no overlay, is the target's own, or when several
    overlays hold cases and none was named."""
    if source:
        src = Path(source) if os.sep in source or Path(source).is_dir() else overlay_dir(source)
        if not (src / FILE).is_file():
            raise OverlayError(f"--from {source}: no overlay at {src}")
    else:
        found = other_overlays(target.bundle_hash)
        if not found:
            return None
        if len(found) > 1:
            raise OverlayError(
                "several overlays hold cases; choose one with --from: "
                + "; ".join(f"{d.name} ({n} case(s))" for d, n in found)
            )
        src = found[0][0]
    if src.resolve() == target.dir.resolve():
        raise OverlayError(f"--from {source}: that is this bundle's own overlay")
    return src
