"""Before/after latency of two checkouts of ecgret on the same records, in alternating rounds of one run.

    python benchmarks/bench_ab.py OLD_CHECKOUT NEW_CHECKOUT [--repeat 5] [--rounds 2] [--json FILE]

(``git worktree add /tmp/old HEAD~3`` makes an old checkout.) Each round runs both checkouts in turn, each in its
own process (``PYTHONPATH`` = the checkout, the same interpreter and bundle), which order alternating from round to
round. A process queries each of ``ecgret bench``'s 200 records ``--repeat`` times with the measurements and as many
without (:class:`edge.retrieval.Retriever` ``measure=False``), one thread, and keeps per record the minimum of each
stage and of the totals: on a shared or throttled host the minimum of a few queries is what the code costs, a single
query's time is mostly the host's. Printed per checkout: per stage and end to end the median and p95 over records of
those minima (pooled over rounds), the 500 Hz and 100 Hz records apart, and the measurements' cost (with minus
without, per record); then new minus old. The machine is named with its load average. The same JSON answers are not
checked here (the golden-answer test does that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, sys, time
from edge.bench import bench_records
from edge.bundle import load_bundle
from edge.retrieval import Retriever
repeat = int(sys.argv[1])
records, _ = bench_records(200)
b = load_bundle(None, threads=1)
with_m, without = Retriever(b), Retriever(b, measure=False)
for _, rec in records[:10]:
    with_m.query_record(rec)
    without.query_record(rec)
out = []
for src, rec in records:
    best, w, wo = {}, 1e9, 1e9
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = with_m.query_record(rec)
        w = min(w, time.perf_counter() - t0)
        for k, v in res.timings.items():
            best[k] = min(best.get(k, 1e9), v)
        t0 = time.perf_counter()
        without.query_record(rec)
        wo = min(wo, time.perf_counter() - t0)
    out.append({"source": src, "stages": best, "with": w, "without": wo})
print(json.dumps(out))
"""

STAGES = ("preprocess", "quality", "measure", "image", "encode", "search", "total")


def _run(checkout: Path, repeat: int) -> list[dict]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    env.setdefault("ECGRET_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    p = subprocess.run(
        [sys.executable, "-c", WORKER, str(repeat)], cwd=checkout, env=env, capture_output=True, text=True, check=False
    )
    if p.returncode != 0:
        sys.exit(f"bench_ab: {checkout}: the worker failed:\n{p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout)


def _stats(xs) -> dict:
    import numpy as np

    a = np.asarray(xs, dtype=np.float64) * 1e3
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3)}


def summarize(rows: list[dict]) -> dict:
    """Per stage, per source and end to end: p50/p95 over records of the per-record minima (ms)."""
    res: dict = {s: _stats([r["stages"][s] for r in rows]) for s in STAGES}
    for src in sorted({r["source"] for r in rows}):
        res[f"total {src}"] = _stats([r["stages"]["total"] for r in rows if r["source"] == src])
    res["with measurements"] = _stats([r["with"] for r in rows])
    res["without measurements"] = _stats([r["without"] for r in rows])
    res["measurement cost (paired)"] = _stats([r["with"] - r["without"] for r in rows])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--repeat", type=int, default=5, help="queries per record and path; the minimum is kept")
    ap.add_argument("--rounds", type=int, default=2, help="rounds, each running both checkouts")
    ap.add_argument("--json", type=Path, help="write the summary here too")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(a.new))
    from edge.bench import _loadavg, machine

    load0 = _loadavg()
    rows: dict[str, list[dict]] = {"old": [], "new": []}
    for i in range(a.rounds):
        order = ("old", "new") if i % 2 == 0 else ("new", "old")
        for name in order:
            print(f"bench_ab: round {i + 1}/{a.rounds}: {name} ({getattr(a, name)}) ...", file=sys.stderr)
            rows[name] += _run(getattr(a, name).resolve(), a.repeat)
    out = {
        "machine": machine(),
        "loadavg_start": load0,
        "loadavg_end": _loadavg(),
        "repeat": a.repeat,
        "rounds": a.rounds,
        "old": {"checkout": str(a.old), **summarize(rows["old"])},
        "new": {"checkout": str(a.new), **summarize(rows["new"])},
    }
    m = out["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores ({m['machine']}, {m['system']}, Python {m['python']}); "
        f"load average {load0[0] if load0 else '-'} at the start, "
        f"{out['loadavg_end'][0] if out['loadavg_end'] else '-'} at the end"
    )
    print(f"per record the minimum of {a.repeat} queries, {a.rounds} rounds; p50 / p95 over records (ms), 1 thread")
    print(f"{'':28s} {'old':>15s} {'new':>15s} {'new - old (p50)':>16s}")
    for k in out["new"]:
        if k == "checkout":
            continue
        o, n = out["old"][k], out["new"][k]
        print(
            f"{k:28s} {o['p50_ms']:7.2f} / {o['p95_ms']:5.2f} {n['p50_ms']:7.2f} / {n['p95_ms']:5.2f} "
            f"{n['p50_ms'] - o['p50_ms']:+16.2f}"
        )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
