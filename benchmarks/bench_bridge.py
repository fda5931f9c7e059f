"""Benchmark of the firmware bridge: parser throughput, a long accelerated stream over a pty
(clean and with faults), and the CPU cost of acquiring at real time.

    python benchmarks/bench_bridge.py                 # full run (10-minute stream)
    python benchmarks/bench_bridge.py --minutes 1 --realtime-s 10

Prints medians and p95 and names the machine. Nothing here is a test: figures are reported,
not asserted, except that the stream checks say plainly whether every sample matched.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from firmware_bridge import cyton as cy  # noqa: E402
from firmware_bridge import protocol as pr  # noqa: E402
from firmware_bridge.acquire import acquire  # noqa: E402
from firmware_bridge.info import LEADS8  # noqa: E402
from firmware_bridge.native_parser import NativeParser  # noqa: E402
from firmware_bridge.simulator import Simulator  # noqa: E402



def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stats(xs) -> str:
    a = np.asarray(xs, dtype=float)
    return f"median {np.median(a):,.0f}  p95-time equivalent {np.percentile(a, 5):,.0f}"


def load_record():
    data = Path(os.environ.get("ECGRET_DATA", ROOT.parent / "shared" / "data"))
    try:
        from edge.io import read_record

        r = read_record(data / "cinc2021-sample" / "HR06005")
        cols = [r.leads.index(x) for x in LEADS8]
        return r.signal[:, cols], float(r.fs)
    except Exception as e:  # pragma: no cover - benchmark fallback
        print(f"(no record: {e}; using synthetic data)")
        t = np.arange(5000) / 500.0
        return np.stack([np.sin(2 * np.pi * (k + 1) * t) for k in range(8)], axis=1), 500.0


def bench_parsers(repeats: int) -> None:
    rng = np.random.default_rng(0)
    m = 100_000
    counts = rng.integers(-2 ** 23, 2 ** 23, (m, 1, 8))
    blob, flen = pr.encode_data_frames(0, 0, counts)
    one, chunked, decode = [], [], []
    for _ in range(repeats):
        p = NativeParser()
        t = time.perf_counter()
        b = p.feed(blob)
        one.append(m / (time.perf_counter() - t))
        t = time.perf_counter()
        b.data()
        decode.append(m / (time.perf_counter() - t))
        p = NativeParser()
        t = time.perf_counter()
        for i in range(0, len(blob), 16384):
            p.feed(blob[i:i + 16384])
        chunked.append(m / (time.perf_counter() - t))
        assert p.stats["frames"] == m
    print(f"native parser, {flen}-byte frames (1 sample x 8 ch x 24 bit), {m:,} frames x {repeats}:")
    print(f"  one 4.5 MB buffer : {stats(one)} frames/s")
    print(f"  16 KiB reads      : {stats(chunked)} frames/s")
    print(f"  sample decoding   : {stats(decode)} frames/s")
    pk = cy.encode_packets(np.arange(m), rng.integers(-2 ** 23, 2 ** 23, (m, 8)))
    cyt = []
    for _ in range(repeats):
        p = cy.CytonParser()
        t = time.perf_counter()
        for i in range(0, len(pk), 16384):
            p.feed(pk[i:i + 16384])
        cyt.append(m / (time.perf_counter() - t))
    print(f"  Cyton, 16 KiB reads: {stats(cyt)} packets/s")


def bench_stream(x, fs, minutes: float, faults: str | None) -> None:
    seconds = minutes * 60
    label = f"faults {faults}" if faults else "clean"
    with Simulator(x, fs, LEADS8, board="native", speed=0, loop=True, faults=faults, seed=11) as sim:
        t = time.perf_counter()
        acq = acquire(sim.port, "native", seconds, timeout=10)
        wall = time.perf_counter() - t
        n = acq.n_samples
        expected = sim.expected_mv()[np.arange(n) % sim.n]
        damaged = np.asarray(sim.damaged_rows, dtype=np.int64)
        sent_frames = sim.stats["frames"]
    lost = np.zeros(n, bool)
    lost[damaged[damaged < n]] = True
    kept = ~acq.gap_mask
    identical = bool(np.array_equal(acq.signal_mv[kept], expected[kept]))
    wrong = int((kept & ~(acq.signal_mv == expected).all(axis=1)).sum())
    print(f"{minutes:g}-minute stream, 500 Hz x 8 ch x 24 bit, native over a pty, {label}:")
    print(f"  {n:,} samples in {wall:.1f} s wall ({n / wall:,.0f} frames/s, {seconds / wall:.0f}x real time); "
          f"frames sent {sent_frames:,}")
    print(f"  gap samples {int(acq.gap_mask.sum()):,}; damaged frames injected {int(lost.sum()):,}; "
          f"gaps == damaged frames: {bool(np.array_equal(acq.gap_mask, lost))}")
    print(f"  kept samples bit-identical to the source: {identical} ({wrong} kept samples differ; "
          f"missed gaps {int((lost & kept).sum())}, spurious gaps {int((~lost & ~kept).sum())})")
    keys = ("crc_errors", "bad_headers", "resyncs", "seq_gaps", "frames_missing", "dropped_samples", "bytes_skipped")
    print("  counters: " + ", ".join(f"{k} {acq.stats.get(k, 0):,}" for k in keys))


def bench_realtime(seconds: float) -> None:
    """CPU used by acquire() at real time; the simulator runs in another process (ecgret simulate)."""
    link = f"/tmp/ecgret-bench-{os.getpid()}"
    code = "from edge.cli_board import simulate; simulate(prog_name='ecgret simulate')"
    p = subprocess.Popen([sys.executable, "-c", code, "--board", "native", "--speed", "1", "--loop", "--link", link,
                          "--duration", str(seconds + 30)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True, cwd=ROOT)
    try:
        port = p.stdout.readline().strip()
        c0, t0 = time.process_time(), time.perf_counter()
        acq = acquire(port, "native", seconds, timeout=5)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    finally:
        p.terminate()
        p.wait(10)
    print(f"acquire at real time, {seconds:g} s of 500 Hz x 8 ch over a pty (simulator in another process):")
    print(f"  wall {wall:.1f} s, CPU {cpu:.2f} s = {100 * cpu / wall:.1f}% of one core; gaps "
          f"{int(acq.gap_mask.sum())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the accelerated stream (0 skips)")
    ap.add_argument("--faults", default="bitflip:0.001,drop:0.001,insert:0.001")
    ap.add_argument("--realtime-s", type=float, default=20.0, help="0 skips the real-time CPU measurement")
    ap.add_argument("--repeats", type=int, default=7, help="parser repeats (0 skips)")
    args = ap.parse_args()
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, numpy {np.__version__}")
    if args.repeats > 0:
        bench_parsers(args.repeats)
    x, fs = load_record()
    if args.minutes > 0:
        bench_stream(x, fs, args.minutes, None)
        bench_stream(x, fs, args.minutes, args.faults)
    if args.realtime_s > 0:
        bench_realtime(args.realtime_s)


if __name__ == "__main__":
    main()
