"""Fuzzing the board byte streams: the three parsers, the handshakes (native INFO frames, the Cyton banner, the
ASCII ``# fs=`` header) and the drivers' decoding after a handshake, on hypothesis-generated streams that mix
garbage with CRC-valid frames whose fields are hostile (rates of 0, NaN or 1e8, 255 channels, escape sequences
in names, inconsistent lengths), cut at random points.

Per target: ``ECGRET_FUZZ_EXAMPLES`` inputs (default 2,000, what CI runs; a longer run sets e.g. 50000), a
per-input deadline, 0 unhandled exceptions (a handshake may only raise the bridge's own errors), parser state
bounded, and the traced memory of one input under 300 MB (every 4th input traced). Fixed seeds
(``derandomize``): a failure reproduces.
"""
from __future__ import annotations

import contextlib
import os
import tracemalloc
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import cyton as cy
from firmware_bridge import protocol as pr
from firmware_bridge.ascii_lines import MAX_LINE, AsciiParser
from firmware_bridge.boards import make_driver
from firmware_bridge.driver import Chunk
from firmware_bridge.errors import BridgeError
from firmware_bridge.info import LEADS8, MAX_CHANNELS, MAX_FS, MIN_FS, check_info
from firmware_bridge.native_parser import NativeParser

N = int(os.environ.get("ECGRET_FUZZ_EXAMPLES", "2000"))
MEMORY_LIMIT = 300e6
# fixed seeds by default; ECGRET_FUZZ_RANDOM=1 with pytest --hypothesis-seed=K runs other inputs (long runs)
FUZZ = settings(max_examples=N, deadline=timedelta(seconds=2), database=None,
                derandomize=not os.environ.get("ECGRET_FUZZ_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much], print_blob=True)


_seen = [0]


@contextlib.contextmanager
def _bounded_memory():
    """Trace the allocations of one input's processing (not of hypothesis generating it): peak < 300 MB.
    Every 4th input is traced (tracing makes numpy-heavy code ~5x slower; the inputs differ little in kind)."""
    _seen[0] += 1
    if _seen[0] % 4:
        yield
        return
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_LIMIT, f"{peak / 1e6:.0f} MB for one input"


# ------------------------------------------------------------------------------------------- strategies

hostile_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                          st.sampled_from([0.0, -0.0, 1e8, 3e7, MAX_FS, MAX_FS * 1.0001, MIN_FS, 9.99, 250.0, 500.0,
                                           1e-30, -500.0]))
name_text = st.one_of(st.sampled_from(["I", "II", "V1", "aVR", "ch1", "\x1b[2J", "", " ", "I", "x" * 40, "\u202e"]),
                      st.text(max_size=12))


@st.composite
def info_payloads(draw):
    names = draw(st.lists(name_text, max_size=40))
    n_ch = draw(st.one_of(st.just(len(names)), st.integers(0, 255)))
    head = pr.INFO_HEAD.pack(draw(st.sampled_from([1, 1, 1, 0, 2, 255])), n_ch, draw(st.integers(0, 255)),
                             draw(st.sampled_from([2, 3, 3, 0, 1, 4, 255])), draw(hostile_float),
                             draw(hostile_float), draw(st.integers(0, 255)), draw(st.integers(0, 255)))
    body = ",".join(names).encode("utf-8", "surrogatepass")
    tail = draw(st.one_of(st.just(b"\x00" + b"ecgret"), st.binary(max_size=40)))
    payload = head + body + tail
    return draw(st.one_of(st.just(payload), st.just(payload[: draw(st.integers(0, len(payload)))])))


@st.composite
def data_payloads(draw):
    if draw(st.booleans()):  # consistent: what a board sends (samples as raw little-endian bytes)
        sb = draw(st.sampled_from([2, 3]))
        ns, ch = draw(st.integers(1, 4)), draw(st.integers(1, 12))
        head = pr.DATA_HEAD.pack(draw(st.integers(0, 2 ** 32 - 1)), ch, ns, sb, 0, draw(st.integers(0, 2 ** 32 - 1)))
        return head + draw(st.binary(min_size=ns * ch * sb, max_size=ns * ch * sb))
    head = pr.DATA_HEAD.pack(draw(st.integers(0, 2 ** 32 - 1)), draw(st.integers(0, 255)), draw(st.integers(0, 255)),
                             draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(st.integers(0, 2 ** 32 - 1)))
    return head + draw(st.binary(max_size=120))


@st.composite
def native_segments(draw):
    kind = draw(st.sampled_from(["garbage", "info", "data", "data", "status", "error", "any", "truncated",
                                 "syncs"]))
    seq = draw(st.integers(0, 0xFFFF))
    if kind == "garbage":
        return draw(st.binary(max_size=120))
    if kind == "syncs":  # many candidate frames, nested and overlapping
        return b"\xa5\x5a" * draw(st.integers(1, 120)) + draw(st.binary(max_size=12))
    if kind == "info":
        return pr.encode_frame(pr.T_INFO, seq, draw(info_payloads())[: pr.MAX_PAYLOAD])
    if kind == "data":
        return pr.encode_frame(pr.T_DATA, seq, draw(data_payloads())[: pr.MAX_PAYLOAD])
    if kind == "status":
        return pr.encode_status(seq, draw(st.integers(0, 255)), draw(st.binary(max_size=8)))
    if kind == "error":
        return pr.encode_frame(pr.T_ERROR, seq, draw(st.binary(max_size=60)))
    frame = pr.encode_frame(draw(st.integers(0, 255)), seq, draw(st.binary(max_size=150)))
    if kind == "truncated":
        frame = frame[: draw(st.integers(0, len(frame)))]
    return frame


@st.composite
def mutated(draw, segments):
    blob = bytearray(b"".join(draw(st.lists(segments, max_size=6))))
    for _ in range(draw(st.integers(0, 3))):
        if not blob:
            break
        k = draw(st.integers(0, len(blob) - 1))
        op = draw(st.sampled_from(["flip", "drop", "insert"]))
        if op == "flip":
            blob[k] ^= 1 << draw(st.integers(0, 7))
        elif op == "drop":
            del blob[k]
        else:
            blob.insert(k, draw(st.integers(0, 255)))
    return bytes(blob)


def chunks(blob_strategy):
    return st.tuples(blob_strategy, st.lists(st.floats(0, 1), max_size=6)).map(
        lambda t: _cut(t[0], t[1]))


def _cut(blob: bytes, cuts) -> list[bytes]:
    out, pos = [], 0
    for c in sorted(cuts) + [1.0]:
        end = int(c * len(blob))
        out.append(blob[pos:end])
        pos = max(pos, end)
    return out


@st.composite
def cyton_segments(draw):
    kind = draw(st.sampled_from(["garbage", "packets", "packets", "badfooter", "heads", "banner"]))
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    if kind == "heads":
        return bytes([cy.HEADER]) * draw(st.integers(1, 100))
    if kind == "banner":
        names = draw(st.lists(name_text, max_size=10))
        lines = draw(st.lists(st.text(max_size=30), max_size=3))
        text = "\n".join(lines + ["Channels: " + ",".join(names)]) + draw(st.sampled_from(["$$$", "$$", ""]))
        return text.encode("utf-8", "surrogatepass")
    m = draw(st.integers(1, 8))  # packets: A0, sample number, 24 sample bytes, 6 aux bytes, footer
    body = np.frombuffer(draw(st.binary(min_size=31 * m, max_size=31 * m)), np.uint8).reshape(m, 31)
    first = draw(st.integers(0, 255))
    pk = np.zeros((m, cy.PACKET_LEN), np.uint8)
    pk[:, 0] = cy.HEADER
    pk[:, 1:32] = body
    if kind == "packets":  # consecutive sample numbers, a good footer
        pk[:, 1] = (first + np.arange(m)) % 256
        pk[:, 32] = cy.FOOTER
    else:
        pk[:, 32] = draw(st.integers(0, 255))
    return pk.tobytes()


number = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.integers(-10 ** 30, 10 ** 30).map(str),
                   st.sampled_from(["nan", "inf", "-inf", "1e308", "1e309", "", " ", "1_0", "0x10", "--1", "1e"]))


