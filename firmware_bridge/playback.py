"""The recording a simulated board plays back (:mod:`firmware_bridge.simulator`): what the board declares and
the samples it streams, as ADC counts (native, Cyton) or millivolts (ASCII). A Cyton gets 8 channels at 250 Hz,
resampled with numpy alone (the bridge needs no scipy): an integer factor by a windowed-sinc decimator, any
other ratio polyphase.
"""

from __future__ import annotations

import numpy as np

from . import cyton as cy
from . import protocol as pr
from .info import LEADS8, Board, DeviceInfo

__all__ = ["playback", "cyton_channels", "resample_poly", "decimate"]


def playback(
    board: Board,
    x: np.ndarray,
    fs: float,
    names: tuple[str, ...],
    *,
    sample_bits: int = 24,
    samples_per_frame: int = 1,
    gain_uv: float | None = None,
    cyton_gain: int = cy.DEFAULT_GAIN,
    description: str = "ecgret simulator",
) -> tuple[DeviceInfo, np.ndarray]:
    """(what ``board`` declares, the (n, ch) samples it streams) for the recording ``x`` (n, ch) in mV at ``fs``:
    a native board's counts at ``gain_uv`` (default 0.1 uV a count at 24 bits, 1 uV at 16; fs and gain as the
    float32 INFO frame carries them), a Cyton's counts of its 8 channels at 250 Hz, an ASCII board's millivolts
    to 4 decimals."""
    if board == Board.NATIVE:
        spf = int(samples_per_frame)
        gain = gain_uv if gain_uv is not None else (0.1 if sample_bits == 24 else 1.0)
        info = pr.f32_info(
            DeviceInfo(
                board=Board.NATIVE,
                fs=float(fs),
                channel_names=names,
                gain_uv=gain,
                adc_bits=sample_bits,
                protocol_version=pr.PROTOCOL_VERSION,
                sample_bits=sample_bits,
                samples_per_frame=spf,
                description=description,
            )
        )
        lim = (1 << (sample_bits - 1)) - 1
        source = np.clip(np.round(x * 1000.0 / info.gain_uv), -lim - 1, lim).astype(np.int64)
    elif board == Board.CYTON:
        x8, names8 = cyton_channels(x, fs, names)
        info = DeviceInfo(
            board=Board.CYTON,
            fs=cy.FS,
            channel_names=names8,
            gain_uv=cy.scale_uv(cyton_gain),
            adc_bits=24,
            sample_bits=24,
            samples_per_frame=1,
            description=cy.BANNER,
        )
        source = np.clip(np.round(x8 * 1000.0 / info.gain_uv), -cy.RAIL, cy.RAIL).astype(np.int64)
    else:
        info = DeviceInfo(board=Board.ASCII, fs=float(fs), channel_names=names, gain_uv=1000.0, adc_bits=0)
        source = np.round(x, 4)
    return info, source


def cyton_channels(signal_mv: np.ndarray, fs: float, names) -> tuple[np.ndarray, tuple[str, ...]]:
    """The recording as a Cyton would see it: 8 channels at 250 Hz (I, II, V1-V6 from 12 leads)."""
    names = tuple(names)
    x = np.asarray(signal_mv, dtype=np.float64)
    want = LEADS8
    if all(n in names for n in want):
        cols = [names.index(n) for n in want]
        x, names = x[:, cols], want
    else:
        x, names = x[:, :8], names[:8]
        if x.shape[1] < 8:
            pad = 8 - x.shape[1]
            x = np.concatenate([x, np.zeros((x.shape[0], pad))], axis=1)
            names = names + tuple(f"ch{i + 1}" for i in range(len(names), 8))
    q = fs / cy.FS
    if abs(q - round(q)) < 1e-9 and round(q) > 1:
        x = decimate(x, int(round(q)))
    elif abs(q - 1.0) > 1e-9:
        from fractions import Fraction

        fr = Fraction(cy.FS / fs).limit_denominator(1000)
        x = resample_poly(x, fr.numerator, fr.denominator)
    return x, names


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Polyphase resampling by ``up/down`` along axis 0, numpy only: what ``scipy.signal.resample_poly(x, up,
    down, axis=0)`` computes with its defaults (a Kaiser-windowed sinc low-pass, beta 5, 20 x max(up, down) + 1
    taps, cut-off at the lower Nyquist, zeros beyond the ends), written as the direct sum
    ``y[m] = sum_k x[k] h[m*down - k*up + half]`` so that no upsampled copy is made."""
    from math import gcd

    g = gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    x = np.asarray(x, dtype=np.float64)
    if up == down == 1:
        return x.copy()
    rate = max(up, down)
    half = 10 * rate
    n = np.arange(2 * half + 1) - half
    h = np.sinc(n / rate) / rate * np.kaiser(2 * half + 1, 5.0)
    h *= up / h.sum()  # unit gain at DC after the zero insertion
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    t = np.arange(n_out) * down + half  # position of output m in h's frame, before k*up
    k0 = -(-(t - 2 * half) // up)  # first input sample with a tap: t - k*up <= 2*half
    taps = 2 * half // up + 2
    k = k0[:, None] + np.arange(taps)[None, :]
    j = t[:, None] - k * up
    w = np.where((j >= 0) & (j <= 2 * half) & (k >= 0) & (k < n_in), h[np.clip(j, 0, 2 * half)], 0.0)
    return np.einsum("mt,mtc->mc", w, x[np.clip(k, 0, n_in - 1)])


def decimate(x: np.ndarray, q: int) -> np.ndarray:
    """Keep every q-th sample after a Hamming-windowed sinc low-pass at 0.9 x the new Nyquist
    (linear phase, zero delay: the filter is centred)."""
    n = 16 * q + 1
    k = np.arange(n) - (n - 1) / 2
    fc = 0.9 / (2 * q)
    h = 2 * fc * np.sinc(2 * fc * k) * np.hamming(n)
    h /= h.sum()
    y = np.stack([np.convolve(x[:, c], h, mode="same") for c in range(x.shape[1])], axis=1)
    return y[::q]
