"""The quality gate: each finding is named per lead; a record with no usable lead is refused."""
from __future__ import annotations

import numpy as np
import pytest

from edge.errors import QualityError, RecordError
from edge.io import read_record
from edge.leads import LEADS12
from firmware_bridge.info import LEADS8
from edge.quality import assess
from edge.record import Record


@pytest.fixture(scope="module")
def raw(shared_data):
    return read_record(shared_data / "cinc2021-sample" / "HR06005")


def kinds(report):
    return {(f.lead, f.kind) for f in report.findings}


def test_clean_records_have_no_problems(ptbxl_subset, raw):
    assert assess(raw).problems == ()
    assert assess(raw).usable.all()
    bad = [i for i in range(0, len(ptbxl_subset), 25)
           if assess(Record(ptbxl_subset.signal(i).astype(float), 100.0, LEADS12, "r")).problems]
    assert len(bad) <= 2, bad


def test_flat_clipped_noisy_and_lead_off_are_named_per_lead(raw):
    x = raw.signal.copy()
    x[:, LEADS12.index("V1")] = 0.0                                  # disconnected, flat
    v3 = x[:, LEADS12.index("V3")]
    x[:, LEADS12.index("V3")] = np.clip(v3, np.percentile(v3, 10), np.percentile(v3, 90))  # saturated ADC
    x[:, LEADS12.index("V5")] += np.random.default_rng(0).normal(0, 1.0, len(x))   # EMG-like noise
    rec = Record(x, raw.fs, raw.leads, "faulty", raw.meta)
    off = np.zeros(x.shape, bool)
    off[:, LEADS12.index("V6")] = True
    rep = assess(rec, lead_off=off)
    assert {("V1", "flat"), ("V3", "clipped"), ("V5", "noisy"), ("V6", "lead_off")} <= kinds(rep)
    assert set(rep.usable_leads) == set(LEADS12) - {"V1", "V3", "V5", "V6"}


def test_gaps_from_dropped_frames(raw):
    x = raw.signal.copy()
    x[1000:2000, 0] = np.nan
    rep = assess(Record(x, raw.fs, raw.leads, "gappy", raw.meta))
    assert ("I", "gaps") in kinds(rep)
    assert not rep.usable[0] and rep.usable[LEADS12.index("aVR")]  # aVR is measured here, not derived


def test_derived_leads_are_reported_and_inherit_bad_inputs(raw):
    cols = [raw.leads.index(l) for l in LEADS8]
    eight = Record(raw.signal[:, cols], raw.fs, LEADS8, "eight", raw.meta)
    rep = assess(eight)
    assert {("III", "derived"), ("aVR", "derived"), ("aVL", "derived"), ("aVF", "derived")} <= kinds(rep)
    y = eight.signal.copy()
    y[:, 0] = 0.0
    rep = assess(Record(y, raw.fs, LEADS8, "eight", raw.meta))
    assert not rep.usable[LEADS12.index("aVL")] and rep.usable[LEADS12.index("V2")]


def test_missing_leads_are_named(raw):
    one = Record(raw.signal[:, [1]], raw.fs, ("II",), "lead II", raw.meta)
    rep = assess(one, expected=LEADS12)
    assert ("V1", "missing") in kinds(rep) and rep.usable_leads == ("II",)


def test_no_usable_lead_is_refused_with_the_reason(raw):
    with pytest.raises(QualityError, match="no usable lead.*flat"):
        assess(Record(np.zeros_like(raw.signal), raw.fs, raw.leads, "all flat", raw.meta))
    noise = np.random.default_rng(1).standard_normal(raw.signal.shape)
    with pytest.raises(QualityError, match="no usable lead.*noisy"):
        assess(Record(noise, raw.fs, raw.leads, "noise", raw.meta))


def test_too_short_is_refused(raw):
    with pytest.raises(RecordError, match="2 s minimum"):
        assess(Record(raw.signal[:900], raw.fs, raw.leads, "short", raw.meta))


