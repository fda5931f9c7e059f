"""Measurement accuracy on ludb-dev against the cardiologists' wave boundaries (docs/EVALUATION.md).

    python benchmarks/bench_measure.py [--ludb ../shared/data/ludb-dev] [--json OUT] [--per-record] [--axis-methods]

Prints, per quantity (heart rate, PR, QRS, QT, axis class): mean difference (measured - reference), SD of the
difference, MAE, n and missing; the IEC 60601-2-25 global-interval limits beside them; the axis class the
device's formula gives on the cardiologists' own QRS boundaries (``--axis-methods``: by net amplitude and by area).
Then the rhythm of the whole answer (the shipped bundle's similar cases grounded in the measurements,
``edge.rhythm``) against the cardiologist's: all records, non-sinus ones, balanced over rhythms.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from convert.ludb import load_cases, reference  # noqa: E402
from edge.io import read_record  # noqa: E402

LIMITS = {"heart_rate_bpm": "MAE <= 2 bpm", "pr_ms": "|mean| <= 10, SD <= 10", "qrs_ms": "|mean| <= 10, SD <= 10",
          "qt_ms": "|mean| <= 25, SD <= 30"}


def axis_of(deg):
    if deg is None:
        return None
    return "left" if deg < 0 else ("right" if deg > 90 else "normal")


def evaluate(ludb: Path, retriever=None) -> dict:
    """Accuracy of the measurements the query path makes (``Retriever.query_record``: the device's own)."""
    r = retriever or _retriever()
    rows = []
    for c in load_cases(ludb):
        res = r.query_record(read_record(c.path.with_suffix(".hea")))
        m = res.measurements
        rows.append({"record": c.record, "ref": reference(c.path), "meas": m.to_dict(), "axis_ref": c.axis,
                     "rhythm": c.rhythm, "answer_rhythm": res.rhythm.label,
                     "retrieved_rhythm": res.consensus.rhythm[0].label if res.consensus.rhythm else None,
                     "findings": list(m.findings)})
    out = {"n_records": len(rows), "quantities": {}, "records": rows}
    for key in ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms"):
        pairs = [(r["meas"][key], r["ref"][key]) for r in rows if r["ref"][key] is not None]
        have = [(a, b) for a, b in pairs if a is not None]
        d = np.array([a - b for a, b in have]) if have else np.zeros(0)
        out["quantities"][key] = {"mean_diff": float(d.mean()) if d.size else None,
                                  "sd_diff": float(d.std(ddof=1)) if d.size > 1 else None,
                                  "mae": float(np.abs(d).mean()) if d.size else None,
                                  "n": len(have), "missing": len(pairs) - len(have), "limit": LIMITS[key]}
    ax = [(axis_of(r["meas"]["axis_deg"]), r["axis_ref"]) for r in rows if r["axis_ref"] is not None]
    right = sum(a == b for a, b in ax if a is not None)
    out["quantities"]["axis_class"] = {"accuracy": right / len(ax) if ax else None, "n": len(ax),
                                       "missing": sum(a is None for a, _ in ax), "limit": ">= 90 % right"}
    # the ceiling: the axis computed from the cardiologists' own QRS boundaries, against their stated axis class
    cases = {c.record: c for c in load_cases(ludb)}
    own = [(axis_of(reference_axis(cases[r["record"]].path)), r["axis_ref"], r["record"]) for r in rows
           if r["axis_ref"] is not None]
    out["quantities"]["axis_class"]["reference_boundaries_accuracy"] = (
        sum(a == b for a, b, _ in own) / len(own) if own else None)
    out["quantities"]["axis_class"]["reference_boundaries_disagree"] = [k for a, b, k in own if a != b]
    return out


def reference_axis(record_path, method: str | None = None) -> float | None:
    """The frontal axis (degrees) from the cardiologists' own QRS boundaries, by the device's formula
    (``edge.measure.AXIS_METHOD`` unless ``method`` says "area" or "amplitude"): per beat of leads I and aVF, the
    net QRS deflection between their annotated onset and offset (baseline: the 20 ms before the onset; amplitude
    R - |S|, or the area), medians over beats, ``atan2(2/sqrt(3) aVF, I)``. What the stated axis class would be if
    it followed the QRS vector."""
    from convert.ludb import read_annotations, waves
    from edge import measure as em
    method = method or em.AXIS_METHOD
    p = Path(record_path)
    rec = read_record(p.with_suffix(".hea"))
    net = {}
    for lead in ("I", "aVF"):
        if lead not in rec.leads:
            return None
        j = rec.leads.index(lead)
        ann = p.with_suffix("." + lead.lower())
        if not ann.exists():
            return None
        x = rec.signal[:, j]
        pre = int(round(0.02 * rec.fs))
        v = []
        for w in waves(*read_annotations(ann)):
            if w.kind != "N":
                continue
            q = x[w.onset:w.offset + 1] - np.mean(x[max(0, w.onset - pre):w.onset + 1])
            v.append(float(np.sum(q)) if method == "area" else max(float(q.max()), 0.0) + min(float(q.min()), 0.0))
        if not v:
            return None
        net[lead] = float(np.median(v))
    return float(np.degrees(np.arctan2(net["aVF"] * 2 / np.sqrt(3), net["I"])))


def axis_methods(ludb: Path, retriever=None) -> dict:
    """The axis class accuracy of both net-deflection definitions ("amplitude" R - |S|, "area"), on the device's
    median beats (the query path run with ``edge.measure.AXIS_METHOD`` set to each) and on the cardiologists' own
    QRS boundaries: {"device amplitude": {"accuracy", "n", "wrong": {record: angle}}, ...}."""
    from edge import measure as em
    r = retriever or _retriever()
    cases = [c for c in load_cases(ludb) if c.axis is not None]
    out = {}
    shipped = em.AXIS_METHOD
    try:
        for method in ("amplitude", "area"):
            em.AXIS_METHOD = method
            for src in ("device", "reference boundaries"):
                ang = {c.record: (r.query_record(read_record(c.path.with_suffix(".hea"))).measurements.axis_deg
                                  if src == "device" else reference_axis(c.path, method)) for c in cases}
                wrong = {c.record: (None if ang[c.record] is None else round(ang[c.record], 1)) for c in cases
                         if axis_of(ang[c.record]) != c.axis}
                out[f"{src} {method}"] = {"accuracy": 1 - len(wrong) / len(cases), "n": len(cases), "wrong": wrong}
    finally:
        em.AXIS_METHOD = shipped
    return out


def table(res: dict) -> str:
    lines = ["| quantity | mean diff | SD diff | MAE | n | missing | target |", "| --- | --- | --- | --- | --- | --- | --- |"]
    f = (lambda v: "—" if v is None else f"{v:.1f}")
    for key, q in res["quantities"].items():
        if key == "axis_class":
            lines.append(f"| axis class | | | accuracy {q['accuracy']:.1%} | {q['n']} | {q['missing']} | {q['limit']} |")
        else:
            lines.append(f"| {key} | {f(q['mean_diff'])} | {f(q['sd_diff'])} | {f(q['mae'])} | {q['n']} | "
                         f"{q['missing']} | {q['limit']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ludb", type=Path, default=ROOT.parent / "shared" / "data" / "ludb-dev")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--per-record", action="store_true")
    ap.add_argument("--axis-methods", action="store_true",
                    help="also the axis class by net amplitude and by net area, device and reference boundaries")
    a = ap.parse_args(argv)
    res = evaluate(a.ludb)
    if a.per_record:
        for r in res["records"]:
            m, ref = r["meas"], r["ref"]
            print(r["record"], r["rhythm"], " ".join(f"{k}={m[k]}/{None if ref.get(k) is None else round(ref[k])}"
                                                     for k in ("heart_rate_bpm", "pr_ms", "qrs_ms", "qt_ms")),
                  f"axis={m['axis_deg']}/{r['axis_ref']}", r["findings"])
    print(f"ludb-dev measurement accuracy, {res['n_records']} records (reference: cardiologists' boundaries)")
    print(table(res))
    ax = res["quantities"]["axis_class"]
    from edge.measure import AXIS_METHOD
    print(f"axis class from the cardiologists' own QRS boundaries (net QRS {AXIS_METHOD} of I and aVF): "
          f"{ax['reference_boundaries_accuracy']:.1%} right; their stated class contradicts their own boundaries on "
          f"records {', '.join(ax['reference_boundaries_disagree'])}")
    if a.axis_methods:
        for k, v in axis_methods(a.ludb).items():
            print(f"  axis class, {k}: {v['accuracy']:.1%} of {v['n']}; wrong (record: angle) {v['wrong']}")
    rh = rhythm_agreement(res)
    print(f"\nrhythm of the answer vs the cardiologist: all {rh['all']:.1%}, non-sinus {rh['non_sinus']:.1%} "
          f"(n={rh['n_non_sinus']}), balanced over rhythms {rh['balanced']:.1%}; similar cases' top rhythm alone: "
          f"{rh['retrieval_only_all']:.1%}; per rhythm (right/n): {rh['per_rhythm']}")
    res["rhythm"] = rh
    if a.json:
        a.json.write_text(json.dumps({k: v for k, v in res.items()}, indent=1))
    return 0


def _retriever(bundle=None):
    from edge.bundle import load_bundle
    from edge.retrieval import Retriever
    return Retriever(load_bundle(bundle, threads=1))


def rhythm_agreement(res: dict) -> dict:
    """The answer's rhythm (``ecgret query``'s ``rhythm.label``) against the cardiologist's, on every record of an
    :func:`evaluate` result: all, non-sinus (not SR), and balanced accuracy over the rhythms present."""
    rows = [(r["record"], r["rhythm"], r["answer_rhythm"], r["retrieved_rhythm"]) for r in res["records"]]
    right = [t == a for _, t, a, _ in rows]
    non = [t == a for _, t, a, _ in rows if t != "SR"]
    per = {}
    for _, t, a, _ in rows:
        per.setdefault(t, []).append(t == a)
    return {"all": float(np.mean(right)), "non_sinus": float(np.mean(non)), "n_non_sinus": len(non),
            "balanced": float(np.mean([np.mean(v) for v in per.values()])),
            "per_rhythm": {k: [int(sum(v)), len(v)] for k, v in per.items()},
            "retrieval_only_all": float(np.mean([t == rt for _, t, _, rt in rows])), "records": rows}


if __name__ == "__main__":
    raise SystemExit(main())
