"""What the I/O-free parsers share: the bytes a framed parser carries from one feed to the next, with its
count of skipped bytes and resyncs (:class:`Carry`), and the length of a batch of rows (:class:`Rows`)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class Carry:
    """A framed stream's state between feeds (:class:`~firmware_bridge.native_parser.NativeParser`,
    :class:`~firmware_bridge.cyton.CytonParser`): the bytes not yet judged, and whether the last feed ended on
    skipped bytes (so that a frame at the very start of the next one still counts as a resync)."""

    buf: bytes = b""
    garbage_pending: bool = False

    def join(self, stats: dict, data: bytes) -> bytes:
        """The bytes carried over followed by ``data`` (counted in ``stats["bytes"]``)."""
        stats["bytes"] += len(data)
        return self.buf + bytes(data) if self.buf else bytes(data)

    def settle(self, stats: dict, buf: bytes, starts: np.ndarray, ends: np.ndarray, keep_from: int) -> None:
        """After a feed accepted the frames ``buf[starts[i]:ends[i]]`` (sorted, not overlapping): count the bytes
        skipped before ``keep_from`` and the resyncs (a frame that does not follow the previous one or the carried
        bytes directly), and carry ``buf[keep_from:]`` to the next feed."""
        skipped = keep_from - int((ends - starts).sum())
        stats["bytes_skipped"] += skipped
        if starts.size:
            gaps = starts > np.concatenate([[0], ends[:-1]])
            if self.garbage_pending and starts[0] == 0:
                gaps[0] = True
            stats["resyncs"] += int(np.count_nonzero(gaps))
            self.garbage_pending = keep_from > int(ends[-1])
        elif skipped:
            self.garbage_pending = True
        self.buf = buf[keep_from:]


@dataclass(frozen=True)
class Rows:
    """The base of a frozen dataclass of per-row arrays (a parser's batch, a driver's chunk): its length is the
    number of rows of its first field."""

    def __len__(self) -> int:
        return len(getattr(self, fields(self)[0].name))
