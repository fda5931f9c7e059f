"""The limits and checks every record reader applies (:mod:`edge.io`): sampling rates, read lengths, sizes,
lead names, and the final validation of a record (shape, rate, duration, finite samples); the limits themselves are
:mod:`edge.io_limits`.

Every problem is a :class:`~edge.errors.RecordError` that names the file (``where``) and quotes at most a few
dozen characters of what the file says (:func:`quote`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, RecordError
from .io_limits import MAX_FS, MAX_SIGNALS, MAX_VALUES, MIN_DURATION_S, MIN_FS
from .leads import LEADS12, canonical_lead
from .record import Record

__all__ = [
    "quote",
    "check_fs",
    "max_samples",
    "check_values",
    "canonical_leads",
    "finish",
    "check_fs_agrees",
    "reader_args",
]


def quote(s, n: int = 40) -> str:
    """A short, escaped quotation of text taken from a file, for error messages."""
    s = str(s)
    if len(s) > n:
        return repr(s[:n])[:-1] + f"...{repr(s)[-1]} ({len(s):,} chars)"
    return repr(s)


def check_fs(fs, where: str = "fs", source: str | None = None) -> float:
    """``fs`` as a float if it is a usable sampling rate (finite, positive, at most :data:`MAX_FS`, at least
    :data:`MIN_FS`), else :class:`RecordError`. ``source`` names where the rate came from (None: it was given)."""
    try:
        v = float(fs)
    except (TypeError, ValueError, OverflowError):
        raise RecordError(f"{where}: fs={quote(fs)} was given: a sampling rate must be a number (Hz)") from None
    said = f"the {source} gives {v:g} Hz" if source else f"fs={v:g} Hz was given"
    if not math.isfinite(v):
        raise RecordError(f"{where}: {said}: a sampling rate must be a finite number")
    if v <= 0:
        raise RecordError(f"{where}: {said}: a sampling rate must be positive")
    if v > MAX_FS:
        raise RecordError(f"{where}: {said}: over the maximum of {MAX_FS:g} Hz")
    if v < MIN_FS:
        raise RecordError(f"{where}: sampling rate {v:g} Hz is under the minimum of {MIN_FS:g} Hz")
    return v


def max_samples(fs: float, max_seconds: float) -> int:
    """The most samples a reader takes at ``fs`` Hz to cover ``max_seconds`` s (rounded up)."""
    return int(math.ceil(max_seconds * fs - 1e-9))


def check_values(n: int, n_sig: int, where: str, limit: int = MAX_VALUES) -> None:
    """:class:`RecordError` when ``n`` samples x ``n_sig`` signals exceed ``limit`` values (checked before
    anything is allocated)."""
    if n * n_sig > limit:
        raise RecordError(
            f"{where}: {n:,} samples x {n_sig} signals is over the {MAX_VALUES:,} values a record may hold; refused"
        )


def canonical_leads(names: Sequence[str], where: str) -> tuple[str, ...]:
    """``names`` as canonical lead names (:func:`edge.leads.canonical_lead`); :class:`RecordError` for more than
    :data:`MAX_SIGNALS` names, an unknown name or a duplicate."""
    if len(names) > MAX_SIGNALS:
        raise RecordError(f"{where}: {len(names):,} lead names; at most {MAX_SIGNALS} are supported")
    out: list[str] = []
    unknown: list[str] = []
    for n in names:
        c = canonical_lead(n)
        if c is None:
            unknown.append(str(n).strip())
        else:
            out.append(c)
    if unknown:
        shown = ", ".join(quote(u, 20) for u in unknown[:6]) + (
            f" and {len(unknown) - 6} more" if len(unknown) > 6 else ""
        )
        raise RecordError(f"{where}: unknown lead name(s) {shown}; known: {', '.join(LEADS12)}")
    dup = sorted(c for c, k in Counter(out).items() if k > 1)
    if dup:
        raise RecordError(f"{where}: duplicate lead(s) {', '.join(dup)}")
    return tuple(out)


def _select(signal: np.ndarray, have: tuple[str, ...], want: Sequence[str] | None, where: str):
    if want is None:
        return signal, have
    want_c = canonical_leads(want, where)
    missing = [w for w in want_c if w not in have]
    if missing:
        raise RecordError(f"{where}: lead(s) {', '.join(missing)} not in the record (it has {', '.join(have)})")
    idx = [have.index(w) for w in want_c]
    return signal[:, idx], want_c


MAX_ABS_SAMPLE = 1e10  # over any ECG in mV, uV or a 32-bit ADC's counts; 1e308 overflowed the filters' squares


def _validate(signal: np.ndarray, fs: float, leads: tuple[str, ...], where: str) -> None:
    if signal.ndim != 2 or signal.shape[1] != len(leads):
        raise RecordError(f"{where}: signal shape {signal.shape} does not match {len(leads)} lead name(s)")
    if signal.shape[1] == 0:
        raise RecordError(f"{where}: no leads")
    if not (np.isfinite(fs) and fs >= MIN_FS):
        raise RecordError(f"{where}: sampling rate {fs:g} Hz is under the minimum of {MIN_FS:g} Hz")
    dur = signal.shape[0] / fs
    if dur < MIN_DURATION_S:
        raise RecordError(
            f"{where}: only {dur:.2f} s of signal ({signal.shape[0]} samples at {fs:g} Hz); "
            f"need at least {MIN_DURATION_S:g} s"
        )
    bad = ~np.isfinite(signal)
    if bad.any():
        per = bad.sum(axis=0)
        parts = [f"{leads[j]} ({int(per[j])})" for j in np.flatnonzero(per)]
        raise RecordError(f"{where}: {int(bad.sum())} NaN/Inf sample(s) in lead(s) {', '.join(parts)}")
    big = float(np.max(np.abs(signal))) if signal.size else 0.0
    if big > MAX_ABS_SAMPLE:
        raise RecordError(
            f"{where}: a sample of magnitude {big:.3g}: not an ECG in any unit (mV, uV, ADC counts up to "
            f"{MAX_ABS_SAMPLE:.0e}); check the file's gain and units"
        )


def finish(signal, fs, leads, name, meta, where, want) -> Record:
    """The :class:`Record` every reader returns: ``signal`` (samples x leads) as contiguous float64, the leads
    ``want`` selected in that order (None: all), then validated (shape, rate, duration, finite samples);
    any problem is a :class:`RecordError`."""
    signal = np.ascontiguousarray(signal, dtype=np.float64)
    signal, leads = _select(signal, leads, want, where)
    _validate(signal, float(fs), leads, where)
    return Record(signal=np.ascontiguousarray(signal), fs=float(fs), leads=tuple(leads), name=name, meta=meta)


def check_fs_agrees(given: float | None, found: float, where: str, source: str) -> None:
    """:class:`RecordError` when a given rate (None: none given) differs by more than 1 % from the one the
    ``source`` (a header, a time column) states."""
    if given is not None and abs(float(given) - found) > 0.01 * found:
        raise RecordError(f"{where}: fs={given:g} Hz was given but the {source} says {found:g} Hz")


def _check_max_seconds(max_seconds) -> float:
    try:
        v = float(max_seconds)
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v >= MIN_DURATION_S):
        raise ConfigError(f"max_seconds={max_seconds!r}: must be a number of seconds >= {MIN_DURATION_S:g}")
    return v


def reader_args(path, fs, max_seconds) -> tuple[Path, str, float | None, float]:
    """What every reader starts from: the record's path, its name for messages (``where``), ``fs`` (None: not
    given; else a usable rate, :func:`check_fs`) and ``max_seconds`` (a number of seconds of at least
    :data:`~edge.io_limits.MIN_DURATION_S`, else :class:`~edge.errors.ConfigError`)."""
    p = Path(path)
    where = str(p)
    max_seconds = _check_max_seconds(max_seconds)
    return p, where, (None if fs is None else check_fs(fs, where)), max_seconds
