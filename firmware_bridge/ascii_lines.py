"""ASCII line boards (an Arduino with an AD8232 printing ``analogRead`` values, or comma-separated
values, one sample per line at a rate the user declares): formatter and I/O-free parser.

Lines starting with ``#`` are comments; ``# fs=500 channels=I,II`` declares the rate and the
channel names (the simulator prints one every second; real sketches may print one at boot).
A line that does not parse as the expected number of values is a one-sample gap. A line ``!``
(what the common AD8232 sketches print while LO+ or LO- is high) is a lead-off sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from .info import MAX_CHANNELS, counters
from .parsing import Rows

MAX_LINE = 512  # bytes; a longer line is skipped unparsed (one bad sample)
MAX_VALUES = MAX_CHANNELS  # values a line may carry
MAX_ABS = 1.0e9  # a printed value beyond this is not a sample
# ``fs=`` as a word (not the end of ``offs=``), its number whole (``5e2`` is 500, not 5), any case
_HEADER = re.compile(
    rb"(?<![A-Za-z0-9_])fs\s*=\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)(?![0-9A-Za-z_.])"
    rb"(?:.*?channels\s*=\s*([A-Za-z0-9_,]+))?",
    re.IGNORECASE,
)


def format_lines(values: np.ndarray, decimals: int = 4) -> bytes:
    """``values`` (m, ch) as text lines ``v1,v2,..\\n``."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    fmt = ",".join([f"%.{decimals}f"] * v.shape[1]) + "\n"
    return b"".join((fmt % tuple(row)).encode("ascii") for row in v.tolist())


def header_line(fs: float, channel_names) -> bytes:
    """The comment line that declares rate and channels: ``# ecgret-sim fs=500 channels=I,II\n``."""
    return f"# ecgret-sim fs={fs:g} channels={','.join(channel_names)}\n".encode("ascii")


@dataclass(frozen=True)
class AsciiBatch(Rows):
    """Lines accepted by one feed, in order: values (m, ch) float64 (NaN rows = bad or lead-off lines),
    bad (m,) bool, lead_off (m,) bool."""

    values: np.ndarray
    bad: np.ndarray
    lead_off: np.ndarray


@dataclass
class AsciiParser:
    """Text stream -> rows of floats; no I/O, never raises on bad bytes.

    n_channels: expected values per line; ``None`` fixes it from the first good line.
    """

    n_channels: int | None = None
    stats: dict = field(
        default_factory=lambda: counters("bytes", "frames", "bad_lines", "comments", "bytes_skipped", "dropped_samples")
    )
    header_fs: float | None = None
    header_channels: tuple[str, ...] | None = None
    _buf: bytes = b""
    _synced: bool = False

    def reset(self) -> None:
        """Drop any partial line and resynchronise: the next line fragment is discarded (counters are kept)."""
        self._buf = b""
        self._synced = False

    def feed(self, data: bytes) -> AsciiBatch:
        """Parse ``data`` (any split of the stream): the complete lines in it, as one :class:`AsciiBatch`; a
        trailing partial line waits for the next call. Comments update :attr:`header_fs`/:attr:`header_channels`."""
        st = self.stats
        st["bytes"] += len(data)
        buf = self._buf + bytes(data)
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        if len(self._buf) > MAX_LINE:
            st["bytes_skipped"] += len(self._buf)
            self._buf = b""
            self._synced = False
        if not self._synced and lines:
            # the first piece may be the tail of a line we joined half-way: drop it
            st["bytes_skipped"] += len(lines[0]) + 1
            lines = lines[1:]
            self._synced = True
        rows: list = []
        bad: list = []
        lead: list = []
        for raw in lines:
            line = raw.strip(b"\r \t")
            if not line:
                continue
            if len(line) > MAX_LINE:  # judged before any parsing: a megabyte "line" costs nothing more
                st["bytes_skipped"] += len(line)
                if not line.startswith(b"#"):
                    lead.append(False)
                    bad.append(True)
                    rows.append(None)
                    st["bad_lines"] += 1
                    st["dropped_samples"] += 1
                continue
            if line.startswith(b"#"):
                st["comments"] += 1
                m = _HEADER.search(line)
                if m:
                    try:
                        self.header_fs = float(m.group(1))
                    except ValueError:
                        pass
                    if m.group(2):
                        self.header_channels = tuple(m.group(2).decode("ascii").split(","))
                continue
            if line == b"!":
                rows.append(None)
                bad.append(False)
                lead.append(True)
                st["lead_off_lines"] = st.get("lead_off_lines", 0) + 1
                continue
            lead.append(False)
            try:
                vals = [float(x) for x in line.split(b",")]
                if len(vals) > MAX_VALUES or not all(abs(v) <= MAX_ABS for v in vals):  # NaN fails too
                    raise ValueError
            except ValueError:
                vals = None
            if vals is not None and self.n_channels is None:
                self.n_channels = len(vals)
            if vals is None or len(vals) != self.n_channels:
                bad.append(True)
                rows.append(None)
                st["bad_lines"] += 1
                st["dropped_samples"] += 1
            else:
                bad.append(False)
                rows.append(vals)
        ch = self.n_channels or 1
        out = np.full((len(rows), ch), np.nan)
        for i, r in enumerate(rows):
            if r is not None:
                out[i] = r
        st["frames"] += len(rows) - sum(bad)
        return AsciiBatch(out, np.asarray(bad, dtype=bool), np.asarray(lead, dtype=bool))
