"""Typed errors of the firmware bridge.

The bridge cannot import :mod:`edge`, so it has its own base class; a CLI turns any
:class:`BridgeError` into one clear line and a non-zero exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: acquire imports this module
    from .acquire import Acquisition


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose.

    acquisition: when a board fails mid-recording (lost for good, silent, or declaring something it cannot
    be), the :class:`~firmware_bridge.acquire.Acquisition` of what had arrived, cut there; else None.
    """

    acquisition: Acquisition | None = None


class PortError(BridgeError):
    """The serial port does not exist, is busy (locked by another program) or cannot be opened."""


class HandshakeError(BridgeError):
    """The board never answered the handshake within the bounded wait."""


class IncompatibleDeviceError(BridgeError):
    """The board reports a sampling rate or channel count the caller cannot use."""


class RateMismatchError(IncompatibleDeviceError):
    """The samples arrived at a rate other than the stated one (a wrong ``--fs``, or a board set to another rate):
    the recording is whole, but answering it would measure every interval wrong. ``acquisition`` holds it (to
    save), it is not to be answered."""


class NoSignalError(BridgeError):
    """No valid frame arrived within the bounded wait (silence or pure noise on the line)."""


class DisconnectedError(BridgeError):
    """The port vanished and could not be reopened before the deadline."""


class FaultSpecError(BridgeError, ValueError):
    """A simulator fault specification (``bitflip:0.001,drop:...``) could not be parsed."""
