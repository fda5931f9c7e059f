"""The README's latency table from ``ecgret bench --json`` output: nothing is retyped by hand.

    ecgret bench --json > results/bench_default.json
    python benchmarks/bench_table.py results/bench_default.json

Prints the markdown table (per stage and end to end, 1 thread and all cores, p50 and p95), the line below it
(per source, without the measurements, their paired cost, cold start, peak RSS) and the machine it ran on, and
whether each target of issue 16 (p50 <= 5 ms, p95 <= 7 ms, 500 Hz p50 <= 6 ms, cold start <= 0.3 s, RSS <= 80 MB)
and issue 10 (measurements +1 ms p50 at most) held in that run. It reads the last JSON line of the file (the
command prints one object).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = (
    ("preprocess", "preprocess"),
    ("quality", "quality"),
    ("measure", "measure"),
    ("image", "image"),
    ("encode", "encode"),
    ("search", "search (Annoy + float64 rescoring + re-ranking)"),
)
TARGETS = (  # (what, value in the result, limit, unit)
    ("end to end p50, 1 thread", ("threads", "1", "total", "p50_ms"), 5.0, "ms"),
    ("end to end p95, 1 thread", ("threads", "1", "total", "p95_ms"), 7.0, "ms"),
    ("500 Hz records p50, 1 thread", ("threads", "1", "by_source", "cinc500", "p50_ms"), 6.0, "ms"),
    ("cold start p50", ("cold_start", "first_result", "p50_ms"), 300.0, "ms"),
    ("peak RSS of `ecgret query`", ("cold_start", "peak_rss_mb"), 80.0, "MB"),
    ("the measurements' paired cost p50", ("measurement_cost_ms", "p50_ms"), 1.0, "ms"),
)


def _get(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def load(path: Path) -> dict:
    """The last JSON object of ``path`` (``ecgret bench --json`` prints one line)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"{path}: no JSON object (write it with `ecgret bench --json > {path}`)")
    return json.loads(lines[-1])


def table(res: dict) -> str:
    """The markdown table and the lines under it."""
    th = res["threads"]
    many = sorted((k for k in th if k != "1"), key=int)[-1:] or []
    head = "| stage (ms) | 1 thread p50 | p95 |" + "".join(f" {k} threads p50 | p95 |" for k in many)
    out = [head, "|---|---|---|" + "---|---|" * len(many)]
    for key, label in STAGES + (("total", "**end to end**"),):
        bold = key == "total"
        cells = [th["1"][key]] + [th[k][key] for k in many]
        b = ["**" if bold and i == 0 else "" for i in range(len(cells))]
        vals = "".join(f" {b[i]}{c['p50_ms']:.2f}{b[i]} | {c['p95_ms']:.2f} |" for i, c in enumerate(cells))
        out.append(f"| {label} |{vals}")
    m = res["machine"]
    src = th["1"].get("by_source", {})
    wo, cost, cold = res.get("without_measurements"), res.get("measurement_cost_ms"), res.get("cold_start", {})
    words = []
    for k, name in (("ptbxl100", "100 Hz records"), ("cinc500", "500 Hz records")):
        if k in src:
            words.append(f"{name} p50 {src[k]['p50_ms']:.2f} ms (p95 {src[k]['p95_ms']:.2f}, n {src[k]['n']})")
    if wo and cost:
        words.append(
            f"without the measurement stage p50 {wo['total']['p50_ms']:.2f} / p95 {wo['total']['p95_ms']:.2f} ms, "
            f"the measurements' paired cost p50 +{cost['p50_ms']:.2f} ms (p95 +{cost['p95_ms']:.2f})"
        )
    if cold.get("first_result"):
        words.append(
            f"cold start p50 {cold['first_result']['p50_ms'] / 1e3:.2f} s ({cold.get('runs')} runs); peak RSS of "
            f"`ecgret query` {cold.get('peak_rss_mb')} MB"
        )
    out += ["", "End to end at 1 thread: " + "; ".join(words) + "."]
    out += [
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['machine']}, {m['system']}, Python {m['python']}); load average "
        f"{res.get('loadavg_start', ['?'])[0]} at the start, {res.get('loadavg_end', ['?'])[0]} at the end; "
        f"{res.get('n_records')} records ({', '.join(f'{k} {v}' for k, v in sorted(res.get('sources', {}).items()))}) "
        f"after {res.get('warmup')} warm-up queries; interpreter {res.get('interpreter')} ({res.get('kernels')} "
        f"kernels); bundle {res.get('bundle_name')} ({res.get('bundle_hash')}).",
    ]
    return "\n".join(out)


def targets(res: dict) -> list[tuple[str, float | None, float, str, bool | None]]:
    """(what, measured, limit, unit, held) for each target."""
    rows = []
    for what, path, limit, unit in TARGETS:
        v = _get(res, path)
        rows.append((what, v, limit, unit, None if v is None else bool(v <= limit)))
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: python benchmarks/bench_table.py BENCH.json", file=sys.stderr)
        return 2
    res = load(Path(argv[0]))
    print(table(res))
    print()
    for what, v, limit, unit, held in targets(res):
        got = "not measured" if v is None else f"{v:.2f} {unit}"
        print(f"- {what}: {got} (target <= {limit:g} {unit}): {'held' if held else 'not held'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
