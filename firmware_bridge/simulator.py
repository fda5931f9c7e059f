"""Simulated boards: stream a real recording through a pty as a native, Cyton or ASCII board.

The simulator opens a pseudo-terminal (``os.openpty``, slave put in raw mode before anything
is written), publishes a stable path to it (a symlink that survives simulated disconnects),
answers the board's handshake and streams the recording at real time or faster, with
optional faults (bit flips, dropped or inserted bytes, lead-off, disconnect and reconnect).

Use it in-process::

    with Simulator(signal_mv, 500.0, ("I", "II", ...), board="native", speed=0) as sim:
        acq = acquire(sim.port, "native", 10.0)

or in the foreground (``Simulator(...).run()``, what ``ecgret simulate`` does).

``speed`` is the playback speed relative to real time; ``speed <= 0`` streams as fast as the
reader takes the bytes (no sample is ever dropped for lack of a reader then).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import select
import stat
import struct
import tempfile
import termios
import threading
import time
import tty

import numpy as np

from . import cyton as cy
from . import protocol as pr
from .ascii_lines import format_lines, header_line
from .errors import FaultSpecError
from .faults import Faults, inject, parse_faults
from .info import BOARDS, Board, counts_to_mv
from .native_parser import NativeParser
from .playback import playback

MAX_BACKLOG = 1 << 16  # bytes written to the pty at once; unthrottled playback refills below this


class Simulator:
    """A simulated board on a pty. See the module docstring."""

    def __init__(
        self,
        signal_mv,
        fs: float,
        channel_names,
        board: str = Board.NATIVE,
        *,
        speed: float = 1.0,
        faults: Faults | str | None = None,
        loop: bool = False,
        seed: int = 0,
        sample_bits: int = 24,
        samples_per_frame: int = 1,
        gain_uv: float | None = None,
        cyton_gain: int = cy.DEFAULT_GAIN,
        link_path: str | None = None,
        description: str = "ecgret simulator",
        announce_fs: bool = True,
    ):
        x = np.asarray(signal_mv, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        names = tuple(channel_names)
        if x.shape[1] != len(names):
            raise ValueError(f"{x.shape[1]} columns but {len(names)} channel names")
        if board not in BOARDS:
            raise ValueError(f"unknown board {board!r}")
        x = np.nan_to_num(x)
        self.board = Board(board)
        self.speed = float(speed)
        self.faults = parse_faults(faults) if isinstance(faults, str) or faults is None else faults
        self.loop = loop
        self.rng = np.random.default_rng(seed)
        self.announce_fs = announce_fs
        self.info, self.source = playback(
            self.board,
            x,
            fs,
            names,
            sample_bits=sample_bits,
            samples_per_frame=samples_per_frame,
            gain_uv=gain_uv,
            cyton_gain=cyton_gain,
            description=description,
        )
        self.n = self.source.shape[0]
        self.fs = self.info.fs
        self._lo_rows = [
            (
                self.info.channel_names.index(c) if c in self.info.channel_names else None,
                int(round(a * self.fs)),
                int(round(b * self.fs)),
            )
            for c, a, b in self.faults.leadoff
        ]
        for (ci, _, _), (c, _, _) in zip(self._lo_rows, self.faults.leadoff):
            if ci is None:
                raise FaultSpecError(f"lead-off channel {c!r} is not one of {', '.join(self.info.channel_names)}")
        self._disc = [(int(round(t * self.fs)), d) for t, d in self.faults.disconnect]
        # state
        self._dir: str | None = None  # the temporary folder of the default port path, removed on cleanup
        if link_path:
            _check_link(link_path)
            self.port = link_path
        else:
            self._dir = tempfile.mkdtemp(prefix="ecgret-sim-")
            self.port = os.path.join(self._dir, "tty")
        self.pts = ""
        self._master = self._slave = -1
        self._out = bytearray()
        self._cmd = NativeParser()
        self._seq = 0
        self._streaming = board == Board.ASCII
        self._row = 0  # next playback row (board sample clock)
        self._play0 = 0  # clock value where the current playback began
        self._t_ref: float | None = None
        self._cyton_cmd = b""
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.stats = {
            "bytes": 0,
            "frames": 0,
            "samples": 0,
            "damaged_frames": 0,
            "flipped_bits": 0,
            "dropped_bytes": 0,
            "inserted_bytes": 0,
            "disconnects": 0,
            "handshakes": 0,
            "starts": 0,
            "overrun_samples": 0,
        }
        self.damaged_rows: list[int] = []  # board clock index of the first sample of each damaged frame

    # ------------------------------------------------------------------ expected output
    def expected_mv(self) -> np.ndarray:
        """What a perfect receiver reads for the recording (quantised exactly as the board sends it)."""
        if self.board == Board.ASCII:
            return self.source.copy()
        return counts_to_mv(self.source, self.info.gain_uv)

    # ------------------------------------------------------------------ pty
    def _open_pty(self) -> None:
        m, s = os.openpty()
        tty.setraw(s)
        os.set_blocking(m, False)
        self._master, self._slave = m, s
        self.pts = os.ttyname(s)
        # the stable path is swapped atomically: a fresh link under an unpredictable name (symlink() never
        # follows or reuses an existing path), renamed over the old one
        for _ in range(100):
            tmp = f"{self.port}.{secrets.token_hex(8)}.new"
            try:
                os.symlink(self.pts, tmp)
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - 100 collisions of 64 random bits
            raise FileExistsError(f"cannot create a link next to {self.port}")
        try:
            os.replace(tmp, self.port)
        except OSError:
            os.unlink(tmp)
            raise

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1
        try:  # only the link this simulator made: whatever took its place since is not ours to delete
            if self.pts and os.readlink(self.port) == self.pts:
                os.unlink(self.port)
        except OSError:  # gone, or not a link
            pass

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        """Run in a daemon thread; returns the stable port path once the pty is ready."""
        self._thread = threading.Thread(target=self._run_safe, name="ecgret-simulator", daemon=True)
        self._thread.start()
        self.ready.wait(5.0)
        return self.port

    def stop(self) -> None:
        """Ask the serving loop to end and wait for its thread (up to 5 s); the loop's exit cleans up."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run_safe(self) -> None:
        try:
            self.run()
        except BaseException as e:  # surfaced to the owner via .error
            self.error = e
            self.ready.set()

    def run(self, on_event=None) -> None:
        """Serve in the calling thread until :attr:`stop_event` is set (foreground mode)."""
        self._on_event = on_event
        self._open_pty()
        self.ready.set()
        if self.board == Board.ASCII:
            self._begin_playback()
        try:
            while not self.stop_event.is_set():
                self._step()
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        """Close the pty and remove the port link and the temp folder (idempotent; ``run`` does it on exit)."""
        self._close_pty()
        if self._dir:
            try:
                os.rmdir(self._dir)
            except OSError:  # gone already, or someone put files there: those are not ours to delete
                pass

    def _event(self, text: str) -> None:
        cb = getattr(self, "_on_event", None)
        if cb:
            cb(text)

    # ------------------------------------------------------------------ main loop
    def _step_io(self) -> None:
        select.select([], [self._master], [], 0.01)
        try:
            n = os.write(self._master, bytes(self._out[:MAX_BACKLOG]))
            del self._out[:n]
            self.stats["bytes"] += n
        except OSError:
            pass

    def _step(self) -> None:
        unthrottled = self.speed <= 0
        want_write = bool(self._out)
        if unthrottled and self._streaming and len(self._out) < MAX_BACKLOG:
            timeout = 0.0
        else:
            timeout = 0.004
        r, w, _ = select.select([self._master], [self._master] if want_write else [], [], timeout)
        if r:
            try:
                data = os.read(self._master, 4096)
            except (BlockingIOError, InterruptedError):
                data = b""
            except OSError:
                data = b""
            if data:
                self._commands(data)
        if self._out:
            try:
                n = os.write(self._master, bytes(self._out[:MAX_BACKLOG]))
                del self._out[:n]
                self.stats["bytes"] += n
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass
        if self._streaming:
            self._produce()

    def _begin_playback(self) -> None:
        self._play0 = self._row
        self._t_ref = time.monotonic()
        self.finished.clear()

    def _target_row(self) -> int:
        if self.speed <= 0:
            return self._row + (512 if len(self._out) < MAX_BACKLOG else 0)
        assert self._t_ref is not None  # rows fall due only once a playback has begun (_begin_playback)
        return self._play0 + int((time.monotonic() - self._t_ref) * self.fs * self.speed)

    def _produce(self) -> None:
        target = self._target_row()
        # disconnect faults fire on the board clock
        if self._disc and target - self._play0 >= self._disc[0][0]:
            at, dur = self._disc.pop(0)
            self._emit_rows(self._play0 + at)
            self._disconnect(dur)
            return
        self._emit_rows(target)

    def _emit_rows(self, target: int) -> None:
        spf = self.info.samples_per_frame if self.board == Board.NATIVE else 1
        n_rows = (target - self._row) // spf * spf
        if n_rows <= 0:
            return
        if not self.loop:
            left = self._play0 + self.n - self._row
            n_rows = min(n_rows, left - left % spf if left >= spf else left)
        if n_rows <= 0:
            self._end_playback()
            return
        if self.speed > 0 and len(self._out) >= MAX_BACKLOG:
            # nobody reads: a real board overruns, so do we
            self.stats["overrun_samples"] += n_rows
            self._row += n_rows
            return
        clock = self._row + np.arange(n_rows)
        rec = (clock - self._play0) % self.n
        chunk = self._encode(clock, rec, spf)
        self._out += chunk
        self._row += n_rows
        self.stats["samples"] += n_rows
        if not self.loop and self._row - self._play0 >= self.n:
            self._end_playback()

    def _end_playback(self) -> None:
        if self.board != Board.ASCII:
            self._streaming = False
            if self.board == Board.NATIVE:
                self._out += self._frame(pr.T_STATUS, bytes([pr.ST_STOPPED]))
        else:
            self._streaming = False
        self.finished.set()
        self._event("recording finished")

    def _lead_mask(self, clock: np.ndarray) -> np.ndarray:
        """(rows, ch) bool: electrodes off per faults."""
        lo = np.zeros((clock.size, self.info.n_channels), bool)
        t = clock - self._play0
        for ci, a, b in self._lo_rows:
            lo[(t >= a) & (t < b), ci] = True
        return lo

    def _encode(self, clock: np.ndarray, rec: np.ndarray, spf: int) -> bytes:
        lo = self._lead_mask(clock)
        if self.board == Board.NATIVE:
            counts = self.source[rec].copy()
            counts[lo] = 0
            m = clock.size // spf
            bits = (lo.reshape(m, spf, -1).any(axis=1) * (1 << np.arange(lo.shape[1]))).sum(axis=1)
            sample_bits = self.info.sample_bits
            assert sample_bits is not None  # a native board's DeviceInfo is built with its sample size
            data, flen = pr.encode_data_frames(self._seq, int(clock[0]), counts.reshape(m, spf, -1), bits, sample_bits)
            self._seq = (self._seq + m) & 0xFFFF
            self.stats["frames"] += m
            return self._inject(data, flen, clock[::spf])
        if self.board == Board.CYTON:
            counts = self.source[rec].copy()
            counts[lo] = cy.RAIL
            data = cy.encode_packets(clock & 0xFF, counts)
            self.stats["frames"] += clock.size
            return self._inject(data, cy.PACKET_LEN, clock)
        # ascii
        vals = self.source[rec]
        out = []
        period = max(1, int(round(self.fs)))
        for i in range(clock.size):
            if self.announce_fs and (clock[i] - self._play0) % period == 0:
                out.append(header_line(self.fs, self.info.channel_names))
            out.append(b"!\n" if lo[i].any() else format_lines(vals[i : i + 1]))
        self.stats["frames"] += clock.size
        return b"".join(out)

    def _inject(self, data: bytes, flen: int, frame_clock: np.ndarray) -> bytes:
        out, damaged = inject(data, flen, frame_clock, self.faults, self.rng, self.stats)
        self.damaged_rows.extend(damaged.tolist())
        return out

    def _drain(self, limit_s: float) -> None:
        """Wait (bounded) until the reader has taken every byte already sent."""
        t_end = time.monotonic() + limit_s
        while time.monotonic() < t_end and not self.stop_event.is_set():
            if self._out:
                self._step_io()
                continue
            try:
                queued = struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            except OSError:
                return
            if queued == 0:
                return
            time.sleep(0.002)

    def _disconnect(self, dur: float) -> None:
        if self.speed <= 0:
            # as fast as the reader goes: drop the link exactly at the fault's time, not in mid-backlog
            self._drain(5.0)
        self.stats["disconnects"] += 1
        self._event(f"disconnect for {dur:g} s")
        self._close_pty()
        self._out.clear()
        self._cmd.reset()
        wall = dur / self.speed if self.speed > 0 else min(dur, 0.3)
        self.stop_event.wait(max(wall, 0.05))
        if self.speed <= 0:
            self._row += int(round(dur * self.fs))
        else:
            # the board clock kept running; nothing was sent meanwhile
            now_row = self._target_row()
            self._row = max(self._row, now_row)
        if self.board != Board.ASCII:
            self._streaming = False
        self._open_pty()
        self._event("reconnected")

    # ------------------------------------------------------------------ commands
    def _frame(self, ftype: int, payload: bytes = b"") -> bytes:
        b = pr.encode_frame(ftype, self._seq, payload)
        self._seq = (self._seq + 1) & 0xFFFF
        return b

    def _start_stream(self) -> None:
        self.stats["starts"] += 1
        resume = self._t_ref is not None and not self.finished.is_set() and (self._row - self._play0) < self.n
        if not resume:
            self._begin_playback()
        elif self.speed > 0:
            self._row = max(self._row, self._target_row())
        self._streaming = True

    def _commands(self, data: bytes) -> None:
        if self.board == Board.NATIVE:
            for f in self._cmd.feed(data):
                if f.type == pr.T_HELLO:
                    self.stats["handshakes"] += 1
                    self._out += self._frame(pr.T_INFO, pr.info_payload(self.info))
                elif f.type == pr.T_START:
                    self._out += self._frame(pr.T_STATUS, bytes([pr.ST_STARTED]))
                    self._start_stream()
                elif f.type == pr.T_STOP:
                    if self._streaming:
                        self._streaming = False
                    self._out += self._frame(pr.T_STATUS, bytes([pr.ST_STOPPED]))
                elif f.type == pr.T_PING:
                    self._out += self._frame(pr.T_PONG, f.payload[:16])
                else:
                    self._out += self._frame(pr.T_ERROR, bytes([pr.ERR_BAD_COMMAND]) + b"unknown command")
        elif self.board == Board.CYTON:
            self._cyton(data)

    def _cyton(self, data: bytes) -> None:
        buf = self._cyton_cmd + data
        i = 0
        while i < len(buf):
            c = buf[i : i + 1]
            if c == b"x":
                if len(buf) - i < 9:
                    break
                if not self._streaming:
                    self._out += f"Success: Channel set for {buf[i + 1 : i + 2].decode('ascii', 'replace')}$$$".encode()
                i += 9
                continue
            if c == b"~":
                if len(buf) - i < 2:
                    break
                if not self._streaming:
                    self._out += b"Success: Sample rate is 250Hz$$$"
                i += 2
                continue
            if c == b"v":
                self.stats["handshakes"] += 1
                self._streaming = False
                names = ",".join(self.info.channel_names)
                self._out += (cy.BANNER + f"Channels: {names}\n$$$").encode("ascii")
            elif c == b"b":
                self._start_stream()
            elif c == b"s":
                self._streaming = False
            elif c == b"d" and not self._streaming:
                self._out += b"updating channel settings to default$$$"
            elif c == b"D" and not self._streaming:
                self._out += b"060110$$$"
            elif c == b"?" and not self._streaming:
                self._out += b"Board ADS Registers\nADS_ID, 00, 3E\n$$$"
            i += 1
        self._cyton_cmd = buf[i:]


def _check_link(path: str) -> None:
    """``--link`` may name a new path or a link an earlier simulator left (into /dev/pts), nothing else: the port
    link is renamed over that path and removed at the end, so a file there (as root, a device node such as
    /dev/ttyUSB0) would be destroyed. Raises ValueError naming the path."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ValueError(f"--link {path}: cannot be checked ({e.strerror or e})") from None
    if not stat.S_ISLNK(st.st_mode):
        raise ValueError(
            f"--link {path}: exists and is not a link; the simulator replaces only a link to a pty (give a new path)"
        )
    target = os.readlink(path)
    if not target.startswith("/dev/pts/"):
        raise ValueError(f"--link {path}: is a link to {target}, not to a pty; give a new path")
