"""The boards the bridge knows (:class:`Board`) and what a board says about itself: the result of every board's
handshake (:class:`DeviceInfo`), checked against the bounds below before the host believes it."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from enum import StrEnum


class Board(StrEnum):
    """A board protocol: ``native`` (ecgret framed, ``PROTOCOL.md``), ``cyton`` (OpenBCI), ``ascii`` (one line of
    numbers per sample, e.g. Arduino + AD8232). Members are strings (``Board.NATIVE == "native"``)."""

    NATIVE = "native"
    CYTON = "cyton"
    ASCII = "ascii"


BOARDS: tuple[str, ...] = tuple(b.value for b in Board)  # the names, in the order a user is offered them
# The 8 independent leads of a 12-lead ECG: what an 8-channel board (native, Cyton) records and streams.
LEADS8: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

# What a board may declare before the host believes it. A board that lies (fs = 3e7 in a header, 1e8 in an
# INFO frame, 0, NaN) would otherwise size the host's buffers or stall it; these bounds are checked on every
# handshake and on every recording's size before any buffer is allocated.
MIN_FS = 10.0  # Hz; ECG needs far more, but the bridge only refuses the absurd
MAX_FS = 32000.0  # Hz; the fastest ECG/EEG front ends (ADS1298: 32 kSPS)
MAX_CHANNELS = 32  # the native protocol's lead-off mask is 32 bits
MAX_NAME_LEN = 32  # characters of one channel name
MAX_GAIN_UV = 1.0e6  # uV per count (1 V a count); what an ASCII board prints may be coarse
MAX_ADC_BITS = 32
MAX_SECONDS = 3600.0  # one acquisition
MAX_CELLS = 1 << 24  # samples x channels of one acquisition (16.8 M: ~150 MB of buffers)
MAX_DESCRIPTION = 1024  # characters kept of a board's banner
_NAME_OK = re.compile(r"[A-Za-z0-9_+\-.:/()](?:[ A-Za-z0-9_+\-.:/()]*[A-Za-z0-9_+\-.:/()])?")


@dataclass(frozen=True)
class DeviceInfo:
    """A board's self-description.

    board: a :class:`Board` (``"native"``, ``"cyton"`` or ``"ascii"``).
    fs: sampling rate in Hz.
    channel_names: one name per channel, in stream order.
    gain_uv: microvolts per ADC count (counts x gain_uv / 1000 = mV).
    adc_bits: resolution of the converter.
    protocol_version: native protocol version (None for other boards).
    sample_bits: bits per sample on the wire (24 or 16 for native, 24 for Cyton, None for ASCII).
    samples_per_frame: samples per channel in one data frame.
    description: free text from the board (firmware banner, board id).
    """

    board: str
    fs: float
    channel_names: tuple[str, ...]
    gain_uv: float
    adc_bits: int
    protocol_version: int | None = None
    sample_bits: int | None = None
    samples_per_frame: int = 1
    description: str = ""

    @property
    def n_channels(self) -> int:
        """Channels the board streams (one per name)."""
        return len(self.channel_names)

    def as_dict(self) -> dict:
        """The fields as a JSON-able dict (``channel_names`` a list)."""
        d = asdict(self)
        d["channel_names"] = list(self.channel_names)
        return d


def counters(*names: str) -> dict[str, int]:
    """A parser's ``stats``: each counter name at 0 (bytes seen, frames, bytes skipped, resyncs, ...)."""
    return dict.fromkeys(names, 0)


def check_fs(fs, what: str = "sampling rate") -> float:
    """``fs`` as a float if it is a finite rate within [MIN_FS, MAX_FS] Hz; ValueError naming it otherwise."""
    try:
        f = float(fs)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {fs!r} is not a number") from None
    if not math.isfinite(f) or not MIN_FS <= f <= MAX_FS:
        raise ValueError(f"{what} {f:g} Hz is outside {MIN_FS:g}..{MAX_FS:g} Hz")
    return f


def check_channel_names(names) -> tuple[str, ...]:
    """Channel names a board declared: 1..MAX_CHANNELS of them, each 1..MAX_NAME_LEN characters of
    ``A-Z a-z 0-9 _ + - . : / ( )``, no two alike; ValueError naming the first bad one otherwise."""
    names = tuple(names)
    if not 1 <= len(names) <= MAX_CHANNELS:
        raise ValueError(f"{len(names)} channels declared; 1..{MAX_CHANNELS} are possible")
    for i, n in enumerate(names):
        if not isinstance(n, str) or len(n) > MAX_NAME_LEN or not _NAME_OK.fullmatch(n):
            raise ValueError(
                f"channel {i + 1} name {str(n)[:40]!r} is not 1..{MAX_NAME_LEN} characters of "
                f"letters, digits, inner spaces and _+-.:/()"
            )
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"channel name {dup!r} is declared twice")
    return names


def check_info(info: DeviceInfo) -> DeviceInfo:
    """``info`` if everything it declares is within the bounds above; ValueError naming the field otherwise."""
    check_fs(info.fs)
    check_channel_names(info.channel_names)
    g = info.gain_uv
    if not isinstance(g, (int, float)) or not math.isfinite(g) or not 0.0 < g <= MAX_GAIN_UV:
        raise ValueError(f"gain {g!r} uV/count is outside (0, {MAX_GAIN_UV:g}]")
    if not 0 <= int(info.adc_bits) <= MAX_ADC_BITS:
        raise ValueError(f"adc_bits {info.adc_bits} is outside 0..{MAX_ADC_BITS}")
    if info.sample_bits is not None and info.sample_bits not in (16, 24):
        raise ValueError(f"sample size {info.sample_bits} bits; 16 or 24 are possible")
    if not 1 <= int(info.samples_per_frame) <= 255:
        raise ValueError(f"samples_per_frame {info.samples_per_frame} is outside 1..255")
    return info


def check_recording(seconds, fs: float, n_channels: int) -> int:
    """The number of samples of a ``seconds``-long recording at ``fs`` Hz, if its buffers stay within
    MAX_SECONDS and MAX_CELLS; ValueError naming the limit otherwise."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ValueError(f"duration {seconds!r} is not a number") from None
    if not math.isfinite(s) or not 0.0 < s <= MAX_SECONDS:
        raise ValueError(f"duration {s:g} s is outside (0, {MAX_SECONDS:g}] s")
    f = check_fs(fs)
    n = int(round(s * f))
    if n < 1:
        raise ValueError(f"{s:g} s at {f:g} Hz is not one sample")
    if n * max(1, int(n_channels)) > MAX_CELLS:
        raise ValueError(
            f"{s:g} s x {f:g} Hz x {n_channels} channels = {n * n_channels:,} samples, over the "
            f"limit of {MAX_CELLS:,} for one acquisition (record for less time)"
        )
    return n


def counts_to_mv(counts, gain_uv: float):
    """The one conversion from ADC counts to millivolts used by drivers, simulators and benchmarks."""
    import numpy as np

    return np.asarray(counts, dtype=np.float64) * (float(gain_uv) / 1000.0)
