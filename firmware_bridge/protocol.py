"""The native ecgret serial protocol: encoder and a vectorised, I/O-free parser.

The byte layout is specified in ``firmware_bridge/PROTOCOL.md``; the C encoder in
``firmware_bridge/c/`` produces the same bytes (the tests check both against the golden
vectors of the spec).

Frame::

    A5 5A | type u8 | seq u16 LE | len u16 LE | payload (len bytes) | crc u16 LE

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)
computed over the protocol version byte followed by ``type .. payload``; the version
byte is never transmitted, so a peer speaking another version fails every CRC (the
"CRC extra" idea of MAVLink).
"""

from __future__ import annotations

import bisect
import struct
from binascii import crc_hqx
from dataclasses import dataclass, field

import numpy as np

from .info import MAX_CHANNELS, MAX_DESCRIPTION, DeviceInfo  # noqa: F401 - MAX_CHANNELS re-exported

PROTOCOL_VERSION = 1
SYNC = b"\xa5\x5a"
HEADER_LEN = 7
CRC_LEN = 2
OVERHEAD = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = 1024
MAX_FRAME = OVERHEAD + MAX_PAYLOAD

# board -> host
T_INFO = 0x01
T_DATA = 0x02
T_STATUS = 0x03
T_ERROR = 0x04
T_PONG = 0x05
# host -> board
T_HELLO = 0x10
T_START = 0x11
T_STOP = 0x12
T_PING = 0x13
KNOWN_TYPES = frozenset({T_INFO, T_DATA, T_STATUS, T_ERROR, T_PONG, T_HELLO, T_START, T_STOP, T_PING})
_TYPE_OK = np.zeros(256, dtype=bool)
_TYPE_OK[sorted(KNOWN_TYPES)] = True

# STATUS codes
ST_OK = 0x00
ST_STARTED = 0x01
ST_STOPPED = 0x02
ST_LEAD_OFF = 0x03
ST_OVERFLOW = 0x04
# ERROR codes
ERR_BAD_COMMAND = 0x01
ERR_BAD_CRC = 0x02
ERR_NOT_STREAMING = 0x03
ERR_ADC_FAULT = 0x04
ERR_OVERFLOW = 0x05

DATA_HEAD = struct.Struct("<IBBBBI")  # first_sample, n_ch, n_samp, sample_bytes, flags, lead_off
INFO_HEAD = struct.Struct("<BBBBffBB")  # version, n_ch, adc_bits, sample_bytes, fs, gain_uv, spf, reserved


def crc_init(version: int = PROTOCOL_VERSION) -> int:
    """CRC register after folding in the protocol version byte."""
    return crc_hqx(bytes([version & 0xFF]), 0xFFFF)


_CRC_INIT = crc_init()


def frame_crc(body: bytes, version: int = PROTOCOL_VERSION) -> int:
    """CRC of ``type .. payload`` (``body``) with the version folded in."""
    return crc_hqx(body, crc_init(version))


# ----------------------------------------------------------------------------- encoding


