"""The LUDB external set: WFDB wave annotations, reference intervals and the diagnosis -> PTB-XL label table.

LUDB v1.0.1 (Kalyakulina et al., IEEE Access 2020; ODC-By 1.0): 12 leads, 500 Hz, mV, 10 s, a Schiller Cardiovit
AT-101 from another hospital than PTB-XL. Each lead has an annotation file (``N.i`` ... ``N.v6``): every wave is an
onset ``(``, a peak symbol (``p`` P wave, ``N`` QRS, ``t`` T wave) and an offset ``)``.

The reference values follow docs/EVALUATION.md ("Measurement accuracy"): per lead the median over beats of PR
(P onset to QRS onset), QRS (onset to offset) and QT (QRS onset to T offset); the record's value is the median over
leads; heart rate = 60 / mean RR of the lead ii QRS annotations. The label table maps LUDB's English diagnoses to
PTB-XL rhythms and superclasses (EVALUATION.md, "External set").

Numpy and the standard library only: the tests and benchmarks use it without TensorFlow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "read_annotations",
    "Wave",
    "waves",
    "reference",
    "LudbCase",
    "load_cases",
    "rhythm_label",
    "super_classes",
    "axis_class",
    "LUDB_LEADS",
    "LEAD_NAMES",
]

LUDB_LEADS = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")
LEAD_NAMES = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# WFDB annotation codes (ecgcodes.h) this reader needs; everything else is read and skipped.
_SKIP, _NUM, _SUB, _CHN, _AUX = 59, 60, 61, 62, 63
_SYMBOLS = {1: "N", 24: "p", 27: "t", 39: "(", 40: ")"}


def read_annotations(path) -> tuple[np.ndarray, tuple[str, ...]]:
    """(sample indices, symbols) of a WFDB annotation file (MIT format: 16-bit words, 6-bit code, 10-bit time)."""
    data = Path(path).read_bytes()
    words = np.frombuffer(data[: len(data) // 2 * 2], dtype="<u2")
    t = 0
    samples: list[int] = []
    symbols: list[str] = []
    i = 0
    while i < words.size:
        w = int(words[i])
        code, val = w >> 10, w & 0x3FF
        i += 1
        if code == 0 and val == 0:
            break
        if code == _SKIP:  # a 32-bit interval follows, high word first (PDP-11 order)
            if i + 1 >= words.size:
                break
            t += (int(words[i]) << 16) | int(words[i + 1])
            if t >= 1 << 31:
                t -= 1 << 32
            i += 2
        elif code == _AUX:
            i += (val + 1) // 2
        elif code in (_NUM, _SUB, _CHN):
            pass
        else:
            t += val
            samples.append(t)
            symbols.append(_SYMBOLS.get(code, "?"))
    return np.asarray(samples, dtype=np.int64), tuple(symbols)


@dataclass(frozen=True)
class Wave:
    """One annotated wave of one lead: ``kind`` (``"p"`` P wave, ``"N"`` QRS, ``"t"`` T wave) and its onset,
    peak and offset as sample indices."""

    kind: str  # "p", "N" or "t"
    onset: int
    peak: int
    offset: int


def waves(samples: np.ndarray, symbols) -> list[Wave]:
    """The ``( sym )`` triples of one lead's annotations as waves (incomplete triples are dropped)."""
    out = []
    for j in range(1, len(symbols) - 1):
        if symbols[j] in ("p", "N", "t") and symbols[j - 1] == "(" and symbols[j + 1] == ")":
            out.append(Wave(symbols[j], int(samples[j - 1]), int(samples[j]), int(samples[j + 1])))
    return out


def _lead_intervals(ws: list[Wave], fs: float) -> dict:
    """Per-lead medians over beats (ms) of PR, QRS and QT, each beat anchored on its QRS."""
    qrs = [w for w in ws if w.kind == "N"]
    pr, qd, qt = [], [], []
    for k, q in enumerate(qrs):
        qd.append(q.offset - q.onset)
        prev_q = qrs[k - 1].offset if k else -(10**9)
        nxt_q = qrs[k + 1].onset if k + 1 < len(qrs) else 10**9
        ps = [w for w in ws if w.kind == "p" and prev_q <= w.onset < q.onset]
        if ps:
            pr.append(q.onset - ps[-1].onset)
        ts = [w for w in ws if w.kind == "t" and q.offset <= w.offset < nxt_q]
        if ts:
            qt.append(ts[0].offset - q.onset)
    ms = 1000.0 / fs

    def med(v) -> float | None:
        return float(np.median(v)) * ms if v else None

    return {"pr_ms": med(pr), "qrs_ms": med(qd), "qt_ms": med(qt)}


