"""Quality gate: per-lead findings (flat, clipped, lead-off, noisy) and record-level refusal.

Run on the record as read (native rate, physical units), before preprocessing. Units differ between
sources (mV from WFDB and boards, z-scores from the archive), so thresholds are relative to the
record itself where they can be, and absolute only where units are known (``record.meta['units']``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .errors import QualityError
from .leads import LEADS12
from .peaks import AFTER, BEAT_WINDOW, BEFORE, median_of, median_of_beats, peak_lead, r_peaks
from .record import Record
from .signal import PreprocessedECG, butter_bandpass_gain2, butter_highpass_gain2, check_record, preprocess

SHORT_S = 5.0  # a strip under this many seconds without 3 complete beats is called short, not noisy
# a lead that repeats one value for this long has lost its signal (a board's lead-off, a held or zeroed value), even
# when the rest of it is an ECG: the beats in that span are gone, and the R peaks around it make a "pause" (a 2 s
# dropout put every one of the 98 CinC and ludb-dev records 5-20 bpm low, most with no finding). Real records repeat
# a value for at most 0.58 s (ludb-dev 128: a 1 uV grid with half its samples repeated; PTB-XL at 100 Hz: 0.09 s).
LOST_S = 1.0
INFORMATIONAL = ("derived", "missing", "cropped")  # findings that say what the record is, not what is wrong with it


@dataclass(frozen=True)
class Finding:
    """One quality finding on one lead (or the whole record): its kind and a short detail for people."""

    lead: str  # lead name, or "record"
    kind: str  # flat | clipped | lead_off | noisy | gaps | lost | short, or informational: derived | missing | cropped
    detail: str

    def __str__(self) -> str:
        return f"{self.lead}: {self.kind} ({self.detail})"


@dataclass(frozen=True)
class QualityReport:
    """The quality gate's verdict on one record: the findings, which of the 12 leads are usable, and the R peaks
    found on the way (reused by imaging and measurement)."""

    findings: tuple[Finding, ...]
    usable: np.ndarray = field(repr=False)  # bool (12,) in LEADS12 order
    peak_lead: int = field(default=-1, repr=False)  # LEADS12 index the R peaks were found on
    peaks: np.ndarray | None = field(default=None, repr=False)  # those R peaks (samples of the preprocessed signal)

    @property
    def usable_leads(self) -> tuple[str, ...]:
        """The names of the usable leads, in LEADS12 order."""
        return tuple(name for name, u in zip(LEADS12, self.usable) if u)

    @property
    def problems(self) -> tuple[Finding, ...]:
        """Findings that make a lead unusable or doubtful (not the informational ones)."""
        return tuple(f for f in self.findings if f.kind not in INFORMATIONAL)

    def to_dict(self) -> dict:
        """``{"usable_leads": [names], "findings": [{"lead", "kind", "detail"}]}``."""
        return {
            "usable_leads": list(self.usable_leads),
            "findings": [{"lead": f.lead, "kind": f.kind, "detail": f.detail} for f in self.findings],
        }


def assess(
    record: Record,
    pre: PreprocessedECG | None = None,
    lead_off: np.ndarray | None = None,
    *,
    expected: tuple[str, ...] | None = None,
    flat_rel: float = 0.02,
    flat_abs_mv: float = 0.01,
    clip_frac: float = 0.02,
    noise_ratio: float = 0.5,
    gap_frac: float = 0.05,
    min_beat_corr: float = 0.3,
) -> QualityReport:
    """Assess each lead of ``record`` (``pre`` is its preprocessed form, computed if not given);
    ``lead_off`` is an optional bool (n_samples, n_leads) mask from a board.

    - flat: peak-to-peak under ``flat_abs_mv`` (mV records) or under ``flat_rel`` of the median
      peak-to-peak of the leads, or more than 90 % of successive samples equal;
    - clipped: more than ``clip_frac`` of samples sit at the lead's own extreme values (rail);
    - lead_off: the board flagged the electrode off for more than ``gap_frac`` of the record;
    - gaps: non-finite samples (dropped frames) for more than ``gap_frac`` of the record;
    - lost: the lead repeats one value for ``LOST_S`` or longer somewhere (signal lost mid-record);
    - noisy: power above 45 Hz exceeds ``noise_ratio`` of the power in 0.5-40 Hz (records sampled
      at 200 Hz or more), or the beats do not resemble their median beat (median correlation under
      ``min_beat_corr``; this catches pure noise at any rate and in any unit).
    Leads absent from the file are reported as ``missing`` (when ``expected`` names them), leads
    computed from I and II as ``derived``. Raises QualityError if no lead is usable.
    """
    check_record(record)
    where = record.name or "record"
    if pre is None:
        pre = preprocess(record)
    derived = pre.derived
    raw = np.asarray(record.signal, dtype=np.float64)
    n = raw.shape[0]
    mv = str(record.meta.get("units", "")).lower() in ("mv", "millivolt", "millivolts")
    finite = np.isfinite(raw)
    if finite.all():
        filled = raw
    else:  # gaps: fill with the lead's median so the per-lead statistics below stay defined
        fill = np.array([np.median(raw[finite[:, j], j]) if finite[:, j].any() else 0.0 for j in range(raw.shape[1])])
        filled = np.where(finite, raw, fill[None, :])
    xt = np.ascontiguousarray(filled.T)  # (leads, n): per-lead reductions run on contiguous rows
    mx, mn = xt.max(axis=1), xt.min(axis=1)
    ptp = mx - mn
    # the same value as np.median, without its first call importing numpy.ma (cold start: docs/PERFORMANCE.md)
    med_ptp = float(median_of(ptp[ptp > 0].tolist())) if np.any(ptp > 0) else 0.0
    repeats = xt[:, 1:] == xt[:, :-1]  # (leads, n - 1): a sample equal to the one before
    same = np.count_nonzero(repeats, axis=1) / max(n - 1, 1)
    lost = _longest_repeat(xt, repeats, int(np.ceil(LOST_S * float(record.fs))))
    tol = (1e-6 * np.maximum(ptp, 1e-12))[:, None]
    at_rail = (
        np.maximum(np.count_nonzero(xt >= mx[:, None] - tol, axis=1), np.count_nonzero(xt <= mn[:, None] + tol, axis=1))
        / n
    )
    fs = float(record.fs)
    ratio = np.zeros(raw.shape[1])
    if fs >= 200:  # power above 45 Hz against power in 0.5-40 Hz, from one spectrum
        z = np.fft.rfft(xt, axis=1)
        power = z.real**2 + z.imag**2
        g_in, g_hf = _noise_gains(n, fs)
        ratio = (power @ g_hf) / np.maximum(power @ g_in, 1e-20)
    findings: list[Finding] = []
    bad: dict[str, str] = {}

    def flag(lead: str, kind: str, detail: str) -> None:
        findings.append(Finding(lead, kind, detail))
        bad.setdefault(lead, kind)

    n_missing = np.zeros(raw.shape[1], dtype=np.int64) if filled is raw else n - finite.sum(axis=0)
    for j, lead in enumerate(record.leads):
        if lead not in LEADS12:
            continue
        n_bad = int(n_missing[j])
        if n_bad > gap_frac * n:
            flag(lead, "gaps", f"{n_bad / n:.0%} of samples missing")
        if lead_off is not None and lead_off[:, j].mean() > gap_frac:
            flag(lead, "lead_off", f"electrode off for {lead_off[:, j].mean():.0%} of the record")
        elif (
            ptp[j] == 0
            or same[j] > 0.9
            or (mv and ptp[j] < flat_abs_mv)
            or (med_ptp > 0 and ptp[j] < flat_rel * med_ptp)
        ):
            flag(lead, "flat", f"peak-to-peak {ptp[j]:.3g}{' mV' if mv else ''}")
        elif at_rail[j] > clip_frac:
            flag(lead, "clipped", f"{at_rail[j]:.0%} of samples at the rail")
        elif (run := lost[j]) is not None:
            start, length = run
            flag(lead, "lost", f"one value repeated for {length / fs:.1f} s from {start / fs:.1f} s: signal lost")
        elif ratio[j] > noise_ratio:
            flag(lead, "noisy", f"high-frequency power {ratio[j]:.1f}x the ECG band")
    # beat consistency on the preprocessed signal
    pk = peak_lead(pre.present)
    all_peaks = r_peaks(pre.signal[: pre.n_valid, pk])
    peaks = all_peaks[(all_peaks >= BEFORE) & (all_peaks + AFTER <= pre.n_valid)]
    if peaks.size >= 3:
        beats = pre.signal[peaks[:, None] + BEAT_WINDOW]  # (b, 100, 12)
        beats = beats - beats.mean(axis=1, keepdims=True)
        tmpl = median_of_beats(beats)  # np.median(beats, axis=0)
        num = np.einsum("btl,tl->bl", beats, tmpl)
        den = np.sqrt(np.einsum("btl,btl->bl", beats, beats) * np.einsum("tl,tl->l", tmpl, tmpl)[None]) + 1e-12
        corr = median_of_beats(num / den)
        for k in np.flatnonzero(pre.present & ~derived):
            if LEADS12[k] not in bad and corr[k] < min_beat_corr:
                flag(LEADS12[k], "noisy", f"beats inconsistent (median correlation {corr[k]:.2f})")
    elif pre.present.any():
        secs = pre.n_valid / float(pre.fs)
        if secs < SHORT_S:  # a short strip, not a noisy one: say so
            findings.append(Finding("record", "short", f"{secs:.1f} s: too short for 3 complete heartbeats"))
        else:
            findings.append(Finding("record", "noisy", "no regular heartbeats detected"))
        for k in np.flatnonzero(pre.present & ~derived):
            bad.setdefault(LEADS12[k], "short" if secs < SHORT_S else "noisy")
    for k in np.flatnonzero(derived):
        if "I" in bad or "II" in bad:
            bad[LEADS12[k]] = "derived from a bad lead"
        else:
            findings.append(Finding(LEADS12[k], "derived", "computed from I and II"))
    if expected:
        have = set(record.leads)
        derivable = {"III", "aVR", "aVL", "aVF"} if {"I", "II"} <= have else set()
        for lead in expected:
            if lead in LEADS12 and lead not in have and lead not in derivable:
                findings.append(Finding(lead, "missing", "not in the recording"))
    cropped = _cropped(record, pre)
    if cropped:
        findings.append(Finding("record", "cropped", cropped))
    usable = pre.present.copy()
    for lead in bad:
        usable[LEADS12.index(lead)] = False
    if not usable.any():
        reasons = "; ".join(str(f) for f in findings if f.kind not in INFORMATIONAL) or "no ECG lead"
        raise QualityError(f"{where}: no usable lead ({reasons})")
    return QualityReport(tuple(findings), usable, int(pk), all_peaks)


def _cropped(record: Record, pre: PreprocessedECG) -> str | None:
    """What part of a longer recording the answer covers (the first seconds only: a 10 s sinus strip followed by
    50 s of atrial fibrillation was answered "sinus rhythm, no problems found" without a word about the rest)."""
    fs = float(record.fs)
    used = pre.n_valid / float(pre.fs)
    cut = record.meta.get("truncated") if isinstance(record.meta, dict) else None
    total = cut.get("file_samples") if isinstance(cut, dict) else record.signal.shape[0]
    if total is None:
        return f"only the first {used:.1f} s analysed: the file holds more, which was not read"
    if not isinstance(total, (int, float)) or total / fs <= used + 0.5:
        return None
    return f"only the first {used:.1f} s of {total / fs:.1f} s analysed: the rest is not part of this answer"


def _longest_repeat(xt: np.ndarray, repeats: np.ndarray, min_len: int) -> list[tuple[int, int] | None]:
    """Per row of ``xt`` (leads, n) with ``repeats`` (leads, n - 1; True where a sample equals the one before), the
    (first sample, samples) of its longest run of one repeated value when that run is at least ``min_len`` samples
    long, else None. Only rows that can hold one are searched: a run of 2k samples or more holds two samples k apart
    (k = min_len // 2) that are equal, which few rows of a real recording have."""
    out: list[tuple[int, int] | None] = [None] * repeats.shape[0]
    k = max(1, min_len // 2)
    strided = xt[:, ::k]
    maybe = (strided[:, 1:] == strided[:, :-1]).any(axis=1)
    for j in np.flatnonzero(maybe).tolist():
        r = np.empty(repeats.shape[1] + 2, dtype=np.int8)
        r[0] = r[-1] = 0
        r[1:-1] = repeats[j]
        d = np.diff(r)
        starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
        if not starts.size:  # equal samples k apart, but no two neighbours equal
            continue
        k = int(np.argmax(ends - starts))
        if ends[k] - starts[k] + 1 >= min_len:
            out[j] = (int(starts[k]), int(ends[k] - starts[k] + 1))
    return out


MAINS_HZ = (50.0, 60.0)  # mains frequencies; their lines and harmonics are not counted as noise
MAINS_HALF_WIDTH_HZ = 1.0


@lru_cache(maxsize=16)
def _noise_gains(n: int, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """|H|^2 of the ECG band (0.5-40 Hz) and of the noise band (above 45 Hz, less the mains lines) on an n-point
    rfft grid. A mains line is no sign of a noisy lead: the notch and the 40 Hz band-pass take it out (60 Hz at
    0.3 mV made 74 of the 98 real records "no usable lead"; 50 Hz at 0.1 mV, which the notch removes, marked leads
    noisy on 42); muscle noise is broadband and is still counted."""
    f = np.fft.rfftfreq(n, 1.0 / fs)
    hf = butter_highpass_gain2(f, fs, min(45.0, 0.45 * fs))
    for f0 in MAINS_HZ:
        k = np.rint(f / f0)  # the nearest harmonic
        hf = np.where((k >= 1) & (np.abs(f - k * f0) <= MAINS_HALF_WIDTH_HZ), 0.0, hf)
    return butter_bandpass_gain2(f, fs), hf
