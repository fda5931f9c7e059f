"""Fuzzing the record readers (edge.io) with hypothesis: structured strategies over WFDB headers, MATLAB v4
headers, NPY headers and CSV text, and byte-level mutation of real records (CinC 2021 .hea/.mat, LUDB
.hea/.dat, and CSV/NPY files made from them).

For every input the reader must return a valid Record or raise an :class:`~edge.errors.EcgretError`:
anything else is a failure (an unhandled exception), and so is an input that runs past a per-input deadline
(a hang, e.g. a FIFO opened for reading) or whose reader call allocates over 300 MB (tracemalloc peak).

Sizes: ``ECGRET_FUZZ_EXAMPLES`` inputs per target (default 2,000, the CI run; there are 8 targets);
``ECGRET_FUZZ_SEED`` picks the random seed (default fixed, so CI is reproducible); ``ECGRET_FUZZ_DEADLINE_S``
is the per-input limit (default 10 s, generous for a shared machine: valid inputs take milliseconds).
``ECGRET_FUZZ_REPORT=path.json`` writes per-target counts, wall time, slowest input and peak memory. A long run:

    ECGRET_FUZZ_EXAMPLES=7000 ECGRET_FUZZ_SEED=1 ECGRET_FUZZ_REPORT=fuzz.json nice -n 19 \\
        .venv/bin/python -m pytest -q tests/test_fuzz_readers.py
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import struct
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from edge.errors import EcgretError
from edge.io import read_record
from edge.leads import LEADS12
from edge.record import Record

pytestmark = pytest.mark.slow  # every test here is a hypothesis run of thousands of inputs

N_EXAMPLES = int(os.environ.get("ECGRET_FUZZ_EXAMPLES", "2000"))
SEED = int(os.environ.get("ECGRET_FUZZ_SEED", "20240611"))
DEADLINE_S = float(os.environ.get("ECGRET_FUZZ_DEADLINE_S", "10"))
MAX_PEAK_BYTES = 300 * 1024 * 1024
TRACE_EVERY = int(os.environ.get("ECGRET_FUZZ_TRACE_EVERY", "10"))
REPORT = os.environ.get("ECGRET_FUZZ_REPORT")

_STATS: dict[str, dict] = {}


class Hang(BaseException):
    """An input ran past the per-input deadline (BaseException: no reader's ``except Exception`` eats it)."""


def _on_alarm(signum, frame):
    raise Hang(f"a reader call ran over {DEADLINE_S:g} s")


def check_read(target: str, path, **kw) -> Record | None:
    """Read ``path`` under the deadline (and, every TRACE_EVERY-th input, tracemalloc); only a Record or an
    EcgretError may come out. The address-space limit of :func:`run_target` bounds every input's memory."""
    s = _STATS.setdefault(target, {"inputs": 0, "ok": 0, "refused": 0, "max_s": 0.0, "max_peak_mb": 0.0,
                                   "traced": 0})
    s["inputs"] += 1
    traced = s["inputs"] % TRACE_EVERY == 0
    s["traced"] += traced
    old = signal.signal(signal.SIGALRM, _on_alarm)
    if traced:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, DEADLINE_S)
        try:
            rec = read_record(path, **kw)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        s["ok"] += 1
    except EcgretError as e:
        rec = None
        s["refused"] += 1
        msg = str(e)
        why = re.sub(r"[0-9'\"(].*", "", msg.split(": ", 1)[-1])[:40].strip()
        s.setdefault("reasons", Counter())[why] += 1
        assert "\n" not in msg and len(msg) <= 1000, f"error message not one short line ({len(msg)} chars)"
    finally:
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
        tracemalloc.stop()
        signal.signal(signal.SIGALRM, old)
        s["max_s"] = max(s["max_s"], dt)
        s["max_peak_mb"] = max(s["max_peak_mb"], peak / 2**20)
    assert peak <= MAX_PEAK_BYTES, f"reader call allocated {peak / 2**20:.0f} MB"
    if rec is not None:
        assert isinstance(rec, Record) and rec.signal.ndim == 2 and rec.signal.shape[1] == len(rec.leads)
        assert np.isfinite(rec.signal).all() and math.isfinite(rec.fs) and rec.fs > 0
        assert rec.signal.shape[0] <= math.ceil(kw.get("max_seconds", 13.0) * rec.fs)
    return rec


