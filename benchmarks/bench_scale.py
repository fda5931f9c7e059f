"""Scale benchmark: embed a 100k-case archive in N parallel shard processes and merge one Annoy index.

The 100k archive is made of the 1,625 real PTB-XL subset records repeated, each copy augmented (amplitude,
baseline wander, noise, time shift; all 12 leads kept) with its own seed, so no two cases are identical. It is
written to disk as a normal archive folder (float16, ~2.4 GB for 100k) and then everything streams from disk:

    ecgret-convert embed-archive --shard i/N   (N processes at once, 1 interpreter thread each)
    ecgret-convert merge-index                 (on-disk Annoy build, recall@10 against exact search)

or, with ``--scheduler``, on Dask (the same shards as tasks, then the merge as a task on a worker):

    ecgret-convert embed-archive --scheduler local --workers W --tasks T --index OUT

Reported: wall time of each phase, per-shard seconds, peak RSS of every process (VmHWM; on Dask: of every worker
process, reported by its tasks, and of the client), the index settings and its measured recall, the machine. A
benchmark reports; it asserts nothing about timings.

    python benchmarks/bench_scale.py --n 100000 --shards 2 [--work /tmp/ecgret-scale] [--encoder PATH]
    python benchmarks/bench_scale.py --n 100000 --scheduler local --workers 2 [--tasks 8]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def make_archive(out: Path, n: int, seed: int = 0) -> float:
    """Write an n-case archive of augmented copies of the subset's records; returns seconds."""
    from convert.archive_write import write_archive
    from convert.augment import AugmentConfig, augment
    from convert.ptbxl import open_subset
    from dataclasses import replace
    from edge.paths import shared_data_dir
    t0 = time.time()
    src = open_subset(shared_data_dir() / "ptbxl-subset")
    acfg = AugmentConfig(p_reduced=0.0, p_lead=0.0)        # keep 12 leads: archives are full records
    m = len(src)
    cases = []
    for j in range(n):
        c = src.cases[j % m]
        cases.append(replace(c, case_id=f"scale:{j}:{c.case_id}", extra={}))

    def load(j: int):
        rng = np.random.default_rng([seed, j])
        x, _, nv = augment(src.signal(j % m), rng, acfg, src.cases[j % m].n_samples or None)
        return x, nv

    write_archive(out, cases, load, T=src.T, importer="bench_scale (augmented repeats of ptbxl-subset)",
                  progress=True, overwrite=True)
    return time.time() - t0


# Each command runs under this wrapper, which prints the process's own peak RSS (VmHWM) when it exits. (The
# ru_maxrss that wait4 reports for a child includes its parent's resident set at fork time on Linux.)
WRAP = ("import atexit, sys\n"
        "def _hwm():\n"
        "    for l in open('/proc/self/status'):\n"
        "        if l.startswith('VmHWM:'):\n"
        "            print('PEAK_RSS_KB', l.split()[1], file=sys.stdout, flush=True)\n"
        "atexit.register(_hwm)\n"
        "sys.argv = ['ecgret-convert'] + sys.argv[1:]\n"
        "from convert.cli import main\n"
        "main()\n")


