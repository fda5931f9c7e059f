"""edge.io: readers checked against wfdb (the reference implementation) on real records, and every bad input."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edge.errors import RecordError
from edge.io import read_record
from edge.io_wfdb import write_wfdb
from edge.leads import LEADS12
from firmware_bridge.info import LEADS8
from edge.record import Record

wfdb = pytest.importorskip("wfdb")


@pytest.fixture(scope="module")
def cinc(shared_data):
    return shared_data / "cinc2021-sample"


@pytest.fixture(scope="module")
def hr06005(cinc):
    return read_record(cinc / "HR06005.hea")


def _copy_record(cinc, name, dst):
    for ext in (".hea", ".mat"):
        shutil.copy(cinc / f"{name}{ext}", dst / f"{name}{ext}")
    return dst / f"{name}.hea"


# --------------------------------------------------------------------------------------------- real WFDB

def test_reads_all_48_cinc_records(cinc):
    heads = sorted(cinc.glob("*.hea"))
    assert len(heads) == 48
    for h in heads:
        r = read_record(h)
        assert r.signal.shape == (5000, 12) and r.fs == 500.0 and r.leads == LEADS12
        assert r.signal.dtype == np.float64 and np.isfinite(r.signal).all()
        assert "Dx" in r.meta["comments"]


@pytest.mark.parametrize("name", ["HR06005", "E07500", "JS20000", "JS20019", "E07519"])
def test_matches_wfdb_sample_for_sample(cinc, name):
    ours = read_record(cinc / name)  # without extension
    ref = wfdb.rdrecord(str(cinc / name))
    np.testing.assert_allclose(ours.signal, ref.p_signal, rtol=0, atol=1e-12)
    assert ours.fs == ref.fs
    assert list(ours.leads) == ref.sig_name
    assert ours.meta["comment_lines"] == ref.comments


def test_golden_values_hr06005(hr06005):
    # header: I has baseline 0, gain 1000/mV, first sample -175 (initial value column)
    assert hr06005.signal[0, 0] == pytest.approx(-0.175)
    assert hr06005.signal[0, 6] == pytest.approx(0.040)
    assert hr06005.meta["comments"]["Age"] == "72"
    assert hr06005.meta["comments"]["Sex"] == "Female"


@pytest.mark.parametrize("suffix", [".hea", ".mat", ""])
def test_path_forms(cinc, hr06005, suffix):
    r = read_record(str(cinc / "HR06005") + suffix)
    np.testing.assert_array_equal(r.signal, hr06005.signal)


def test_select_leads_and_matching_fs(cinc, hr06005):
    r = read_record(cinc / "HR06005.hea", fs=500, leads=["v2", "I"])
    assert r.leads == ("V2", "I")
    np.testing.assert_array_equal(r.signal, hr06005.signal[:, [7, 0]])


def test_format_212_matches_wfdb(tmp_path, hr06005):
    x = np.clip(hr06005.signal[:2501, :], -2.0, 2.0)  # odd total sample count exercises the last pair
    wfdb.wrsamp("r212", fs=500, units=["mV"] * 12, sig_name=list(hr06005.leads), p_signal=x,
                fmt=["212"] * 12, adc_gain=[500.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    ref = wfdb.rdrecord(str(tmp_path / "r212"))
    ours = read_record(tmp_path / "r212.hea")
    np.testing.assert_allclose(ours.signal, ref.p_signal, rtol=0, atol=1e-12)
    assert ours.fs == ref.fs and list(ours.leads) == ref.sig_name
    assert np.abs(ours.signal - x).max() <= 1 / 500.0


def test_format_212_with_baseline_and_uv_units(tmp_path, hr06005):
    x = hr06005.signal[:1501, :3] * 1000.0  # in uV; 4503 samples: odd, a final half pair
    wfdb.wrsamp("ruv", fs=500, units=["uV"] * 3, sig_name=["I", "II", "III"], p_signal=x,
                fmt=["212"] * 3, adc_gain=[1.0] * 3, baseline=[17] * 3, write_dir=str(tmp_path))
    ref = wfdb.rdrecord(str(tmp_path / "ruv"))
    ours = read_record(tmp_path / "ruv")
    np.testing.assert_allclose(ours.signal, ref.p_signal / 1000.0, atol=1e-12)  # converted to mV


def test_write_wfdb_round_trip(tmp_path, hr06005):
    hea = write_wfdb(hr06005, tmp_path, "rt")
    ours = read_record(hea)
    ref = wfdb.rdrecord(str(tmp_path / "rt"))
    assert ours.leads == hr06005.leads and ours.fs == 500.0
    assert np.abs(ours.signal - hr06005.signal).max() <= 0.5 / 1000 + 1e-12  # gain 1000/mV
    np.testing.assert_allclose(ref.p_signal, ours.signal, atol=1e-12)
    assert ref.sig_name == list(hr06005.leads) and ref.units == ["mV"] * 12
    assert ours.meta["comments"]["Age"] == "72"


def test_write_wfdb_large_amplitudes_pick_smaller_gain(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 20, size=(500, 2))
    x[0, 0] = 150.0
    rec = Record(signal=x, fs=250.0, leads=("I", "II"), name="big")
    ours = read_record(write_wfdb(rec, tmp_path, "big"))
    gain = float(open(tmp_path / "big.hea").read().splitlines()[1].split()[2].split("(")[0])
    assert gain < 1000
    assert np.abs(ours.signal - x).max() <= 0.5 / gain + 1e-12
    ref = wfdb.rdrecord(str(tmp_path / "big"))
    np.testing.assert_allclose(ref.p_signal, ours.signal, atol=1e-12)


# --------------------------------------------------------------------------------------------- CSV / NPY

@pytest.mark.parametrize("delim", [",", ";", "\t"])
def test_csv_round_trip(tmp_path, hr06005, delim):
    x = hr06005.signal[:1000]
    p = tmp_path / "rec.csv"
    np.savetxt(p, x, delimiter=delim, header=delim.join(["i", "ii", "iii", "avr", "avl", "avf",
                                                        "V1", "V2", "V3", "V4", "V5", "V6"]),
               comments="", fmt="%.6f")
    r = read_record(p, fs=500)
    assert r.leads == LEADS12 and r.fs == 500.0
    np.testing.assert_allclose(r.signal, x, atol=1e-6)


def test_csv_time_column_gives_fs(tmp_path, hr06005):
    x = hr06005.signal[:1500, [0, 1, 6]]
    t = np.arange(x.shape[0]) / 500.0
    p = tmp_path / "rec.csv"
    np.savetxt(p, np.column_stack([t, x]), delimiter=",", header="time,I,II,V1", comments="", fmt="%.6f")
    r = read_record(p)
    assert r.fs == pytest.approx(500.0, rel=1e-6) and r.leads == ("I", "II", "V1")
    np.testing.assert_allclose(r.signal, x, atol=1e-6)
    with pytest.raises(RecordError, match="fs=250 Hz was given but the time column says 500"):
        read_record(p, fs=250)


def test_csv_decimal_comma_semicolon(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 2)).round(3)
    lines = ["I;II"] + [f"{a};{b}".replace(".", ",") for a, b in x]
    p = tmp_path / "eu.csv"
    p.write_text("\n".join(lines))
    np.testing.assert_allclose(read_record(p, fs=250).signal, x)


def test_npy_round_trip_and_defaults(tmp_path, hr06005):
    x = hr06005.signal[:2000]
    np.save(tmp_path / "a.npy", x)
    r = read_record(tmp_path / "a.npy", fs=500)
    assert r.leads == LEADS12
    np.testing.assert_array_equal(r.signal, x)
    np.save(tmp_path / "t.npy", x.T.astype(np.float32))  # leads x samples: transposed
    r = read_record(tmp_path / "t.npy", fs=500)
    assert r.meta["transposed"] and r.signal.shape == (2000, 12)
    eight = x[:, [0, 1, 6, 7, 8, 9, 10, 11]]
    np.save(tmp_path / "e.npy", eight)
    r = read_record(tmp_path / "e.npy", fs=500)
    assert r.leads == LEADS8 and "III" not in r.leads  # not derived here
    np.save(tmp_path / "three.npy", x[:, :3])
    r = read_record(tmp_path / "three.npy", fs=500, leads=["I", "II", "III"])
    assert r.leads == ("I", "II", "III")


# --------------------------------------------------------------------------------------------- bad input

def _write_hea(tmp_path, text, name="bad"):
    p = tmp_path / f"{name}.hea"
    p.write_text(text)
    return p


def test_missing_file(tmp_path):
    with pytest.raises(RecordError, match=r"nothere\.csv: no such file"):
        read_record(tmp_path / "nothere.csv")
    with pytest.raises(RecordError, match=r"no such WFDB header"):
        read_record(tmp_path / "nothere.hea")


def test_unknown_extension(tmp_path):
    p = tmp_path / "rec.edf"
    p.write_bytes(b"0")
    with pytest.raises(RecordError, match=r"rec\.edf: unknown record format '\.edf'"):
        read_record(p)


def test_missing_signal_file(tmp_path, cinc):
    hea = _copy_record(cinc, "HR06005", tmp_path)
    (tmp_path / "HR06005.mat").unlink()
    with pytest.raises(RecordError, match=r"HR06005\.hea: signal file HR06005\.mat is missing"):
        read_record(hea)


def test_truncated_header(tmp_path, cinc):
    lines = (cinc / "HR06005.hea").read_text().splitlines()
    shutil.copy(cinc / "HR06005.mat", tmp_path / "HR06005.mat")
    hea = _write_hea(tmp_path, "\n".join(lines[:5]), "HR06005")
    with pytest.raises(RecordError, match=r"declares 12 signals but has 4 signal line\(s\)"):
        read_record(hea)


@pytest.mark.parametrize("text, msg", [
    ("", "empty WFDB header"),
    ("bad twelve 500 5000\n", "malformed WFDB record line"),
    ("bad 1 500 1000\nbad.dat 16 abc(0)/mV 16 0 0 0 0 I\n", "bad gain field"),
    ("bad 1 500 1000\nbad.dat sixteen 200 16 0 0 0 0 I\n", "bad format field"),
    ("bad 1 500 1000\nbad.dat 310 200 16 0 0 0 0 I\n", "format 310 is not supported"),
    ("bad 1 500 1000\nbad.dat 16 200 16 0 0 0 0\n", "without a lead name"),
])
def test_inconsistent_headers(tmp_path, text, msg):
    (tmp_path / "bad.dat").write_bytes(np.zeros(1000, "<i2").tobytes())
    with pytest.raises(RecordError, match=msg):
        read_record(_write_hea(tmp_path, text))


def test_signal_file_shorter_than_header(tmp_path, hr06005):
    hea = write_wfdb(hr06005, tmp_path, "short")
    dat = tmp_path / "short.dat"
    dat.write_bytes(dat.read_bytes()[: 12 * 2 * 3000])
    with pytest.raises(RecordError, match=r"short\.dat is shorter than the header says \(3000 of 5000"):
        read_record(hea)


def test_mat_file_shorter_than_header(tmp_path, cinc):
    hea = _copy_record(cinc, "HR06005", tmp_path)
    mat = tmp_path / "HR06005.mat"
    mat.write_bytes(mat.read_bytes()[:50000])
    with pytest.raises(RecordError, match=r"HR06005\.mat: signal file is shorter than its MATLAB header"):
        read_record(hea)


def test_mat_not_v4(tmp_path, cinc):
    hea = _copy_record(cinc, "HR06005", tmp_path)
    (tmp_path / "HR06005.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(RecordError, match=r"not a MATLAB v4 file"):
        read_record(hea)


def test_header_fs_disagrees(cinc):
    with pytest.raises(RecordError, match=r"fs=250 Hz was given but the header says 500 Hz"):
        read_record(cinc / "HR06005", fs=250)


def test_nan_samples_named(tmp_path):
    x = np.ones((1000, 12))
    x[5:8, 1] = np.nan
    x[9, 7] = np.inf
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(RecordError, match=r"nan\.npy: 4 NaN/Inf sample\(s\) in lead\(s\) II \(3\), V2 \(1\)"):
        read_record(tmp_path / "nan.npy", fs=250)


def test_invalid_wfdb_samples_are_nan_errors(tmp_path):
    d = np.zeros((1000, 1), "<i2")
    d[10] = -32768
    d.tofile(tmp_path / "inv.dat")
    _write_hea(tmp_path, "inv 1 250 1000\ninv.dat 16 200(0)/mV 16 0 0 0 0 II\n", "inv")
    with pytest.raises(RecordError, match=r"1 NaN/Inf sample\(s\) in lead\(s\) II \(1\)"):
        read_record(tmp_path / "inv.hea")


def test_empty_csv_cell_is_nan(tmp_path):
    rows = ["I,II"] + ["1,2"] * 600
    rows[100] = "1,"
    p = tmp_path / "gap.csv"
    p.write_text("\n".join(rows))
    with pytest.raises(RecordError, match=r"1 NaN/Inf sample\(s\) in lead\(s\) II \(1\)"):
        read_record(p, fs=250)


def test_low_sampling_rate(tmp_path):
    np.save(tmp_path / "slow.npy", np.zeros((1000, 12)))
    with pytest.raises(RecordError, match=r"slow\.npy: sampling rate 50 Hz is under the minimum of 100 Hz"):
        read_record(tmp_path / "slow.npy", fs=50)


def test_too_short(tmp_path):
    np.save(tmp_path / "brief.npy", np.zeros((300, 12)))
    with pytest.raises(RecordError, match=r"brief\.npy: only 1\.20 s of signal"):
        read_record(tmp_path / "brief.npy", fs=250)


def test_unknown_lead_names(tmp_path):
    p = tmp_path / "leads.csv"
    p.write_text("I,II,V7,foo\n" + "\n".join(["1,2,3,4"] * 600))
    with pytest.raises(RecordError, match=r"leads\.csv: unknown lead name\(s\) 'V7', 'foo'"):
        read_record(p, fs=250)
    hea = _write_hea(tmp_path, "wl 1 250 1000\nwl.dat 16 200(0)/mV 16 0 0 0 0 X7\n", "wl")
    np.zeros(1000, "<i2").tofile(tmp_path / "wl.dat")
    with pytest.raises(RecordError, match=r"wl\.hea: unknown lead name\(s\) 'X7'"):
        read_record(hea)


def test_duplicate_and_absent_leads(tmp_path, cinc):
    p = tmp_path / "dup.csv"
    p.write_text("I,i\n" + "\n".join(["1,2"] * 600))
    with pytest.raises(RecordError, match=r"duplicate lead\(s\) I"):
        read_record(p, fs=250)
    hea = write_wfdb(Record(np.zeros((1000, 2)), 250.0, ("I", "II")), tmp_path, "two")
    with pytest.raises(RecordError, match=r"lead\(s\) aVF not in the record"):
        read_record(hea, leads=["I", "aVF"])


@pytest.mark.parametrize("shape", [(1000,), (2, 1000, 12), (1000, 5)])
def test_wrong_array_shape(tmp_path, shape):
    np.save(tmp_path / "shape.npy", np.zeros(shape))
    with pytest.raises(RecordError, match=r"shape\.npy: .*(2-D array|name them with leads)"):
        read_record(tmp_path / "shape.npy", fs=250)


def test_leads_count_mismatch(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((1000, 3)))
    with pytest.raises(RecordError, match=r"array has 3 column\(s\) but 2 lead name\(s\)"):
        read_record(tmp_path / "m.npy", fs=250, leads=["I", "II"])


def test_npy_needs_fs_and_csv_needs_fs(tmp_path):
    np.save(tmp_path / "n.npy", np.zeros((1000, 12)))
    with pytest.raises(RecordError, match=r"sampling rate unknown"):
        read_record(tmp_path / "n.npy")
    p = tmp_path / "c.csv"
    p.write_text("I,II\n" + "\n".join(["1,2"] * 600))
    with pytest.raises(RecordError, match=r"c\.csv: sampling rate unknown"):
        read_record(p)


def test_unreadable_npy_and_ragged_csv(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(RecordError, match=r"junk\.npy: unreadable NPY file"):
        read_record(tmp_path / "junk.npy", fs=250)
    p = tmp_path / "ragged.csv"
    p.write_text("I,II\n" + "\n".join(["1,2"] * 300 + ["1,2,3"] + ["1,2"] * 300))
    with pytest.raises(RecordError, match=r"ragged\.csv: rows have inconsistent numbers of columns"):
        read_record(p, fs=250)


def test_write_rejects_nan(tmp_path):
    x = np.zeros((1000, 1))
    x[3] = np.nan
    with pytest.raises(RecordError, match="NaN"):
        write_wfdb(Record(x, 250.0, ("I",)), tmp_path, "n")
