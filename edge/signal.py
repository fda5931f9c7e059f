"""One signal path for training and the device: filter, notch, resample, derive leads, z-score.

Offline records are filtered zero-phase, as PTB-XL's own processing was: a Butterworth band-pass of order 4,
0.5-40 Hz, applied forward and backward (Wagner et al. 2020; Strodthoff et al. 2021), so the effective
magnitude response is |H(f)|^2 and no phase shift moves the R peaks. We apply exactly that response in the
frequency domain: the record is padded by odd reflection over 3 s at both ends (as ``sosfiltfilt`` pads),
transformed once (``rfft``), multiplied by |H_bandpass(f)|^2 |H_notch(f)|^2, and transformed back onto the
target rate's grid (spectral truncation: the band-pass already removed everything above 40 Hz, so resampling
to 100 Hz aliases nothing). One FFT pair replaces notch, band-pass and polyphase resampling, and the device
needs numpy only (scipy.signal alone costs ~75 MB of resident memory and most of the start-up time).

Filter design is kept apart from filtering: the magnitude responses are closed forms of the same designs
scipy makes (``butter(4, [lo, hi], 'bandpass', fs=fs)`` through the bilinear transform with pre-warping, and
``iirnotch(f0, Q, fs=fs)``); the tests check them and the whole path against scipy's ``sosfiltfilt`` and
``resample_poly``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np

from .errors import RecordError
from .leads import LEADS12, derive_limb_leads
from .record import Record

TARGET_FS = 100
DURATION_S = 10.0
MIN_DURATION_S = 2.0
MIN_FS = 100.0
PAD_S = 3.0
MEASURE_FS = 250.0  # records at >= 2x this rate keep their "native" copy on every k-th sample (k = fs // 250)


@dataclass(frozen=True)
class PreprocessedECG:
    """A record brought into the archive's space.

    signal: float32 (T, 12) in LEADS12 order, z-scored per lead, zeros where a lead is missing.
    present: bool (12,), leads that carry signal (measured or derived).
    derived: bool (12,), leads computed from I and II.
    n_valid: samples of real signal before zero padding (records shorter than ``duration_s``).
    native: with ``keep_native``, the filtered signal (not z-scored; zeros where a lead is missing) on the
        measurement grid ``native_fs`` (the record's own rate, or every k-th sample of it at >= 500 Hz:
        :func:`measure_step`), first ``duration_s`` seconds: what :mod:`edge.measure` measures.
    mean, sd: float64 (12,), each lead's mean and SD after filtering, before z-scoring (over ``n_valid``): what
        the z-scoring took out, and how :mod:`edge.measure` tells a record that was z-scored already.
    """

    signal: np.ndarray
    present: np.ndarray
    derived: np.ndarray
    n_valid: int
    fs: int = TARGET_FS
    name: str = ""
    native: np.ndarray | None = field(default=None, repr=False, compare=False)  # filtered (n, 12) at native_fs
    native_fs: float = 0.0
    mean: np.ndarray | None = field(default=None, repr=False, compare=False)
    sd: np.ndarray | None = field(default=None, repr=False, compare=False)


def butter_bandpass_gain2(f: np.ndarray, fs: float, lo: float = 0.5, hi: float = 40.0, order: int = 4) -> np.ndarray:
    """|H(f)|^2 of the digital Butterworth band-pass (bilinear transform with pre-warped edges).

    With W = tan(pi f / fs) and pre-warped edges W1, W2: |H|^2 = 1 / (1 + ((W^2 - W1 W2) / ((W2 - W1) W))^(2N)).
    ``hi`` is clipped below Nyquist."""
    hi = min(hi, 0.95 * fs / 2.0)
    w1, w2 = np.tan(np.pi * lo / fs), np.tan(np.pi * hi / fs)
    w = np.tan(np.pi * np.clip(np.asarray(f, dtype=np.float64), 0.0, fs / 2.0 * (1 - 1e-12)) / fs)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = (w * w - w1 * w2) / ((w2 - w1) * w)
        g = 1.0 / (1.0 + x ** (2 * order))
    return np.where(w > 0, g, 0.0)


def butter_highpass_gain2(f: np.ndarray, fs: float, fc: float, order: int = 4) -> np.ndarray:
    """|H(f)|^2 of the digital Butterworth high-pass (bilinear, pre-warped): 1 / (1 + (Wc / W)^(2N))."""
    wc = np.tan(np.pi * fc / fs)
    w = np.tan(np.pi * np.clip(np.asarray(f, dtype=np.float64), 0.0, fs / 2.0 * (1 - 1e-12)) / fs)
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(w > 0, 1.0 / (1.0 + (wc / np.maximum(w, 1e-300)) ** (2 * order)), 0.0)


def notch_gain2(f: np.ndarray, fs: float, f0: float = 50.0, q: float = 30.0) -> np.ndarray:
    """|H(f)|^2 of scipy's ``iirnotch(f0, q, fs)`` (second-order IIR notch); all ones when f0 >= Nyquist."""
    f = np.asarray(f, dtype=np.float64)
    if f0 >= fs / 2.0:
        return np.ones_like(f)
    w0 = 2 * np.pi * f0 / fs
    gain = 1.0 / (1.0 + np.tan(w0 / q / 2.0))
    b = gain * np.array([1.0, -2.0 * np.cos(w0), 1.0])
    a = np.array([1.0, -2.0 * gain * np.cos(w0), 2.0 * gain - 1.0])
    z = np.exp(-1j * 2 * np.pi * f / fs)
    h = (b[0] + b[1] * z + b[2] * z * z) / (a[0] + a[1] * z + a[2] * z * z)
    return np.abs(h) ** 2


