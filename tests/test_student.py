"""The student CNN: configuration checks, parameter/MAC counting (golden values), and a tiny real distillation
on real PTB-XL cases (imaged at tile 8, a tiny teacher) that must move the student towards the teacher."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")

from edge.errors import ConfigError  # noqa: E402
from edge.imaging import ImagingConfig  # noqa: E402

from convert.student import (StudentConfig, build_student, count_params_macs, distill, load_student,  # noqa: E402
                             student_config)

TINY = StudentConfig(dim=8, stem=8, stem_kernel=4, stem_stride=4, blocks=((16, 2),), dropout=0.0)


def test_params_and_macs_golden():
    m = build_student((32, 32, 3), TINY)
    params, macs = count_params_macs(m)
    # stem 4x4x3x8 at 8x8 = 24576; dw 3x3x8 at 4x4 = 1152; pw 8->16 at 4x4 = 2048; dense 256->8 = 2048
    assert macs == 24576 + 1152 + 2048 + 2048
    # stem 384 + BN 32; dw 72 + BN 32; pw 128 + BN 64; dense 256*8 + 8
    assert params == 384 + 32 + 72 + 32 + 128 + 64 + 2056
    assert m.output_shape == (None, 8)


def test_default_student_fits_the_device_budget():
    m = build_student(ImagingConfig().shape, StudentConfig())
    params, macs = count_params_macs(m)
    assert params < 1_000_000          # int8 weights stay well under the 1 MB encoder target
    assert macs < 40_000_000
    assert m.output_shape == (None, 128)


@pytest.mark.parametrize("table, words", [
    ({"depth": 3}, "unknown key"),
    ({"blocks": [[16, 3]]}, "stride 1 or 2"),
    ({"blocks": "wide"}, "channels, stride"),
    ({"head": "attention"}, "head"),
    ({"epochs": 0}, "epochs >= 1"),
    ({"lr": "fast"}, "expected a number"),
    ({"train_folds": [1, 2, 8], "val_folds": [8]}, "disjoint"),
    ({"target_images": "noisy"}, "target_images"),
])
def test_config_errors(table, words):
    with pytest.raises(ConfigError, match=words):
        student_config(table)


def test_config_roundtrip():
    cfg = student_config(StudentConfig().to_dict())
    assert cfg == StudentConfig()


def _tiny_teacher(shape, dim=8):
    import keras
    keras.utils.set_random_seed(1)
    inp = keras.Input(shape)
    x = keras.layers.Conv2D(8, 4, strides=4)(inp)
    x = keras.layers.Flatten()(x)
    z = keras.layers.Dense(dim)(x)
    return keras.Model(inp, keras.layers.UnitNormalization()(z))


@pytest.fixture(scope="module")
def small_archive(ptbxl_subset):
    from convert.archive import subset
    rows = np.concatenate([ptbxl_subset.select(folds=f)[:24] for f in range(1, 10)])
    return subset(ptbxl_subset, np.sort(rows))


@pytest.mark.slow
def test_distill_moves_the_student_to_the_teacher(small_archive, tmp_path):
    from convert.images import image_cases
    from convert.student import embed_keras
    im = ImagingConfig(tile=8)
    teacher = _tiny_teacher(im.shape)
    # raw (uncentred) targets so that the student's space is the teacher's and cosines compare directly;
    # mixup exercises the on-the-fly teacher targets
    cfg = StudentConfig(out_dir=str(tmp_path), dim=8, stem=8, blocks=((16, 2),), dropout=0.0, epochs=6,
                        batch_size=32, lr=5e-3, warmup_epochs=1, aug_copies=1, eval_every=3, threads=1,
                        center_targets=False, mixup=0.25)
    clean = image_cases(small_archive, np.arange(len(small_archive)), im).astype(np.float32)
    before = build_student(im.shape, cfg)
    info = distill(cfg, small_archive, teacher, imaging=im, name="tiny", clean=clean, progress=False,
                   log=lambda s: None)
    model, saved = load_student(tmp_path / "tiny")
    assert saved["params"] == info["params"] and saved["macs"] == info["macs"]
    assert saved["n_train_images"] == 2 * len(small_archive.select(folds=cfg.train_folds))
    t = embed_keras(teacher, clean)
    cos_after = np.mean(np.sum(embed_keras(model, clean) * t, axis=1))
    cos_before = np.mean(np.sum(embed_keras(before, clean) * t, axis=1))
    assert cos_after > cos_before + 0.1
    emb = np.load(tmp_path / "tiny" / "embeddings.npy")
    assert emb.shape == (len(small_archive), 8)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert info["history"][-1]["epoch"] == 6 and "val" in info["history"][2]


@pytest.mark.slow
def test_clean_targets_put_reduced_lead_copies_where_the_full_recording_is(small_archive, tmp_path):
    """target_images = "clean": a lead-I image learns the teacher's embedding of the case's 12-lead image, so it
    lands nearer that than a student taught on the lead-I image's own teacher embedding."""
    from convert.evaluate import case_image
    from convert.images import image_cases
    from convert.student import embed_keras
    im = ImagingConfig(tile=8)
    clean = image_cases(small_archive, np.arange(len(small_archive)), im).astype(np.float32)
    teacher = _tiny_teacher(im.shape)
    t12 = embed_keras(teacher, clean)
    lead1 = np.stack([case_image(small_archive, i, im, ("I",)) for i in range(len(small_archive))])
    cos = {}
    for mode in ("same", "clean"):
        cfg = StudentConfig(out_dir=str(tmp_path), dim=8, stem=8, blocks=((16, 2),), dropout=0.0, epochs=8,
                            batch_size=32, lr=5e-3, warmup_epochs=1, aug_copies=3, eval_every=8, threads=1,
                            center_targets=False, target_images=mode)
        distill(cfg, small_archive, teacher, imaging=im, name=mode, clean=clean, progress=False, log=lambda s: None)
        model, info = load_student(tmp_path / mode)
        assert info["config"]["target_images"] == mode
        cos[mode] = float(np.mean(np.sum(embed_keras(model, lead1) * t12, axis=1)))
    assert cos["clean"] > cos["same"] + 0.15, cos  # measured 0.955 vs 0.670


