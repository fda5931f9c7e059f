"""A bundle's ``MODEL_CARD.md``, written from its manifest: intended use ("similar past cases, not a diagnosis"),
data sources with their licences and attribution, encoder, index, archive, evaluation figures, known
limitations and training."""

from __future__ import annotations

import json

from edge.bundle_format import ENCODER_FILE

__all__ = ["model_card", "PTBXL_ATTRIBUTION"]


PTBXL_ATTRIBUTION = (
    "**PTB-XL** v1.0.3 (Physikalisch-Technische Bundesanstalt, Berlin; 12-lead, 10 s clinical ECGs with "
    "cardiologist reports and SCP-ECG statements), licensed **CC BY 4.0**. Wagner P, Strodthoff N, Bousseljot R-D, "
    "Kreiseler D, Lunze FI, Samek W, Schaeffter T. PTB-XL, a large publicly available electrocardiography dataset. "
    "*Scientific Data* 2020; 7: 154; published on PhysioNet (https://physionet.org/content/ptb-xl/). Statement "
    "labels follow the MERL PTB-XL splits (MIT licence); the English reports are machine translations (RTLP, "
    "Kiyasseh et al.) and are noisy. Redistributing PTB-XL-derived data means keeping this attribution and the "
    "CC BY 4.0 notice with it."
)
FEW_CASES = 20  # a rhythm class with fewer archive cases than this is named as a limitation

_INTENDED_USE = [
    "## Intended use",
    "",
    "- **What it does.** Given a resting 12-lead (or reduced-lead) ECG of 10 s, it retrieves the most similar "
    "cases of an archive of reported ECGs and shows their statements and reports with a similarity-weighted "
    "consensus, offline, on a Raspberry Pi-class device (`ecgret query`, `ecgret listen`).",
    "- **Who.** Clinicians and trained staff who read ECGs, as a second look at comparable past cases, and "
    "engineers installing or evaluating the device.",
    "- **Similar past cases, not a diagnosis.** The output is a list of similar past cases and what their reports "
    "said; it is not a diagnosis, a triage decision or an alarm, and it is not a medical device. A qualified "
    "clinician reads the ECG and decides. Do not use it to rule out an acute condition (myocardial infarction, "
    "life-threatening arrhythmia), for monitoring, or in place of a clinician's reading.",
    "- **Out of scope.** Ambulatory/Holter or single-lead wearable strips, paced rhythms (not validated), records "
    "shorter than 2 s, and any use that acts on the consensus automatically.",
]


def _mentions_ptbxl(*docs) -> bool:
    text = json.dumps(docs, default=str).lower()
    return "ptbxl" in text or "ptb-xl" in text


def _int8_row(metrics: dict, leads: str | None = None) -> dict | None:
    """The int8 encoder's row of an evaluation table (12 leads, or ``query leads <leads>``)."""
    for name, row in (metrics or {}).items():
        if (
            "int8" in name
            and isinstance(row, dict)
            and (("query leads" not in name) if leads is None else name.endswith(f"query leads {leads}"))
        ):
            return row
    return None


def _data_section(manifest: dict) -> list[str]:
    arc, tr = manifest["archive"], manifest.get("training") or {}
    reidx = tr.get("reindexed") or {}
    enc_training = tr.get("encoder_training", tr)
    lines = ["## Data, licences and attribution", ""]
    for src, n in sorted(arc.get("sources", {}).items()):
        if src == "ptbxl":
            lines.append(
                f"- **Archive: {n:,} PTB-XL cases.** " + PTBXL_ATTRIBUTION + " This bundle carries "
                "their statements and reports (`cases.jsonl`) and their embeddings (the index)."
            )
        else:
            where = reidx.get("archive", {}).get("source_dir")
            lines.append(
                f"- **Archive: {n:,} cases of source `{src}`**"
                + (f" (imported from `{where}`)" if where else "")
                + ": the site's own records and reports. Their licence, the patients' consent "
                "and any redistribution are the site's responsibility: this bundle carries their reports "
                "(`cases.jsonl`) and their embeddings (the index); share it only as the site's rules "
                "allow."
            )
    if _mentions_ptbxl(enc_training) and "ptbxl" not in arc.get("sources", {}):
        lines.append("- **Encoder training data: PTB-XL.** " + PTBXL_ATTRIBUTION)
    if reidx:
        src = reidx.get("encoder_from", {})
        lines.append(
            f"- **Encoder** taken unchanged from the bundle `{src.get('name')}` (bundle id "
            f"{str(src.get('bundle_id', ''))[:16]}); this bundle re-indexes another archive with it."
        )
    lines += [
        "- Method: after Qiu J et al. Automated Cardiovascular Record Retrieval by Multimodal Learning "
        "between Electrocardiogram and Clinical Report. *ML4H* 2023, PMLR 225: 480-497.",
        "- Text embeddings during training only: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0); "
        "not in the bundle.",
        "- The software is Apache-2.0 (`LICENSE`, `NOTICE`).",
    ]
    return lines


