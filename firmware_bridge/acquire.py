"""Acquire a fixed-length multi-channel recording from a board: the API the device runtime calls.

::

    from firmware_bridge.acquire import acquire
    acq = acquire("/dev/ttyACM0", "native", 10.0, accept_fs=(500.0,), accept_channels=(8, 12))
    acq.signal_mv      # (n, ch) float64, NaN where samples were lost
    acq.gap_mask       # (n,) bool, True where a sample never arrived
    acq.lead_off       # (n, ch) bool

Every wait is bounded: a port that does not exist or is busy, a board that never answers,
a board whose rate or channel count the caller cannot use, and a line that carries only
noise each raise a :class:`~firmware_bridge.errors.BridgeError` subclass with a one-line
message. A port that disappears mid-recording is reopened with exponential backoff; the
samples missed meanwhile are flagged as a gap. When the recording cannot be finished (the
board is lost for good, falls silent, or comes back as another board), the error carries
what had arrived as ``error.acquisition``, so a caller can still use or save it.

What a board declares is bounded before anything is sized from it (:mod:`firmware_bridge.info`:
rate, channels, gain, names, and samples x channels of one recording): a board announcing
10^8 Hz is an :class:`~firmware_bridge.errors.IncompatibleDeviceError`, not gigabytes of buffers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import serial

from .boards import DEFAULT_BAUD, make_driver
from .driver import Driver
from .errors import BridgeError, DisconnectedError, IncompatibleDeviceError, NoSignalError, PortError, RateMismatchError
from .info import MAX_SECONDS, check_recording
from .ports import open_port, read_some

PAUSE_S = 0.1  # a silent line for this long releases a packet the parser held back
BATCH_S = 0.03  # least time between two small reads
SMALL_READ = 2048  # bytes; a busy pty hands over ~4 KiB a read, a real-time board ~700 B per 30 ms
RATE_TOLERANCE = 1.25  # samples arriving this many times faster or slower than the stated rate: a wrong rate
RATE_MIN_S = 2.0  # s of streaming over which the arrival rate is judged
# fewer samples than the wall clock says by more than this (the larger of the two): samples the line lost, where
# the frames carry no count that spans the loss (ASCII lines; the Cyton's 8-bit counter wraps every 1.02 s)
LOST_SLACK_S, LOST_SLACK = 0.25, 0.05


@dataclass(frozen=True)
class Acquisition:
    """A recording read from a board.

    signal_mv: (n, ch) float64 millivolts, NaN where a sample never arrived.
    fs: sampling rate in Hz (from the board's handshake, or declared for ASCII boards).
    channel_names: one per column.
    lead_off: (n, ch) bool, True where the board flagged the electrode off.
    gap_mask: (n,) bool, True where the sample was lost (corruption, dropped frames, reconnects).
    stats: counters (bytes, frames, crc_errors, resyncs, seq_gaps, dropped_samples, gap_samples,
        lead_off_samples, reconnects, wall_s, ...).
    device_info: the board's handshake (see :class:`firmware_bridge.info.DeviceInfo`), as a dict.
    """

    signal_mv: np.ndarray
    fs: float
    channel_names: tuple[str, ...]
    lead_off: np.ndarray
    gap_mask: np.ndarray
    stats: dict = field(default_factory=dict)
    device_info: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Samples per channel (rows of :attr:`signal_mv`), gaps included."""
        return int(self.signal_mv.shape[0])

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds (samples / fs)."""
        return self.n_samples / float(self.fs)


def _check(info, accept_fs, accept_channels, url: str) -> None:
    if accept_fs is not None:
        ok = [float(f) for f in accept_fs]
        if not any(abs(info.fs - f) <= 1e-6 * max(1.0, f) for f in ok):
            raise IncompatibleDeviceError(
                f"board on {url} samples at {info.fs:g} Hz; usable rates: {', '.join(f'{f:g}' for f in ok)} Hz"
            )
    if accept_channels is not None:
        ok = sorted(int(c) for c in accept_channels)
        if info.n_channels not in ok:
            raise IncompatibleDeviceError(
                f"board on {url} has {info.n_channels} channel(s); usable: {', '.join(map(str, ok))}"
            )


def acquire(
    url: str,
    board: str,
    seconds: float,
    *,
    baud: int | None = None,
    timeout: float = 3.0,
    fs: float | None = None,
    channel_names=None,
    accept_fs=None,
    accept_channels=None,
    on_progress=None,
    stop_event: threading.Event | None = None,
    reconnect: bool = True,
    reconnect_timeout: float = 10.0,
    max_wall_s: float | None = None,
    scale_mv: float = 1.0,
    cyton_gain: int = 24,
    exclusive: bool = True,
    check_rate: bool = False,
) -> Acquisition:
    """Record ``seconds`` of signal from the board at ``url``.

    url: a pyserial URL: a device (``/dev/ttyACM0``, ``COM3``), a pty, ``loop://``, ``socket://h:p``.
    board: ``"native"``, ``"cyton"`` or ``"ascii"``.
    baud: defaults per board (native 230400, Cyton 115200, ASCII 115200).
    timeout: bound in seconds for the handshake and for any stretch without a valid frame.
    fs, channel_names: declare what the board cannot tell (ASCII rate and names; Cyton wiring names).
    accept_fs, accept_channels: iterables of usable rates / channel counts; others raise
        :class:`IncompatibleDeviceError` before streaming starts.
    on_progress: ``f(samples_done, samples_total)``, called at most ~10 times a second.
    stop_event: set it to end early; the acquisition is then cut to what arrived.
    reconnect: reopen a vanished port with backoff (0.1 s doubling to 2 s) for up to
        ``reconnect_timeout`` seconds; the missed samples become a flagged gap.
    max_wall_s: overall bound (default ``2 * seconds + 2 * timeout + reconnect_timeout + 5``).
    scale_mv: ASCII boards only: millivolts per printed unit.
    cyton_gain: ADS1299 gain the Cyton is configured with (default 24).
    check_rate: a recording whose samples arrived ``RATE_TOLERANCE`` times faster or slower than the stated rate
        (over at least ``RATE_MIN_S`` of streaming, no reconnect) raises :class:`RateMismatchError` carrying it:
        an ASCII board printing 500 lines a second read with ``--fs 250`` gave 34 bpm "sinus bradycardia" for
        68. Off for a simulator that replays faster than real time.
    """
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise BridgeError(f"seconds {seconds!r} is not a number") from None
    if not (math.isfinite(seconds) and 0.0 < seconds <= MAX_SECONDS):
        raise BridgeError(f"seconds must be within (0, {MAX_SECONDS:g}], not {seconds:g}")
    baud = baud or DEFAULT_BAUD.get(board, 115200)
    drv: Driver = make_driver(board, fs=fs, channel_names=channel_names, gain=cyton_gain, scale_mv=scale_mv)
    t0 = time.monotonic()
    wall_limit = max_wall_s if max_wall_s is not None else 2 * seconds + 2 * timeout + reconnect_timeout + 5
    ser = open_port(url, baud, exclusive=exclusive)
    try:
        info = drv.handshake(ser, timeout)
        _check(info, accept_fs, accept_channels, url)
        try:  # bounded before any buffer is sized from what the board declared
            n = check_recording(seconds, info.fs, info.n_channels)
        except ValueError as e:
            raise IncompatibleDeviceError(f"board on {url}: {e}") from None
        drv.start(ser)
        ch = info.n_channels
        sig = np.full((n, ch), np.nan)
        lead = np.zeros((n, ch), bool)
        filled = np.zeros(n, bool)
        base: int | None = None
        top = -1  # highest position filled
        last_valid = time.monotonic()
        heard_since_valid = 0
        next_report = 0.0
        reconnects = 0
        stopped_early = False
        last_data = last_read = time.monotonic()
        small_read = False
        t_first = t_last = 0.0  # when the first and the latest samples arrived
        n_first = 0  # samples in the first chunk (they arrived at t_first, before the interval measured)

        def result(cut: bool) -> Acquisition:
            s, lo, f = (sig[: top + 1], lead[: top + 1], filled[: top + 1]) if cut else (sig, lead, filled)
            gap = ~f
            stats = drv.all_stats()
            stats.update(
                {
                    "reconnects": reconnects,
                    "samples": int(f.sum()),
                    "gap_samples": int(gap.sum()),
                    "lead_off_samples": int(lo.any(axis=1).sum()),
                    "wall_s": round(time.monotonic() - t0, 3),
                    "events": list(drv.events[-5:]),  # the board's own error and overflow reports, latest last
                }
            )
            return Acquisition(
                signal_mv=s,
                fs=float(info.fs),
                channel_names=tuple(info.channel_names),
                lead_off=lo,
                gap_mask=gap,
                stats=stats,
                device_info=info.as_dict(),
            )

        try:
            while top < n - 1:
                now = time.monotonic()
                if stop_event is not None and stop_event.is_set():
                    stopped_early = True
                    break
                if now - t0 > wall_limit:
                    raise NoSignalError(
                        f"board on {url} delivered {top + 1} of {n} samples in {wall_limit:.0f} s "
                        f"(slower than its declared {info.fs:g} Hz?)"
                    )
                if small_read:  # a slow stream: gather ~10 ms per read (cheap on a Pi), a fast one is not held
                    time.sleep(max(0.0, last_read + BATCH_S - time.monotonic()))
                try:
                    last_read = time.monotonic()
                    data = read_some(ser)
                    small_read = len(data) < SMALL_READ
                except (serial.SerialException, OSError) as e:
                    if not reconnect:
                        raise DisconnectedError(f"lost the board on {url}: {e}") from None
                    ser = _reconnect(url, baud, drv, info, timeout, reconnect_timeout, stop_event, ser, exclusive)
                    reconnects += 1
                    last_valid = time.monotonic()
                    continue
                if data:
                    heard_since_valid += len(data)
                    last_data = time.monotonic()
                    chunk = drv.feed(data)
                elif time.monotonic() - last_data > PAUSE_S:
                    chunk = drv.flush()  # the line paused: release what the parser held back
                    last_data = float("inf")
                else:
                    chunk = None
                if chunk is not None:
                    if len(chunk):
                        if base is None:
                            base = int(chunk.index[0])
                        pos = chunk.index - base
                        ok = (pos >= 0) & (pos < n)
                        p = pos[ok]
                        sig[p] = chunk.mv[ok]
                        lead[p] = chunk.lead_off[ok]
                        filled[p] = True
                        # a sample at or past the end completes the recording, even if the last one was lost
                        top = max(top, min(int(pos.max()), n - 1))
                        last_valid = t_last = time.monotonic()
                        if not n_first:
                            t_first, n_first = t_last, top + 1
                        heard_since_valid = 0
                    if drv.board_stopped and base is not None:
                        break  # the board ended its stream: what is missing stays a flagged gap
                if time.monotonic() - last_valid > timeout:
                    if heard_since_valid:
                        raise NoSignalError(
                            f"no valid frame from {url} for {timeout:g} s ({heard_since_valid} "
                            f"bytes of noise); wrong board type or baud rate?"
                        )
                    raise NoSignalError(f"board on {url} stopped sending for {timeout:g} s")
                if on_progress is not None and now >= next_report:
                    on_progress(top + 1, n)
                    next_report = now + 0.1
        except BridgeError as e:
            # the board failed mid-recording (lost for good, silent, lying): what arrived goes with the error
            if top >= 0 and getattr(e, "acquisition", None) is None:
                e.acquisition = result(cut=True)
            raise
        try:
            drv.stop(ser)
        except (serial.SerialException, OSError):
            pass
    finally:
        try:
            ser.close()
        except Exception:
            pass
    if on_progress is not None:
        on_progress(top + 1, n)
    acq = result(cut=stopped_early)  # stopped early: cut to what arrived
    span = t_last - t_first
    if check_rate and not reconnects and span >= RATE_MIN_S and top + 1 > n_first:
        got, want = top + 1 - n_first, span * info.fs
        rate = got / span
        if not info.fs / RATE_TOLERANCE <= rate <= info.fs * RATE_TOLERANCE:
            why = (
                f"samples arrived at {rate:.0f} a second, {rate / info.fs:.2f} x the stated {info.fs:g} Hz: a wrong "
                "--fs (or board rate setting) measures every interval wrong"
            )
        elif want - got > max(LOST_SLACK_S * info.fs, LOST_SLACK * want):
            why = (
                f"about {(want - got) / info.fs:.1f} s of samples never arrived ({got} in {span:.1f} s at "
                f"{info.fs:g} Hz) and nothing marks where: the recording is not continuous (its intervals across the "
                "loss would be measured wrong)"
            )
        else:
            why = ""
        if why:
            err = RateMismatchError(
                f"board on {url}: {why}; not answered (a simulator replaying off real time: --any-speed)"
            )
            err.acquisition = acq
            raise err
    return acq


def _reconnect(url, baud, drv: Driver, info, timeout, reconnect_timeout, stop_event, ser, exclusive):
    t_drop = time.monotonic()
    try:
        ser.close()
    except Exception:
        pass
    delay = 0.1
    last = "port gone"
    while time.monotonic() - t_drop < reconnect_timeout:
        if stop_event is not None and stop_event.wait(delay):  # a stop ends the wait at once (Ctrl-C)
            break
        if stop_event is None:
            time.sleep(delay)
        delay = min(delay * 2, 2.0)
        try:
            s = open_port(url, baud, exclusive=exclusive)
        except PortError as e:
            last = str(e)
            continue
        try:
            new = drv.handshake(s, min(timeout, 2.0))
            if new.fs != info.fs or new.n_channels != info.n_channels:
                raise IncompatibleDeviceError(
                    f"board on {url} came back with {new.n_channels} channels at {new.fs:g} Hz "
                    f"(was {info.n_channels} at {info.fs:g} Hz)"
                )
            drv.resume(time.monotonic() - t_drop)
            drv.start(s)
            return s
        except IncompatibleDeviceError:
            s.close()
            raise
        except (BridgeError, serial.SerialException, OSError) as e:
            last = str(e)
            try:
                s.close()
            except Exception:
                pass
    if stop_event is not None and stop_event.is_set():
        raise DisconnectedError(f"lost the board on {url}; stopped while waiting for it to come back")
    raise DisconnectedError(f"lost the board on {url} and could not reconnect within {reconnect_timeout:g} s ({last})")
