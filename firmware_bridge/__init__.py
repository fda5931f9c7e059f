"""ecgret firmware bridge: protocols, parsers, drivers and simulated boards over serial (pyserial)."""

# `firmware_bridge.acquire` stays the module (call `firmware_bridge.acquire.acquire(...)`).
from .acquire import Acquisition
from .errors import (
    BridgeError,
    DisconnectedError,
    FaultSpecError,
    HandshakeError,
    IncompatibleDeviceError,
    NoSignalError,
    PortError,
)
from .info import DeviceInfo, counts_to_mv
from .ports import PortInfo, list_ports

__all__ = [
    "Acquisition",
    "BridgeError",
    "DisconnectedError",
    "FaultSpecError",
    "HandshakeError",
    "IncompatibleDeviceError",
    "NoSignalError",
    "PortError",
    "DeviceInfo",
    "counts_to_mv",
    "PortInfo",
    "list_ports",
]
