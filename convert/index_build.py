"""Embed an archive in shards and merge the shards into one Annoy index, streaming, with bounded memory.

* ``embed-archive --shard i/N`` (0 <= i < N): case rows ``[i*n//N, (i+1)*n//N)`` are imaged and encoded in
  chunks (the device encoder, :class:`edge.encoder.Encoder`) and written to ``shard-<i>-of-<N>.npy`` (float32,
  a memory-mapped file filled chunk by chunk) with a ``.json`` sidecar (archive fingerprint, row range, encoder
  sha256, imaging settings). Both are written under a temporary name and renamed when complete, so a killed
  job leaves no shard that looks finished. Shards are independent: any batch scheduler (a job array, xargs -P,
  several machines sharing a folder) can run them.
* ``merge-index``: checks that the N shards agree (same archive, encoder, imaging, dimension) and cover every
  row exactly once, streams them into ``embeddings.npy``, writes ``cases.jsonl`` (line i = item i, duplicate
  case ids refused), builds the angular Annoy index on disk (``on_disk_build``: items are not held in RAM),
  picks the tree count and ``search_k`` that reach the target recall@10 against exact search (computed in
  chunks) and records them in ``index.json``.

* ``embed-archive --scheduler ADDRESS|local``: the same shards as Dask tasks (``dask.distributed``; the
  ``convert`` extra): ``local`` starts a :class:`distributed.LocalCluster` of single-threaded worker processes on
  this machine; an address (``tcp://host:8786``) uses a running scheduler, e.g. ``dask scheduler`` with
  ``dask worker`` on every node, or a SLURM / PBS / Kubernetes cluster started by dask-jobqueue or
  dask-kubernetes (its ``scheduler_address``). Every task runs :func:`embed_archive` for one row range, so the
  shards are byte for byte those of ``--shard i/N``; with ``--index OUT`` a last task runs :func:`merge_index`
  on a worker. The archive, the encoder and the output folder must be paths every worker can read (and write).

Memory: one chunk of images (chunk x H x W x 3 float16) plus the interpreter while embedding; one chunk of
the embedding matrix while measuring recall; Annoy's on-disk build otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_path, atomic_write
from edge.errors import ArchiveError, ConfigError
from edge.imaging import ImagingConfig

__all__ = ["parse_shard", "shard_range", "archive_fingerprint", "embed_archive", "read_shards", "merge_index",
           "exact_topk_stream", "build_annoy_stream", "tune_stream", "shard_name", "open_client",
           "embed_archive_distributed"]

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
    return (i * n_cases) // n_shards, ((i + 1) * n_cases) // n_shards


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}"


def archive_fingerprint(archive) -> str:
    """sha256 over the archive's case ids in order (16 hex digits)."""
    h = hashlib.sha256()
    for cid in archive.ids:
        h.update(cid.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _bar(total: int, desc: str, enabled: bool, unit: str = "case"):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)


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


def embed_archive(archive, encoder_path, out_dir, imaging: ImagingConfig, shard: tuple[int, int] = (0, 1), *,
                  chunk: int = 256, threads: int = 1, progress: bool = True, transform=None) -> Path:
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
        raise ConfigError(f"{encoder_path}: encoder input {list(enc.input_shape)} does not match the imaging "
                          f"shape {list(imaging.shape)} (mode {imaging.mode}, tile {imaging.tile})")
    n = len(archive)
    a, b = shard_range(n, i, n_sh)
    base = out / shard_name(i, n_sh)
    bar = _bar(b - a, f"embedding {base.name}", progress)
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
        meta = {"shard": i, "of": n_sh, "start": a, "stop": b, "n_cases": n, "dim": enc.dim,
                "archive": str(archive.path) if archive.path else archive.meta.get("source_dir", "in-memory"),
                "archive_fingerprint": archive_fingerprint(archive), "encoder_sha256": _sha256(encoder_path),
                "imaging": imaging.to_dict(), "threads": threads, "seconds": round(time.time() - t0, 2),
                "transform": getattr(transform, "__name__", None) if transform is not None else None}
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
            raise ArchiveError(f"{d}: shards disagree on {key} ({len(vals)} different values); re-run them "
                               f"with one archive and one encoder")
    have = sorted(m["shard"] for m in metas)
    missing = sorted(set(range(n_sh)) - set(have))
    if missing:
        raise ArchiveError(f"{d}: shard(s) {', '.join(f'{x}/{n_sh}' for x in missing)} missing; run "
                           f"embed-archive --shard for them")
    metas.sort(key=lambda m: m["start"])
    pos = 0
    for m in metas:
        if m["start"] != pos:
            raise ArchiveError(f"{d}: shard {m['shard']}/{n_sh} starts at row {m['start']}, expected {pos}")
        pos = m["stop"]
    if pos != metas[0]["n_cases"]:
        raise ArchiveError(f"{d}: shards cover {pos} rows, the archive has {metas[0]['n_cases']}")
    return metas


