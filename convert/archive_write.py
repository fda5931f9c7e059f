"""Writing case archives (format: :mod:`convert.archive`): streaming, resumable, atomically published.

:func:`import_records` commits records a part at a time into ``<out>/import-parts/`` and publishes the archive
(``signals.npy``, ``cases.jsonl``, then ``archive.json``) once every record was tried; :func:`write_archive` is
the same in one go. Every file is written through :mod:`edge.atomicio`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edge.atomicio import TMP_MARK, atomic_open, atomic_path, atomic_write
from edge.errors import ArchiveError, EcgretError
from edge.schema import printable

from .archive import (
    CASES_FILE,
    META_FILE,
    PARTS_DIR,
    SIGNALS_FILE,
    Archive,
    Case,
    archive_meta,
    check_device_rules,
    check_unique_ids,
    read_cases,
)

__all__ = ["ImportSummary", "import_records", "write_archive", "CHUNK"]


def write_meta_and_cases(out: Path, cases: Sequence[Case], meta: dict) -> None:
    """``cases.jsonl`` then ``archive.json`` (the archive's "complete" mark), each written atomically."""
    with atomic_open(out / CASES_FILE, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")
    atomic_write(out / META_FILE, json.dumps(meta, indent=2) + "\n")


def write_reference_archive(out: Path, cases: Sequence[Case], meta: dict) -> None:
    """An archive folder whose signals stay where they are (``meta["signals_path"]``, never copied): its cases and
    meta (:func:`write_meta_and_cases`), and no signals file of its own (one an earlier import left is removed)."""
    write_meta_and_cases(out, cases, meta)
    if (out / SIGNALS_FILE).exists():
        (out / SIGNALS_FILE).unlink()


def check_kept(out: Path, held: Iterable[str], cases: Sequence[Case], what: str) -> None:
    """Refuse a run that would drop cases ``out`` holds: a re-run lists at least what is there (it adds what is
    missing and updates reports and labels; it never silently shrinks the archive)."""
    listed = {c.case_id for c in cases}
    gone = [cid for cid in held if cid not in listed]
    if gone:
        raise ArchiveError(
            f"{out}: {what} holds {len(gone)} case(s) this import does not list (e.g. {gone[0]}); the plan differs "
            f"(another --limit, --folds or listing): import into a new folder, or replace it (--overwrite)"
        )


def _updated(held: Sequence[Case], cases: Sequence[Case]) -> list[str]:
    """The ids of the ``held`` cases whose report, labels or other fields differ from what ``cases`` (the
    source, now) says."""
    now = {c.case_id: c for c in cases}
    return [h.case_id for h in held if h.case_id in now and replace(now[h.case_id], n_samples=h.n_samples) != h]


def _read_json(path: Path, what: str) -> dict:
    """A JSON object the toolkit wrote (``archive.json``, ``import-parts/plan.json``); :class:`ArchiveError`
    naming ``path`` when it cannot be read, is not JSON or not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ArchiveError(
            f"{path}: {what} is damaged ({e.__class__.__name__}); remove it or use another folder"
        ) from None
    if not isinstance(obj, dict):
        raise ArchiveError(f"{path}: {what} is damaged (not a JSON object); remove it or use another folder")
    return obj


def check_out(out: Path) -> None:
    """Refuse (:class:`ArchiveError`) an ``out`` that is not a folder, or one that holds anything but an ecgret
    archive (``archive.json`` of this toolkit), an import of one (``import-parts/``) or nothing: an import, with or
    without ``overwrite``, never replaces or removes a file it did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ArchiveError(f"{out}: exists and is not a folder")
    if (out / PARTS_DIR).exists() and not (out / PARTS_DIR).is_dir():
        raise ArchiveError(f"{out / PARTS_DIR}: is not a folder; {out} is not an ecgret archive or import of one")
    if (out / META_FILE).exists():
        meta = _read_json(out / META_FILE, "the archive's archive.json")
        if not isinstance(meta.get("format_version"), int) or not isinstance(meta.get("importer"), str):
            raise ArchiveError(f"{out / META_FILE}: not an ecgret archive's; import into a new or empty folder")
        return
    if (out / PARTS_DIR).is_dir():
        return
    theirs = sorted(p.name for p in out.iterdir() if not (p.name.startswith(".") and TMP_MARK in p.name))
    if theirs:
        raise ArchiveError(
            f"{out}: holds {', '.join(theirs[:3])}{', ...' if len(theirs) > 3 else ''} but no ecgret archive "
            f"({META_FILE}); import into a new or empty folder (nothing there was touched)"
        )


def already_imported(out: Path, overwrite: bool, importer: str, source_dir: str) -> set[str]:
    """The case ids an earlier import of the same source (``importer`` of ``source_dir``) left in ``out``: none
    with ``overwrite`` or in a new folder. :class:`ArchiveError` when ``out`` holds an unfinished record import or
    another source's archive (unless ``overwrite``), or is not an archive folder (:func:`check_out`)."""
    check_out(out)
    if (out / PARTS_DIR).exists() and not overwrite:
        raise ArchiveError(f"{out}: holds an unfinished record import; use another folder (or --overwrite)")
    if not (out / META_FILE).exists() or overwrite:
        return set()
    meta = _read_json(out / META_FILE, "the archive's archive.json")
    if meta.get("importer") != importer or meta.get("source_dir") != source_dir:
        raise ArchiveError(
            f"{out}: already holds an archive of another source ({meta.get('importer')} "
            f"of {meta.get('source_dir')}); use another folder (or --overwrite)"
        )
    return {c.case_id for c in read_cases(out / CASES_FILE)}


def prepare_out(out_dir, overwrite: bool) -> Path:
    """Create ``out_dir`` (with its parents) and return it; :class:`ArchiveError` when it already holds an
    archive (``archive.json``) and not ``overwrite``."""
    out = Path(out_dir)
    check_out(out)
    if (out / META_FILE).exists() and not overwrite:
        raise ArchiveError(f"{out}: already holds an archive (pass overwrite=True, --overwrite, to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _progress(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc=desc, unit="rec", file=sys.stderr, leave=False)


# ------------------------------------------------------------------------------------------------ writing

PLAN_FILE = "plan.json"
MAX_SKIPPED = 100  # records that failed, listed in archive.json (the count is kept too)
CHUNK = 64  # records a part holds (1.5 MB of float16 at T=1000): what a kill can cost


@dataclass(frozen=True)
class ImportSummary:
    """What one run of :func:`import_records` did. ``failed``: ``{"case_id", "error"}`` of each record that
    could not be imported in this run (it is tried again by the next run)."""

    archive: Archive
    n_listed: int  # records the source lists (after folds/limit)
    n_new: int  # imported by this run
    n_already: int  # already in the folder (a resumed run skips them)
    failed: tuple[dict, ...] = ()
    n_updated: int = 0  # of n_already: their report or labels changed in the source, and were updated

    @property
    def n_failed(self) -> int:
        """The records this run could not import (``len(failed)``)."""
        return len(self.failed)


def _plan(importer: str, T: int, dtype: np.dtype, extra_meta: dict) -> dict:
    return {"importer": importer, "T": int(T), "dtype": str(dtype), **extra_meta}


def _check_plan(out: Path, old: dict, new: dict, what: str) -> None:
    for k in sorted(set(old) | set(new)):
        if k in ("format", "created") or old.get(k) == new.get(k):
            continue
        raise ArchiveError(
            f"{out}: {what} was made with {k} = {old.get(k)!r}, this import has {new.get(k)!r}; "
            f"import into a new folder, or replace it (--overwrite)"
        )


_PART_NAME = re.compile(r"part-[0-9]{6}\.npy")


def _read_parts(parts: Path, T: int) -> tuple[dict[str, tuple[Case, Path, int]], int]:
    """The committed parts of an import in progress: {case_id: (case, part .npy, row)} and the highest part
    number. A part counts once its ``.jsonl`` (written after its ``.npy``) is there; anything else (a part
    whose ``.jsonl`` never came, temporary files of a killed run) is removed. A committed part whose signals
    are unreadable or not (its cases, ``T``, 12) is an :class:`ArchiveError` naming it."""
    done: dict[str, tuple[Case, Path, int]] = {}
    top = -1
    for p in sorted(parts.iterdir()):
        if p.name.startswith(".") and TMP_MARK in p.name:
            p.unlink(missing_ok=True)
            continue
        if not _PART_NAME.fullmatch(p.name):
            continue
        mark = p.with_suffix(".jsonl")
        if not mark.is_file():
            p.unlink(missing_ok=True)
            continue
        top = max(top, int(p.stem.split("-")[1]))
        got = read_cases(mark)
        try:
            shape = np.load(p, mmap_mode="r", allow_pickle=False).shape
        except (OSError, ValueError) as e:
            raise ArchiveError(
                f"{p}: unreadable ({printable(str(e), 120)}); the unfinished import is damaged "
                "(--overwrite discards it)"
            ) from None
        if shape != (len(got), T, 12):
            raise ArchiveError(
                f"{p}: shape {shape}, its {mark.name} says ({len(got)}, {T}, 12); the unfinished import is damaged "
                f"(--overwrite discards it)"
            )
        for row, c in enumerate(got):
            done.setdefault(c.case_id, (c, p, row))
    return done, top


def _write_part(parts: Path, k: int, x: np.ndarray, cases: Sequence[Case]) -> None:
    """Commit one part: its signals, then its cases (the mark that the part is complete)."""
    base = parts / f"part-{k:06d}"
    with atomic_path(base.with_suffix(".npy"), suffix=".npy") as tmp:
        np.save(tmp, x, allow_pickle=False)
    with atomic_open(base.with_suffix(".jsonl"), "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")


def _reopen_as_part(out: Path, parts: Path) -> None:
    """Turn a finished archive into part 0 of a new import run (a hard link: no copy, and the archive stays
    readable, unchanged, until the run finishes)."""
    meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
    if meta.get("signals_path") or meta.get("rows") is not None:
        raise ArchiveError(f"{out}: references another signals file; it cannot be added to (import into a new folder)")
    dst = parts / "part-000000.npy"
    dst.unlink(missing_ok=True)
    os.link(out / SIGNALS_FILE, dst)
    with atomic_open(parts / "part-000000.jsonl", "w", encoding="utf-8") as f:
        f.write((out / CASES_FILE).read_text(encoding="utf-8"))


def _finish(out: Path, parts: Path, cases: Sequence[Case], done: dict, T: int, dtype: np.dtype, meta: dict) -> None:
    """Publish the archive from the committed parts, in the order of ``cases``; then remove the parts. Until
    ``archive.json`` is written again the folder is an unfinished import (a rerun finishes it)."""
    # the listed case (its report and labels as the source says now) with the valid length its record gave
    keep = []
    for c in cases:
        if c.case_id in done:
            held, part, row = done[c.case_id]
            keep.append((replace(c, n_samples=held.n_samples), part, row))
    (out / META_FILE).unlink(missing_ok=True)
    with atomic_path(out / SIGNALS_FILE, suffix=".npy") as tmp:
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(keep), T, 12))
        src: dict[Path, np.ndarray] = {}
        for k, (_, part, row) in enumerate(keep):
            if part not in src:
                src = {part: np.load(part, mmap_mode="r", allow_pickle=False)}  # parts come in order
            mm[k] = src[part][row]
            if k % 1024 == 1023:
                mm.flush()
        mm.flush()
        del mm, src
    write_meta_and_cases(out, [c for c, _, _ in keep], meta)
    shutil.rmtree(parts, ignore_errors=True)


@contextlib.contextmanager
def _os_errors(out_dir) -> Iterator[None]:
    """An :class:`OSError` of the block (a full disk, a folder that cannot be written) as one
    :class:`ArchiveError` line naming ``out_dir``, the reason and the file."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        raise ArchiveError(
            f"{out_dir}: the import stopped: {e.strerror or e}{where}; fix that and run the same command again"
        ) from None


def _say(bar, say, line: str) -> None:
    """Print a line above a running progress bar (tqdm's external write mode), or just print it."""
    ext = getattr(bar, "external_write_mode", None)
    if ext is None:
        say(line)
        return
    with ext(file=sys.stderr):
        say(line)


def import_records(
    out_dir,
    cases: Sequence[Case],
    load: Callable[[int], tuple[np.ndarray, int]],
    *,
    T: int = 1000,
    dtype="float16",
    importer: str = "custom",
    extra_meta: dict | None = None,
    on_error: str = "raise",
    progress: bool = True,
    overwrite: bool = False,
    resume: bool = False,
    report: Callable[[str], None] | None = None,
    chunk: int = CHUNK,
) -> ImportSummary:
    """Write an archive folder, streaming: ``load(i)`` returns case i's preprocessed (T, 12) signal and its
    valid length. At most ``chunk`` records are held in memory.

    Records are committed ``chunk`` at a time into ``<out>/import-parts/`` (each part written atomically: its
    ``.npy``, then its ``.jsonl``); when every record was tried, the archive (``signals.npy``, ``cases.jsonl``
    in the order of ``cases``, then ``archive.json``, the mark that it is complete) is published from the parts
    and the parts are removed. ``resume=True`` continues what the folder holds (an interrupted import, or a
    finished archive made with the same importer and settings): records already there are skipped, the others
    (including those that failed before) are tried. A killed run loses at most the records of its unfinished
    part; an exception or Ctrl-C commits the loaded records first.

    ``on_error='raise'`` turns the first :class:`~edge.errors.EcgretError` of ``load`` into an ArchiveError
    naming the case; ``'skip'`` reports it (``report(line)``), leaves the case out, and lists it in
    ``archive.json`` (``skipped``). Without ``resume``, a folder that already holds an archive or an import is
    refused unless ``overwrite``, and a failed run leaves nothing behind.
    """
    with _os_errors(out_dir):
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        dtype = np.dtype(dtype)
        if dtype not in (np.float16, np.float32):
            raise ArchiveError(f"archive dtype must be float16 or float32, not {dtype}")
        out = Path(out_dir)
        check_unique_ids(cases, str(out))
        check_device_rules(cases, str(out))
        parts = out / PARTS_DIR
        extra = dict(extra_meta or {})
        plan = _plan(importer, T, dtype, extra)
        check_out(out)
        if overwrite:
            shutil.rmtree(parts, ignore_errors=True)
            for name in (META_FILE, CASES_FILE, SIGNALS_FILE):
                (out / name).unlink(missing_ok=True)
        elif not resume and ((out / META_FILE).exists() or parts.exists()):
            held = "an archive" if (out / META_FILE).exists() else "an unfinished import"
            raise ArchiveError(
                f"{out}: already holds {held} (pass overwrite=True to replace it, or resume=True to continue it)"
            )
        out.mkdir(parents=True, exist_ok=True)
        fresh = not parts.exists()
        reopen = False
        if not fresh:
            if (parts / PLAN_FILE).exists():  # (absent only if a run was killed before its first part)
                _check_plan(
                    out,
                    _read_json(parts / PLAN_FILE, "the unfinished import's plan"),
                    plan,
                    "the unfinished import there",
                )
        elif (out / META_FILE).exists():
            meta_old = _read_json(out / META_FILE, "the archive's archive.json")
            _check_plan(out, {k: meta_old.get(k) for k in plan}, plan, "the archive there")
            there = read_cases(out / CASES_FILE)
            check_kept(out, [c.case_id for c in there], cases, "the archive there")
            if len(there) == len(cases) and not _updated(there, cases):
                return ImportSummary(Archive.open(out), len(cases), 0, len(cases))  # nothing to add, drop or update
            reopen = True
        parts.mkdir(exist_ok=True)
        atomic_write(parts / PLAN_FILE, json.dumps({"format": "ecgret-import", **plan}, indent=1) + "\n")
        if reopen:
            _reopen_as_part(out, parts)
        done, top = _read_parts(parts, T)
        if not fresh:
            check_kept(out, done, cases, "the unfinished import there")
        n_already = sum(c.case_id in done for c in cases)
        n_updated = len(_updated([c for c, _, _ in done.values()], cases))
        todo = [i for i, c in enumerate(cases) if c.case_id not in done]
        failed: list[dict] = []
        say = report or (lambda line: None)
        buf = np.zeros((max(1, int(chunk)), T, 12), dtype=dtype)
        got: list[Case] = []

        def commit():
            nonlocal top
            if got:
                top += 1
                _write_part(parts, top, buf[: len(got)], got)
                part = parts / f"part-{top:06d}.npy"
                for row, c in enumerate(got):
                    done[c.case_id] = (c, part, row)
                got.clear()

        bar = _progress(todo, len(todo), f"importing {out.name}", progress)
        try:
            for i in bar:
                c = cases[i]
                try:
                    x, n_valid = load(i)
                except EcgretError as e:
                    if on_error == "raise":
                        raise ArchiveError(f"{c.case_id}: {e}") from None
                    failed.append({"case_id": c.case_id, "error": printable(str(e), 300)})
                    _say(bar, say, f"{c.case_id}: {e}")
                    continue
                x = np.asarray(x, dtype=np.float32)
                if x.shape != (T, 12):
                    raise ArchiveError(f"{c.case_id}: preprocessed signal has shape {x.shape}, expected ({T}, 12)")
                buf[len(got)] = x
                got.append(replace(c, n_samples=int(n_valid)))
                if len(got) == len(buf):
                    commit()
            commit()
        except BaseException:
            if resume:
                with contextlib.suppress(Exception):
                    commit()  # what was read is kept for the next run
            elif fresh:
                shutil.rmtree(parts, ignore_errors=True)
            raise
        finally:
            close = getattr(bar, "close", None)
            if close is not None:
                close()
        meta = archive_meta(importer, n_cases=sum(c.case_id in done for c in cases), T=T, dtype=str(dtype), **extra)
        if failed:  # the first MAX_SKIPPED listed, all counted: archive.json stays small
            meta["skipped"] = failed[:MAX_SKIPPED]
            meta["n_skipped"] = len(failed)
        _finish(out, parts, cases, done, T, dtype, meta)
        return ImportSummary(
            Archive.open(out), len(cases), len(cases) - n_already - len(failed), n_already, tuple(failed), n_updated
        )


def write_archive(out_dir, cases: Sequence[Case], load: Callable[[int], tuple[np.ndarray, int]], **options) -> Archive:
    """Write an archive folder in one go (:func:`import_records` without resuming; ``options`` as there);
    returns the archive."""
    return import_records(out_dir, cases, load, resume=False, **options).archive
