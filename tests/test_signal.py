"""The shared signal path: preprocessing, lead derivation, and its agreement with the PTB-XL subset."""
from __future__ import annotations

import numpy as np
import pytest

from edge.errors import RecordError
from edge.io import read_record
from edge.leads import LEADS12, derive_limb_leads, parse_lead_set
from firmware_bridge.info import LEADS8
from edge.record import Record
from edge.signal import (butter_bandpass_gain2, butter_highpass_gain2, filter_resample, notch_gain2, preprocess,
                         zscore)


def _subset_record(arch, i: int) -> Record:
    return Record(arch.signal(i).astype(np.float64), 100.0, LEADS12, arch.ids[i])


def _corr(a, b):
    return np.array([np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(a.shape[1])])


def test_nearly_idempotent_on_the_zscored_subset(ptbxl_subset):
    worst = []
    for i in range(0, len(ptbxl_subset), 40):
        rec = _subset_record(ptbxl_subset, i)
        out = preprocess(rec)
        assert out.signal.shape == (1000, 12) and out.signal.dtype == np.float32
        assert out.present.all()
        worst.append(_corr(out.signal, rec.signal).min())
        np.testing.assert_allclose(out.signal.std(axis=0), 1.0, atol=1e-3)
    # re-filtering attenuates the 0.5 Hz and 40 Hz band edges once more, so "nearly": the typical
    # record's worst lead correlates > 0.99 with the input, and none falls under 0.95
    assert np.median(worst) > 0.99 and min(worst) > 0.95, worst


def test_raw_mv_record_lands_on_its_zscored_twin(shared_data, ptbxl_subset):
    """CinC HR06005 is the raw 500 Hz mV version of PTB-XL ecg_id 6005."""
    raw = read_record(shared_data / "cinc2021-sample" / "HR06005")
    assert raw.fs == 500
    out = preprocess(raw)
    twin = ptbxl_subset.signal(ptbxl_subset.index_of("ptbxl:6005"))
    c = _corr(out.signal, twin)
    assert c.min() > 0.99, dict(zip(LEADS12, c.round(4)))


def test_eight_channel_board_gets_derived_limb_leads(shared_data):
    raw = read_record(shared_data / "cinc2021-sample" / "HR06005")
    cols = [raw.leads.index(l) for l in LEADS8]
    eight = Record(raw.signal[:, cols], raw.fs, LEADS8, "eight")
    full, derived8 = preprocess(raw), preprocess(eight)
    assert derived8.present.all()
    assert list(np.flatnonzero(derived8.derived)) == [2, 3, 4, 5]
    assert _corr(full.signal, derived8.signal).min() > 0.99


def test_derive_limb_leads_is_einthoven_goldberger():
    i, ii = np.array([1.0, 2.0]), np.array([3.0, -1.0])
    d = derive_limb_leads(i, ii)
    np.testing.assert_allclose(d["III"], ii - i)
    np.testing.assert_allclose(d["aVR"] + d["aVL"] + d["aVF"], 0.0, atol=1e-12)
    np.testing.assert_allclose(d["aVL"], (i - d["III"]) / 2)


def test_filter_responses_match_scipy_designs():
    sps = pytest.importorskip("scipy.signal")
    for fs in (100.0, 250.0, 360.0, 500.0, 1000.0):
        f = np.linspace(0, fs / 2 * 0.999, 777)
        _, h = sps.sosfreqz(sps.butter(4, [0.5, min(40.0, 0.95 * fs / 2)], "bandpass", fs=fs, output="sos"), worN=f, fs=fs)
        np.testing.assert_allclose(butter_bandpass_gain2(f, fs), np.abs(h) ** 2, atol=1e-9)
        _, h = sps.sosfreqz(sps.butter(4, 45.0, "highpass", fs=fs, output="sos"), worN=f, fs=fs)
        np.testing.assert_allclose(butter_highpass_gain2(f, fs, 45.0), np.abs(h) ** 2, atol=1e-9)
        if fs > 120:
            b, a = sps.iirnotch(60.0, 30.0, fs=fs)
            _, h = sps.freqz(b, a, worN=f, fs=fs)
            np.testing.assert_allclose(notch_gain2(f, fs, 60.0), np.abs(h) ** 2, atol=1e-9)


@pytest.mark.parametrize("fs", [500.0, 360.0, 250.0])
def test_fft_path_equals_sosfiltfilt_then_resample_poly(shared_data, fs):
    """The device's one-FFT path against scipy's zero-phase IIR filtering and polyphase resampling."""
    sps = pytest.importorskip("scipy.signal")
    raw = read_record(shared_data / "cinc2021-sample" / "E07503")
    x = raw.signal - np.median(raw.signal, axis=0)
    if fs != 500.0:
        x = sps.resample_poly(x, int(fs), 500, axis=0)
    y = filter_resample(x, fs, 100, notch_hz=50.0)
    ref = x
    if fs > 100:
        b, a = sps.iirnotch(50.0, 30.0, fs=fs)
        ref = sps.sosfiltfilt(sps.tf2sos(b, a), ref, axis=0, padlen=int(3 * fs))
    ref = sps.sosfiltfilt(sps.butter(4, [0.5, 40.0], "bandpass", fs=fs, output="sos"), ref, axis=0, padlen=int(3 * fs))
    from fractions import Fraction
    r = Fraction(100, int(fs))
    ref = sps.resample_poly(ref, r.numerator, r.denominator, axis=0)
    assert y.shape == ref.shape == (1000, 12)
    assert _corr(y, ref).min() > 0.999
    mid = slice(100, 900)
    assert np.abs(y[mid] - ref[mid]).max() < 0.01 * np.abs(ref).max()