# ============================================================================================ index

def exact_topk_stream(emb, queries: np.ndarray, k: int, chunk: int = 16384) -> np.ndarray:
    """Exact top-k ids by cosine of unit ``queries`` against unit ``emb`` (may be a memmap), chunk by chunk."""
    q = np.asarray(queries, np.float32)
    n = emb.shape[0]
    k = min(k, n)
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, n, chunk):
        block = np.asarray(emb[s:s + chunk], np.float32)
        sims = q @ block.T
        ids = np.broadcast_to(np.arange(s, s + len(block)), sims.shape)
        cs = np.concatenate([best_s, sims], axis=1)
        ci = np.concatenate([best_i, ids], axis=1)
        kk = min(k, cs.shape[1])
        part = np.argpartition(-cs, kk - 1, axis=1)[:, :kk]
        best_s = np.take_along_axis(cs, part, axis=1)
        best_i = np.take_along_axis(ci, part, axis=1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1)


def build_annoy_stream(emb, n_trees: int, path, seed: int = 0, progress: bool = False):
    """Build an angular Annoy index over the rows of ``emb`` (a memmap is fine) directly on disk at ``path``."""
    from annoy import AnnoyIndex
    ann = AnnoyIndex(int(emb.shape[1]), "angular")
    ann.set_seed(int(seed))
    ann.on_disk_build(str(path))
    bar = _bar(emb.shape[0], f"index ({n_trees} trees)", progress)
    for s in range(0, emb.shape[0], 8192):
        block = np.asarray(emb[s:s + 8192], np.float32)
        for j, v in enumerate(block):
            ann.add_item(s + j, v.tolist())
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()
    ann.build(int(n_trees), n_jobs=1)
    return ann


def tune_stream(emb, workdir, *, k: int = 10, target_recall: float = 0.99, seed: int = 0, max_queries: int = 500,
                trees=(8, 16, 32, 64), factors=(1, 2, 4, 8, 16, 32, 64), progress: bool = False):
    """The cheapest (n_trees, search_k) reaching ``target_recall`` recall@k against exact search over archive
    items (up to ``max_queries``, seeded), building each candidate index on disk in ``workdir``. Returns
    (n_trees, search_k, recall, path of the chosen index file)."""
    from .bundle import annoy_recall
    n = emb.shape[0]
    if n == 0:
        raise ArchiveError("cannot index an empty archive")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    qv = np.asarray(emb[qids], np.float32)
    truth = exact_topk_stream(emb, qv, k)
    tried = []
    for nt in trees:
        path = Path(workdir) / f"trees-{nt}.ann"
        ann = build_annoy_stream(emb, nt, path, seed, progress)
        for f in factors:
            sk = int(nt * k * f)
            hits = 0
            for q, t in zip(qv, truth):
                hits += len(set(ann.get_nns_by_vector(q.tolist(), k, search_k=sk)) & set(t.tolist()))
            r = hits / float(truth.size)
            tried.append((nt, sk, r, path))
            if r >= target_recall:
                break
        ann.unload()
    ok = [t for t in tried if t[2] >= target_recall]
    nt, sk, r, path = min(ok, key=lambda t: (t[1], t[0])) if ok else max(tried, key=lambda t: (t[2], -t[1]))
    return int(nt), int(sk), float(r), path


