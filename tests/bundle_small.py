"""A small, real, unsigned bundle built without TensorFlow: the default bundle's encoder and manifest settings,
an Annoy index of ``n`` seeded random unit vectors and ``n`` synthetic cases. Used by the security and fuzz
tests, which rewrite its files and manifest many times (small files hash and parse fast)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from edge.bundle import default_bundle_path
from edge.bundle_format import CASES_FILE, ENCODER_FILE, INDEX_FILE, MANIFEST_FILE, MODEL_CARD_FILE

DIM = 128


def rehash(d: Path, m: dict, *names) -> dict:
    for fn in names or (ENCODER_FILE, INDEX_FILE, CASES_FILE, MODEL_CARD_FILE):
        data = (d / fn).read_bytes()
        m["files"][fn] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return m


def write_manifest(d: Path, m: dict) -> bytes:
    data = (json.dumps(m, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    (d / MANIFEST_FILE).write_bytes(data)
    return data


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build_small_bundle(out: Path, n: int = 400, n_trees: int = 4, seed: int = 0) -> Path:
    from annoy import AnnoyIndex
    src = default_bundle_path()
    out = Path(out)
    out.mkdir(parents=True)
    shutil.copyfile(src / ENCODER_FILE, out / ENCODER_FILE)
    ann = AnnoyIndex(DIM, "angular")
    ann.set_seed(seed)
    for i, v in enumerate(unit_vectors(n, seed)):
        ann.add_item(i, v.tolist())
    ann.build(n_trees, n_jobs=1)
    ann.save(str(out / INDEX_FILE))
    ann.unload()
    with open(out / CASES_FILE, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"case_id": f"syn:{i}", "super_class": ["NORM"], "sub_class": [], "form": [],
                                "rhythm": ["SR"], "statements": "sinus rhythm", "report": f"case {i}",
                                "source": "synthetic", "fold": 1, "patient_id": None}) + "\n")
    (out / MODEL_CARD_FILE).write_text("# Model card: small test bundle\n", encoding="utf-8")
    m = json.loads((src / MANIFEST_FILE).read_text(encoding="utf-8"))
    m["name"] = "small-test-bundle"
    m["index"].update(n_items=n, n_trees=n_trees, search_k=n_trees * 40, seed=seed)
    m["archive"] = {"n_cases": n, "folds": [1], "sources": {"synthetic": n}, "super_class_counts": {"NORM": n},
                    "rhythm_counts": {"SR": n}}
    m.pop("evaluation", None)
    m.pop("waveforms", None)             # the default bundle's cases' waveforms are not these cases'
    m.pop("rerank", None)                # nor their measurements
    m["files"].pop("waveforms.bin", None)
    write_manifest(out, rehash(out, m))
    return out