def _evaluation_section(manifest: dict) -> list[str]:
    ev = manifest.get("evaluation") or {}
    lines = ["## Evaluation", ""]
    if not ev.get("table_markdown"):
        return lines + ["No evaluation figures: this bundle was not evaluated (a test or development bundle)."]
    if ev.get("scope"):
        lines += [f"**Scope.** {ev['scope']}", ""]
    lines += [ev["table_markdown"].strip()]
    m = ev.get("metrics") or {}
    row, rnd, raw = _int8_row(m), m.get("random"), m.get("raw-signal")
    if row:
        lines += [
            "",
            f"- int8 encoder, 12 leads: P@1 {row['P@1']:.3f}, P@10 {row['P@10']:.3f}, mAP@10 "
            f"{row['mAP@10']:.3f}, kNN macro-AUROC {row['kNN_macroAUROC']:.3f}, rhythmP@10_nonSR "
            f"{row['rhythmP@10_nonSR']:.3f}"
            + (f"; chance (random) P@10 {rnd['P@10']:.3f}" if rnd else "")
            + (f", raw-signal nearest neighbours {raw['P@10']:.3f}" if raw else "")
            + ".",
        ]
        if row.get("n_queries_nonSR") is not None:
            lines.append(
                f"- {row['n_queries_nonSR']} of {row.get('n_queries')} queries have a non-sinus rhythm: "
                f"rhythmP@10_nonSR moves by about {1 / max(1, row['n_queries_nonSR']):.2f} per query."
            )
    q = ev.get("quantization") or {}
    if q.get("cosine_float_int8_mean") is not None:
        lines.append(
            f"- int8 against float32: cosine mean {q['cosine_float_int8_mean']:.4f} (min "
            f"{q['cosine_float_int8_min']:.4f}), top-10 overlap mean {q.get('top10_overlap_mean', 0):.3f}."
        )
    idx = manifest["index"]
    lines.append(
        f"- Index: recall@10 {idx['recall_at_10']:.3f} of exact search ({idx['n_trees']} trees, "
        f"search_k {idx['search_k']})."
    )
    return lines


def _cv_section(manifest: dict) -> list[str]:
    """The recipe's cross-validation (``evaluation.cv``, from ``[bundle] cv_results``): every CV row as mean ± SD,
    and the external set's figures; nothing when the bundle was built without one."""
    ev = manifest.get("evaluation") or {}
    cv = ev.get("cv")
    if not cv:
        return []
    rows = cv.get("rows") or {}
    metrics = list(next(iter(rows.values()), {}))
    w = (manifest.get("index", {}).get("items") or {}).get("report_weight", 0.0)
    lines = [
        "## Cross-validation of this recipe",
        "",
        "Four models of this recipe, each trained without its two query folds (folds 1-8 rotated, fold 9 never "
        f"seen), int8 through the device interpreter, exact cosine (`{cv.get('source')}`, sha256 "
        f"{str(cv.get('sha256'))[:16]}). This bundle's own model was trained on folds 1-7; these figures say how "
        f"the recipe generalises. Its index items: {'ECG+report, w ' + format(w, 'g') if w else 'ECG only'}.",
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in (r[k] for k in metrics)) + " |")
    ext = cv.get("external")
    if ext:
        lines += [
            "",
            f"External set {ext.get('set')} (another hospital and cardiograph), each rotation's model answering "
            "through the device query path: "
            + ", ".join(f"{k} {m:.3f} ± {sd:.3f}" for k, (m, sd) in ext["mean_sd"].items())
            + ".",
        ]
    return lines


