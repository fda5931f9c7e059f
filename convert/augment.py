"""Signal augmentation for teacher training, applied to the preprocessed (T, 12) signal before imaging.

Each function takes a ``np.random.Generator`` so that an epoch's augmentations are a pure function of
(seed, epoch, record): training is reproducible and a resumed run sees the same data.

* amplitude scaling: one global factor and a small per-lead factor;
* baseline wander: a slow sinusoid per lead (0.05-0.5 Hz) — the signal was high-passed at 0.5 Hz, so a
  residual wander is what a real recording still shows;
* noise: white Gaussian noise at a random level;
* time shift: the strip moved by a few hundred ms, the vacated end zero-padded (``n_valid`` shrinks);
* lead dropout: with probability ``p_reduced`` the record becomes one of the reduced lead sets a query may
  declare (I, II, I+II+V2, the 6 limb leads); otherwise each lead is dropped with probability
  ``p_lead``. Dropped leads are zeroed and marked absent, exactly how a reduced query is imaged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge.leads import LEAD_SETS, LEADS12

__all__ = ["AugmentConfig", "augment", "lead_mask", "REDUCED_SETS"]

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
    fs: int = 100

    def to_dict(self) -> dict:
        """The fields as a dict (what configs and cache keys record)."""
        return asdict(self)


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
