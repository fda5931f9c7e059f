"""The in-memory ECG record every reader returns and every later stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Record:
    """A multi-lead ECG.

    signal: float64 array, shape (n_samples, n_leads), in physical units (mV for WFDB and
        board data; whatever the file holds for CSV/NPY, since per-lead z-scoring follows).
    fs: sampling rate in Hz.
    leads: canonical lead names (see :mod:`edge.leads`), one per column.
    name: a human-readable identifier (usually the file path or record name).
    meta: free-form metadata read from the file (age, sex, Dx codes, units, ...).
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        """Length of the signal in seconds (samples / fs)."""
        return self.signal.shape[0] / float(self.fs)
