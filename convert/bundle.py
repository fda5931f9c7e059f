"""Write model bundles (format: ``docs/BUNDLE.md``): encoder, Annoy index, cases, manifest, model card.

``edge.bundle.load_bundle`` is the reader; everything it verifies is written here. A bundle is built in a
staging folder beside the target and renamed into place (:func:`edge.atomicio.staging_folder`,
:func:`edge.atomicio.publish_folder`), so a crash never leaves half a bundle. The model card is
:mod:`convert.model_card`'s, signing :mod:`convert.signing`'s; building a bundle from a trained student or
re-indexing an archive with a shipped encoder is :mod:`convert.bundle_build`.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomicio import publish_folder, staging_folder
from edge.bundle import file_sha256
from edge.bundle_format import (
    BUNDLE_FILES,
    CASE_FIELDS,
    CASE_LABEL_FIELDS,
    CASES_FILE,
    ENCODER_FILE,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    MANIFEST_FILE,
    METRIC,
    MODEL_CARD_FILE,
)
from edge.encoder import kernels_choice, make_interpreter
from edge.errors import ArchiveError, BundleError

from .index_build import build_annoy, leaf_capacity
from .model_card import model_card
from .signing import ENV_SIGNING_KEY, sign_bundle

__all__ = ["write_bundle", "replace_bundle", "case_record", "encoder_details"]

_CASE_KEYS = (*CASE_FIELDS, "fold", "patient_id")
_LIST_KEYS = CASE_LABEL_FIELDS


# ----------------------------------------------------------------------------------------------- cases


def case_record(c) -> dict:
    """One ``cases.jsonl`` line from a dict or a :class:`convert.archive.Case` (only the spec's keys)."""
    d = c.to_dict() if hasattr(c, "to_dict") else dict(c)
    cid = d.get("case_id")
    if not isinstance(cid, str) or not cid:
        raise ArchiveError(f"case without a case_id: {d!r:.120}")
    out: dict[str, Any] = {}
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
    return {
        "n_cases": len(cases),
        "folds": folds,
        "sources": dict(sorted(sources.items())),
        "super_class_counts": dict(sorted(sup.items())),
        "rhythm_counts": dict(rhy.most_common()),
    }


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
    quant = (
        "int8-full"
        if in_dt == "int8" and out_dt == "int8"
        else "float32"
        if in_dt == "float32" and out_dt == "float32"
        else f"{in_dt}-in-{out_dt}-out"
    )
    return {
        "input_shape": [int(x) for x in i["shape"]],
        "input_dtype": in_dt,
        "input_scale": float(i["quantization"][0]),
        "input_zero_point": int(i["quantization"][1]),
        "output_shape": [int(x) for x in o["shape"]],
        "output_dtype": out_dt,
        "output_scale": float(o["quantization"][0]),
        "output_zero_point": int(o["quantization"][1]),
        "embedding_dim": int(o["shape"][-1]),
        "quantization": quant,
        "kernels": kernels_choice(),
    }


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


def _existing_files(out: Path) -> dict | None:
    """The ``files`` table of a bundle already at ``out`` (None if it is not a readable bundle)."""
    try:
        m = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
        return m.get("files") if m.get("format") == FORMAT else None
    except (OSError, ValueError):
        return None


def write_bundle(
    out_dir,
    *,
    tflite_bytes: bytes,
    embeddings: np.ndarray,
    cases: Sequence,
    preprocessing: dict,
    imaging: dict,
    n_trees: int,
    search_k: int,
    recall_at_10: float,
    training: dict,
    evaluation: dict | None,
    name: str,
    force: bool = False,
    seed: int = 0,
    encoder_stats: dict | None = None,
    items: dict | None = None,
    sign_key=None,
) -> Path:
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
        raise ArchiveError(
            f"an index of {emb.shape[0]} items (at most {leaf_capacity(emb.shape[1])}, one leaf) "
            f"must be built with 1 tree, not {n_trees} (tune_index chooses so)"
        )
    enc = encoder_details(tflite_bytes)
    if enc["embedding_dim"] != emb.shape[1]:
        raise BundleError(f"encoder.tflite: output dimension {enc['embedding_dim']} but embeddings have {emb.shape[1]}")
    if list(imaging.get("shape", [])) != enc["input_shape"][1:]:
        raise BundleError(f"imaging.shape {imaging.get('shape')} does not match the encoder input {enc['input_shape']}")
    enc.update({"params": None, "macs": None})
    enc.update(encoder_stats or {})
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder")

    with staging_folder(out, keep=True) as tmp:
        (tmp / ENCODER_FILE).write_bytes(bytes(tflite_bytes))
        build_annoy(emb, n_trees, seed, tmp / INDEX_FILE)
        with open(tmp / CASES_FILE, "w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": datetime.now(UTC).replace(microsecond=0).isoformat(),
            "files": {},
            "preprocessing": dict(preprocessing),
            "imaging": dict(imaging),
            "encoder": enc,
            "index": {
                "metric": METRIC,
                "dim": int(emb.shape[1]),
                "n_items": int(emb.shape[0]),
                "n_trees": int(n_trees),
                "search_k": int(search_k),
                "recall_at_10": float(recall_at_10),
                "seed": int(seed),
                "items": dict(items or {"ecg_weight": 1.0, "report_weight": 0.0}),
            },
            "archive": _archive_summary(recs),
            "training": dict(training or {}),
            "tools": _tool_versions(),
        }
        if evaluation is not None:
            manifest["evaluation"] = dict(evaluation)
        manifest["files"] = {
            fn: {"sha256": file_sha256(tmp / fn), "bytes": (tmp / fn).stat().st_size}
            for fn in (ENCODER_FILE, INDEX_FILE, CASES_FILE)
        }
        (tmp / MODEL_CARD_FILE).write_text(model_card(manifest), encoding="utf-8")
        manifest["files"][MODEL_CARD_FILE] = {
            "sha256": file_sha256(tmp / MODEL_CARD_FILE),
            "bytes": (tmp / MODEL_CARD_FILE).stat().st_size,
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for fn in BUNDLE_FILES + (MANIFEST_FILE,):
            with open(tmp / fn, "rb") as f:
                os.fsync(f.fileno())
        key = None if sign_key is False else (sign_key or os.environ.get(ENV_SIGNING_KEY) or None)
        if key:
            sign_bundle(tmp, key)
        os.chmod(tmp, 0o755)
        replace_bundle(out, tmp, manifest["files"], force)
    return out


def _same_payload(a: dict | None, b: dict) -> bool:
    keys = (ENCODER_FILE, INDEX_FILE, CASES_FILE)
    return a is not None and all(a.get(k, {}).get("sha256") == b[k]["sha256"] for k in keys)


def replace_bundle(out: Path, staged: Path, files: dict, force: bool) -> None:
    """Publish the finished bundle folder ``staged`` at ``out``. A folder there that holds a different bundle (or
    anything else, if not empty) is refused unless ``force``; one with the same encoder, index and cases is
    replaced silently."""
    if out.exists() and any(out.iterdir()):
        old = _existing_files(out)
        if not force and not _same_payload(old, files):
            what = "a different bundle" if old is not None else "files that are not a bundle"
            raise BundleError(f"{out}: already holds {what}; use --force to replace it")
    publish_folder(staged, out)
