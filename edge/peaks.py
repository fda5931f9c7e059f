"""R peaks and beats: the one R-peak detector of the query path (imaging, quality gate and measurements use it,
and the archive's waveforms), the lead it runs on, and the median beat around the peaks.

Numpy only; every helper here gives the same values as the numpy/scipy call its docstring names (tested), by a
shorter route.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache

import numpy as np

from .leads import LEADS12

__all__ = [
    "BEFORE",
    "AFTER",
    "BEAT_WINDOW",
    "r_peaks",
    "peak_lead",
    "local_maxima",
    "median_beat",
    "median_of_beats",
    "median_of",
    "percentiles",
    "unique_sorted",
    "clip",
]

BEFORE, AFTER = 35, 65  # samples at 100 Hz around the R peak (paper)
BEAT_WINDOW = np.arange(-BEFORE, AFTER)[None, :]  # the beat's samples relative to its R peak


def local_maxima(e: np.ndarray, distance: int) -> np.ndarray:
    """Indices of local maxima at least ``distance`` samples apart, the higher kept first
    (what ``scipy.signal.find_peaks(e, distance=...)`` returns for plateau-free input)."""
    i = np.flatnonzero((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:])) + 1
    if i.size == 0 or distance <= 1:
        return i
    keep = np.ones(i.size, dtype=bool)
    for j in np.argsort(-e[i], kind="stable"):
        if keep[j]:
            lo, hi = np.searchsorted(i, [i[j] - distance + 1, i[j] + distance])
            keep[lo:hi] = False
            keep[j] = True
    return i[keep]


def r_peaks(x: np.ndarray, fs: int = 100) -> np.ndarray:
    """R-peak sample indices on one lead (Pan-Tompkins style: slope energy, 120 ms integration,
    a threshold at a quarter of the median of the 8 largest energy peaks, 250 ms refractory
    period, each peak refined to the lead's dominant deflection within 100 ms before / 50 ms after)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < fs or not np.any(x):
        return np.zeros(0, dtype=int)
    d = np.empty_like(x)  # np.diff(x, prepend=x[0])
    d[0] = 0.0
    np.subtract(x[1:], x[:-1], out=d[1:])
    win = max(1, int(0.12 * fs))
    c = np.empty(x.size + 1)  # [0, cumsum(d^2)]
    c[0] = 0.0
    np.cumsum(d * d, out=c[1:])
    w_lo, w_hi = _window_bounds(x.size, win)
    e = (c[w_hi] - c[w_lo]) / win
    cand, ref = _energy_peaks(e, int(0.25 * fs), _reference_peaks(x.size / fs))
    if ref <= 0:
        return np.zeros(0, dtype=int)
    half = int(0.05 * fs)
    # polarity: the dominant deflection of the lead
    hi, lo = percentiles(x, 99.5, 0.5)
    sign = 1.0 if hi >= -lo else -1.0
    if cand.size == 0:
        return cand.astype(int)
    offs = np.arange(-2 * half, half + 1)
    idx = clip(cand[:, None] + offs[None, :], 0, x.size - 1)
    return unique_sorted(idx[np.arange(cand.size), np.argmax(sign * x[idx], axis=1)])


def _reference_peaks(seconds: float) -> int:
    """How many of the highest energy peaks set the detection threshold: 8 on a strip of 8 s or more (12-lead
    records are 10 s), fewer on a shorter one, no more than the beats it holds at 40 bpm. With 8 on a 2.5 s strip
    (3-4 beats) the reference took in T and P waves and the quarter threshold counted them as beats: twice the
    rate, and atrial fibrillation "measured" (CinC E07504 cropped to 2.5 s: 174 bpm for 84)."""
    return 8 if seconds >= 8.0 else max(1, int(seconds * 40.0 / 60.0))


def unique_sorted(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` of a 1-D integer array (the same values and dtype), without np.unique's first call
    importing ``numpy.ma`` (a noticeable share of a device's cold start: docs/PERFORMANCE.md)."""
    v = np.sort(np.asarray(a).ravel())
    if v.size < 2:
        return v
    keep = np.empty(v.size, dtype=bool)
    keep[0] = True
    np.not_equal(v[1:], v[:-1], out=keep[1:])
    return v[keep]


def _energy_peaks(e: np.ndarray, distance: int, top: int = 8, frac: float = 0.25) -> tuple[np.ndarray, float]:
    """``local_maxima(e, distance)`` restricted to the maxima at or above ``frac`` x the median height of the
    ``top`` highest kept ones (the reference), and that reference; (sorted indices, ref). The same result as
    filtering the full ``local_maxima`` output, but the suppression loop stops at the first maximum under the
    threshold: once ``top`` peaks are kept the reference is fixed, and lower maxima can no longer change it."""
    i = np.flatnonzero((e[1:-1] > e[:-2]) & (e[1:-1] >= e[2:])) + 1
    if i.size == 0:
        return i, 0.0
    ei = e[i]
    order = np.argsort(-ei, kind="stable").tolist()
    il, el = i.tolist(), ei.tolist()  # the loop runs on Python lists (bisect, not np.searchsorted)
    keep = bytearray(b"\x01") * len(il)
    kept: list[int] = []
    ref = None
    for j in order:
        if ref is not None and el[j] < frac * ref:
            break
        if keep[j]:
            lo, hi = bisect_left(il, il[j] - distance + 1), bisect_left(il, il[j] + distance)
            keep[lo:hi] = bytes(hi - lo)
            keep[j] = 1
            kept.append(j)
            if len(kept) == top:
                ref = median_of([el[k] for k in kept])
    if ref is None:  # fewer than ``top`` peaks: all maxima were visited
        ref = median_of([el[k] for k in kept])
    kept.sort()
    return np.asarray([il[k] for k in kept if el[k] >= frac * ref], dtype=i.dtype), ref


def clip(a, lo, hi):
    """``np.clip(a, lo, hi)`` (the same values, NaN kept), as ``minimum(maximum(a, lo), hi)``: np.clip's wrapper
    costs several times the work on the short arrays of the query path (~10 us a call)."""
    return np.minimum(np.maximum(a, lo), hi)


def median_of(values: list[float]) -> float:
    """``float(np.median(values))`` of a short list of floats (the same value: the middle one, or the mean of the
    two middle ones)."""
    v = sorted(values)
    k = len(v) // 2
    return v[k] if len(v) % 2 else (v[k - 1] + v[k]) / 2.0


@lru_cache(maxsize=16)
def _window_bounds(n: int, win: int) -> tuple[np.ndarray, np.ndarray]:
    """The bounds [lo, hi) of the centred ``win``-sample window at every sample of an n-sample series."""
    lo = np.clip(np.arange(n) - win // 2, 0, n)
    return lo, np.clip(lo + win, 0, n)


def percentiles(x: np.ndarray, *qs: float) -> list[float]:
    """``np.percentile(x, q)`` (method "linear") for a 1-D array, from one partial sort."""
    n = x.size
    pos = [q / 100.0 * (n - 1) for q in qs]
    ks = sorted({k for p in pos for k in (int(np.floor(p)), min(int(np.floor(p)) + 1, n - 1))})
    part = np.partition(x, ks)
    out = []
    for p in pos:
        k = int(np.floor(p))
        a, b, t = part[k], part[min(k + 1, n - 1)], p - k
        out.append(float(a + (b - a) * t) if t < 0.5 else float(b - (b - a) * (1 - t)))
    return out


def peak_lead(present: np.ndarray) -> int:
    """Lead used for R peaks: II (paper), else the first present of I, V5, V6, V4, ... ."""
    for name in ("II", "I", "V5", "V6", "V4", "aVF", "III", "V3", "V2", "V1", "aVL", "aVR"):
        k = LEADS12.index(name)
        if present[k]:
            return k
    return 1


def median_beat(x: np.ndarray, peaks: np.ndarray, n_valid: int | None = None) -> np.ndarray:
    """Sample-wise median of the beats [p-35, p+65) of one lead (T,) or of all leads (T, L) at once.

    Returns (100,) or (100, L); with no complete beat, the window around the largest deflection of
    the first lead (or zeros if the record is shorter than one window)."""
    n = x.shape[0] if n_valid is None else n_valid
    ok = peaks[(peaks >= BEFORE) & (peaks + AFTER <= n)]
    if ok.size == 0:
        if n < BEFORE + AFTER:
            return np.zeros((BEFORE + AFTER,) + x.shape[1:], dtype=np.float32)
        lead0 = x[:n] if x.ndim == 1 else x[:n, 0]
        ok = np.array([int(np.clip(np.argmax(np.abs(lead0)), BEFORE, n - AFTER))])
    return median_of_beats(x[ok[:, None] + BEAT_WINDOW]).astype(np.float32, copy=False)


def median_of_beats(beats: np.ndarray) -> np.ndarray:
    """``np.median(beats, axis=0)`` (the same values) from one sort along the beats: the middle beat, or the mean
    of the two middle ones. The beats are copied with their axis last and sorted there, in contiguous memory (about
    twice as fast as sorting along the first axis); the input is never modified."""
    s = np.array(beats.transpose(tuple(range(1, beats.ndim)) + (0,)), order="C")  # np.moveaxis(beats, 0, -1)
    s.sort(axis=-1)
    k = s.shape[-1] // 2
    return s[..., k] if s.shape[-1] % 2 else (s[..., k - 1] + s[..., k]) / 2
