"""An archive embedded in shards, and the shards merged into one Annoy index, streaming, with bounded memory.

* :func:`embed_archive` (``embed-archive --shard i/N``, 0 <= i < N): case rows ``[i*n//N, (i+1)*n//N)`` are
  imaged and encoded in chunks (the device encoder, :class:`edge.encoder.Encoder`) and written to
  ``shard-<i>-of-<N>.npy`` (float32, a memory-mapped file filled chunk by chunk) with a ``.json`` sidecar
  (archive fingerprint, row range, encoder sha256, imaging settings). Both are written under a temporary name
  and renamed when complete, so a killed job leaves no shard that looks finished. Shards are independent: any
  batch scheduler (a job array, xargs -P, several machines sharing a folder, or Dask:
  :mod:`convert.shards_dask`) can run them.
* :func:`merge_index` (``merge-index``): checks that the N shards agree (same archive, encoder, imaging,
  dimension) and cover every row exactly once, streams them into ``embeddings.npy``, writes ``cases.jsonl``
  (line i = item i, duplicate case ids refused), builds the angular Annoy index on disk, picks the tree count
  and ``search_k`` that reach the target recall@10 against exact search (:func:`convert.index_build.tune_index`)
  and records them in ``index.json``.

Memory: one chunk of images (chunk x H x W x 3 float16) plus the interpreter while embedding; one chunk of
the embedding matrix while measuring recall; Annoy's on-disk build otherwise.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_path, atomic_write, publish, publish_folder, staging_folder
from edge.bundle import file_sha256
from edge.bundle_format import METRIC
from edge.errors import ArchiveError, ConfigError
from edge.imaging import ImagingConfig

from .bundle import case_record
from .index_build import candidate_path, tune_index
from .progress import progress_bar

__all__ = [
    "parse_shard",
    "shard_range",
    "shard_name",
    "archive_fingerprint",
    "embed_archive",
    "read_shards",
    "merge_index",
]

EMB_FILE = "embeddings.npy"
CASES_FILE = "cases.jsonl"
INDEX_FILE = "index.ann"
INDEX_META = "index.json"


def parse_shard(s: str) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N."""
    try:
        a, b = str(s).split("/")
        i, n = int(a), int(b)
    except ValueError:
        raise ConfigError(f"--shard {s!r}: expected i/N, e.g. 0/4 (shards are numbered 0..N-1)") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {s!r}: need 0 <= i < N (shards are numbered 0..N-1)")
    return i, n


