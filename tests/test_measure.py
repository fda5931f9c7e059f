"""Measurements against the cardiologists' boundaries of ludb-dev, the rhythm rules, and implausible input."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convert.ludb import load_cases, read_annotations, reference, rhythm_label, super_classes, axis_class
from edge.consensus import vote
from edge.errors import RecordError
from edge.io import read_record
from edge.measure import FIELDS, Measurements, check_plausible, measure  # noqa: F401
from edge.rhythm import BRADY_SURE, IRREGULAR, P_CLEAR, P_WEAK, TACHY_SURE, ground

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def ludb(shared_data):
    d = shared_data / "ludb-dev"
    assert d.is_dir(), f"ludb-dev missing at {d}"
    return d


@pytest.fixture(scope="module")
def accuracy(ludb):
    from bench_measure import evaluate
    return evaluate(ludb)


def test_annotation_reader_matches_wfdb(ludb):
    wfdb = pytest.importorskip("wfdb")
    for rec in ("4", "104", "200"):
        for lead in ("i", "ii", "v6"):
            a = wfdb.rdann(str(ludb / "data" / rec), lead)
            s, y = read_annotations(ludb / "data" / f"{rec}.{lead}")
            assert np.array_equal(a.sample, s) and list(a.symbol) == list(y)


def test_label_table():
    assert rhythm_label("Rhythm: Sinus bradycardia. Electric axis of the heart: normal.") == "SBRAD"
    assert rhythm_label("Rhythm: Irregular sinus rhythm.") == "SARRH"
    assert rhythm_label("Rhythm: Atrial flutter, typical.") == "AFLT"
    assert super_classes("Left atrial hypertrophy. Scar formation: septal.") == ("HYP", "MI")
    assert super_classes("Undefined ischemia/scar/supp.NSTEMI: apical.") == ("STTC",)
    assert super_classes("Incomplete right bundle branch block.") == ("CD",)
    assert super_classes("Rhythm: Sinus rhythm. Electric axis of the heart: normal.") == ("NORM",)
    assert axis_class("Electric axis of the heart: horizontal.") == "normal"
    assert axis_class("Electric axis of the heart: left axis deviation.") == "left"
    assert axis_class("UNIpolar ventricular pacing.") is None


def test_rhythm_of_the_answer_on_ludb(accuracy):
    from bench_measure import rhythm_agreement
    rh = rhythm_agreement(accuracy)
    assert rh["all"] >= 0.85 and rh["non_sinus"] >= 0.60, rh
    assert rh["all"] > rh["retrieval_only_all"]      # the measurements improve on the similar cases alone


def test_heart_rate_accuracy(accuracy):
    q = accuracy["quantities"]["heart_rate_bpm"]
    assert q["missing"] == 0 and q["n"] == 49
    assert q["mae"] <= 2.0


@pytest.mark.parametrize("key, mean_lim, sd_lim", [("pr_ms", 10, 10), ("qrs_ms", 10, 10), ("qt_ms", 25, 30)])
def test_interval_accuracy_iec_limits(accuracy, key, mean_lim, sd_lim):
    q = accuracy["quantities"][key]
    assert abs(q["mean_diff"]) <= mean_lim and q["sd_diff"] <= sd_lim, q
    assert q["n"] >= 38, q          # measured on most records that have the wave


def test_no_record_far_off_in_pr(accuracy):
    """No P onset lands on the TP segment: every record's PR within 25 ms of the cardiologists'. Record 108
    (frequent atrial extrasystoles; the magnitude sits on a plateau above the PR-segment level long before the P
    wave) was measured 227 ms against 184 while the P onset's base was sought over the whole window."""
    off = {r["record"]: round(r["meas"]["pr_ms"] - r["ref"]["pr_ms"]) for r in accuracy["records"]
           if r["meas"]["pr_ms"] is not None and r["ref"]["pr_ms"] is not None}
    assert len(off) >= 38 and "108" in off
    assert all(abs(d) <= 25 for d in off.values()), {k: d for k, d in off.items() if abs(d) > 25}


def test_axis_class_accuracy(accuracy):
    """83.0 % (39/47) with the net deflection R - |S| of I and aVF; the 8 records it misses are the 8 whose stated
    class contradicts the cardiologists' own QRS boundaries by the same formula (32, 44, 76, 92, 124, 132, 168, 180:
    "left axis deviation" at +5..+70, "right" at +40, "vertical" at +121), so no method that follows the QRS vector
    gets them, and it equals the reference's ceiling."""
    q = accuracy["quantities"]["axis_class"]
    assert q["n"] == 47 and q["missing"] == 0, q
    assert q["accuracy"] >= 39 / 47 - 1e-9, q
    assert q["accuracy"] >= q["reference_boundaries_accuracy"], q
    from bench_measure import axis_of
    wrong = {r["record"] for r in accuracy["records"] if r["axis_ref"] is not None
             and axis_of(r["meas"]["axis_deg"]) != r["axis_ref"]}
    assert wrong <= set(q["reference_boundaries_disagree"]), (wrong, q)


