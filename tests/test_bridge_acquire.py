"""Boards end to end over a real pty (and loop://): a real recording streamed by the simulator and
read back by ``acquire``, bit for bit, with faults, reconnects, and every kind of bad input."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import tty

import numpy as np
import pytest
import serial
from click.testing import CliRunner

from firmware_bridge import protocol as pr
from firmware_bridge.acquire import acquire
from firmware_bridge.boards import NativeDriver
from firmware_bridge.errors import (BridgeError, FaultSpecError, HandshakeError, IncompatibleDeviceError,
                                    NoSignalError, PortError)
from firmware_bridge.faults import parse_faults
from firmware_bridge.info import LEADS8
from firmware_bridge.simulator import Simulator



@pytest.fixture(scope="module")
def rec(shared_data):
    """HR06005 (500 Hz, 12 leads, mV), I, II, V1-V6."""
    from edge.io import read_record

    r = read_record(shared_data / "cinc2021-sample" / "HR06005")
    cols = [r.leads.index(x) for x in LEADS8]
    return r.signal[:, cols], float(r.fs)


def _sim(rec, board="native", seconds=None, **kw):
    x, fs = rec
    if seconds is not None:
        x = x[: int(seconds * fs)]
    kw.setdefault("speed", 0)
    return Simulator(x, fs, LEADS8, board=board, **kw)


@pytest.mark.parametrize("board,bits", [("native", 24), ("native", 16), ("cyton", 24), ("ascii", 24)])
def test_recording_round_trips_bit_identical(rec, board, bits):
    # an ASCII board streams from power-up and has no sample counter: where the reader joins is
    # unknown (pyserial flushes input on open), so it loops and the check aligns on the first row
    with _sim(rec, board, sample_bits=bits, loop=board == "ascii") as sim:
        # the ASCII simulator announces fs and channel names in a comment line every second
        acq = acquire(sim.port, board, sim.n / sim.fs, timeout=5)
        expected = sim.expected_mv()
    if board == "ascii":
        n = expected.shape[0]
        starts = [k for k in range(n) if np.array_equal(expected[(k + np.arange(200)) % n], acq.signal_mv[:200])]
        assert len(starts) == 1
        expected = expected[(starts[0] + np.arange(n)) % n]
    assert acq.signal_mv.shape == expected.shape and acq.signal_mv.dtype == np.float64
    assert np.array_equal(acq.signal_mv, expected)  # bit-identical, no gap
    assert not acq.gap_mask.any() and not acq.lead_off.any()
    assert acq.channel_names == LEADS8 and acq.fs == (250.0 if board == "cyton" else 500.0)
    assert acq.stats["gap_samples"] == 0 and acq.stats["samples"] == expected.shape[0]
    if board == "native":
        assert acq.device_info["protocol_version"] == 1 and acq.device_info["sample_bits"] == bits
        # and the values are the recording's, quantised to the board's gain
        x = rec[0]
        assert np.max(np.abs(acq.signal_mv - x)) <= sim.info.gain_uv / 1000 / 2 + 1e-12
    if board == "cyton":
        assert acq.device_info["gain_uv"] == pytest.approx(4.5e6 / 24 / (2 ** 23 - 1))


def test_native_samples_per_frame_and_progress(rec):
    seen = []
    with _sim(rec, seconds=2, samples_per_frame=5) as sim:
        acq = acquire(sim.port, "native", 2.0, on_progress=lambda d, n: seen.append((d, n)))
        assert np.array_equal(acq.signal_mv, sim.expected_mv())
    assert seen[-1] == (1000, 1000) and all(d <= n for d, n in seen)


def test_faults_every_intact_frame_kept_every_bad_one_counted(rec):
    faults = "bitflip:0.002,drop:0.001,insert:0.001"
    with _sim(rec, faults=faults, seed=4) as sim:
        acq = acquire(sim.port, "native", sim.n / sim.fs, timeout=5)
        expected = sim.expected_mv()
        damaged = np.asarray(sim.damaged_rows)
    assert damaged.size > 50
    lost = np.zeros(sim.n, bool)
    lost[damaged] = True
    assert np.array_equal(acq.gap_mask, lost)  # gaps exactly where frames were damaged
    assert np.array_equal(acq.signal_mv[~lost], expected[~lost])  # intact samples bit-identical
    assert np.isnan(acq.signal_mv[lost]).all()  # never silently joined
    assert acq.stats["dropped_samples"] + int(lost[-1]) >= damaged.size - 1
    assert acq.stats["crc_errors"] > 0 and acq.stats["resyncs"] > 0


def test_cyton_gaps_are_flagged_not_joined(rec):
    with _sim(rec, "cyton", faults="drop:0.002", seed=1, loop=True) as sim:
        acq = acquire(sim.port, "cyton", 10.0, timeout=5)
        expected = sim.expected_mv()
    assert acq.gap_mask.any()
    kept = ~acq.gap_mask
    assert np.array_equal(acq.signal_mv[kept], expected[: acq.n_samples][kept])
    assert np.isnan(acq.signal_mv[acq.gap_mask]).all()


def test_lead_off_is_reported_per_channel(rec):
    with _sim(rec, seconds=6, faults="leadoff:V1@2-4s") as sim:
        acq = acquire(sim.port, "native", 6.0)
    v1 = LEADS8.index("V1")
    want = np.zeros(3000, bool)
    want[1000:2000] = True
    assert np.array_equal(acq.lead_off[:, v1], want)
    assert not np.delete(acq.lead_off, v1, axis=1).any()
    assert acq.stats["lead_off_samples"] == 1000


def test_disconnect_reconnects_and_flags_the_gap(rec):
    with _sim(rec, faults="disconnect:3s+1s") as sim:
        acq = acquire(sim.port, "native", 10.0, timeout=5)
        expected = sim.expected_mv()
        assert sim.stats["disconnects"] == 1
    assert acq.stats["reconnects"] == 1
    # one flagged gap covering the second the link was down; frames still in the pty when it dropped are
    # lost with it (flagged, never wrong), so the gap may start a little earlier: at most 0.5 s more in all
    g = np.flatnonzero(acq.gap_mask)
    assert g.size and np.all(np.diff(g) == 1) and g[0] <= 1500 and g[-1] >= 1999 and g.size <= 750, \
        (g[:1], g[-1:], g.size)
    kept = ~acq.gap_mask
    assert np.array_equal(acq.signal_mv[kept], expected[kept])


def test_stop_event_ends_early(rec):
    stop = threading.Event()
    stop.set()
    with _sim(rec, seconds=2) as sim:
        acq = acquire(sim.port, "native", 2.0, stop_event=stop)
    assert acq.n_samples == 0


# ---------------------------------------------------------------------------------------------- bad input


def _raw_pty():
    m, s = os.openpty()
    tty.setraw(s)
    return m, s, os.ttyname(s)


def test_port_that_does_not_exist():
    with pytest.raises(PortError, match="does not exist"):
        acquire("/dev/ecgret-no-such-port", "native", 1.0)


def test_port_that_is_busy():
    m, s, path = _raw_pty()
    holder = serial.serial_for_url(path, exclusive=True)
    try:
        with pytest.raises(PortError, match="busy"):
            acquire(path, "native", 1.0, timeout=0.5)
    finally:
        holder.close()
        os.close(m)
        os.close(s)


@pytest.mark.parametrize("board", ["native", "cyton", "ascii"])
def test_board_that_never_answers(board):
    m, s, path = _raw_pty()
    try:
        with pytest.raises(HandshakeError, match="within 0.5 s"):
            acquire(path, board, 1.0, timeout=0.5, fs=500.0)
    finally:
        os.close(m)
        os.close(s)


@pytest.mark.parametrize("board", ["native", "cyton", "ascii"])
def test_pure_noise(board):
    m, s, path = _raw_pty()
    stop = threading.Event()
    rng = np.random.default_rng(0)

    def noise():
        while not stop.is_set():
            try:
                os.write(m, rng.integers(0, 256, 256, dtype=np.uint8).tobytes())
            except BlockingIOError:
                pass
            stop.wait(0.005)

    os.set_blocking(m, False)
    t = threading.Thread(target=noise, daemon=True)
    t.start()
    try:
        with pytest.raises(NoSignalError, match="noise"):
            acquire(path, board, 1.0, timeout=0.5, fs=500.0)
    finally:
        stop.set()
        t.join()
        os.close(m)
        os.close(s)


def test_noise_after_handshake(rec):
    with _sim(rec, seconds=2, faults="bitflip:0.5") as sim:
        with pytest.raises(NoSignalError, match="noise"):
            acquire(sim.port, "native", 2.0, timeout=0.5)


def test_board_with_unusable_rate_or_channels(rec):
    with _sim(rec, seconds=1) as sim:
        with pytest.raises(IncompatibleDeviceError, match="500 Hz; usable rates: 250"):
            acquire(sim.port, "native", 1.0, accept_fs=(250,))
        with pytest.raises(IncompatibleDeviceError, match="8 channel"):
            acquire(sim.port, "native", 1.0, accept_fs=(500,), accept_channels=(12,))
        acq = acquire(sim.port, "native", 1.0, accept_fs=(500,), accept_channels=(8, 12))
    assert acq.n_samples == 500


def test_fault_spec_errors():
    f = parse_faults("bitflip:0.001, drop:0.002,leadoff:V1@2-4s,disconnect:5s,disconnect:1s+2s")
    assert f.bitflip == 0.001 and f.leadoff == (("V1", 2.0, 4.0),) and f.disconnect == ((1.0, 2.0), (5.0, 1.0))
    for bad in ("bitflip:x", "leadoff:V1@4-2s", "wobble:1", "drop:0.9",
                # 1e308 s overflowed the sample clock (an internal OverflowError in the simulator)
                "disconnect:1e308s", "disconnect:0s+1e308s", "leadoff:V1@0-1e308s", "disconnect:1e999s"):
        with pytest.raises(FaultSpecError):
            parse_faults(bad)
    assert issubclass(FaultSpecError, BridgeError)


def test_native_driver_over_loop_url():
    ser = serial.serial_for_url("loop://", timeout=0.02)
    info = pr.info_payload(pr.decode_info(bytes.fromhex(
        "010318030000fa430000003f0200492c49492c56310064656d6f")))
    drv = NativeDriver()
    # a "board" keeps answering on the line until the handshake has read it; loop:// also echoes
    # our own commands back, which the driver ignores
    done = threading.Event()

    def board():
        while not done.is_set():
            ser.write(pr.encode_frame(pr.T_INFO, 0, info))
            done.wait(0.01)

    t = threading.Thread(target=board, daemon=True)
    t.start()
    try:
        got = drv.handshake(ser, 5.0)
    finally:
        done.set()
        t.join()
    ser.reset_input_buffer()
    drv.parser.reset()
    assert got.channel_names == ("I", "II", "V1") and got.samples_per_frame == 2
    ser.write(pr.encode_data(1, 10, np.array([[1, 2, 3], [4, 5, 6]])) + pr.encode_data(3, 14, np.array([[7, 8, 9]] * 2)))
    chunk = drv.feed(ser.read(4096))
    assert chunk.index.tolist() == [0, 1, 4, 5]  # samples 12 and 13 lost: a hole, not a join
    assert chunk.mv[:, 0].tolist() == [0.0005, 0.002, 0.0035, 0.0035]
    ser.close()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_ports_json():
    from edge.cli_board import ports

    r = CliRunner().invoke(ports, ["--json", "--all"])
    assert r.exit_code == 0
    import json

    for line in r.output.splitlines():
        assert {"device", "description", "hwid"} <= set(json.loads(line))


def test_cli_simulate_bad_input_is_one_clear_line(tmp_path):
    from edge.cli_board import simulate

    r = CliRunner().invoke(simulate, ["--record", str(tmp_path / "nope.hea")])
    assert r.exit_code != 0 and "Error:" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(simulate, ["--faults", "wobble:1", "--duration", "0.1"])
    assert r.exit_code != 0 and "unknown fault" in r.output


def test_cli_simulate_in_a_separate_process_feeds_acquire(shared_data, tmp_path):
    link = tmp_path / "board"
    code = "from edge.cli_board import simulate; simulate(prog_name='ecgret simulate')"
    env = dict(os.environ, ECGRET_DATA=str(shared_data))
    p = subprocess.Popen([sys.executable, "-c", code, "--board", "native", "--speed", "0", "--link", str(link),
                          "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = p.stdout.readline().strip()
        assert port == str(link)
        acq = acquire(port, "native", 10.0, timeout=10)
        assert acq.channel_names == LEADS8 and not acq.gap_mask.any()
        assert acq.device_info["description"].startswith("ecgret simulator")
    finally:
        p.terminate()
        p.wait(10)


def test_ascii_board_with_wrong_channel_names(rec):
    x, fs = rec
    with Simulator(x[:1000, :2], fs, ("I", "II"), board="ascii", speed=0, loop=True) as sim:
        with pytest.raises(IncompatibleDeviceError, match="2 value"):
            acquire(sim.port, "ascii", 1.0, fs=500.0, channel_names=("I", "II", "V1"), timeout=2)


def test_list_ports_returns_described_ports():
    from firmware_bridge.ports import PortInfo, list_ports

    ports = list_ports(all_ports=True)
    assert all(isinstance(p, PortInfo) and p.device and isinstance(p.description, str) for p in ports)
    assert {p.device for p in list_ports()} <= {p.device for p in ports}


def test_cli_simulate_cyton_prints_its_port():
    from edge.cli_board import simulate

    r = CliRunner().invoke(simulate, ["--board", "cyton", "--speed", "0", "--duration", "0.5"])
    assert r.exit_code == 0, r.output
    assert any(line.endswith("/tty") for line in r.output.splitlines())
    assert "cyton board" in r.output and "I,II,V1,V2,V3,V4,V5,V6" in r.output


def test_a_lost_last_sample_does_not_stall_a_continuing_stream(rec):
    x, fs = rec
    # seed 3 damages the frame of sample 499 (the simulator's fault pattern is deterministic at speed 0)
    with Simulator(x[:500], fs, LEADS8, speed=0, loop=True, faults="drop:0.02", seed=3) as sim:
        acq = acquire(sim.port, "native", 1.0, timeout=2)
        assert 499 in sim.damaged_rows
    assert acq.n_samples == 500 and acq.gap_mask[-1] and np.isnan(acq.signal_mv[-1]).all()


@pytest.mark.parametrize("board", ["cyton", "native"])
def test_channel_names_of_the_wrong_count_are_refused(rec, board):
    """--channels naming 3 of a board's 8 channels was silently ignored (generic names, then "no known ECG lead
    among ch1, ..."): one clear error now."""
    from firmware_bridge.errors import IncompatibleDeviceError
    with _sim(rec, board=board, speed=0) as sim:
        with pytest.raises(IncompatibleDeviceError, match="8 channels but --channels names 3"):
            acquire(sim.port, board, 1.0, channel_names=("I", "II", "V1"))