def test_filter_passes_ecg_band_and_stops_drift_and_mains():
    fs = 500.0
    t = np.arange(0, 10, 1 / fs)
    x = np.stack([np.sin(2 * np.pi * 10 * t), np.sin(2 * np.pi * 0.05 * t), np.sin(2 * np.pi * 50 * t)], axis=1)
    y = filter_resample(x, fs, 100, notch_hz=50.0)
    mid = slice(200, 800)
    assert np.std(y[mid, 0]) == pytest.approx(np.std(x[:, 0]), rel=0.02)
    assert np.std(y[mid, 1]) < 0.01 and np.std(y[mid, 2]) < 0.01


def test_resample_lengths_and_zscore():
    x = np.random.default_rng(0).standard_normal((5000, 3))
    assert filter_resample(x, 500, 100).shape == (1000, 3)
    assert filter_resample(x[:3600], 360, 100).shape == (1000, 3)
    assert filter_resample(x[:1000], 100, 100).shape == (1000, 3)
    z, ok = zscore(np.c_[x[:, :2], np.zeros(5000)])
    assert ok.tolist() == [True, True, False]
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0, atol=1e-12)


def test_short_records_are_padded_and_long_ones_cropped(ptbxl_subset):
    x = ptbxl_subset.signal(0).astype(np.float64)
    short = preprocess(Record(x[:450], 100.0, LEADS12, "short"))
    assert short.n_valid == 450 and np.all(short.signal[450:] == 0)
    long = preprocess(Record(np.tile(x, (2, 1)), 100.0, LEADS12, "long"))
    assert long.n_valid == 1000


@pytest.mark.parametrize("make, message", [
    (lambda x: Record(x[:150], 100.0, LEADS12, "r"), "under the 2 s minimum"),
    (lambda x: Record(x[::2], 50.0, LEADS12, "r"), "under 100 Hz"),
    (lambda x: Record(x[:, :3], 100.0, ("X1", "X2", "X3"), "r"), "no known ECG lead"),
    (lambda x: Record(x[:, :3], 100.0, LEADS12, "r"), "does not match"),
])
def test_unusable_records_raise_typed_errors(ptbxl_subset, make, message):
    with pytest.raises(RecordError, match=message):
        preprocess(make(ptbxl_subset.signal(0).astype(np.float64)))


def test_parse_lead_set():
    assert parse_lead_set("3") == ("I", "II", "V2")
    assert parse_lead_set("i,avf,V2") == ("I", "aVF", "V2")
    with pytest.raises(Exception, match="unknown lead name"):
        parse_lead_set("I,V9")


def test_twelve_leads_and_an_extra_channel_give_the_twelve():
    """A record holding the 12 leads in LEADS12 order and one more channel (a board's respiration, kept by name)
    is placed as the 12 leads alone, like any other order; a repeated lead name takes its last column."""
    from edge.signal import to_12_leads
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 13))
    out, present, _ = to_12_leads(Record(x, 500.0, LEADS12 + ("RESP",), "r"))
    assert out.shape == (5000, 12) and present.all()
    np.testing.assert_array_equal(out, x[:, :12])
    assert preprocess(Record(x, 500.0, LEADS12 + ("RESP",), "r")).signal.shape == (1000, 12)
    out, present, _ = to_12_leads(Record(x[:, :3], 500.0, ("I", "II", "I"), "dup"))
    np.testing.assert_array_equal(out[:, 0], x[:, 2])
    np.testing.assert_array_equal(out[:, 1], x[:, 1])


def test_a_constant_offset_changes_nothing_and_a_flat_lead_stays_absent():
    """preprocess takes each lead's first sample out before the band-pass: an offset (raw ADC counts) gives the
    same z-scored signal, and a flat lead is exactly zero, so it is not present."""
    rng = np.random.default_rng(1)
    t = np.arange(5000) / 500.0
    x = np.c_[np.sin(2 * np.pi * 1.2 * t) + 0.1 * rng.normal(size=5000), np.cos(2 * np.pi * 1.2 * t), np.full(5000, 3.0)]
    a = preprocess(Record(x, 500.0, ("I", "II", "V1"), "a"))
    b = preprocess(Record(x + 2048.0, 500.0, ("I", "II", "V1"), "b"))
    np.testing.assert_allclose(a.signal, b.signal, atol=1e-5)
    assert not a.present[LEADS12.index("V1")] and not b.present[LEADS12.index("V1")]
