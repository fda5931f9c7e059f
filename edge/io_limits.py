"""The limits of the record readers (:mod:`edge.io`): what a file may state and how much of it is read.

Constants only (no numpy), so that the CLI's option types can share them without slowing its start.
"""

from __future__ import annotations

__all__ = [
    "MIN_FS",
    "MIN_DURATION_S",
    "MAX_FS",
    "MAX_SECONDS",
    "MAX_SIGNALS",
    "MAX_VALUES",
    "MAX_HEADER_BYTES",
    "MAX_LINE_CHARS",
    "MAX_CSV_CHARS",
    "MAX_NPY_HEADER",
]

MIN_FS = 100.0  # Hz; a record sampled slower is refused
MIN_DURATION_S = 2.0  # seconds of signal a record must hold
MAX_FS = 100_000.0  # Hz; a header, a time column or fs= above this is refused
MAX_SECONDS = 13.0  # default read limit: 10 s used (manifest duration_s) + 3 s (edge.signal.PAD_S)
MAX_SIGNALS = 64  # signals of a WFDB record, leads of a CSV/NPY file
MAX_VALUES = 1 << 24  # samples x signals held at once (128 MiB as float64)
MAX_HEADER_BYTES = 64 * 1024  # a WFDB header
MAX_LINE_CHARS = 1 << 20  # one CSV line
MAX_CSV_CHARS = 256 << 20  # the CSV rows read for one record
MAX_NPY_HEADER = 16 * 1024  # the dict of an NPY file (numpy itself writes ~128 bytes)
