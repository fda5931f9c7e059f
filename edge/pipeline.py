"""One query, end to end: record -> preprocess -> quality gate -> image -> encode -> search -> consensus.

:class:`Retriever` holds a loaded bundle (encoder and index opened once) and an optional local overlay;
``query``, ``demo``, ``bench`` and ``listen`` all go through :meth:`Retriever.query_record`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .consensus import Consensus, vote
from .errors import ConfigError, RecordError
from .leads import LEADS12
from .quality import QualityReport, assess
from .record import Record
from .signal import preprocess

__all__ = ["Match", "QueryResult", "Retriever", "restrict_leads", "STAGES"]

STAGES = ("preprocess", "quality", "image", "encode", "search")


@dataclass(frozen=True)
class Match:
    case_id: str
    score: float
    super_class: tuple[str, ...]
    sub_class: tuple[str, ...]
    rhythm: tuple[str, ...]
    statements: str
    report: str
    source: str = "bundle"     # "bundle" or "overlay"

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "score": round(float(self.score), 4), "super_class": list(self.super_class),
                "sub_class": list(self.sub_class), "rhythm": list(self.rhythm), "statements": self.statements,
                "report": self.report, "source": self.source}


@dataclass(frozen=True)
class QueryResult:
    query: str
    quality: QualityReport
    consensus: Consensus
    matches: tuple[Match, ...]
    timings: dict = field(default_factory=dict)     # seconds per stage and "total"
    leads: tuple[str, ...] = ()                      # the leads the query used (after --leads)
    signal: np.ndarray | None = field(default=None, repr=False, compare=False)  # preprocessed (T, 12)

    def to_dict(self) -> dict:
        return {"query": self.query, "ok": True, "leads": list(self.leads), "quality": self.quality.to_dict(),
                "consensus": self.consensus.to_dict(), "matches": [m.to_dict() for m in self.matches],
                "timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()}}


def _match(case: dict, score: float, source: str) -> Match:
    return Match(case["case_id"], float(score), tuple(case.get("super_class", ())), tuple(case.get("sub_class", ())),
                 tuple(case.get("rhythm", ())), case.get("statements", "") or "", case.get("report", "") or "",
                 source)


def restrict_leads(record: Record, leads, lead_off: np.ndarray | None = None):
    """Keep only the declared ``leads`` of a record (the others are treated as missing).

    Returns (record, lead_off) restricted to the declared leads the record holds. Raises RecordError
    when the record holds none of them."""
    if not leads:
        return record, lead_off
    keep = [j for j, lead in enumerate(record.leads) if lead in leads]
    if not keep:
        raise RecordError(f"{record.name or 'record'}: none of the declared leads {', '.join(leads)} is in the "
                          f"record (it has {', '.join(record.leads)})")
    rec = Record(record.signal[:, keep], record.fs, tuple(record.leads[j] for j in keep), record.name, record.meta)
    return rec, (None if lead_off is None else np.asarray(lead_off)[:, keep])


class Retriever:
    """A bundle ready to answer queries (and an optional overlay searched with it)."""

    def __init__(self, bundle, threads: int | None = None, overlay=None, notch_hz: float | None = None):
        self.bundle = bundle
        if threads is not None and bundle.threads != threads:
            from dataclasses import replace
            self.bundle = bundle = replace(bundle, threads=threads, _cache={
                k: v for k, v in bundle._cache.items() if k != "encoder"})
        self.encoder = bundle.encoder
        self.index = bundle.index
        self.cases = bundle.cases
        self.overlay = overlay
        self.config = bundle.imaging_config
        pp = bundle.manifest.get("preprocessing", {})
        self.notch_hz = pp.get("notch_hz", 50.0) if notch_hz is None else notch_hz
        self.target_fs = int(pp.get("target_fs", 100))
        self.duration_s = float(pp.get("duration_s", 10.0))
        if self.config.fs != self.target_fs:
            raise ConfigError(f"bundle imaging fs {self.config.fs} differs from preprocessing target_fs {self.target_fs}")

    def embed_record(self, record: Record, leads=None, lead_off=None, timings: dict | None = None):
        """(embedding (D,), QualityReport, PreprocessedECG, leads used) for one record."""
        t = {} if timings is None else timings
        t0 = time.perf_counter()
        rec, lo = restrict_leads(record, leads, lead_off)
        pre = preprocess(rec, target_fs=self.target_fs, duration_s=self.duration_s, notch_hz=self.notch_hz or None)
        t1 = time.perf_counter()
        quality = assess(rec, pre, lo, expected=LEADS12)
        t2 = time.perf_counter()
        from .imaging import ecg_image, peak_lead
        use = pre.present & quality.usable
        x = pre.signal if use.all() else np.where(use[None, :], pre.signal, np.float32(0))
        peaks = quality.peaks if quality.peak_lead == peak_lead(use) else None   # the same lead, found once
        img = ecg_image(x, use, self.config, pre.n_valid, peaks)
        t3 = time.perf_counter()
        vec = self.encoder.encode(img)
        t4 = time.perf_counter()
        t.update(preprocess=t1 - t0, quality=t2 - t1, image=t3 - t2, encode=t4 - t3)
        return vec, quality, pre, rec.leads

    def search(self, vec: np.ndarray, top_k: int = 10) -> tuple[Match, ...]:
        k = min(int(top_k), len(self.index)) if len(self.index) else 0
        ids, scores = self.index.search(vec, k) if k else (np.zeros(0, int), np.zeros(0))
        found = [_match(self.cases[i], s, "bundle") for i, s in zip(ids.tolist(), scores.tolist())]
        if self.overlay is not None and len(self.overlay):
            found += [_match(c, s, "overlay") for c, s in self.overlay.search(vec, top_k)]
            found.sort(key=lambda m: -m.score)
        return tuple(found[:top_k])

    def query_record(self, record: Record, leads=None, top_k: int = 10, lead_off=None) -> QueryResult:
        if top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}")
        t = {}
        t0 = time.perf_counter()
        vec, quality, pre, used = self.embed_record(record, leads, lead_off, t)
        t1 = time.perf_counter()
        matches = self.search(vec, top_k)
        t["search"] = time.perf_counter() - t1
        cons = vote(matches)
        t["total"] = time.perf_counter() - t0
        return QueryResult(record.name, quality, cons, matches, t, tuple(used), pre.signal)
