"""What an electrocardiograph prints first: heart rate, rhythm regularity, PR, QRS, QT/QTc and the frontal axis.

Measured on the record's own sampling rate (before the resampling to 100 Hz of the retrieval path), over the same
first ``duration_s`` seconds the retrieval uses, with numpy only.

Method (the global-interval approach of 12-lead cardiographs, IEC 60601-2-25):
1. Filter every lead zero-phase, 0.5-``hi`` Hz with the mains notch, in one FFT pair
   (:func:`edge.signal.filter_resample` at the native rate).
2. R peaks on the R-peak lead (:func:`edge.peaks.peak_lead`) with the detector of the imaging path; RR intervals,
   heart rate = 60 / mean RR, RR SD, irregularity = median |successive RR difference| / median RR (robust to
   isolated premature beats, high in atrial fibrillation), premature beats = RR shorter than 85 % of the median
   followed by a longer one.
3. A median beat per lead over the beats that follow a non-premature interval, sample-wise median.
4. QRS onset and offset on the spatial velocity of the median beats (sqrt of the sum over leads of the squared
   derivative): the QRS is where it stays above a fraction of its peak; so the onset is the earliest and the
   offset the latest over the leads.
5. T end by the tangent method on the spatial magnitude (RMS over leads of the baseline-corrected median beats):
   the tangent at the steepest descent after the T peak meets the isoelectric level.
6. P onset on the same magnitude before the QRS: the P wave must stand out of the PR-segment level and be the same in
   most beats (an average of fibrillatory waves is not a P wave); PR = QRS onset - P onset.
7. Axis = atan2(2/sqrt(3) x net QRS amplitude in aVF, net QRS amplitude in I), net amplitude = R - |S| of the
   median beat (the largest positive plus the largest negative deflection), in physical units only: a
   z-scored record gives ``None``.

QTc: Bazett QT / sqrt(RR) and Fridericia QT / RR^(1/3), RR in seconds (the median non-premature RR).
A value that cannot be measured is ``None`` and the reason is a finding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RecordError
from .leads import LEADS12
from .peaks import clip, median_of, median_of_beats, peak_lead, percentiles, r_peaks, unique_sorted
from .record import Record
from .signal import PAD_S, filter_resample, measure_step, to_12_leads

__all__ = ["Measurements", "measure", "FIELDS", "MIN_RATE_BPM", "MAX_RATE_BPM", "check_plausible", "without_pr_in_af"]

FIELDS = (
    "heart_rate_bpm",
    "rr_mean_ms",
    "rr_sd_ms",
    "irregularity",
    "premature_beats",
    "pr_ms",
    "qrs_ms",
    "qt_ms",
    "qtc_bazett_ms",
    "qtc_fridericia_ms",
    "axis_deg",
    "n_beats",
)
MIN_RATE_BPM, MAX_RATE_BPM = 25.0, 300.0  # a measured rate outside these is refused (check_plausible)
STRETCH_PR_MS, STRETCH_QRS_MS, STRETCH_QTC_MS, STRETCH_HR = 240.0, 120.0, 480.0, 60.0  # see _stretched
STRETCH_PR_SLOW_MS = 200.0  # the PR of _stretched under STRETCH_HR
COMPRESS_HR, COMPRESS_QRS_MS, COMPRESS_QTC_MS = 110.0, 50.0, 340.0  # see _compressed
# a lead reads as z-scored when its mean is within this of 0 and its SD of 1 after the filtering (PTB-XL's z-scored
# records at 100 Hz reach 0.11 and 0.10; no lead of the 98 CinC and ludb-dev records in mV comes within 0.13 of SD 1)
ZSCORE_TOL = 0.15
QRS_MIN_S = 0.02  # s: a narrower "QRS" is boundaries that failed, not a QRS
PREMATURE = 0.85  # an RR under this fraction of the median RR (and followed by a longer one) is premature
HI_HZ = 40.0  # the measurement band's upper edge (clipped below Nyquist on 100 Hz records)
SV_SMOOTH_S = 0.016  # s, moving average of the spatial velocity before the QRS threshold
QRS_HOLD_S = 0.01  # s the spatial velocity must stay under the threshold for a QRS boundary
P_ON_FRAC = 0.2  # P onset: where the magnitude falls under this fraction of the way from its base to the P peak
P_BASE_S = 0.14  # s before the P peak in which that base is sought: a P wave's onset lies within it (see _p_onset)
QRS_FRAC = 0.08  # the QRS is where the spatial velocity stays above this fraction of its peak (above base)
P_MIN_REL = 0.04  # a P wave must reach this fraction of the QRS magnitude ...
T_END = "tangent"  # T end by the tangent method (else the crossing of T_LEVEL x the T peak)
T_LEVEL = 0.0  # the level, as a fraction of the T peak, the tangent (or the magnitude) must reach
T_BIAS_MS = 0.0  # ms added to every QT
T_DROP = 0.25  # the T wave's descent ends where its magnitude falls under this fraction of the T peak
SPIKE_REL = 12.0  # a pacing spike's second difference, over the lead's 99th percentile
AXIS_METHOD = "amplitude"  # net QRS deflection R - |S| per lead ("area": the net QRS area); see _axis
P_CONSIST = 0.5  # ... and correlate with the median P wave in at least half of the beats at this level
PACE_FS = 500.0  # Hz: under this a pacing spike is no sharper than a QRS (LUDB's paced records resampled to 250
# or 360 Hz: the spike's second difference within the QRS's own; every one was measured as a native wide QRS)
FULL_LEADS = 8  # the independent leads of a 12-lead ECG (I, II, V1-V6)
PAUSE = 1.8  # an RR interval over this multiple of the median is a pause (a dropped beat, a sinus pause)
NEXT_BEAT_S = 0.1  # s before the next R peak the T-wave end is no longer sought (that beat's QRS onset)
# a detected "beat" whose steepest slope (summed over the leads) is under SLOW_WAVE x the QRS complexes' and that
# comes within SLOW_WAVE_S of the beat before it (or opens the strip) is a T wave taken for a beat, not a beat: tall T
# waves (PTB-XL 4355, left ventricular hypertrophy) doubled the rate to "sinus tachycardia, 118 bpm, bigeminy" for a
# sinus rhythm of 58. Over the 1,625 archive cases: 26 have slow waves left out, whose answered rhythm matches PTB-XL's
# on 19 (11 before; 0.4 changed 34 and matched 22 against 16), and none of the 48 CinC or 50 ludb-dev records moves
# by more than 12 bpm (2 CinC records have 1-2 left out; ludb-dev's accuracy is unchanged)
SLOW_WAVE = 0.3
SLOW_WAVE_S = 0.5


@dataclass(frozen=True)
class Measurements:
    """The measurement line of one record (None where a value could not be measured; ``findings`` says why)."""

    heart_rate_bpm: float | None = None
    rr_mean_ms: float | None = None
    rr_sd_ms: float | None = None
    irregularity: float | None = None
    premature_beats: int | None = None
    pr_ms: float | None = None
    qrs_ms: float | None = None
    qt_ms: float | None = None
    qtc_bazett_ms: float | None = None
    qtc_fridericia_ms: float | None = None
    axis_deg: float | None = None
    n_beats: int = 0
    paced: bool = False
    bigeminy: bool = False  # the RR series alternates short-long throughout (not output: the findings say it)
    pauses: int = 0  # RR intervals over PAUSE x the median (not output: the findings say it)
    base_rate_bpm: float | None = None  # with pauses: the rate of the other intervals, which names the rhythm
    duration_s: float = 0.0  # the seconds measured
    p_rel: float | None = None  # the P wave's magnitude over the QRS's (evidence of atrial activity; not output)
    fs: float = 0.0
    findings: tuple[str, ...] = ()
    peaks: np.ndarray | None = field(default=None, repr=False, compare=False)  # R peaks (native samples)

    def to_dict(self) -> dict:
        """The :data:`FIELDS` as JSON values (floats rounded: irregularity to 3 decimals, the rest to 1)."""
        out = {}
        for k in FIELDS:
            v = getattr(self, k)
            if isinstance(v, float):
                v = round(v, 3 if k == "irregularity" else 1)
            out[k] = v
        out["paced"] = self.paced
        out["p_wave_ratio"] = None if self.p_rel is None else round(self.p_rel, 3)
        return out

    @property
    def line(self) -> str:
        """One line, as a cardiograph prints it:
        ``HR 72 bpm  RR 833±20 ms  PR 160  QRS 92  QT/QTc 380/416 ms  axis 45°``."""

        def f(v, fmt="{:.0f}"):
            return "—" if v is None else fmt.format(v)

        parts = [
            f"HR {f(self.heart_rate_bpm)} bpm",
            f"RR {f(self.rr_mean_ms)}±{f(self.rr_sd_ms)} ms",
            f"PR {f(self.pr_ms)} ms",
            f"QRS {f(self.qrs_ms)} ms",
            f"QT/QTcB/QTcF {f(self.qt_ms)}/{f(self.qtc_bazett_ms)}/{f(self.qtc_fridericia_ms)} ms",
            f"axis {f(self.axis_deg)}°" if self.axis_deg is not None else "axis —",
        ]
        if self.premature_beats:
            parts.append(f"{self.premature_beats} premature")
        return "  ".join(parts)


def _runs_below(v: np.ndarray, th: float, start: int, stop: int, step: int, hold: int) -> int | None:
    """Walk from ``start`` towards ``stop`` (exclusive) by ``step``; the first index where ``v`` stays under
    ``th`` for ``hold`` samples, or None."""
    n = 0
    for i in range(start, stop, step):
        if v[i] < th:
            n += 1
            if n >= hold:
                return i - step * (hold - 1)
        else:
            n = 0
    return None


def _cross(v: np.ndarray, th: float, i0: int, step: int) -> float:
    """Where ``v`` crosses ``th`` between sample ``i0 - step`` (at or above) and ``i0`` (below, as
    :func:`_runs_below` found it), by linear interpolation: a boundary to a fraction of a sample, so the intervals
    do not depend on the grid they were measured on."""
    prev = i0 - step
    if not 0 <= prev < v.size:
        return float(i0)
    a, b = float(v[prev]), float(v[i0])
    t = (a - th) / (a - b) if a > b else 1.0
    return prev + step * min(1.0, max(0.0, t))


def _p_onset(mag: np.ndarray, p_lo: int, pp: int, fs: float) -> float | None:
    """The P onset (a fractional sample) on the spatial magnitude ``mag``, walking back from the P peak ``pp``
    towards ``p_lo``: where it falls under ``P_ON_FRAC`` of the way from the base to the peak, and stays there; None
    if it never does. The base is the magnitude's lowest value in the ``P_BASE_S`` before the peak (a P wave lasts
    at most ~120 ms, so its onset lies in that span), not in the whole window: the TP segment further back often
    sits off the PR-segment level the magnitude is measured from (a T-wave tail, atrial repolarisation, wander),
    and a base taken there puts the threshold on that plateau and the onset tens of ms early (ludb-dev record 108,
    frequent atrial extrasystoles: PR 227 against the cardiologists' 184 ms; 192 with the nearer base)."""
    p_amp = float(mag[pp])
    lo = max(p_lo, pp - int(round(P_BASE_S * fs)))
    p_base = float(np.min(mag[lo : pp + 1])) if pp > lo else 0.0
    th_p = p_base + P_ON_FRAC * (p_amp - p_base)
    p_on = _runs_below(mag, th_p, pp, p_lo - 1, -1, max(2, int(round(0.006 * fs))))
    return None if p_on is None else _cross(mag, th_p, p_on, -1)


def _zscored(x: np.ndarray, present: np.ndarray, stats: tuple | None = None) -> bool:
    """True when every present lead has mean ~0 and SD ~1 after filtering: per-lead z-scored data carries no
    amplitudes. ``stats``: (mean, SD) per lead of this very signal ``x`` when already computed (the preprocessed
    record's, on a 100 Hz record whose measurement grid is the preprocessing's), else computed from ``x``."""
    if not present.any() or x.shape[0] == 0:
        return False
    if stats is not None:
        mean, sd = stats[0][present], stats[1][present]
    else:
        cols = x[:, present]
        mean, sd = cols.mean(axis=0), cols.std(axis=0)
    return bool(np.all(np.abs(mean) < ZSCORE_TOL) and np.all(np.abs(sd - 1.0) < ZSCORE_TOL))


def _bigeminy(rl: list[float]) -> int | None:
    """The parity (0 or 1) of the short intervals when an RR series of 4 or more alternates short-long throughout
    (every other interval under ``PREMATURE`` x both its neighbours), else None."""
    n = len(rl)
    if n < 4:
        return None
    for s in (0, 1):
        if all(rl[i] < PREMATURE * rl[j] for i in range(s, n, 2) for j in (i - 1, i + 1) if 0 <= j < n):
            return s
    return None


def _rr_stats(peaks: np.ndarray, fs: float):
    """(RR intervals in s, their median, which are premature, the irregularity index or None, bigeminy), over a few
    dozen intervals at most: the loop runs on a Python list (the same values as the numpy expressions, without their
    per-call cost).

    Bigeminy (the series alternates short-long throughout): the short intervals are the premature ones (with an odd
    count the median could be a short one, and then none was), the median is half the median coupled cycle (a short
    plus the long after it: the mean RR, which the QTc uses), and the irregularity is that of those cycles: a
    steady bigeminy is regular, not atrial fibrillation (which 18 of 92 real records re-timed into bigeminy read)."""
    rr = (peaks[1:] - peaks[:-1]) / fs
    rl = rr.tolist()
    n = len(rl)
    s = _bigeminy(rl)
    if s is not None:
        pairs = [rl[i] + rl[i + 1] for i in range(s, n - 1, 2)]
        cyc = median_of(pairs) if pairs else 0.0
        steps = [abs(pairs[i + 1] - pairs[i]) for i in range(len(pairs) - 1)]
        irr = median_of(steps) / cyc if steps else None
        med = cyc / 2.0 if cyc else median_of(rl)
        return rr, med, np.array([i % 2 == s for i in range(n)], dtype=bool), irr, True
    med = median_of(rl)
    lim = PREMATURE * med
    prem = [rl[i] < lim and (i + 1 == n or rl[i + 1] > rl[i]) for i in range(n)]
    # irregularity over the intervals that neither end in a premature beat nor follow one, nor are pauses: isolated
    # premature beats and dropped beats leave it low (two dropped beats in a sinus rhythm read as atrial fibrillation
    # on 10 of 79 re-timed real records), atrial fibrillation (irregular throughout) keeps it high
    kept = [rl[i] for i in range(n) if not prem[i] and not (i and prem[i - 1]) and not rl[i] > PAUSE * med]
    base = kept if len(kept) >= 3 else rl
    irr = median_of([abs(base[i + 1] - base[i]) for i in range(len(base) - 1)]) / med if len(base) >= 2 else None
    return rr, med, np.array(prem, dtype=bool), irr, False


def _stretched(vals: dict) -> str | None:
    """A warning when every interval is long at once (PR >= ``STRETCH_PR_MS``, QRS >= ``STRETCH_QRS_MS`` and the
    T end out of reach or QTc >= ``STRETCH_QTC_MS``): what a record read at half its sampling rate looks like
    (CinC E07501, 123 bpm at 500 Hz, read as 250 Hz: 62 bpm, PR 256, QRS 140 ms, no T end). A first-degree AV
    block with a bundle-branch block looks the same, so it is a warning, not a refusal. Under ``STRETCH_HR`` bpm (the
    rate halves too) a PR of ``STRETCH_PR_SLOW_MS`` is enough, or none at all (the P wave is lost in the stretched
    beat). Over the 98 CinC and ludb-dev records read at half their rates: 83 warned (68 without the slow-rate
    rules); at their right rates none; 10 of the 1,625 archive cases at 100 Hz (brady, bundle-branch block, long PR:
    a warning to check, not a refusal)."""
    pr, qrs, qt = vals.get("pr_ms"), vals.get("qrs_ms"), vals.get("qt_ms")
    qtc, hr = vals.get("qtc_bazett_ms"), vals.get("heart_rate_bpm")
    if qrs is None or qrs < STRETCH_QRS_MS or (qt is not None and (qtc is None or qtc < STRETCH_QTC_MS)):
        return None
    t = "no T end found" if qt is None else f"QTc {qtc:.0f} ms"
    if pr is None and hr is not None and hr < STRETCH_HR:  # the P wave lost in the stretched beat: the slow rate
        return (
            f"{hr:.0f} bpm with QRS {qrs:.0f} ms, {t} and no P wave found, all at once: check the sampling rate "
            "(--fs): a record read at half its rate looks like this"
        )
    if pr is None or pr < (STRETCH_PR_SLOW_MS if hr is not None and hr < STRETCH_HR else STRETCH_PR_MS):
        return None
    return (
        f"PR {pr:.0f} ms, QRS {qrs:.0f} ms and {t}, all long at once: check the sampling rate (--fs): a record "
        f"read at half its rate looks like this"
    )


def _compressed(vals: dict) -> str | None:
    """The mirror of :func:`_stretched`: a fast rate (>= ``COMPRESS_HR``) with a QRS under ``COMPRESS_QRS_MS`` or a
    QTc under ``COMPRESS_QTC_MS``: what a record read at twice its sampling rate looks like (every interval halved,
    Bazett's QTc by 1/sqrt(2): CinC E07500, 57 bpm at 500 Hz, read as 1000 Hz: 114 bpm, QTc 309 ms). Bazett's QTc
    rises with the rate, so a real tachycardia has a long QTc, not a short one: none of the archive's 48 cases over
    110 bpm, none of the 98 CinC and ludb-dev records at their right rates is warned, 74 of 97 at twice their rates
    are. Still a warning, not a refusal (a short-QT syndrome looks the same)."""
    hr, qrs, qtc = vals.get("heart_rate_bpm"), vals.get("qrs_ms"), vals.get("qtc_bazett_ms")
    if hr is None or hr < COMPRESS_HR:
        return None
    short = [f"QRS {qrs:.0f} ms" for _ in (0,) if qrs is not None and qrs < COMPRESS_QRS_MS]
    short += [f"QTc {qtc:.0f} ms" for _ in (0,) if qtc is not None and qtc < COMPRESS_QTC_MS]
    if not short:
        return None
    return (
        f"{hr:.0f} bpm with {' and '.join(short)}: check the sampling rate (--fs): a record read at twice its rate "
        "looks like this"
    )


def without_pr_in_af(m: Measurements, rhythm: str | None) -> Measurements:
    """``m`` without its PR when the answer's rhythm is atrial fibrillation or flutter: there is no PR interval
    then, and what was measured is fibrillatory or flutter waves that happened to repeat (ludb-dev 88, atrial
    fibrillation: "PR 205 ms" was printed beside it). The finding says why."""
    if rhythm not in ("AFIB", "AFLT") or m.pr_ms is None:
        return m
    from dataclasses import replace

    why = "no PR interval in atrial fibrillation or flutter: the P-like waves found are not P waves"
    return replace(m, pr_ms=None, findings=(*m.findings, why))


def check_plausible(m: Measurements, where: str) -> None:
    """Refuse a record whose measured rhythm is impossible at the stated sampling rate (usually a wrong ``--fs``)."""
    hint = "check the sampling rate (--fs, or the header's rate)"
    if m.heart_rate_bpm is None and m.n_beats < 3 and m.duration_s >= 8.0 and m.fs:
        raise RecordError(
            f"{where}: only {m.n_beats} heartbeat{'s' if m.n_beats != 1 else ''} in "
            f"{m.duration_s:.0f} s at {m.fs:g} Hz (a rate under {MIN_RATE_BPM:.0f} bpm); {hint}"
        )
    if m.heart_rate_bpm is not None and not MIN_RATE_BPM <= m.heart_rate_bpm <= MAX_RATE_BPM:
        raise RecordError(
            f"{where}: measured heart rate {m.heart_rate_bpm:.0f} bpm at {m.fs:g} Hz is outside "
            f"{MIN_RATE_BPM:.0f}-{MAX_RATE_BPM:.0f} bpm; {hint}"
        )
    if m.qrs_ms is not None and m.qrs_ms > 260:
        raise RecordError(f"{where}: measured QRS duration {m.qrs_ms:.0f} ms at {m.fs:g} Hz is impossible; {hint}")


def measure(
    record: Record,
    *,
    duration_s: float = 10.0,
    notch_hz: float | None = 50.0,
    leads_present: np.ndarray | None = None,
    pre=None,
    peaks_hint: tuple | None = None,
) -> Measurements:
    """Measure one record on its own sampling rate (see the module docstring). ``leads_present``: bool (12,)
    in LEADS12 order, the leads to use (default: those the record holds, limb leads derived from I and II).

    The query path passes what it already has: ``pre``, the record preprocessed with ``keep_native`` (its
    ``native`` signal is this module's step 1, from the same transform), and ``peaks_hint`` = (R peaks, their rate,
    their LEADS12 lead), the quality gate's peaks at 100 Hz, refined here to the native rate."""
    fs = float(record.fs)
    n_use = min(record.signal.shape[0], int(round(duration_s * fs)))
    fs_in, step = fs, measure_step(fs)
    stats = None  # the per-lead mean and SD of y, where preprocess computed them over the same samples
    if pre is not None and pre.native is not None and pre.native_fs * step == fs:
        y = np.asarray(pre.native[: -(-n_use // step)], dtype=np.float64)  # read only: copied before any write
        shared = np.shares_memory(y, pre.native)
        present = pre.present.copy()
        derived = pre.derived
        if pre.mean is not None and pre.sd is not None and pre.native_fs == pre.fs and y.shape[0] == pre.n_valid:
            stats = (pre.mean, pre.sd)
    else:
        n_pad = min(record.signal.shape[0], n_use + int(PAD_S * fs))
        sub = Record(record.signal[:n_pad], fs, record.leads, record.name, record.meta)
        x, present, derived = to_12_leads(sub)
        if not np.all(np.isfinite(x)):
            x = np.where(np.isfinite(x), x, 0.0)
        x = x - x[:n_use].mean(axis=0)
        y = filter_resample(x, fs, fs, lo=0.5, hi=HI_HZ, notch_hz=notch_hz)[:n_use:step]
        shared = False
    fs = fs_in / step  # the measurement grid (edge.signal.measure_step)
    n_m = y.shape[0]
    recorded = present
    if leads_present is not None:
        present = present & np.asarray(leads_present, dtype=bool)
    findings: list[str] = []
    if not present.all():  # the leads not measured read as zeros (on a copy where y is the preprocessed record's)
        y = np.array(y) if shared else y
        y[:, ~present] = 0.0
    if not present.any():
        return Measurements(fs=fs_in, duration_s=n_use / fs_in, findings=("no usable lead: nothing measured",))
    pk = peak_lead(present)
    if peaks_hint is not None and peaks_hint[2] == pk and len(peaks_hint[0]):
        peaks = _refine(y[:, pk], np.asarray(peaks_hint[0]), float(peaks_hint[1]), fs)
    else:
        peaks = r_peaks(y[:, pk], int(round(fs))) if fs >= 50 else np.zeros(0, int)
    peaks, slow = _without_slow_waves(y, peaks, fs)
    if slow:
        findings.append(
            f"{slow} slow wave{'s' if slow > 1 else ''} (T waves) taken for beats by the R-peak detector not counted: "
            "the rate is that of the QRS complexes"
        )
    if peaks.size < 3:
        return Measurements(
            fs=fs_in,
            n_beats=int(peaks.size),
            peaks=peaks * step,
            duration_s=n_use / fs_in,
            findings=(*findings, f"fewer than 3 R peaks found on lead {LEADS12[pk]}: nothing measured"),
        )
    rr, med_rr, premature, irr, bigeminy = _rr_stats(peaks, fs)
    paced = _paced(record.signal[:n_use], peaks * step, fs_in)
    rr_mean = float(rr.sum()) / rr.size  # np.mean(rr) and np.std(rr), the same values without their overhead
    dev = rr - rr_mean
    vals: dict[str, Any] = dict(  # Measurements' fields, by name
        heart_rate_bpm=60.0 / rr_mean,
        rr_mean_ms=rr_mean * 1e3,
        rr_sd_ms=float(np.sqrt(float((dev * dev).sum()) / rr.size)) * 1e3,
        irregularity=irr,
        premature_beats=int(premature.sum()),
        n_beats=int(peaks.size),
        bigeminy=bigeminy,
    )
    if bigeminy:
        findings.append(f"bigeminy: every other beat is premature ({int(premature.sum())} of {peaks.size} beats)")
    long = rr > PAUSE * med_rr  # not after a premature beat: that is its compensatory pause
    long[1:] &= ~premature[:-1]
    if long.any() and not long.all():
        i = int(np.argmax(rr))
        vals.update(pauses=int(long.sum()), base_rate_bpm=60.0 * float((~long).sum()) / float(rr[~long].sum()))
        findings.append(
            f"pause of {rr[i]:.1f} s at {peaks[i] / fs:.1f} s"
            + (f" ({int(long.sum())} pauses over {PAUSE:g} x the usual RR)" if long.sum() > 1 else "")
            + ": a dropped beat (AV block?), a sinus pause, or a premature beat not detected; the heart rate "
            "includes it"
        )
    if irr is None:
        findings.append("irregularity needs at least 3 RR intervals")
    if paced:
        findings.append("pacemaker spikes before most QRS complexes: paced rhythm; PR, QRS, QT and axis not measured")
        vals["p_rel"] = _p_before_spikes(record.signal[:n_use], y, peaks * step, fs_in, step, present)
        return Measurements(
            **vals, paced=True, fs=fs_in, duration_s=n_use / fs_in, findings=tuple(findings), peaks=peaks * step
        )
    # beats after a non-premature interval (the first beat: kept when its own interval is normal)
    before = int(round(min(0.40, 0.60 * med_rr) * fs))
    after = int(round(min(0.72, 0.92 * med_rr) * fs))
    ok = np.ones(peaks.size, dtype=bool)
    ok[1:] = ~premature
    ok &= (peaks - before >= 0) & (peaks + after < n_m)
    beats_at = peaks[ok]
    # where the median beat holds the next beat's QRS: where a third or more of its beats are followed by a premature
    # one (bigeminy, trigeminy; an isolated premature beat does not show in a median). The T end is then sought
    # before that QRS (NEXT_BEAT_S ahead of the earliest such R peak): in bigeminy the tangent took the early beat's
    # QRS for the T wave's end (QTc 640 for 393)
    early = (peaks[1:] - peaks[:-1])[ok[:-1] & premature]
    next_r = int(early.min()) if early.size and 3 * early.size >= int(ok.sum()) else n_m
    if beats_at.size < 2:
        findings.append("fewer than 2 complete regular beats: intervals not measured")
        return Measurements(**vals, fs=fs_in, duration_s=n_use / fs_in, findings=tuple(findings), peaks=peaks * step)
    idx = beats_at[:, None] + np.arange(-before, after)[None, :]
    use = np.flatnonzero(present)
    yu = y if use.size == y.shape[1] else y[:, use]
    beats = yu[idx]  # (b, W, L)
    mb = median_of_beats(beats)  # the median beat (W, L)
    r0 = before
    ms = 1000.0 / fs
    # 4. QRS on the spatial velocity
    d = np.diff(mb, axis=0, prepend=mb[:1]) * fs
    sv = np.sqrt(np.sum(d * d, axis=1))
    k = max(1, int(round(SV_SMOOTH_S * fs)))
    if k > 1:
        sv = np.convolve(sv, np.ones(k) / k, mode="same")
    w60 = int(round(0.06 * fs))
    peak_sv = float(np.max(sv[max(0, r0 - w60) : r0 + w60 + 1]))
    base_sv = percentiles(sv, 10.0)[0]
    th = base_sv + QRS_FRAC * (peak_sv - base_sv)
    hold = max(2, int(round(QRS_HOLD_S * fs)))
    on = _runs_below(sv, th, r0, max(-1, r0 - int(0.16 * fs)), -1, hold)
    off = _runs_below(sv, th, r0, min(sv.size, r0 + int(0.22 * fs)), 1, hold)
    qrs_on = qrs_off = None
    on_f = off_f = 0.0
    if on is not None and off is not None:
        on_f, off_f = _cross(sv, th, on, -1), _cross(sv, th, off, 1)
    if on is None or off is None or off_f - on_f < QRS_MIN_S * fs:
        # (both boundaries at the R peak itself, the velocity never above the threshold there, gave a QRS of -4 ms:
        # CinC JS20004 read at twice its rate)
        findings.append("QRS boundaries not found: QRS, QT and axis not measured")
    else:
        qrs_on, qrs_off = on, off
        vals["qrs_ms"] = (off_f - on_f) * ms
    # baseline per lead: the PR segment just before the QRS onset (or the beat's start)
    if qrs_on is not None and qrs_off is not None:  # both found or neither
        a = max(0, qrs_on - int(round(0.03 * fs)))
        iso = median_of_beats(mb[a : qrs_on + 1])
        mag = np.sqrt(np.mean((mb - iso) ** 2, axis=1))
        # 5. T end: tangent at the steepest descent after the T peak
        t_lo = qrs_off + int(round(0.06 * fs))
        if t_lo < mag.size - int(0.05 * fs):
            # and before the next beat (NEXT_BEAT_S ahead of its R peak): in bigeminy every measured beat is followed
            # by an early one, whose QRS the median beat holds and the tangent took for the T wave's end (QTc 640)
            t_hi = min(
                mag.size,
                qrs_on + int(round(min(0.62, 0.80 * med_rr) * fs)),
                r0 + next_r - int(round(NEXT_BEAT_S * fs)),
            )
            tp = t_lo + int(np.argmax(mag[t_lo:t_hi])) if t_hi > t_lo + 2 else t_hi
            amp = float(mag[tp])
            below = np.flatnonzero(mag[tp:t_hi] < T_DROP * amp)
            if below.size and tp < t_hi - 1:
                stop = tp + int(below[0])
                slope = np.diff(mag[tp : stop + 1])
                j = int(np.argmin(slope)) if slope.size else 0
                if T_END == "tangent" and slope.size and slope[j] < 0:
                    t_end = tp + j + (mag[tp + j] - T_LEVEL * amp) / (-slope[j])
                else:  # the crossing of T_LEVEL x the T peak
                    lvl = np.flatnonzero(mag[tp:t_hi] < T_LEVEL * amp)
                    t_end = tp + (int(lvl[0]) if lvl.size else t_hi - tp)
                t_end = min(float(t_end), float(t_hi))
                vals["qt_ms"] = (t_end - on_f) * ms + T_BIAS_MS
            if "qt_ms" not in vals:
                findings.append("T-wave end not found: QT not measured")
        else:
            findings.append("beat window too short for the T wave: QT not measured")
        # 6. P wave before the QRS
        p_lo = max(0, qrs_on - int(round(min(0.32, 0.55 * med_rr) * fs)))
        p_hi = qrs_on - int(round(0.03 * fs))
        qrs_mag = float(np.max(mag[qrs_on : qrs_off + 1])) if qrs_off is not None else float(np.max(mag))
        if p_hi - p_lo > int(0.04 * fs):
            pm = mag[p_lo:p_hi]
            pp = p_lo + int(np.argmax(pm))
            p_amp = float(mag[pp])
            consistent = _p_consistent(beats[:, p_lo:p_hi])
            vals["p_rel"] = p_amp / qrs_mag if qrs_mag > 0 else 0.0
            if p_amp >= P_MIN_REL * qrs_mag and consistent:
                p_on_f = _p_onset(mag, p_lo, pp, fs)
                if p_on_f is not None:
                    vals["pr_ms"] = (on_f - p_on_f) * ms
            if "pr_ms" not in vals:
                findings.append("no consistent P wave before the QRS: PR not measured")
        # 7. axis from the net QRS deflections of I and aVF (physical units only)
        units = record.meta.get("units") if isinstance(record.meta, dict) else None
        physical = (
            isinstance(units, (list, tuple))
            and len(units) > 0
            and all(str(u).lower() in ("mv", "uv", "µv", "v") for u in units)
        )
        zscored = not physical and _zscored(y, present & ~derived, stats)
        flipped = None if zscored else _inverted_limb_lead(mb - iso, use, derived)
        if zscored:
            findings.append("z-scored signal (no physical units): axis not measured")
        elif flipped:
            findings.append(
                f"lead {flipped} runs against what leads I and II give it (Einthoven's and Goldberger's relations): "
                "inverted or mislabelled? check that electrode and the lead wiring; axis not measured"
            )
        elif qrs_off is not None and present[0] and present[5]:
            vals["axis_deg"] = _axis(mb[qrs_on : qrs_off + 1] - iso, use)
            # RA/LL first: its -III in lead I looks like reversed arms too (28 of 98 swapped records)
            if "pr_ms" in vals and _ra_ll_reversed(mb - iso, use, pp, qrs_on, qrs_off):
                findings.append(
                    "lead II shows a negative P wave and a negative QRS, and aVR a positive P wave: the right arm and "
                    "left leg electrodes may be reversed (RA/LL); the axis is then not the heart's"
                )
            elif "pr_ms" in vals and _arms_reversed(mb - iso, use, pp, qrs_on, qrs_off):
                findings.append(
                    "lead I shows a negative P wave and a negative QRS: the arm electrodes may be reversed (LA/RA), "
                    "or the heart is on the right (dextrocardia); the axis is then not the heart's"
                )
        else:
            gone = [LEADS12[k] for k in (0, 1, 5) if recorded[k] and not present[k]]
            findings.append(
                "axis needs leads I and aVF (or I and II)" + (f": {', '.join(gone)} not usable" if gone else "")
            )
    rr_s = med_rr
    if "qt_ms" in vals:
        vals["qtc_bazett_ms"] = vals["qt_ms"] / np.sqrt(rr_s)
        vals["qtc_fridericia_ms"] = vals["qt_ms"] / np.cbrt(rr_s)
    if fs_in < PACE_FS and (vals.get("qrs_ms") or 0.0) >= 120.0:
        findings.append(
            f"wide QRS at {fs_in:g} Hz: pacemaker spikes cannot be told under {PACE_FS:g} Hz; if the patient has a "
            "pacemaker these may be paced beats, measured here as the heart's own"
        )
    n_indep = int(np.count_nonzero(present & ~derived))  # the leads measured that are not computed from others
    if n_indep < FULL_LEADS and "qrs_ms" in vals:
        names = ", ".join(LEADS12[k] for k in np.flatnonzero(present & ~derived))
        findings.append(
            f"PR, QRS and QT from {n_indep} recorded lead{'s' if n_indep != 1 else ''} ({names}): the global intervals "
            "of a 12-lead ECG (earliest onset to latest offset over the leads) can be longer; a bundle-branch block "
            "may read narrow"
        )
    stretched = _stretched(vals) or (_compressed(vals) if n_indep >= 3 else None)
    if stretched:
        findings.append(stretched)
    plain: dict[str, Any] = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in vals.items()}
    return Measurements(
        **plain,
        fs=fs_in,
        duration_s=n_use / fs_in,
        findings=tuple(findings),
        peaks=peaks * step,
    )


_LIMB_ANGLES = np.radians([0.0, 60.0, 120.0, -150.0, -30.0, 90.0])  # I, II, III, aVR, aVL, aVF
# Einthoven/Goldberger: a unipolar augmented lead sees sqrt(3)/2 of the frontal vector's projection on its axis
# (aVF = II - I/2 = sqrt(3)/2 H_y), the bipolar leads all of it; so from I and aVF, H = (I, 2/sqrt(3) aVF)
# (Novosel et al., Croat Med J 1999; BRAVEHEART's ecg_axis)
_LIMB_SCALE = np.array([1.0, 1.0, 1.0, 0.5 * np.sqrt(3.0), 0.5 * np.sqrt(3.0), 0.5 * np.sqrt(3.0)])


def _arms_reversed(b: np.ndarray, use: np.ndarray, pp: int, on: int, off: int) -> bool:
    """The classic sign of reversed arm electrodes (LA/RA) in sinus rhythm: lead I inverted, its P wave and its net
    QRS both negative (normally both positive). ``b`` the baseline-corrected median beats (W, L) of the leads ``use``,
    ``pp`` the P peak, ``on``/``off`` the QRS; the P deflection in I must be at least a quarter of the largest over
    the leads (a flat P says nothing). On the 98 CinC and ludb-dev records and the 1,625 archive cases: none flagged;
    the 98 with their arm electrodes swapped: 54 flagged (56 before the RA/LL check, which names 3 of them first)."""
    cols = use.tolist()
    if 0 not in cols:
        return False
    i = cols.index(0)
    p = b[pp]
    big = float(np.max(np.abs(p)))
    if big <= 0 or p[i] > -0.25 * big:
        return False
    q = b[on : off + 1, i]
    return float(np.maximum(q.max(), 0.0) + np.minimum(q.min(), 0.0)) < 0


def _ra_ll_reversed(b: np.ndarray, use: np.ndarray, pp: int, on: int, off: int) -> bool:
    """Reversed right-arm and left-leg electrodes in sinus rhythm: II becomes -II (its P wave and net QRS negative,
    normally both positive) and aVR takes aVF's place (its P wave positive, normally negative). Einthoven's and
    Goldberger's relations still hold, so :func:`_inverted_limb_lead` cannot see it. Arguments as
    :func:`_arms_reversed`; both P deflections must be at least a quarter of the largest over the leads."""
    cols = use.tolist()
    if 1 not in cols or 3 not in cols:
        return False
    ii, avr = cols.index(1), cols.index(3)
    p = b[pp]
    big = float(np.max(np.abs(p)))
    if big <= 0 or p[ii] > -0.25 * big or p[avr] < 0.25 * big:
        return False
    q = b[on : off + 1, ii]
    return float(np.maximum(q.max(), 0.0) + np.minimum(q.min(), 0.0)) < 0


INVERTED_CORR = -0.3  # a recorded limb lead whose median beat correlates under this with I and II's version of it
# III = II - I, aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2: rows I, II; columns III, aVR, aVL, aVF
_FROM_I_II = np.array([[-1.0, -0.5, 1.0, -0.5], [1.0, -0.5, -0.5, 1.0]])


def _inverted_limb_lead(b: np.ndarray, use: np.ndarray, derived: np.ndarray) -> str | None:
    """The limb lead that runs against what I and II give it (III = II - I, aVR = -(I + II)/2, aVL = I - II/2,
    aVF = II - I/2), when all six are recorded: its baseline-corrected median beat ``b`` (W, L of the leads ``use``)
    correlates under ``INVERTED_CORR`` with that combination. Three or four such leads: I or II itself. None when
    they agree, or when a lead is missing or derived. An inverted aVF moved the axis from 55 to -55 degrees unflagged
    (80 of 98 real records); ludb-dev's recorded leads agree less than the CinC ones (correlation down to 0.23) but
    none runs against them."""
    cols = use.tolist()
    if not all(k in cols for k in range(6)) or derived[:6].any():
        return None
    limb = b[:, [cols.index(k) for k in range(6)]]
    limb = limb - limb.mean(axis=0)
    want = limb[:, :2] @ _FROM_I_II  # (W, 4): III, aVR, aVL, aVF as I and II give them
    got = limb[:, 2:]
    num = np.einsum("wk,wk->k", got, want)
    den = np.sqrt(np.einsum("wk,wk->k", got, got) * np.einsum("wk,wk->k", want, want))
    bad = [LEADS12[2 + k] for k in np.flatnonzero((den > 0) & (num < INVERTED_CORR * den)).tolist()]
    if len(bad) >= 3:
        return "I or II"
    return " and ".join(bad) or None


def _axis(q: np.ndarray, use: np.ndarray) -> float | None:
    """Frontal-plane axis (degrees, -180..180] from the baseline-corrected median QRS (W, L) of the leads ``use``:
    the frontal vector whose projections on the limb leads (Einthoven's triangle, ``_LIMB_SCALE``) match their net
    QRS deflections, from leads I and aVF when both are there (exactly ``atan2(2/sqrt(3) aVF, I)``), else by least
    squares over the limb leads present.

    Net deflection (``AXIS_METHOD``): "amplitude", R - |S| (the largest positive deflection, or 0, plus the largest
    negative one, or 0), what a cardiologist reads off the limb leads and what the classes "left" (net aVF < 0) and
    "right" (net I < 0, aVF > 0) are read from; it depends only on the peaks, not on where the QRS window ends, so
    the global window (earliest onset to latest offset over 12 leads, wider than a limb lead's own QRS) and a broad
    low terminal S (right bundle-branch block) do not swing it. "area": the net QRS area over the window."""
    limb = [j for j, k in enumerate(use.tolist()) if k < 6]
    if 0 in use and 5 in use:  # I and aVF: the two orthogonal leads of the hexaxial system
        limb = [int(np.flatnonzero(use == 0)[0]), int(np.flatnonzero(use == 5)[0])]
    if len(limb) < 2:
        return None
    qq = q[:, limb]
    if AXIS_METHOD == "area":
        net = qq.sum(axis=0)
    else:
        net = np.maximum(qq.max(axis=0), 0.0) + np.minimum(qq.min(axis=0), 0.0)
    k = [int(use[j]) for j in limb]
    if k == [0, 5]:  # I lies on 0 deg, aVF on +90 deg: the solution in closed form (lstsq's, to rounding)
        v = np.array([net[0], net[1] / _LIMB_SCALE[5]])
    else:
        ang = _LIMB_ANGLES[k]
        a = _LIMB_SCALE[k, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        v, *_ = np.linalg.lstsq(a, net, rcond=None)
    if not np.any(v):
        return None
    return float(np.degrees(np.arctan2(v[1], v[0])))


def _without_slow_waves(y: np.ndarray, peaks: np.ndarray, fs: float) -> tuple[np.ndarray, int]:
    """(the R peaks less the T waves among them, how many were left out). A peak's slope is the largest absolute
    first difference, summed over the leads, within 30 ms of it. A peak under ``SLOW_WAVE`` x the median of those
    slopes, within ``SLOW_WAVE_S`` of the last kept peak, is left out (see ``SLOW_WAVE``), and a slow first peak
    with them (the T wave of a beat before the strip: 0.6 s before the first QRS on PTB-XL 5907). T waves
    are at most one a beat, so the median is a QRS complex's or between the two kinds; a minority of larger beats
    (CinC E07503: 8 ectopic complexes of 0.7 mV among 12 of 0.1 mV) does not make the others slow."""
    if peaks.size < 2:
        return peaks, 0
    w = max(1, int(round(0.03 * fs)))
    idx = clip(peaks[:, None] + np.arange(-w, w + 1)[None, :], 0, y.shape[0] - 1)
    seg = y[idx]  # (beats, 2w + 1, leads)
    slope = np.abs(seg[:, 1:] - seg[:, :-1]).sum(axis=2).max(axis=1).tolist()
    lim = SLOW_WAVE * median_of(slope)
    if min(slope) >= lim:
        return peaks, 0
    near = int(round(SLOW_WAVE_S * fs))
    pl = peaks.tolist()
    keep: list[int] = []
    for i, p in enumerate(pl):
        if not (slope[i] < lim and keep and p - pl[keep[-1]] <= near):
            keep.append(i)
    if len(keep) < len(pl) and slope[0] < lim and len(keep) > 1:  # T waves were taken for beats: the first one too
        keep = keep[1:]
    return peaks[keep], int(peaks.size - len(keep))


def _refine(y: np.ndarray, peaks: np.ndarray, fs_hint: float, fs: float) -> np.ndarray:
    """R peaks found at ``fs_hint`` moved to the dominant deflection of ``y`` (rate ``fs``) within 20 ms."""
    if fs_hint == fs:
        return peaks.astype(np.int64)
    hi, lo = float(np.max(y)), float(np.min(y))
    sign = 1.0 if hi >= -lo else -1.0
    w = max(1, int(round(0.02 * fs)))
    c = clip(np.rint(peaks * (fs / fs_hint)).astype(np.int64), 0, y.size - 1)
    idx = clip(c[:, None] + np.arange(-w, w + 1)[None, :], 0, y.size - 1)
    return unique_sorted(idx[np.arange(c.size), np.argmax(sign * y[idx], axis=1)])


def _paced(x: np.ndarray, peaks: np.ndarray, fs: float) -> bool:
    """Pacemaker spikes: in at least half of the beats, three or more leads show, within 120 ms before the R peak,
    a second difference of the unfiltered signal over ``SPIKE_REL`` x its own 99th percentile (a spike is one or two
    samples wide; no QRS slope is that abrupt). Needs >= 250 Hz: a 100 Hz record cannot show a spike."""
    if fs < 250 or x.shape[1] < 3 or peaks.size < 2:
        return False
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x.sum()):  # a gap (NaN) or an infinity somewhere: those samples count as 0
        x = np.where(np.isfinite(x), x, 0.0)
    d2 = np.abs((x[2:] - x[1:-1]) - (x[1:-1] - x[:-2]))  # np.diff(x, 2, axis=0), without its temporaries
    sub = np.ascontiguousarray(d2[::3].T)  # lead rows of every third sample
    k = int(0.99 * (sub.shape[1] - 1))
    p99 = np.partition(sub, k, axis=1)[:, k]
    # per beat, the leads with a spike in [R - 120 ms, R + 20 ms)
    a, b = int(0.12 * fs), int(0.02 * fs)
    p = np.asarray(peaks, dtype=np.int64)
    win = clip(p[:, None] + np.arange(-a, b)[None, :], 0, d2.shape[0] - 1)  # (beats, window); clipped = a slice
    spikes = (d2[win] > SPIKE_REL * np.maximum(p99, 1e-9)).any(axis=1)  # (beats, leads)
    hits = int(np.count_nonzero(np.count_nonzero(spikes, axis=1) >= 3))
    return hits >= 0.5 * peaks.size


def _p_before_spikes(raw: np.ndarray, y: np.ndarray, peaks: np.ndarray, fs: float, step: int, present) -> float | None:
    """In a paced record, the P wave before the pacing spikes: its magnitude over the paced QRS's (the spatial
    magnitude of the median beat aligned on the spikes, baseline just before them), 0.0 when the P-wave window is not
    alike from beat to beat (fibrillatory waves), None when it cannot be told (fewer than 3 whole beats). A P wave
    there is atrial activity the pacemaker follows (P-synchronous pacing: LUDB 72 and 104, 0.30 and 0.11); none is
    atrial fibrillation or standstill under ventricular pacing (LUDB 8, atrial fibrillation: 0.0), which was named
    sinus rhythm from the paced rate. ``raw`` the unfiltered record (native rate ``fs``), ``y`` the filtered one on
    the measurement grid (every ``step``-th sample), ``peaks`` the R peaks (native samples)."""
    x = np.asarray(raw, dtype=np.float64)
    if not np.isfinite(x.sum()):
        x = np.where(np.isfinite(x), x, 0.0)
    d2 = np.abs((x[2:] - x[1:-1]) - (x[1:-1] - x[:-2])).sum(axis=1)  # over leads: where the spike is
    a, b = int(0.12 * fs), int(0.02 * fs)
    spikes = np.array(
        [p - a + int(np.argmax(d2[p - a : p + b])) for p in peaks.tolist() if p - a >= 0 and p + b <= d2.size]
    )
    fm = fs / step
    rr = float(np.median(np.diff(peaks))) / fs if peaks.size > 1 else 1.0
    w0, w1, w2 = int(round(min(0.40, 0.45 * rr) * fm)), int(round(0.03 * fm)), int(round(0.15 * fm))
    s = (spikes // step)[(spikes // step - w0 >= 0) & (spikes // step + w2 < y.shape[0])] if spikes.size else spikes
    use = np.flatnonzero(present)
    if s.size < 3 or use.size == 0:
        return None
    beats = y[:, use][s[:, None] + np.arange(-w0, w2)[None, :]]  # (b, W, L), the spike at w0
    mb = median_of_beats(beats)
    iso = median_of_beats(mb[w0 - w1 - int(round(0.02 * fm)) : w0 - w1])
    mag = np.sqrt(np.mean((mb - iso) ** 2, axis=1))
    qrs = float(mag[w0:].max())
    if qrs <= 0 or not _p_consistent(beats[:, : w0 - w1]):
        return 0.0
    return float(mag[: w0 - w1].max()) / qrs


def _p_consistent(seg: np.ndarray) -> bool:
    """Whether the P window ``seg`` (beats, samples, leads) looks alike in most beats: an averaged P wave is real,
    fibrillatory waves are not. Each beat's window is centred on its own mean, then compared with the median."""
    w = seg - seg.mean(axis=1, keepdims=True)
    ref = median_of_beats(w)
    num = np.einsum("bpl,pl->b", w, ref)
    den = np.sqrt(np.einsum("bpl,bpl->b", w, w) * np.einsum("pl,pl->", ref, ref)) + 1e-12
    return bool(np.count_nonzero(num / den > P_CONSIST) >= 0.5 * num.size)