@st.composite
def ascii_segments(draw):
    kind = draw(st.sampled_from(["values", "values", "values", "header", "leadoff", "garbage", "long", "crlf"]))
    if kind == "values":
        return (",".join(draw(st.lists(number, min_size=1, max_size=draw(st.sampled_from([2, 3, 40]))))) +
                "\n").encode()
    if kind == "header":
        fs = draw(st.one_of(number, st.sampled_from(["500", "250", "0", "30000000", "1.2.3", "99999999999999"])))
        names = draw(st.one_of(st.just("I,II"), st.text("I V1,_a", max_size=30)))
        return f"# ecgret-sim fs={fs} channels={names}\n".encode("utf-8", "surrogatepass")
    if kind == "leadoff":
        return b"!\n"
    if kind == "long":
        return draw(st.sampled_from([b"#", b"1,", b"x"])) * draw(st.integers(MAX_LINE - 2, 3 * MAX_LINE)) + b"\n"
    if kind == "crlf":
        return b"0.5,0.25\r\n"
    return draw(st.binary(max_size=120))


# ------------------------------------------------------------------------------------------- parsers

def _native_parser(parts):
    p = NativeParser()
    n = 0
    for part in parts:
        batch = p.feed(part)
        n += len(batch)
        for f in batch:
            assert f.type in pr.KNOWN_TYPES and len(f.payload) <= pr.MAX_PAYLOAD
        for blk in batch.data():
            m, ns, ch = blk.counts.shape
            assert m >= 1 and ns >= 1 and ch >= 1 and blk.lead_off.shape == (m, ch)
        assert len(p._carry.buf) <= pr.MAX_FRAME  # bounded state whatever arrives
    assert p.stats["bytes"] == sum(map(len, parts)) and p.stats["frames"] == n


