"""Board drivers: a handshake, start/stop, and a pure ``feed(bytes) -> Chunk`` step per board.

A driver does I/O only in :meth:`handshake`, :meth:`start` and :meth:`stop` (on a pyserial
object opened by :func:`firmware_bridge.ports.open_port`); decoding is done by the I/O-free parsers of
:mod:`.protocol`, :mod:`.cyton` and :mod:`.ascii_lines`. Each :class:`Chunk` carries a sample
index on a continuous timeline, so lost frames leave holes that the caller flags as gaps
instead of joining the samples on either side.
"""

from __future__ import annotations

import time

import numpy as np

from . import cyton as cy
from . import protocol as pr
from .ascii_lines import AsciiParser
from .driver import Chunk, Driver, empty_chunk
from .errors import HandshakeError, IncompatibleDeviceError, NoSignalError
from .info import BOARDS, MAX_DESCRIPTION, Board, DeviceInfo, check_channel_names, check_fs, counts_to_mv
from .native_parser import NativeParser
from .ports import read_some

DEFAULT_BAUD: dict[str, int] = {Board.NATIVE: 230400, Board.CYTON: cy.BAUD, Board.ASCII: 115200}
MAX_PENDING_ROWS = 1 << 16  # ASCII lines kept while the handshake waits for the rate


class NativeDriver(Driver):
    """The native ecgret protocol (``PROTOCOL.md``)."""

    board = Board.NATIVE

    def __init__(self, **kw):
        super().__init__(**kw)
        self.parser = NativeParser()
        self._seq = 0
        self._offset: int | None = None
        self._wraps = 0  # multiples of 2**32 the board's sample counter has wrapped by
        self._next_raw: int | None = None  # the unwrapped counter after the latest sample

    def _send(self, ser, ftype: int, payload: bytes = b"") -> None:
        ser.write(pr.encode_frame(ftype, self._seq, payload))
        self._seq = (self._seq + 1) & 0xFFFF

    def handshake(self, ser, timeout: float) -> DeviceInfo:
        """:meth:`Driver.handshake` for the native protocol: STOP, then HELLO every 0.25 s until an INFO frame
        arrives (:meth:`handshake_feed`)."""
        self.handshake_reset()
        ser.reset_input_buffer()
        self._send(ser, pr.T_STOP)
        deadline = time.monotonic() + timeout
        next_hello = 0.0
        heard = 0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_hello:
                self._send(ser, pr.T_HELLO)
                next_hello = now + 0.25
            data = read_some(ser)
            heard += len(data)
            info = self.handshake_feed(data)
            if info is not None:
                return info
        if heard:
            raise NoSignalError(
                f"no valid frame within {timeout:g} s, only noise ({heard} bytes); wrong board type or baud rate?"
            )
        raise HandshakeError(f"board did not answer the native handshake within {timeout:g} s (received nothing)")

    def handshake_reset(self) -> None:
        """Forget the bytes of an earlier handshake (the parser's partial frame)."""
        self.parser.reset()

    def handshake_feed(self, data: bytes) -> DeviceInfo | None:
        """Pure step of the handshake: the board's checked INFO once it has arrived, else None.

        Raises :class:`HandshakeError` for a malformed INFO frame and :class:`IncompatibleDeviceError` for one
        that declares what no board can (a rate, channel count, gain or name outside the bridge's bounds)."""
        for f in self.parser.feed(data).messages():
            if f.type == pr.T_INFO:
                try:
                    info = pr.decode_info(f.payload)
                except ValueError as e:
                    raise HandshakeError(f"board sent a malformed INFO frame: {e}") from None
                if self.names_declared and len(self.names_declared) != info.n_channels:
                    raise IncompatibleDeviceError(
                        f"the board has {info.n_channels} channels but --channels names {len(self.names_declared)}"
                    )
                if self.names_declared:
                    info = DeviceInfo(**{**info.as_dict(), "channel_names": self.names_declared})
                self.info = self._accept(info, "INFO frame")
                return self.info
        return None

    def start(self, ser) -> None:
        """Send a START frame."""
        self.board_stopped = False
        self._send(ser, pr.T_START)

    def stop(self, ser) -> None:
        """Send a STOP frame."""
        self._send(ser, pr.T_STOP)

    def parser_stats(self) -> dict:
        """A copy of the :class:`~firmware_bridge.native_parser.NativeParser` counters."""
        return dict(self.parser.stats)

    def feed(self, data: bytes) -> Chunk:
        """:meth:`Driver.feed` for native frames: DATA samples placed by their sample counter; ERROR and STATUS
        frames are counted and noted in :attr:`events` (a STOPPED status sets :attr:`board_stopped`)."""
        info = self._device()
        ch = info.n_channels
        batch = self.parser.feed(data)
        if len(batch) and np.any(batch.types != pr.T_DATA):
            for f in batch.messages():
                if f.type == pr.T_ERROR:
                    self.stats["board_errors"] += 1
                    code = f.payload[0] if f.payload else 0
                    self._event(f"board error {code}: {f.payload[1:].decode('utf-8', 'replace')}")
                elif f.type == pr.T_STATUS and f.payload[:1] == bytes([pr.ST_OVERFLOW]):
                    self._event("board buffer overflow")
                elif f.type == pr.T_STATUS and f.payload[:1] == bytes([pr.ST_STOPPED]):
                    self.board_stopped = True
        idx, cnt, lo = [], [], []
        for blk in batch.data():
            m, ns, c = blk.counts.shape
            if c != ch:
                self.stats["layout_errors"] = self.stats.get("layout_errors", 0) + m
                continue
            idx.append((blk.first_sample[:, None] + np.arange(ns)).reshape(-1))
            cnt.append(blk.counts.reshape(m * ns, c))
            lo.append(np.repeat(blk.lead_off, ns, axis=0))
        if not idx:
            return empty_chunk(ch)
        raw = np.concatenate(idx).astype(np.int64)
        counts = np.concatenate(cnt)
        lead = np.concatenate(lo)
        # the 32-bit sample counter wraps (after ~99 days at 500 Hz): a step back of more than half its range is a
        # wrap, not the past (the recording stalled, then ended short: "delivered 1000 of 5000 samples")
        if self._next_raw is not None and raw[0] + self._wraps < self._next_raw - (1 << 31):
            self._wraps += 1 << 32
        raw += self._wraps
        if raw.size > 1:
            back = np.flatnonzero(raw[1:] - raw[:-1] < -(1 << 31))
            for i in back.tolist():
                raw[i + 1 :] += 1 << 32
            self._wraps += (1 << 32) * len(back)
        self._next_raw = int(raw.max()) + 1
        if raw.size > 1 and np.any(raw[1:] < raw[:-1]):  # layouts interleaved, or a board sending out of order
            o = np.argsort(raw, kind="stable")
            raw, counts, lead = raw[o], counts[o], lead[o]
        if self._offset is None:
            self._offset = -int(raw[0])
        if self._resume is not None:
            if raw[0] + self._offset < self._next:  # the board restarted its counter
                self._offset = self._resume - int(raw[0])
            self._resume = None
        index = raw + self._offset
        self._next = int(index[-1]) + 1
        return Chunk(index, counts_to_mv(counts, info.gain_uv), lead)


