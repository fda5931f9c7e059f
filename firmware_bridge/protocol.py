"""The native ecgret serial protocol: the wire format (frame types, codes, layouts, CRC) and the encoders.

The byte layout is specified in ``firmware_bridge/PROTOCOL.md``; the C encoder in
``firmware_bridge/c/`` produces the same bytes (the tests check both against the golden
vectors of the spec). The host's parser is :mod:`firmware_bridge.native_parser`.

Frame::

    A5 5A | type u8 | seq u16 LE | len u16 LE | payload (len bytes) | crc u16 LE

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)
computed over the protocol version byte followed by ``type .. payload``; the version
byte is never transmitted, so a peer speaking another version fails every CRC (the
"CRC extra" idea of MAVLink).
"""

from __future__ import annotations

import struct
from binascii import crc_hqx

import numpy as np

from .info import MAX_DESCRIPTION, Board, DeviceInfo

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
    c64 = c.astype(np.int64)
    sb = _fitting_sample_bytes(c64, sample_bits)
    u = (c64 & ((1 << (8 * sb)) - 1)).astype("<u4").reshape(-1)
    raw = u.view(np.uint8).reshape(-1, 4)[:, :sb].tobytes()
    head = DATA_HEAD.pack(first_sample & 0xFFFFFFFF, n_ch, n_samp, sb, 0, lead_off & 0xFFFFFFFF)
    return head + raw


def encode_data(seq: int, first_sample: int, counts: np.ndarray, lead_off: int = 0, sample_bits: int = 24) -> bytes:
    """One DATA frame (:func:`data_payload`): ``counts`` (n_samp, n_ch) from sample ``first_sample``, the
    lead-off bit mask ``lead_off``; ValueError when a count does not fit ``sample_bits`` or the payload is too big."""
    return encode_frame(T_DATA, seq, data_payload(first_sample, counts, lead_off, sample_bits))


def info_payload(info: DeviceInfo) -> bytes:
    """Payload of an INFO frame describing ``info`` (``INFO_HEAD``, the comma-joined channel names, NUL, the
    UTF-8 description); fs and gain travel as float32 (:func:`f32_info`)."""
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
        board=Board.NATIVE,
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
    """A STATUS frame: the code (``ST_*``) then ``extra``."""
    return encode_frame(T_STATUS, seq, bytes([code]) + extra)


def encode_error(seq: int, code: int, message: str = "") -> bytes:
    """An ERROR frame: the code (``ERR_*``) then ``message`` in UTF-8."""
    return encode_frame(T_ERROR, seq, bytes([code]) + message.encode("utf-8"))


def _sample_bytes(sample_bits: int) -> int:
    if sample_bits not in (16, 24):
        raise ValueError(f"sample_bits must be 16 or 24, not {sample_bits}")
    return sample_bits // 8


def _fitting_sample_bytes(counts: np.ndarray, sample_bits: int) -> int:
    """The bytes a sample of ``sample_bits`` takes, if every one of ``counts`` (int64) fits; ValueError if not."""
    sb = _sample_bytes(sample_bits)
    lim = 1 << (8 * sb - 1)
    if counts.size and (counts.min() < -lim or counts.max() >= lim):
        raise ValueError(f"sample outside the {sample_bits}-bit range")
    return sb


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
    sb = _fitting_sample_bytes(c, sample_bits)
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