def merge_index(shard_dir, out_dir, archive=None, *, k: int = 10, target_recall: float = 0.99, seed: int = 0,
                max_queries: int = 500, trees=(8, 16, 32, 64), progress: bool = True) -> dict:
    """Merge the shards of ``shard_dir`` into ``out_dir``: ``embeddings.npy``, ``cases.jsonl`` (when the
    ``archive`` is given), ``index.ann`` and ``index.json``. Written in a temporary folder, then renamed."""
    from .bundle import case_record
    metas = read_shards(shard_dir)
    n, dim = int(metas[0]["n_cases"]), int(metas[0]["dim"])
    if archive is not None and archive_fingerprint(archive) != metas[0]["archive_fingerprint"]:
        raise ArchiveError(f"{shard_dir}: the shards were embedded from a different archive")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ArchiveError(f"{out}: exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    t0 = time.time()
    try:
        emb = np.lib.format.open_memmap(tmp / EMB_FILE, mode="w+", dtype=np.float32, shape=(n, dim))
        for m in metas:
            part = np.load(m["_path"], mmap_mode="r")
            if part.shape != (m["stop"] - m["start"], dim):
                raise ArchiveError(f"{m['_path']}: shape {part.shape}, expected {(m['stop'] - m['start'], dim)}")
            for s in range(0, part.shape[0], 16384):
                blk = np.asarray(part[s:s + 16384])
                emb[m["start"] + s:m["start"] + s + len(blk)] = blk
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
        nt, sk, r, path = tune_stream(emb, tmp, k=k, target_recall=target_recall, seed=seed,
                                      max_queries=max_queries, trees=trees, progress=progress)
        os.replace(path, tmp / INDEX_FILE)
        for p in tmp.glob("trees-*.ann"):
            p.unlink()
        info = {"metric": "angular", "dim": dim, "n_items": n, "n_trees": nt, "search_k": sk, "recall_at_10": r,
                "k": k, "target_recall": target_recall, "recall_queries": int(min(max_queries, n)), "seed": seed,
                "shards": len(metas), "encoder_sha256": metas[0]["encoder_sha256"],
                "archive_fingerprint": metas[0]["archive_fingerprint"], "imaging": metas[0]["imaging"],
                "embed_seconds_sum": round(sum(m.get("seconds", 0) for m in metas), 1),
                "merge_seconds": round(t1 - t0, 1), "index_seconds": round(time.time() - t1, 1)}
        (tmp / INDEX_META).write_text(json.dumps(info, indent=1) + "\n")
        del emb
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


# ============================================================================================ Dask

def _peak_rss_mb() -> float | None:
    """This process's peak resident set (VmHWM), MB; None where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _embed_task(archive_path, encoder_path, out_dir, imaging: ImagingConfig, shard, chunk: int, threads: int) -> dict:
    """One Dask task: :func:`embed_archive` of one shard, in a worker process; returns what it did and the
    worker's peak memory so far."""
    t0 = time.time()
    p = embed_archive(_open_archive(archive_path), encoder_path, out_dir, imaging, tuple(shard), chunk=chunk,
                      threads=threads, progress=False)
    return {"shard": f"{shard[0]}/{shard[1]}", "path": str(p), "seconds": round(time.time() - t0, 2),
            "pid": os.getpid(), "host": os.uname().nodename, "peak_rss_mb": _peak_rss_mb()}


def _merge_task(shard_dir, index_dir, archive_path, target_recall: float, seed: int) -> dict:
    """The last Dask task: :func:`merge_index` on a worker; returns index.json's content and the peak memory."""
    t0 = time.time()
    info = merge_index(shard_dir, index_dir, _open_archive(archive_path), target_recall=target_recall, seed=seed,
                       progress=False)
    return {"index": info, "seconds": round(time.time() - t0, 2), "pid": os.getpid(), "host": os.uname().nodename,
            "peak_rss_mb": _peak_rss_mb()}


def open_client(scheduler: str, n_workers: int | None = None):
    """(dask client, the LocalCluster it started or None). ``scheduler``: ``"local"`` (``n_workers``
    single-threaded worker processes here; default one per core) or a scheduler address."""
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--scheduler needs dask.distributed: pip install 'ecgret[convert]' (or "
                          "'dask[distributed]')") from None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=int(n_workers or os.cpu_count() or 1), threads_per_worker=1,
                               processes=True, dashboard_address=None, silence_logs=logging.WARNING)
        return Client(cluster), cluster
    if n_workers is not None:
        raise ConfigError("--workers sizes a local cluster only; a scheduler at an address has its own workers")
    try:
        return Client(scheduler, timeout="30s"), None
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"--scheduler {scheduler}: cannot connect ({e})") from None


