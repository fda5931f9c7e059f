"""Signal augmentation for teacher training, applied to the preprocessed (T, 12) signal before imaging.

Each function takes a ``np.random.Generator`` so that an epoch's augmentations are a pure function of
(seed, epoch, record): training is reproducible and a resumed run sees the same data.

* amplitude scaling: one global factor and a small per-lead factor;
* baseline wander: a slow sinusoid per lead (0.05-0.5 Hz) — the signal was high-passed at 0.5 Hz, so a
  residual wander is what a real recording still shows;
* noise: white Gaussian noise at a random level;
* time shift: the strip moved by a few hundred ms, the vacated end zero-padded (``n_valid`` shrinks);
* another cardiograph (``device``, the probability; off in the default recipe): the strip is brought to
  250, 500 or 1000 Hz (band-limited interpolation), given what other machines and electrodes add there, per lead
  (a first-order high-pass of 0.05-0.67 Hz and a low-pass of 40, 100 or 150 Hz as cardiographs' filters set,
  mains at 50 or 60 Hz, EMG noise of 20-150 Hz, electrode-motion bursts of 0.5-3 Hz), then passed through the
  device's own preprocessing (:func:`edge.signal.preprocess`: notch, 0.5-40 Hz band-pass, 100 Hz, z-score), so
  the encoder sees what survives that path from such a recording;
* lead dropout: with probability ``p_reduced`` the record becomes one of the reduced lead sets a query may
  declare (I, II, I+II+V2, the 6 limb leads); otherwise each lead is dropped with probability
  ``p_lead``. Dropped leads are zeroed and marked absent, exactly how a reduced query is imaged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge.leads import LEAD_SETS, LEADS12
from edge.record import Record
from edge.signal import preprocess

__all__ = ["AugmentConfig", "augment", "cardiograph", "lead_mask", "REDUCED_SETS"]

REDUCED_SETS: tuple[str, ...] = ("I", "II", "3", "limb6")


def lead_mask(lead_set: str | tuple[str, ...]) -> np.ndarray:
    """bool (12,) mask of a named lead set (``'12'``, ``'limb6'``, ``'3'``, ``'I'``, ``'II'``) or a tuple."""
    names = LEAD_SETS[lead_set] if isinstance(lead_set, str) else tuple(lead_set)
    return np.array([n in names for n in LEADS12], dtype=bool)


@dataclass(frozen=True)
class AugmentConfig:
    """``[augment]`` of the teacher config: the strength of each augmentation (amplitude factors; wander and
    noise in z units; the shift in seconds) and the lead-dropout probabilities. ``enabled`` false: no change."""

    enabled: bool = True
    scale: float = 0.2  # global amplitude factor in [1-scale, 1+scale]
    lead_scale: float = 0.1  # per-lead factor in [1-lead_scale, 1+lead_scale]
    wander: float = 0.3  # baseline wander amplitude (z units) up to this
    noise: float = 0.1  # Gaussian noise std (z units) up to this
    shift_s: float = 0.5  # time shift up to this many seconds
    p_reduced: float = 0.3  # probability of a reduced lead set (I, II, 3, limb6)
    p_lead: float = 0.05  # otherwise, per-lead dropout probability
    device: float = 0.0  # probability of the simulated other cardiograph (module docstring)
    mains: float = 0.3  # its mains amplitude (z units) up to this
    emg: float = 0.2  # its EMG noise std (z units) up to this
    motion: float = 0.5  # its electrode-motion burst amplitude (z units) up to this
    fs: int = 100

    def to_dict(self) -> dict:
        """The fields as a dict (what configs and cache keys record)."""
        return asdict(self)


def cardiograph(x: np.ndarray, n: int, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()):
    """The first ``n`` samples of ``x`` (T, 12), at ``cfg.fs``, as another cardiograph would have recorded them,
    after the device's preprocessing (module docstring). Returns (float32 (T, 12), n_valid)."""
    T = x.shape[0]
    fs2 = float(rng.choice([250, 500, 1000]))
    m = int(round(n * fs2 / cfg.fs))
    f = np.fft.rfftfreq(m, 1.0 / fs2)
    spec = np.zeros((f.size, 12), np.complex128)
    src = np.fft.rfft(np.asarray(x[:n], np.float64), axis=0)
    spec[: src.shape[0]] = src * (m / n)  # band-limited interpolation to fs2
    # the cardiograph's own filters, per lead: first-order high-pass and low-pass
    hp = rng.uniform(0.05, 0.67, 12)
    lp = rng.choice([40.0, 100.0, 150.0], 12)
    fp = np.maximum(f, 1e-9)[:, None]
    spec *= (1j * fp / hp) / (1 + 1j * fp / hp) / (1 + 1j * fp / lp)
    # EMG: white noise band-limited to 20-150 Hz
    band = ((f >= 20.0) & (f <= 150.0))[:, None]
    noise = np.fft.rfft(rng.normal(0.0, 1.0, (m, 12)), axis=0) * band
    emg = np.fft.irfft(noise, n=m, axis=0)
    emg *= rng.uniform(0, cfg.emg, 12) / np.maximum(emg.std(axis=0), 1e-12)
    y = np.fft.irfft(spec, n=m, axis=0) + emg
    t = np.arange(m) / fs2
    # mains at 50 or 60 Hz, its amplitude per lead
    y += (
        rng.uniform(0, cfg.mains)
        * rng.uniform(0.2, 1.0, 12)
        * np.sin(2 * np.pi * float(rng.choice([50.0, 60.0])) * t + rng.uniform(0, 2 * np.pi))[:, None]
    )
    # electrode motion: up to two slow bursts on a few leads
    for _ in range(int(rng.integers(0, 3))):
        c, w = rng.uniform(0, t[-1]), rng.uniform(0.2, 0.6)
        burst = np.exp(-0.5 * ((t - c) / w) ** 2) * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t)
        leads = rng.random(12) < 0.3
        y[:, leads] += rng.uniform(0, cfg.motion) * burst[:, None]
    pre = preprocess(Record(y, fs2, LEADS12, "augment"), duration_s=T / cfg.fs)
    out = np.zeros_like(x, dtype=np.float32)
    out[: pre.n_valid] = pre.signal[: pre.n_valid]
    dead = ~np.any(np.asarray(x[:n]) != 0, axis=0)  # absent leads stay absent
    out[:, dead] = 0.0
    return out, int(pre.n_valid)


