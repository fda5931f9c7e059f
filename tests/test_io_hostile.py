"""Hostile and clumsy inputs to the readers (edge.io) and to `ecgret query`: files that lie about their rates,
sizes and locations, links, FIFOs and devices, huge records, huge headers; every one is refused with one short
:class:`RecordError` line (or read within bounded memory), and a batch of them goes on to the good files.

The fuzz suite (tests/test_fuzz_readers.py) throws random inputs at the same readers; these are the cases
the issue names, each checked for its own message."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edge import io_limits as eio
from edge.errors import RecordError
from edge.io import read_record
from edge.io_csv import read_csv
from edge.io_limits import MAX_SECONDS
from edge.io_npy import read_npy
from edge.io_wfdb import read_wfdb, write_wfdb
from edge.leads import LEADS12
from edge.paths import repo_root
from edge.record import Record
from tests.fixtures_bundle import ecgret_env, run_ecgret, test_bundle  # noqa: F401


@contextmanager
def no_hang(seconds: float = 5.0):
    """Fail (instead of hanging the suite) if the block runs over ``seconds``."""
    def on_alarm(signum, frame):
        raise AssertionError(f"hung for over {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def refused(path, match: str, **kw) -> str:
    """read_record(path) must raise one short RecordError line matching ``match``; returns the message."""
    with no_hang(), pytest.raises(RecordError, match=match) as ei:
        read_record(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.fixture(scope="module")
def hr(shared_data):
    return read_record(shared_data / "cinc2021-sample" / "HR06005.hea")


@pytest.fixture
def rec_dir(shared_data, tmp_path) -> Path:
    """A private copy of HR06005 as rec.hea + rec.mat."""
    src = shared_data / "cinc2021-sample"
    shutil.copy(src / "HR06005.mat", tmp_path / "rec.mat")
    (tmp_path / "rec.hea").write_text((src / "HR06005.hea").read_text().replace("HR06005", "rec"))
    return tmp_path


def _hea(d: Path, text: str, name: str = "h") -> Path:
    p = d / f"{name}.hea"
    p.write_text(text)
    return p


ONE = "h 1 500 1000\n{file} 16 200(0)/mV 16 0 0 0 0 II\n"


# --------------------------------------------------------------------------------------------- locations

@pytest.mark.parametrize("fname", ["../../../../etc/passwd", "/etc/passwd", "/dev/zero", "sub/x.dat", "..", ".",
                                   "-", "../rec.mat"])
def test_signal_file_must_lie_next_to_its_header(tmp_path, fname):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.dat").write_bytes(np.zeros(1000, "<i2").tobytes())
    msg = refused(_hea(tmp_path, ONE.format(file=fname)), "not a plain file name in the header's folder")
    assert "refused" in msg


def test_traversal_in_a_real_header_is_refused(rec_dir):
    hea = rec_dir / "rec.hea"
    hea.write_text(hea.read_text().replace("rec.mat", "../../../../etc/passwd"))
    refused(hea, r"signal file '\.\./\.\./\.\./\.\./etc/passwd' is not a plain file name")


def test_symlinks_are_refused_everywhere(rec_dir, tmp_path, hr):
    (rec_dir / "rec.mat").rename(rec_dir / "real.mat")
    os.symlink(rec_dir / "real.mat", rec_dir / "rec.mat")
    refused(rec_dir / "rec.hea", r"signal file 'rec\.mat' is a symbolic link")
    os.symlink("/dev/zero", rec_dir / "z.dat")
    refused(_hea(rec_dir, ONE.format(file="z.dat")), r"signal file 'z\.dat' is a symbolic link")
    other = tmp_path / "other"
    other.mkdir()
    write_wfdb(hr, other, "ok")
    os.symlink(other / "ok.hea", other / "link.hea")
    refused(other / "link.hea", r"WFDB header 'link\.hea' is a symbolic link")
    refused(other / "link", r"is a symbolic link")  # the record name without extension
    np.save(other / "a.npy", hr.signal)
    os.symlink(other / "a.npy", other / "b.npy")
    refused(other / "b.npy", r"NPY file 'b\.npy' is a symbolic link", fs=500)
    os.symlink("/dev/zero", other / "z.csv")
    refused(other / "z.csv", r"CSV file 'z\.csv' is a symbolic link", fs=500)
    assert read_record(other / "ok.hea").signal.shape == (5000, 12)  # the file itself is fine


def test_fifos_never_block(tmp_path):
    for name in ("f.dat", "f.csv", "f.npy", "g.hea"):
        os.mkfifo(tmp_path / name)
    refused(_hea(tmp_path, ONE.format(file="f.dat")), r"signal file 'f\.dat' is a FIFO, not a regular file")
    refused(tmp_path / "f.csv", r"'f\.csv' is a FIFO", fs=500)
    refused(tmp_path / "f.npy", r"'f\.npy' is a FIFO", fs=500)
    refused(tmp_path / "g.hea", r"WFDB header 'g\.hea' is a FIFO")


def test_devices_and_directories_are_refused(tmp_path):
    with no_hang():
        for reader, what in ((read_csv, "CSV file"), (read_npy, "NPY file"), (read_wfdb, "WFDB header")):
            with pytest.raises(RecordError, match=f"{what} 'zero' is a character device, not a regular file"):
                reader("/dev/zero", fs=500)
    (tmp_path / "d.csv").mkdir()
    refused(tmp_path / "d.csv", "is a directory")
    (tmp_path / "d.hea").mkdir()
    refused(tmp_path / "d.hea", "is a directory, not a regular file")


# --------------------------------------------------------------------------------------------- rates, gains, counts

@pytest.mark.parametrize("token, match", [
    ("nan", "bad sampling frequency 'nan'"), ("abc", "bad sampling frequency 'abc'"),
    ("inf", "bad sampling frequency 'inf'"), ("1e999", "must be a finite number"),
    ("0", "must be positive"), ("-5", "must be positive"), ("200001", "over the maximum of 100000 Hz"),
    ("50", "under the minimum of 100 Hz"), ("500x", "bad sampling frequency"), ("\u0665\u0660\u0660", "bad sampling"),
])
def test_header_rate_is_checked(rec_dir, token, match):
    hea = rec_dir / "rec.hea"
    hea.write_text(hea.read_text().replace("rec 12 500 5000", f"rec 12 {token} 5000"))
    refused(hea, match)


def test_nan_rate_is_no_longer_read_as_250_hz(rec_dir):
    hea = rec_dir / "rec.hea"
    hea.write_text(hea.read_text().replace("rec 12 500 5000", "rec 12 nan 5000"))
    refused(hea, "bad sampling frequency")
    hea.write_text(hea.read_text().replace("rec 12 nan 5000", "rec 12"))  # no rate at all: the WFDB default
    assert read_record(hea, max_seconds=20).fs == 250.0


@pytest.mark.parametrize("fs, match", [(-5, "fs=-5 Hz was given: a sampling rate must be positive"),
                                       (0, "must be positive"), (200001, "over the maximum of 100000 Hz"),
                                       (float("nan"), "must be a finite number"), (float("inf"), "finite"),
                                       ("abc", "must be a number"), (50, "under the minimum of 100 Hz")])
def test_given_rate_is_checked_before_anything_else(rec_dir, tmp_path, fs, match):
    refused(rec_dir / "rec.hea", match, fs=fs)  # not "header mismatch"
    np.save(tmp_path / "a.npy", np.zeros((5000, 12)))
    refused(tmp_path / "a.npy", match, fs=fs)


@pytest.mark.parametrize("gain, match", [("0", "gain '0' is not a positive finite number"), ("0(0)/mV", "gain '0'"),
                                         ("nan", "bad gain field"), ("-200(0)/mV", "gain '-200'"),
                                         ("1e999(0)/mV", "gain '1e999'"), ("abc(0)/mV", "bad gain field")])
def test_gain_is_checked(tmp_path, gain, match):
    np.zeros(1000, "<i2").tofile(tmp_path / "x.dat")
    refused(_hea(tmp_path, f"h 1 500 1000\nx.dat 16 {gain} 16 0 0 0 0 II\n"), match)


@pytest.mark.parametrize("line, match", [("h 0 500 1000", "declares 0 signals"),
                                         ("h 65 500 1000", "declares 65 signals; 1 to 64"),
                                         ("h 999999999999 500 1000", "declares 999999999999 signals"),
                                         ("h 1 500 abc", "bad number of samples 'abc'"),
                                         ("h 1 500 -5", "bad number of samples"),
                                         ("h 1 500 99999999999", "shorter than the header says")])
def test_counts_are_checked(tmp_path, line, match):
    np.zeros(1000, "<i2").tofile(tmp_path / "x.dat")
    refused(_hea(tmp_path, line + "\nx.dat 16 200(0)/mV 16 0 0 0 0 II\n"), match)


def test_header_size_is_capped(tmp_path):
    np.zeros(1000, "<i2").tofile(tmp_path / "x.dat")
    refused(_hea(tmp_path, ONE.format(file="x.dat") + "#" + "x" * 70000 + "\n"), "over the 64 KiB limit")


def test_messages_quote_little_of_the_file(tmp_path):
    np.zeros(1000, "<i2").tofile(tmp_path / "x.dat")
    msg = refused(_hea(tmp_path, "h 1 500 1000\nx.dat 16 200(0)/mV 16 0 0 0 0 " + "Q" * 5000 + "\n"),
                  "unknown lead name")
    assert len(msg) < 300
    msg = refused(_hea(tmp_path, "h 1 500 1000\nx.dat 16 200(0)/mV 16 0 0 0 0 \x1b[2J\x07\n"), "unknown lead name")
    assert "\x1b" not in msg and "\x07" not in msg  # quoted with repr: escapes are shown, not sent


# --------------------------------------------------------------------------------------------- MATLAB v4

def _mat(d: Path, fields, payload: bytes = b"", endian: str = "<") -> Path:
    (d / "m.mat").write_bytes(struct.pack(endian + "5i", *fields) + b"val\0" + payload)
    return _hea(d, "m 1 500 1000\nm.mat 16x1+24 1000.0(0)/mV 16 0 0 0 0 II\n", "m")


@pytest.mark.parametrize("fields, match", [
    ((30, -1, 1000, 0, 4), "negative field"), ((30, 1, -1000, 0, 4), "negative field"),
    ((30, 1, 1000, 0, -4), "negative field"), ((30, 1, 2**31 - 1, 0, 4), "shorter than its MATLAB header"),
    ((30, 1, 1000, 0, 2**31 - 1), "shorter than its MATLAB header"), ((30, 3, 1000, 0, 4), "holds a 3x1000 matrix"),
    ((30, 1, 1000, 1, 4), "unsupported MATLAB v4 matrix"), ((90, 1, 1000, 0, 4), "precision code 9"),
    ((-5, 1, 1000, 0, 4), "not a MATLAB v4 file")])
def test_mat_header_fields_are_checked(tmp_path, fields, match):
    refused(_mat(tmp_path, fields, np.zeros(3000, "<i2").tobytes()), match)


def test_mat_both_orientations_and_endians(tmp_path, hr):
    x = np.round(hr.signal[:, 1] * 1000).astype("<i2")
    for endian, code in (("<", 30), (">", 1030)):
        for fields in ((code, 1, 5000, 0, 4), (code, 5000, 1, 0, 4)):
            hea = _mat(tmp_path, fields, x.astype(endian + "i2").tobytes(), endian)
            hea.write_text(hea.read_text().replace("m 1 500 1000", "m 1 500 5000"))
            np.testing.assert_allclose(read_record(hea).signal[:, 0], hr.signal[:, 1], atol=1e-12)


# --------------------------------------------------------------------------------------------- NPY

def _npy(d: Path, header: bytes, body: bytes = b"", version=(1, 0), name="a.npy") -> Path:
    header = header + b" " * ((-len(header) - 11) % 64) + b"\n"
    lenb = struct.pack("<H", len(header)) if version[0] == 1 else struct.pack("<I", len(header))
    (d / name).write_bytes(b"\x93NUMPY" + bytes(version) + lenb + header + body)
    return d / name


@pytest.mark.parametrize("header, match", [
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 12), }", "shorter than its header says"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (5000, 12", "not a plain dictionary"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (5000, 12)", "not a plain dictionary"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (5000, 12)) }", "malformed header: SyntaxError"),
    (b"{'descr': '|O', 'fortran_order': False, 'shape': (5000, 12), }", "unsupported dtype '|O'"),
    (b"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (5000,), }", "unsupported dtype"),
    (b"{'descr': '<c16', 'fortran_order': False, 'shape': (5000, 12), }", "unsupported dtype"),
    (b"{'descr': '|b1', 'fortran_order': False, 'shape': (5000, 12), }", "unsupported dtype"),
    (b"{'descr': '<f8', 'fortran_order': 'yes', 'shape': (5000, 12), }", "'fortran_order' is not True or False"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 12), }", "bad shape"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': [5000, 12], }", "bad shape"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (5000, 12), 'x': 1}", "exactly 'descr'"),
    (b"{'descr': '<f8', 'fortran_order': False, 'shape': (" + b"9" * 5000 + b", 12), }", "malformed header"),
    (b"{'descr': '<f8', 'shape': " + b"(" * 500 + b")" * 500 + b"}", "malformed header"),
    (b"{'descr': '<f8', 'fortran_order': __import__('os').system('touch pwned'), 'shape': (1, 12)}",
     "malformed header: ValueError"),
])
def test_npy_header_is_parsed_strictly(tmp_path, header, match):
    refused(_npy(tmp_path, header, np.zeros(1000).tobytes()), match, fs=500)
    assert not (tmp_path / "pwned").exists()


def test_npy_versions_and_limits(tmp_path):
    ok = b"{'descr': '<f8', 'fortran_order': False, 'shape': (5000, 12), }"
    body = np.zeros((5000, 12)).tobytes()
    for version in ((1, 0), (2, 0), (3, 0)):
        assert read_record(_npy(tmp_path, ok, body, version), fs=500).signal.shape == (5000, 12)
    refused(_npy(tmp_path, ok, body, (9, 0)), "unsupported NPY format version 9.0", fs=500)
    p = tmp_path / "big.npy"
    p.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{" + b" " * 100)
    refused(p, "over the 16 KiB limit", fs=500)
    (tmp_path / "short.npy").write_bytes(b"\x93NUMPY\x01\x00\x76\x00{'descr'")
    refused(tmp_path / "short.npy", "ends inside its header", fs=500)


def test_npz_named_npy_is_named_as_such(tmp_path):
    np.savez(tmp_path / "z.npz", a=np.zeros((5000, 12)))
    os.replace(tmp_path / "z.npz", tmp_path / "z.npy")
    refused(tmp_path / "z.npy", r"ZIP archive, such as an \.npz", fs=500)


def test_npy_is_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    arr = np.empty((5000, 12), dtype=object)
    arr[0, 0] = Evil()
    with open(tmp_path / "evil.npy", "wb") as f:
        np.lib.format.write_array(f, arr, allow_pickle=True)
    assert b"posix" in (tmp_path / "evil.npy").read_bytes() or b"system" in (tmp_path / "evil.npy").read_bytes()
    refused(tmp_path / "evil.npy", r"unsupported dtype '\|O'", fs=500)
    (tmp_path / "raw.npy").write_bytes(pickle.dumps(Evil()))
    refused(tmp_path / "raw.npy", "no NPY magic string", fs=500)
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------------------------- CSV

def test_a_million_lead_names_are_refused_fast(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_text(",".join(["I"] * 10**6) + "\n" + ",".join(["1"] * 10**6) + "\n")
    t0 = time.perf_counter()
    msg = refused(p, "longer than 1 MiB", fs=500)
    assert time.perf_counter() - t0 < 2.0 and len(msg) < 200
    p.write_text(",".join(f"X{i}" for i in range(20000)) + "\n1\n")  # under the line limit: the column limit
    t0 = time.perf_counter()
    msg = refused(p, "header row has 20,000 columns; at most 64 leads", fs=500)
    assert time.perf_counter() - t0 < 2.0 and len(msg) < 200
    p.write_text(",".join(f"X{i}" for i in range(60)) + "\n" + ",".join(["1"] * 60) + "\n")
    msg = refused(p, r"unknown lead name\(s\) 'X0', .* and 54 more", fs=500)
    assert len(msg) < 250


def test_blank_lines_and_long_lines_are_bounded(tmp_path):
    p = tmp_path / "blank.csv"
    p.write_bytes(b"I,II\n" + b"\n" * 300_000 + b"1,2\n")
    refused(p, "blank or comment lines; refused", fs=500)
    p.write_bytes(b"I,II\n1,2\n" + b"3" * (2 << 20) + b"\n")
    refused(p, "line 3 is longer than 1 MiB", fs=500)


def test_invalid_utf8_and_bom_in_csv(tmp_path, hr):
    p = tmp_path / "u.csv"
    rows = "\n".join(",".join(f"{v:.4f}" for v in r) for r in hr.signal[:1000, :2])
    p.write_bytes(b"\xef\xbb\xbfI,II\n" + rows.encode())
    assert read_record(p, fs=500).leads == ("I", "II")
    p.write_bytes(b"I,\xff\xfeII\n" + rows.encode())
    msg = refused(p, "unknown lead name", fs=500)
    assert "\ufffd" in msg


def test_csv_time_column_rate_is_checked(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time,I\n" + "\n".join(f"{i * 1e-7:.7f},1" for i in range(3000)))
    refused(p, "the time column gives 1e\\+07 Hz: over the maximum")
    p.write_text("time,I\n" + "\n".join(f"{i * 0.02:.4f},1" for i in range(3000)))
    refused(p, "sampling rate 50 Hz is under the minimum")
    p.write_text("time,I\nabc,1\n" + "\n".join(f"{i * 0.002:.4f},1" for i in range(3000)))
    refused(p, "time column 'time' is not increasing")


# --------------------------------------------------------------------------------------------- bounded reading

def _long(hr, seconds: int) -> Record:
    """A real-looking record of ``seconds`` s: HR06005 repeated."""
    reps = -(-seconds * 500 // hr.signal.shape[0])
    return Record(np.tile(hr.signal, (reps, 1))[: seconds * 500], 500.0, hr.leads, "long")


def _mat_file(d: Path, x: np.ndarray, rows_are_signals: bool) -> Path:
    dig = np.round(x * 1000).astype("<i2")
    n, k = dig.shape
    if rows_are_signals:  # CinC: (k, n) column-major = frames interleaved
        head, data = struct.pack("<5i", 30, k, n, 0, 4), dig.tobytes()
    else:  # (n, k) column-major = one signal after the other
        head, data = struct.pack("<5i", 30, n, k, 0, 4), dig.T.tobytes()
    (d / "m.mat").write_bytes(head + b"val\0" + data)
    lines = [f"m {k} 500 {n}"] + [f"m.mat 16x1+24 1000(0)/mV 16 0 0 0 0 {LEADS12[j]}" for j in range(k)]
    return _hea(d, "\n".join(lines) + "\n", "m")


@pytest.mark.slow
def test_long_records_are_cut_to_max_seconds_identically(tmp_path, hr):
    """Every format: reading the first 13 s gives exactly the first 13 s of reading the whole file."""
    x = _long(hr, 60)
    n = int(MAX_SECONDS * 500)
    cases = []
    d = tmp_path / "w16"
    d.mkdir()
    cases.append(write_wfdb(x, d, "r"))
    d = tmp_path / "w212"
    d.mkdir()
    dig = np.clip(np.round(x.signal * 500), -2047, 2047).astype(np.int64).ravel()
    dig = np.concatenate([dig, np.zeros(dig.size % 2, np.int64)]) & 0xFFF
    a, b = dig[0::2], dig[1::2]
    packed = np.stack([a & 0xFF, ((a >> 8) & 0x0F) | ((b >> 8) << 4), b & 0xFF], axis=1).astype(np.uint8)
    (d / "r.dat").write_bytes(packed.tobytes())
    cases.append(_hea(d, "\n".join(["r 12 500 30000"] + [f"r.dat 212 500(0)/mV 12 0 0 0 0 {ld}" for ld in LEADS12])
                      + "\n", "r"))
    for rows_first in (True, False):
        d = tmp_path / f"mat{rows_first}"
        d.mkdir()
        cases.append(_mat_file(d, x.signal, rows_first))
    for label, arr in (("c", x.signal), ("f", np.asfortranarray(x.signal)), ("t", x.signal.T.copy()),
                       ("tf", np.asfortranarray(x.signal.T)), ("f4", x.signal.astype(np.float32))):
        np.save(tmp_path / f"{label}.npy", arr)
        cases.append((tmp_path / f"{label}.npy", 500.0))
    t = np.arange(x.signal.shape[0]) / 500.0
    np.savetxt(tmp_path / "t.csv", np.column_stack([t, x.signal[:, :3]]), delimiter=",", header="time,I,II,V1",
               comments="", fmt="%.6f")
    cases.append(tmp_path / "t.csv")
    np.savetxt(tmp_path / "f.csv", x.signal[:, :3], delimiter=";", header="I;II;V1", comments="", fmt="%.6f")
    cases.append((tmp_path / "f.csv", 500.0))
    np.savetxt(tmp_path / "h.csv", x.signal[:, :8], delimiter="\t", fmt="%.5f")
    cases.append((tmp_path / "h.csv", 500.0))
    np.savetxt(tmp_path / "ht.csv", x.signal[:, :8].T, delimiter=",", fmt="%.5f")  # 8 lines of 30,000 values
    cases.append((tmp_path / "ht.csv", 500.0))
    for c in cases:
        path, fs = c if isinstance(c, tuple) else (c, None)
        cut = read_record(path, fs=fs)
        whole = read_record(path, fs=fs, max_seconds=60)
        assert whole.signal.shape[0] == 30000, path
        assert cut.signal.shape == (n, whole.signal.shape[1]), path
        np.testing.assert_array_equal(cut.signal, whole.signal[:n], err_msg=str(path))
        assert cut.meta["truncated"]["read_samples"] == n, (path, cut.meta.get("truncated"))
        assert "truncated" not in whole.meta, path
        short = read_record(path, fs=fs, max_seconds=10)
        np.testing.assert_array_equal(short.signal, whole.signal[:5000], err_msg=str(path))


_MEASURE = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
from edge.io import read_record
path, fs = sys.argv[1], (float(sys.argv[2]) if sys.argv[2] != "-" else None)
from edge.errors import EcgretError
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
t0 = time.perf_counter()
try:
    r = read_record(path, fs=fs)
    out = {"shape": list(r.signal.shape), "truncated": r.meta.get("truncated")}
except EcgretError as e:
    out = {"error": str(e)}
dt = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
def hwm_mb():  # this image's peak RSS: ru_maxrss would carry the forking parent's (a pytest that loaded TensorFlow)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(dict(out, peak_mb=peak / 2**20, s=dt, rss0_mb=rss0 / 1024, rss_mb=hwm_mb())))
"""


