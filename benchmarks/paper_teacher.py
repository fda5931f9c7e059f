"""The paper-mode teacher beside ecgret in ``bench_vs_paper.py``: timed and evaluated on PTB-XL fold 9 in one run.

The issue asks for the paper's ViT as "the ``paper``-mode teacher of ``configs/``" where one is trained
(``ecgret-convert train-teacher --config configs/teacher_paper.toml`` -> ``runs/teacher/paper/``): ecgret's recipe on
the published encoding (one beat per lead, GASF/RP/MTF, the 3 x 4 lead grid, no rhythm row; the median beat and
ecgret's numpy fields: ``edge.imaging`` mode ``paper``, 96 x 128), a 4-layer ViT of width 128. Here it is exported to
float32 TFLite (in a subprocess: TensorFlow never enters a benchmark process), checked against the embeddings the
training run wrote (``embeddings.npy``, cosine per case), and then run by ecgret's interpreter wrapper
(``edge.encoder.Encoder``, 1 thread, the same kernel set as ecgret's) through the query path the paper describes:
``edge.signal.preprocess`` -> R peaks + median beats -> paper-mode image -> ViT -> exhaustive float32 cosine over
the archive (folds 1-8, embedded by the same path at start-up).

Retrieval on fold 9 for both sides, computed in this run with the EVALUATION.md protocol
(``convert.evaluate.evaluate``: fold-9 cases as queries against folds 1-8, exact cosine, k = 10): the paper-mode
teacher through its float32 TFLite, and the shipped bundle's int8 student through the device interpreter
(``convert.evaluate.bundle_variants``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN = ROOT / "runs" / "teacher" / "paper"
STAGES = ("preprocess", "image", "encode", "search")


def run_dirs(root: Path = ROOT) -> list[Path]:
    """Trained paper-mode teachers under ``root/runs`` (a ``config.toml`` of imaging mode ``paper`` beside an
    ``image_encoder.keras``)."""
    import tomllib

    found = []
    for cfg in sorted((root / "runs").glob("**/config.toml")):
        try:
            mode = tomllib.loads(cfg.read_text()).get("imaging", {}).get("mode")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if mode == "paper" and (cfg.parent / "image_encoder.keras").is_file():
            found.append(cfg.parent)
    return found


def export_tflite(run_dir: Path, out: Path) -> None:
    """(Run in a subprocess: imports TensorFlow.) The teacher's image encoder as float32 TFLite at ``out`` and
    ``out``.json (parameters, imaging section, the sha256 of the Keras file it came from)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from convert.teacher_model import load_teacher_model
    from edge.bundle import file_sha256

    model = load_teacher_model(run_dir)
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    import tomllib

    cfg = tomllib.loads((run_dir / "config.toml").read_text())
    info = {
        "run": str(run_dir),
        "keras_sha256": file_sha256(run_dir / "image_encoder.keras"),
        "params": int(model.count_params()),
        "imaging": cfg.get("imaging", {}),
        "model": cfg.get("model", {}),
        "tensorflow": tf.__version__,
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")


def ensure_tflite(run_dir: Path, cache: Path, env: dict, say) -> tuple[Path, dict]:
    """The float32 TFLite of the teacher at ``run_dir`` (exported in a subprocess when missing or stale)."""
    from edge.bundle import file_sha256

    out = cache / f"teacher_{run_dir.name}_f32.tflite"
    meta = out.with_suffix(".json")
    sha = file_sha256(run_dir / "image_encoder.keras")
    if not (out.is_file() and meta.is_file() and json.loads(meta.read_text()).get("keras_sha256") == sha):
        cache.mkdir(parents=True, exist_ok=True)
        say(f"exporting the paper-mode teacher {run_dir} to float32 TFLite in a subprocess -> {out} ...")
        r = subprocess.run(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "bench_vs_paper.py"),
                "--export-teacher",
                str(run_dir),
                str(out),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or not out.is_file():
            raise SystemExit(f"exporting the teacher failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return out, json.loads(meta.read_text())


def archive_embeddings(tflite: Path, make) -> np.ndarray:
    """The archive's embeddings by the TFLite at ``tflite``: ``make()`` once, then read from a file beside it named by
    the model's sha256 (as a deployment would store its archive's vectors: the process of its own that measures
    start-up and RSS reads them instead of embedding 1,625 cases through a 224 x 224 ViT again)."""
    from edge.bundle import file_sha256

    path = tflite.with_name(f"{tflite.stem}_archive_{file_sha256(tflite)[:16]}.npy")
    if path.is_file():
        return np.load(path)
    emb = np.asarray(make(), dtype=np.float32)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb


class TeacherSide:
    """The paper's query path with the trained paper-mode teacher (module docstring)."""

    stages = STAGES

    def __init__(self, tflite: Path, info: dict):
        from convert.evaluate import default_split, encoder_embeddings
        from convert.ptbxl import open_archive
        from edge.encoder import Encoder
        from edge.imaging import ImagingConfig

        self.config = ImagingConfig.from_dict(info["imaging"])
        self.enc = Encoder(tflite, threads=1)
        self.archive = open_archive(None)
        q_idx, a_idx = default_split(self.archive)
        self.ids = a_idx
        self.case_emb = archive_embeddings(tflite, lambda: encoder_embeddings(
            self.archive, np.arange(len(self.archive)), self.enc.encode, self.config))
        unit = self.case_emb / np.maximum(np.linalg.norm(self.case_emb, axis=1, keepdims=True), 1e-12)
        self.items = np.ascontiguousarray(unit[a_idx], dtype=np.float32)
        self.q_idx, self.a_idx = q_idx, a_idx
        self.info = {
            "pipeline": "preprocess -> R peaks, median beat per lead -> paper-mode image (edge.imaging) -> ViT "
            "float32 TFLite -> exhaustive float32 cosine",
            "model": f"paper-mode teacher ({info['run']}), float32 TFLite",
            "model_bytes": tflite.stat().st_size,
            "model_params": info.get("params"),
            "image_shape": list(self.config.shape),
            # what the ViT sees: the image resized inside the model (model.image_size), else the image itself
            "vit_input": list(info.get("model", {}).get("image_size") or self.config.shape[:2]),
            "embedding_dim": int(self.enc.dim),
            "archive_items": len(a_idx),
            "interpreter": self.enc.backend,
            "kernels": self.enc.kernels,
            "threads": self.enc.threads,
        }

    def check_against_run(self, run_dir: Path) -> dict:
        """Cosine, per case the training run embedded (``case_ids.json``, ``embeddings.npy``), between its
        embedding and this TFLite's of the same case in the archive."""
        ids = json.loads((run_dir / "case_ids.json").read_text())
        ref = np.load(run_dir / "embeddings.npy")
        pos = {c: i for i, c in enumerate(self.archive.ids)}
        have = [(j, pos[c]) for j, c in enumerate(ids) if c in pos]
        if not have:
            return {"n": 0, "min": None, "median": None}
        a = self.case_emb[[i for _, i in have]]
        b = ref[[j for j, _ in have]]
        cos = np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {"n": int(cos.size), "min": round(float(cos.min()), 6), "median": round(float(np.median(cos)), 6)}

    def query(self, rec, i: int) -> tuple[dict, np.ndarray]:
        from edge.imaging import ecg_image
        from edge.signal import preprocess

        t0 = time.perf_counter()
        pre = preprocess(rec, target_fs=100, duration_s=10.0, notch_hz=50.0)
        t1 = time.perf_counter()
        img = ecg_image(pre.signal, pre.present, self.config, pre.n_valid)
        t2 = time.perf_counter()
        v = self.enc.encode(img)
        t3 = time.perf_counter()
        s = self.items @ (v / max(float(np.linalg.norm(v)), 1e-12))
        top = np.argpartition(-s, 10)[:10]
        top = top[np.argsort(-s[top])]
        t4 = time.perf_counter()
        t = {"preprocess": t1 - t0, "image": t2 - t1, "encode": t3 - t2, "search": t4 - t3}
        t["total"] = t4 - t0
        return t, v


def fold9(side: TeacherSide, bundle_path=None) -> dict:
    """Both sides' EVALUATION.md metrics on fold 9 (queries) against folds 1-8, computed now."""
    from convert.evaluate import bundle_variants, evaluate

    keys = ("P@1", "P@10", "mAP@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")
    variants, _ = bundle_variants(
        side.archive, bundle_path, side.q_idx, side.a_idx, lead_sets=("12",), threads=1, progress=False
    )
    ((_, bundle_emb),) = variants.items()
    got = evaluate(side.archive, {"paper": side.case_emb, "ecgret": bundle_emb}, side.q_idx, side.a_idx)
    t, b = got["paper"], got["ecgret"]
    return {
        "n_queries": int(len(side.q_idx)),
        "n_archive": int(len(side.a_idx)),
        "paper_teacher": {k: round(float(t[k]), 3) for k in keys},
        "ecgret_int8_cosine": {k: round(float(b[k]), 3) for k in keys},
    }