@pytest.mark.slow
def test_distill_centres_targets_and_caches_images(small_archive, tmp_path):
    from convert.images import image_cases
    im = ImagingConfig(tile=8)
    cfg = StudentConfig(out_dir=str(tmp_path), dim=8, stem=8, blocks=((16, 2),), head="gdconv", epochs=1,
                        batch_size=32, aug_copies=1, threads=1)
    clean = image_cases(small_archive, np.arange(len(small_archive)), im).astype(np.float32)
    info = distill(cfg, small_archive, _tiny_teacher(im.shape), imaging=im, name="c", clean=clean,
                   progress=False, log=lambda s: None, cache_dir=tmp_path / "cache")
    assert info["target_mean_norm"] > 0.1
    cached = list((tmp_path / "cache").glob("*.npz"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    info2 = distill(cfg, small_archive, _tiny_teacher(im.shape), imaging=im, name="c2", clean=clean,
                    progress=False, log=lambda s: None, cache_dir=tmp_path / "cache")
    assert cached[0].stat().st_mtime_ns == before and info2["n_train_images"] == info["n_train_images"]


def test_distill_refuses_too_few_training_cases(small_archive, tmp_path):
    im = ImagingConfig(tile=8)
    cfg = StudentConfig(out_dir=str(tmp_path), batch_size=1000, threads=1)
    with pytest.raises(ConfigError, match="fewer than one batch"):
        distill(cfg, small_archive, _tiny_teacher(im.shape), imaging=im, name="x", progress=False)


def test_teacher_ensemble_scores_are_the_mean_of_the_teachers_cosines(small_archive):
    """Two teachers side by side (convert.teacher_model.TeacherEnsemble): a unit vector whose cosines are the mean
    of the two teachers' own cosines; ensemble_vectors gives the same form of stored embeddings."""
    from convert.images import image_cases
    from convert.student import embed_keras, teacher_targets, unit_parts
    from convert.teacher_model import TeacherEnsemble, ensemble_vectors
    import keras
    im = ImagingConfig(tile=8)
    clean = image_cases(small_archive, np.arange(20), im).astype(np.float32)
    a = _tiny_teacher(im.shape)
    keras.utils.set_random_seed(2)
    inp = keras.Input(im.shape)
    b = keras.Model(inp, keras.layers.UnitNormalization()(keras.layers.Dense(8)(keras.layers.Flatten()(inp))))
    ens = TeacherEnsemble([a, b])
    y = teacher_targets(ens, clean)
    ya, yb = embed_keras(a, clean), embed_keras(b, clean)
    assert y.shape == (20, 16) and ens.parts == 2
    np.testing.assert_allclose(y @ y.T, 0.5 * (ya @ ya.T + yb @ yb.T), atol=1e-5)
    np.testing.assert_allclose(ensemble_vectors([ya, yb]), y, atol=1e-5)
    # centring each part on its own keeps each teacher's half of the cosine
    c = unit_parts(y - y.mean(axis=0), 2)
    ca, cb = ya - ya.mean(axis=0), yb - yb.mean(axis=0)
    ca, cb = ca / np.linalg.norm(ca, axis=1, keepdims=True), cb / np.linalg.norm(cb, axis=1, keepdims=True)
    np.testing.assert_allclose(c @ c.T, 0.5 * (ca @ ca.T + cb @ cb.T), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ConfigError, match="at least one teacher"):
        TeacherEnsemble([])


def test_distill_refuses_a_student_narrower_than_its_targets(small_archive, tmp_path):
    from convert.teacher_model import TeacherEnsemble
    im = ImagingConfig(tile=8)
    cfg = StudentConfig(out_dir=str(tmp_path), dim=8, stem=8, blocks=((16, 2),), epochs=1, batch_size=32,
                        aug_copies=0, threads=1)
    ens = TeacherEnsemble([_tiny_teacher(im.shape), _tiny_teacher(im.shape)])
    with pytest.raises(ConfigError, match=r"dim 8 differs from the teacher targets' width 16 \(2 teachers"):
        distill(cfg, small_archive, ens, imaging=im, name="x", progress=False, log=lambda s: None)