@pytest.mark.xfail(strict=True, reason="issue 10 target (>= 90 %) not reachable on ludb-dev: 8 of 47 stated classes "
                   "contradict the cardiologists' own QRS boundaries; even class boundaries tuned to these 50 records "
                   "(left < +21, right > +121) give 89.4 %")
def test_axis_class_target(accuracy):
    assert accuracy["quantities"]["axis_class"]["accuracy"] >= 0.90


def _limb(hx: np.ndarray, hy: np.ndarray) -> np.ndarray:
    """The six limb leads (W, 6: I, II, III, aVR, aVL, aVF) of a frontal vector H(t) (Einthoven, Goldberger)."""
    i, ii = hx, 0.5 * hx + 0.5 * np.sqrt(3.0) * hy
    return np.stack([i, ii, ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2], axis=1)


@pytest.mark.parametrize("deg", [-120.0, -60.0, -10.0, 0.0, 30.0, 60.0, 75.0, 100.0, 150.0])
def test_axis_of_a_known_vector(deg):
    """A QRS whose frontal vector keeps one direction gives that direction, from I and aVF (the 2/sqrt(3) of aVF)
    and by least squares over I, II, III alone."""
    from edge.measure import _axis
    g = np.sin(np.linspace(0.0, np.pi, 50)) * 1.2  # mV
    q = _limb(g * np.cos(np.radians(deg)), g * np.sin(np.radians(deg)))
    assert _axis(q, np.arange(6)) == pytest.approx(deg, abs=1e-6)
    assert _axis(np.concatenate([q, np.zeros((50, 6))], axis=1), np.arange(12)) == pytest.approx(deg, abs=1e-6)
    assert _axis(q[:, :3], np.arange(3)) == pytest.approx(deg, abs=1e-6)
    assert _axis(q[:, :1], np.arange(1)) is None


def test_axis_net_deflection_not_area(monkeypatch):
    """Right bundle-branch block with left anterior hemiblock: lead I has a tall narrow R and a low broad terminal
    S whose area outweighs the R's; aVF an rS. A cardiologist reads I positive (R > |S|), aVF negative: about -50,
    the hemiblock's axis. The net areas make I negative and put the vector in the extreme quadrant (about -98)."""
    from edge import measure as em
    t = np.arange(70)  # samples of 2 ms

    def bump(c, w, a):
        return a * np.exp(-0.5 * ((t - c) / w) ** 2)

    hx = bump(15, 4, 1.0) + bump(45, 14, -0.35)   # R 1.0 mV narrow, S -0.35 mV broad
    hy = bump(12, 4, 0.25) + bump(25, 7, -0.9)    # small r, deep S downwards
    q = _limb(hx, hy)
    assert hx.sum() < 0 < hx.max() + hx.min()
    ang = em._axis(q, np.arange(6))
    assert -90.0 < ang < -30.0, ang
    assert em.AXIS_METHOD == "amplitude"
    monkeypatch.setattr(em, "AXIS_METHOD", "area")
    assert em._axis(q, np.arange(6)) < -90.0


def test_paced_records_are_flagged_not_measured(ludb):
    for rec, paced in (("104", True), ("72", True), ("8", True), ("4", False), ("12", False)):
        m = measure(read_record(ludb / "data" / f"{rec}.hea"))
        assert m.paced is paced, rec
        if paced:
            assert m.qrs_ms is None and m.axis_deg is None and any("pacemaker" in f for f in m.findings)


def test_hundred_hz_and_zscored_records(ptbxl_subset):
    from edge.leads import LEADS12
    from edge.record import Record
    x = np.asarray(ptbxl_subset.signal(0), dtype=np.float64)
    m = measure(Record(x, 100.0, LEADS12, "ptbxl"))
    assert 40 < m.heart_rate_bpm < 120 and m.n_beats >= 5
    assert m.axis_deg is None and any("z-scored" in f for f in m.findings)


def test_json_measurements_object_is_stable(shared_data):
    out = subprocess.run([sys.executable, "-m", "edge.cli", "query", "--allow-unsigned", "--json",
                          str(shared_data / "cinc2021-sample" / "E07510.hea")], capture_output=True, text=True,
                         cwd=ROOT)
    d = json.loads(out.stdout.splitlines()[0])
    assert set(FIELDS) <= set(d["measurements"]), d["measurements"]
    m = d["measurements"]
    assert 45 <= m["heart_rate_bpm"] <= 51                    # 48 bpm by its own R peaks
    assert d["rhythm"]["label"] == "SBRAD" and "measured" in d["rhythm"]["basis"]


