"""The shards of :mod:`convert.shards` as Dask tasks (``embed-archive --scheduler ADDRESS|local``; the ``convert``
extra's ``dask.distributed``).

``local`` starts a :class:`distributed.LocalCluster` of single-threaded worker processes on this machine; an
address (``tcp://host:8786``) uses a running scheduler, e.g. ``dask scheduler`` with ``dask worker`` on every
node, or a SLURM / PBS / Kubernetes cluster started by dask-jobqueue or dask-kubernetes (its
``scheduler_address``). Every task runs :func:`convert.shards.embed_archive` for one row range, so the shards are
byte for byte those of ``--shard i/N``; with ``--index OUT`` a last task runs :func:`convert.shards.merge_index`
on a worker. The archive, the encoder and the output folder must be paths every worker can read (and write).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from edge.errors import ConfigError
from edge.imaging import ImagingConfig

from .progress import progress_bar
from .ptbxl import open_archive
from .shards import embed_archive, merge_index, shard_name

__all__ = ["open_client", "embed_archive_distributed"]


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
    p = embed_archive(
        open_archive(archive_path),
        encoder_path,
        out_dir,
        imaging,
        tuple(shard),
        chunk=chunk,
        threads=threads,
        progress=False,
    )
    return {
        "shard": f"{shard[0]}/{shard[1]}",
        "path": str(p),
        "seconds": round(time.time() - t0, 2),
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _merge_task(shard_dir, index_dir, archive_path, target_recall: float, seed: int) -> dict:
    """The last Dask task: :func:`merge_index` on a worker; returns index.json's content and the peak memory."""
    t0 = time.time()
    info = merge_index(
        shard_dir, index_dir, open_archive(archive_path), target_recall=target_recall, seed=seed, progress=False
    )
    return {
        "index": info,
        "seconds": round(time.time() - t0, 2),
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "peak_rss_mb": _peak_rss_mb(),
    }


def open_client(scheduler: str, n_workers: int | None = None):
    """(dask client, the LocalCluster it started or None). ``scheduler``: ``"local"`` (``n_workers``
    single-threaded worker processes here; default one per core) or a scheduler address."""
    try:
        import logging

        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "--scheduler needs dask.distributed: pip install 'ecgret[convert]' (or 'dask[distributed]')"
        ) from None
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=int(n_workers or os.cpu_count() or 1),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
        return Client(cluster), cluster
    if n_workers is not None:
        raise ConfigError("--workers sizes a local cluster only; a scheduler at an address has its own workers")
    try:
        return Client(scheduler, timeout="30s"), None
    except (OSError, TimeoutError, ValueError) as e:
        raise ConfigError(f"--scheduler {scheduler}: cannot connect ({e})") from None


def embed_archive_distributed(
    archive_path,
    encoder_path,
    out_dir,
    imaging: ImagingConfig,
    scheduler: str = "local",
    *,
    n_workers: int | None = None,
    tasks: int | None = None,
    chunk: int = 256,
    threads: int = 1,
    index_dir=None,
    target_recall: float = 0.99,
    seed: int = 0,
    progress: bool = True,
) -> dict:
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

        futs = [
            client.submit(
                _embed_task,
                arch,
                enc,
                out,
                imaging,
                (i, n_tasks),
                chunk,
                threads,
                pure=False,
                key=f"embed-{shard_name(i, n_tasks)}-{time.time_ns()}",
            )
            for i in range(n_tasks)
        ]
        bar = progress_bar(n_tasks, f"embedding on {len(client.nthreads())} Dask workers", progress, unit="shard")
        done = []
        try:
            for f in as_completed(futs):
                done.append(f.result())  # a task's exception is raised here, as it was raised there
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
        res = {
            "scheduler": "local" if cluster is not None else scheduler,
            "workers": len(client.nthreads()),
            "worker_threads": nthreads,
            "tasks": done,
            "embed_wall_seconds": round(time.time() - t0, 1),
        }
        if index_dir is not None:
            t1 = time.time()
            m = client.submit(
                _merge_task, out, str(Path(index_dir).resolve()), arch, target_recall, seed, pure=False
            ).result()
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