class CytonDriver(Driver):
    """OpenBCI Cyton (8 channels, 250 Hz, ADS1299) and our simulated twin."""

    board = Board.CYTON

    def __init__(self, *, gain: int = cy.DEFAULT_GAIN, **kw):
        super().__init__(**kw)
        self.gain = gain
        self.parser = cy.CytonParser()
        self._last_sn: int | None = None
        self._banner = b""

    def handshake(self, ser, timeout: float) -> DeviceInfo:
        """:meth:`Driver.handshake` for a Cyton: ``s`` (stop), then ``v`` (soft reset) every second until the
        banner ends in ``$$$`` (:meth:`handshake_feed`)."""
        self.handshake_reset()
        ser.write(b"s")
        time.sleep(0.05)
        ser.reset_input_buffer()
        deadline = time.monotonic() + timeout
        next_v = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_v:
                ser.write(b"v")
                next_v = now + 1.0
            info = self.handshake_feed(read_some(ser))
            if info is not None:
                return info
        if self._banner:
            raise NoSignalError(
                f"no Cyton banner ('v' -> '...$$$') within {timeout:g} s, only noise; wrong board type or baud rate?"
            )
        raise HandshakeError(
            f"board did not answer the Cyton handshake ('v' -> '...$$$') within {timeout:g} s (received nothing)"
        )

    def handshake_reset(self) -> None:
        """Forget an earlier handshake: the parser's partial packet, the last sample number, the banner so far."""
        self.parser.reset()
        self._last_sn = None
        self._banner = b""

    def handshake_feed(self, data: bytes) -> DeviceInfo | None:
        """Pure step of the handshake: the board's description once its banner (``...$$$``) is complete.
        The banner is kept to its last 4 KiB; channel names it declares are used only if all 8 are valid."""
        text = self._banner + bytes(data)
        if b"$$$" not in text:
            self._banner = text[-4096:]
            return None
        banner = text[: text.index(b"$$$")][-4096:].decode("ascii", "replace")
        self._banner = b""
        names = self.names_declared
        if names and len(names) != cy.N_CHANNELS:
            raise IncompatibleDeviceError(
                f"a Cyton has {cy.N_CHANNELS} channels but --channels names {len(names)}: name all {cy.N_CHANNELS} "
                "(e.g. --channels I,II,V1,V2,V3,V4,V5,V6)"
            )
        for line in banner.splitlines():
            if line.lower().startswith("channels:") and not names:
                got = tuple(x.strip() for x in line.split(":", 1)[1].split(",") if x.strip())
                try:
                    names = check_channel_names(got) if len(got) == cy.N_CHANNELS else None
                except ValueError:
                    names = None  # a garbled or hostile banner: generic names, as for a banner without any
        if not names or len(names) != cy.N_CHANNELS:
            names = tuple(f"ch{i + 1}" for i in range(cy.N_CHANNELS))
        self.info = self._accept(
            DeviceInfo(
                board=Board.CYTON,
                fs=cy.FS,
                channel_names=names,
                gain_uv=cy.scale_uv(self.gain),
                adc_bits=24,
                sample_bits=24,
                samples_per_frame=1,
                description=banner.strip()[:MAX_DESCRIPTION],
            ),
            "Cyton settings",
        )
        return self.info

    def start(self, ser) -> None:
        """Send ``b`` (start streaming)."""
        ser.write(b"b")

    def stop(self, ser) -> None:
        """Send ``s`` (stop streaming)."""
        ser.write(b"s")

    def parser_stats(self) -> dict:
        """A copy of the :class:`~firmware_bridge.cyton.CytonParser` counters."""
        return dict(self.parser.stats)

    def flush(self) -> Chunk:
        """The packets the parser held back for want of the next header (see :meth:`Driver.flush`)."""
        return self.feed(b"", final=True)

    def feed(self, data: bytes, final: bool = False) -> Chunk:
        """:meth:`Driver.feed` for Cyton packets: samples placed by their 8-bit sample number (wrapping at 256),
        a rail-level count (:data:`~firmware_bridge.cyton.RAIL`) flagged as lead-off. ``final``: see
        :meth:`flush`."""
        b = self.parser.feed(data, final=final)
        if len(b) == 0:
            return empty_chunk(cy.N_CHANNELS)
        sn = b.sample_number
        step = (np.diff(sn) - 1) % 256 + 1
        if self._last_sn is None or self._resume is not None:
            first = self._resume if self._resume is not None else self._next
            self._resume = None
        else:
            first = self._next + ((int(sn[0]) - self._last_sn - 1) % 256)
        index = first + np.concatenate([[0], np.cumsum(step)])
        self._last_sn = int(sn[-1])
        self._next = int(index[-1]) + 1
        lead = np.abs(b.counts) >= cy.RAIL
        return Chunk(index.astype(np.int64), counts_to_mv(b.counts, self._device().gain_uv), lead)


