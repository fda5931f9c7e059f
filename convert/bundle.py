"""Write model bundles (format: ``docs/BUNDLE.md``): encoder, Annoy index, cases, manifest, model card.

``edge.bundle.load_bundle`` is the reader; everything it verifies is written here. A bundle is built in a
temporary folder beside the target and renamed into place, so a crash never leaves half a bundle.

Signing (``ecgret-convert sign-bundle``, or ``write_bundle(sign_key=...)`` / ``$ECGRET_SIGNING_KEY``): an
Ed25519 signature of the bundle id (the sha256 of ``manifest.json``, which hashes every other file) goes into
``signature.json`` (format: :mod:`edge.trust`). The private key is a JSON file (``{"format":
"ecgret-signing-key", "private_key": hex, "public_key": hex, ...}``, mode 0600) that lives with the
publisher, never in the repository (``runs/`` and ``~/.config`` are the places; ``runs/`` is gitignored).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import click
import numpy as np

from edge.bundle import (BUNDLE_FILES, CASES_FILE, ENCODER_FILE, FORMAT, FORMAT_VERSION, INDEX_FILE,
                         MANIFEST_FILE, MODEL_CARD_FILE, METRIC, SIGNATURE_FILE, _sha256)
from edge.encoder import kernels_choice, make_interpreter
from edge.errors import ArchiveError, BundleError

__all__ = ["write_bundle", "reindex_bundle", "tune_index", "leaf_capacity", "build_annoy", "exact_topk", "annoy_recall", "case_record",
           "sign_bundle", "generate_signing_key", "read_signing_key", "sign_bundle_command", "ENV_SIGNING_KEY"]

ENV_SIGNING_KEY = "ECGRET_SIGNING_KEY"
KEY_FORMAT = "ecgret-signing-key"

_CASE_KEYS = ("case_id", "super_class", "sub_class", "form", "rhythm", "statements", "report", "source",
              "fold", "patient_id")
_LIST_KEYS = ("super_class", "sub_class", "form", "rhythm")


# ----------------------------------------------------------------------------------------------- index

def build_annoy(embeddings: np.ndarray, n_trees: int, seed: int = 0, path: Path | None = None):
    """Build the angular Annoy index over ``embeddings`` (item i = row i); deterministic for a seed
    (single-threaded build). Saved to ``path`` if given. Returns the AnnoyIndex."""
    from annoy import AnnoyIndex
    emb = np.asarray(embeddings, dtype=np.float32)
    ann = AnnoyIndex(emb.shape[1], METRIC)
    ann.set_seed(int(seed))
    for i, v in enumerate(emb):
        ann.add_item(i, v.tolist())
    ann.build(int(n_trees), n_jobs=1)
    if path is not None:
        ann.save(str(path))
    return ann


def leaf_capacity(dim: int) -> int:
    """Annoy's K for an angular index of ``dim`` dimensions: the most items one node lists. An index of at most
    K items is one leaf per tree, and Annoy's loader then counts 2 x n_trees - 1 roots (every tree's root and
    its copy look alike); :func:`edge.index.check_annoy` finds the same, so such an index is built with 1 tree."""
    from edge.index import node_size
    return node_size(dim) // 4 - 1


def exact_topk(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k item ids by cosine (rows are unit vectors), (n_queries, k)."""
    sims = np.asarray(queries, np.float32) @ np.asarray(embeddings, np.float32).T
    k = min(k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def annoy_recall(ann, embeddings: np.ndarray, query_ids: np.ndarray, truth: np.ndarray, k: int,
                 search_k: int) -> float:
    """Mean recall@k of Annoy's answers against exact search, over the archive items ``query_ids``."""
    hits = 0
    for q, t in zip(query_ids, truth):
        got = ann.get_nns_by_vector(embeddings[q].tolist(), k, search_k=int(search_k))
        hits += len(set(got) & set(t.tolist()))
    return hits / float(truth.size)


def tune_index(embeddings: np.ndarray, k: int = 10, target_recall: float = 0.99, *, seed: int = 0,
               max_queries: int = 500, trees=(8, 16, 32, 64), factors=(1, 2, 4, 8, 16, 32, 64)):
    """Pick the cheapest (n_trees, search_k) reaching ``target_recall`` recall@k against exact search
    over the archive (queries: up to ``max_queries`` archive items, seeded). Cost is search_k (nodes
    inspected), then n_trees. Returns (n_trees, search_k, recall); the best found if none reaches it."""
    emb = np.asarray(embeddings, dtype=np.float32)
    n = emb.shape[0]
    if n == 0:
        raise ArchiveError("cannot tune an index over an empty archive")
    if n <= leaf_capacity(emb.shape[1]):
        trees = (1,)        # one leaf holds every item: one tree is exact search (and more would not load)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    qids = np.sort(rng.choice(n, size=min(max_queries, n), replace=False))
    truth = exact_topk(emb, emb[qids], k)
    tried = []
    for nt in trees:
        ann = build_annoy(emb, nt, seed)
        for f in factors:
            sk = int(nt * k * f)
            r = annoy_recall(ann, emb, qids, truth, k, sk)
            tried.append((nt, sk, r))
            if r >= target_recall:
                break
    ok = [t for t in tried if t[2] >= target_recall]
    nt, sk, r = min(ok, key=lambda t: (t[1], t[0])) if ok else max(tried, key=lambda t: (t[2], -t[1]))
    return int(nt), int(sk), float(r)


# ----------------------------------------------------------------------------------------------- cases

def case_record(c) -> dict:
    """One ``cases.jsonl`` line from a dict or a :class:`convert.archive.Case` (only the spec's keys)."""
    d = c.to_dict() if hasattr(c, "to_dict") else dict(c)
    cid = d.get("case_id")
    if not isinstance(cid, str) or not cid:
        raise ArchiveError(f"case without a case_id: {d!r:.120}")
    out = {}
    for key in _CASE_KEYS:
        v = d.get(key)
        if key in _LIST_KEYS:
            if v is None:
                v = []
            elif isinstance(v, str):
                v = [s.strip() for s in v.split(";") if s.strip()]
            out[key] = [str(x) for x in v]
        elif key in ("statements", "report", "source"):
            out[key] = "" if v is None else str(v)
        elif key == "fold":
            out[key] = None if v is None or v == "" else int(v)
        elif key == "patient_id":
            out[key] = None if v is None or v == "" else str(v)
        else:
            out[key] = v
    return out


def _archive_summary(cases: Sequence[dict]) -> dict:
    folds = sorted({c["fold"] for c in cases if c["fold"] is not None})
    sources = Counter(c["source"] or "unknown" for c in cases)
    sup = Counter(s for c in cases for s in c["super_class"])
    rhy = Counter(s for c in cases for s in c["rhythm"])
    return {"n_cases": len(cases), "folds": folds, "sources": dict(sorted(sources.items())),
            "super_class_counts": dict(sorted(sup.items())), "rhythm_counts": dict(rhy.most_common())}


# ----------------------------------------------------------------------------------------------- encoder

def encoder_details(tflite_bytes: bytes) -> dict:
    """Input/output shapes, dtypes and quantization of an encoder, read with the device interpreter."""
    try:
        interp = make_interpreter(model_content=bytes(tflite_bytes), threads=1)
    except Exception as e:  # noqa: BLE001 - any interpreter failure means an unusable encoder
        raise BundleError(f"encoder.tflite: the interpreter cannot load it ({e})") from None
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise BundleError(f"encoder.tflite: expected 1 input and 1 output, got {len(ins)} and {len(outs)}")
    i, o = ins[0], outs[0]
    in_dt, out_dt = np.dtype(i["dtype"]).name, np.dtype(o["dtype"]).name
    quant = ("int8-full" if in_dt == "int8" and out_dt == "int8"
             else "float32" if in_dt == "float32" and out_dt == "float32" else f"{in_dt}-in-{out_dt}-out")
    return {"input_shape": [int(x) for x in i["shape"]], "input_dtype": in_dt,
            "input_scale": float(i["quantization"][0]), "input_zero_point": int(i["quantization"][1]),
            "output_shape": [int(x) for x in o["shape"]], "output_dtype": out_dt,
            "output_scale": float(o["quantization"][0]), "output_zero_point": int(o["quantization"][1]),
            "embedding_dim": int(o["shape"][-1]), "quantization": quant, "kernels": kernels_choice()}


# ----------------------------------------------------------------------------------------------- writing

def _tool_versions() -> dict:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    from importlib import metadata
    for dist in ("annoy", "ai-edge-litert", "tensorflow", "tensorflow-cpu", "keras"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


PTBXL_ATTRIBUTION = (
    "**PTB-XL** v1.0.3 (Physikalisch-Technische Bundesanstalt, Berlin; 12-lead, 10 s clinical ECGs with "
    "cardiologist reports and SCP-ECG statements), licensed **CC BY 4.0**. Wagner P, Strodthoff N, Bousseljot R-D, "
    "Kreiseler D, Lunze FI, Samek W, Schaeffter T. PTB-XL, a large publicly available electrocardiography dataset. "
    "*Scientific Data* 2020; 7: 154; published on PhysioNet (https://physionet.org/content/ptb-xl/). Statement "
    "labels follow the MERL PTB-XL splits (MIT licence); the English reports are machine translations (RTLP, "
    "Kiyasseh et al.) and are noisy. Redistributing PTB-XL-derived data means keeping this attribution and the "
    "CC BY 4.0 notice with it.")
FEW_CASES = 20       # a rhythm class with fewer archive cases than this is named as a limitation

_INTENDED_USE = [
    "## Intended use", "",
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
        if "int8" in name and isinstance(row, dict) and (("query leads" not in name) if leads is None
                                                         else name.endswith(f"query leads {leads}")):
            return row
    return None


def _data_section(manifest: dict) -> list[str]:
    arc, tr = manifest["archive"], manifest.get("training") or {}
    reidx = tr.get("reindexed") or {}
    enc_training = tr.get("encoder_training", tr)
    lines = ["## Data, licences and attribution", ""]
    for src, n in sorted(arc.get("sources", {}).items()):
        if src == "ptbxl":
            lines.append(f"- **Archive: {n:,} PTB-XL cases.** " + PTBXL_ATTRIBUTION + " This bundle carries "
                         "their statements and reports (`cases.jsonl`) and their embeddings (the index).")
        else:
            where = reidx.get("archive", {}).get("source_dir")
            lines.append(f"- **Archive: {n:,} cases of source `{src}`**" + (f" (imported from `{where}`)" if where
                         else "") + ": the site's own records and reports. Their licence, the patients' consent "
                         "and any redistribution are the site's responsibility: this bundle carries their reports "
                         "(`cases.jsonl`) and their embeddings (the index); share it only as the site's rules "
                         "allow.")
    if _mentions_ptbxl(enc_training) and "ptbxl" not in arc.get("sources", {}):
        lines.append("- **Encoder training data: PTB-XL.** " + PTBXL_ATTRIBUTION)
    if reidx:
        src = reidx.get("encoder_from", {})
        lines.append(f"- **Encoder** taken unchanged from the bundle `{src.get('name')}` (bundle id "
                     f"{str(src.get('bundle_id', ''))[:16]}); this bundle re-indexes another archive with it.")
    lines += ["- Method: after Qiu J et al. Automated Cardiovascular Record Retrieval by Multimodal Learning "
              "between Electrocardiogram and Clinical Report. *ML4H* 2023, PMLR 225: 480-497.",
              "- Text embeddings during training only: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0); "
              "not in the bundle.",
              "- The software is Apache-2.0 (`LICENSE`, `NOTICE`)."]
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
        lines += ["", f"- int8 encoder, 12 leads: P@1 {row['P@1']:.3f}, P@10 {row['P@10']:.3f}, mAP@10 "
                      f"{row['mAP@10']:.3f}, kNN macro-AUROC {row['kNN_macroAUROC']:.3f}, rhythmP@10_nonSR "
                      f"{row['rhythmP@10_nonSR']:.3f}"
                  + (f"; chance (random) P@10 {rnd['P@10']:.3f}" if rnd else "")
                  + (f", raw-signal nearest neighbours {raw['P@10']:.3f}" if raw else "") + "."]
        if row.get("n_queries_nonSR") is not None:
            lines.append(f"- {row['n_queries_nonSR']} of {row.get('n_queries')} queries have a non-sinus rhythm: "
                         f"rhythmP@10_nonSR moves by about {1 / max(1, row['n_queries_nonSR']):.2f} per query.")
    q = ev.get("quantization") or {}
    if q.get("cosine_float_int8_mean") is not None:
        lines.append(f"- int8 against float32: cosine mean {q['cosine_float_int8_mean']:.4f} (min "
                     f"{q['cosine_float_int8_min']:.4f}), top-10 overlap mean {q.get('top10_overlap_mean', 0):.3f}.")
    idx = manifest["index"]
    lines.append(f"- Index: recall@10 {idx['recall_at_10']:.3f} of exact search ({idx['n_trees']} trees, "
                 f"search_k {idx['search_k']}).")
    return lines


def _limitations_section(manifest: dict) -> list[str]:
    arc, tr = manifest["archive"], manifest.get("training") or {}
    pp, ev = manifest.get("preprocessing") or {}, manifest.get("evaluation") or {}
    rhythms = arc.get("rhythm_counts") or {}
    lines = ["## Known limitations", "",
             f"- **Archive and training size.** The archive is {arc['n_cases']:,} cases: a query can only find "
             f"what they contain."
             + (f" Training data: {(tr.get('encoder_training') or tr).get('data')}."
                if (tr.get('encoder_training') or tr).get('data') else "")
             + (" PTB-XL is one German centre, one population, one cardiograph family." if _mentions_ptbxl(tr, arc)
                else "")]
    if tr.get("reindexed"):
        lines.append("- **Encoder not trained on this archive.** It was trained on another archive (Data, above); "
                     "the evaluation figures are that archive's, and this one's retrieval quality is unknown "
                     "until it is evaluated.")
    if pp.get("zscore") == "per-lead":
        lines.append("- **Z-scored signals, no millivolts.** Archive and queries are band-pass filtered "
                     f"({pp.get('bandpass_hz', [0.5, 40])[0]}-{pp.get('bandpass_hz', [0.5, 40])[1]} Hz) and "
                     "z-scored per lead: amplitude is relative, so voltage criteria (left ventricular hypertrophy "
                     "by amplitude, low QRS voltage) cannot be read, and HYP retrieval rests on shape alone."
                     + (" The PTB-XL subset reached the project already z-scored (its mV amplitudes are gone)."
                        if "ptbxl" in arc.get("sources", {}) else ""))
    few = [(k, n) for k, n in rhythms.items() if n < FEW_CASES]
    if rhythms:
        lines.append("- **Rhythm classes with few cases.** Archive rhythms: "
                     + ", ".join(f"{k} {n:,}" for k, n in rhythms.items()) + "."
                     + (f" Classes with fewer than {FEW_CASES} cases ({', '.join(k for k, _ in few)}) have almost "
                        "nothing to be retrieved." if few else ""))
    m = ev.get("metrics") or {}
    full, two = _int8_row(m), _int8_row(m, "II")
    if full and two:
        lines.append(f"- **Reduced leads cost accuracy** (lead II alone: P@10 {two['P@10']:.3f} against "
                     f"{full['P@10']:.3f} with 12 leads); a reduced-lead query cannot show findings its leads do "
                     "not see.")
    sup = arc.get("super_class_counts") or {}
    lines.append("- **Labels, not ground truth.** The cases' labels and reports are the reporting "
                 "cardiologists'; the consensus inherits their errors and their label mix"
                 + (f" ({', '.join(f'{k} {n:,}' for k, n in sorted(sup.items(), key=lambda kv: -kv[1]))} of "
                    f"{arc['n_cases']:,})" if sup else "") + ".")
    return lines


def _model_card(manifest: dict) -> str:
    """MODEL_CARD.md of a bundle, from its manifest: intended use ("similar past cases, not a diagnosis"), data
    sources with their licences and attribution, encoder, index, archive, evaluation figures, known
    limitations (archive and training size, z-scored signals, rhythm classes with few cases) and training."""
    enc, idx, arc = manifest["encoder"], manifest["index"], manifest["archive"]
    size_kb = manifest["files"][ENCODER_FILE]["bytes"] / 1024
    lines = [f"# Model card: {manifest['name']}", "",
             "Offline ECG case retrieval: an ECG is imaged (Gramian angular field, recurrence plot, Markov "
             "transition field per lead tile), embedded by the image encoder below, and its nearest archived "
             "cases are found in the Annoy index. Results are similar past cases, not a diagnosis.", ""]
    lines += _INTENDED_USE + [""] + _data_section(manifest) + [""]
    lines += ["## Encoder",
              f"- input {enc['input_shape']} {enc['input_dtype']}, output {enc['output_shape']} {enc['output_dtype']} "
              f"({enc['quantization']}), {size_kb:.0f} KiB"
              + (f", {enc['params']:,} parameters" if enc.get("params") else "")
              + (f", {enc['macs']:,} MACs" if enc.get("macs") else ""),
              f"- imaging: mode {manifest['imaging'].get('mode')}, shape {manifest['imaging'].get('shape')}",
              "", "## Index",
              f"- Annoy, {idx['metric']}, {idx['dim']} dimensions, {idx['n_items']} items, {idx['n_trees']} trees, "
              f"search_k {idx['search_k']}, recall@10 {idx['recall_at_10']:.3f} against exact search",
              "", "## Archive",
              f"- {arc['n_cases']} cases, folds {arc['folds']}, sources {arc['sources']}",
              f"- superclasses {arc['super_class_counts']}", ""]
    lines += _evaluation_section(manifest) + [""] + _limitations_section(manifest)
    tr = manifest.get("training") or {}
    if tr:
        lines += ["", "## Training", "", "```json", json.dumps(tr, indent=2, sort_keys=True, default=str), "```"]
    return "\n".join(lines) + "\n"


def _existing_files(out: Path) -> dict | None:
    """The ``files`` table of a bundle already at ``out`` (None if it is not a readable bundle)."""
    try:
        m = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
        return m.get("files") if m.get("format") == FORMAT else None
    except (OSError, ValueError):
        return None


def write_bundle(out_dir, *, tflite_bytes: bytes, embeddings: np.ndarray, cases: Sequence, preprocessing: dict,
                 imaging: dict, n_trees: int, search_k: int, recall_at_10: float, training: dict,
                 evaluation: dict | None, name: str, force: bool = False, seed: int = 0,
                 encoder_stats: dict | None = None, items: dict | None = None, sign_key=None) -> Path:
    """Write a bundle to ``out_dir`` (see docs/BUNDLE.md) and return its path.

    embeddings: (N, D) float32, the L2-normalised embeddings of ``cases`` by this very encoder (row i =
    case i). cases: dicts or archive Cases (case ids must be unique). encoder_stats: optional
    ``{"params": int, "macs": int}``. items: what an index item is made of (``manifest.index.items``;
    default: the case's ECG embedding alone). An ``out_dir`` holding a different bundle (or anything else, if
    not empty) is refused unless ``force``; an identical bundle is replaced silently. ``sign_key``: a signing
    key file (default ``$ECGRET_SIGNING_KEY``; none, or ``False``: the bundle is written unsigned).
    """
    out = Path(out_dir)
    emb = np.asarray(embeddings, dtype=np.float32)
    recs = [case_record(c) for c in cases]
    if emb.ndim != 2 or emb.shape[0] != len(recs):
        raise ArchiveError(f"embeddings {emb.shape} do not match the {len(recs)} cases")
    if not np.all(np.isfinite(emb)):
        raise ArchiveError("embeddings contain NaN or Inf")
    norms = np.linalg.norm(emb, axis=1)
    if np.any(np.abs(norms - 1.0) > 1e-3):
        raise ArchiveError(f"embeddings must be L2-normalised (norms {norms.min():.4f}..{norms.max():.4f})")
    dup = [cid for cid, n in Counter(r["case_id"] for r in recs).items() if n > 1]
    if dup:
        raise ArchiveError(f"duplicate case ids: {', '.join(sorted(dup)[:5])}" + (" ..." if len(dup) > 5 else ""))
    if emb.shape[0] <= leaf_capacity(emb.shape[1]) and int(n_trees) != 1:
        raise ArchiveError(f"an index of {emb.shape[0]} items (at most {leaf_capacity(emb.shape[1])}, one leaf) "
                           f"must be built with 1 tree, not {n_trees} (tune_index chooses so)")
    enc = encoder_details(tflite_bytes)
    if enc["embedding_dim"] != emb.shape[1]:
        raise BundleError(f"encoder.tflite: output dimension {enc['embedding_dim']} but embeddings have "
                          f"{emb.shape[1]}")
    if list(imaging.get("shape", [])) != enc["input_shape"][1:]:
        raise BundleError(f"imaging.shape {imaging.get('shape')} does not match the encoder input "
                          f"{enc['input_shape']}")
    enc.update({"params": None, "macs": None})
    enc.update(encoder_stats or {})
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / ENCODER_FILE).write_bytes(bytes(tflite_bytes))
        build_annoy(emb, n_trees, seed, tmp / INDEX_FILE)
        with open(tmp / CASES_FILE, "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "name": name,
            "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
            "files": {},
            "preprocessing": dict(preprocessing), "imaging": dict(imaging), "encoder": enc,
            "index": {"metric": METRIC, "dim": int(emb.shape[1]), "n_items": int(emb.shape[0]),
                      "n_trees": int(n_trees), "search_k": int(search_k), "recall_at_10": float(recall_at_10),
                      "seed": int(seed),
                      "items": dict(items or {"ecg_weight": 1.0, "report_weight": 0.0})},
            "archive": _archive_summary(recs), "training": dict(training or {}),
            "tools": _tool_versions(),
        }
        if evaluation is not None:
            manifest["evaluation"] = dict(evaluation)
        manifest["files"] = {fn: {"sha256": _sha256(tmp / fn), "bytes": (tmp / fn).stat().st_size}
                             for fn in (ENCODER_FILE, INDEX_FILE, CASES_FILE)}
        (tmp / MODEL_CARD_FILE).write_text(_model_card(manifest), encoding="utf-8")
        manifest["files"][MODEL_CARD_FILE] = {"sha256": _sha256(tmp / MODEL_CARD_FILE),
                                              "bytes": (tmp / MODEL_CARD_FILE).stat().st_size}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for fn in BUNDLE_FILES + (MANIFEST_FILE,):
            with open(tmp / fn, "rb") as f:
                os.fsync(f.fileno())
        key = None if sign_key is False else (sign_key or os.environ.get(ENV_SIGNING_KEY) or None)
        if key:
            sign_bundle(tmp, key)
        os.chmod(tmp, 0o755)
        _replace(out, tmp, manifest["files"], force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _same_payload(a: dict | None, b: dict) -> bool:
    keys = (ENCODER_FILE, INDEX_FILE, CASES_FILE)
    return a is not None and all(a.get(k, {}).get("sha256") == b[k]["sha256"] for k in keys)


def _replace(out: Path, tmp: Path, files: dict, force: bool) -> None:
    if out.exists():
        if any(out.iterdir()):
            old = _existing_files(out)
            if not force and not _same_payload(old, files):
                what = "a different bundle" if old is not None else "files that are not a bundle"
                raise BundleError(f"{out}: already holds {what}; use force to replace it")
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))  # empty: a rename target
        os.replace(out, trash)
        try:
            os.replace(tmp, out)
        except BaseException:
            os.replace(trash, out)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, out)


