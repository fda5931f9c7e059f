"""Build a small but real test bundle: an int8 TFLite CNN on the real imaging shape, ~200 real PTB-XL cases.

Run as ``python -m tests.bundle_factory OUT_DIR [N_CASES]`` (TensorFlow is needed, so tests run this in a
subprocess and the test process never imports TensorFlow). The CNN is untrained (seeded He init):
identical images still map to identical embeddings, so a case queried against its own archive finds
itself first, which is all the runtime tests need. Quantization: full-integer int8 with a representative
dataset of real images, a fixed batch size of 1.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import numpy as np

N_CASES = 200
DIM = 64
SEED = 0
# cases the tests query by name (raw CinC versions exist for 6005 etc.)
ALWAYS = ("ptbxl:6005", "ptbxl:6001", "ptbxl:6002", "ptbxl:6003")


def factory_key(n_cases: int = N_CASES) -> str:
    """Cache key: this file, the imaging code and the bundle writer (a change rebuilds the bundle)."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(str(n_cases).encode())
    for rel in ("tests/bundle_factory.py", "edge/imaging.py", "edge/signal.py", "convert/bundle.py",
                "convert/index_build.py", "convert/model_card.py", "edge/bundle.py", "edge/encoder.py"):
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:12]


def select_cases(archive, n_cases: int) -> list[int]:
    ids = list(archive.ids)
    pick = [ids.index(c) for c in ALWAYS if c in ids]
    rng = np.random.default_rng(SEED)
    rest = [i for i in rng.permutation(len(ids)).tolist() if i not in pick]
    return sorted(pick + rest[: max(0, n_cases - len(pick))])


def archive_images(archive, rows, config) -> np.ndarray:
    from edge.imaging import ecg_image
    out = []
    for i in rows:
        x = np.asarray(archive.signal(i), dtype=np.float32)
        present = np.any(x != 0, axis=0)
        out.append(ecg_image(x, present, config, x.shape[0]))
    return np.stack(out)


def build_tflite(images: np.ndarray, dim: int = DIM) -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    import keras
    keras.utils.set_random_seed(SEED)
    h, w, c = images.shape[1:]
    inp = keras.Input(shape=(h, w, c), batch_size=1)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(dim)(x)
    model = keras.Model(inp, out)

    def rep():
        for img in images[:64]:
            yield [img[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def build_test_bundle(out_dir, n_cases: int = N_CASES, force: bool = True) -> Path:
    import tempfile

    from convert.bundle import write_bundle
    from convert.index_build import tune_index
    from convert.ptbxl import open_subset
    from edge.encoder import Encoder
    from edge.imaging import ImagingConfig
    from edge.paths import shared_data_dir
    from edge.signal import DURATION_S, TARGET_FS

    archive = open_subset(shared_data_dir() / "ptbxl-subset")
    rows = select_cases(archive, n_cases)
    config = ImagingConfig()
    images = archive_images(archive, rows, config)
    tfl = build_tflite(images)
    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "encoder.tflite"
        p.write_bytes(tfl)
        enc = Encoder(p, threads=1)
        emb = np.stack([enc.encode(img) for img in images])
    n_trees, search_k, recall = tune_index(emb, k=10, target_recall=0.99)
    cases = [archive.cases[i] for i in rows]
    return write_bundle(
        out_dir, tflite_bytes=tfl, embeddings=emb, cases=cases,
        preprocessing={"target_fs": TARGET_FS, "duration_s": DURATION_S, "bandpass_hz": [0.5, 40.0], "order": 4,
                       "notch_hz": 50.0, "zscore": "per-lead"},
        imaging=config.to_dict(), n_trees=n_trees, search_k=search_k, recall_at_10=recall,
        training={"kind": "test bundle: untrained seeded CNN", "seed": SEED, "data": "ptbxl-subset",
                  "factory_key": factory_key(n_cases)},
        evaluation=None, name="test-bundle", force=force)


if __name__ == "__main__":
    out = build_test_bundle(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else N_CASES)
    print(out)