def shard_range(n_cases: int, i: int, n_shards: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``i`` of ``n_shards`` over ``n_cases`` rows: the shards tile the rows,
    their sizes differ by at most one."""
    return (i * n_cases) // n_shards, ((i + 1) * n_cases) // n_shards


def shard_name(i: int, n: int) -> str:
    """The file stem of shard ``i`` of ``n``: ``shard-00001-of-00004``."""
    return f"shard-{i:05d}-of-{n:05d}"


def archive_fingerprint(archive) -> str:
    """sha256 over the archive's case ids in order (16 hex digits)."""
    h = hashlib.sha256()
    for cid in archive.ids:
        h.update(cid.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


# ============================================================================================ embedding


def _release_pages(archive) -> None:
    """Drop the archive's memory-mapped signal pages from this process's resident set (they are clean, file
    backed and re-read on demand), so that streaming a large archive keeps the RSS bounded."""
    import mmap

    sig = archive.signals
    base = getattr(sig, "base", None) if not hasattr(sig, "_mmap") else sig
    mm = getattr(base, "_mmap", None) if base is not None else None
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def embed_archive(
    archive,
    encoder_path,
    out_dir,
    imaging: ImagingConfig,
    shard: tuple[int, int] = (0, 1),
    *,
    chunk: int = 256,
    threads: int = 1,
    progress: bool = True,
    transform=None,
) -> Path:
    """Embed the shard's rows of ``archive`` with the TFLite encoder at ``encoder_path``; write
    ``<out_dir>/shard-i-of-N.npy`` (float32 (rows, D), L2-normalised) and ``.json``. Returns the .npy path.

    transform: optional ``f(row, signal) -> signal`` applied before imaging (the scale benchmark uses it to
    augment repeated records)."""
    from edge.encoder import Encoder
    from edge.imaging import ecg_image

    i, n_sh = shard
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = Encoder(encoder_path, threads=threads)
    if tuple(enc.input_shape[1:]) != tuple(imaging.shape):
        raise ConfigError(
            f"{encoder_path}: encoder input {list(enc.input_shape)} does not match the imaging "
            f"shape {list(imaging.shape)} (mode {imaging.mode}, tile {imaging.tile})"
        )
    n = len(archive)
    a, b = shard_range(n, i, n_sh)
    base = out / shard_name(i, n_sh)
    bar = progress_bar(b - a, f"embedding {base.name}", progress)
    t0 = time.time()
    try:
        # the .npy is published whole, then its .json sidecar (what read_shards looks for) says it is complete
        with atomic_path(base.with_suffix(".npy"), suffix=".npy") as tmp_npy:
            mm = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=(b - a, enc.dim))
            for s in range(a, b, chunk):
                e = min(b, s + chunk)
                for r in range(s, e):
                    x = archive.signal(r)
                    if transform is not None:
                        x = transform(r, x)
                    nv = archive.cases[r].n_samples or None
                    img = ecg_image(x, None, imaging, nv)
                    mm[r - a] = enc.encode(img)
                _release_pages(archive)
                if bar is not None:
                    bar.update(e - s)
            mm.flush()
            del mm
        meta = {
            "shard": i,
            "of": n_sh,
            "start": a,
            "stop": b,
            "n_cases": n,
            "dim": enc.dim,
            "archive": str(archive.path) if archive.path else archive.meta.get("source_dir", "in-memory"),
            "archive_fingerprint": archive_fingerprint(archive),
            "encoder_sha256": file_sha256(encoder_path),
            "imaging": imaging.to_dict(),
            "threads": threads,
            "seconds": round(time.time() - t0, 2),
            "transform": getattr(transform, "__name__", None) if transform is not None else None,
        }
        atomic_write(base.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    finally:
        if bar is not None:
            bar.close()
    return base.with_suffix(".npy")


def read_shards(shard_dir) -> list[dict]:
    """The shard sidecars of a folder, checked: one complete, consistent set covering every row once."""
    d = Path(shard_dir)
    metas = []
    for p in sorted(d.glob("shard-*-of-*.json")):
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise ArchiveError(f"{p}: unreadable shard description ({e})") from None
        if not p.with_suffix(".npy").is_file():
            raise ArchiveError(f"{p.with_suffix('.npy')}: missing (the shard did not finish)")
        m["_path"] = str(p.with_suffix(".npy"))
        metas.append(m)
    if not metas:
        raise ArchiveError(f"{d}: no shards (shard-*-of-*.json) to merge")
    n_sh = {m["of"] for m in metas}
    if len(n_sh) != 1:
        raise ArchiveError(f"{d}: shards from different splits ({sorted(n_sh)} shards) in one folder")
    n_sh = n_sh.pop()
    for key in ("archive_fingerprint", "encoder_sha256", "dim", "n_cases", "imaging"):
        vals = {json.dumps(m[key], sort_keys=True) for m in metas}
        if len(vals) != 1:
            raise ArchiveError(
                f"{d}: shards disagree on {key} ({len(vals)} different values); re-run them "
                f"with one archive and one encoder"
            )
    have = sorted(m["shard"] for m in metas)
    missing = sorted(set(range(n_sh)) - set(have))
    if missing:
        raise ArchiveError(
            f"{d}: shard(s) {', '.join(f'{x}/{n_sh}' for x in missing)} missing; run embed-archive --shard for them"
        )
    metas.sort(key=lambda m: m["start"])
    pos = 0
    for m in metas:
        if m["start"] != pos:
            raise ArchiveError(f"{d}: shard {m['shard']}/{n_sh} starts at row {m['start']}, expected {pos}")
        pos = m["stop"]
    if pos != metas[0]["n_cases"]:
        raise ArchiveError(f"{d}: shards cover {pos} rows, the archive has {metas[0]['n_cases']}")
    return metas


def merge_index(
    shard_dir,
    out_dir,
    archive=None,
    *,
    k: int = 10,
    target_recall: float = 0.99,
    seed: int = 0,
    max_queries: int = 500,
    trees=(8, 16, 32, 64),
    progress: bool = True,
) -> dict:
    """Merge the shards of ``shard_dir`` into ``out_dir``: ``embeddings.npy``, ``cases.jsonl`` (when the
    ``archive`` is given), ``index.ann`` and ``index.json``. Written in a temporary folder, then renamed."""
    metas = read_shards(shard_dir)
    n, dim = int(metas[0]["n_cases"]), int(metas[0]["dim"])
    if archive is not None and archive_fingerprint(archive) != metas[0]["archive_fingerprint"]:
        raise ArchiveError(f"{shard_dir}: the shards were embedded from a different archive")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ArchiveError(f"{out}: exists and is not empty; choose a new folder")
    t0 = time.time()
    with staging_folder(out, keep=True) as tmp:
        emb = np.lib.format.open_memmap(tmp / EMB_FILE, mode="w+", dtype=np.float32, shape=(n, dim))
        for m in metas:
            part = np.load(m["_path"], mmap_mode="r")
            if part.shape != (m["stop"] - m["start"], dim):
                raise ArchiveError(f"{m['_path']}: shape {part.shape}, expected {(m['stop'] - m['start'], dim)}")
            for s in range(0, part.shape[0], 16384):
                blk = np.asarray(part[s : s + 16384])
                emb[m["start"] + s : m["start"] + s + len(blk)] = blk
        emb.flush()
        del emb
        emb = np.load(tmp / EMB_FILE, mmap_mode="r")
        if archive is not None:
            seen = set()
            with open(tmp / CASES_FILE, "w", encoding="utf-8") as f:
                for c in archive.cases:
                    if c.case_id in seen:
                        raise ArchiveError(f"duplicate case id {c.case_id!r} in the archive")
                    seen.add(c.case_id)
                    f.write(json.dumps(case_record(c), ensure_ascii=False, separators=(",", ":")) + "\n")
        t1 = time.time()
        nt, sk, r = tune_index(
            emb, k, target_recall, seed=seed, max_queries=max_queries, trees=trees, workdir=tmp, progress=progress
        )
        publish(candidate_path(tmp, nt), tmp / INDEX_FILE)
        for p in tmp.glob("trees-*.ann"):
            p.unlink()
        info = {
            "metric": METRIC,
            "dim": dim,
            "n_items": n,
            "n_trees": nt,
            "search_k": sk,
            "recall_at_10": r,
            "k": k,
            "target_recall": target_recall,
            "recall_queries": int(min(max_queries, n)),
            "seed": seed,
            "shards": len(metas),
            "encoder_sha256": metas[0]["encoder_sha256"],
            "archive_fingerprint": metas[0]["archive_fingerprint"],
            "imaging": metas[0]["imaging"],
            "embed_seconds_sum": round(sum(m.get("seconds", 0) for m in metas), 1),
            "merge_seconds": round(t1 - t0, 1),
            "index_seconds": round(time.time() - t1, 1),
        }
        (tmp / INDEX_META).write_text(json.dumps(info, indent=1) + "\n")
        del emb
        publish_folder(tmp, out)
    return info