def reference(record_path, fs: float = 500.0) -> dict:
    """The reference measurements of one LUDB record (``record_path`` without extension): heart rate from the
    lead ii QRS annotations, PR/QRS/QT as the median over leads of the per-lead medians (None where no lead has
    the wave, e.g. PR in atrial fibrillation)."""
    base = Path(record_path)
    per = {}
    for lead in LUDB_LEADS:
        f = base.with_name(f"{base.name}.{lead}")
        if f.exists():
            per[lead] = _lead_intervals(waves(*read_annotations(f)), fs)
    out = {}
    for key in ("pr_ms", "qrs_ms", "qt_ms"):
        v = [d[key] for d in per.values() if d[key] is not None]
        out[key] = float(np.median(v)) if v else None
    hr = None
    f = base.with_name(f"{base.name}.ii")
    if f.exists():
        q = [w.peak for w in waves(*read_annotations(f)) if w.kind == "N"]
        if len(q) >= 2:
            hr = 60.0 / (float(np.mean(np.diff(q))) / fs)
    out["heart_rate_bpm"] = hr
    return out


# ----------------------------------------------------------------------------- diagnoses -> PTB-XL labels

RHYTHMS = (  # (pattern in the "Rhythm:" phrase, PTB-XL rhythm statement); first match wins
    ("sinus bradycardia", "SBRAD"),
    ("sinus tachycardia", "STACH"),
    ("sinus arrhythmia", "SARRH"),
    ("irregular sinus rhythm", "SARRH"),
    ("sinus rhythm", "SR"),
    ("atrial fibrillation", "AFIB"),
    ("atrial flutter", "AFLT"),
)

SUPER = (  # (pattern anywhere in the diagnoses, superclass)
    (r"hypertrophy|overload", "HYP"),
    (r"scar formation|(?<!n)stemi", "MI"),
    (r"ischemia|non-specific repolarization|nstemi", "STTC"),
    (r"bundle branch block|hemiblock|av block|av-block|conduction", "CD"),
)


def rhythm_label(diagnoses: str) -> str | None:
    """PTB-XL rhythm statement of a LUDB diagnosis line (None when it names no rhythm of the table)."""
    m = re.search(r"rhythm:\s*([^.]*)", diagnoses, re.IGNORECASE)
    if not m:
        return None
    phrase = m.group(1).lower()
    for pat, lab in RHYTHMS:
        if pat in phrase:
            return lab
    return None


def super_classes(diagnoses: str) -> tuple[str, ...]:
    """PTB-XL diagnostic superclasses of a LUDB diagnosis line; NORM when none of the table's findings occurs."""
    d = diagnoses.lower()
    found = tuple(lab for pat, lab in SUPER if re.search(pat, d))
    return tuple(dict.fromkeys(found)) or ("NORM",)


def axis_class(diagnoses: str) -> str | None:
    """ "left", "right" or "normal" (normal, vertical, horizontal) from "Electric axis of the heart: ...";
    None when the record states no axis (pacemaker records)."""
    m = re.search(r"electric axis of the heart:\s*([^.]*)", diagnoses, re.IGNORECASE)
    if not m:
        return None
    a = m.group(1).strip().lower()
    if "left" in a:
        return "left"
    if "right" in a:
        return "right"
    if a in ("normal", "vertical", "horizontal"):
        return "normal"
    return None


@dataclass(frozen=True)
class LudbCase:
    """One LUDB record: its name and ``path`` (without extension), age (None if not stated), sex, the diagnoses
    text, and the labels :func:`rhythm_label`, :func:`super_classes` and :func:`axis_class` read from it."""

    record: str
    path: Path  # the record without extension (data/N)
    age: int | None
    sex: str
    diagnoses: str
    rhythm: str | None
    super_class: tuple[str, ...]
    axis: str | None
    extra: dict = field(default_factory=dict)


def load_cases(root) -> list[LudbCase]:
    """The records of a LUDB folder (``cases.csv`` + ``data/``), in the order of cases.csv; an
    :class:`~edge.errors.ArchiveError` naming the file and line for a missing or unreadable cases.csv, one
    without a ``record`` column, or a record outside ``data/``."""
    from .importers import need_columns, read_csv_rows, record_path

    root = Path(root)
    path = root / "cases.csv"
    cols, rows = read_csv_rows(path)
    need_columns(path, cols, ["record"])
    out = []
    for k, row in enumerate(rows):
        d = row.get("diagnoses_en", "") or ""
        age = row.get("age", "") or ""
        rec = (row["record"] or "").strip()
        out.append(
            LudbCase(
                rec,
                record_path(root / "data", rec, f"{path}:{k + 2}"),
                int(age) if age.strip().isdigit() and len(age.strip()) <= 3 else None,
                row.get("sex", "") or "",
                d,
                rhythm_label(d),
                super_classes(d),
                axis_class(d),
            )
        )
    return out
