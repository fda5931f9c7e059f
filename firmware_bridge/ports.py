"""Serial ports: the candidates, with descriptions (pyserial's ``serial.tools.list_ports``), and opening one by
URL (a device path, a pty, ``loop://``, ``socket://host:port``) with a one-line reason when it cannot be."""

from __future__ import annotations

import errno
from dataclasses import asdict, dataclass

import serial

from .errors import PortError

READ_SLICE_S = 0.02  # s, the port's read timeout: how long one read waits for bytes
MAX_READ = 1 << 16  # bytes taken in one read, whatever the transport says is waiting

# USB vendor ids of the serial bridges ECG/EEG boards usually carry
_KNOWN_VID = {
    0x0403: "FTDI (OpenBCI dongle, many boards)",
    0x2341: "Arduino",
    0x2A03: "Arduino",
    0x1A86: "CH340 (Arduino clones)",
    0x10C4: "Silicon Labs CP210x",
    0x239A: "Adafruit",
    0x2E8A: "Raspberry Pi (RP2040)",
    0x303A: "Espressif (ESP32)",
    0x0483: "STMicroelectronics",
}


@dataclass(frozen=True)
class PortInfo:
    """One serial port as ``ecgret ports`` lists it: pyserial's fields, and ``likely``, the kind of USB serial
    bridge its vendor id suggests (empty when unknown)."""

    device: str
    description: str
    hwid: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    manufacturer: str | None = None
    likely: str = ""

    def as_dict(self) -> dict:
        """The fields as a JSON-able dict."""
        return asdict(self)


def list_ports(include_links: bool = False, all_ports: bool = False) -> list[PortInfo]:
    """Serial ports pyserial can see, USB ones first, each with a human description.

    Legacy on-board UARTs that report no hardware at all (``/dev/ttyS*`` with hwid ``n/a``)
    are left out unless ``all_ports``.
    """
    from serial.tools import list_ports as lp

    out = []
    for p in lp.comports(include_links=include_links):
        if not all_ports and (p.hwid or "n/a") == "n/a":
            continue
        out.append(
            PortInfo(
                device=p.device,
                description=p.description or "",
                hwid=p.hwid or "",
                vid=p.vid,
                pid=p.pid,
                serial_number=p.serial_number,
                manufacturer=p.manufacturer,
                likely=_KNOWN_VID.get(p.vid, "") if p.vid is not None else "",
            )
        )
    out.sort(key=lambda q: (q.vid is None, q.device))
    return out


def open_port(url: str, baud: int, *, exclusive: bool = True) -> serial.SerialBase:
    """Open a pyserial URL (a device path, a pty, ``loop://``, ``socket://host:port``).

    Raises :class:`PortError` with a one-line reason when the port does not exist or is busy.
    """
    kwargs = {"baudrate": baud, "timeout": READ_SLICE_S, "write_timeout": 1.0}
    if "://" not in url and exclusive:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(url, **kwargs)
    except serial.SerialException as e:
        err = getattr(e, "errno", None)
        msg = str(e)
        if err == errno.ENOENT or "No such file" in msg or "could not open port" in msg and "No such" in msg:
            raise PortError(f"serial port {url} does not exist (run `ecgret ports` to list ports)") from None
        if err in (errno.EBUSY, errno.EAGAIN) or "lock" in msg.lower() or "busy" in msg.lower():
            raise PortError(f"serial port {url} is busy (another program has it open)") from None
        if err == errno.EACCES or "Permission denied" in msg:
            raise PortError(f"no permission to open serial port {url} (add yourself to the dialout group)") from None
        raise PortError(f"cannot open serial port {url}: {msg}") from None
    except (OSError, ValueError) as e:
        raise PortError(f"cannot open serial port {url}: {e}") from None


def read_some(ser) -> bytes:
    """Whatever is waiting, or up to one short timeout's worth of waiting for the first byte."""
    n = ser.in_waiting
    return ser.read(min(n, MAX_READ) if n else 1)
