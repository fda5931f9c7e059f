"""Boards that lie, fail or vanish: what they declare is bounded before anything is sized from it, a rate given
on the command line must agree with the board's, and `ecgret listen` keeps what arrived, survives errors in
--loop, and never exits 0 without an answer. Fake boards run on a real pty; `listen` runs in a subprocess."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import tty

import numpy as np
import pytest

from firmware_bridge import protocol as pr
from firmware_bridge.acquire import acquire
from firmware_bridge.boards import make_driver
from firmware_bridge.errors import BridgeError, DisconnectedError, HandshakeError, IncompatibleDeviceError
from edge.paths import repo_root
from firmware_bridge.info import LEADS8, MAX_CELLS, check_recording
from firmware_bridge.simulator import Simulator
from tests.fixtures_bundle import ecgret_env, run_ecgret, test_bundle  # noqa: F401



@pytest.fixture(scope="module")
def rec(shared_data):
    from edge.io import read_record
    r = read_record(shared_data / "cinc2021-sample" / "HR06005")
    return r.signal[:, [r.leads.index(x) for x in LEADS8]], float(r.fs)


def _info_payload(fs=500.0, names=("I", "II"), gain=0.5, version=1, sb=3, spf=1, n_ch=None, desc=b"fake"):
    head = pr.INFO_HEAD.pack(version, len(names) if n_ch is None else n_ch, 24, sb, fs, gain, spf, 0)
    return head + ",".join(names).encode("latin-1") + b"\x00" + desc


def _info_frame(**kw) -> bytes:
    return pr.encode_frame(pr.T_INFO, 0, _info_payload(**kw))


class FakeBoard:
    """A board on a pty that answers with whatever ``script(host_bytes, elapsed_s)`` returns, every 10 ms."""

    def __init__(self, tmp_path, script):
        self.script = script
        m, s = os.openpty()
        tty.setraw(s)
        os.set_blocking(m, False)
        self.master, self.slave = m, s
        self.port = str(tmp_path / "fake-tty")
        os.symlink(os.ttyname(s), self.port)
        self.stop = threading.Event()
        self.host = b""
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            r, _, _ = select.select([self.master], [], [], 0.01)
            if r:
                try:
                    self.host += os.read(self.master, 4096)
                except OSError:
                    pass
            out = self.script(self.host, time.monotonic() - t0)
            if out:
                try:
                    os.write(self.master, out)
                except OSError:
                    pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(2)
        for fd in (self.master, self.slave):
            os.close(fd)
        os.unlink(self.port)


def native_info_board(**kw):
    """Answers every HELLO with an INFO frame built from ``kw`` (and then streams nothing)."""
    state = {"answered": 0}
    hello = pr.encode_frame(pr.T_HELLO, 0)[2:3]

    def script(host, t):
        n = host.count(b"\xa5\x5a" + hello)
        if n > state["answered"]:
            state["answered"] = n
            return _info_frame(**kw)
        return b""
    return script


def ascii_board(header: bytes, values=b"0.1,0.2\n", rate_hz=200):
    """Prints ``header`` once a second and ``values`` at about ``rate_hz`` lines a second."""
    state = {"lines": 0, "headers": -1}

    def script(host, t):
        out = b""
        if int(t) > state["headers"]:
            state["headers"] = int(t)
            out += header
        due = int(t * rate_hz) - state["lines"]
        if due > 0:
            state["lines"] += due
            out += values * due
        return out
    return script


# ------------------------------------------------------------------------------------------- declared bounds

BAD_INFO = [
    dict(fs=1e8), dict(fs=3e7), dict(fs=0.0), dict(fs=float("nan")), dict(fs=float("inf")), dict(fs=-500.0),
    dict(fs=5.0), dict(gain=float("nan")), dict(gain=0.0), dict(gain=float("inf")), dict(gain=-1.0),
    dict(names=tuple(f"c{i}" for i in range(33))), dict(names=("I", "\x1b[2J")), dict(names=("I", "I")),
    dict(names=("I", "")), dict(names=("x" * 40,)), dict(spf=0),
]


@pytest.mark.parametrize("kw", BAD_INFO, ids=[repr(k)[:40] for k in BAD_INFO])
def test_native_info_outside_the_bounds_is_a_named_error(kw):
    drv = make_driver("native")
    with pytest.raises(IncompatibleDeviceError, match="INFO frame cannot be used"):
        drv.handshake_feed(_info_frame(**kw))


@pytest.mark.parametrize("kw", [dict(version=2), dict(sb=4), dict(sb=0), dict(names=("I", "II"), n_ch=3)])
def test_malformed_native_info_is_a_handshake_error(kw):
    with pytest.raises(HandshakeError, match="malformed INFO"):
        make_driver("native").handshake_feed(_info_frame(**kw))


def test_a_good_info_still_passes():
    info = make_driver("native").handshake_feed(_info_frame(fs=500.0, names=("I", "II", "V1")))
    assert info.fs == 500.0 and info.channel_names == ("I", "II", "V1")


@pytest.mark.parametrize("header,err", [
    (b"# fs=30000000 channels=I\n", "outside 10..32000 Hz"),
    (b"# fs=0\n", "outside"),
    (b"# fs=99999999999999999999999\n", "outside"),
    (b"# fs=1.2.3\n", None),                                   # unreadable: no rate declared
])
def test_ascii_header_rate_outside_the_bounds(header, err):
    drv = make_driver("ascii")
    data = b"\n" + header + b"0.1,0.2\n" * 5
    if err is None:
        assert drv.handshake_feed(data) is None
    else:
        with pytest.raises(IncompatibleDeviceError, match=err):
            drv.handshake_feed(data)


def test_ascii_declared_rate_must_agree_with_the_header():
    drv = make_driver("ascii", fs=250.0)
    with pytest.raises(IncompatibleDeviceError, match=r"fs=500 Hz but --fs \(fs\) says 250 Hz"):
        drv.handshake_feed(b"\n# ecgret-sim fs=500 channels=II\n0.1\n0.2\n")
    # the handshake can end before the board prints its header: the header mid-stream is checked too
    drv = make_driver("ascii", fs=250.0)
    assert drv.handshake_feed(b"\n0.1\n0.2\n").fs == 250.0
    with pytest.raises(IncompatibleDeviceError, match="fs=500"):
        drv.feed(b"0.3\n# fs=500\n0.4\n")
    # and a board whose header changes its rate mid-stream
    drv = make_driver("ascii")
    assert drv.handshake_feed(b"\n# fs=500\n0.1\n").fs == 500.0
    drv.feed(b"0.2\n# fs=500\n0.3\n")
    with pytest.raises(IncompatibleDeviceError, match="fs=1000 Hz but its earlier header says 500"):
        drv.feed(b"# fs=1000\n0.4\n")


def test_ascii_lines_with_too_many_or_absurd_values_are_bad_lines():
    from firmware_bridge.ascii_lines import AsciiParser
    p = AsciiParser()
    b = p.feed(b"\n" + b",".join([b"1"] * 40) + b"\n1e300,1\n" + b"#" * 100000 + b"\n1,2\n")
    # 40 values, an absurd value: bad lines (samples lost); a 100 kB comment: skipped unparsed
    assert p.n_channels == 2 and b.bad.tolist() == [True, True, False] and p.stats["bytes_skipped"] >= 100000


def test_declared_names_and_rates_are_checked_up_front():
    with pytest.raises(IncompatibleDeviceError, match="declared sampling rate"):
        make_driver("ascii", fs=3e7)
    with pytest.raises(IncompatibleDeviceError, match="name"):
        make_driver("native", channel_names=("I", "\x1b]0;x\x07"))


@pytest.mark.parametrize("seconds", [1e308, float("nan"), float("inf"), 0.0, -1.0, 3601.0, "ten"])
def test_absurd_durations_are_refused_before_the_port_is_opened(seconds):
    with pytest.raises(BridgeError, match="seconds") as ei:
        acquire("/dev/ecgret-no-such-port", "native", seconds)
    assert "serial port" not in str(ei.value)


def test_one_recording_is_bounded_in_samples_times_channels():
    assert check_recording(10, 500, 12) == 5000
    with pytest.raises(ValueError, match="over the limit"):
        check_recording(3600, 32000, 32)
    with pytest.raises(ValueError, match="not one sample"):
        check_recording(0.01, 10, 1)
    assert check_recording(3600, 500, 8) * 8 <= MAX_CELLS


def test_a_board_announcing_1e8_hz_over_a_pty_allocates_nothing(tmp_path):
    tracemalloc.start()
    try:
        with FakeBoard(tmp_path, native_info_board(fs=1e8, names=LEADS8)) as b:
            t0 = time.monotonic()
            with pytest.raises(IncompatibleDeviceError, match="1e\\+08 Hz is outside"):
                acquire(b.port, "native", 10.0, timeout=3)
            assert time.monotonic() - t0 < 3
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak


def test_an_ascii_board_announcing_3e7_hz_over_a_pty(tmp_path):
    tracemalloc.start()
    try:
        with FakeBoard(tmp_path, ascii_board(b"# fs=30000000 channels=I\n", b"0.5\n")) as b:
            with pytest.raises(IncompatibleDeviceError, match="3e\\+07 Hz is outside"):
                acquire(b.port, "ascii", 10.0, timeout=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak


def test_ascii_fs_that_disagrees_with_the_simulated_board(rec):
    x, fs = rec
    # a board that keeps streaming (8x real time, looping): at speed 0 a short record can sit whole in the pty's
    # buffer before the port is opened, and opening a port (pyserial) discards what is buffered. The board repeats
    # its header once a second of its own (500 lines); 4 s at the wrong --fs (1000 lines) always hold one, where
    # 2 s (500 lines) missed it when the port opened just after a header (a CI run under load failed so)
    with Simulator(x[:2000, 1:2], fs, ("II",), board="ascii", speed=8.0, loop=True) as sim:
        with pytest.raises(IncompatibleDeviceError, match="fs=500 Hz but --fs"):
            acquire(sim.port, "ascii", 4.0, fs=250.0, timeout=3)
    with Simulator(x[:2000, 1:2], fs, ("II",), board="ascii", speed=8.0, loop=True) as sim:
        acq = acquire(sim.port, "ascii", 1.0, fs=500.0, timeout=3)   # agreeing is fine
    assert acq.fs == 500.0 and acq.n_samples == 500


@pytest.mark.slow
def test_a_permanent_disconnect_keeps_what_arrived(rec):
    x, fs = rec
    with Simulator(x, fs, LEADS8, board="native", speed=4.0, faults="disconnect:5s+60s") as sim:
        with pytest.raises(DisconnectedError, match="could not reconnect") as ei:
            acquire(sim.port, "native", 10.0, timeout=3, reconnect_timeout=0.5)
        expected = sim.expected_mv()
    acq = ei.value.acquisition
    assert acq is not None and 4.5 * fs <= acq.n_samples <= 5.5 * fs, acq and acq.n_samples
    good = ~acq.gap_mask
    assert good.mean() > 0.99
    assert np.array_equal(acq.signal_mv[good], expected[: acq.n_samples][good])


# ------------------------------------------------------------------------------------------- listen

def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]


@pytest.mark.slow
def test_listen_refuses_absurd_arguments_as_usage_errors(ecgret_env):
    for args, what in ((["--seconds", "1e308"], "--seconds"), (["--seconds", "nan"], "--seconds"),
                       (["--fs", "30000000"], "--fs"), (["--fs", "0"], "--fs"),
                       (["--channels", "I,\x1b[2J"], "--channels")):
        p = run_ecgret(["listen", "--port", "/dev/ecgret-no-such-port", *args], ecgret_env, timeout=60)
        assert p.returncode == 2 and what in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)
        assert "\x1b" not in p.stderr


def test_listen_on_a_board_reporting_fs_0_fails_with_a_named_error(ecgret_env, tmp_path):
    with FakeBoard(tmp_path, native_info_board(fs=0.0, names=LEADS8)):
        p = run_ecgret(["listen", "--port", str(tmp_path / "fake-tty"), "--json"], ecgret_env, timeout=120)
    assert p.returncode == 1, p.stderr
    errs = [line for line in p.stderr.splitlines() if line.startswith("ecgret: error:")]
    assert len(errs) == 1 and "sampling rate 0 Hz is outside" in errs[0], p.stderr
    out = _lines(p.stdout)
    assert len(out) == 1 and out[0]["ok"] is False and out[0]["error_type"] == "IncompatibleDeviceError"


@pytest.mark.slow
def test_listen_port_that_does_not_exist_exits_1(ecgret_env):
    p = run_ecgret(["listen", "--port", "/dev/ecgret-no-such-port"], ecgret_env, timeout=120)
    assert p.returncode == 1 and "does not exist" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_listen_answers_and_saves_what_arrived_before_a_permanent_disconnect(ecgret_env, rec, tmp_path):
    x, fs = rec
    save = tmp_path / "saved"
    with Simulator(x, fs, LEADS8, board="native", speed=4.0, faults="disconnect:5s+60s") as sim:
        p = run_ecgret(["listen", "--port", sim.port, "--seconds", "10", "--json", "--save", save,
                        "--reconnect-timeout", "0.5", "--any-speed"], ecgret_env, timeout=120)
    assert p.returncode == 1, p.stderr                     # the board was lost: not a clean run ...
    assert "Traceback" not in p.stderr and "could not reconnect" in p.stderr and "answering on the" in p.stderr
    out = _lines(p.stdout)
    assert len(out) == 1 and out[0]["ok"], out             # ... but the 5 s that arrived were answered
    from edge.io import read_record
    heas = list(save.glob("*.hea"))
    assert len(heas) == 1 and heas[0].with_suffix(".json").exists()
    assert 4.5 * fs <= read_record(heas[0]).signal.shape[0] <= 5.5 * fs


@pytest.mark.slow
def test_listen_loop_survives_board_errors_and_carries_on(ecgret_env, rec, tmp_path):
    """The board vanishes for ~3 s of wall time in the middle of the first recording: --loop answers what
    arrived, reports the loss, retries the port with backoff, and answers the next recordings."""
    x, fs = rec
    with Simulator(x, fs, LEADS8, board="native", speed=4.0, loop=True, faults="disconnect:5s+12s") as sim:
        p = subprocess.Popen([sys.executable, "-m", "edge.cli", "listen", "--port", sim.port, "--seconds", "6",
                              "--loop", "--json", "--reconnect-timeout", "0.5", "--any-speed"], env=ecgret_env,
                             cwd=repo_root(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        got: list[dict] = []
        lines = threading.Thread(target=lambda: [got.extend(_lines(line)) for line in p.stdout], daemon=True)
        lines.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 150 and p.poll() is None and sum(o["ok"] for o in got) < 3:
            time.sleep(0.1)
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        lines.join(10)
        err = p.stderr.read()
    assert "Traceback" not in err, err
    assert sum(o["ok"] for o in got) >= 3, (got, err[-3000:])
    assert "could not reconnect" in err and "retrying" in err, err[-3000:]
    assert p.returncode == 1                                # a board error happened along the way


def test_simulate_link_never_replaces_a_file(rec, tmp_path):
    """``simulate --link PATH`` renamed its pty link over whatever was at PATH and removed PATH at the end: a
    file there (as root, a device node) was destroyed. Now only a new path or an earlier simulator's link to a pty
    is taken, and at the end only the simulator's own link is removed."""
    x, fs = rec
    kept = tmp_path / "notes.txt"
    kept.write_text("precious")
    os.symlink("/etc/hostname", tmp_path / "other-link")
    for p in (kept, tmp_path / "other-link"):
        with pytest.raises(ValueError, match="--link"):
            Simulator(x[:500, 1:2], fs, ("II",), board="ascii", link_path=str(p))
    assert kept.read_text() == "precious" and os.readlink(tmp_path / "other-link") == "/etc/hostname"
    stale = tmp_path / "port"
    os.symlink("/dev/pts/9999", stale)  # what a killed simulator leaves: taken over
    with Simulator(x[:500, 1:2], fs, ("II",), board="ascii", speed=0, loop=True, link_path=str(stale)) as sim:
        assert os.readlink(stale) == sim.pts
        os.unlink(stale)
        stale.write_text("someone else's")  # put there while it ran: not the simulator's to delete
    assert stale.read_text() == "someone else's"


