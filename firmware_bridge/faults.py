"""Faults a simulated board injects (:mod:`firmware_bridge.simulator`): bit flips, dropped and inserted bytes,
electrodes off, link drops; parsed from a specification (``--faults``), and the byte faults applied to a
stream with the ground truth of which frames they damaged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import FaultSpecError

__all__ = ["Faults", "parse_faults", "inject"]


@dataclass(frozen=True)
class Faults:
    """Faults to inject.

    bitflip, drop, insert: per-byte probabilities of flipping one bit, dropping the byte,
    inserting a random byte before it. leadoff: (channel, t0_s, t1_s) electrode-off spans.
    disconnect: (t_s, duration_s) link drops (the pty vanishes and comes back).
    Times are seconds of the board's sample clock (playback time).
    """

    bitflip: float = 0.0
    drop: float = 0.0
    insert: float = 0.0
    leadoff: tuple = ()
    disconnect: tuple = ()

    @property
    def any_bytes(self) -> bool:
        """Whether any byte-level fault (bit flip, drop, insert) is asked for."""
        return self.bitflip > 0 or self.drop > 0 or self.insert > 0


_NUM = r"([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)"
MAX_S = 86_400.0  # the latest time and the longest span a fault may name: a day of playback


def _secs(text: str) -> float:
    """A time or span of a fault spec, in seconds, at most :data:`MAX_S` (1e308 s overflowed the sample clock)."""
    v = float(text)
    if not v <= MAX_S:
        raise FaultSpecError(f"fault time {text}s is over the {MAX_S:g} s a fault may name")
    return v


def parse_faults(spec: str | None) -> Faults:
    """``"bitflip:0.001,drop:0.001,insert:0.0005,leadoff:V1@2-4s,disconnect:5s,disconnect:8s+2s"``."""
    if not spec:
        return Faults()
    kw: dict = {"leadoff": [], "disconnect": []}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, val = part.partition(":")
        name = name.strip().lower()
        try:
            if name in ("bitflip", "drop", "insert"):
                p = float(val)
                if not 0.0 <= p <= 0.5:
                    raise ValueError
                kw[name] = p
            elif name == "leadoff":
                m = re.fullmatch(r"([A-Za-z0-9_]+)@" + _NUM + r"s?-" + _NUM + r"s?", val.strip())
                if not m or _secs(m.group(3)) <= _secs(m.group(2)):
                    raise ValueError
                kw["leadoff"].append((m.group(1), _secs(m.group(2)), _secs(m.group(3))))
            elif name == "disconnect":
                m = re.fullmatch(_NUM + r"s?(?:\+" + _NUM + r"s?)?", val.strip())
                if not m:
                    raise ValueError
                kw["disconnect"].append((_secs(m.group(1)), _secs(m.group(2) or "1")))
            else:
                raise FaultSpecError(f"unknown fault {name!r} (use bitflip, drop, insert, leadoff, disconnect)")
        except FaultSpecError:
            raise
        except ValueError:
            raise FaultSpecError(
                f"cannot read fault {part!r} (examples: bitflip:0.001, drop:0.001, "
                f"leadoff:V1@2-4s, disconnect:5s or disconnect:5s+2s)"
            ) from None
    kw["leadoff"] = tuple(kw["leadoff"])
    kw["disconnect"] = tuple(sorted(kw["disconnect"]))
    return Faults(**kw)


def inject(
    data: bytes, flen: int, frame_clock: np.ndarray, faults: Faults, rng: np.random.Generator, stats: dict
) -> tuple[bytes, np.ndarray]:
    """``data`` (frames of ``flen`` bytes, frame i sent at board clock ``frame_clock[i]``) with the byte faults
    of ``faults`` drawn from ``rng``, counted in ``stats`` (``flipped_bits``, ``dropped_bytes``,
    ``inserted_bytes``, ``damaged_frames``); returns (the bytes to send, the clocks of the damaged frames)."""
    f = faults
    if not f.any_bytes:
        return data, frame_clock[:0]
    orig = np.frombuffer(data, dtype=np.uint8)
    a = orig.copy()
    L = a.size
    if f.bitflip:
        pos = np.flatnonzero(rng.random(L) < f.bitflip)
        a[pos] ^= (1 << rng.integers(0, 8, pos.size)).astype(np.uint8)
        stats["flipped_bits"] += pos.size
    keep = np.ones(L, bool)
    if f.drop:
        pos = np.flatnonzero(rng.random(L) < f.drop)
        keep[pos] = False
        stats["dropped_bytes"] += pos.size
    out = a[keep]
    ins = np.zeros(0, np.int64)
    if f.insert:
        ins = np.flatnonzero(rng.random(L) < f.insert)
        ins = ins[keep[ins]]  # insert before these (kept) original bytes
        out = np.insert(out, np.cumsum(keep)[ins] - 1, rng.integers(0, 256, ins.size).astype(np.uint8))
        stats["inserted_bytes"] += ins.size
    # ground truth: a frame is intact when its exact bytes still sit where its first byte went
    m = L // flen
    k0 = np.arange(m) * flen
    start = np.cumsum(keep)[k0] - 1 + np.searchsorted(ins, k0, side="right")
    fits = keep[k0] & (start + flen <= out.size)
    same = np.zeros(m, bool)
    if fits.any():
        idx = start[fits][:, None] + np.arange(flen)
        same[fits] = (out[idx] == orig.reshape(m, flen)[fits]).all(axis=1)
    d = np.flatnonzero(~same)
    stats["damaged_frames"] += d.size
    return out.tobytes(), frame_clock[d]