class AsciiDriver(Driver):
    """Text lines, one sample (one value per channel, comma-separated) per line."""

    board = Board.ASCII

    def __init__(self, *, scale_mv: float = 1.0, **kw):
        super().__init__(**kw)
        self.scale_mv = float(scale_mv)
        self._pending: list = []
        self._pending_rows = 0
        self._header_checked: float | None = None
        self.parser = AsciiParser()

    def handshake(self, ser, timeout: float) -> DeviceInfo:
        """:meth:`Driver.handshake` for an ASCII board, which cannot be asked anything: listen until a line of
        numbers and the rate (declared, or the board's ``# fs=`` header) are known; the lines heard are kept."""
        # no input flush: a sketch streams from power-up and stale lines are still whole samples
        self.handshake_reset()
        deadline = time.monotonic() + timeout
        heard = 0
        while time.monotonic() < deadline:
            data = read_some(ser)
            heard += len(data)
            info = self.handshake_feed(data)
            if info is not None:
                return info
        if not heard:
            raise HandshakeError(f"the ASCII board sent nothing within {timeout:g} s")
        if self.parser.n_channels is None:
            raise NoSignalError(f"no valid line of numbers from the ASCII board within {timeout:g} s (only noise)")
        raise HandshakeError("the ASCII board did not declare its sampling rate; pass fs (e.g. --fs 500)")

    def handshake_reset(self) -> None:
        """Forget an earlier handshake: the parser's partial line and the lines kept for the first :meth:`feed`."""
        self.parser.reset()
        self._pending = []
        self._pending_rows = 0

    def handshake_feed(self, data: bytes) -> DeviceInfo | None:
        """Pure step of the handshake: the board's description once a line of numbers and the rate (declared,
        or from the board's ``# fs=...`` header) are known. A declared rate that disagrees with the board's own
        header, and a header rate outside the bridge's bounds, raise :class:`IncompatibleDeviceError`."""
        b = self.parser.feed(data)
        if len(b):
            self._pending.append(b)
            self._pending_rows += len(b)
            if self._pending_rows > MAX_PENDING_ROWS:  # a board that never says its rate: keep the newest
                while self._pending and self._pending_rows - len(self._pending[0]) >= MAX_PENDING_ROWS:
                    self._pending_rows -= len(self._pending.pop(0))
        self._check_header_fs()
        fs = self.fs_declared or self.parser.header_fs
        ch = self.parser.n_channels
        if ch is None or not fs:
            return None
        names = self.names_declared or self.parser.header_channels
        if self.names_declared and len(self.names_declared) != ch:
            raise IncompatibleDeviceError(
                f"the ASCII board prints {ch} value(s) per line but {len(self.names_declared)} channel names were given"
            )
        if not names or len(names) != ch:
            names = tuple(f"ch{i + 1}" for i in range(ch))
        elif not self.names_declared:
            try:
                names = check_channel_names(names)
            except ValueError:
                names = tuple(f"ch{i + 1}" for i in range(ch))
        self.info = self._accept(
            DeviceInfo(
                board=Board.ASCII,
                fs=float(fs),
                channel_names=tuple(names),
                gain_uv=1000.0 * self.scale_mv,
                adc_bits=0,
                description="ascii lines",
            ),
            "ASCII settings",
        )
        return self.info

    def _check_header_fs(self) -> None:
        hf = self.parser.header_fs
        if hf is None or hf == self._header_checked:
            return
        self._header_checked = hf
        try:
            check_fs(hf, "the ASCII board's header declares a sampling rate:")
        except ValueError as e:
            raise IncompatibleDeviceError(str(e)) from None
        want = self.fs_declared if self.fs_declared else (self.info.fs if self.info else None)
        if want and abs(hf - want) > 1e-4 * want:
            who = "--fs (fs)" if self.fs_declared else "its earlier header"
            raise IncompatibleDeviceError(
                f"the ASCII board's header says fs={hf:g} Hz but {who} says {want:g} Hz; drop --fs or make it agree"
            )

    def start(self, ser) -> None:
        """Nothing to send: an ASCII board streams from power-up."""
        pass

    def stop(self, ser) -> None:
        """Nothing to send: an ASCII board cannot be stopped."""
        pass

    def parser_stats(self) -> dict:
        """A copy of the :class:`~firmware_bridge.ascii_lines.AsciiParser` counters."""
        return dict(self.parser.stats)

    def feed(self, data: bytes) -> Chunk:
        """:meth:`Driver.feed` for text lines, one sample each (the handshake's lines first), times ``scale_mv``;
        a bad line is a one-sample hole, a ``!`` line a lead-off sample. A header whose rate disagrees with the
        one in use raises :class:`IncompatibleDeviceError`."""
        b = self.parser.feed(data)
        self._check_header_fs()  # a header that appears (or changes) mid-stream must agree with the rate in use
        if self._pending:  # lines read during the handshake come first
            parts = self._pending + [b]
            self._pending = []
            ch0 = self.parser.n_channels or 1
            parts = [x for x in parts if len(x) and x.values.shape[1] == ch0]
            if parts:
                from .ascii_lines import AsciiBatch

                b = AsciiBatch(
                    np.concatenate([x.values for x in parts]),
                    np.concatenate([x.bad for x in parts]),
                    np.concatenate([x.lead_off for x in parts]),
                )
        ch = self._device().n_channels
        if len(b) == 0:
            return empty_chunk(ch)
        first = self._resume if self._resume is not None else self._next
        self._resume = None
        index = first + np.arange(len(b), dtype=np.int64)
        self._next = int(index[-1]) + 1
        good = ~b.bad
        vals = b.values[good]
        if vals.shape[1] != ch:
            return empty_chunk(ch)
        lead = np.repeat(b.lead_off[good][:, None], ch, axis=1)
        return Chunk(index[good], vals * self.scale_mv, lead)


def make_driver(board: str, **kw) -> Driver:
    """A driver for ``board`` (``native``, ``cyton`` or ``ascii``)."""
    if board == Board.NATIVE:
        kw.pop("gain", None)
        kw.pop("scale_mv", None)
        return NativeDriver(**kw)
    if board == Board.CYTON:
        kw.pop("scale_mv", None)
        return CytonDriver(**kw)
    if board == Board.ASCII:
        kw.pop("gain", None)
        return AsciiDriver(**kw)
    raise ValueError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