@contextlib.contextmanager
def _address_space_limit(extra: int):
    """While fuzzing, the process may not grow its address space by more than ``extra`` bytes (RLIMIT_AS):
    an input that makes a reader allocate more gets a MemoryError, which fails the test like any unhandled
    exception. This bounds every input at no cost; tracemalloc measures every TRACE_EVERY-th one."""
    try:
        import resource
        vm = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        old = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    limit = vm + extra
    if old[1] != resource.RLIM_INFINITY:
        limit = min(limit, old[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)


def run_target(name: str, strategy, body) -> None:
    """Run ``body(example)`` over ``N_EXAMPLES`` examples of ``strategy``; check that all of them ran."""
    t0 = time.perf_counter()

    @seed(SEED)
    @settings(max_examples=N_EXAMPLES, deadline=None, database=None, print_blob=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(example):
        body(example)

    before = _STATS.get(name, {}).get("inputs", 0)
    with _address_space_limit(MAX_PEAK_BYTES):
        fuzz()
    s = _STATS[name]
    s["wall_s"] = round(time.perf_counter() - t0, 1)
    assert s["inputs"] - before >= N_EXAMPLES, s
    if REPORT:
        p = Path(REPORT)
        old = json.loads(p.read_text()) if p.exists() else {}
        old[name] = dict(s, reasons=dict(s.get("reasons", Counter()).most_common(8)), seed=SEED,
                         examples_per_target=N_EXAMPLES, deadline_s=DEADLINE_S, trace_every=TRACE_EVERY)
        p.write_text(json.dumps(old, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with the traps a header may point at: a link to /dev/zero, a FIFO, a link to a real file,
    and a subfolder; each example writes its own files next to them."""
    d = tmp_path_factory.mktemp("fuzz")
    os.symlink("/dev/zero", d / "zero.dat")
    os.mkfifo(d / "fifo.dat")
    (d / "sub").mkdir()
    (d / "sub" / "x.dat").write_bytes(np.zeros(2000, "<i2").tobytes())
    (d / "real.dat").write_bytes(np.zeros(6000, "<i2").tobytes())
    os.symlink(d / "real.dat", d / "link.dat")
    return d


@pytest.fixture(scope="module")
def seeds(shared_data, tmp_path_factory) -> dict:
    """Real records as bytes: CinC 2021 (.hea + .mat), LUDB (.hea + .dat), CSV and NPY made from them."""
    out = {}
    cinc = shared_data / "cinc2021-sample"
    for name in ("HR06005", "E07500", "JS20000"):
        out[f"cinc:{name}"] = {"rec.hea": (cinc / f"{name}.hea").read_text().replace(name, "rec").encode(),
                               "rec.mat": (cinc / f"{name}.mat").read_bytes()}
    ludb = shared_data / "ludb-dev" / "data"
    if not ludb.is_dir():
        from tests.shared import missing_data
        missing_data(f"ludb-dev not in the shared data at {shared_data}")
    for name in sorted(p.stem for p in ludb.glob("*.hea"))[:3]:
        hea = (ludb / f"{name}.hea").read_text()
        hea = "\n".join(ln.replace(f"{name}.dat", "rec.dat") if i else ln.replace(name, "rec", 1)
                        for i, ln in enumerate(hea.splitlines())) + "\n"
        out[f"ludb:{name}"] = {"rec.hea": hea.encode(), "rec.dat": (ludb / f"{name}.dat").read_bytes()}
    tmp = tmp_path_factory.mktemp("seeds")
    for key in ("cinc:HR06005", f"ludb:{sorted(p.stem for p in ludb.glob('*.hea'))[0]}"):
        d = tmp / key.replace(":", "_")
        d.mkdir()
        for fn, b in out[key].items():
            (d / fn).write_bytes(b)
        rec = read_record(d / "rec.hea")
        x = rec.signal[:1200]  # 2.4 s: short enough to read thousands of times
        xc = rec.signal[:1200:2]  # CSV: the same 2.4 s at 250 Hz (600 rows to parse)
        t = np.arange(xc.shape[0]) / (rec.fs / 2)
        rows = ["time," + ",".join(rec.leads)] + [f"{ti:.4f}," + ",".join(f"{v:.4f}" for v in row)
                                                  for ti, row in zip(t, xc)]
        out[f"csv:{key}"] = {"rec.csv": ("\n".join(rows) + "\n").encode()}
        semi = ["I;II;V1"] + [f"{a:.3f};{b:.3f};{c:.3f}".replace(".", ",") for a, b, c in xc[:, [0, 1, 6]]]
        out[f"csv-semi:{key}"] = {"rec.csv": ("\r\n".join(semi) + "\r\n").encode()}
        for label, arr in (("npy", x), ("npy-T", x.T.astype(np.float32)), ("npy-F", np.asfortranarray(x)),
                           ("npy-i2", np.round(x * 1000).astype("<i2"))):
            p = tmp / "a.npy"
            np.save(p, arr)
            out[f"{label}:{key}"] = {"rec.npy": p.read_bytes()}
    return out


_TRAPS = ("zero.dat", "fifo.dat", "link.dat", "real.dat", "sub")


def _example_dir(work: Path) -> Path:
    """The example folder, emptied of the previous example's files (the traps stay: ``_zero.dat`` etc.)."""
    d = work / "ex"
    if not d.exists():
        d.mkdir()
        for trap in _TRAPS:
            os.symlink(work / trap, d / f"_{trap}")
    for name in os.listdir(d):
        if not name.startswith("_"):
            os.unlink(d / name)
    return d


# ----------------------------------------------------------------------------------------------- strategies

_text = st.text(max_size=12)


_HOSTILE = {  # per field of a WFDB header: tokens worth trying, then any short text
    "name": ["h/2", "h/x", "", "h h", "\x1b[2J", "x" * 300],
    "nsig": ["0", "1", "12", "13", "64", "65", "-1", "9" * 30, "abc", "", "\u0661\u0662", "+3", "1_0", "999999"],
    "fs": ["nan", "NaN", "inf", "-inf", "abc", "0", "-5", "1e999", "1e-999", "200001", "100000", "99.5", "500/1",
           "500(0)", "500/1(0)", "+500", ".5e3", "\u0665\u0660\u0660", "1_000", "5e2", "500.", "50", "1e5"],
    "nsamp": ["0", "abc", "-1", "9" * 20, "1", "999", "2500", "5001", "1e3", "\u0661"],
    "file": ["x.mat", "x.hea", "h.hea", "../x.dat", "../../../../etc/passwd", "/etc/passwd", "/dev/zero",
             "sub/x.dat", "_sub/x.dat", "-", ".", "..", "_zero.dat", "_fifo.dat", "_link.dat", "_real.dat",
             "missing.dat", "~/x.dat", "x" * 300, "X.DAT", "_sub", "x.dat/"],
    "fmt": ["212", "16x1+24", "16+24", "212+3", "16x2", "16:1", "310", "8", "80", "0", "16x0", "16+99999999999999",
            "16+1", "212+1", "16x1", "16+5000000"],
    "gain": ["1000.0(0)/mV", "200(5)/uV", "0", "0(0)/mV", "nan", "-200", "1e999(0)/mV", "1e-300", "abc(0)/mV",
             "200(99999999999999)/V", "200(0)", "1e300(0)/uV", "200(-32768)/mV", "200(x)/mV", "200/", "inf"],
    "int": ["abc", "-1", "9" * 30, "", "1.5", "\u0661", "+3", "-32768", "1_0"],
    "desc": ["", "i", "avr", "MLII", "V7", "foo", "I I", "\x1b[2J", "II", "I", "x" * 200],
}
_FIELDS = ["file", "fmt", "gain", "int", "int", "int", "int", "int", "desc"]


@st.composite
def wfdb_header(draw):
    """A valid header skeleton (n leads, format 16 or 212, x.dat) with a few fields made hostile."""
    n = draw(st.integers(1, 12))
    fmt = draw(st.sampled_from(["16", "212"]))
    nsamp = draw(st.sampled_from([5000, 1000, 2500, 6500, 7000]))
    rec = ["h", str(n), "500", str(nsamp)]
    sig = [["x.dat", fmt, "200(0)/mV", "12", "0", "0", "0", "0", LEADS12[k]] for k in range(n)]
    for _ in range(draw(st.integers(0, 3))):
        line = draw(st.integers(0, n))
        if line == 0:
            k = draw(st.integers(0, 3))
            rec[k] = draw(st.one_of(st.sampled_from(_HOSTILE[["name", "nsig", "fs", "nsamp"][k]]), _text))
        else:
            k = draw(st.integers(0, 8))
            sig[line - 1][k] = draw(st.one_of(st.sampled_from(_HOSTILE[_FIELDS[k]]), _text))
    lines = [" ".join(rec[: draw(st.sampled_from([4, 4, 4, 3, 2, 1]))])]
    lines += [" ".join(f) for f in sig]
    cut = draw(st.sampled_from([None] * 6 + [0, 1, 2, 3]))
    if cut is not None:  # truncate a line, or drop signal lines
        if draw(st.booleans()):
            lines = lines[: 1 + cut]
        else:
            lines[-1] = " ".join(lines[-1].split()[:cut])
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["#Age: 50", "# Dx: 426783006", "#", "",
                                                                             "   ", "junk line"])))
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines) + "\n"
    frame = n * 2 if fmt == "16" else n * 1.5
    size = draw(st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.999, 1.001, 2.0, 0.0]))
    data = draw(st.one_of(st.just(b""), st.binary(max_size=64))) if size == 0.0 else \
        np.random.default_rng(nsamp).integers(-2048, 2048, int(nsamp * frame * size) // 2, dtype="<i2").tobytes()
    return text.encode("utf-8", "surrogatepass"), data, draw(_fs), draw(_leads)


_fs = st.one_of(st.none(), st.sampled_from([500.0, 250.0, 100.0, 50.0, 1000.0, 360.0, -5.0, 0.0, float("nan"),
                                            float("inf"), 200001.0, 1e-300]))
_leads = st.one_of(st.none(), st.just(["I", "II"]), st.just(["V1"]), st.just(["aVF", "I"]), st.just([]),
                   st.just(["foo"]))


_I32 = st.one_of(st.sampled_from([0, 1, 2, 3, 12, 24, 30, 1030, 5000, 4999, -1, -2**31, 2**31 - 1, 1000, 10, 20,
                                   2**20, 13, 11, 5001]), st.integers(-2**31, 2**31 - 1))


@st.composite
def mat_v4(draw):
    """A valid CinC-style MATLAB v4 file (int16, n_sig x n_samples, little or big endian) and its header,
    with a few of the five header fields, the name or the payload length made hostile."""
    nsig = draw(st.sampled_from([1, 2, 12]))
    nsamp = draw(st.sampled_from([5000, 1200, 6500, 7000]))
    endian = draw(st.sampled_from(["<", ">"]))
    rows_first = draw(st.booleans())  # (n_sig, n_samples) as CinC, or (n_samples, n_sig)
    fields = [1030 if endian == ">" else 30, nsig if rows_first else nsamp, nsamp if rows_first else nsig, 0, 4]
    for _ in range(draw(st.integers(0, 2))):
        fields[draw(st.integers(0, 4))] = draw(_I32)
    head = struct.pack(endian + "5i", *fields)[: draw(st.sampled_from([20] * 8 + [19, 8, 0]))]
    n_bytes = int(nsig * nsamp * 2 * draw(st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.9999, 2.0, 0.0])))
    payload = np.random.default_rng(nsamp).integers(-3000, 3000, n_bytes // 2, dtype="i2").astype(endian + "i2").tobytes()
    if draw(st.integers(0, 5)) == 5:
        payload = draw(st.binary(max_size=200)) + payload
    n_head = draw(st.sampled_from([nsamp, nsamp, 0, 1000, 99999999, None]))
    rec = f"m {nsig} 500" + (f" {n_head}" if n_head is not None else "")
    lines = [rec] + [f"m.mat 16x1+24 1000.0(0)/mV 16 0 0 0 0 {LEADS12[k]}" for k in range(nsig)]
    return "\n".join(lines).encode(), head + b"val\0" + payload, draw(_fs)


_DESCRS = ["<f8", "<f4", ">f8", "<i2", ">i2", "|u1", "|i1", "<u2", "<f2", "<i8", "|O", "<c16", "|b1", "<U3", "<f16",
           "f8", "<f1", "|V8", "<M8[s]", "=f8", "|f8"]


@st.composite
def npy_file(draw):
    """A valid NPY file (12 or 8 leads, either orientation, C or Fortran order, several dtypes), then a few of:
    a hostile dtype, shape, fortran_order, extra or missing keys, header text, version, length field, magic
    or payload length."""
    descr = draw(st.sampled_from(["<f8", "<f4", ">f8", "<i2", ">i2", "|u1", "<f2", "<i8"]))
    shape = draw(st.sampled_from([(1200, 12), (12, 1200), (1200, 8), (8, 1200), (1200, 3), (6600, 8)]))
    fortran = draw(st.booleans())
    size = draw(st.sampled_from([1.0, 1.0, 1.0, 0.5, 0.9999, 2.0, 0.0]))
    d = {"descr": descr, "fortran_order": fortran, "shape": shape}
    for _ in range(draw(st.integers(0, 2))):
        what = draw(st.sampled_from(["descr", "shape", "fortran_order", "extra", "missing"]))
        if what == "descr":
            d["descr"] = draw(st.one_of(st.sampled_from(_DESCRS), st.just([("a", "<f8")]), _text, st.integers()))
        elif what == "shape":
            d["shape"] = draw(st.one_of(
                st.lists(st.one_of(st.sampled_from([-1, 0, 1, 8, 12, 5000, 2**31, 2**40, 2**63, 10**30]),
                                   st.integers(0, 10**6)), max_size=4).map(tuple),
                st.sampled_from([[1200, 12], "1200,12", None, (1200.0, 12), (True, 12), ((1200,), 12)])))
        elif what == "fortran_order":
            d["fortran_order"] = draw(st.sampled_from([0, 1, "True", None]))
        elif what == "extra":
            d["extra"] = 1
        elif d:
            del d[draw(st.sampled_from(sorted(d)))]
    text = repr(d)
    hostile_text = draw(st.sampled_from([None] * 8 + ["cut", "junk", "nest", "bigint", "quote"]))
    if hostile_text == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif hostile_text == "junk":
        text = draw(st.text(max_size=60))
    elif hostile_text == "nest":
        text = "{'a': " + "[" * 300 + "]" * 300 + "}"
    elif hostile_text == "bigint":
        text = "{'a': " + "9" * 5000 + "}"
    elif hostile_text == "quote":
        text = text.replace("'", draw(_text), 1)
    raw = text.encode("utf-8", "surrogatepass")
    raw += b" " * ((-len(raw) - 11) % 64) + b"\n"
    major = draw(st.sampled_from([1] * 8 + [2, 3, 0, 4, 255]))
    hlen = len(raw) if draw(st.integers(0, 6)) < 6 else draw(st.integers(0, 2**32 - 1))
    magic = draw(st.sampled_from([b"\x93NUMPY"] * 10 + [b"\x93NUMPZ", b"PK\x03\x04\x14\x00", b""]))
    lenb = struct.pack("<H", hlen % 65536) if major == 1 else struct.pack("<I", hlen % 2**32)
    try:
        itemsize = np.dtype(descr).itemsize
    except TypeError:
        itemsize = 8
    n_bytes = int(shape[0] * shape[1] * itemsize * size)
    body = np.random.default_rng(n_bytes).integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    if descr.endswith("f8") or descr.endswith("f4") or descr.endswith("f2"):  # finite floats, mostly
        body = np.zeros(n_bytes, np.uint8).tobytes()
    return magic + bytes([major, 0]) + lenb + raw + body, draw(st.one_of(st.just(500.0), _fs)), draw(_leads)


_CELLS = ["", " ", "nan", "1,5", "abc", '"1.0"', "1e999", "-0", "1_0", "#", "\x00", "\u00a0", "inf", "1e-400",
          "0x10", "--1", "1.2.3", "\ufeff1"]


@st.composite
def csv_file(draw):
    """Mostly a valid CSV (lead names, maybe a time column in s or ms, numbers, a delimiter, line endings),
    or free text over a CSV-like alphabet; then a few hostile names, cells, rows or bytes."""
    if draw(st.integers(0, 7)) == 7:  # free text
        raw = draw(st.text(alphabet="0123456789.,;\t\n\r-+eE#naifIVavrl \"\ufeff\u00b5", max_size=400))
        return raw.encode("utf-8"), draw(_fs), draw(_leads), ".csv"
    delim = draw(st.sampled_from([",", ",", ";", "\t", " ", "|"]))
    n_leads = draw(st.integers(1, 12))
    cols = [LEADS12[k] for k in np.random.default_rng(draw(st.integers(0, 2**16))).permutation(12)[:n_leads]]
    time_col = draw(st.sampled_from([None, None, "time", "t", "time_ms", "ms", "seconds"]))
    if time_col:
        cols = [time_col] + cols
    header = draw(st.sampled_from([True] * 6 + [False]))
    for _ in range(draw(st.integers(0, 1))):
        cols[draw(st.integers(0, len(cols) - 1))] = draw(st.one_of(st.sampled_from(["foo", "", "I", "V7", "x" * 99,
                                                                                    "\x1b[2J", '"II"']), _text))
    n_rows = draw(st.sampled_from([600, 600, 1500, 3300, 0, 1, 3, 150]))
    fs_file = draw(st.sampled_from([250.0, 500.0, 1000.0, 50.0, 1e6]))
    x = np.random.default_rng(n_rows).normal(size=(n_rows, len(cols)))
    if time_col:
        x[:, 0] = np.arange(n_rows) / fs_file * (1000.0 if "ms" in time_col else 1.0)
    fmt = delim.join(["%.4f"] * len(cols))
    rows = [fmt % tuple(r) for r in x.tolist()]
    for _ in range(draw(st.integers(0, 2))):  # a few damaged cells or rows
        if rows:
            k = draw(st.integers(0, len(rows) - 1))
            cells = rows[k].split(delim)
            cells[draw(st.integers(0, len(cells) - 1))] = draw(st.one_of(st.sampled_from(_CELLS), _text))
            rows[k] = draw(st.sampled_from([delim.join(cells)] * 4 + ["", "#c", rows[k] + delim,
                                                                     delim.join(["1"] * 40), "x" * 50]))
    if delim == ";" and draw(st.booleans()):
        rows = [r.replace(".", ",") for r in rows]
    nl = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = nl.join(([delim.join(cols)] if header else []) + rows) + nl
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 5:
        k = draw(st.integers(0, len(raw)))
        raw = raw[:k] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"])) + raw[k:]
    if draw(st.integers(0, 7)) == 7:
        raw = b"\xef\xbb\xbf" + raw
    fs = draw(st.one_of(st.just(fs_file), _fs))
    return raw, fs, draw(_leads), draw(st.sampled_from([".csv", ".csv", ".tsv", ".txt"]))


_PIECES = [b"\x00", b"\xff", b"nan", b"-", b"\n", b"/", b"..", b"9999999999", b" ", b",", b"\xff\xff\xff\x7f",
           b"../../../../etc/passwd", b"#", b"e9"]
_OPS = ("flip", "set", "insert", "delete", "truncate", "dup", "splice")


def mutate(b: bytes, program: bytes) -> bytes:
    """Apply a mutation program: every 6 bytes are one operation (kind, position, length, byte, piece), so
    hypothesis draws one byte string per input (cheap) and shrinks it to the fewest operations."""
    b = bytearray(b)
    for k in range(0, len(program) - 5, 6):
        op, p_hi, p_lo, n, byte, piece = program[k:k + 6]
        op, n, piece = _OPS[op % len(_OPS)], n % 64 + 1, _PIECES[piece % len(_PIECES)]
        i = min(((p_hi << 8) | p_lo) * len(b) // 65536, max(0, len(b) - 1))
        if op == "flip" and b:
            b[i] ^= 1 << (byte % 8)
        elif op == "set" and b:
            b[i:i + n] = bytes([byte]) * len(b[i:i + n])
        elif op == "insert":
            b[i:i] = piece * max(1, n // 8)
        elif op == "delete":
            del b[i:i + n]
        elif op == "truncate":
            del b[i:]
        elif op == "dup":
            b[i:i] = b[i:i + n * 16]
        elif op == "splice":
            b[i:i + len(piece)] = piece
    return bytes(b)


def mutated(keys):
    """(seed record, mutation program, which of its files to mutate, fs)."""
    return st.tuples(st.sampled_from(keys), st.binary(min_size=6, max_size=48), st.integers(0, 2),
                     st.sampled_from([None, None, None, 500.0, 250.0, -5.0, float("nan")]))


# ----------------------------------------------------------------------------------------------- targets

def test_fuzz_wfdb_headers(work):
    def body(ex):
        text, data, fs, leads = ex
        d = _example_dir(work)
        (d / "h.hea").write_bytes(text)
        (d / "x.dat").write_bytes(data)
        (d / "x.mat").write_bytes(struct.pack("<5i", 30, 12, len(data) // 24, 0, 4) + b"val\0" + data)
        check_read("wfdb_header", d / "h.hea", fs=fs, leads=leads)
    run_target("wfdb_header", wfdb_header(), body)


def test_fuzz_mat_v4_headers(work):
    def body(ex):
        hea, mat, fs = ex
        d = _example_dir(work)
        (d / "m.hea").write_bytes(hea)
        (d / "m.mat").write_bytes(mat)
        check_read("mat_v4_header", d / "m", fs=fs)
    run_target("mat_v4_header", mat_v4(), body)


def test_fuzz_npy_headers(work):
    def body(ex):
        raw, fs, leads = ex
        d = _example_dir(work)
        (d / "a.npy").write_bytes(raw)
        check_read("npy_header", d / "a.npy", fs=fs, leads=leads)
    run_target("npy_header", npy_file(), body)


def test_fuzz_csv_text(work):
    def body(ex):
        raw, fs, leads, ext = ex
        d = _example_dir(work)
        (d / f"c{ext}").write_bytes(raw)
        check_read("csv_text", d / f"c{ext}", fs=fs, leads=leads)
    run_target("csv_text", csv_file(), body)


def _mutation_body(work, seeds, target):
    def body(ex):
        key, ops, which, fs = ex
        files = seeds[key]
        names = sorted(files)
        d = _example_dir(work)
        victim = names[which % len(names)]
        for fn in names:
            (d / fn).write_bytes(mutate(files[fn], ops) if fn == victim else files[fn])
        main = next((fn for fn in names if fn.endswith(".hea")), names[0])
        kw = {"fs": fs}
        if not main.endswith(".hea") and fs is None:
            kw["fs"] = 500.0 if "npy" in key else 250.0 if "semi" in key else None
        check_read(target, d / main, **kw)
    return body


@pytest.mark.parametrize("kind", ["cinc", "ludb", "csv", "npy"])
def test_fuzz_mutated_real_records(work, seeds, kind):
    keys = sorted(k for k in seeds if k.split(":")[0].split("-")[0] == kind)
    assert keys, kind
    run_target(f"mutated_{kind}", mutated(keys), _mutation_body(work, seeds, f"mutated_{kind}"))