@lru_cache(maxsize=64)
def _response(
    n_fft: int, fs: float, lo: float, hi: float, order: int, notch_hz: float | None, n_keep: int
) -> np.ndarray:
    f = np.fft.rfftfreq(n_fft, 1.0 / fs)[:n_keep]
    g = butter_bandpass_gain2(f, fs, lo, hi, order)
    if notch_hz:
        g = g * notch_gain2(f, fs, notch_hz)
    return g


@lru_cache(maxsize=64)
def _pad_lengths(n: int, fs: float, target_fs: float) -> tuple[int, int, Fraction]:
    """Reflection pad and FFT length such that both map to whole samples on the target grid."""
    ratio = Fraction(float(target_fs) / float(fs)).limit_denominator(1000)
    q = ratio.denominator
    pad = min(n - 1, int(PAD_S * fs))
    pad -= pad % q
    total = n + 2 * pad
    total += (-total) % q
    return pad, total, ratio


def measure_step(fs: float) -> int:
    """The decimation of the measurement grid: 1 below 2 x ``MEASURE_FS``, else ``fs // MEASURE_FS``. The filtered
    signal holds nothing above the target's Nyquist frequency, so every k-th sample loses nothing."""
    return int(fs // MEASURE_FS) if fs >= 2 * MEASURE_FS else 1


def filter_resample(
    x: np.ndarray,
    fs: float,
    target_fs: float = TARGET_FS,
    *,
    lo: float = 0.5,
    hi: float = 40.0,
    order: int = 4,
    notch_hz: float | None = 50.0,
    native: bool = False,
    native_step: int = 1,
):
    """Zero-phase band-pass (and mains notch), then resampling to ``target_fs``, along axis 0, in one FFT pair.

    Equivalent to ``sosfiltfilt(butter(...))`` (odd padding over 3 s) followed by ``resample_poly``; the
    two differ only in how the padded ends are treated. Returns float64 (round(n * target/fs), ...).
    ``native=True`` also returns the same filtered signal on the input's own rate (the measurements need it),
    from the same forward transform: ``(y, y_native)``. Its band ends at the target's Nyquist frequency (50 Hz
    for 100 Hz), which the 40 Hz band-pass has nearly emptied already. ``native_step`` k > 1: that signal on every
    k-th sample (the inverse transform made k times shorter; the same values as ``y_native[::k]`` to rounding)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    pad, total, ratio = _pad_lengths(n, float(fs), float(target_fs))
    # the transforms run along contiguous rows (leads x time), which pocketfft does faster than along axis 0
    # and with the same values; results come back as C-ordered (time, ...) arrays
    xt = x.reshape(n, -1).T
    xp = np.empty((xt.shape[0], total))
    if pad > 0:  # odd reflection about the end samples, as scipy's padtype='odd'
        np.subtract(2 * xt[:, :1], xt[:, pad:0:-1], out=xp[:, :pad])
        np.subtract(2 * xt[:, -1:], xt[:, -2 : -pad - 2 : -1], out=xp[:, pad + n : 2 * pad + n])
    xp[:, pad : pad + n] = xt
    xp[:, 2 * pad + n :] = xp[:, 2 * pad + n - 1 : 2 * pad + n]  # up to the FFT length: the last value repeated
    n_out_total = int(total * ratio)
    keep = min(total // 2 + 1, n_out_total // 2 + 1)
    spec = np.fft.rfft(xp, axis=1)[:, :keep]
    spec *= _response(total, float(fs), lo, hi, order, notch_hz, keep)
    y = np.fft.irfft(spec, n=n_out_total, axis=1) * (n_out_total / total)
    start = int(pad * ratio)
    out = _as_time_major(y[:, start : start + int(round(n * ratio))], x.shape)
    if not native:
        return out
    if n_out_total == total:
        return out, out
    k = int(native_step)
    if k > 1 and total % k == 0 and pad % k == 0 and total // k >= 2 * (keep - 1):
        yn = np.fft.irfft(spec, n=total // k, axis=1) * (1.0 / k)
        return out, _as_time_major(yn[:, pad // k : pad // k + -(-n // k)], x.shape)
    yn = np.fft.irfft(spec, n=total, axis=1)
    return out, _as_time_major(yn[:, pad : pad + n] if k <= 1 else yn[:, pad : pad + n : k], x.shape)


def _as_time_major(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """(leads, time) rows back to a C-ordered (time, ...) array of the input's trailing shape."""
    return np.ascontiguousarray(rows.T).reshape((rows.shape[1],) + tuple(shape[1:]))


def zscore(x: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Per-lead (column) z-score. Returns (z, ok) where ``ok`` marks leads with non-zero spread."""
    return _zscore(x, eps)[:2]


def _zscore(x: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(z, ok, mean, sd) per lead (column): ``x.mean(axis=0)`` and ``x.std(axis=0)`` written out (the same
    values), so the deviations from the mean are formed once for the SD and the z-scores."""
    n = x.shape[0]
    mu = np.add.reduce(x, axis=0) / n
    dev = x - mu
    sd = np.sqrt(np.add.reduce(dev * dev, axis=0) / n)
    ok = sd > eps
    if ok.all():
        z = dev / sd
    else:
        z = np.zeros_like(x)
        z[:, ok] = (x[:, ok] - mu[ok]) / sd[ok]
    return z, ok, mu, sd


def to_12_leads(record: Record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place a record's leads in LEADS12 order; derive III, aVR, aVL, aVF from I and II when absent.

    Returns (signal (n, 12) float64 with zeros for missing leads, present (12,), derived (12,)).
    """
    n = record.signal.shape[0]
    present = np.zeros(12, dtype=bool)
    derived = np.zeros(12, dtype=bool)
    src: list[int] = []
    dst: list[int] = []  # the record's column of each LEADS12 lead it holds (a repeated name: its last column)
    for j, lead in enumerate(record.leads):
        if lead in LEADS12:
            k = LEADS12.index(lead)
            if present[k]:
                src[dst.index(k)] = j
            else:
                src.append(j)
                dst.append(k)
            present[k] = True
    if record.signal.shape[1] == 12 and src == dst == list(range(12)):  # the 12 leads in LEADS12 order, no other
        out = np.array(record.signal, dtype=np.float64, order="C")
    else:
        out = np.zeros((n, 12), dtype=np.float64)
        if dst:
            out[:, dst] = np.asarray(record.signal, dtype=np.float64)[:, src]
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
        hint = (
            ""
            if record.meta.get("format") != "acquisition"
            else (
                "; name the board's channels with --channels (e.g. --channels I,II,V1,V2,V3,V4,V5,V6 for a Cyton wired "
                "that way)"
            )
        )
        raise RecordError(f"{where}: no known ECG lead among {', '.join(record.leads)}{hint}")


def preprocess(
    record: Record,
    *,
    target_fs: int = TARGET_FS,
    duration_s: float = DURATION_S,
    notch_hz: float | None = 50.0,
    lo: float = 0.5,
    hi: float = 40.0,
    keep_native: bool = False,
) -> PreprocessedECG:
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
    # a per-lead constant changes nothing the band-pass lets through (its gain at 0 Hz is 0); taking one out
    # first keeps a large offset (raw ADC counts) from costing precision and makes a flat lead exactly zero
    x -= x[0].copy()  # in place: x is this function's own copy (to_12_leads, _fill_gaps)
    native = None
    step = measure_step(fs)
    if keep_native:
        x, native = filter_resample(x, fs, target_fs, lo=lo, hi=hi, notch_hz=notch_hz, native=True, native_step=step)
        native = native[: -(-int(round(duration_s * fs)) // step)]
    else:
        x = filter_resample(x, fs, target_fs, lo=lo, hi=hi, notch_hz=notch_hz)
    n_out = int(round(duration_s * target_fs))
    n_valid = min(x.shape[0], n_out)
    z, ok, mu, sd = _zscore(x[:n_valid])
    present = present & ok
    out = np.zeros((n_out, 12), dtype=np.float32)
    out[:n_valid] = z
    out[:, ~present] = 0.0
    return PreprocessedECG(
        out,
        present,
        derived & present,
        n_valid,
        int(target_fs),
        record.name,
        native,
        fs / step if keep_native else 0.0,
        mu,
        sd,
    )


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
