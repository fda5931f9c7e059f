"""Building a bundle: from a quantized student (:func:`build_bundle`, the pipeline's last step and ``ecgret-convert
bundle STUDENT_DIR``), or by re-indexing an archive with the encoder of an existing bundle
(:func:`reindex_bundle`, ``ecgret-convert bundle --encoder BUNDLE --archive ARCHIVE``).

Either way the archive is embedded by the int8 encoder through the device interpreter
(:func:`convert.shards.embed_archive`), the Annoy index tuned to recall@10 >= the target against exact search
(:func:`convert.index_build.tune_index`), everything written by :func:`convert.bundle.write_bundle` (staging
folder, then rename; a folder that holds a different bundle is refused unless ``force``), and each case's
measurements with the measured-rhythm re-ranking added (:mod:`convert.rerank`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomicio import staging_folder
from edge.bundle import verify_bundle
from edge.bundle_format import ENCODER_FILE, MANIFEST_FILE
from edge.errors import ArchiveError, ConfigError
from edge.imaging import ImagingConfig

from .archive import check_device_rules, subset
from .bundle import replace_bundle, write_bundle
from .evaluate import default_split, evaluate, markdown_table
from .index_build import IndexConfig, tune_index
from .ptbxl import open_archive
from .quantize import check_gate
from .rerank import add_choice, add_to_bundle, case_measurements, choose
from .shards import embed_archive
from .signing import ENV_SIGNING_KEY, sign_bundle
from .teacher_export import case_vectors
from .waveforms import add_waveforms

__all__ = [
    "build_bundle",
    "reindex_bundle",
    "case_text_vectors",
    "PREPROCESSING",
    "INDEX_ROW",
    "UNSIGNED_NOTE",
    "STUDENT_KEYS",
]

PREPROCESSING = {
    "target_fs": 100,
    "duration_s": 10.0,
    "bandpass_hz": [0.5, 40.0],
    "order": 4,
    "notch_hz": 50.0,
    "zscore": "per-lead",
}


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent.parent,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ============================================================================================ bundle


def case_text_vectors(teacher_run, n_cases: int) -> np.ndarray:
    """Each archive case's report vector for the index: the teacher's text embedding of the report (its text
    head's output), L2-normalised, (N_cases, D). The student regresses the teacher's centred image embeddings,
    so its space is the teacher's up to the centring, and the raw text vectors are used as they are (on fold 8
    they beat centred ones and a least-squares map: docs/TRAINING.md). :class:`ArchiveError` when the run's
    text embeddings do not cover ``n_cases``."""
    run = Path(teacher_run)
    t = np.load(run / "text_embeddings.npy").astype(np.float32)
    if len(t) != n_cases:
        raise ArchiveError(f"{run}: teacher text embeddings cover {len(t)} cases, the archive has {n_cases}")
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def _tuned_index(emb: np.ndarray, say, k: int, target_recall: float, **options) -> tuple[int, int, float]:
    """(n_trees, search_k, recall) of the Annoy index of ``emb`` tuned to ``target_recall`` recall@k
    (:func:`tune_index`, with its ``options``), with a warning when it falls short."""
    n_trees, search_k, recall = tune_index(emb, k=k, target_recall=target_recall, **options)
    if recall < target_recall:
        say(f"bundle: warning: recall@{k} {recall:.4f} below the target {target_recall}")
    return n_trees, search_k, recall


def _write_archive_bundle(
    out_dir, archive, emb: np.ndarray, tflite: bytes, preprocessing: dict, imaging: ImagingConfig, tuned, **options
) -> Path:
    """:func:`write_bundle` of ``archive``'s cases, embedded as ``emb`` by the encoder ``tflite`` with these
    ``preprocessing`` and ``imaging`` settings, indexed as :func:`_tuned_index` chose (``tuned``); ``options``:
    the rest of its arguments (training, evaluation, name, ...)."""
    n_trees, search_k, recall = tuned
    return write_bundle(
        out_dir,
        tflite_bytes=tflite,
        embeddings=emb,
        cases=list(archive.cases),
        preprocessing=preprocessing,
        imaging=imaging.to_dict(),
        n_trees=n_trees,
        search_k=search_k,
        recall_at_10=recall,
        **options,
    )


def _summary(out, n_cases: int, tuned) -> str:
    n_trees, search_k, recall = tuned
    return f"bundle: {out}: {n_cases} cases, {n_trees} trees, search_k {search_k}, recall@10 {recall:.4f}"


def build_bundle(
    student_dir,
    out_dir,
    *,
    archive=None,
    folds=None,
    name: str = "ptbxl-default",
    index: IndexConfig | None = None,
    max_auroc_drop: float = 0.01,
    force: bool = False,
    training: dict | None = None,
    progress: bool = True,
    log=None,
    case_text: np.ndarray | None = None,
    report_weight: float = 0.0,
    cv: dict | None = None,
) -> dict:
    """Write a bundle from a quantized student run (``encoder_int8.tflite`` + ``quant_report.json``): embed the
    archive cases of ``folds`` with the int8 encoder, tune the index, write via :func:`write_bundle`.
    With ``case_text`` ((N_archive, D) report vectors in the student's space, rows as the full archive) and
    ``report_weight`` w > 0 each index item is :func:`convert.teacher_export.case_vectors` of the case's int8 ECG
    embedding and its report vector: a query (an ECG) then scores (1 - w) x ECG similarity + w x
    ECG-to-report similarity. ``cv``: the recipe's cross-validation (:func:`convert.student_cv.cv_evaluation`),
    kept as ``evaluation.cv`` for the model card. Returns the manifest."""
    index = index or IndexConfig()
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    d = Path(student_dir)
    enc_path, rep_path = d / "encoder_int8.tflite", d / "quant_report.json"
    for p in (enc_path, rep_path, d / "student.json"):
        if not p.is_file():
            raise ConfigError(f"{p}: missing; run `ecgret-convert quantize {d}` first")
    report = json.loads(rep_path.read_text())
    warning = check_gate(report, max_auroc_drop, force)
    if warning:
        say(warning)
    info = json.loads((d / "student.json").read_text())
    im = info["imaging"]
    imaging = ImagingConfig.from_dict(im)
    arch = archive if archive is not None else open_archive()
    rows = np.arange(len(arch))
    if folds:
        rows = arch.select(folds=folds)
        if len(rows) == 0:
            raise ArchiveError(f"the archive has no cases in folds {list(folds)}")
        arch = subset(arch, rows)
    seen, dup = set(), []
    for cid in arch.ids:
        (dup.append(cid) if cid in seen else seen.add(cid))
    if dup:
        raise ArchiveError(f"duplicate case ids in the archive: {', '.join(dup[:5])}")
    check_device_rules(arch.cases, str(arch.path or "archive"))
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ArchiveError(f"{out_dir}: exists and is not a folder; give a new folder for the bundle")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="ecgret-shards-") as td:
        p = embed_archive(arch, enc_path, td, imaging, (0, 1), threads=index.threads, progress=progress)
        emb = np.load(p)
    items: dict[str, Any] = {"ecg_weight": 1.0, "report_weight": 0.0}
    index_rows = {}
    if report_weight > 0:
        if case_text is None:
            raise ConfigError("bundle.report_weight > 0 needs the cases' report vectors")
        ecg = emb
        emb = case_vectors(ecg, np.asarray(case_text, np.float32)[rows], report_weight)
        index_rows = _index_rows(arch, ecg, emb)
        items = {
            "ecg_weight": round(1.0 - float(report_weight), 6),
            "report_weight": float(report_weight),
            "report_vectors": "the teacher's text embeddings of the reports (convert.bundle_build.case_text_vectors)",
        }
    say(f"bundle: {len(arch)} cases embedded by the int8 encoder in {time.time() - t0:.0f} s; tuning the index")
    tuned = _tuned_index(
        emb,
        say,
        k=index.k,
        target_recall=index.target_recall,
        seed=index.seed,
        max_queries=index.max_queries,
        trees=index.trees,
    )
    training = dict(training or {})
    training.setdefault("student", {k: info.get(k) for k in STUDENT_KEYS})
    training.setdefault("teacher", info.get("teacher", {}))
    training.setdefault(
        "quantization",
        {
            "representative": report.get("representative"),
            **report.get("quantization", {}),
            "sizes_bytes": report.get("sizes_bytes"),
        },
    )
    training.setdefault("git_commit", _git_commit())
    if warning:
        training["forced"] = warning
    evaluation = {
        "protocol": "shared/docs/EVALUATION.md",
        "heading": report.get("heading"),
        "table_markdown": report["table_markdown"],
        "metrics": report.get("metrics"),
        "quantization": report.get("quantization"),
    }
    if cv:
        evaluation["cv"] = dict(cv)
    if index_rows:  # what the device searches: int8 ECG queries against this index's own items
        evaluation["metrics"] = {**(evaluation["metrics"] or {}), **index_rows}
        lines = evaluation["table_markdown"].split("\n")
        last = max(k for k, ln in enumerate(lines) if ln.startswith("|"))  # the end of the table
        evaluation["table_markdown"] = "\n".join(
            lines[: last + 1] + markdown_table(index_rows).splitlines()[2:] + lines[last + 1 :]
        )
    out = _write_archive_bundle(
        out_dir,
        arch,
        emb,
        enc_path.read_bytes(),
        dict(PREPROCESSING),
        imaging,
        tuned,
        training=training,
        evaluation=evaluation,
        name=name,
        force=force,
        seed=index.seed,
        encoder_stats={k: (report.get("deployed") or info).get(k) for k in ("params", "macs")},
        items=items,
    )
    add_waveforms(out, arch)  # the cases' small ECGs for the report (before any signing)
    folds_here = {c.fold for c in arch.cases}
    if set(range(1, 9)) <= folds_here:  # the measured re-ranking needs folds 1-8 to choose its weight by CV
        rr, measured = choose(out, arch)
        add_choice(out, rr, measured)
        say(
            f"bundle: measured re-ranking, weight {rr['weight']:g}, pool {rr['pool']}, rhythm bonus "
            f"{rr['rhythm_bonus']:g} ({rr['rule']})"
        )
        if os.environ.get(ENV_SIGNING_KEY):
            sign_bundle(out, os.environ[ENV_SIGNING_KEY])
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    say(_summary(out, len(arch), tuned))
    return manifest


STUDENT_KEYS = (
    "name",
    "config",
    "params",
    "macs",
    "best_epoch",
    "val_best",
    "epochs_run",
    "stopped",
    "train_time_s",
    "model_sha256",
)  # what a bundle's manifest says of its student
INDEX_ROW = "bundle index (ECG+report items), int8 queries"


def _index_rows(arch, ecg: np.ndarray, items: np.ndarray) -> dict:
    """Fold-9 queries (their int8 ECG embeddings) against the folds 1-8 items of the index, when the archive
    holds those folds: the figures of what the device searches."""
    q, a = default_split(arch)
    if len(q) == 0 or len(a) == 0:
        return {}
    res = evaluate(arch, {INDEX_ROW: (ecg[q], items[a])}, q, a)
    return {k: {m: v for m, v in r.items() if m != "per_class"} for k, r in res.items()}


UNSIGNED_NOTE = (
    "{out} is not signed: ecgret loads it only with --allow-unsigned (or ECGRET_ALLOW_UNSIGNED=1). "
    "Sign it with the publisher's key: ecgret-convert sign-bundle {out} --key KEY "
    "(--new-key creates one; add its public key to the devices' trusted keys)"
)


def reindex_bundle(
    encoder_bundle,
    archive,
    out_dir,
    *,
    name: str | None = None,
    target_recall: float = 0.99,
    force: bool = False,
    allow_unsigned: bool = False,
    threads: int = 1,
    progress: bool = True,
    log=None,
) -> dict:
    """A new bundle of ``archive`` (a :class:`convert.archive.Archive`) with the encoder of the existing bundle
    ``encoder_bundle``, unchanged. Numpy, Annoy and the TFLite interpreter only: no TensorFlow.

    The existing bundle is verified first (signed by a trusted key unless ``allow_unsigned``); its verified
    encoder bytes embed every archive case through the device code (:func:`convert.shards.embed_archive`:
    :func:`edge.imaging.ecg_image` and :class:`edge.encoder.Encoder`, with the existing bundle's imaging
    settings, as a query is embedded); then, as the pipeline's bundle step does, the index is tuned
    (:func:`tune_index`), the bundle written (:func:`write_bundle`: a temporary folder, renamed into place) with
    each case's measurements and the existing bundle's measured-rhythm re-ranking setting
    (:func:`convert.rerank.add_to_bundle`). The new bundle is left unsigned (``ecgret-convert sign-bundle``).
    Its manifest records where the encoder came from; its evaluation figures are the encoder's, on its own
    archive (say so: this archive is not evaluated). Returns the manifest."""
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    src = verify_bundle(encoder_bundle, allow_unsigned=allow_unsigned)
    m = src.manifest
    pp, imaging = dict(m["preprocessing"]), ImagingConfig.from_dict(m["imaging"])
    where = archive.path or "archive"
    if len(archive) == 0:
        raise ArchiveError(f"{where}: the archive has no cases to index")
    check_device_rules(archive.cases, str(where))
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ArchiveError(f"{out_dir}: exists and is not a folder; give a new folder for the bundle")
    T = int(round(float(pp["duration_s"]) * int(pp["target_fs"])))
    if archive.fs != int(pp["target_fs"]) or archive.T != T:
        raise ArchiveError(
            f"{where}: {archive.T} samples at {archive.fs} Hz, but {src.path} queries "
            f"{pp['duration_s']:g} s at {pp['target_fs']} Hz ({T} samples)"
        )
    am = archive.meta
    if "notch_hz" in am and am["notch_hz"] != pp.get("notch_hz"):
        say(
            f"bundle: warning: the archive was preprocessed with notch_hz {am['notch_hz']}, queries of "
            f"{src.path} use {pp.get('notch_hz')}"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tflite = src.data[ENCODER_FILE]
    with tempfile.TemporaryDirectory(prefix="ecgret-reindex-") as td:
        enc_path = Path(td) / ENCODER_FILE  # the verified bytes, not the file (it could change)
        enc_path.write_bytes(tflite)
        emb = np.load(embed_archive(archive, enc_path, td, imaging, (0, 1), threads=threads, progress=progress))
    say(
        f"bundle: {len(archive)} cases embedded by the encoder of {src.path} in {time.time() - t0:.0f} s; "
        f"tuning the index"
    )
    tuned = _tuned_index(emb, say, k=10, target_recall=target_recall)
    origin = {"name": m.get("name"), "bundle_id": src.id, "path": str(src.path), "trust": src.trust.describe()}
    training = {
        "reindexed": {
            "encoder_from": origin,
            "archive": {
                k: am.get(k)
                for k in ("importer", "source_dir", "texts_csv", "created", "notch_hz", "n_cases")
                if am.get(k) is not None
            }
            | {"path": str(archive.path) if archive.path else None, "n_skipped": len(am.get("skipped") or ())},
        },
        "encoder_training": m.get("training") or {},
    }
    evaluation = None
    if m.get("evaluation"):
        evaluation = dict(m["evaluation"])
        evaluation["scope"] = (
            f"the figures below are the encoder's, measured with the bundle "
            f"`{m.get('name')}` on its own archive; this bundle's archive "
            f"({len(archive):,} cases) was not evaluated."
        )
    measured = dict(zip(archive.ids, case_measurements(archive)))
    with staging_folder(out, "reindex") as stage:
        b = stage / "bundle"
        _write_archive_bundle(
            b,
            archive,
            emb,
            tflite,
            pp,
            imaging,
            tuned,
            training=training,
            evaluation=evaluation,
            name=name or f"{out.name}",
            seed=0,
            encoder_stats={k: m["encoder"].get(k) for k in ("params", "macs")},
            sign_key=False,
        )
        rr = m.get("rerank")
        if isinstance(rr, dict) and rr.get("weight") is not None:
            add_to_bundle(
                b,
                measured,
                rr["weight"],
                rr.get("pool", 100),
                {"copied_from": origin["name"], "bundle_id": src.id, **({"cv": rr["cv"]} if rr.get("cv") else {})},
                **({"rhythm_bonus": rr["rhythm_bonus"]} if "rhythm_bonus" in rr else {}),
            )
        manifest = json.loads((b / MANIFEST_FILE).read_text(encoding="utf-8"))
        replace_bundle(out, b, manifest["files"], force)
    say(_summary(out, len(archive), tuned))
    say(UNSIGNED_NOTE.format(out=out))
    return manifest
