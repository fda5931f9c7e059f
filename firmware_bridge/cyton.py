"""OpenBCI Cyton packet format (as published by OpenBCI): encoder and I/O-free parser.

Packet (33 bytes)::

    A0 | sample number u8 | 8 x int24 big-endian two's complement | 6 aux bytes | C0..CF

Scale: ``4.5 V / gain / (2**23 - 1)`` per count (ADS1299, default gain 24). 250 Hz.
Handshake: ``v`` (soft reset) is answered by a text banner ending in ``$$$``; ``b`` starts
streaming, ``s`` stops. The packet has no checksum: a corrupted value inside a packet whose
header and footer survive cannot be detected; the parser rejects misframed packets and
counts gaps from the sample number.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .info import counters
from .parsing import Carry, Rows

PACKET_LEN = 33
HEADER = 0xA0
FOOTER = 0xC0
N_CHANNELS = 8
FS = 250.0
DEFAULT_GAIN = 24
BAUD = 115200
RAIL = (1 << 23) - 1  # full-scale count: a channel at +-RAIL is saturated (read as lead-off)
# what a Cyton prints for ``v`` before its ``$$$`` (the simulated board's banner)
BANNER = "OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\nLIS3DH Device ID: 0x33\nFirmware: v3.1.2\n"


def scale_uv(gain: int = DEFAULT_GAIN) -> float:
    """Microvolts per count at the ADS1299 programmable gain ``gain``."""
    return 4.5e6 / float(gain) / float((1 << 23) - 1)


def encode_packets(
    sample_numbers: np.ndarray, counts: np.ndarray, aux: np.ndarray | None = None, footer: int = FOOTER
) -> bytes:
    """Packets for ``counts`` (m, 8) int with sample numbers (m,) (taken mod 256)."""
    c = np.asarray(counts, dtype=np.int64)
    m = c.shape[0]
    if c.shape[1:] != (N_CHANNELS,):
        raise ValueError(f"Cyton packets carry 8 channels, not {c.shape[1:]}")
    if m and (c.min() < -(1 << 23) or c.max() > RAIL):
        raise ValueError("count outside the 24-bit range")
    out = np.zeros((m, PACKET_LEN), dtype=np.uint8)
    out[:, 0] = HEADER
    out[:, 1] = np.asarray(sample_numbers, dtype=np.int64) & 0xFF
    u = c & 0xFFFFFF
    out[:, 2:26:3] = (u >> 16) & 0xFF
    out[:, 3:26:3] = (u >> 8) & 0xFF
    out[:, 4:26:3] = u & 0xFF
    if aux is not None:
        out[:, 26:32] = np.asarray(aux, dtype=np.uint8)
    out[:, 32] = footer
    return out.tobytes()


@dataclass(frozen=True)
class CytonBatch(Rows):
    """Packets accepted by one feed: sample_number (m,), counts (m, 8) int32, aux (m, 6) uint8."""

    sample_number: np.ndarray
    counts: np.ndarray
    aux: np.ndarray


def _greedy(starts: np.ndarray, length: int) -> np.ndarray:
    """Indices of a left-to-right non-overlapping subset of sorted starts."""
    if starts.size < 2 or np.all(np.diff(starts) >= length):
        return np.arange(starts.size)
    keep, last = [], -1
    for i, s in enumerate(starts.tolist()):
        if s >= last:
            keep.append(i)
            last = s + length
    return np.asarray(keep, dtype=np.int64)


@dataclass
class CytonParser:
    """Cyton byte stream -> packets; no I/O, never raises on bad bytes.

    A candidate is an ``A0`` byte with a ``Cx`` footer 32 bytes later. Candidates followed at
    once by another ``A0`` are preferred over others, so a stray ``A0 .. Cx`` pair (a packet
    that lost a byte lands its "footer" on the next packet's sample number, 0xC0..0xCF one
    time in sixteen) cannot displace a real packet. The last packet in the buffer waits for
    one more byte.
    """

    stats: dict = field(
        default_factory=lambda: counters("bytes", "frames", "bytes_skipped", "resyncs", "seq_gaps", "dropped_samples")
    )
    _carry: Carry = field(default_factory=Carry)
    _last_sn: int | None = None

    def reset(self) -> None:
        """Forget buffered bytes and the last sample number (counters are kept): the next packet starts afresh."""
        self._carry = Carry()
        self._last_sn = None

    def flush(self) -> CytonBatch:
        """Judge the packet still waiting at the end of the buffer as if the stream had paused there
        (call it when the line has been silent for a while)."""
        return self.feed(b"", final=True)

    def feed(self, data: bytes, final: bool = False) -> CytonBatch:
        """Parse ``data`` (any split of the stream): the packets now judged, as one :class:`CytonBatch`; the rest
        waits in the buffer. Skipped bytes, resyncs and sample-number gaps are counted in :attr:`stats`.
        ``final``: judge the last packet without the byte after it (:meth:`flush`)."""
        st = self.stats
        buf = self._carry.join(st, data)
        a = np.frombuffer(buf, dtype=np.uint8)
        n = a.size
        heads = np.flatnonzero(a == HEADER).astype(np.int64)
        # a candidate needs its footer and the byte after it (to see whether a packet follows)
        lim = n + 1 if final else n
        seen = heads[heads + PACKET_LEN < lim]
        cand = seen[(a[seen + PACKET_LEN - 1] & 0xF0) == FOOTER]
        waiting = heads[heads + PACKET_LEN >= lim]  # headers we cannot judge yet
        keep_from = n
        if cand.size:
            nxt = np.minimum(cand + PACKET_LEN, n - 1)
            # the next packet starts right after the footer (or, when flushing, the stream paused)
            strong_m = (a[nxt] == HEADER) | (cand + PACKET_LEN == n)
            strong = cand[strong_m][_greedy(cand[strong_m], PACKET_LEN)]
            weak = cand[~strong_m]
            if weak.size and strong.size:
                j = np.searchsorted(strong, weak)
                left_ok = (j == 0) | (weak >= strong[np.clip(j - 1, 0, None)] + PACKET_LEN)
                right_ok = (j == strong.size) | (weak + PACKET_LEN <= strong[np.clip(j, None, strong.size - 1)])
                weak = weak[left_ok & right_ok]
            if weak.size and waiting.size:
                # a header still arriving inside a weak candidate may be the real packet: wait for it
                k = np.searchsorted(waiting, weak, side="right")
                defer = (k < waiting.size) & (waiting[np.clip(k, None, waiting.size - 1)] < weak + PACKET_LEN)
                if defer.any():
                    keep_from = int(weak[defer].min())
                    weak = weak[~defer]
            starts = np.sort(np.concatenate([strong, weak]))
            starts = starts[_greedy(starts, PACKET_LEN)]
            starts = starts[starts + PACKET_LEN <= keep_from]
        else:
            starts = cand
        last_end = int(starts[-1]) + PACKET_LEN if starts.size else 0
        pend = waiting[waiting >= last_end]
        if pend.size:
            keep_from = min(keep_from, int(pend.min()))
        keep_from = max(keep_from, last_end)
        self._carry.settle(st, buf, starts, starts + PACKET_LEN, keep_from)
        m = starts.size
        st["frames"] += m
        if m == 0:
            return CytonBatch(np.zeros(0, np.int64), np.zeros((0, N_CHANNELS), np.int32), np.zeros((0, 6), np.uint8))
        pk = a[starts[:, None] + np.arange(PACKET_LEN)]
        sn = pk[:, 1].astype(np.int64)
        b = pk[:, 2:26].reshape(m, N_CHANNELS, 3).astype(np.int32)
        v = (b[..., 0] << 16) | (b[..., 1] << 8) | b[..., 2]
        v = (v ^ 0x800000) - 0x800000
        prev = np.concatenate([[self._last_sn if self._last_sn is not None else (sn[0] - 1) & 0xFF], sn[:-1]])
        miss = (sn - prev - 1) & 0xFF
        st["seq_gaps"] += int(np.count_nonzero(miss))
        st["dropped_samples"] += int(miss.sum())
        self._last_sn = int(sn[-1])
        return CytonBatch(sn, v.astype(np.int32), pk[:, 26:32].copy())
