"""ecgret firmware bridge: protocols, parsers, drivers and simulated boards over serial (pyserial)."""
from .acquire import Acquisition, acquire
from .errors import (BridgeError, DisconnectedError, FaultSpecError, HandshakeError, IncompatibleDeviceError,
                     NoSignalError, PortError)
from .info import DeviceInfo, counts_to_mv
from .ports import PortInfo, list_ports

__all__ = [
    "Acquisition", "acquire", "BridgeError", "DisconnectedError", "FaultSpecError", "HandshakeError",
    "IncompatibleDeviceError", "NoSignalError", "PortError", "DeviceInfo", "counts_to_mv", "PortInfo", "list_ports",
]
