"""The external set (``ecgret-convert evaluate --external ludb-dev``, ``shared/docs/EVALUATION.md``, "External
set"): every record goes through the device's query path (:meth:`edge.retrieval.Retriever.query_record`, what
``ecgret query --json`` answers), and :func:`external_metrics` scores the answer's rhythm and the consensus's
superclass support against the cardiologists' labels."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .evaluate import SUPERCLASSES, auroc

__all__ = [
    "EXTERNAL_METRICS",
    "external_answers",
    "rhythm_agreement",
    "external_metrics",
    "external_table",
    "external_variants",
]

EXTERNAL_METRICS: tuple[str, ...] = (
    "rhythm_all",
    "rhythm_nonSR",
    "rhythm_balanced",
    "rhythm_cases_all",
    "super_macroAUROC",
)


def external_answers(cases, retriever, leads=None, progress: bool = False) -> list[dict]:
    """Answer every external case (:class:`convert.ludb.LudbCase`: raw record, cardiologists' rhythm and
    superclasses) through the device's query path, ``retriever.query_record`` on the record read as
    ``ecgret query`` reads it. One row per case: the labels, ``ok``, the answer's rhythm (``rhythm.label``), the
    similar cases' top rhythm, the consensus superclass supports and the top-10 case ids; a record the device
    refuses gives ``ok: false`` and its one-line error."""
    from edge.errors import EcgretError
    from edge.io import read_record
    from edge.signal import PAD_S

    max_s = retriever.duration_s + PAD_S  # what `ecgret query` reads
    it = list(cases)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="external", unit="record", leave=False)
    rows = []
    for c in it:
        row = {"record": c.record, "rhythm": c.rhythm, "super_class": list(c.super_class)}
        try:
            res = retriever.query_record(read_record(c.path.with_suffix(".hea"), max_seconds=max_s), leads=leads)
        except EcgretError as e:
            row.update(ok=False, error=str(e))
        else:
            row.update(
                ok=True,
                answer_rhythm=res.rhythm.label if res.rhythm is not None else None,
                retrieved_rhythm=res.consensus.rhythm[0].label if res.consensus.rhythm else None,
                support={v.label: float(v.support) for v in res.consensus.super_class},
                matches=[m.case_id for m in res.matches],
            )
        rows.append(row)
    return rows


def rhythm_agreement(truth, answer) -> dict:
    """Agreement of answered rhythms with the reference (PTB-XL codes; a missing answer counts as wrong): over
    all records, over the non-sinus ones (reference not SR) and balanced (the mean of the per-rhythm
    accuracies). Records without a reference rhythm are left out."""
    pairs = [(t, a) for t, a in zip(truth, answer) if t is not None]
    per: dict[str, list[bool]] = {}
    for t, a in pairs:
        per.setdefault(t, []).append(t == a)
    non = [t == a for t, a in pairs if t != "SR"]
    return {
        "all": float(np.mean([t == a for t, a in pairs])) if pairs else float("nan"),
        "non_sinus": float(np.mean(non)) if non else float("nan"),
        "n": len(pairs),
        "n_non_sinus": len(non),
        "balanced": float(np.mean([np.mean(v) for v in per.values()])) if per else float("nan"),
        "per_rhythm": {k: [int(sum(v)), len(v)] for k, v in sorted(per.items())},
    }


def external_metrics(rows: list[dict]) -> dict:
    """The external-set figures of EVALUATION.md from :func:`external_answers` rows: the answer's rhythm
    agreement (all, non-sinus, balanced; refused records count as wrong), the similar cases' top rhythm alone
    (``rhythm_cases_all``), and the AUROC per superclass of the consensus support (0 where the consensus does not
    name the class) across the answered records, with their macro mean over the classes both present and absent
    (``super_macroAUROC``)."""
    ok = [r for r in rows if r.get("ok")]
    ans = rhythm_agreement([r["rhythm"] for r in rows], [r.get("answer_rhythm") for r in rows])
    cases = rhythm_agreement([r["rhythm"] for r in rows], [r.get("retrieved_rhythm") for r in rows])
    per_class = {}
    for c in SUPERCLASSES:
        score = np.array([r["support"].get(c, 0.0) for r in ok])
        lab = np.array([c in r["super_class"] for r in ok])
        per_class[c] = {"AUROC": auroc(score, lab), "n_records": int(lab.sum())}
    aucs = [v["AUROC"] for v in per_class.values() if np.isfinite(v["AUROC"])]
    return {
        "rhythm_all": ans["all"],
        "rhythm_nonSR": ans["non_sinus"],
        "rhythm_balanced": ans["balanced"],
        "rhythm_cases_all": cases["all"],
        "super_macroAUROC": float(np.mean(aucs)) if aucs else float("nan"),
        "per_class": per_class,
        "rhythm": ans,
        "rhythm_cases": cases,
        "n_records": len(rows),
        "n_answered": len(ok),
        "refused": {r["record"]: r["error"] for r in rows if not r.get("ok")},
    }


def external_table(results: Mapping[str, dict], heading: str = "") -> str:
    """Markdown: one row a variant; rhythm agreement, the cases' rhythm alone, superclass AUROCs."""
    cols = EXTERNAL_METRICS + tuple(f"AUROC {c}" for c in SUPERCLASSES)
    lines = [heading, ""] if heading else []
    lines.append("| variant | answered | " + " | ".join(cols) + " |")
    lines.append("|---|---|" + "---|" * len(cols))

    def f(v) -> str:
        return "—" if v is None or not np.isfinite(v) else f"{v:.3f}"

    for name, m in results.items():
        cells = [f(m[x]) for x in EXTERNAL_METRICS] + [f(m["per_class"][c]["AUROC"]) for c in SUPERCLASSES]
        lines.append(f"| {name} | {m['n_answered']}/{m['n_records']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def external_variants(external_dir, bundles, lead_sets=("12",), threads=None, progress: bool = True) -> dict:
    """{variant: external_metrics + the per-record rows} for each bundle and query lead set on an external
    LUDB-format folder (``cases.csv`` + ``data/``), queried through :class:`edge.retrieval.Retriever` without
    the local overlay."""
    from edge.bundle import load_bundle
    from edge.leads import LEAD_SETS, parse_lead_set
    from edge.retrieval import Retriever

    from .ludb import load_cases

    cases = load_cases(external_dir)
    out = {}
    for bp in bundles:
        b = load_bundle(bp, threads=threads)
        r = Retriever(b)
        for ls in lead_sets:
            leads = None if ls == "12" else (LEAD_SETS.get(ls) or parse_lead_set(ls))
            rows = external_answers(cases, r, leads, progress)
            m = external_metrics(rows)
            m.update(records=rows, bundle_sha256=b.hash, leads=ls)
            out[f"{b.name} int8" + ("" if ls == "12" else f" [{ls}]")] = m
    return out