def _cons(rhythm_votes):
    """A consensus whose 10 cases carry the given rhythms (list of label tuples)."""
    return vote([{"score": 0.9, "super_class": ("NORM",), "rhythm": r, "statements": ""} for r in rhythm_votes])


def _m(**kw):
    base = dict(heart_rate_bpm=70.0, rr_mean_ms=857.0, rr_sd_ms=20.0, irregularity=0.02, premature_beats=0,
                n_beats=12, p_rel=0.15, fs=500.0)
    base.update(kw)
    return Measurements(**base)


def test_rule_sinus_bradycardia_from_the_rate():
    a = ground(_cons([("SR",)] * 10), _m(heart_rate_bpm=48.0, rr_mean_ms=1250.0))
    assert a.label == "SBRAD" and a.basis == "measured" and "48 bpm" in a.note
    assert ground(_cons([("SR",)] * 10), _m(heart_rate_bpm=58.0)).label == "SR"        # borderline: the cases
    assert ground(_cons([("SBRAD",)] * 10), _m(heart_rate_bpm=58.0)).label == "SBRAD"
    assert ground(_cons([("SBRAD",)] * 10), _m(heart_rate_bpm=75.0)).label == "SR"     # never brady at 75


def test_rule_sinus_tachycardia_from_the_rate():
    assert ground(_cons([("SR",)] * 10), _m(heart_rate_bpm=123.0)).label == "STACH"
    assert ground(_cons([("SR",)] * 10), _m(heart_rate_bpm=TACHY_SURE + 3)).label == "STACH"
    assert ground(_cons([("STACH",)] * 10), _m(heart_rate_bpm=98.0)).label == "SR"     # never tachy under 100
    assert ground(_cons([("SR",)] * 10), _m(heart_rate_bpm=BRADY_SURE - 3)).label == "SBRAD"


def test_rule_irregular_with_clear_p_waves_is_not_af():
    """Frequent premature atrial beats (CinC JS20011: P/QRS 0.22) make the RR series irregular; clear P waves say
    it is not atrial fibrillation, whatever the similar cases say."""
    a = ground(_cons([("AFIB",)] * 10), _m(irregularity=IRREGULAR + 0.1, p_rel=P_CLEAR + 0.05))
    assert a.label == "SARRH" and "P waves precede" in a.note
    weak = ground(_cons([("AFIB",)] * 10), _m(irregularity=IRREGULAR + 0.1, p_rel=(P_WEAK + P_CLEAR) / 2))
    assert weak.label == "AFIB" and "confirm" in weak.note


def test_rule_no_af_for_a_regular_series_with_premature_beats():
    a = ground(_cons([("AFIB",)] * 7 + [("SR",)] * 3), _m(irregularity=0.03, premature_beats=2, rr_sd_ms=150.0))
    assert a.label != "AFIB" and "regular apart from 2 premature beats" in a.note


def test_rule_af_measured_irregular_without_p():
    a = ground(_cons([("SR",)] * 10), _m(irregularity=IRREGULAR + 0.1, p_rel=P_WEAK / 2))
    assert a.label == "AFIB" and a.basis == "measured"
    assert ground(_cons([("SR",)] * 10), _m(irregularity=IRREGULAR + 0.1, p_rel=0.2)).label == "SARRH"


def test_rule_paced_names_the_atrial_rhythm():
    a = ground(_cons([("SR",)] * 10), _m(paced=True))
    assert a.label == "SR" and "pacing" in a.note


def test_rule_unmeasured_falls_back_to_the_cases():
    a = ground(_cons([("AFIB",)] * 10), Measurements(findings=("fewer than 3 R peaks",)))
    assert a.label == "AFIB" and a.basis == "retrieved"


def test_implausible_rate_is_refused(shared_data):
    rec = read_record(shared_data / "cinc2021-sample" / "E07510.hea")
    m = measure(replace(rec, fs=rec.fs / 2))         # 48 bpm read at half the rate: 24 bpm
    assert m.heart_rate_bpm < 25
    with pytest.raises(RecordError, match="--fs"):
        check_plausible(m, "E07510")
    check_plausible(measure(rec), "E07510")