@pytest.mark.slow
def test_two_ctrl_c_while_the_board_is_away_keep_what_arrived(ecgret_env, rec, tmp_path):
    """The board vanishes at 4 s and listen waits for it (--reconnect-timeout 60); Ctrl-C twice: the 4 s that
    arrived are answered and saved (the second Ctrl-C landed while the reconnect slept: nothing was kept)."""
    x, fs = rec
    save = tmp_path / "saved"
    with Simulator(x, fs, LEADS8, board="native", speed=1.0, faults="disconnect:4s+60s") as sim:
        p = subprocess.Popen([sys.executable, "-m", "edge.cli", "listen", "--port", sim.port, "--seconds", "60",
                              "--save", str(save), "--reconnect-timeout", "60"], env=ecgret_env, cwd=repo_root(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(7.0)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=90)
    assert "Traceback" not in err, err
    assert "stopped while waiting for it to come back" in err and "answering on the" in err, err
    assert "measured:" in out and len(list(save.glob("*.hea"))) == 1, (out, err)


def test_board_error_frames_are_reported(ecgret_env, rec, tmp_path):
    """A board's ERROR frames (an ADC fault) during the recording: the answer is given and the error said, exit 1
    (they were counted and never shown: exit 0, ok, nothing on stderr)."""

    class Faulty(Simulator):
        sent = False

        def _encode(self, clock, rec_, spf):
            data = super()._encode(clock, rec_, spf)
            if not self.sent and int(clock[0]) > 1000:
                self.sent = True
                data += self._frame(pr.T_ERROR, bytes([7]) + b"ADC fault")
            return data

    x, fs = rec
    with Faulty(x, fs, LEADS8, board="native", speed=0) as sim:
        p = run_ecgret(["listen", "--port", sim.port, "--seconds", "4", "--json", "--any-speed"], ecgret_env,
                       timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "the board reported board error 7: ADC fault" in p.stderr, p.stderr
    assert _lines(p.stdout)[0]["ok"]


def test_the_native_sample_counter_wraps_without_stalling():
    """The 32-bit first_sample counter wraps after ~99 days of board uptime: the samples after the wrap continue
    the recording (they were taken as the past: the recording stalled, then ended 1000 of 5000 samples short)."""
    drv = make_driver("native")
    drv.handshake_feed(_info_frame(fs=500.0, names=("I", "II")))
    first0 = (1 << 32) - 300  # the wrap 300 samples in, in the middle of a frame batch
    counts = np.arange(1000 * 2).reshape(100, 10, 2)
    data, flen = pr.encode_data_frames(0, first0, counts[:50])
    more, _ = pr.encode_data_frames(50, (first0 + 500) & 0xFFFFFFFF, counts[50:])
    a = drv.feed(data)
    b = drv.feed(more)
    idx = np.concatenate([a.index, b.index])
    assert np.array_equal(idx, np.arange(1000)), (idx[:3], idx[295:305], idx[-3:])


def test_ascii_header_rate_is_read_as_a_word_and_a_whole_number():
    """``# offs=3`` was read as fs=3 (and refused the board), ``fs=5e2`` as 5 Hz, ``FS=250`` ignored."""
    for line, fs in ((b"# offs=3 gain=2\n0.1\n0.2\n", 250.0), (b"# fs=5e2\n0.1\n", 500.0), (b"# FS=500\n0.1\n", 500.0)):
        drv = make_driver("ascii", fs=fs)
        assert drv.handshake_feed(b"\n" + line).fs == fs, line


@pytest.mark.slow
def test_sigterm_keeps_what_arrived(ecgret_env, rec, tmp_path):
    """``systemctl stop`` (SIGTERM) mid-recording killed listen with nothing kept: now as Ctrl-C, what arrived is
    answered and saved."""
    x, fs = rec
    save = tmp_path / "saved"
    with Simulator(x, fs, LEADS8, board="native", speed=1.0, loop=True) as sim:
        p = subprocess.Popen([sys.executable, "-m", "edge.cli", "listen", "--port", sim.port, "--seconds", "60",
                              "--save", str(save)], env=ecgret_env, cwd=repo_root(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(6.0)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=90)
    assert "Traceback" not in err, err
    assert "measured:" in out and len(list(save.glob("*.hea"))) == 1, (p.returncode, out, err)
