"""The convert pipeline end to end on a small real archive (144 PTB-XL cases, folds 1-9, imaged at tile 8) with a
tiny untrained teacher run: teacher reuse and mismatch, student, int8, index, bundle; sharded embedding and
merge; and the bad inputs (mismatching teacher, duplicate case ids, an output folder holding a different
bundle, a failed quality gate): clear errors and nothing half-written."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")

from edge.errors import ArchiveError, BundleError, ConfigError  # noqa: E402

pytestmark = pytest.mark.slow  # every test shares the module fixture that runs the whole convert pipeline

PER_FOLD = 16

TEACHER_TOML = """
name = "tiny"
out_dir = "{runs}"
archive = "{archive}"

[imaging]
mode = "rhythm"
tile = 8

[model]
patch = 8
width = {width}
depth = 1
heads = 2
mlp_ratio = 1.0
dropout = 0.0
proj_dim = 16

[train]
epochs = 1
batch_size = 16
"""

PIPELINE_TOML = """
name = "tiny"
archive = "{archive}"

[teacher]
config = "{teacher}"
run = "{run}"

[student]
out_dir = "{students}"
dim = 16
stem = 8
blocks = [[16, 2]]
dropout = 0.0
epochs = 2
batch_size = 32
aug_copies = 1
eval_every = 1
threads = 1

[quantize]
rep_size = 48
min_rep = 8
max_auroc_drop = 1.0

[index]
trees = [4, 8]

