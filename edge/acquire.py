"""From a board to a record: acquisition in a thread that Ctrl-C can stop, progress on a terminal, the
acquisition line, and the acquired signal as a :class:`~edge.record.Record` to query.

``ecgret demo`` and ``ecgret listen`` share all of it (:mod:`edge.cli` only parses options and prints).
"""

from __future__ import annotations

import sys

from firmware_bridge.info import LEADS8, Board

__all__ = ["acq_to_record", "acquire_interruptible", "Progress", "summary_line", "pick_channels"]


def pick_channels(leads, board: str, channels=None) -> list[int]:
    """The columns of a record a simulated board streams: the named ``channels``, else lead II alone for an
    ASCII board (an Arduino + AD8232 prints one lead), else the 8 independent leads I, II, V1-V6 when the
    record has them, else all. A named channel the record lacks raises :class:`~edge.errors.EcgretError`."""
    from .errors import EcgretError

    leads = tuple(leads)
    if channels:
        want = [c.strip() for c in channels if c.strip()]
        missing = [c for c in want if c not in leads]
        if missing:
            raise EcgretError(f"the record has no lead(s) {', '.join(missing)}; it has {', '.join(leads)}")
        return [leads.index(c) for c in want]
    if board == Board.ASCII:
        return [leads.index("II") if "II" in leads else 0]
    if all(x in leads for x in LEADS8):
        return [leads.index(x) for x in LEADS8]
    return list(range(len(leads)))


def acq_to_record(acq, name: str):
    """(Record in mV with canonical lead names, lead-off mask) of a :class:`firmware_bridge.acquire.Acquisition`.
    A single unnamed channel (an Arduino + AD8232) is taken as lead II."""
    import numpy as np

    from .leads import canonical_lead
    from .record import Record

    names = [canonical_lead(c) or str(c) for c in acq.channel_names]
    if not any(canonical_lead(n) for n in names) and len(names) == 1:
        names = ["II"]
    from datetime import UTC, datetime, timedelta

    x = np.asarray(acq.signal_mv, dtype=np.float64)
    start = datetime.now(UTC) - timedelta(seconds=x.shape[0] / float(acq.fs) if acq.fs else 0.0)
    rec = Record(
        x,
        float(acq.fs),
        tuple(names),
        name,
        {
            "units": "mV",
            "board": dict(acq.device_info or {}),
            "stats": dict(acq.stats or {}),
            "acquired": start.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "format": "acquisition",
        },
    )
    return rec, np.asarray(acq.lead_off, dtype=bool)


def acquire_interruptible(on_interrupt=None, **kw):
    """Run :func:`firmware_bridge.acquire.acquire` (``kw``) in a thread; Ctrl-C stops it and keeps what arrived
    (``on_interrupt()`` is called first). Returns (acquisition or None, interrupted); a board error is
    re-raised here."""
    import threading

    from firmware_bridge.acquire import acquire

    stop = threading.Event()
    done = threading.Event()  # not Thread.join: a join interrupted by Ctrl-C can wrongly report the thread dead
    box: dict = {}

    def work():
        try:
            box["acq"] = acquire(stop_event=stop, **kw)
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            box["err"] = e
        finally:
            done.set()

    threading.Thread(target=work, daemon=True).start()
    interrupted = False
    try:
        while not done.wait(0.1):
            pass
    except KeyboardInterrupt:
        interrupted = True
        if on_interrupt is not None:
            on_interrupt()
        stop.set()
        import time

        end = time.monotonic() + 15
        while not done.is_set() and time.monotonic() < end:
            try:
                done.wait(0.2)
            except KeyboardInterrupt:  # a second Ctrl-C while the board is let go: what arrived is still kept
                pass
    if "err" in box:
        raise box["err"]
    return box.get("acq"), interrupted


class Progress:
    """``label: 40%`` rewritten in place on ``stream`` (stderr) every 10 %, but only when that stream is a
    terminal: a log file or a pipe gets no ``\\r`` lines (the acquisition line says the outcome). Call it as
    ``on_progress(done, total)``; :meth:`close` ends an open line."""

    def __init__(self, label: str, stream=None):
        from .termtext import printable

        self.stream = stream if stream is not None else sys.stderr
        self.label = printable(label)
        self.last = -1
        self.open_line = False
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            self.enabled = False

    def __call__(self, done, total) -> None:
        if not self.enabled:
            return
        pct = int(100 * done / max(total, 1))
        if pct // 10 != self.last // 10:
            self.last = pct
            self.stream.write(f"\r{self.label}: {pct:3d}%" + ("\n" if pct >= 100 else ""))
            self.stream.flush()
            self.open_line = pct < 100

    def close(self) -> None:
        """End a progress line left open (a newline), so that the next line starts clean; idempotent."""
        if self.open_line:
            self.stream.write("\n")
            self.stream.flush()
            self.open_line = False


def summary_line(acq) -> str:
    """``acquired 5000 samples (10.0 s) at 500 Hz, 8 channels (501 frames, 0 CRC errors, 0 gap samples)``."""
    st = acq.stats or {}
    n = acq.n_samples
    return (
        f"acquired {n} samples ({n / acq.fs if acq.fs else 0:.1f} s) at {acq.fs:g} Hz, "
        f"{acq.signal_mv.shape[1]} channels ({st.get('frames', '?')} frames, {st.get('crc_errors', 0)} CRC "
        f"errors, {st.get('gap_samples', 0)} gap samples)"
    )