def _limitations_section(manifest: dict) -> list[str]:
    arc, tr = manifest["archive"], manifest.get("training") or {}
    pp, ev = manifest.get("preprocessing") or {}, manifest.get("evaluation") or {}
    rhythms = arc.get("rhythm_counts") or {}
    lines = [
        "## Known limitations",
        "",
        f"- **Archive and training size.** The archive is {arc['n_cases']:,} cases: a query can only find "
        f"what they contain."
        + (
            f" Training data: {(tr.get('encoder_training') or tr).get('data')}."
            if (tr.get("encoder_training") or tr).get("data")
            else ""
        )
        + (" PTB-XL is one German centre, one population, one cardiograph family." if _mentions_ptbxl(tr, arc) else ""),
    ]
    if tr.get("reindexed"):
        lines.append(
            "- **Encoder not trained on this archive.** It was trained on another archive (Data, above); "
            "the evaluation figures are that archive's, and this one's retrieval quality is unknown "
            "until it is evaluated."
        )
    if pp.get("zscore") == "per-lead":
        lines.append(
            "- **Z-scored signals, no millivolts.** Archive and queries are band-pass filtered "
            f"({pp.get('bandpass_hz', [0.5, 40])[0]}-{pp.get('bandpass_hz', [0.5, 40])[1]} Hz) and "
            "z-scored per lead: amplitude is relative, so voltage criteria (left ventricular hypertrophy "
            "by amplitude, low QRS voltage) cannot be read, and HYP retrieval rests on shape alone."
            + (
                " The PTB-XL subset reached the project already z-scored (its mV amplitudes are gone)."
                if "ptbxl" in arc.get("sources", {})
                else ""
            )
        )
    few = [(k, n) for k, n in rhythms.items() if n < FEW_CASES]
    if rhythms:
        lines.append(
            "- **Rhythm classes with few cases.** Archive rhythms: "
            + ", ".join(f"{k} {n:,}" for k, n in rhythms.items())
            + "."
            + (
                f" Classes with fewer than {FEW_CASES} cases ({', '.join(k for k, _ in few)}) have almost "
                "nothing to be retrieved."
                if few
                else ""
            )
        )
    m = ev.get("metrics") or {}
    full, two = _int8_row(m), _int8_row(m, "II")
    if full and two:
        lines.append(
            f"- **Reduced leads cost accuracy** (lead II alone: P@10 {two['P@10']:.3f} against "
            f"{full['P@10']:.3f} with 12 leads); a reduced-lead query cannot show findings its leads do "
            "not see."
        )
    sup = arc.get("super_class_counts") or {}
    lines.append(
        "- **Labels, not ground truth.** The cases' labels and reports are the reporting "
        "cardiologists'; the consensus inherits their errors and their label mix"
        + (
            f" ({', '.join(f'{k} {n:,}' for k, n in sorted(sup.items(), key=lambda kv: -kv[1]))} of {arc['n_cases']:,})"
            if sup
            else ""
        )
        + "."
    )
    return lines


def model_card(manifest: dict) -> str:
    """MODEL_CARD.md of a bundle, from its manifest: intended use ("similar past cases, not a diagnosis"), data
    sources with their licences and attribution, encoder, index, archive, evaluation figures, known
    limitations (archive and training size, z-scored signals, rhythm classes with few cases) and training."""
    enc, idx, arc = manifest["encoder"], manifest["index"], manifest["archive"]
    size_kb = manifest["files"][ENCODER_FILE]["bytes"] / 1024
    lines = [
        f"# Model card: {manifest['name']}",
        "",
        "Offline ECG case retrieval: an ECG is imaged (Gramian angular field, recurrence plot, Markov "
        "transition field per lead tile), embedded by the image encoder below, and its nearest archived "
        "cases are found in the Annoy index. Results are similar past cases, not a diagnosis.",
        "",
    ]
    lines += _INTENDED_USE + [""] + _data_section(manifest) + [""]
    lines += [
        "## Encoder",
        f"- input {enc['input_shape']} {enc['input_dtype']}, output {enc['output_shape']} {enc['output_dtype']} "
        f"({enc['quantization']}), {size_kb:.0f} KiB"
        + (f", {enc['params']:,} parameters" if enc.get("params") else "")
        + (f", {enc['macs']:,} MACs" if enc.get("macs") else ""),
        f"- imaging: mode {manifest['imaging'].get('mode')}, shape {manifest['imaging'].get('shape')}",
        "",
        "## Index",
        f"- Annoy, {idx['metric']}, {idx['dim']} dimensions, {idx['n_items']} items, {idx['n_trees']} trees, "
        f"search_k {idx['search_k']}, recall@10 {idx['recall_at_10']:.3f} against exact search",
        "",
        "## Archive",
        f"- {arc['n_cases']} cases, folds {arc['folds']}, sources {arc['sources']}",
        f"- superclasses {arc['super_class_counts']}",
        "",
    ]
    cv = _cv_section(manifest)
    lines += _evaluation_section(manifest) + [""] + (cv + [""] if cv else []) + _limitations_section(manifest)
    tr = manifest.get("training") or {}
    if tr:
        lines += ["", "## Training", "", "```json", json.dumps(tr, indent=2, sort_keys=True, default=str), "```"]
    return "\n".join(lines) + "\n"
