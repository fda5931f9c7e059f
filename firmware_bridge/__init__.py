"""ecgret firmware bridge: protocols, parsers, drivers and simulated boards over serial (pyserial).

Import the module you need (``firmware_bridge.acquire``, ``firmware_bridge.boards``, ...): the package itself
imports nothing, so that a program that only needs :mod:`firmware_bridge.info` (the board names and limits, as
``ecgret``'s options do) does not load numpy and pyserial. Modules: :mod:`.info` (boards, what they declare,
the bounds), :mod:`.errors`, :mod:`.protocol` (the native wire format and its encoders), :mod:`.native_parser`,
:mod:`.cyton`, :mod:`.ascii_lines` (the I/O-free parsers), :mod:`.ports` (listing and opening serial ports),
:mod:`.boards` (the drivers), :mod:`.acquire` (a fixed-length recording), :mod:`.simulator` (simulated boards
on a pty, with :mod:`.faults` and :mod:`.playback`).
"""
