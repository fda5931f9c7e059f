"""The latency benchmark of docs/EVALUATION.md (``ecgret bench``): it reports, it never fails.

Records: the 48 raw CinC 2021 WFDB records (500 Hz, mV: the device's real input) and PTB-XL subset rows
(100 Hz) to reach ``n_records`` distinct real records. Without the shared data (an installed wheel, no
``$ECGRET_DATA``) it falls back to the sample records shipped in the package (``edge/samples/``), each queried
in turn until ``n_records`` queries, and says so. Per stage (preprocess, quality, measure, image, encode,
search) and end to end (read excluded; reported separately): p50 and p95 after a warm-up, the interpreter
on 1 thread and on all cores. On 1 thread also the path without the measurement stage, query by query in turn
with the full path, and the paired per-query difference (what the measurements cost). Peak RSS and cold start
(process start to the first result line) come from spawning ``ecgret query --json FILE`` as a subprocess. The
machine is named (CPU model, cores) with its load average at the start and the end.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .retrieval import STAGES

__all__ = ["machine", "bench_data", "bench_records", "run_bench", "format_bench", "cold_start", "latency_stats"]


def machine() -> dict:
    """The machine a benchmark ran on: ``{"cpu": model name, "cores", "machine", "system", "python"}``
    (``/proc/cpuinfo``, else :mod:`platform`)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            if k.strip() in ("model name", "Model", "Hardware") and v.strip():
                model = v.strip()
                if k.strip() == "model name":
                    break
    except OSError:
        pass
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def bench_data() -> dict:
    """Where the benchmark's records come from: the shared data if its raw CinC records are there, else the
    samples shipped in the package. ``{"from": "shared" | "samples", "dir", "raw": [WFDB header paths]}``."""
    from .paths import sample_records, samples_dir, shared_data_dir

    d = shared_data_dir()
    raw = sorted((d / "cinc2021-sample").glob("*.hea"))
    if raw:
        return {"from": "shared", "dir": d, "raw": raw}
    return {
        "from": "samples",
        "dir": samples_dir(),
        "raw": [p.with_suffix(".hea") for p in sample_records()],
        "missing": d,
    }


def bench_records(n_records: int, data: dict | None = None):
    """(list of (source, Record), paths of raw WFDB records) from the shared data, else the shipped samples
    (see :func:`bench_data`), repeated in turn to reach ``n_records``."""
    from .io import read_record
    from .leads import LEADS12
    from .record import Record

    data = data or bench_data()
    d = data["dir"]
    out: list[tuple[str, Record]] = []
    paths = []
    for p in data["raw"]:
        if len(out) >= n_records:
            break
        try:
            out.append(("cinc500" if data["from"] == "shared" else "sample", read_record(p)))
            paths.append(p)
        except Exception:  # noqa: BLE001 - a record the reader refuses is simply not benchmarked
            pass
    if data["from"] == "samples":
        base = list(out)
        while base and len(out) < n_records:
            out.append(base[len(out) % len(base)])
        return out, paths
    npy = d / "ptbxl-subset" / "signals_100hz.npy"
    if len(out) < n_records and npy.exists():
        from .errors import RecordError

        try:
            rows = _archive_rows(npy, n_records - len(out))
        except RecordError:  # a damaged or hostile file ($ECGRET_DATA is anyone's): those records are not timed
            rows = []
        for i, x in enumerate(rows):
            out.append(("ptbxl100", Record(x, 100.0, LEADS12, f"ptbxl-row{i}")))
    return out, paths