# ----------------------------------------------------------------------------------------------- re-indexing

UNSIGNED_NOTE = ("{out} is not signed: ecgret loads it only with --allow-unsigned (or ECGRET_ALLOW_UNSIGNED=1). "
                 "Sign it with the publisher's key: ecgret-convert sign-bundle {out} --key KEY "
                 "(--new-key creates one; add its public key to the devices' trusted keys)")


def reindex_bundle(encoder_bundle, archive, out_dir, *, name: str | None = None, target_recall: float = 0.99,
                   force: bool = False, allow_unsigned: bool = False, threads: int = 1, progress: bool = True,
                   log=None) -> dict:
    """A new bundle of ``archive`` (a :class:`convert.archive.Archive`) with the encoder of the existing bundle
    ``encoder_bundle``, unchanged. Numpy, Annoy and the TFLite interpreter only: no TensorFlow.

    The existing bundle is verified first (signed by a trusted key unless ``allow_unsigned``); its verified
    encoder bytes embed every archive case through the device code (:func:`convert.index_build.embed_archive`:
    :func:`edge.imaging.ecg_image` and :class:`edge.encoder.Encoder`, with the existing bundle's imaging
    settings, as a query is embedded); then, as the pipeline's bundle step does, the index is tuned
    (:func:`tune_index`), the bundle written (:func:`write_bundle`: a temporary folder, renamed into place) with
    each case's measurements and the existing bundle's measured-rhythm re-ranking setting
    (:func:`convert.rerank.add_to_bundle`). The new bundle is left unsigned (``ecgret-convert sign-bundle``).
    Its manifest records where the encoder came from; its evaluation figures are the encoder's, on its own
    archive (say so: this archive is not evaluated). Returns the manifest."""
    from edge.bundle import verify_bundle
    from edge.imaging import ImagingConfig

    from .index_build import embed_archive
    from .rerank import add_to_bundle, case_measurements
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    src = verify_bundle(encoder_bundle, allow_unsigned=allow_unsigned)
    m = src.manifest
    pp, imaging = dict(m["preprocessing"]), ImagingConfig.from_dict(m["imaging"])
    where = archive.path or "archive"
    if len(archive) == 0:
        raise ArchiveError(f"{where}: the archive has no cases to index")
    T = int(round(float(pp["duration_s"]) * int(pp["target_fs"])))
    if archive.fs != int(pp["target_fs"]) or archive.T != T:
        raise ArchiveError(f"{where}: {archive.T} samples at {archive.fs} Hz, but {src.path} queries "
                           f"{pp['duration_s']:g} s at {pp['target_fs']} Hz ({T} samples)")
    am = archive.meta
    if "notch_hz" in am and am["notch_hz"] != pp.get("notch_hz"):
        say(f"bundle: warning: the archive was preprocessed with notch_hz {am['notch_hz']}, queries of "
            f"{src.path} use {pp.get('notch_hz')}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tflite = src.data[ENCODER_FILE]
    with tempfile.TemporaryDirectory(prefix="ecgret-reindex-") as td:
        enc_path = Path(td) / ENCODER_FILE          # the verified bytes, not the file (it could change)
        enc_path.write_bytes(tflite)
        emb = np.load(embed_archive(archive, enc_path, td, imaging, (0, 1), threads=threads, progress=progress))
    say(f"bundle: {len(archive)} cases embedded by the encoder of {src.path} in {time.time() - t0:.0f} s; "
        f"tuning the index")
    n_trees, search_k, recall = tune_index(emb, k=10, target_recall=target_recall)
    if recall < target_recall:
        say(f"bundle: warning: recall@10 {recall:.4f} below the target {target_recall}")
    origin = {"name": m.get("name"), "bundle_id": src.id, "path": str(src.path), "trust": src.trust.describe()}
    training = {"reindexed": {"encoder_from": origin,
                              "archive": {k: am.get(k) for k in ("importer", "source_dir", "texts_csv", "created",
                                                                  "notch_hz", "n_cases")
                                          if am.get(k) is not None}
                              | {"path": str(archive.path) if archive.path else None,
                                 "n_skipped": len(am.get("skipped") or ())}},
                "encoder_training": m.get("training") or {}}
    evaluation = None
    if m.get("evaluation"):
        evaluation = dict(m["evaluation"])
        evaluation["scope"] = (f"the figures below are the encoder's, measured with the bundle "
                               f"`{m.get('name')}` on its own archive; this bundle's archive "
                               f"({len(archive):,} cases) was not evaluated.")
    measured = dict(zip(archive.ids, case_measurements(archive)))
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.reindex-", dir=out.parent))
    try:
        b = stage / "bundle"
        write_bundle(b, tflite_bytes=tflite, embeddings=emb, cases=list(archive.cases), preprocessing=pp,
                     imaging=imaging.to_dict(), n_trees=n_trees, search_k=search_k, recall_at_10=recall,
                     training=training, evaluation=evaluation, name=name or f"{out.name}", seed=0,
                     encoder_stats={k: m["encoder"].get(k) for k in ("params", "macs")}, sign_key=False)
        rr = m.get("rerank")
        if isinstance(rr, dict) and rr.get("weight") is not None:
            add_to_bundle(b, measured, rr["weight"], rr.get("pool", 100),
                          {"copied_from": origin["name"], "bundle_id": src.id, **({"cv": rr["cv"]} if rr.get("cv")
                                                                                 else {})},
                          **({"rhythm_bonus": rr["rhythm_bonus"]} if "rhythm_bonus" in rr else {}))
        manifest = json.loads((b / MANIFEST_FILE).read_text(encoding="utf-8"))
        _replace(out, b, manifest["files"], force)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    say(f"bundle: {out}: {len(archive)} cases, {n_trees} trees, search_k {search_k}, recall@10 {recall:.4f}")
    say(UNSIGNED_NOTE.format(out=out))
    return manifest


# ----------------------------------------------------------------------------------------------- signing

def generate_signing_key(path, publisher: str) -> dict:
    """Create a new Ed25519 signing key file at ``path`` (refused if it exists; mode 0600). Returns its
    public part (``public_key``, ``key_id``, ``publisher``)."""
    from edge.ed25519 import public_key_from_seed
    from edge.trust import key_id
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    seed = os.urandom(32)
    pub = public_key_from_seed(seed)
    doc = {"format": KEY_FORMAT, "algorithm": "ed25519", "private_key": seed.hex(), "public_key": pub.hex(),
           "key_id": key_id(pub), "publisher": str(publisher),
           "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise BundleError(f"{p}: exists; a signing key is never overwritten") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(doc, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return {k: doc[k] for k in ("public_key", "key_id", "publisher")}


def read_signing_key(path) -> tuple[bytes, dict]:
    """(32-byte private seed, the key file's public fields). A key readable by group or others is refused."""
    from edge.ed25519 import public_key_from_seed
    from edge.trust import key_id
    p = Path(path).expanduser()
    try:
        st = os.stat(p)
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BundleError(f"{p}: signing key unreadable ({e})") from None
    if os.name == "posix" and st.st_mode & 0o077:
        raise BundleError(f"{p}: signing key is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT or doc.get("algorithm") != "ed25519":
        raise BundleError(f"{p}: not an {KEY_FORMAT} file")
    try:
        seed = bytes.fromhex(doc["private_key"])
        if len(seed) != 32:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{p}: private_key: not 64 hex digits") from None
    pub = public_key_from_seed(seed)
    if doc.get("public_key") not in (None, pub.hex()):
        raise BundleError(f"{p}: public_key does not belong to private_key")
    return seed, {"public_key": pub.hex(), "key_id": key_id(pub), "publisher": str(doc.get("publisher") or "")}


def sign_bundle(bundle_dir, key_path) -> dict:
    """Check the bundle at ``bundle_dir`` (everything ``load_bundle`` checks) and write its
    ``signature.json`` with the key at ``key_path``. Returns the signature document."""
    import hashlib

    from edge.bundle import load_bundle
    from edge.ed25519 import _sign, verify
    from edge.trust import SIGNATURE_FORMAT, SIGNATURE_VERSION, signed_message
    d = Path(bundle_dir)
    seed, pub = read_signing_key(key_path)
    b = load_bundle(d, threads=1, ignore_signature=True)    # never sign a bundle that does not load
    mbytes = (d / MANIFEST_FILE).read_bytes()
    if hashlib.sha256(mbytes).hexdigest() != b.id:
        raise BundleError(f"{d / MANIFEST_FILE}: changed while it was being checked; sign again")
    msg = signed_message(mbytes)
    sig = _sign(seed, msg)
    verify(bytes.fromhex(pub["public_key"]), msg, sig)
    doc = {"format": SIGNATURE_FORMAT, "format_version": SIGNATURE_VERSION, "algorithm": "ed25519",
           "bundle_id": hashlib.sha256(mbytes).hexdigest(), "public_key": pub["public_key"],
           "key_id": pub["key_id"], "signature": sig.hex(), "publisher": pub["publisher"],
           "signed": datetime.now(timezone.utc).replace(microsecond=0).isoformat()}
    fd, tmp = tempfile.mkstemp(prefix=f".{SIGNATURE_FILE}.tmp-", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, d / SIGNATURE_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if (d / MANIFEST_FILE).read_bytes() != mbytes:
        raise BundleError(f"{d / MANIFEST_FILE}: changed while it was being signed; sign again")
    return doc


@click.command("sign-bundle")
@click.argument("bundle", type=click.Path(file_okay=False, exists=True))
@click.option("--key", "key_path", envvar=ENV_SIGNING_KEY, required=True, type=click.Path(dir_okay=False),
              help=f"The publisher's private signing key file (env {ENV_SIGNING_KEY}). Never commit it.")
@click.option("--new-key", is_flag=True, help="Create the key file first (refused if it exists).")
@click.option("--publisher", default="ecgret bundle publisher", show_default=True,
              help="Name recorded in a new key file.")
def sign_bundle_command(bundle, key_path, new_key, publisher):
    """Sign BUNDLE (writes BUNDLE/signature.json) after checking that it loads. Devices load it without
    --allow-unsigned once the key's public part is trusted (edge/trust.py or $ECGRET_TRUSTED_KEYS)."""
    if new_key:
        info = generate_signing_key(key_path, publisher)
        click.echo(f"new signing key {key_path} (key id {info['key_id']}); public key {info['public_key']}",
                   err=True)
    doc = sign_bundle(bundle, key_path)
    from edge.trust import trusted_keys
    known = doc["key_id"] in trusted_keys()
    click.echo(f"signed {bundle}: bundle id {doc['bundle_id']}, key {doc['key_id']}"
               + ("" if known else " (not yet trusted by this ecgret: add its public key to edge/trust.py "
                  "TRUSTED_KEYS or to a $ECGRET_TRUSTED_KEYS file)"))