def run_procs(cmds: list[list[str]], log_dir: Path) -> list[dict]:
    """Run commands at once; each reports its own peak RSS (VmHWM) through :data:`WRAP`."""
    procs = []
    for k, c in enumerate(cmds):
        err = open(log_dir / f"proc-{k}.log", "w")
        procs.append((subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=err if k else None, text=True),
                      err, time.time()))
    out = []
    for p, err, t0 in procs:
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        stdout = p.stdout.read() if p.stdout else ""
        err.close()
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(p.args)}\n"
                             f"{(log_dir / 'proc-0.log').read_text()[-2000:] if log_dir.exists() else ''}")
        hwm = [int(l.split()[1]) for l in stdout.splitlines() if l.startswith("PEAK_RSS_KB")]
        out.append({"cmd": " ".join(p.args[3:5]), "peak_rss_mb": round(hwm[-1] / 1024, 1) if hwm else None,
                    "seconds": round(time.time() - t0, 1), "stdout": stdout.strip()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--work", default="/tmp/ecgret-scale")
    ap.add_argument("--encoder", default=str(ROOT / "edge" / "bundles" / "default" / "encoder.tflite"))
    ap.add_argument("--mode", default="rhythm")
    ap.add_argument("--tile", type=int, default=32)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (the 100k archive is ~2.4 GB)")
    ap.add_argument("--reuse-archive", action="store_true", help="reuse an archive already in --work")
    ap.add_argument("--scheduler", default=None, help="run on Dask instead of --shards processes: 'local' or an "
                    "address (embed-archive --scheduler)")
    ap.add_argument("--workers", type=int, default=2, help="--scheduler local: worker processes (1 thread each)")
    ap.add_argument("--tasks", type=int, default=None, help="--scheduler: shards as tasks (default: 2 per worker)")
    args = ap.parse_args()

    work = Path(args.work)
    arch, shards, idx = work / "archive", work / "shards", work / "index"
    work.mkdir(parents=True, exist_ok=True)
    for p in (shards, idx):
        shutil.rmtree(p, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    res = {"machine": machine(), "n_cases": args.n, "shards": args.shards, "encoder": args.encoder,
           "archive": "augmented repeats of the 1,625 PTB-XL subset records (amplitude, wander, noise, shift; 12 leads)"}
    if args.reuse_archive and (arch / "archive.json").is_file():
        res["archive_seconds"] = 0.0
    else:
        res["archive_seconds"] = round(make_archive(arch, args.n), 1)
    cli = [sys.executable, "-c", WRAP]
    if args.scheduler:
        dask_run(args, res, cli, arch, shards, idx, logs)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return
    t0 = time.time()
    emb = run_procs([cli + ["embed-archive", "--encoder", args.encoder, "--archive", str(arch), "--out", str(shards),
                            "--shard", f"{i}/{args.shards}", "--mode", args.mode, "--tile", str(args.tile),
                            "--threads", "1"] + ([] if i == 0 else ["--no-progress"])
                     for i in range(args.shards)], logs)
    res["embed_wall_seconds"] = round(time.time() - t0, 1)
    res["embed_per_case_ms"] = round(1000 * sum(e["seconds"] for e in emb) / args.n, 2)
    res["embed_procs"] = [{k: v for k, v in e.items() if k != "stdout"} for e in emb]
    t0 = time.time()
    merge = run_procs([cli + ["merge-index", "--shards", str(shards), "--archive", str(arch), "--out", str(idx)]],
                      logs)
    res["merge_wall_seconds"] = round(time.time() - t0, 1)
    res["merge_peak_rss_mb"] = merge[0]["peak_rss_mb"]
    res["index"] = json.loads((idx / "index.json").read_text())
    res["embeddings_bytes"] = (idx / "embeddings.npy").stat().st_size
    res["index_bytes"] = (idx / "index.ann").stat().st_size
    print(json.dumps(res, indent=1))
    print(f"\n| phase | wall s | peak RSS MB |\n|---|---|---|")
    for k, e in enumerate(res["embed_procs"]):
        print(f"| embed shard {k}/{args.shards} ({args.n // args.shards} cases) | {e['seconds']} | {e['peak_rss_mb']} |")
    print(f"| merge + index ({res['index']['n_trees']} trees, search_k {res['index']['search_k']}, recall@10 "
          f"{res['index']['recall_at_10']:.4f}) | {res['merge_wall_seconds']} | {res['merge_peak_rss_mb']} |")
    print(f"\nmachine: {res['machine']}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def dask_run(args, res: dict, cli: list[str], arch: Path, shards: Path, idx: Path, logs: Path) -> None:
    """The Dask variant: one ``embed-archive --scheduler`` client process; the tasks report their workers' peaks."""
    cmd = cli + ["embed-archive", "--encoder", args.encoder, "--archive", str(arch), "--out", str(shards),
                 "--scheduler", args.scheduler, "--index", str(idx), "--mode", args.mode, "--tile", str(args.tile),
                 "--threads", "1"]
    if args.scheduler == "local":
        cmd += ["--workers", str(args.workers)]
    if args.tasks:
        cmd += ["--tasks", str(args.tasks)]
    t0 = time.time()
    (client,) = run_procs([cmd], logs)
    res["wall_seconds"] = round(time.time() - t0, 1)
    rep = json.loads([l for l in client["stdout"].splitlines() if l.startswith("{")][-1])
    res.update(engine="dask", scheduler=rep["scheduler"], workers=rep["workers"], shards=len(rep["tasks"]),
               embed_wall_seconds=rep["embed_wall_seconds"], merge_wall_seconds=rep["merge_wall_seconds"],
               client_peak_rss_mb=client["peak_rss_mb"], peak_rss_mb_per_worker=rep["peak_rss_mb_per_worker"],
               tasks=[{k: t[k] for k in ("shard", "seconds", "pid", "peak_rss_mb")} for t in rep["tasks"]],
               merge_task_seconds=rep["merge_task"]["seconds"], index=rep["index"])
    res["embed_per_case_ms"] = round(1000 * sum(t["seconds"] for t in rep["tasks"]) / args.n, 2)
    res["embeddings_bytes"] = (idx / "embeddings.npy").stat().st_size
    res["index_bytes"] = (idx / "index.ann").stat().st_size
    print(json.dumps(res, indent=1))
    ix = res["index"]
    print(f"\n| phase (Dask, {rep['workers']} workers, {len(rep['tasks'])} tasks) | wall s | peak RSS MB |\n|---|---|---|")
    print(f"| embed ({args.n} cases) | {res['embed_wall_seconds']} | per worker: "
          f"{', '.join(str(v) for v in res['peak_rss_mb_per_worker'].values())} |")
    print(f"| merge + index task ({ix['n_trees']} trees, search_k {ix['search_k']}, recall@10 {ix['recall_at_10']:.4f})"
          f" | {res['merge_wall_seconds']} | (the worker's, above) |")
    print(f"| client process | {res['wall_seconds']} | {res['client_peak_rss_mb']} |")
    print(f"\nmachine: {res['machine']}")


if __name__ == "__main__":
    main()
