"""What every board driver is: the :class:`Driver` interface (a handshake, start/stop, and a pure
``feed(bytes) -> Chunk`` step) and the :class:`Chunk` of decoded samples it returns. The drivers of the native,
Cyton and ASCII boards are in :mod:`firmware_bridge.boards`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import IncompatibleDeviceError
from .info import Board, DeviceInfo, check_channel_names, check_fs, check_info
from .parsing import Rows


def _checked(info: DeviceInfo, where: str) -> DeviceInfo:
    """``info`` if it is within the bridge's bounds (:func:`firmware_bridge.info.check_info`), else
    :class:`IncompatibleDeviceError` naming what the board declared."""
    try:
        return check_info(info)
    except ValueError as e:
        raise IncompatibleDeviceError(f"the board's {where} cannot be used: {e}") from None


@dataclass(frozen=True)
class Chunk(Rows):
    """Decoded samples: index (k,) int64 on the acquisition timeline, mv (k, ch), lead_off (k, ch) bool."""

    index: np.ndarray
    mv: np.ndarray
    lead_off: np.ndarray


def empty_chunk(ch: int) -> Chunk:
    """An empty :class:`Chunk` of ``ch`` channels (a feed that decoded nothing)."""
    return Chunk(np.zeros(0, np.int64), np.zeros((0, ch)), np.zeros((0, ch), bool))


class Driver:
    """Base class; see :class:`~firmware_bridge.boards.NativeDriver`, :class:`~firmware_bridge.boards.CytonDriver`,
    :class:`~firmware_bridge.boards.AsciiDriver`."""

    board: Board

    def __init__(self, *, fs: float | None = None, channel_names=None):
        try:
            self.fs_declared = check_fs(fs, "the declared sampling rate") if fs is not None else None
            self.names_declared = check_channel_names(channel_names) if channel_names else None
        except ValueError as e:
            raise IncompatibleDeviceError(str(e)) from None
        self.info: DeviceInfo | None = None
        self.stats: dict = {"reconnects": 0, "board_errors": 0}
        self.events: list[str] = []
        self._next = 0  # next expected timeline index
        self._resume: int | None = None
        self.board_stopped = False  # the board said it stopped streaming (end of its recording)

    def _accept(self, info: DeviceInfo, where: str) -> DeviceInfo:
        """The board's self-description, if within the bridge's bounds and agreeing with a declared rate."""
        info = _checked(info, where)
        want = self.fs_declared
        if want is not None and abs(info.fs - want) > 1e-4 * want:
            raise IncompatibleDeviceError(
                f"the board says it samples at {info.fs:g} Hz but {want:g} Hz was "
                f"declared (--fs); drop --fs or make it agree"
            )
        return info

    # --- I/O
    def handshake(self, ser, timeout: float) -> DeviceInfo:  # pragma: no cover - abstract
        """Talk to the board on the open port ``ser`` until it describes itself (at most ``timeout`` s): its
        checked :class:`DeviceInfo`, also kept as :attr:`info`. :class:`HandshakeError` when nothing answers,
        :class:`NoSignalError` when only noise arrives, :class:`IncompatibleDeviceError` for what it declares."""
        raise NotImplementedError

    def start(self, ser) -> None:  # pragma: no cover - abstract
        """Tell the board to stream (after :meth:`handshake`)."""
        raise NotImplementedError

    def stop(self, ser) -> None:  # pragma: no cover - abstract
        """Tell the board to stop streaming."""
        raise NotImplementedError

    # --- pure
    def feed(self, data: bytes) -> Chunk:  # pragma: no cover - abstract
        """Decode the bytes read since the last call (no I/O): the samples in them, in mV, on the continuous
        timeline (a lost frame leaves a hole in :attr:`Chunk.index`)."""
        raise NotImplementedError

    def flush(self) -> Chunk:
        """Samples a parser holds back until it sees more bytes, released after a pause."""
        return empty_chunk(self.info.n_channels if self.info else 0)

    def _device(self) -> DeviceInfo:
        """The board's description, for decoding samples: the handshake sets it before any :meth:`feed`."""
        if self.info is None:
            raise RuntimeError(f"{type(self).__name__}: samples fed before the handshake")
        return self.info

    def resume(self, elapsed_s: float) -> None:
        """After a reconnect: the next samples start about ``elapsed_s`` after the last ones."""
        fs = self.info.fs if self.info else 0.0
        self._resume = self._next + int(round(elapsed_s * fs))

    def parser_stats(self) -> dict:
        """The parser's counters (bytes, frames, CRC errors, resyncs, ...); empty for a driver without one."""
        return {}

    def all_stats(self) -> dict:
        """:meth:`parser_stats` plus the driver's own counters (reconnects, board errors)."""
        d = dict(self.parser_stats())
        d.update(self.stats)
        return d

    def _event(self, text: str) -> None:
        self.events.append(text)
        del self.events[:-20]