def _archive_rows(npy: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` records of the shared PTB-XL array ``(N, T, 12)``, read as the record readers read an NPY
    file (:mod:`edge.io_npy`: a regular file, never unpickled, its header parsed strictly, its size checked) and
    only those rows: a FIFO there hung the benchmark, an object array or a truncated file was an internal error."""
    from .errors import RecordError
    from .io_files import array_from, open_regular, pread
    from .io_limits import MAX_NPY_HEADER
    from .io_npy import _parse_npy_header

    where = str(npy)
    fd, size = open_regular(npy, where, "NPY file")
    try:
        dtype, fortran, shape, start = _parse_npy_header(bytes(pread(fd, 0, 12 + MAX_NPY_HEADER, where)), where)
        if fortran or len(shape) != 3 or shape[2] != 12 or not 0 < shape[1] <= 100_000:
            raise RecordError(f"{where}: expected a C-ordered (records, samples, 12) array, got {shape}")
        row = shape[1] * 12
        n = min(n, shape[0])
        if size - start < n * row * dtype.itemsize:
            raise RecordError(f"{where}: shorter than its header says")
        flat = array_from(pread(fd, start, n * row * dtype.itemsize, where), dtype, n * row, where)
    finally:
        os.close(fd)
    with np.errstate(all="ignore"):
        x = flat.reshape(n, shape[1], 12).astype(np.float64)
    return [x[i] for i in range(n) if np.isfinite(x[i]).all()]


def latency_stats(xs) -> dict:
    """p50, p95 and mean in ms (rounded to µs) and n of durations ``xs`` in seconds."""
    a = np.asarray(xs, dtype=np.float64) * 1e3
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "n": int(a.size),
    }


def _time_queries(retrievers, records, warmup: int) -> list[dict]:
    """Per-stage and end-to-end latency stats of each retriever in ``retrievers`` over the same ``records``, after
    ``warmup`` untimed queries each. With several, they take each record in turn (which goes first alternates from
    one record to the next), so a slower stretch of the machine falls on all of them alike; each result also
    holds its ``total`` per query (``"_totals"``, seconds) for paired differences."""
    for _, rec in records[:warmup]:
        for r in retrievers:
            r.query_record(rec)
    n = len(retrievers)
    per: list[dict[str, list[float]]] = [{k: [] for k in STAGES + ("total",)} for _ in range(n)]
    by_source: list[dict[str, list]] = [{} for _ in range(n)]
    for i, (src, rec) in enumerate(records):
        for j in [(i + m) % n for m in range(n)]:
            res = retrievers[j].query_record(rec)
            for k in per[j]:
                per[j][k].append(res.timings.get(k, 0.0))
            by_source[j].setdefault(src, []).append(res.timings["total"])
    out = []
    for j in range(n):
        o: dict[str, Any] = {k: latency_stats(v) for k, v in per[j].items()}
        o["by_source"] = {k: latency_stats(v) for k, v in by_source[j].items()}
        o["_totals"] = per[j]["total"]
        out.append(o)
    return out


def _loadavg() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other work on the machine moves every figure), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _paired(a: dict, b: dict) -> dict:
    """Latency stats of the per-query differences ``a - b`` of two :func:`_time_queries` results on the same
    records (the paired cost of what ``a`` does more)."""
    return latency_stats(np.asarray(a["_totals"]) - np.asarray(b["_totals"]))


_RSS_PROBE = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss_mb(cmd, env) -> float:
    """Peak RSS (MB) of ``cmd``, measured from a small intermediate process: Linux carries a parent's
    ru_maxrss into a forked child across exec, so asking from this (large) process would report our own."""
    p = subprocess.run([sys.executable, "-c", _RSS_PROBE, *cmd], env=env, capture_output=True, text=True)
    rc, kb = p.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {rc}")
    return int(kb) / 1024.0


def cold_start(bundle_path, record: Path, runs: int = 5) -> dict:
    """Spawn ``ecgret query --json RECORD`` ``runs`` times: wall time to the first result line and total
    wall time; and its peak RSS (:func:`peak_rss_mb`). As an installed package runs: with its bytecode cached
    (pip compiles it at install; one untimed spawn first writes it where ``$PYTHONDONTWRITEBYTECODE`` kept
    an editable checkout from having it)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if bundle_path:
        env["ECGRET_BUNDLE"] = str(bundle_path)
    script = Path(sys.executable).parent / "ecgret"  # the console script, as a user runs it
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "edge.cli"]
    cmd += ["query", "--json", "--no-overlay", str(record)]
    first, total = [], []
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert p.stdout is not None  # stdout=PIPE
        line = p.stdout.readline()
        t1 = time.perf_counter()
        p.stdout.read()
        p.wait()
        t2 = time.perf_counter()
        if not line or p.returncode != 0:
            return {"error": f"`{' '.join(cmd)}` failed with exit code {p.returncode}"}
        first.append(t1 - t0)
        total.append(t2 - t0)
    try:
        rss = max(peak_rss_mb(cmd, env) for _ in range(min(runs, 3)))
    except RuntimeError as e:
        return {"error": str(e)}
    return {
        "first_result": latency_stats(first),
        "process": latency_stats(total),
        "peak_rss_mb": round(rss, 1),
        "runs": runs,
        "command": " ".join(["ecgret"] + cmd[cmd.index("query") :]),
    }


def run_bench(bundle_path=None, n_records: int = 200, warmup: int = 10, cold_runs: int = 5, progress=None) -> dict:
    """``ecgret bench``: time ``n_records`` queries (:func:`bench_records`) after ``warmup`` untimed ones, per
    stage and end to end, on 1 thread and on all cores, plus ``cold_runs`` cold starts (:func:`cold_start`).
    Returns the JSON-able result :func:`format_bench` prints; ``progress(str)`` gets status lines. Raises
    :class:`~edge.errors.ConfigError` when there is no record to time."""
    import resource

    from .bundle import load_bundle, resolve_bundle_path
    from .retrieval import Retriever

    say = progress or (lambda s: None)
    data = bench_data()
    records, paths = bench_records(n_records, data)
    if not records:
        from .errors import ConfigError

        raise ConfigError(
            f"no benchmark records: none readable in the shared data ({data['dir']}; set ECGRET_DATA to another)"
            if data["from"] == "shared"
            else f"no benchmark records: none in the shared data ({data.get('missing')}; set ECGRET_DATA) and no "
            "samples shipped in the package"
        )
    distinct = len({id(r) for _, r in records})
    res: dict[str, Any] = {
        "machine": machine(),
        "loadavg_start": _loadavg(),
        "bundle": str(resolve_bundle_path(bundle_path)),
        "n_records": len(records),
        "warmup": warmup,
        "sources": {s: sum(1 for x, _ in records if x == s) for s in {x for x, _ in records}},
        "data": {
            "from": data["from"],
            "dir": str(data["dir"]),
            "distinct_records": distinct,
            "records": [p.stem for p in paths] if data["from"] == "samples" else None,
        },
        "threads": {},
    }
    threads: dict[str, dict] = res["threads"]
    if data["from"] == "samples":
        say(
            f"bench: no shared data at {data['missing']} (set ECGRET_DATA); using the {distinct} sample records "
            f"shipped in the package: {', '.join(p.stem for p in paths)}"
        )
    cores = os.cpu_count() or 1
    for th in sorted({1, cores}):
        say(f"bench: {len(records)} records, {th} thread(s) ...")
        b = load_bundle(bundle_path, threads=th)
        r = Retriever(b)
        res["bundle_name"], res["bundle_hash"], res["interpreter"] = b.name, b.hash, b.encoder.backend
        res["kernels"] = b.encoder.kernels
        if th == 1:  # and the same queries without the measurement stage (the query path before it), interleaved
            say(f"bench: {len(records)} records, 1 thread, with and without measurements, interleaved ...")
            with_m, without = _time_queries([r, Retriever(b, measure=False)], records, warmup)
            threads[str(th)], res["without_measurements"] = with_m, without
            res["measurement_cost_ms"] = _paired(with_m, without)
        else:
            (threads[str(th)],) = _time_queries([r], records, warmup)
    for t in (*threads.values(), res.get("without_measurements") or {}):
        t.pop("_totals", None)
    res["loadavg_end"] = _loadavg()
    res["bench_process_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    if cold_runs and paths:
        say(f"bench: {cold_runs} cold starts of `ecgret query` ...")
        res["cold_start"] = cold_start(bundle_path, paths[0].with_suffix(""), cold_runs)
    return res


def _fmt_load(la) -> str:
    return "-" if not la else f"{la[0]:.2f}"


def format_bench(res: dict) -> str:
    """:func:`run_bench`'s result as text: the machine, bundle and data, then a table of p50/p95 in ms per
    stage and thread count, cold start and peak RSS."""
    m = res["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores ({m['machine']}, {m['system']}, Python {m['python']}); load average "
        f"{_fmt_load(res.get('loadavg_start'))} at the start, {_fmt_load(res.get('loadavg_end'))} at the end",
        f"bundle: {res.get('bundle_name')} ({res.get('bundle_hash')}), interpreter {res.get('interpreter')} "
        f"({res.get('kernels', 'builtin')} kernels)",
        f"records: {res['n_records']} real ({', '.join(f'{k} {v}' for k, v in sorted(res['sources'].items()))}), "
        f"after {res['warmup']} warm-up queries",
    ]
    data = res.get("data") or {}
    if data.get("from") == "samples":
        lines.append(
            f"data: the {data['distinct_records']} sample records shipped in the package "
            f"({', '.join(data['records'])}), queried in turn; no shared data (set ECGRET_DATA)"
        )
    elif data:
        lines.append(f"data: {data['dir']}")
    lines.append("")
    ths = list(res["threads"])
    head = f"{'stage':<12}" + "".join(f"{f'{t} thr p50':>12}{f'{t} thr p95':>12}" for t in ths)
    lines += [head + "   (ms)", "-" * len(head)]
    for k in STAGES + ("total",):
        lines.append(
            f"{k:<12}"
            + "".join(f"{res['threads'][t][k]['p50_ms']:>12.2f}{res['threads'][t][k]['p95_ms']:>12.2f}" for t in ths)
        )
    for src in sorted(res["threads"][ths[0]]["by_source"]):
        lines.append(
            f"{'total ' + src:<12}"
            + "".join(
                f"{res['threads'][t]['by_source'][src]['p50_ms']:>12.2f}{res['threads'][t]['by_source'][src]['p95_ms']:>12.2f}"
                for t in ths
            )
        )
    wo, cost = res.get("without_measurements"), res.get("measurement_cost_ms")
    if wo and cost and "1" in res["threads"]:
        w1 = res["threads"]["1"]["total"]
        lines.append(
            f"{'1 thr, end to end p50/p95':<26} with measurements {w1['p50_ms']:.2f}/{w1['p95_ms']:.2f} ms, "
            f"without (the path before them) {wo['total']['p50_ms']:.2f}/{wo['total']['p95_ms']:.2f} ms, "
            f"interleaved; the measurements' cost per query (paired) p50 {cost['p50_ms']:+.2f} ms, "
            f"p95 {cost['p95_ms']:+.2f} ms"
        )
    cs = res.get("cold_start")
    if cs:
        lines.append("")
        if "error" in cs:
            lines.append(f"cold start: {cs['error']}")
        else:
            lines.append(
                f"cold start (process start to first result, `{cs['command']}`, {cs['runs']} runs): "
                f"p50 {cs['first_result']['p50_ms'] / 1e3:.2f} s, p95 {cs['first_result']['p95_ms'] / 1e3:.2f} s"
            )
            lines.append(f"peak RSS of `ecgret query`: {cs['peak_rss_mb']:.1f} MB")
    lines.append(f"peak RSS of this benchmark process: {res['bench_process_peak_rss_mb']:.1f} MB")
    return "\n".join(lines)