def augment(
    x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig(), n_valid: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Augment one preprocessed signal (T, 12) -> (signal float32 (T, 12), present bool (12,), n_valid)."""
    x = np.array(x, dtype=np.float32, copy=True)
    T = x.shape[0]
    n = T if n_valid is None else int(n_valid)
    present = np.ones(12, dtype=bool)
    if not cfg.enabled:
        return x, present, n
    if cfg.device > 0 and rng.random() < cfg.device:
        x, n = cardiograph(x, n, rng, cfg)
    # amplitude
    x *= (1.0 + rng.uniform(-cfg.scale, cfg.scale)) * (1.0 + rng.uniform(-cfg.lead_scale, cfg.lead_scale, 12))
    t = np.arange(T, dtype=np.float32) / cfg.fs
    # baseline wander
    if cfg.wander > 0:
        f = rng.uniform(0.05, 0.5, 12)
        ph = rng.uniform(0, 2 * np.pi, 12)
        a = rng.uniform(0, cfg.wander, 12)
        x += (a * np.sin(2 * np.pi * f * t[:, None] + ph)).astype(np.float32)
    # noise
    if cfg.noise > 0:
        x += rng.normal(0.0, rng.uniform(0, cfg.noise), x.shape).astype(np.float32)
    # time shift (vacated samples zero, valid length reduced)
    if cfg.shift_s > 0:
        s = int(rng.integers(-int(cfg.shift_s * cfg.fs), int(cfg.shift_s * cfg.fs) + 1))
        if s > 0:  # later start: drop the first s samples
            x[: n - s] = x[s:n]
            x[n - s :] = 0.0
            n -= s
        elif s < 0:  # drop the last |s| samples
            n += s
            x[n:] = 0.0
    x[n:] = 0.0
    # lead dropout
    if rng.random() < cfg.p_reduced:
        present = lead_mask(REDUCED_SETS[int(rng.integers(len(REDUCED_SETS)))])
    elif cfg.p_lead > 0:
        present = rng.random(12) >= cfg.p_lead
        if not present.any():
            present[1] = True
    x[:, ~present] = 0.0
    return x, present, n