def test_wrong_fs_gives_one_error_line(shared_data, tmp_path):
    rec = read_record(shared_data / "cinc2021-sample" / "E07510.hea")   # 48 bpm; --fs 250 makes it 24
    p = tmp_path / "e.csv"
    np.savetxt(p, rec.signal[:, :12], delimiter=",", header=",".join(rec.leads), comments="")
    out = subprocess.run([sys.executable, "-m", "edge.cli", "query", "--allow-unsigned", "--fs", "250", str(p)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    errs = [l for l in out.stderr.splitlines() if l.startswith("ecgret: error:")]
    assert len(errs) == 1 and "e.csv" in errs[0] and "--fs" in errs[0], out.stderr
    assert "Traceback" not in out.stderr


def test_measure_never_raises_on_noise_and_odd_shapes():
    from edge.record import Record
    rng = np.random.default_rng(0)
    for fs in (100.0, 250.0, 500.0, 1000.0):
        for n_s in (2.0, 3.0, 10.0, 12.0):
            n = int(fs * n_s)
            for x in (rng.normal(size=(n, 12)), np.zeros((n, 12)), np.cumsum(rng.normal(size=(n, 2)), axis=0)):
                leads = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")[:x.shape[1]]
                m = measure(Record(x, fs, leads, "noise"))
                assert isinstance(m.to_dict(), dict)


def test_half_rate_reading_is_flagged_and_right_rates_are_not(shared_data):
    """CinC E07501 (sinus tachycardia, 500 Hz) read at 250 Hz measures a plausible 62 bpm; the intervals, all
    long at once, say to check --fs. None of the 48 CinC records at their own rates gets that warning."""
    cinc = shared_data / "cinc2021-sample"
    rec = read_record(cinc / "E07501.hea")
    half = measure(replace(rec, fs=rec.fs / 2))
    assert 55 < half.heart_rate_bpm < 70 and any("check the sampling rate" in f for f in half.findings)
    for f in sorted(cinc.glob("*.hea")):
        m = measure(read_record(f))
        assert not any("check the sampling rate" in x for x in m.findings), f.stem
    # over all 98 real records at half their rates: 83 warned (68 before the slow-rate rules), none at their own
    recs = [read_record(f) for d in (cinc, shared_data / "ludb-dev" / "data") for f in sorted(d.glob("*.hea"))]
    warned = sum(any("check the sampling rate" in x for x in measure(replace(r, fs=r.fs / 2)).findings) for r in recs)
    assert warned >= 80, warned


def test_median_of_beats_is_numpys_median_and_leaves_its_input_alone():
    """The median along the first axis (the median beat of the imaging, the quality gate and the measurements)
    equals np.median, and sorts a copy: a contiguous one-lead slice of a median beat stays as it was (an in-place
    sort once reordered the PR segment it was given)."""
    from edge.peaks import median_of_beats
    rng = np.random.default_rng(3)
    for shape in ((7, 100, 12), (8, 100, 12), (9, 250), (2, 5, 3), (1, 4)):
        a = rng.normal(size=shape).astype(np.float32 if len(shape) == 3 else np.float64)
        np.testing.assert_array_equal(median_of_beats(a), np.median(a, axis=0).astype(a.dtype))
    mb = np.arange(10.0)[::-1].reshape(10, 1).copy()
    before = mb.copy()
    np.testing.assert_array_equal(median_of_beats(mb[2:7]), [5.0])
    np.testing.assert_array_equal(median_of_beats(mb[2:8]), [4.5])
    np.testing.assert_array_equal(mb, before)


def _as(rec, fs=None, seconds=None, leads=None, meta=None):
    from edge.record import Record
    x = rec.signal if seconds is None else rec.signal[: int(seconds * rec.fs)]
    if leads is not None:
        x = x[:, [rec.leads.index(ld) for ld in leads]]
    return Record(x, fs or rec.fs, tuple(leads or rec.leads), rec.name, rec.meta if meta is None else meta)


@pytest.fixture(scope="module")
def retriever():
    from edge.bundle import load_bundle
    from edge.retrieval import Retriever
    return Retriever(load_bundle(None, threads=1))


def test_a_short_strip_is_refused_or_measured_right_never_at_twice_the_rate(retriever, shared_data):
    """On a 2.5 s strip the R-peak threshold came from the 8 highest energy peaks, T and P waves among them: 61 of
    83 crops were read at over 1.5x their rate, 17 as atrial fibrillation (CinC E07504, 84 bpm: 174 bpm). Now a
    strip under 8 s takes fewer reference peaks: the rate is right, or the strip is refused as too short."""
    from edge.errors import QualityError
    rec = read_record(shared_data / "cinc2021-sample" / "E07504")
    full = retriever.query_record(rec).measurements.heart_rate_bpm
    with pytest.raises(QualityError, match=r"short \(2\.5 s"):
        retriever.query_record(_as(rec, seconds=2.5))
    for s in (4.0, 6.0):
        assert retriever.query_record(_as(rec, seconds=s)).measurements.heart_rate_bpm == pytest.approx(full, rel=0.1)


def test_twice_the_sampling_rate_is_warned_and_never_a_negative_qrs(retriever, shared_data):
    """A record read at twice its rate was answered silently: CinC E07500 (57 bpm) as 114 bpm sinus tachycardia
    with QTc 309, JS20004 with a QRS of -4 ms, E07508 as "sinus tachycardia (measured)" at 227 bpm."""
    from edge.errors import EcgretError
    d = shared_data / "cinc2021-sample"
    m = retriever.query_record(_as(read_record(d / "E07500"), fs=1000.0)).measurements
    assert any("twice its rate" in f and "--fs" in f for f in m.findings), m.findings
    assert not any("--fs" in f for f in retriever.query_record(read_record(d / "E07500")).measurements.findings)
    res = retriever.query_record(_as(read_record(d / "E07508"), fs=1000.0))
    assert res.rhythm.basis == "retrieved" and "--fs" in res.rhythm.note   # not "sinus tachycardia (measured)"
    try:
        q = retriever.query_record(_as(read_record(d / "JS20004"), fs=1000.0)).measurements.qrs_ms
        assert q is None or q >= 20
    except EcgretError:
        pass                                  # refused is fine too; a negative QRS is not


def test_no_pr_beside_atrial_fibrillation(accuracy):
    """ludb-dev 88 (atrial fibrillation) printed "PR 205 ms" from fibrillatory waves that happened to repeat."""
    r88 = next(r for r in accuracy["records"] if r["record"] == "88")
    assert r88["answer_rhythm"] == "AFIB" and r88["meas"]["pr_ms"] is None
    assert any("no PR interval in atrial fibrillation" in f for f in r88["findings"])
    for r in accuracy["records"]:
        if r["answer_rhythm"] in ("AFIB", "AFLT"):
            assert r["meas"]["pr_ms"] is None, r["record"]


def test_no_axis_from_z_scored_leads_whatever_is_derived(retriever):
    """PTB-XL's z-scored records reach a mean of 0.11 and an SD 0.10 off 1 after the filtering; the old 0.05
    tolerance gave some an axis, and with leads I and II alone the derived limb leads (not z-scored) always did."""
    from edge.leads import LEADS12
    from edge.paths import shared_data_dir
    from edge.record import Record
    sig = np.load(shared_data_dir() / "ptbxl-subset" / "signals_100hz.npy", mmap_mode="r")
    for row in (325, 0):
        x = np.asarray(sig[row], dtype=np.float64)
        m12 = retriever.query_record(Record(x, 100.0, LEADS12, f"r{row}", {})).measurements
        m2 = retriever.query_record(Record(x[:, :2], 100.0, ("I", "II"), f"r{row}", {})).measurements
        assert m12.axis_deg is None and m2.axis_deg is None, (row, m12.axis_deg, m2.axis_deg)


def test_reversed_arm_electrodes_are_flagged_and_real_records_are_not(retriever, shared_data):
    """An LA/RA swap (I -> -I, II <-> III, aVR <-> aVL) moved CinC E07500's axis from 17 to 164 degrees with "no
    problems found". Now lead I's negative P and QRS are named as a possible reversal; the unswapped record is not."""
    from edge.record import Record
    rec = read_record(shared_data / "cinc2021-sample" / "E07500")
    g = {k: rec.leads.index(k) for k in ("I", "II", "III", "aVR", "aVL")}
    x = rec.signal.copy()
    y = x.copy()
    y[:, g["I"]] = -x[:, g["I"]]
    y[:, g["II"]], y[:, g["III"]] = x[:, g["III"]], x[:, g["II"]]
    y[:, g["aVR"]], y[:, g["aVL"]] = x[:, g["aVL"]], x[:, g["aVR"]]
    swapped = retriever.query_record(Record(y, rec.fs, rec.leads, rec.name, rec.meta)).measurements
    plain = retriever.query_record(rec).measurements
    assert any("arm electrodes may be reversed" in f for f in swapped.findings), swapped.findings
    assert not any("arm electrodes" in f for f in plain.findings)


def test_reversed_arm_electrodes_are_flagged_and_real_records_are_not_ra_ll(retriever, shared_data):
    """An RA/LL swap (I -> -III, II -> -II, III -> -I, aVR <-> aVF) keeps Einthoven's relations, so no lead looks
    inverted, and it was answered with the swapped axis and nothing said (0 of 98 real records swapped; now 60, none
    named LA/RA, none of the 98 unswapped). CinC E07500: now named as a possible RA/LL reversal."""
    from edge.record import Record
    rec = read_record(shared_data / "cinc2021-sample" / "E07500")
    g = {k: rec.leads.index(k) for k in ("I", "II", "III", "aVR", "aVF")}
    x = rec.signal.copy()
    y = x.copy()
    y[:, g["I"]], y[:, g["II"]], y[:, g["III"]] = -x[:, g["III"]], -x[:, g["II"]], -x[:, g["I"]]
    y[:, g["aVR"]], y[:, g["aVF"]] = x[:, g["aVF"]], x[:, g["aVR"]]
    swapped = retriever.query_record(Record(y, rec.fs, rec.leads, rec.name, rec.meta)).measurements
    assert any("left leg electrodes may be reversed (RA/LL)" in f for f in swapped.findings), swapped.findings
    assert not any("(LA/RA)" in f for f in swapped.findings)
    assert not any("(RA/LL)" in f for f in retriever.query_record(rec).measurements.findings)


def test_no_real_record_of_ludb_dev_is_called_reversed(accuracy):
    assert not [r["record"] for r in accuracy["records"] if any("electrodes may be" in f for f in r["findings"])]


def _retimed(rec, peaks, new_rr):
    """``rec`` with its beats re-timed to the RR intervals ``new_rr`` (s): each beat's QRS-T (0.45 RR after the R
    peak, at most 0.4 s) and P-QRS (0.25 RR before it, at most 0.2 s) keep their shape, QT shortened by sqrt(RR'/RR)
    in a shortened interval; only the TP segment stretches or shrinks (a piecewise-linear time map)."""
    fs = rec.fs
    t_in, t_out, cur = [0.0, peaks[0] / fs], [0.0, peaks[0] / fs], peaks[0] / fs
    for k in range(len(new_rr)):
        rr, new = (peaks[k + 1] - peaks[k]) / fs, float(new_rr[k])
        a, b = min(0.40, 0.45 * rr), min(0.20, 0.25 * rr)
        s = min(1.0, np.sqrt(new / rr))
        base = peaks[k] / fs
        t_in += [base + a, base + rr - b, base + rr]
        t_out += [cur + a * s, cur + new - b * s, cur + new]
        cur += new
    t = np.interp(np.arange(0, cur, 1 / fs), t_out, t_in)
    x = rec.signal
    y = np.stack([np.interp(t, np.arange(x.shape[0]) / fs, x[:, j]) for j in range(x.shape[1])], axis=1)
    return replace(rec, signal=y)


@pytest.mark.parametrize("name", ["E07506", "HR06001", "JS20001"])
def test_bigeminy_is_regular_and_its_qt_is_not_the_next_beat(retriever, shared_data, name):
    """Real beats re-timed into bigeminy (coupling 0.62 RR, pause 1.38 RR) and trigeminy: the premature beats are
    counted (with an odd number of intervals the median was a short one, and none was), the rhythm is not atrial
    fibrillation (18 of 92 records were), and the QTc stays the record's own (the tangent took the early beat's QRS
    for the T wave's end: QTc 640 for 393 on E07506 in trigeminy, >= 500 on 36 of 92): never much longer."""
    rec = read_record(shared_data / "cinc2021-sample" / name)
    base = retriever.query_record(rec)
    p = np.asarray(base.measurements.peaks)
    m = float(np.median(np.diff(p))) / rec.fs
    for mode, pattern in (("bigeminy", (0.62, 1.38)), ("trigeminy", (0.62, 1.38, 1.0))):
        rr = [m * pattern[i % len(pattern)] for i in range(len(p) - 1)]
        res = retriever.query_record(_retimed(rec, p, rr))
        got = res.measurements
        assert got.premature_beats >= (len(rr) - 1) // len(pattern), (mode, got.premature_beats)
        assert res.rhythm.label != "AFIB", (mode, res.rhythm.line)
        # (the re-timing shortens the QT of a beat followed by a short interval, so lower is expected; higher is not)
        assert got.qtc_bazett_ms is None or got.qtc_bazett_ms < base.measurements.qtc_bazett_ms + 40, (
            mode, got.qtc_bazett_ms, base.measurements.qtc_bazett_ms)
        if mode == "bigeminy":
            assert got.bigeminy and any("bigeminy" in f for f in got.findings), got.findings
            assert "bigeminy" in res.rhythm.note
    assert not base.measurements.bigeminy


def test_real_bigeminy_is_found(ptbxl_subset):
    """PTB-XL's bigeminal records (BIGU) of the archive: 3 of 4 found, as a steady pattern."""
    from edge.leads import LEADS12
    from edge.record import Record
    found = [row for row in (80, 171, 509, 885)
             if measure(Record(ptbxl_subset.signal(row).astype(float), 100.0, LEADS12, "r")).bigeminy]
    assert len(found) >= 3, found


@pytest.mark.parametrize("name", ["E07506", "HR06001", "JS20001"])
def test_a_pause_is_named_and_does_not_rename_the_rhythm(retriever, shared_data, name):
    """One RR interval of twice the usual length mid-strip (a dropped beat): the findings name the pause, and the
    rhythm stays the record's own (33 of 88 real records went from sinus rhythm to sinus arrhythmia, 12 to sinus
    bradycardia, none mentioned a pause)."""
    rec = read_record(shared_data / "cinc2021-sample" / name)
    base = retriever.query_record(rec)
    p = np.asarray(base.measurements.peaks)
    rr = list(np.diff(p) / rec.fs)
    med = float(np.median(rr))
    i = next(k for k in range(len(rr) // 2, len(rr)) if all(abs(r - med) < 0.15 * med for r in rr[k - 1 : k + 1]))
    rr[i] = 2.0 * med  # after a usual interval (not the compensatory pause of a premature beat)
    res = retriever.query_record(_retimed(rec, p, rr))
    assert res.measurements.pauses == 1 and any(f.startswith("pause of") for f in res.measurements.findings)
    assert res.rhythm.label == base.rhythm.label, (res.rhythm.line, base.rhythm.line)
    assert not base.measurements.pauses


def test_an_inverted_limb_lead_is_named_and_gives_no_axis(shared_data, ludb):
    """A limb lead stored inverted (or mislabelled) runs against what I and II give it: named, and no axis (aVF
    inverted moved E07506's axis from 55 to -55 degrees unflagged, on 80 of 98 real records). No real record is
    flagged, ludb-dev's loosely agreeing leads included."""
    from edge.record import Record
    for name in ("E07506", "HR06001", "JS20001"):
        rec = read_record(shared_data / "cinc2021-sample" / name)
        assert measure(rec).axis_deg is not None
        for lead, said in (("aVF", "lead aVF "), ("III", "lead III "), ("II", "lead ")):  # II: the leads it makes
            y = rec.signal.copy()
            y[:, rec.leads.index(lead)] *= -1
            m = measure(Record(y, rec.fs, rec.leads, rec.name, rec.meta))
            assert m.axis_deg is None and any(f.startswith(said) and "runs against" in f for f in m.findings), (
                name, lead, m.findings)
    for f in sorted((ludb / "data").glob("*.hea")):
        assert not [x for x in measure(read_record(f)).findings if "runs against" in x], f.stem


def test_axis_reason_names_the_unusable_lead(shared_data):
    from edge.record import Record
    rec = read_record(shared_data / "cinc2021-sample" / "E07506")
    keep = np.ones(12, dtype=bool)
    keep[[1, 5]] = False  # II and aVF not usable
    m = measure(rec, leads_present=keep)
    assert m.axis_deg is None and any(f.endswith("II, aVF not usable") for f in m.findings), m.findings


def test_intervals_from_a_reduced_lead_set_say_so(retriever, ludb, shared_data):
    """LUDB 116 (complete RBBB) reads QRS ~55 ms on lead I alone, ~169 on 12 leads: the answer says the intervals
    come from fewer leads than a 12-lead ECG's global ones, and gives no sampling-rate warning from them (3 of 98
    records were told to check --fs on lead I alone)."""
    rec = read_record(ludb / "data" / "116.hea")
    full = retriever.query_record(rec).measurements
    assert not [f for f in full.findings if "recorded lead" in f]
    one = retriever.query_record(rec, leads=("I",)).measurements
    assert any(f.startswith("PR, QRS and QT from 1 recorded lead (I)") for f in one.findings), one.findings
    for name in ("E07502", "E07503", "JS20000"):
        m = retriever.query_record(read_record(shared_data / "cinc2021-sample" / name), leads=("I",)).measurements
        assert not [f for f in m.findings if "check the sampling rate" in f], (name, m.findings)


def test_a_wide_qrs_under_500_hz_says_pacing_cannot_be_told(ludb):
    """LUDB's paced records resampled to 250 Hz: the pacing spike is no sharper than the QRS any more, so pacing is
    not detected; the answer says a wide QRS may be paced beats (it said nothing, and measured them as native)."""
    from fractions import Fraction
    from edge.record import Record
    scipy_signal = pytest.importorskip("scipy.signal")
    for name in ("72", "104"):
        rec = read_record(ludb / "data" / f"{name}.hea")
        assert measure(rec).paced
        fr = Fraction(250, 500)
        x = scipy_signal.resample_poly(rec.signal, fr.numerator, fr.denominator, axis=0)
        m = measure(Record(x, 250.0, rec.leads, rec.name, rec.meta))
        assert any(f.startswith("wide QRS at 250 Hz: pacemaker spikes cannot be told") for f in m.findings), m.findings
    narrow = measure(read_record(ludb / "data" / "16.hea"))
    assert not [f for f in narrow.findings if "pacemaker" in f]


def test_paced_without_p_waves_is_not_named_sinus(retriever, ludb):
    """LUDB 8 (atrial fibrillation, ventricular pacing) was answered "sinus rhythm (measured and retrieved)" from
    its paced rate; no P wave precedes its paced beats, so no sinus rhythm is named. LUDB 72 and 104 (P-synchronous
    pacing) keep their P waves and their sinus rhythm."""
    res = retriever.query_record(read_record(ludb / "data" / "8.hea"))
    assert res.measurements.paced and res.measurements.p_rel == 0.0
    assert res.rhythm.label in ("PACE", "AFIB") and "no P waves before the paced beats" in res.rhythm.note
    for name in ("72", "104"):
        res = retriever.query_record(read_record(ludb / "data" / f"{name}.hea"))
        assert res.measurements.paced and res.measurements.p_rel >= P_WEAK and res.rhythm.label == "SR", name


def test_rule_paced_without_p_waves():
    a = ground(_cons([("SR",)] * 10), _m(paced=True, p_rel=0.0))
    assert a.label == "PACE" and a.basis == "measured" and "sinus rhythm (100%)" in a.note
    assert ground(_cons([("AFIB",)] * 10), _m(paced=True, p_rel=0.0)).label == "AFIB"


@pytest.mark.slow
def test_no_internal_error_on_real_records_at_other_rates_and_lead_sets(retriever, shared_data, ptbxl_subset):
    """Every real record, resampled to 250, 360, 1000 and 2000 Hz and queried with 1, 2 and 8 leads, and every
    PTB-XL archive record: an answer or one EcgretError, never anything else (a new check raised an internal error
    on 10 PTB-XL records and on 79 of 98 records at 1000 Hz)."""
    from fractions import Fraction
    from edge.errors import EcgretError
    from edge.leads import LEADS12
    from edge.record import Record
    sig = pytest.importorskip("scipy.signal")
    recs = [read_record(f) for d in ("cinc2021-sample", "ludb-dev/data")
            for f in sorted((shared_data / d).glob("*.hea"))]
    cases = []
    for rec in recs:
        for fs in (250, 360, 1000, 2000):
            fr = Fraction(fs, int(rec.fs))
            x = sig.resample_poly(np.nan_to_num(rec.signal), fr.numerator, fr.denominator, axis=0)
            cases.append((Record(x, float(fs), rec.leads, rec.name, rec.meta), None))
        for leads in (("I",), ("I", "II"), ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")):
            cases.append((rec, leads))
    cases += [(Record(ptbxl_subset.signal(i).astype(float), 100.0, LEADS12, f"ptb{i}"), None)
              for i in range(len(ptbxl_subset))]
    for rec, leads in cases:
        try:
            retriever.query_record(rec, leads=leads)
        except EcgretError:
            pass


def test_t_waves_taken_for_beats_are_not_counted(ptbxl_subset, retriever, shared_data):
    """Tall T waves the R-peak detector takes for beats (their slope a fraction of the QRS complexes'): PTB-XL 4355
    (LVH) and 17175 were "sinus tachycardia, 118/114 bpm, bigeminy", 16504 and 5907 "sinus tachycardia, 143/113 bpm",
    all sinus rhythms of 56-85 bpm by their QRS complexes. A minority of large ectopic complexes among small ones does
    not make the small ones T waves (CinC E07503, sinus tachycardia: 118 bpm stays), and real bigeminy stays bigeminy."""
    from edge.leads import LEADS12
    from edge.record import Record

    want = {"4355": (52, 62), "17175": (52, 60), "16504": (80, 90), "5907": (60, 72)}
    for eid, (lo, hi) in want.items():
        x = ptbxl_subset.signal(ptbxl_subset.index_of(f"ptbxl:{eid}")).astype(float)
        res = retriever.query_record(Record(x, 100.0, LEADS12, eid))
        m = res.measurements
        assert lo <= m.heart_rate_bpm <= hi, (eid, m.heart_rate_bpm)
        assert any("slow wave" in f and "T waves" in f for f in m.findings), (eid, m.findings)
        assert not m.bigeminy and res.rhythm.label != "STACH", (eid, res.rhythm.line)
    m = retriever.query_record(read_record(shared_data / "cinc2021-sample" / "E07503")).measurements
    assert 110 < m.heart_rate_bpm < 125 and not any("slow wave" in f for f in m.findings), m.findings
    x = ptbxl_subset.signal(ptbxl_subset.index_of("ptbxl:6967")).astype(float)
    m = retriever.query_record(Record(x, 100.0, LEADS12, "6967")).measurements
    assert m.bigeminy and not any("slow wave" in f for f in m.findings), m.findings