def test_signal_lost_mid_record_is_named_and_the_lead_not_used(raw):
    """A lead that repeats one value for 2 s (a board's lead-off, a held or zeroed value) has lost its signal: named
    ``lost`` and not used (its missing beats made a 2 s "pause": every real record read 5-20 bpm low, unflagged).
    The same on every lead: refused, as a record of dropped frames is."""
    a, b = int(4 * raw.fs), int(6 * raw.fs)
    for fill in ("zero", "hold"):
        x = raw.signal.copy()
        for lead in ("II", "III", "aVF"):  # the left-leg electrode off
            j = raw.leads.index(lead)
            x[a:b, j] = 0.0 if fill == "zero" else x[a - 1, j]
        rep = assess(Record(x, raw.fs, raw.leads, "ll-off", raw.meta))
        assert {("II", "lost"), ("III", "lost"), ("aVF", "lost")} <= kinds(rep), fill
        assert set(rep.usable_leads) == set(LEADS12) - {"II", "III", "aVF"}
        assert "4.0 s" in next(f.detail for f in rep.findings if f.lead == "II")
    x = raw.signal.copy()
    x[a:b] = 0.0
    with pytest.raises(QualityError, match="lost"):
        assess(Record(x, raw.fs, raw.leads, "all-off", raw.meta))
    # one value repeated for 0.9 s is not lost (ludb-dev repeats values for up to 0.58 s on a 1 uV grid)
    x = raw.signal.copy()
    x[a : a + int(0.9 * raw.fs), raw.leads.index("II")] = 0.0
    assert ("II", "lost") not in kinds(assess(Record(x, raw.fs, raw.leads, "short-off", raw.meta)))


def test_no_real_record_is_called_lost(shared_data):
    for f in sorted((shared_data / "ludb-dev" / "data").glob("*.hea"))[:50:5]:
        assert not [x for x in assess(read_record(f)).findings if x.kind == "lost"], f.stem


def test_a_longer_recording_says_what_part_was_answered(raw, tmp_path):
    """Only the first 10 s are answered: a 60 s recording (10 s sinus, then anything) says so, informational (not
    a problem); a 10 s one says nothing. A CSV the reader stopped in says the file holds more."""
    from edge.signal import preprocess
    x = np.concatenate([raw.signal] * 6)
    rec = Record(x, raw.fs, raw.leads, "long", raw.meta)
    rep = assess(rec, preprocess(rec))
    crop = [f for f in rep.findings if f.kind == "cropped"]
    assert len(crop) == 1 and "first 10.0 s of 60.0 s" in crop[0].detail and rep.problems == ()
    assert not [f for f in assess(raw).findings if f.kind == "cropped"]
    csv = tmp_path / "long.csv"
    np.savetxt(csv, x, delimiter=",", header=",".join(raw.leads), comments="", fmt="%.4f")
    got = read_record(csv, fs=raw.fs)
    msg = next(f.detail for f in assess(got, preprocess(got)).findings if f.kind == "cropped")
    assert "first 10.0 s" in msg, msg


def test_mains_hum_is_not_noise_but_muscle_noise_is(raw, shared_data):
    """A mains line (50 or 60 Hz and harmonics) is taken out by the notch and the 40 Hz band-pass: no sign of a
    noisy lead (60 Hz at 0.3 mV made 74 of 98 real records "no usable lead"; JS20011's own 50 Hz hum marked III and
    aVL noisy). Broadband high-frequency noise still is."""
    t = np.arange(raw.signal.shape[0]) / raw.fs
    for f0, amp in ((60.0, 0.3), (50.0, 0.3), (50.2, 0.2)):
        x = raw.signal + amp * np.sin(2 * np.pi * f0 * t)[:, None]
        rep = assess(Record(x, raw.fs, raw.leads, "hum", raw.meta))
        assert rep.problems == () and rep.usable.all(), (f0, rep.findings)
    assert assess(read_record(shared_data / "cinc2021-sample" / "JS20011")).problems == ()
    x = raw.signal + 0.3 * np.sin(2 * np.pi * 60.0 * t)[:, None]
    x[:, LEADS12.index("V5")] += np.random.default_rng(1).normal(0, 1.0, len(x))
    assert ("V5", "noisy") in kinds(assess(Record(x, raw.fs, raw.leads, "hum+emg", raw.meta)))


def test_equal_samples_half_a_second_apart_are_no_lost_signal(raw):
    """The lost-signal search looks only at leads with two equal samples LOST_S/2 apart; one that has them but no
    two equal neighbours (10 PTB-XL records, 79 of 98 real records resampled to 1000 Hz) raised an internal error."""
    x = raw.signal.copy()
    k = int(raw.fs * 0.5)
    x[:, raw.leads.index("V1")] = (np.arange(len(x)) % k) * 0.001  # periodic: x[i] == x[i + k], neighbours differ
    rep = assess(Record(x, raw.fs, raw.leads, "periodic", raw.meta))
    assert not [f for f in rep.findings if f.kind == "lost"]
