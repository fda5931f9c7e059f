"""The host's parser of the native protocol (:mod:`firmware_bridge.protocol`, ``PROTOCOL.md``): vectorised and
I/O-free. ``NativeParser().feed(data)`` returns a :class:`FrameBatch` of the CRC-valid frames; garbage is counted
and skipped, never raised.
"""

from __future__ import annotations

import bisect
from binascii import crc_hqx
from dataclasses import dataclass, field

import numpy as np

from .info import counters
from .parsing import Carry
from .protocol import DATA_HEAD, HEADER_LEN, KNOWN_TYPES, MAX_PAYLOAD, OVERHEAD, PROTOCOL_VERSION, T_DATA, crc_init

__all__ = ["Frame", "DataBlock", "FrameBatch", "NativeParser"]

_TYPE_OK = np.zeros(256, dtype=bool)
_TYPE_OK[sorted(KNOWN_TYPES)] = True


def _u32(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The little-endian u32 at positions ``p`` of the byte array ``a``, as int64."""
    return (
        a[p].astype(np.int64)
        | a[p + 1].astype(np.int64) << 8
        | a[p + 2].astype(np.int64) << 16
        | a[p + 3].astype(np.int64) << 24
    )


@dataclass(frozen=True)
class Frame:
    """One accepted frame (CRC verified)."""

    type: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class DataBlock:
    """Decoded DATA frames sharing one layout.

    seq (m,), first_sample (m,) int64, counts (m, n_samp, n_ch) int32, lead_off (m, n_ch) bool.
    """

    seq: np.ndarray
    first_sample: np.ndarray
    counts: np.ndarray
    lead_off: np.ndarray


@dataclass(frozen=True)
class FrameBatch:
    """The frames accepted by one ``feed`` call, in stream order, kept as arrays.

    Iterating yields :class:`Frame` objects; :meth:`data` decodes every DATA frame at once.
    """

    buf: bytes
    starts: np.ndarray
    types: np.ndarray
    seqs: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.starts.size)

    def __iter__(self):
        for s, t, q, n in zip(self.starts.tolist(), self.types.tolist(), self.seqs.tolist(), self.lengths.tolist()):
            yield Frame(t, q, self.buf[s + HEADER_LEN : s + HEADER_LEN + n])

    def messages(self) -> list[Frame]:
        """Every frame that is not DATA (INFO, STATUS, ERROR, PONG, commands)."""
        return [f for f in self if f.type != T_DATA]

    def data(self) -> list[DataBlock]:
        """Decode every DATA frame, vectorised; one block per distinct layout."""
        sel = np.flatnonzero(self.types == T_DATA)
        if sel.size == 0:
            return []
        a = np.frombuffer(self.buf, dtype=np.uint8)
        p = self.starts[sel] + HEADER_LEN
        n_ch = a[p + 4].astype(np.int64)
        n_samp = a[p + 5].astype(np.int64)
        sb = a[p + 6].astype(np.int64)
        key = (n_ch << 16) | (n_samp << 8) | sb
        blocks = []
        for k in np.unique(key):
            g = key == k
            pg = p[g]
            ch, ns, b = int(k >> 16), int((k >> 8) & 0xFF), int(k & 0xFF)
            first = _u32(a, pg)
            lo = _u32(a, pg + 8)
            raw = a[(pg + DATA_HEAD.size)[:, None] + np.arange(ns * ch * b)].reshape(pg.size, ns * ch, b)
            v = raw[..., 0].astype(np.int32) | (raw[..., 1].astype(np.int32) << 8)
            if b == 3:
                v |= raw[..., 2].astype(np.int32) << 16
            sign = np.int32(1 << (8 * b - 1))
            v = (v ^ sign) - sign
            blocks.append(
                DataBlock(
                    seq=self.seqs[sel[g]].astype(np.int64),
                    first_sample=first,
                    counts=v.reshape(pg.size, ns, ch),
                    lead_off=((lo[:, None] >> np.arange(ch)) & 1).astype(bool),
                )
            )
        return blocks


_EMPTY = np.zeros(0, dtype=np.int64)


def _crcs(a: np.ndarray, buf: bytes, starts: np.ndarray, lens: np.ndarray, init: int) -> np.ndarray:
    """CRC of ``type .. payload`` of every candidate frame: ``binascii.crc_hqx`` (C) on memoryview slices, one
    call a frame and no copies (why not numpy: docs/PERFORMANCE.md)."""
    mv = memoryview(buf)
    return np.fromiter(
        (crc_hqx(mv[s + 2 : s + 7 + n], init) for s, n in zip(starts.tolist(), lens.tolist())),
        dtype=np.int64,
        count=starts.size,
    )


def _resolve_overlaps(a: np.ndarray, vs: np.ndarray, ve: np.ndarray) -> np.ndarray:
    """Indices of a non-overlapping subset of CRC-valid frames [vs, ve).

    Two CRC-valid frames overlap only when a damaged one passed its CRC by chance (2**-16). A
    frame that lost a byte ends one byte into the next frame, so frames followed at once by the
    next sync (or by the end of the buffer) are preferred; then earlier ones.
    """
    n = a.size
    nxt0 = a[np.minimum(ve, n - 1)]
    nxt1 = a[np.minimum(ve + 1, n - 1)]
    strong = (ve >= n) | ((ve + 1 == n) & (nxt0 == 0xA5)) | ((nxt0 == 0xA5) & (nxt1 == 0x5A))
    order = sorted(range(vs.size), key=lambda i: (not strong[i], vs[i]))
    # the chosen frames never overlap, so a candidate need only be checked against its neighbours in start
    # order: O(k log k) (a hostile board can pack thousands of nested CRC-valid frames into one read)
    starts: list[int] = []  # sorted starts of the chosen frames
    ends: list[int] = []  # their ends, in the same order
    chosen: list[int] = []
    for i in order:
        s, e = int(vs[i]), int(ve[i])
        j = bisect.bisect_left(starts, s)
        if j > 0 and ends[j - 1] > s:
            continue
        if j < len(starts) and starts[j] < e:
            continue
        starts.insert(j, s)
        ends.insert(j, e)
        chosen.append(i)
    return np.asarray(sorted(chosen), dtype=np.int64)


@dataclass
class NativeParser:
    """Turns a byte stream into CRC-checked frames; does no I/O and never raises on bad bytes.

    ``feed(data)`` returns a :class:`FrameBatch` of every complete, CRC-valid frame and keeps
    at most one unfinished frame's worth of bytes for the next call. After a CRC failure the
    parser restarts its search one byte after the failed sync, so an intact frame that
    follows corruption is found at once (resync within one frame) and no intact frame is
    ever lost. Counters live in :attr:`stats`.
    """

    version: int = PROTOCOL_VERSION
    stats: dict = field(
        default_factory=lambda: counters(
            "bytes",
            "frames",
            "data_frames",
            "crc_errors",
            "bad_headers",
            "bytes_skipped",
            "resyncs",
            "seq_gaps",
            "frames_missing",
            "dropped_samples",
        )
    )
    _carry: Carry = field(default_factory=Carry)
    _last_seq: int | None = None
    _next_sample: int | None = None

    def reset(self) -> None:
        """Forget partial bytes and sequence state (after a reconnect)."""
        self._carry = Carry()
        self._last_seq = None
        self._next_sample = None

    def feed(self, data: bytes) -> FrameBatch:
        """Parse ``data`` (any split of the stream): the complete CRC-valid frames now in the buffer, as one
        :class:`FrameBatch`; the unfinished tail waits for the next call. Garbage is counted, never raised."""
        st = self.stats
        buf = self._carry.join(st, data)
        n = len(buf)
        a = np.frombuffer(buf, dtype=np.uint8)
        if n < 2:
            self._carry.buf = buf
            return FrameBatch(buf, _EMPTY, _EMPTY, _EMPTY, _EMPTY)
        cand = np.flatnonzero((a[:-1] == 0xA5) & (a[1:] == 0x5A)).astype(np.int64)
        has_hdr = cand + HEADER_LEN <= n
        c = cand[has_hdr]
        ln = a[c + 5].astype(np.int64) | (a[c + 6].astype(np.int64) << 8)
        ends = c + OVERHEAD + ln
        len_ok = ln <= MAX_PAYLOAD
        complete = len_ok & (ends <= n)
        cs, es, ls = c[complete], ends[complete], ln[complete]
        calc = _crcs(a, buf, cs, ls, crc_init(self.version))
        rx = a[es - 2].astype(np.int64) | (a[es - 1].astype(np.int64) << 8) if cs.size else _EMPTY
        crc_ok = calc == rx
        types = a[cs + 2].astype(np.int64)
        ok = crc_ok & _TYPE_OK[types]
        # DATA frames must be self-consistent
        isdata = ok & (types == T_DATA)
        if isdata.any():
            d = np.flatnonzero(isdata)
            p = cs[d] + HEADER_LEN
            good = ls[d] >= DATA_HEAD.size
            pc = np.where(good, p, 0)
            nch = a[pc + 4].astype(np.int64)
            nsm = a[pc + 5].astype(np.int64)
            sbb = a[pc + 6].astype(np.int64)
            good &= (nch >= 1) & (nsm >= 1) & ((sbb == 2) | (sbb == 3))
            good &= ls[d] == DATA_HEAD.size + nch * nsm * sbb
            ok[d[~good]] = False
        vs, ve = cs[ok], es[ok]
        if vs.size > 1 and np.any(vs[1:] < ve[:-1]):
            keep = _resolve_overlaps(a, vs, ve)
            okidx = np.flatnonzero(ok)[keep]
            vs, ve = vs[keep], ve[keep]
        else:
            okidx = np.flatnonzero(ok)
        last_end = int(ve[-1]) if ve.size else 0

        # candidates inside accepted frames are payload bytes, not errors
        def inside(pos):
            if ve.size == 0 or pos.size == 0:
                return np.zeros(pos.size, dtype=bool)
            j = np.searchsorted(vs, pos, side="right") - 1
            jj = np.clip(j, 0, None)
            return (j >= 0) & (pos < ve[jj])

        bad = ~crc_ok
        if bad.any():
            st["crc_errors"] += int(np.count_nonzero(~inside(cs[bad])))
        if not len_ok.all():
            st["bad_headers"] += int(np.count_nonzero(~inside(c[~len_ok])))
        # what to keep for next time: the earliest unfinished candidate after the last frame
        pending = np.concatenate([cand[~has_hdr], c[len_ok & ~complete]])
        pending = pending[pending >= last_end]
        if pending.size:
            keep_from = int(pending.min())
        else:
            keep_from = n - 1 if a[-1] == 0xA5 else n
            keep_from = max(keep_from, last_end)
        # garbage accounting
        self._carry.settle(st, buf, vs, ve, keep_from)
        seqs = a[vs + 3].astype(np.int64) | (a[vs + 4].astype(np.int64) << 8)
        ftypes = types[okidx]
        flen = ls[okidx]
        st["frames"] += int(vs.size)
        if vs.size:
            prev = np.concatenate([[self._last_seq if self._last_seq is not None else (seqs[0] - 1)], seqs[:-1]])
            miss = (seqs - prev - 1) & 0xFFFF
            st["seq_gaps"] += int(np.count_nonzero(miss))
            st["frames_missing"] += int(miss.sum())
            self._last_seq = int(seqs[-1])
        batch = FrameBatch(buf, vs, ftypes, seqs, flen)
        dsel = ftypes == T_DATA
        if dsel.any():
            st["data_frames"] += int(np.count_nonzero(dsel))
            p = vs[dsel] + HEADER_LEN
            first = _u32(a, p)
            nsm = a[p + 5].astype(np.int64)
            expected = np.concatenate(
                [[self._next_sample if self._next_sample is not None else first[0]], (first + nsm)[:-1]]
            )
            diff = first - expected
            st["dropped_samples"] += int(diff[diff > 0].sum())
            self._next_sample = int(first[-1] + nsm[-1])
        return batch