def embed_archive_distributed(archive_path, encoder_path, out_dir, imaging: ImagingConfig, scheduler: str = "local",
                              *, n_workers: int | None = None, tasks: int | None = None, chunk: int = 256,
                              threads: int = 1, index_dir=None, target_recall: float = 0.99, seed: int = 0,
                              progress: bool = True) -> dict:
    """Embed the archive at ``archive_path`` (None: the shared PTB-XL subset) on a Dask cluster: ``tasks`` shards
    (default: two per worker thread) of :func:`embed_archive` as tasks, written into ``out_dir``; then, with
    ``index_dir``, :func:`merge_index` as one more task. Returns the tasks' reports (seconds, worker pid, peak
    RSS), the peak RSS per worker process, wall times and, with ``index_dir``, index.json's content."""
    client, cluster = open_client(scheduler, n_workers)
    t0 = time.time()
    try:
        client.wait_for_workers(1, timeout=60)
        nthreads = sum(client.nthreads().values())
        n_tasks = int(tasks or 2 * max(1, nthreads))
        if n_tasks < 1:
            raise ConfigError(f"--tasks {tasks}: need at least 1")
        out = str(Path(out_dir).resolve())
        arch = str(Path(archive_path).resolve()) if archive_path else None
        enc = str(Path(encoder_path).resolve())
        from distributed import as_completed
        futs = [client.submit(_embed_task, arch, enc, out, imaging, (i, n_tasks), chunk, threads, pure=False,
                              key=f"embed-{shard_name(i, n_tasks)}-{time.time_ns()}") for i in range(n_tasks)]
        bar = _bar(n_tasks, f"embedding on {len(client.nthreads())} Dask workers", progress, unit="shard")
        done = []
        try:
            for f in as_completed(futs):
                done.append(f.result())          # a task's exception is raised here, as it was raised there
                if bar is not None:
                    bar.update(1)
        except BaseException:
            for f in futs:
                f.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
        done.sort(key=lambda r: int(r["shard"].split("/")[0]))
        res = {"scheduler": "local" if cluster is not None else scheduler, "workers": len(client.nthreads()),
               "worker_threads": nthreads, "tasks": done, "embed_wall_seconds": round(time.time() - t0, 1)}
        if index_dir is not None:
            t1 = time.time()
            m = client.submit(_merge_task, out, str(Path(index_dir).resolve()), arch, target_recall, seed,
                              pure=False).result()
            res.update(index=m["index"], merge_task=m, merge_wall_seconds=round(time.time() - t1, 1))
        peaks: dict[str, float] = {}
        for r in done + ([res["merge_task"]] if "merge_task" in res else []):
            k = f"{r.get('host', '')}:{r['pid']}"
            peaks[k] = max(peaks.get(k, 0.0), r["peak_rss_mb"] or 0.0)
        res["peak_rss_mb_per_worker"] = peaks
        return res
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ============================================================================================ CLI
import click  # noqa: E402


def _open_archive(path):
    from .archive import Archive
    if path:
        return Archive.open(path)
    from edge.paths import shared_data_dir
    return Archive.from_ptbxl_subset(shared_data_dir() / "ptbxl-subset")


