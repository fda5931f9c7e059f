"""One query, end to end: record -> preprocess -> quality gate -> measure -> image -> encode -> search -> consensus
-> rhythm grounded in the measurements.

:class:`Retriever` holds a loaded bundle (encoder and index opened once) and an optional local overlay;
``query``, ``demo``, ``bench`` and ``listen`` all go through :meth:`Retriever.query_record`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .answer import TWIN_SCORE
from .consensus import Consensus, vote
from .errors import ConfigError, RecordError
from .leads import LEADS12
from .measure import Measurements, check_plausible, measure, without_pr_in_af
from .quality import QualityReport, assess
from .record import Record
from .rerank import Ranker, features, setting_of
from .rhythm import RhythmAnswer, ground
from .signal import preprocess

__all__ = ["Match", "QueryResult", "Retriever", "restrict_leads", "STAGES"]

STAGES = ("preprocess", "quality", "measure", "image", "encode", "search")


@dataclass(frozen=True)
class Match:
    """One retrieved case: its id, cosine similarity to the query, labels, statements and report, and whether it
    came from the bundle or the local overlay."""

    case_id: str
    score: float
    super_class: tuple[str, ...]
    sub_class: tuple[str, ...]
    rhythm: tuple[str, ...]
    statements: str
    report: str
    source: str = "bundle"  # "bundle" or "overlay"

    def to_dict(self) -> dict:
        """The match as a JSON object (lists for the label tuples, ``score`` rounded to 4 decimals)."""
        return {
            "case_id": self.case_id,
            "score": round(float(self.score), 4),
            "super_class": list(self.super_class),
            "sub_class": list(self.sub_class),
            "rhythm": list(self.rhythm),
            "statements": self.statements,
            "report": self.report,
            "source": self.source,
        }


@dataclass(frozen=True)
class QueryResult:
    """Everything one query produced: the quality report, the consensus and the matches (best first), the stage
    timings, the leads used, the measurements and grounded rhythm, and the signals the report draws."""

    query: str
    quality: QualityReport
    consensus: Consensus
    matches: tuple[Match, ...]
    timings: dict = field(default_factory=dict)  # seconds per stage and "total"
    leads: tuple[str, ...] = ()  # the leads the query used (after --leads)
    signal: np.ndarray | None = field(default=None, repr=False, compare=False)  # preprocessed (T, 12)
    measurements: Measurements | None = None
    rhythm: RhythmAnswer | None = None
    # for the report (edge.report): the filtered signal in the record's units at its own rate, and its metadata
    native: np.ndarray | None = field(default=None, repr=False, compare=False)  # (n, 12) at native_fs
    native_fs: float = 0.0
    meta: dict = field(default_factory=dict, repr=False, compare=False)  # Record.meta (units, age, sex, ...)

    def to_dict(self) -> dict:
        """The result as the JSON object ``ecgret query --json`` prints (before :func:`edge.answer.result_dict`
        adds plain names and the stamp); ``timings_ms`` in milliseconds. The signals are left out."""
        m = self.measurements
        return {
            "query": self.query,
            "ok": True,
            "leads": list(self.leads),
            "measurements": m.to_dict() if m is not None else None,
            "measurement_findings": list(m.findings) if m is not None else [],
            "rhythm": self.rhythm.to_dict() if self.rhythm is not None else None,
            "quality": self.quality.to_dict(),
            "consensus": self.consensus.to_dict(),
            "matches": [m.to_dict() for m in self.matches],
            "timings_ms": {k: round(v * 1e3, 3) for k, v in self.timings.items()},
        }


def _match(case: dict, score: float, source: str) -> Match:
    return Match(
        case["case_id"],
        float(score),
        tuple(case.get("super_class", ())),
        tuple(case.get("sub_class", ())),
        tuple(case.get("rhythm", ())),
        case.get("statements", "") or "",
        case.get("report", "") or "",
        source,
    )


def restrict_leads(record: Record, leads, lead_off: np.ndarray | None = None):
    """Keep only the declared ``leads`` of a record (the others are treated as missing).

    Returns (record, lead_off) restricted to the declared leads the record holds. Raises RecordError
    when the record holds none of them."""
    if not leads:
        return record, lead_off
    keep = [j for j, lead in enumerate(record.leads) if lead in leads]
    if not keep:
        raise RecordError(
            f"{record.name or 'record'}: none of the declared leads {', '.join(leads)} is in the "
            f"record (it has {', '.join(record.leads)})"
        )
    rec = Record(record.signal[:, keep], record.fs, tuple(record.leads[j] for j in keep), record.name, record.meta)
    return rec, (None if lead_off is None else np.asarray(lead_off)[:, keep])


def _local_key(case: dict, cos: float, label: str | None, bonus: float) -> float:
    """The ranking key of a local (overlay) case beside the bundle's re-ranked keys: its cosine, plus the rhythm
    bonus when its labels carry the rhythm the ranking grounded (as a bundle case of that rhythm gets); a local case
    at twin similarity (:data:`edge.answer.TWIN_SCORE`: the clinic's own copy of this recording) ranks first."""
    if cos >= TWIN_SCORE:
        return 10.0 + cos
    return cos + (bonus if label and label in (case.get("rhythm") or ()) else 0.0)


def _ranker(bundle):
    """The bundle's :class:`edge.rerank.Ranker` (from the manifest's ``rerank`` section and the cases'
    ``measured`` fields), or None when the bundle ranks by cosine alone."""
    st = setting_of(bundle.manifest)
    if st is None or not len(bundle.cases):
        return None
    return Ranker(bundle.cases, bundle.index.cosines, st)


class Retriever:
    """A bundle ready to answer queries (and an optional overlay searched with it)."""

    def __init__(
        self, bundle, threads: int | None = None, overlay=None, notch_hz: float | None = None, measure: bool = True
    ):
        self.bundle = bundle
        if threads is not None and bundle.threads != threads:
            from dataclasses import replace

            self.bundle = bundle = replace(
                bundle, threads=threads, _cache={k: v for k, v in bundle._cache.items() if k != "encoder"}
            )
        self.encoder = bundle.encoder
        self.index = bundle.index
        self.cases = bundle.cases
        self.overlay = overlay
        self.config = bundle.imaging_config
        pp = bundle.manifest.get("preprocessing", {})
        self.notch_hz = pp.get("notch_hz", 50.0) if notch_hz is None else notch_hz
        self.target_fs = int(pp.get("target_fs", 100))
        self.duration_s = float(pp.get("duration_s", 10.0))
        self.measure = bool(measure)  # False: the query path before measurements (the bench compares)
        self._ranker = _ranker(bundle)
        if self.config.fs != self.target_fs:
            raise ConfigError(
                f"bundle imaging fs {self.config.fs} differs from preprocessing target_fs {self.target_fs}"
            )

    def embed_record(self, record: Record, leads=None, lead_off=None, timings: dict | None = None):
        """(embedding (D,), QualityReport, PreprocessedECG, leads used) for one record."""
        vec, quality, pre, rec, _ = self._embed(record, leads, lead_off, {} if timings is None else timings)
        return vec, quality, pre, rec.leads

    def _embed(self, record: Record, leads, lead_off, t: dict):
        """(embedding, QualityReport, PreprocessedECG, the restricted record, Measurements); refuses a record
        whose measured rhythm is impossible at its stated rate (:func:`edge.measure.check_plausible`)."""
        t0 = time.perf_counter()
        rec, lo = restrict_leads(record, leads, lead_off)
        pre = preprocess(
            rec,
            target_fs=self.target_fs,
            duration_s=self.duration_s,
            notch_hz=self.notch_hz or None,
            keep_native=self.measure,
        )
        t1 = time.perf_counter()
        quality = assess(rec, pre, lo, expected=LEADS12)
        t2 = time.perf_counter()
        use = pre.present & quality.usable
        meas = None
        if self.measure:
            meas = measure(
                rec,
                duration_s=self.duration_s,
                notch_hz=self.notch_hz or None,
                leads_present=use,
                pre=pre,
                peaks_hint=(quality.peaks, pre.fs, quality.peak_lead),
            )
            check_plausible(meas, rec.name or "record")
        t3 = time.perf_counter()
        from .imaging import ecg_image
        from .peaks import peak_lead

        x = pre.signal if use.all() else np.where(use[None, :], pre.signal, np.float32(0))
        peaks = quality.peaks if quality.peak_lead == peak_lead(use) else None  # the same lead, found once
        img = ecg_image(x, use, self.config, pre.n_valid, peaks)
        t4 = time.perf_counter()
        vec = self.encoder.encode(img)
        t5 = time.perf_counter()
        t.update(preprocess=t1 - t0, quality=t2 - t1, measure=t3 - t2, image=t4 - t3, encode=t5 - t4)
        return vec, quality, pre, rec, meas

    def search(self, vec: np.ndarray, top_k: int = 10, measurements: Measurements | None = None) -> tuple[Match, ...]:
        """The ``top_k`` nearest cases; with a bundle that has a ``rerank`` section and a measured query, the
        candidate pool ordered by :class:`edge.rerank.Ranker` (scores stay cosines; local overlay cases, which
        carry no measurements, rank by cosine among them)."""
        return self._search(vec, top_k, measurements)[0]

    def _search(self, vec, top_k, measurements):
        """(matches, the RhythmAnswer the ranking grounded, or None)."""
        k = min(int(top_k), len(self.index)) if len(self.index) else 0
        rk = self._ranker
        answer = None
        if rk is not None and measurements is not None and k and np.isfinite(features(measurements)).any():
            pool = min(max(k, rk.setting.pool), len(self.index))
            ids, scores = self.index.search(vec, pool)
            ids, scores, keys, answer = rk.rank(vec, ids, scores, measurements, k)
        else:
            ids, scores = self.index.search(vec, k) if k else (np.zeros(0, int), np.zeros(0))
            keys = scores
        found = [
            (float(key), _match(self.cases[i], s, "bundle"))
            for i, s, key in zip(ids.tolist(), np.asarray(scores).tolist(), np.asarray(keys).tolist())
        ]
        if self.overlay is not None and len(self.overlay):
            label = answer.label if answer is not None and rk is not None and answer.label != "SR" else None
            bonus = rk.setting.rhythm_bonus if label and rk is not None else 0.0
            found += [
                (_local_key(c, s, label, bonus), _match(c, s, "overlay")) for c, s in self.overlay.search(vec, top_k)
            ]
            found.sort(key=lambda km: -km[0])
        return tuple(m for _, m in found[:top_k]), answer

    def query_record(self, record: Record, leads=None, top_k: int = 10, lead_off=None) -> QueryResult:
        """Answer one record end to end (the module docstring's path) with its ``top_k`` most similar cases;
        ``leads``: the leads actually recorded, ``lead_off``: a board's (n, leads) bool mask. Raises
        :class:`~edge.errors.ConfigError` for ``top_k < 1`` and :class:`~edge.errors.RecordError` for a record
        without the declared leads or with a rhythm impossible at its stated rate."""
        if top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {top_k}")
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        vec, quality, pre, rec, meas = self._embed(record, leads, lead_off, t)
        used = rec.leads
        t1 = time.perf_counter()
        matches, rhythm = self._search(vec, top_k, meas)
        t["search"] = time.perf_counter() - t1
        cons = vote(matches)
        if self.measure and rhythm is None:
            rhythm = ground(cons, meas)
        if meas is not None and rhythm is not None:
            meas = without_pr_in_af(meas, rhythm.label)
        t["total"] = time.perf_counter() - t0
        return QueryResult(
            record.name,
            quality,
            cons,
            matches,
            t,
            tuple(used),
            pre.signal,
            meas,
            rhythm,
            pre.native,
            pre.native_fs,
            dict(record.meta) if isinstance(record.meta, dict) else {},
        )
