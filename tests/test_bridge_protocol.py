"""The native protocol against its spec: golden vectors (Python and the C encoder), and parsers
(native, Cyton, ASCII) under random corruption (hypothesis)."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
from binascii import crc_hqx
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import cyton as cy
from firmware_bridge import protocol as pr
from firmware_bridge.ascii_lines import AsciiParser, format_lines
from firmware_bridge.info import DeviceInfo
from firmware_bridge.native_parser import NativeParser

FB = Path(__file__).resolve().parent.parent / "firmware_bridge"
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def golden() -> dict[str, str]:
    text = (FB / "PROTOCOL.md").read_text()
    block = text.split("<!-- golden:begin -->")[1].split("<!-- golden:end -->")[0]
    lines = [ln.split() for ln in block.strip().strip("`").strip().splitlines() if ln.strip()]
    return {k: v for k, v in lines}


def python_vectors() -> dict[str, str]:
    info = DeviceInfo("native", 500.0, ("I", "II", "V1"), 0.5, 24, 1, 24, 2, "demo")
    return {
        "crc_check": "%04x" % crc_hqx(b"123456789", 0xFFFF),
        "crc_init": "%04x" % pr.crc_init(),
        "hello": pr.encode_frame(pr.T_HELLO, 0).hex(),
        "start": pr.encode_frame(pr.T_START, 1).hex(),
        "stop": pr.encode_frame(pr.T_STOP, 2).hex(),
        "ping": pr.encode_frame(pr.T_PING, 3, b"ecg").hex(),
        "pong": pr.encode_frame(pr.T_PONG, 4, b"ecg").hex(),
        "info": pr.encode_frame(pr.T_INFO, 0, pr.info_payload(info)).hex(),
        "data24": pr.encode_data(7, 1000, np.array([[1, -1, 8388607], [-8388608, 256, -256]]), 0x4).hex(),
        "data16": pr.encode_data(0xFFFF, 0, np.array([[32767, -32768]]), 0, 16).hex(),
        "status_started": pr.encode_status(8, pr.ST_STARTED).hex(),
        "error_bad_command": pr.encode_error(9, pr.ERR_BAD_COMMAND, "bad cmd").hex(),
    }


def test_python_encoder_matches_golden_vectors():
    g = golden()
    assert len(g) == 12 and g["crc_check"] == "29b1"
    assert python_vectors() == g


def test_c_encoder_matches_golden_vectors(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot compile firmware_bridge/c/ecgret_frame.c on this host")
    exe = tmp_path / "golden"
    cmd = [gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2",
           str(FB / "c" / "golden_main.c"), str(FB / "c" / "ecgret_frame.c"), "-o", str(exe)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True, timeout=10).stdout
    got = dict(ln.split() for ln in out.strip().splitlines())
    assert got == golden()


def test_golden_frames_parse_back():
    g = golden()
    blob = b"".join(bytes.fromhex(g[k]) for k in g if not k.startswith("crc"))
    frames = list(NativeParser().feed(blob))
    assert [f.type for f in frames] == [0x10, 0x11, 0x12, 0x13, 0x05, 0x01, 0x02, 0x02, 0x03, 0x04]
    info = pr.decode_info(frames[5].payload)
    assert info.channel_names == ("I", "II", "V1") and info.fs == 500.0 and info.gain_uv == 0.5
    assert info.samples_per_frame == 2 and info.description == "demo"
    blocks = NativeParser().feed(bytes.fromhex(g["data24"])).data()
    assert blocks[0].counts.tolist() == [[[1, -1, 8388607], [-8388608, 256, -256]]]
    assert blocks[0].lead_off.tolist() == [[False, False, True]] and blocks[0].first_sample.tolist() == [1000]
    b16 = NativeParser().feed(bytes.fromhex(g["data16"])).data()[0]
    assert b16.counts.tolist() == [[[32767, -32768]]]


def test_wrong_protocol_version_fails_every_crc():
    frame = pr.encode_frame(pr.T_HELLO, 0, version=2)
    p = NativeParser()
    assert len(p.feed(frame)) == 0 and p.stats["crc_errors"] == 1


def test_vectorised_encoder_equals_frame_encoder():
    rng = np.random.default_rng(3)
    c = rng.integers(-2 ** 23, 2 ** 23, (40, 3, 5))
    lo = rng.integers(0, 32, 40)
    blob, flen = pr.encode_data_frames(65530, 2 ** 32 - 7, c, lo)
    ref = b"".join(pr.encode_data((65530 + i) & 0xFFFF, (2 ** 32 - 7 + 3 * i) & 0xFFFFFFFF, c[i], int(lo[i]))
                   for i in range(40))
    assert blob == ref and flen * 40 == len(blob)


def _stream(n, rng, spf=1, ch=4):
    counts = rng.integers(-2 ** 23, 2 ** 23, (n, spf, ch))
    frames = [pr.encode_data(i, i * spf, counts[i]) for i in range(n)]
    return frames, counts


def test_resync_within_one_frame_after_a_bit_flip():
    frames, counts = _stream(10, np.random.default_rng(0))
    bad = bytearray(frames[3])
    bad[12] ^= 0x10
    p = NativeParser()
    got = list(p.feed(b"".join(frames[:3]) + bytes(bad) + b"".join(frames[4:])))
    assert [f.seq for f in got] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert p.stats["crc_errors"] >= 1 and p.stats["frames_missing"] == 1 and p.stats["dropped_samples"] == 1
    assert p.stats["resyncs"] == 1 and p.stats["seq_gaps"] == 1


def test_byte_by_byte_feeding_equals_one_shot():
    frames, _ = _stream(30, np.random.default_rng(1), spf=2)
    blob = b"\x00\xa5" + b"".join(frames) + b"\xa5"
    one = [(f.seq, f.payload) for f in NativeParser().feed(blob)]
    p = NativeParser()
    many = [(f.seq, f.payload) for i in range(len(blob)) for f in p.feed(blob[i:i + 1])]
    assert one == many and len(one) == 30


corruption = st.lists(
    st.tuples(st.sampled_from(["flip", "drop", "insert", "garbage", "truncate"]), st.floats(0, 1),
              st.integers(0, 255)),
    max_size=8)


@pytest.mark.slow
@SETTINGS
@given(n=st.integers(1, 25), spf=st.integers(1, 3), ops=corruption, cuts=st.lists(st.floats(0, 1), max_size=6),
       seed=st.integers(0, 2 ** 16), sample_bits=st.sampled_from([16, 24]))
def test_native_parser_under_random_corruption(n, spf, ops, cuts, seed, sample_bits):
    rng = np.random.default_rng(seed)
    lim = 1 << (sample_bits - 1)
    counts = rng.integers(-lim, lim, (n, spf, 3))
    frames = [pr.encode_data(i, i * spf, counts[i], int(rng.integers(0, 8)), sample_bits) for i in range(n)]
    frames.insert(n // 2, pr.encode_status(9999, pr.ST_LEAD_OFF, b"\x01\x00\x00\x00"))
    # the stream as a list of (byte, frame id) so we know which frames were touched
    owner = [i for i, f in enumerate(frames) for _ in f]
    data = list(b"".join(frames))
    damaged = set()
    for op, where, val in ops:
        if not data:
            break
        k = min(int(where * len(data)), len(data) - 1)
        if op == "flip":
            data[k] ^= 1 << (val % 8)
            damaged.add(owner[k])
        elif op == "drop":
            damaged.add(owner[k])
            del data[k], owner[k]
        elif op in ("insert", "garbage"):
            junk = [val] if op == "insert" else list(rng.integers(0, 256, 40))
            # inserting inside a frame damages it; between frames it damages nothing
            if k > 0 and owner[k - 1] == owner[k]:
                damaged.add(owner[k])
            data[k:k] = junk
            owner[k:k] = [-1] * len(junk)
        else:  # truncate the stream here
            damaged.update(owner[k:])
            del data[k:], owner[k:]
    blob = bytes(data)
    p = NativeParser()
    got = []
    pos = 0
    for c in sorted(cuts) + [1.0]:
        end = int(c * len(blob))
        got += list(p.feed(blob[pos:end]))
        pos = max(pos, end)
    originals = {(f.type, f.seq, f.payload) for f in NativeParser().feed(b"".join(frames))}
    got_keys = [(f.type, f.seq, f.payload) for f in got]
    # never a frame that was not sent (a bad CRC is never accepted)
    assert all(k in originals for k in got_keys)
    # every intact frame recovered, in order
    intact = [(f.type, f.seq, f.payload) for i, f in enumerate(NativeParser().feed(b"".join(frames)))
              if i not in damaged]
    assert [k for k in got_keys if k in set(intact)] == intact
    assert p.stats["frames"] == len(got)


@pytest.mark.slow
@SETTINGS
@given(blob=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=5))
def test_parsers_never_raise_on_garbage(blob, cuts):
    for parser in (NativeParser(), cy.CytonParser(), AsciiParser()):
        pos = 0
        for c in sorted(cuts) + [len(blob)]:
            parser.feed(blob[pos:c])
            pos = max(pos, c)
        assert parser.stats["bytes"] == len(blob)


def test_noise_yields_no_native_frames():
    rng = np.random.default_rng(7)
    p = NativeParser()
    for _ in range(20):
        assert len(p.feed(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())) == 0
    assert p.stats["frames"] == 0 and p.stats["bytes_skipped"] > 90_000


# ---------------------------------------------------------------------------------------------- Cyton


def test_cyton_packet_layout_matches_openbci_format():
    pkt = cy.encode_packets(np.array([5]), np.array([[1, -1, 0x7FFFFF, -0x800000, 256, 0, 2, 3]]))
    assert len(pkt) == 33 and pkt[0] == 0xA0 and pkt[1] == 5 and pkt[32] == 0xC0
    assert pkt[2:5] == b"\x00\x00\x01" and pkt[5:8] == b"\xff\xff\xff" and pkt[8:11] == b"\x7f\xff\xff"
    assert pkt[11:14] == b"\x80\x00\x00" and pkt[14:17] == b"\x00\x01\x00"
    assert abs(cy.scale_uv(24) - 0.02235174) < 1e-7  # 4.5 V / 24 / (2^23 - 1)
    p = cy.CytonParser()
    assert len(p.feed(pkt)) == 0  # the last packet waits for one more byte ...
    b = p.flush()  # ... or for a pause
    assert b.counts.tolist() == [[1, -1, 0x7FFFFF, -0x800000, 256, 0, 2, 3]]


@pytest.mark.slow
@SETTINGS
@given(n=st.integers(3, 40), ops=st.lists(st.tuples(st.sampled_from(["drop", "flip_frame"]), st.floats(0, 1)),
                                            max_size=5), seed=st.integers(0, 1000))
def test_cyton_parser_recovers_intact_packets(n, ops, seed):
    rng = np.random.default_rng(seed)
    counts = rng.integers(-2 ** 23, 2 ** 23, (n, 8))
    packets = [cy.encode_packets(np.array([i]), counts[i:i + 1]) for i in range(n)]
    owner = [i for i, p in enumerate(packets) for _ in p]
    data = list(b"".join(packets))
    damaged = set()
    for op, where in ops:
        k = min(int(where * len(data)), len(data) - 1)
        if op == "drop":
            damaged.add(owner[k])
            del data[k], owner[k]
        else:  # break a header or footer byte
            j = k - (k % 33) if k % 33 else k
            data[j] ^= 0x01
            damaged.add(owner[j])
    p = cy.CytonParser()
    got = []
    for b in (p.feed(bytes(data)), p.flush()):
        got += [(int(s), tuple(c.tolist())) for s, c in zip(b.sample_number, b.counts)]
    sent = {(i, tuple(counts[i].tolist())) for i in range(n)}
    for i in range(n):  # every packet whose neighbours are intact too is recovered
        if not damaged & {i - 1, i, i + 1}:
            assert (i, tuple(counts[i].tolist())) in got
    # anything accepted that was never sent comes from a damaged packet (Cyton has no CRC)
    assert sum(g not in sent for g in got) <= len(damaged)


# ---------------------------------------------------------------------------------------------- ASCII


def test_ascii_parser_lines_comments_leadoff_and_bad_lines():
    p = AsciiParser()
    text = b"junk-partial\n# ecgret-sim fs=500 channels=I,II\n1.5,2\n!\nx,y\n3,4\n5,6,7\n8"
    b = p.feed(text)
    assert p.header_fs == 500.0 and p.header_channels == ("I", "II")
    assert b.bad.tolist() == [False, False, True, False, True]
    assert b.lead_off.tolist() == [False, True, False, False, False]
    assert b.values[0].tolist() == [1.5, 2.0] and b.values[3].tolist() == [3.0, 4.0]
    assert p.feed(b",9\n").values.tolist() == [[8.0, 9.0]]
    assert format_lines(np.array([[1.0, -2.5]])) == b"1.0000,-2.5000\n"


def test_firmware_bridge_never_imports_edge_or_convert():
    for path in FB.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for nm in names:
                assert not re.match(r"(edge|convert|tensorflow|torch)(\.|$)", nm), f"{path} imports {nm}"