@click.command("embed-archive")
@click.option("--encoder", "encoder_path", type=click.Path(), required=True, help="the encoder .tflite")
@click.option("--archive", default=None, help="an archive folder (default: the shared PTB-XL subset)")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="the shard folder")
@click.option("--shard", default=None, help="i/N: embed the i-th of N row ranges (0-based)  [default: 0/1]")
@click.option("--scheduler", default=None, metavar="ADDRESS|local",
              help="embed every shard as a Dask task instead: 'local' starts a cluster of worker processes here "
                   "(--workers), an address (tcp://host:8786) uses a running scheduler (dask scheduler / dask "
                   "worker, dask-jobqueue, dask-kubernetes); paths must be readable by every worker")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="--scheduler local: worker processes, one thread each (default: one per core)")
@click.option("--tasks", type=click.IntRange(min=1), default=None,
              help="--scheduler: number of shards (default: two per worker thread)")
@click.option("--index", "index_dir", type=click.Path(), default=None,
              help="--scheduler: then merge the shards into this new index folder (merge-index, as a task)")
@click.option("--target-recall", type=float, default=0.99, show_default=True, help="--index: recall@10 target")
@click.option("--mode", default="rhythm", show_default=True, help="imaging mode the encoder was trained on")
@click.option("--tile", type=int, default=32, show_default=True, help="imaging tile size the encoder was trained on")
@click.option("--rr-scale", type=click.Choice(["angle", "linear"]), default="angle", show_default=True,
              help="mode rhythm: the RR map the encoder was trained with (bundles before it existed: linear)")
@click.option("--threads", type=int, default=1, show_default=True, help="interpreter threads")
@click.option("--chunk", type=int, default=256, show_default=True, help="cases imaged per chunk (bounds memory)")
@click.option("--no-progress", is_flag=True, help="no progress bar on stderr")
def embed_archive_command(encoder_path, archive, out_dir, shard, scheduler, workers, tasks, index_dir, target_recall,
                          mode, tile, rr_scale, threads, chunk, no_progress):
    """Embed one shard of an archive with a TFLite encoder (run N of these anywhere, then merge-index), or all
    shards on a Dask cluster (--scheduler, optionally merged with --index)."""
    from edge.errors import EcgretError
    try:
        if not Path(encoder_path).is_file():
            raise ConfigError(f"{encoder_path}: encoder file not found")
        imaging = ImagingConfig(mode=mode, tile=tile, rr_scale=rr_scale)
        if scheduler is None:
            for opt, v in (("--workers", workers), ("--tasks", tasks), ("--index", index_dir)):
                if v is not None:
                    raise ConfigError(f"{opt} goes with --scheduler")
            i, n = parse_shard(shard or "0/1")
            p = embed_archive(_open_archive(archive), encoder_path, out_dir, imaging, (i, n), chunk=chunk,
                              threads=threads, progress=not no_progress)
            click.echo(str(p))
            return
        if shard is not None:
            raise ConfigError("--shard and --scheduler exclude each other: the scheduler runs every shard")
        if archive:
            _open_archive(archive)              # a clear error here, not in every task
        res = embed_archive_distributed(archive, encoder_path, out_dir, imaging, scheduler, n_workers=workers,
                                        tasks=tasks, chunk=chunk, threads=threads, index_dir=index_dir,
                                        target_recall=target_recall, progress=not no_progress)
    except EcgretError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(res))


@click.command("merge-index")
@click.option("--shards", "shard_dir", type=click.Path(), required=True, help="the folder of embed-archive shards")
@click.option("--archive", default=None, help="the archive the shards came from (for cases.jsonl and a check)")
@click.option("--out", "out_dir", type=click.Path(), required=True, help="a new folder for the merged index")
@click.option("--target-recall", type=float, default=0.99, show_default=True, help="recall@10 target")
@click.option("--seed", type=int, default=0, show_default=True, help="Annoy seed and recall query sample seed")
@click.option("--no-progress", is_flag=True, help="no progress bar on stderr")
def merge_index_command(shard_dir, archive, out_dir, target_recall, seed, no_progress):
    """Merge embedding shards into one Annoy index tuned to a recall@10 target against exact search."""
    from edge.errors import EcgretError
    try:
        arch = _open_archive(archive)
        info = merge_index(shard_dir, out_dir, arch, target_recall=target_recall, seed=seed,
                           progress=not no_progress)
    except EcgretError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(info))