def encode_frame(ftype: int, seq: int, payload: bytes = b"", *, version: int = PROTOCOL_VERSION) -> bytes:
    """One complete frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    body = struct.pack("<BHH", ftype & 0xFF, seq & 0xFFFF, len(payload)) + bytes(payload)
    return SYNC + body + struct.pack("<H", frame_crc(body, version))


def data_payload(first_sample: int, counts: np.ndarray, lead_off: int = 0, sample_bits: int = 24) -> bytes:
    """Payload of a DATA frame: ``counts`` is (n_samp, n_ch) integer ADC counts."""
    c = np.asarray(counts)
    if c.ndim == 1:
        c = c[None, :]
    n_samp, n_ch = c.shape
    sb = _sample_bytes(sample_bits)
    lim = 1 << (8 * sb - 1)
    c64 = c.astype(np.int64)
    if c64.size and (c64.min() < -lim or c64.max() >= lim):
        raise ValueError(f"sample outside the {sample_bits}-bit range")
    u = (c64 & ((1 << (8 * sb)) - 1)).astype("<u4").reshape(-1)
    raw = u.view(np.uint8).reshape(-1, 4)[:, :sb].tobytes()
    head = DATA_HEAD.pack(first_sample & 0xFFFFFFFF, n_ch, n_samp, sb, 0, lead_off & 0xFFFFFFFF)
    return head + raw


def encode_data(seq: int, first_sample: int, counts: np.ndarray, lead_off: int = 0, sample_bits: int = 24) -> bytes:
    return encode_frame(T_DATA, seq, data_payload(first_sample, counts, lead_off, sample_bits))


def info_payload(info: DeviceInfo) -> bytes:
    names = ",".join(info.channel_names).encode("ascii")
    head = INFO_HEAD.pack(
        PROTOCOL_VERSION if info.protocol_version is None else info.protocol_version,
        info.n_channels,
        info.adc_bits,
        _sample_bytes(info.sample_bits or 24),
        float(info.fs),
        float(info.gain_uv),
        info.samples_per_frame,
        0,
    )
    return head + names + b"\x00" + info.description.encode("utf-8")


def decode_info(payload: bytes) -> DeviceInfo:
    """Parse an INFO payload (raises ValueError when malformed; the parser already checked its CRC)."""
    if len(payload) < INFO_HEAD.size + 1:
        raise ValueError("INFO payload too short")
    ver, n_ch, adc_bits, sb, fs, gain, spf, _ = INFO_HEAD.unpack_from(payload)
    if ver != PROTOCOL_VERSION:
        raise ValueError(f"INFO declares protocol version {ver}; this host speaks {PROTOCOL_VERSION}")
    if sb not in (2, 3):
        raise ValueError(f"INFO declares {sb}-byte samples; 2 or 3 are possible")
    rest = payload[INFO_HEAD.size :]
    names_b, _, desc = rest.partition(b"\x00")
    names = tuple(x.strip() for x in names_b.decode("ascii", "replace").split(",")) if names_b else ()
    if len(names) != n_ch:
        raise ValueError(f"INFO names {len(names)} channels but declares {n_ch}")
    return DeviceInfo(
        board="native",
        fs=float(fs),
        channel_names=names,
        gain_uv=float(gain),
        adc_bits=int(adc_bits),
        protocol_version=int(ver),
        sample_bits=8 * int(sb),
        samples_per_frame=int(spf),
        description=desc.decode("utf-8", "replace")[:MAX_DESCRIPTION],
    )


def f32_info(info: DeviceInfo) -> DeviceInfo:
    """``info`` as a host will see it after the float32 round trip of fs and gain."""
    return decode_info(info_payload(info))


def encode_status(seq: int, code: int, extra: bytes = b"") -> bytes:
    return encode_frame(T_STATUS, seq, bytes([code]) + extra)


def encode_error(seq: int, code: int, message: str = "") -> bytes:
    return encode_frame(T_ERROR, seq, bytes([code]) + message.encode("utf-8"))


def _sample_bytes(sample_bits: int) -> int:
    if sample_bits not in (16, 24):
        raise ValueError(f"sample_bits must be 16 or 24, not {sample_bits}")
    return sample_bits // 8


# ----------------------------------------------------------------------------- parsing


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
            first = (
                a[pg].astype(np.int64)
                | a[pg + 1].astype(np.int64) << 8
                | a[pg + 2].astype(np.int64) << 16
                | a[pg + 3].astype(np.int64) << 24
            )
            lo = (
                a[pg + 8].astype(np.int64)
                | a[pg + 9].astype(np.int64) << 8
                | a[pg + 10].astype(np.int64) << 16
                | a[pg + 11].astype(np.int64) << 24
            )
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
    """CRC of ``type .. payload`` of every candidate frame (``binascii.crc_hqx`` on memoryview slices:
    about 1 us a frame; column-wise numpy CRCs measured no faster on this data)."""
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
        default_factory=lambda: {
            "bytes": 0,
            "frames": 0,
            "data_frames": 0,
            "crc_errors": 0,
            "bad_headers": 0,
            "bytes_skipped": 0,
            "resyncs": 0,
            "seq_gaps": 0,
            "frames_missing": 0,
            "dropped_samples": 0,
        }
    )
    _buf: bytes = b""
    _last_seq: int | None = None
    _next_sample: int | None = None
    _garbage_pending: bool = False

    def reset(self) -> None:
        """Forget partial bytes and sequence state (after a reconnect)."""
        self._buf = b""
        self._last_seq = None
        self._next_sample = None
        self._garbage_pending = False

    def feed(self, data: bytes) -> FrameBatch:
        st = self.stats
        st["bytes"] += len(data)
        buf = self._buf + bytes(data) if self._buf else bytes(data)
        n = len(buf)
        a = np.frombuffer(buf, dtype=np.uint8)
        if n < 2:
            self._buf = buf
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
        covered = int((ve - vs).sum())
        skipped = keep_from - covered
        st["bytes_skipped"] += skipped
        if vs.size:
            prev_end = np.concatenate([[0], ve[:-1]])
            gaps = vs > prev_end
            if self._garbage_pending and vs[0] == 0:
                gaps[0] = True
            st["resyncs"] += int(np.count_nonzero(gaps))
            self._garbage_pending = keep_from > last_end
        elif skipped:
            self._garbage_pending = True
        self._buf = buf[keep_from:]
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
            first = (
                a[p].astype(np.int64)
                | a[p + 1].astype(np.int64) << 8
                | a[p + 2].astype(np.int64) << 16
                | a[p + 3].astype(np.int64) << 24
            )
            nsm = a[p + 5].astype(np.int64)
            expected = np.concatenate(
                [[self._next_sample if self._next_sample is not None else first[0]], (first + nsm)[:-1]]
            )
            diff = first - expected
            st["dropped_samples"] += int(diff[diff > 0].sum())
            self._next_sample = int(first[-1] + nsm[-1])
        return batch


def encode_data_frames(
    seq0: int,
    first0: int,
    counts: np.ndarray,
    lead_off: np.ndarray | None = None,
    sample_bits: int = 24,
    *,
    version: int = PROTOCOL_VERSION,
) -> tuple[bytes, int]:
    """Many DATA frames at once (vectorised twin of :func:`encode_data`).

    counts: (m, n_samp, n_ch) integer counts; frame i has seq ``seq0 + i`` and first_sample
    ``first0 + i * n_samp``; lead_off: (m,) bit masks. Returns (bytes, frame length).
    """
    c = np.asarray(counts, dtype=np.int64)
    m, ns, ch = c.shape
    sb = _sample_bytes(sample_bits)
    lim = 1 << (8 * sb - 1)
    if c.size and (c.min() < -lim or c.max() >= lim):
        raise ValueError(f"sample outside the {sample_bits}-bit range")
    plen = DATA_HEAD.size + ns * ch * sb
    flen = OVERHEAD + plen
    out = np.zeros((m, flen), dtype=np.uint8)
    out[:, 0], out[:, 1], out[:, 2] = 0xA5, 0x5A, T_DATA
    seq = (seq0 + np.arange(m, dtype=np.int64)) & 0xFFFF
    out[:, 3], out[:, 4] = seq & 0xFF, seq >> 8
    out[:, 5], out[:, 6] = plen & 0xFF, plen >> 8
    first = (first0 + ns * np.arange(m, dtype=np.int64)) & 0xFFFFFFFF
    for k in range(4):
        out[:, 7 + k] = (first >> (8 * k)) & 0xFF
    out[:, 11], out[:, 12], out[:, 13], out[:, 14] = ch, ns, sb, 0
    lo = np.zeros(m, np.int64) if lead_off is None else np.asarray(lead_off, dtype=np.int64) & 0xFFFFFFFF
    for k in range(4):
        out[:, 15 + k] = (lo >> (8 * k)) & 0xFF
    u = (c & ((1 << (8 * sb)) - 1)).reshape(m, ns * ch)
    body = out[:, 19 : 19 + ns * ch * sb].reshape(m, ns * ch, sb)
    for k in range(sb):
        body[:, :, k] = (u >> (8 * k)) & 0xFF
    out[:, 19 : 19 + ns * ch * sb] = body.reshape(m, -1)
    init = crc_init(version)
    raw = out.tobytes()
    mv = memoryview(raw)
    crcs = np.fromiter(
        (crc_hqx(mv[i * flen + 2 : (i + 1) * flen - 2], init) for i in range(m)), dtype=np.int64, count=m
    )
    out[:, flen - 2], out[:, flen - 1] = crcs & 0xFF, crcs >> 8
    return out.tobytes(), flen