[bundle]
out = "{out}"
name = "tiny-bundle"
"""


def _write_archive(subset, out: Path):
    from convert.archive_write import write_archive
    rows = np.concatenate([subset.select(folds=f)[:PER_FOLD] for f in range(1, 10)])
    cases = [subset.cases[int(i)] for i in rows]
    return write_archive(out, cases, lambda i: (subset.signal(int(rows[i])), cases[i].n_samples or subset.T),
                         importer="test", progress=False)


def _fake_teacher(teacher_toml: Path, archive):
    """An untrained tiny ViT saved the way a teacher run is (what the pipeline reads)."""
    import keras

    from convert.images import image_cases
    from convert.student import embed_keras
    from convert.teacher_config import config_toml, load_config
    from convert.teacher_model import build_image_encoder
    keras.utils.set_random_seed(0)
    cfg = load_config(teacher_toml)
    run = cfg.run_dir
    run.mkdir(parents=True, exist_ok=True)
    enc = build_image_encoder(cfg)
    enc.save(run / "image_encoder.keras")
    (run / "config.toml").write_text(config_toml(cfg))
    emb = embed_keras(enc, image_cases(archive, np.arange(len(archive)), cfg.imaging))
    np.save(run / "embeddings.npy", emb)
    (run / "case_ids.json").write_text(json.dumps(list(archive.ids)))
    (run / "metrics.json").write_text(json.dumps({"best_epoch": 0, "val_best": None, "stopped": "untrained"}))
    return run


@pytest.fixture(scope="module")
def built(ptbxl_subset, tmp_path_factory):
    from convert.training_pipeline import load_pipeline_config, run_pipeline
    root = tmp_path_factory.mktemp("pipe")
    archive = _write_archive(ptbxl_subset, root / "archive")
    teacher_toml = root / "teacher.toml"
    teacher_toml.write_text(TEACHER_TOML.format(runs=root / "runs" / "teacher", archive=root / "archive", width=16))
    run = _fake_teacher(teacher_toml, archive)
    cfg_path = root / "default.toml"
    cfg_path.write_text(PIPELINE_TOML.format(archive=root / "archive", teacher=teacher_toml, run=run,
                                             students=root / "runs" / "student", out=root / "bundles" / "a"))
    logs = []
    summary = run_pipeline(load_pipeline_config(cfg_path), progress=False, log=logs.append)
    return {"root": root, "archive": archive, "cfg": cfg_path, "teacher_toml": teacher_toml, "run": run,
            "summary": summary, "logs": logs, "bundle": root / "bundles" / "a",
            "student": root / "runs" / "student" / "tiny"}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_pipeline_writes_a_loadable_bundle(built):
    from edge.bundle import load_bundle
    from edge.imaging import ecg_image
    b = load_bundle(built["bundle"], threads=1)
    m = b.manifest
    arch = built["archive"]
    assert m["name"] == "tiny-bundle" and m["index"]["n_items"] == len(arch) == 9 * PER_FOLD
    assert m["index"]["recall_at_10"] >= 0.99 and m["index"]["metric"] == "angular"
    assert m["encoder"]["quantization"] == "int8-full" and m["encoder"]["input_shape"] == [1, 32, 32, 3]
    assert m["encoder"]["params"] > 0 and m["encoder"]["macs"] > 0
    assert [c["case_id"] for c in b.cases] == list(arch.ids)
    assert m["archive"]["folds"] == list(range(1, 10))
    # every case measured from its own signal; the re-ranking weight chosen by CV over folds 1-8
    assert m["rerank"]["weight"] in (0.0, 0.1, 0.2, 0.3) and m["rerank"]["rhythm_bonus"] in (0.0, 0.1, 0.2, 0.3, 0.5, 1.0) and "fold9" in m["rerank"]["cv"]
    assert all(c["measured"]["heart_rate_bpm"] for c in b.cases[:20])
    table = m["evaluation"]["table_markdown"]
    for row in ("| teacher (float, Keras) |", "| student float32 |", "| student float16 |",
                "| student int8 (int8 in/out, LiteRT) |", "| random |", "| raw-signal |"):
        assert row in table
    q = m["evaluation"]["quantization"]
    assert 0.9 < q["cosine_float_int8_mean"] <= 1.0 + 1e-6 and 0 <= q["top10_overlap_mean"] <= 1
    tr = m["training"]
    assert tr["teacher"]["model_sha256"] and tr["student"]["params"] == m["encoder"]["params"]
    assert Path(built["student"], "quant_report.md").is_file()
    for kind in ("float32", "float16", "int8"):
        assert Path(built["student"], f"encoder_{kind}.tflite").is_file()
    # an archived record queried through the bundle finds itself first
    for i in (0, 50, 143):
        img = ecg_image(arch.signal(i), None, b.imaging_config, arch.cases[i].n_samples or None)
        ids, scores = b.index.search(b.encoder.encode(img), 10)
        assert ids[0] == i and scores[0] == pytest.approx(1.0, abs=1e-3)


def test_pipeline_reuses_runs_and_rebuilds_the_same_bundle(built):
    from convert.training_pipeline import load_pipeline_config, run_pipeline
    logs = []
    out = built["root"] / "bundles" / "again"
    run_pipeline(load_pipeline_config(built["cfg"]), progress=False, out=str(out), log=logs.append)
    assert any("reusing the teacher run" in s for s in logs)
    assert any("reusing the student" in s for s in logs)
    a = json.loads((built["bundle"] / "manifest.json").read_text())["files"]
    b = json.loads((out / "manifest.json").read_text())["files"]
    for f in ("encoder.tflite", "index.ann", "cases.jsonl"):
        assert a[f]["sha256"] == b[f]["sha256"], f


def test_teacher_run_that_does_not_match_the_config(built, tmp_path):
    from convert.training_pipeline import load_pipeline_config, run_pipeline
    other = tmp_path / "teacher.toml"
    other.write_text(TEACHER_TOML.format(runs=built["run"].parent, archive=built["root"] / "archive", width=32))
    cfg = tmp_path / "default.toml"
    cfg.write_text(built["cfg"].read_text().replace(str(built["teacher_toml"]), str(other))
                   .replace(str(built["bundle"]), str(tmp_path / "never")))
    with pytest.raises(ConfigError, match=r"model\.width = 16, the config says 32"):
        run_pipeline(load_pipeline_config(cfg), progress=False, log=lambda s: None)
    assert not (tmp_path / "never").exists()


def test_bundle_refuses_duplicate_case_ids(built, tmp_path):
    from click.testing import CliRunner

    from convert.cli import main
    dup = tmp_path / "dup"
    shutil.copytree(built["root"] / "archive", dup)
    lines = (dup / "cases.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    second = json.loads(lines[1])
    second["case_id"] = first["case_id"]
    lines[1] = json.dumps(second)
    (dup / "cases.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "bundles" / "dup"
    r = CliRunner().invoke(main, ["bundle", str(built["student"]), "--archive", str(dup), "--out", str(out),
                                  "--no-progress"])
    assert r.exit_code != 0
    assert "duplicate case id" in r.output and "Traceback" not in r.output
    assert not out.exists()
    assert not (tmp_path / "bundles").exists() or _leftovers(tmp_path / "bundles") == []


def test_bundle_refuses_a_folder_holding_a_different_bundle(built):
    from convert.bundle_build import build_bundle
    before = (built["bundle"] / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match="already holds a different bundle"):
        build_bundle(built["student"], built["bundle"], archive=built["archive"], folds=(1, 2, 3, 4, 5, 6, 7, 8),
                     name="other", max_auroc_drop=1.0, progress=False, log=lambda s: None)
    assert (built["bundle"] / "manifest.json").read_bytes() == before
    assert _leftovers(built["bundle"].parent) == []


def test_bundle_refuses_an_int8_model_that_fails_the_gate(built, tmp_path):
    from convert.bundle_build import build_bundle
    from convert.quantize import QuantizationError
    rep = json.loads((built["student"] / "quant_report.json").read_text())
    drop = rep["quantization"]["kNN_macroAUROC_drop"]
    with pytest.raises(QuantizationError, match="below the float student"):
        build_bundle(built["student"], tmp_path / "b", archive=built["archive"], max_auroc_drop=drop - 0.5,
                     progress=False, log=lambda s: None)
    assert not (tmp_path / "b").exists() and _leftovers(tmp_path) == []


def test_sharded_embedding_merges_into_the_same_index(built, tmp_path):
    from convert.shards import embed_archive, merge_index, read_shards
    from edge.imaging import ImagingConfig
    enc = built["student"] / "encoder_int8.tflite"
    im = ImagingConfig(tile=8)
    arch = built["archive"]
    embed_archive(arch, enc, tmp_path / "one", im, (0, 1), progress=False)
    for i in (2, 0):
        embed_archive(arch, enc, tmp_path / "three", im, (i, 3), progress=False)
    with pytest.raises(ArchiveError, match="1/3 missing"):
        read_shards(tmp_path / "three")
    embed_archive(arch, enc, tmp_path / "three", im, (1, 3), progress=False)
    info = merge_index(tmp_path / "three", tmp_path / "idx", arch, trees=(4, 8), progress=False)
    one = np.load(tmp_path / "one" / "shard-00000-of-00001.npy")
    merged = np.load(tmp_path / "idx" / "embeddings.npy")
    np.testing.assert_array_equal(one, merged)
    assert info["n_items"] == len(arch) and info["recall_at_10"] >= 0.99 and info["shards"] == 3
    assert len((tmp_path / "idx" / "cases.jsonl").read_text().splitlines()) == len(arch)
    from annoy import AnnoyIndex
    ann = AnnoyIndex(info["dim"], "angular")
    ann.load(str(tmp_path / "idx" / "index.ann"))
    assert ann.get_n_items() == len(arch) and ann.get_nns_by_vector(merged[7].tolist(), 1)[0] == 7
    # the bundle's own embeddings are the same vectors
    from edge.bundle import load_bundle
    b = load_bundle(built["bundle"], threads=1)
    assert np.allclose(b.index.item(7), merged[7], atol=1e-6)
    with pytest.raises(ArchiveError, match="not empty"):
        merge_index(tmp_path / "three", tmp_path / "idx", arch, progress=False)


def test_shards_from_another_encoder_are_refused(built, tmp_path):
    from convert.shards import embed_archive, read_shards
    from edge.imaging import ImagingConfig
    im = ImagingConfig(tile=8)
    embed_archive(built["archive"], built["student"] / "encoder_int8.tflite", tmp_path, im, (0, 2), progress=False)
    embed_archive(built["archive"], built["student"] / "encoder_float32.tflite", tmp_path, im, (1, 2),
                  progress=False)
    with pytest.raises(ArchiveError, match="disagree on encoder_sha256"):
        read_shards(tmp_path)


@pytest.mark.parametrize("shard", ["3/3", "x/2", "1", "-1/2"])
def test_embed_archive_cli_rejects_bad_shards(built, shard, tmp_path):
    from click.testing import CliRunner

    from convert.cli import main
    r = CliRunner().invoke(main, ["embed-archive", "--encoder", str(built["student"] / "encoder_int8.tflite"),
                                  "--out", str(tmp_path), "--shard", shard, "--tile", "8"])
    assert r.exit_code != 0 and "--shard" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_bundle_with_report_items(built, tmp_path):
    """report_weight > 0: each index item is l2n((1 - w) ecg + w report) of its own case, the manifest says so,
    and records the fold-9 figures of int8 ECG queries against those items."""
    from convert.bundle_build import INDEX_ROW, build_bundle, case_text_vectors
    from convert.teacher_export import case_vectors
    from edge.bundle import load_bundle
    from edge.errors import ArchiveError
    arch = built["archive"]
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    run.mkdir()
    np.save(run / "text_embeddings.npy", rng.normal(size=(len(arch), 16)).astype(np.float32))
    with pytest.raises(ArchiveError, match="the archive has 3"):
        case_text_vectors(run, 3)
    text = case_text_vectors(run, len(arch))
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    m = build_bundle(built["student"], tmp_path / "b", archive=arch, case_text=text, report_weight=0.5,
                     max_auroc_drop=1.0, progress=False, log=lambda s: None)
    assert m["index"]["items"]["report_weight"] == 0.5 and m["index"]["items"]["ecg_weight"] == 0.5
    assert INDEX_ROW in m["evaluation"]["metrics"] and INDEX_ROW in m["evaluation"]["table_markdown"]
    plain = load_bundle(built["bundle"], threads=1)           # the same encoder, ECG-only items
    mixed = load_bundle(tmp_path / "b", threads=1)
    ecg = np.stack([plain.index.item(i) for i in range(len(arch))])
    got = np.stack([mixed.index.item(i) for i in range(len(arch))])
    np.testing.assert_allclose(got, case_vectors(ecg, text, 0.5), atol=1e-5)
    with pytest.raises(Exception, match="report vectors"):
        build_bundle(built["student"], tmp_path / "c", archive=arch, report_weight=0.5, max_auroc_drop=1.0,
                     progress=False, log=lambda s: None)


def _cv_file(path: Path, recipe: dict) -> Path:
    """A `distill --cv`-shaped file with the given recipe (the figures are placeholders: what is tested is that a
    bundle build checks the recipe and quotes the file, not the figures)."""
    metrics = ("P@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")
    v = {"mean": {m: 0.5 + 0.01 * i for i, m in enumerate(metrics)}, "sd": {m: 0.01 for m in metrics}}
    path.write_text(json.dumps({"variants": {"student int8": v}, "recipe": recipe,
                                "external": {"set": "/x/ludb-dev", "mean_sd": {"super_macroAUROC": [0.61, 0.02]}}}))
    return path


def test_cv_results_of_another_recipe_are_refused_before_any_training(built, tmp_path):
    from convert.student_cv import cv_recipe
    from convert.teacher_config import load_config
    from convert.training_pipeline import load_pipeline_config, run_pipeline
    cfg = load_pipeline_config(built["cfg"])
    recipe = cv_recipe(cfg, load_config(built["teacher_toml"]))
    recipe["student"]["dim"] += 8
    cv = _cv_file(tmp_path / "cv.json", recipe)
    bad = load_pipeline_config(built["cfg"], bundle__cv_results=str(cv), student__out_dir=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match=r"cv\.json: the CV measured another recipe; it differs at student\.dim"):
        run_pipeline(bad, progress=False, log=lambda s: None, out=str(tmp_path / "never"))
    assert not (tmp_path / "never").exists() and not (tmp_path / "s").exists()
    with pytest.raises(ConfigError, match="cv_results: expected the path"):
        load_pipeline_config(built["cfg"], bundle__cv_results=3)


def test_cv_results_of_the_recipe_go_into_the_model_card(built, tmp_path):
    from convert.student_cv import cv_recipe
    from convert.teacher_config import load_config
    from convert.training_pipeline import load_pipeline_config, run_pipeline
    from edge.bundle import load_bundle
    cfg = load_pipeline_config(built["cfg"])
    cv = _cv_file(tmp_path / "cv_this.json", cv_recipe(cfg, load_config(built["teacher_toml"])))
    run_pipeline(load_pipeline_config(built["cfg"], bundle__cv_results=str(cv)), progress=False,
                 log=lambda s: None, out=str(tmp_path / "b"))
    b = load_bundle(tmp_path / "b", allow_unsigned=True)
    assert b.manifest["evaluation"]["cv"]["rows"]["student int8"]["kNN_macroAUROC"] == [0.52, 0.01]
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "## Cross-validation of this recipe" in card and "`cv_this.json`" in card
    assert "| student int8 | 0.500 ± 0.010 | 0.510 ± 0.010 | 0.520 ± 0.010 | 0.530 ± 0.010 |" in card
    assert "ludb-dev" in card and "super_macroAUROC 0.610 ± 0.020" in card
