"""Quantization: int8/float16/float32 exports of a small CNN on real images, the representative-set checks,
the report's figures and the quality gate."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")

from edge.errors import BundleError, ConfigError  # noqa: E402
from edge.imaging import ImagingConfig  # noqa: E402

from convert.quantize import (QuantConfig, QuantizationError, check_gate, embed_tflite, export_tflite,  # noqa: E402
                              fold_head, quant_config, quant_report, representative_images)
from convert.student import StudentConfig, build_student  # noqa: E402

IM = ImagingConfig(tile=8)


@pytest.fixture(scope="module")
def images(ptbxl_subset):
    from convert.images import image_cases
    rows = ptbxl_subset.select(folds=9)[:40]
    return image_cases(ptbxl_subset, rows, IM).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    import keras
    keras.utils.set_random_seed(0)
    return build_student(IM.shape, StudentConfig(dim=16, stem=8, blocks=((16, 2), (24, 1)), dropout=0.0))


def test_representative_set_too_small(ptbxl_subset):
    with pytest.raises(QuantizationError, match="too small to calibrate"):
        representative_images(ptbxl_subset, IM, QuantConfig(rep_folds=(1,), rep_size=8, min_rep=32))


def test_representative_set_refuses_the_test_fold(ptbxl_subset):
    with pytest.raises(ConfigError, match="test fold"):
        representative_images(ptbxl_subset, IM, QuantConfig(rep_folds=(8, 9)))


def test_representative_set_is_seeded_and_mixes_lead_sets(ptbxl_subset):
    cfg = QuantConfig(rep_folds=(1, 2), rep_size=40, rep_reduced=0.5, min_rep=8)
    a = representative_images(ptbxl_subset, IM, cfg)
    b = representative_images(ptbxl_subset, IM, cfg)
    assert a.shape == (40,) + IM.shape and np.array_equal(a, b)
    t = IM.tile  # every reduced lead set lacks V4-V6: the beat tiles of column 3 (rows 0-2) stay empty
    empty = [np.all(img[:3 * t, 3 * t:] == 0) for img in a]
    assert 5 <= sum(empty) <= 35


def test_quant_config_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        quant_config({"bits": 4})
    with pytest.raises(ConfigError, match="expected a number"):
        quant_config({"max_auroc_drop": "small"})


@pytest.mark.slow
def test_int8_export_is_full_integer_and_close_to_float(model, images, ptbxl_subset):
    from edge.encoder import make_interpreter
    reps = representative_images(ptbxl_subset, IM, QuantConfig(rep_size=48, min_rep=8))
    b8 = export_tflite(model, "int8", reps)
    b32 = export_tflite(model, "float32")
    b16 = export_tflite(model, "float16")
    it = make_interpreter(model_content=b8, threads=1)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    assert np.dtype(i["dtype"]) == np.int8 and np.dtype(o["dtype"]) == np.int8
    assert list(i["shape"]) == [1, *IM.shape] and list(o["shape"]) == [1, 16]
    assert i["quantization"][0] > 0 and o["quantization"][0] > 0
    assert len(b16) < len(b32)
    e32 = embed_tflite(b32, images)
    e8 = embed_tflite(b8, images)
    ref = np.array(model(images, training=False), dtype=np.float32)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(e32, ref, atol=1e-4)
    cos = np.sum(e32 * e8, axis=1)
    assert cos.mean() > 0.97 and cos.min() > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("head", ["gdconv", "flatten", "gap"])
def test_fold_head_is_the_same_function_as_one_conv(head, images):
    """Every head folds into one full CONV_2D (so the int8 graph holds no FULLY_CONNECTED and no large
    depthwise, whose built-in int8 kernels differ between LiteRT and tflite-runtime 2.14)."""
    import keras
    keras.utils.set_random_seed(1)
    m = build_student(IM.shape, StudentConfig(dim=16, stem=8, blocks=((16, 2), (24, 2)), head=head, dropout=0.0))
    if head == "gdconv":   # non-trivial BatchNorm statistics, so the fold has something to fold
        bn = m.get_layer("gdconv_bn")
        g, b, mu, var = bn.get_weights()
        bn.set_weights([g * 1.5, b + 0.2, mu - 0.1, var * 3.0])
    f = fold_head(m)
    assert [ly.name for ly in f.layers if isinstance(ly, keras.layers.Dense)] == []
    assert f.get_layer("embedding_conv").kernel_size == tuple(int(v) for v in m.get_layer(
        {"gdconv": "gdconv", "flatten": "flatten", "gap": "gap"}[head]).input.shape[1:3])
    ref = np.asarray(m(images, training=False))
    got = np.asarray(f(images, training=False))
    assert got.shape == ref.shape and np.allclose(got, ref, atol=1e-5 * np.abs(ref).max())
    b32 = export_tflite(m, "float32")
    from edge.encoder import make_interpreter
    ops = {o["op_name"] for o in make_interpreter(model_content=b32, threads=1)._get_ops_details()}
    assert "FULLY_CONNECTED" not in ops and "CONV_2D" in ops


def test_export_refuses_int8_without_representative_set(model):
    with pytest.raises(QuantizationError):
        export_tflite(model, "int8", None)
    with pytest.raises(ConfigError):
        export_tflite(model, "int4")


def test_report_figures_and_gate(ptbxl_subset):
    from convert.evaluate import default_split
    rng = np.random.default_rng(0)
    f = rng.standard_normal((len(ptbxl_subset), 16)).astype(np.float32)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    q, a = default_split(ptbxl_subset)
    same = quant_report(ptbxl_subset, {"float": f, "int8": f.copy()}, "float", "int8", q, a)
    qd = same["quantization"]
    assert qd["cosine_float_int8_mean"] == pytest.approx(1.0, abs=1e-6)
    assert qd["top10_overlap_mean"] == 1.0 and qd["kNN_macroAUROC_drop"] == 0.0
    assert "| float |" in same["table_markdown"] and "| int8 |" in same["table_markdown"]
    assert check_gate(same, 0.01) is None
    other = rng.standard_normal(f.shape).astype(np.float32)
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    diff = quant_report(ptbxl_subset, {"float": f, "int8": other}, "float", "int8", q, a)
    assert diff["quantization"]["top10_overlap_mean"] < 0.2
    # a made-up drop beyond the limit: refused, with the figures in the message; forced: a warning
    diff["quantization"].update(kNN_macroAUROC_float=0.85, kNN_macroAUROC_int8=0.82)
    with pytest.raises(QuantizationError, match="0.8200 is 0.0300 below") as ei:
        check_gate(diff, 0.01)
    assert isinstance(ei.value, BundleError)
    assert check_gate(diff, 0.01, force=True).startswith("forced:")


def test_kernels_choice(monkeypatch):
    from edge.encoder import kernels_choice
    monkeypatch.delenv("ECGRET_KERNELS", raising=False)
    assert kernels_choice() == "builtin"
    monkeypatch.setenv("ECGRET_KERNELS", "XNNPACK")
    assert kernels_choice() == "xnnpack"
    assert kernels_choice("builtin") == "builtin"
    monkeypatch.setenv("ECGRET_KERNELS", "gpu")
    with pytest.raises(BundleError, match="ECGRET_KERNELS"):
        kernels_choice()
