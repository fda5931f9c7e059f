"""Candidate serial ports, with descriptions (pyserial's ``serial.tools.list_ports``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
    device: str
    description: str
    hwid: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    manufacturer: str | None = None
    likely: str = ""

    def as_dict(self) -> dict:
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