def _measure(path, fs=None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(repo_root()))
    p = subprocess.run([sys.executable, "-c", _MEASURE, str(path), "-" if fs is None else str(fs)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _sparse(path: Path, head: bytes, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


@pytest.mark.slow
def test_hour_long_records_take_bounded_memory(tmp_path):
    """1 h and 2 h of 12 leads at 500 Hz, in each binary format: a few MB, whatever the file size (the whole
    record took 854 MB and 1.66 GB)."""
    got = {}
    for hours in (1, 2):
        n = hours * 3600 * 500
        d = tmp_path / f"h{hours}"
        d.mkdir()
        _sparse(d / "r.dat", b"", n * 12 * 2)
        _hea(d, "\n".join([f"r 12 500 {n}"] + [f"r.dat 16 1000(0)/mV 16 0 0 0 0 {ld}" for ld in LEADS12]) + "\n",
             "r")
        _sparse(d / "m.mat", struct.pack("<5i", 30, 12, n, 0, 4) + b"val\0", 24 + n * 24)
        _hea(d, "\n".join([f"m 12 500 {n}"] + [f"m.mat 16x1+24 1000(0)/mV 16 0 0 0 0 {ld}" for ld in LEADS12]) + "\n",
             "m")
        hdr = f"{{'descr': '<f8', 'fortran_order': False, 'shape': (12, {n}), }}".encode()
        hdr += b" " * ((-len(hdr) - 11) % 64) + b"\n"
        _sparse(d / "t.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr, 10 + len(hdr) + n * 96)
        for name, fs in (("r.hea", None), ("m.hea", None), ("t.npy", 500.0)):
            m = _measure(d / name, fs)
            got[f"{hours}h {name}"] = m
            assert m["shape"] == [6500, 12], m
            assert m["truncated"]["file_samples"] == n, m
            assert m["peak_mb"] < 10, m
            assert m["rss_mb"] < 300, m
    print(json.dumps({k: round(v["peak_mb"], 2) for k, v in got.items()}))


@pytest.mark.slow
def test_large_csv_takes_bounded_memory_and_time(tmp_path, hr):
    """A 66 MB CSV (it took 2.8 GB): only the rows of the first 13 s are read."""
    x = hr.signal
    block = "\n".join(",".join(f"{v:.5f}" for v in row) for row in x) + "\n"
    p = tmp_path / "big.csv"
    with open(p, "w") as f:
        f.write(",".join(LEADS12) + "\n")
        while f.tell() < 66 * 2**20:
            f.write(block)
    assert p.stat().st_size > 66 * 2**20
    m = _measure(p, 500.0)
    assert m["shape"] == [6500, 12] and m["peak_mb"] < 20 and m["rss_mb"] < 300 and m["s"] < 5, m
    t = tmp_path / "timed.csv"
    with open(t, "w") as f:
        f.write("time_ms,I,II\n")
        for k in range(400_000):
            f.write(f"{k * 2},{x[k % 5000, 0]:.5f},{x[k % 5000, 1]:.5f}\n")
    m = _measure(t)
    assert m["shape"] == [6500, 2] and m["peak_mb"] < 20 and m["rss_mb"] < 300, m


def test_max_seconds_is_checked(rec_dir):
    from edge.errors import ConfigError
    for bad in (0, -1, float("nan"), float("inf"), 1.0, "x"):
        with pytest.raises(ConfigError, match="max_seconds"):
            read_record(rec_dir / "rec.hea", max_seconds=bad)


def test_values_limit(tmp_path):
    n = 13 * 100_000
    _sparse(tmp_path / "r.dat", b"", n * 24 * 2)
    _hea(tmp_path, "\n".join([f"r 24 100000 {n}"] + [f"r.dat 16 1000(0)/mV 16 0 0 0 0 V{1 + k % 6}"
                                                     for k in range(24)]) + "\n", "r")
    refused(tmp_path / "r.hea", f"over the {eio.MAX_VALUES:,} values")


# --------------------------------------------------------------------------------------------- the CLI

def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ecgret: error:")]


@pytest.mark.slow
def test_query_batch_goes_on_past_every_bad_file(ecgret_env, rec_dir, tmp_path, hr):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(rec_dir / "rec.mat", bad / "trav.mat")
    (bad / "trav.hea").write_text((rec_dir / "rec.hea").read_text().replace("rec.mat", "../../../../etc/passwd"))
    (bad / "nan.hea").write_text((rec_dir / "rec.hea").read_text().replace("rec 12 500", "nan 12 nan")
                                 .replace("rec.mat", "trav.mat"))
    np.savez(bad / "z.npz", a=hr.signal)
    os.replace(bad / "z.npz", bad / "z.npy")
    _npy(bad, b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 12), }", name="huge.npy")
    _npy(bad, b"{'descr': '<f8', 'fortran_order': False, 'shape': (5000, 12", name="tok.npy")
    os.mkfifo(bad / "fifo.npy")
    os.symlink("/dev/zero", bad / "zero.npy")
    long = tmp_path / "long"  # 1 h of real signal (HR06005 repeated), 43 MB
    long.mkdir()
    n = 3600 * 500
    block = np.round(hr.signal * 1000).astype("<i2").tobytes()
    with open(long / "r.dat", "wb") as f:
        for _ in range(n // 5000):
            f.write(block)
    _hea(long, "\n".join([f"r 12 500 {n}"] + [f"r.dat 16 1000(0)/mV 16 0 0 0 0 {ld}" for ld in LEADS12]) + "\n", "r")
    np.save(tmp_path / "good.npy", hr.signal)
    files = [rec_dir / "rec.hea", bad / "trav.hea", bad / "nan.hea", bad / "z.npy", bad / "huge.npy",
             bad / "tok.npy", bad / "fifo.npy", bad / "zero.npy", bad / "nothere.csv", tmp_path / "good.npy",
             long / "r.hea"]
    report = tmp_path / "report.html"
    t0 = time.perf_counter()
    p = run_ecgret(["query", "--fs", "500", "--json", "--top-k", "3", "--report", report, *files], ecgret_env,
                   timeout=120)
    assert time.perf_counter() - t0 < 110
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    errs = _errors(p.stderr)
    assert len(errs) == 8, p.stderr
    for f, e in zip(files[1:9], errs):
        assert str(f) in e and len(e) < 400, e
    lines = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [ln["ok"] for ln in lines] == [True] + [False] * 8 + [True, True]
    assert [ln["query"] for ln in lines] == [str(f) for f in files]
    assert all(ln["error_type"] == "RecordError" for ln in lines[1:9])
    assert "not a plain file name" in lines[1]["error"] and "bad sampling frequency" in lines[2]["error"]
    assert "ZIP archive" in lines[3]["error"] and "FIFO" in lines[6]["error"] and "symbolic link" in lines[7]["error"]
    page = report.read_text()
    assert str(files[0]) in page and str(files[9]) in page and "huge.npy" not in page


def test_query_fs_impossible_is_a_usage_error(ecgret_env, rec_dir):
    for fs in ("-5", "0", "200001", "nan", "inf"):
        p = run_ecgret(["query", "--fs", fs, rec_dir / "rec.hea"], ecgret_env)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert "--fs" in p.stderr and "must be more than 0 and at most 100000 Hz" in p.stderr, p.stderr


def test_query_invalid_utf8_names_do_not_traceback(ecgret_env, rec_dir, tmp_path, hr):
    odd = os.fsencode(tmp_path) + b"/r\xff\x1b[2J.npy"
    np.save(os.fsdecode(odd), hr.signal)
    env = dict(ecgret_env)
    p = subprocess.run([sys.executable, "-m", "edge.cli", "query", "--fs", "500", "--top-k", "2", odd,
                        os.fsencode(tmp_path) + b"/missing\xfe.csv"], env=env, capture_output=True,
                       cwd=repo_root(), timeout=120)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1 and "Traceback" not in err, err
    assert len(_errors(err)) == 1 and "no such file" in _errors(err)[0]
    out = p.stdout.decode("utf-8")  # valid UTF-8 on stdout, no escape sequence reaches the terminal
    assert "== " in out and "\x1b" not in out and "\x1b" not in err
    pj = subprocess.run([sys.executable, "-m", "edge.cli", "query", "--json", "--fs", "500", "--top-k", "2", odd],
                        env=env, capture_output=True, cwd=repo_root(), timeout=120)
    assert pj.returncode == 0, pj.stderr
    assert json.loads(pj.stdout)["ok"] is True


def test_internal_errors_are_one_line_naming_the_file(monkeypatch, ecgret_env, tmp_path, rec_dir):
    from click.testing import CliRunner

    import edge.io
    from edge.cli import main
    real = edge.io.read_record

    def flaky(path, **kw):
        if str(path).endswith("boom.hea"):
            raise ZeroDivisionError("boom")
        return real(path, **kw)

    monkeypatch.setattr(edge.io, "read_record", flaky)
    for k, v in ecgret_env.items():
        if k.startswith("ECGRET_"):
            monkeypatch.setenv(k, v)
    boom = tmp_path / "boom.hea"
    args = ["query", "--json", "--top-k", "2", str(boom), str(rec_dir / "rec.hea")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 1, r.output
    errs = _errors(r.stderr)
    assert errs == [f"ecgret: error: {boom}: internal error (ZeroDivisionError: boom); this is a bug in ecgret, "
                    f"please report it (run with --debug for the traceback)"], r.stderr
    assert "Traceback" not in r.stderr
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [ln["ok"] for ln in lines] == [False, True] and lines[0]["error_type"] == "ZeroDivisionError"
    r = CliRunner().invoke(main, ["--debug", *args])
    assert r.exit_code == 1 and "Traceback" in r.stderr and "ZeroDivisionError: boom" in r.stderr
    assert len(_errors(r.stderr)) == 1 and "run with --debug" not in r.stderr


def test_values_limit_counts_all_signal_files(tmp_path):
    n = 13 * 100_000
    lines = [f"r 14 100000 {n}"]
    for k in range(14):  # 14 files of one signal each: 18.2 M values together
        _sparse(tmp_path / f"s{k}.dat", b"", n * 2)
        lines.append(f"s{k}.dat 16 1000(0)/mV 16 0 0 0 0 {LEADS12[k % 12]}")
    refused(_hea(tmp_path, "\n".join(lines) + "\n", "r"), f"over the {eio.MAX_VALUES:,} values")


def test_csv_of_long_numeric_lines_takes_bounded_memory(tmp_path):
    """Lines of one valid but 1 MiB-long number each: parsed a few MiB at a time, not 4,096 lines at once."""
    p = tmp_path / "long.csv"
    with open(p, "w") as f:
        f.write("I\n")
        line = "1" * ((1 << 20) - 10) + "\n"
        for _ in range(60):
            f.write(line)
    m = _measure(p, 500.0)
    assert "only 0.12 s of signal" in m["error"] and m["peak_mb"] < 20, m


def test_samples_no_ecg_can_have_are_refused_in_one_line(tmp_path):
    """Finite but absurd samples (1e308 in a CSV; a WFDB gain of 1e-300) overflowed every later step: numpy's
    warnings reached the user and an answer was made from infinities. Now one error line, nothing else."""
    import subprocess
    import sys
    csv = tmp_path / "big.csv"
    rows = ["I,II"] + [f"{0.1 * (i % 50)},{0.2 * (i % 50)}" for i in range(3000)]
    rows[1500] = "1e308,0.1"
    csv.write_text("\n".join(rows) + "\n")
    hea = tmp_path / "g.hea"
    hea.write_text("g 1 500 3000\ng.dat 16 1e-300(0)/mV 16 0 0 0 0 I\n")
    (tmp_path / "g.dat").write_bytes(b"\x01\x00" * 3000)
    for args in ([str(csv), "--fs", "500"], [str(hea)]):
        out = subprocess.run([sys.executable, "-m", "edge.cli", "query", "--no-overlay", *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1, out
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("ecgret: error:"), out.stderr
