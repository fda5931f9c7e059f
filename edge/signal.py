"""One signal path for training and the device: filter, notch, resample, derive leads, z-score.

Filter design is kept apart from filtering (designs are cached per sampling rate). Offline records
are filtered zero-phase (``sosfiltfilt``: forward-backward, so the effective order doubles and no
phase shift moves the R peaks), as PTB-XL's own processing did: Butterworth order 4, 0.5-40 Hz
(Wagner et al. 2020; Strodthoff et al. 2021 "Deep learning for ECG analysis: benchmarks ...").
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal as sps

from .errors import RecordError
from .leads import LEADS12, derive_limb_leads
from .record import Record

TARGET_FS = 100
DURATION_S = 10.0
MIN_DURATION_S = 2.0
MIN_FS = 100.0


@dataclass(frozen=True)
class PreprocessedECG:
    """A record brought into the archive's space.

    signal: float32 (T, 12) in LEADS12 order, z-scored per lead, zeros where a lead is missing.
    present: bool (12,), leads that carry signal (measured or derived).
    derived: bool (12,), leads computed from I and II.
    n_valid: samples of real signal before zero padding (records shorter than ``duration_s``).
    """

    signal: np.ndarray
    present: np.ndarray
    derived: np.ndarray
    n_valid: int
    fs: int = TARGET_FS
    name: str = ""


@lru_cache(maxsize=64)
def design_bandpass(fs: float, lo: float = 0.5, hi: float = 40.0, order: int = 4) -> np.ndarray:
    """Butterworth band-pass as second-order sections. ``hi`` is clipped below Nyquist."""
    nyq = fs / 2.0
    hi = min(hi, 0.95 * nyq)
    return sps.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")


@lru_cache(maxsize=64)
def design_notch(fs: float, f0: float, q: float = 30.0) -> np.ndarray:
    """IIR notch (scipy ``iirnotch``) at the mains frequency, as second-order sections."""
    b, a = sps.iirnotch(f0, q, fs=fs)
    return sps.tf2sos(b, a)


def bandpass(x: np.ndarray, fs: float, lo: float = 0.5, hi: float = 40.0, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass along axis 0.

    The edges are padded by odd reflection over 3 s (scipy's default pads only a few samples,
    and the 0.5 Hz high-pass then rings at both ends of a 10 s record)."""
    padlen = min(x.shape[0] - 1, int(3 * fs))
    return sps.sosfiltfilt(design_bandpass(float(fs), lo, hi, order), x, axis=0, padlen=padlen)


def notch(x: np.ndarray, fs: float, f0: float = 50.0, q: float = 30.0) -> np.ndarray:
    """Zero-phase mains notch along axis 0; a no-op when ``f0`` is at or above Nyquist."""
    if f0 >= fs / 2.0:
        return x
    return sps.sosfiltfilt(design_notch(float(fs), float(f0), q), x, axis=0)


def resample(x: np.ndarray, fs: float, target_fs: float = TARGET_FS) -> np.ndarray:
    """Polyphase resampling (``resample_poly``) along axis 0 to ``target_fs``."""
    if fs == target_fs:
        return x
    frac = Fraction(float(target_fs) / float(fs)).limit_denominator(1000)
    return sps.resample_poly(x, frac.numerator, frac.denominator, axis=0)


def zscore(x: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead (column) z-score. Returns (z, ok) where ``ok`` marks leads with non-zero spread."""
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    ok = sd > eps
    z = np.zeros_like(x)
    z[:, ok] = (x[:, ok] - mu[ok]) / sd[ok]
    return z, ok


def to_12_leads(record: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place a record's leads in LEADS12 order; derive III, aVR, aVL, aVF from I and II when absent.

    Returns (signal (n, 12) float64 with zeros for missing leads, present (12,), derived (12,)).
    """
    n = record.signal.shape[0]
    out = np.zeros((n, 12), dtype=np.float64)
    present = np.zeros(12, dtype=bool)
    derived = np.zeros(12, dtype=bool)
    for j, lead in enumerate(record.leads):
        if lead in LEADS12:
            k = LEADS12.index(lead)
            out[:, k] = record.signal[:, j]
            present[k] = True
    if present[0] and present[1]:
        for lead, values in derive_limb_leads(out[:, 0], out[:, 1]).items():
            k = LEADS12.index(lead)
            if not present[k]:
                out[:, k] = values
                present[k] = derived[k] = True
    return out, present, derived


def check_record(record: Record) -> None:
    """Refuse records the pipeline cannot use, with a clear reason."""
    x = record.signal
    where = record.name or "record"
    if x.ndim != 2 or x.shape[1] != len(record.leads):
        raise RecordError(f"{where}: signal shape {x.shape} does not match {len(record.leads)} lead names")
    if record.fs < MIN_FS:
        raise RecordError(f"{where}: sampling rate {record.fs:g} Hz is under {MIN_FS:g} Hz")
    if record.duration_s < MIN_DURATION_S:
        raise RecordError(f"{where}: {record.duration_s:.2f} s of signal is under the {MIN_DURATION_S:g} s minimum")
    if not any(lead in LEADS12 for lead in record.leads):
        raise RecordError(f"{where}: no known ECG lead among {', '.join(record.leads)}")


def preprocess(record: Record, *, target_fs: int = TARGET_FS, duration_s: float = DURATION_S,
               notch_hz: float | None = 50.0, lo: float = 0.5, hi: float = 40.0) -> PreprocessedECG:
    """Bring a record into the archive's space: 12 leads, 0.5-40 Hz, 100 Hz, 10 s, z-scored per lead.

    Order: derive limb leads, notch (mains, when below Nyquist), band-pass (Butterworth order 4,
    zero-phase), polyphase resample, crop to the first ``duration_s`` (or zero-pad, recording
    ``n_valid``), z-score per lead over the valid part. Non-finite samples (acquisition gaps) are
    linearly interpolated before filtering; the quality gate reports them.
    """
    check_record(record)
    x, present, derived = to_12_leads(record)
    x = _fill_gaps(x)
    fs = float(record.fs)
    x = x - np.median(x, axis=0)
    if notch_hz:
        x = notch(x, fs, notch_hz)
    x = bandpass(x, fs, lo, hi)
    x = resample(x, fs, target_fs)
    n_out = int(round(duration_s * target_fs))
    n_valid = min(x.shape[0], n_out)
    z, ok = zscore(x[:n_valid])
    present = present & ok
    out = np.zeros((n_out, 12), dtype=np.float32)
    out[:n_valid] = z
    out[:, ~present] = 0.0
    return PreprocessedECG(out, present, derived & present, n_valid, int(target_fs), record.name)


def _fill_gaps(x: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    x = x.copy()
    idx = np.arange(x.shape[0])
    for k in np.flatnonzero(bad.any(axis=0)):
        good = ~bad[:, k]
        x[:, k] = np.interp(idx, idx[good], x[good, k]) if good.any() else 0.0
    return x
