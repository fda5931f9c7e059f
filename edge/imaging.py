"""ECG -> image: Gramian angular summation field, recurrence plot and Markov transition field.

Mode ``paper`` follows Qiu et al. (ML4H 2023): R peaks on lead II; per lead one beat, a 1 s window
of 35 samples before and 65 after the R peak at 100 Hz; per-lead max-abs normalisation; GASF, RP and
MTF (4 quantile bins) as the three channels; the 12 leads tiled 3 rows x 4 columns (columns I/II/III,
aVR/aVL/aVF, V1-V3, V4-V6); resized. One deliberate change: the paper takes a *random* beat, we
take the *median* beat over all beats (sample-wise median), which is deterministic and robust to
ectopic beats and noise.

Mode ``rhythm`` (ours) keeps the 3x4 beat grid and adds a fourth row of rhythm tiles, because one
beat cannot show atrial fibrillation, tachycardia or bradycardia:
  1. the 10 s QRS envelope of the R-peak lead (max |x| per window) -> GASF/RP/MTF;
  2. the instantaneous RR-interval series over the 10 s on an absolute scale -> GASF/RP/MTF. With
     ``rr_scale = "angle"`` (default) the RR interval sets the GASF *angle*: x = cos(pi/2 * t),
     t = (RR - 0.2 s) / 1.8 s, so a steady rhythm gives a GASF tile of cos(pi * t), linear in angle over
     the whole range. ``"linear"`` (x = 2t - 1, kept so that bundles made with it still load) puts
     60-100 bpm near x = 0, where cos(2 arccos x) is flat: sinus bradycardia and normal rates give
     nearly the same tile (RR 0.9 s -> -0.90, 1.2 s -> -0.98); its effect on retrieval is in
     docs/TRAINING.md ("The RR tile's scale mattered most");
  3. the successive RR differences (irregularity; AF shows a checkerboard) -> GASF/RP/MTF;
  4. the 10 s envelope of V1 (or the next available precordial/limb lead) -> GASF/RP/MTF.
The image becomes square (4T x 4T). Missing leads give zero tiles.

Every channel is mapped to [-1, 1]: GASF as is, RP as 1 - |xi - xj| (1 on the diagonal), MTF as
2p - 1. Fields are computed at full resolution then resized with a fixed linear (area) operator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .leads import LEADS12
from .peaks import AFTER, BEFORE, clip, median_beat, peak_lead, r_peaks

GRID = ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11))  # rows x columns of lead indices in LEADS12
_GRID_ORDER = np.array(GRID).ravel()  # the 12 lead tiles in row-major image order
_GRID_ORDER_RHYTHM = np.concatenate([_GRID_ORDER, np.arange(12, 16)])  # + the rhythm row (series 12..15)
MODES = ("paper", "rhythm")
RR_MIN, RR_MAX = 0.2, 2.0  # seconds, the absolute scale of the RR channel
RR_SCALES = ("angle", "linear")
_ATRIAL_LEADS = tuple(LEADS12.index(nm) for nm in ("V1", "V2", "II", "III", "aVF", "I"))  # the 4th rhythm tile's lead


@dataclass(frozen=True)
class ImagingConfig:
    """How a record becomes an image (the manifest's ``imaging`` section): ``mode`` (:data:`MODES`), pixels per
    lead tile, MTF quantile bins, the sampling rate imaged (Hz) and, in mode ``rhythm``, :data:`RR_SCALES`."""

    mode: str = "rhythm"
    tile: int = 32  # pixels per lead tile (square)
    mtf_bins: int = 4
    fs: int = 100
    rr_scale: str = "angle"  # mode "rhythm": how the RR interval maps to the series (see the module docstring)

    @classmethod
    def from_dict(cls, d) -> ImagingConfig:
        """From a manifest's or a run's ``imaging`` section; one written before ``rr_scale`` existed used
        the ``"linear"`` map."""
        return cls(
            mode=str(d.get("mode", "rhythm")),
            tile=int(d.get("tile", 32)),
            mtf_bins=int(d.get("mtf_bins", 4)),
            fs=int(d.get("fs", 100)),
            rr_scale=str(d.get("rr_scale", "linear")),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(height, width, 3) of the image: 3 tile rows (``paper``) or 4 (``rhythm``) by 4 tile columns."""
        rows = 4 if self.mode == "rhythm" else 3
        return (rows * self.tile, 4 * self.tile, 3)

    def to_dict(self) -> dict:
        """The manifest's ``imaging`` section: every field plus the derived ``shape``."""
        return {**asdict(self), "shape": list(self.shape)}


# ----------------------------------------------------------------------------- fields


def gasf(x: np.ndarray) -> np.ndarray:
    """Gramian angular summation field of series in [-1, 1]: cos(phi_i + phi_j), phi = arccos(x).

    Works on (n,) or batched (b, n) input; returns (n, n) or (b, n, n)."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    s = np.sqrt(np.clip(1.0 - x * x, 0.0, 1.0))
    return x[..., :, None] * x[..., None, :] - s[..., :, None] * s[..., None, :]


def recurrence(x: np.ndarray) -> np.ndarray:
    """Unthresholded recurrence plot |x_i - x_j| (pyts ``RecurrencePlot(threshold=None)``); (n,) or (b, n)."""
    x = np.asarray(x, dtype=np.float32)
    return np.abs(x[..., :, None] - x[..., None, :])


def quantile_bins(x: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Bin indices by each series' own quantiles (pyts ``KBinsDiscretizer(strategy='quantile')``:
    ``np.percentile`` edges with linear interpolation, ``searchsorted(side="left")``); (n,) or (b, n)."""
    x = np.asarray(x, dtype=np.float64)
    xs = np.sort(x, axis=-1)
    lo, hi, frac = _quantile_positions(x.shape[-1], n_bins)
    edges = xs[..., lo] + (xs[..., hi] - xs[..., lo]) * frac  # (..., n_bins - 1)
    out = np.zeros(x.shape, dtype=np.intp)
    for k in range(n_bins - 1):  # count the edges below each value
        out += x > edges[..., k : k + 1]
    return out


@lru_cache(maxsize=16)
def _quantile_positions(n: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The samples below and above each inner quantile of an n-sample series (sorted), and the fraction between."""
    pos = np.linspace(0.0, 1.0, n_bins + 1)[1:-1] * (n - 1)
    lo = np.floor(pos).astype(int)
    return lo, np.minimum(lo + 1, n - 1), pos - lo


def mtf(x: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Markov transition field (Wang & Oates 2015): M[i, j] = P(b(x_{t+1}) = b(x_j) | b(x_t) = b(x_i)).

    (n,) or (b, n) input; returns (n, n) or (b, n, n)."""
    b = quantile_bins(x, n_bins)
    single = b.ndim == 1
    b = np.atleast_2d(b)
    nb = b.shape[0]
    codes = (np.arange(nb)[:, None] * n_bins * n_bins + b[:, :-1] * n_bins + b[:, 1:]).ravel()
    w = np.bincount(codes, minlength=nb * n_bins * n_bins).reshape(nb, n_bins, n_bins).astype(np.float32)
    sums = w.sum(axis=2, keepdims=True)
    w = np.divide(w, sums, out=np.zeros_like(w), where=sums > 0)
    rows = np.take_along_axis(w, b[:, :, None], axis=1)  # (nb, n, n_bins): W[b_i, :]
    out = np.take_along_axis(rows, np.broadcast_to(b[:, None, :], (nb, b.shape[1], b.shape[1])), axis=2)
    return out[0] if single else out


def fields(x: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """The three channels (GASF, 1-RP, 2*MTF-1), each in [-1, 1]: (n,) -> (n, n, 3), (b, n) -> (b, n, n, 3)."""
    return np.stack([gasf(x), 1.0 - recurrence(x), 2.0 * mtf(x, n_bins) - 1.0], axis=-1)


@lru_cache(maxsize=32)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear operator (n_out, n_in) that area-averages a length-n_in axis down (or up) to n_out."""
    m = np.zeros((n_out, n_in), dtype=np.float32)
    edges = np.linspace(0.0, n_in, n_out + 1)
    for i in range(n_out):
        a, b = edges[i], edges[i + 1]
        lo, hi = int(np.floor(a)), int(np.ceil(b))
        for j in range(lo, min(hi, n_in)):
            m[i, j] = min(b, j + 1) - max(a, j)
        m[i] /= m[i].sum()
    return m


@lru_cache(maxsize=32)
def _area_units(n_in: int, n_out: int) -> tuple[np.ndarray, float, int]:
    """(W, scale, q): the area operator as whole numbers, ``_area_matrix == W * scale`` (the block edges are
    multiples of n_in / n_out, so every overlap is a multiple of one unit), and the finest grid 2**-q for the
    recurrence plot's input at which both resize passes over |x_i - x_j| <= 2 are exact in float32."""
    from fractions import Fraction

    unit = Fraction(n_in, n_out).denominator  # overlaps are multiples of 1/unit samples
    m = _area_matrix(n_in, n_out).astype(np.float64)
    per_row = n_in * unit / n_out  # the units in one output cell
    w = np.rint(m * per_row)
    q = int(min(12, np.floor(23 - 2 * np.log2(max(per_row, 1.0)))))
    return w.astype(np.float32), float(1.0 / per_row), q


def resize_field(f: np.ndarray, size: int) -> np.ndarray:
    """Resize (n, n, c) or (b, n, n, c) fields to size x size with a separable area operator."""
    m = _area_matrix(f.shape[-2], size)
    g = np.moveaxis(f, -1, -3)  # (..., c, n, n)
    g = m @ g @ m.T  # (..., c, size, size)
    return np.ascontiguousarray(np.moveaxis(g, -3, -1))


def tile_fields(x: np.ndarray, size: int, n_bins: int = 4) -> np.ndarray:
    """``resize_field(fields(x), size)`` for a batch (b, n), computed without the full fields.

    The area operator M is linear, so M (x x' - s s') M' = (Mx)(Mx)' - (Ms)(Ms)' for the GASF and
    M E W E' M' = (ME) W (ME)' for the MTF (E the one-hot bin matrix): exact, and O(n * size).
    Only the recurrence plot is formed at full resolution. Returns float32 (b, size, size, 3).

    Every pixel is the same bit for bit whatever BLAS or numpy build computes it (a float32 matmul sums in an
    order that depends on both, which moved int8 input pixels between numpy 1.26 and 2.x): the small GASF and
    MTF products run in float64 and are rounded once to float32; the recurrence plot's input is put on a
    2**-12 grid and the area operator written in whole units, so both of its resize passes are exact in
    float32 (|error| <= 2**-12 against the unrounded plot, far below one int8 input step of 2/255)."""
    x = clip(np.atleast_2d(np.asarray(x, dtype=np.float32)), -1.0, 1.0)
    b, n = x.shape
    m = _area_matrix64(n, size)
    x64 = x.astype(np.float64)
    s = np.sqrt(clip(1.0 - x64 * x64, 0.0, 1.0))
    mx, ms = x64 @ m.T, s @ m.T  # (b, size)
    out = np.empty((b, size, size, 3), dtype=np.float32)
    g = mx[:, :, None] * mx[:, None, :]
    g -= ms[:, :, None] * ms[:, None, :]
    out[..., 0] = g
    w_units, unit_scale, q = _area_units(n, size)
    xg = np.rint(x * np.float32(2**q))  # whole numbers of grid steps
    rp = xg[:, :, None] - xg[:, None, :]
    np.abs(rp, out=rp)
    exact = w_units @ rp @ w_units.T  # whole numbers, exact in float32
    out[..., 1] = 1.0 - exact * np.float32(unit_scale * unit_scale * 2.0**-q)
    bins = quantile_bins(x, n_bins)
    codes = (np.arange(b)[:, None] * n_bins * n_bins + bins[:, :-1] * n_bins + bins[:, 1:]).ravel()
    w = np.bincount(codes, minlength=b * n_bins * n_bins).reshape(b, n_bins, n_bins).astype(np.float32)
    sums = w.sum(axis=2, keepdims=True)
    w = np.divide(w, sums, out=np.zeros_like(w), where=sums > 0)  # float32, as mtf() makes it
    onehot = (bins[:, :, None] == np.arange(n_bins)).astype(np.float64)  # (b, n, n_bins)
    me = m @ onehot  # (b, size, n_bins)
    out[..., 2] = 2.0 * (me @ w.astype(np.float64) @ np.swapaxes(me, 1, 2)) - 1.0
    return out


@lru_cache(maxsize=32)
def _area_matrix64(n_in: int, n_out: int) -> np.ndarray:
    """``_area_matrix`` in float64 (the same values), made once."""
    return _area_matrix(n_in, n_out).astype(np.float64)


# ----------------------------------------------------------------------------- beats and rhythm


def maxabs(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale each series to max |x| = 1 along ``axis`` (all-zero series stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    m = np.max(np.abs(x), axis=axis, keepdims=True) if x.size else np.ones(1, np.float32)
    return np.divide(x, m, out=np.zeros_like(x), where=m > 0)


def envelope(x: np.ndarray, n_out: int) -> np.ndarray:
    """Max |x| over n_out equal windows: keeps where the QRS complexes fall in a 10 s strip."""
    return np.maximum.reduceat(np.abs(x), _window_starts(x.shape[0], n_out)).astype(np.float32)


@lru_cache(maxsize=16)
def _window_starts(n: int, n_out: int) -> np.ndarray:
    """The first sample of each of ``n_out`` equal windows over n samples."""
    return np.linspace(0, n, n_out + 1).astype(int)[:-1]


@lru_cache(maxsize=16)
def _sample_times(n_valid: int, n_out: int) -> np.ndarray:
    """``n_out`` evenly spaced sample times over the first ``n_valid`` samples."""
    return np.linspace(0, n_valid - 1, n_out)


def rr_series(peaks: np.ndarray, n_valid: int, n_out: int, fs: int = 100) -> np.ndarray | None:
    """Instantaneous RR interval (s) as a step function of time over the strip, sampled at n_out points."""
    if peaks.size < 3:
        return None
    rr = np.diff(peaks) / fs
    idx = clip(np.searchsorted(peaks[1:], _sample_times(n_valid, n_out), side="left"), 0, rr.size - 1)
    return rr[idx].astype(np.float32)


# ----------------------------------------------------------------------------- the image


def ecg_image(
    signal: np.ndarray,
    present: np.ndarray | None = None,
    config: ImagingConfig = ImagingConfig(),
    n_valid: int | None = None,
    peaks: np.ndarray | None = None,
) -> np.ndarray:
    """Image a preprocessed ECG (T, 12) at 100 Hz into float32 (H, W, 3) in [-1, 1]. ``peaks``: the R peaks
    of lead ``peak_lead(present)`` when already known (the quality gate finds them), else found here."""
    if config.mode not in MODES:
        raise ValueError(f"unknown imaging mode {config.mode!r}; choose one of {', '.join(MODES)}")
    if config.rr_scale not in RR_SCALES:
        raise ValueError(f"unknown imaging rr_scale {config.rr_scale!r}; choose one of {', '.join(RR_SCALES)}")
    x = np.asarray(signal, dtype=np.float32)
    if present is None:
        present = np.any(x != 0, axis=0)
    n = x.shape[0] if n_valid is None else int(n_valid)
    t = config.tile
    h, w, _ = config.shape
    pk = peak_lead(present)
    if peaks is None:
        peaks = r_peaks(x[:n, pk], config.fs)
    series = maxabs(median_beat(x, peaks, n).T)  # (12, 100): the median beats
    if config.mode == "rhythm":  # + 4 rhythm series of 100 points
        rhythm, use = _rhythm_series(x, present, peaks, pk, n, config)
        series = np.concatenate([series, rhythm])
    tiles = tile_fields(series, t, config.mtf_bins)  # one batched call: (12 or 16, t, t, 3)
    order, shown = _GRID_ORDER, np.asarray(present, dtype=bool)[_GRID_ORDER]
    if config.mode == "rhythm":
        order, shown = _GRID_ORDER_RHYTHM, np.concatenate([shown, use])
    tiles = tiles[order]  # tiles in row-major grid order
    tiles[~shown] = 0.0  # absent leads and rhythm series: blank
    rows = h // t
    img = tiles.reshape(rows, 4, t, t, 3).transpose(0, 2, 1, 3, 4).reshape(h, w, 3)
    return np.ascontiguousarray(img)


def _rhythm_series(x, present, peaks, pk, n, config) -> tuple[np.ndarray, np.ndarray]:
    """The series behind the fourth row of mode ``rhythm`` (strip envelope, RR series, RR differences,
    atrial-lead envelope), each 100 points in [-1, 1], and which of them exist."""
    n_strip = BEFORE + AFTER  # as long as a beat, so all tiles are made in one batch
    series = np.zeros((4, n_strip), dtype=np.float32)
    use = np.zeros(4, dtype=bool)
    series[0], use[0] = 2 * maxabs(envelope(x[:n, pk], n_strip)) - 1, present[pk]
    rr = rr_series(peaks, n, n_strip, config.fs)
    if rr is not None:
        t = clip((rr - RR_MIN) / (RR_MAX - RR_MIN), 0, 1)
        series[1] = np.cos(np.float32(np.pi / 2) * t) if config.rr_scale == "angle" else 2 * t - 1
        drr = np.empty_like(rr)  # np.diff(rr, prepend=rr[0])
        drr[0] = 0.0
        np.subtract(rr[1:], rr[:-1], out=drr[1:])
        series[2] = clip(drr / 0.5, -1, 1)  # +-0.5 s change fills the scale
        use[1:3] = True
    atrial = next((k for k in _ATRIAL_LEADS if present[k] and k != pk), None)
    if atrial is not None:
        series[3], use[3] = 2 * maxabs(envelope(x[:n, atrial], n_strip)) - 1, True
    return series, use