def _cyton_parser(parts):
    p = cy.CytonParser()
    for part in parts:
        b = p.feed(part)
        assert b.counts.shape == (len(b), cy.N_CHANNELS) and b.aux.shape == (len(b), 6)
        assert len(p._carry.buf) <= 4 * cy.PACKET_LEN
    b = p.flush()
    assert b.counts.shape == (len(b), cy.N_CHANNELS)


def _ascii_parser(parts):
    p = AsciiParser()
    for part in parts:
        b = p.feed(part)
        assert b.values.shape[0] == len(b) == b.lead_off.size
        good = ~b.bad & ~b.lead_off
        assert np.all(np.isfinite(b.values[good]))
        assert len(p._buf) <= MAX_LINE
    assert p.n_channels is None or 1 <= p.n_channels <= MAX_CHANNELS


def _drive(board: str, parts: list[bytes], **kw):
    """The handshake's pure steps over ``parts``; then the rest through the driver's decoding. Only the
    bridge's own errors may come out (one line each); what is accepted is within the bounds; chunks are well
    formed."""
    drv = make_driver(board, **kw)
    drv.handshake_reset()
    info = None
    try:
        i = 0
        while info is None and i < len(parts):
            info = drv.handshake_feed(parts[i])
            i += 1
        if info is None:
            return None
        check_info(info)  # raises if something out of bounds got through
        assert MIN_FS <= info.fs <= MAX_FS and 1 <= info.n_channels <= MAX_CHANNELS
        ch = info.n_channels
        for part in parts[i:] + [b""]:
            _chunk_ok(drv.feed(part), ch)
        _chunk_ok(drv.flush(), ch)
        drv.resume(1.5)
        _chunk_ok(drv.feed(parts[-1] if parts else b""), ch)
    except BridgeError as e:
        assert str(e) and "\n" not in str(e)
    return info


def _chunk_ok(c: Chunk, ch: int) -> None:
    k = len(c)
    assert c.index.shape == (k,) and c.index.dtype == np.int64
    assert c.mv.shape == (k, ch) and c.lead_off.shape == (k, ch)
    if k:
        assert np.all(np.diff(c.index) >= 0)


# Each board's test feeds one generated stream to the I/O-free parser AND to the driver's handshake and
# decoding (two targets, the same N inputs: generating the inputs is what costs).

@pytest.mark.slow
@FUZZ
@given(parts=chunks(mutated(native_segments())))
def test_fuzz_native_stream(parts):
    with _bounded_memory():
        _native_parser(parts)
        _drive("native", parts)


@pytest.mark.slow
@FUZZ
@given(parts=chunks(mutated(cyton_segments())), named=st.booleans())
def test_fuzz_cyton_stream(parts, named):
    with _bounded_memory():
        _cyton_parser(parts)
        _drive("cyton", parts, channel_names=LEADS8 if named else None)


@pytest.mark.slow
@FUZZ
@given(parts=chunks(st.lists(ascii_segments(), max_size=20).map(b"".join)),
       fs=st.sampled_from([None, None, 500.0, 250.0]))
def test_fuzz_ascii_stream(parts, fs):
    with _bounded_memory():
        _ascii_parser(parts)
        _drive("ascii", [b"\n"] + parts, fs=fs)


@pytest.mark.slow
@FUZZ
@given(payload=info_payloads())
def test_fuzz_decode_info(payload):
    try:
        info = pr.decode_info(payload)
    except ValueError:
        return
    assert info.n_channels == len(info.channel_names) and info.sample_bits in (16, 24)


def test_fuzz_inputs_reach_the_interesting_paths():
    """The strategies are not idle: hostile INFO frames are CRC-valid and reach decode_info, and good ones
    complete a handshake (a fuzz that only ever fed noise would prove nothing)."""
    good = pr.encode_frame(pr.T_INFO, 0, pr.INFO_HEAD.pack(1, 2, 24, 3, 500.0, 0.5, 1, 0) + b"I,II\x00x")
    assert _drive("native", [good, pr.encode_data(1, 0, np.zeros((1, 2), int))]).fs == 500.0
    bad = pr.encode_frame(pr.T_INFO, 0, pr.INFO_HEAD.pack(1, 2, 24, 3, 1e8, 0.5, 1, 0) + b"I,II\x00x")
    assert _drive("native", [bad]) is None
