"""What a board says about itself: the result of every board's handshake."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """A board's self-description.

    board: ``"native"``, ``"cyton"`` or ``"ascii"``.
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
        return len(self.channel_names)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["channel_names"] = list(self.channel_names)
        return d


def counts_to_mv(counts, gain_uv: float):
    """The one conversion from ADC counts to millivolts used by drivers, simulators and benchmarks."""
    import numpy as np

    return np.asarray(counts, dtype=np.float64) * (float(gain_uv) / 1000.0)
