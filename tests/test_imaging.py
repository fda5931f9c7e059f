"""ECG imaging: GASF, RP and MTF against pyts on real beats; the paper grid; the rhythm row."""
from __future__ import annotations

import numpy as np
import pytest

from edge.imaging import GRID, ImagingConfig, ecg_image, fields, gasf, maxabs, mtf, recurrence, resize_field, tile_fields
from edge.peaks import median_beat, r_peaks
from edge.leads import LEADS12


@pytest.fixture(scope="module")
def beats(ptbxl_subset):
    """Median beats (12 leads) of 8 real records: float32 (96, 100) in [-1, 1]."""
    out = []
    for i in range(0, 1600, 200):
        x = ptbxl_subset.signal(i)
        out.append(maxabs(median_beat(x, r_peaks(x[:, 1])).T))
    return np.concatenate(out)


@pytest.mark.slow
def test_fields_agree_with_pyts_on_real_beats(beats):
    pyts_image = pytest.importorskip("pyts.image")
    np.testing.assert_allclose(
        gasf(beats), pyts_image.GramianAngularField(method="summation", sample_range=None).fit_transform(beats),
        atol=1e-5)
    np.testing.assert_allclose(recurrence(beats), pyts_image.RecurrencePlot().fit_transform(beats), atol=1e-6)
    np.testing.assert_allclose(mtf(beats, 4), pyts_image.MarkovTransitionField(n_bins=4).fit_transform(beats),
                               atol=1e-6)


def test_single_and_batched_fields_agree(beats):
    np.testing.assert_allclose(fields(beats[3]), fields(beats[:5])[3], atol=1e-6)


def test_fast_tiles_equal_resized_full_fields(beats):
    """Equal up to float rounding, and up to the 2**-q grid of the recurrence channel's input (the price of
    summation-order independence, see tile_fields)."""
    from edge.imaging import _area_units
    for size in (24, 32, 50):
        got, ref = tile_fields(beats[:12], size), resize_field(fields(beats[:12]), size)
        np.testing.assert_allclose(got[..., [0, 2]], ref[..., [0, 2]], atol=1e-5)
        np.testing.assert_allclose(got[..., 1], ref[..., 1], atol=2.0 ** -_area_units(beats.shape[1], size)[2] + 1e-6)


def test_r_peaks_on_a_real_record_are_regular(ptbxl_subset):
    x = ptbxl_subset.signal(ptbxl_subset.index_of("ptbxl:6005"))
    p = r_peaks(x[:, 1])
    rr = np.diff(p)
    assert 6 <= len(p) <= 20 and rr.std() / rr.mean() < 0.15


def test_paper_grid_layout(ptbxl_subset):
    cfg = ImagingConfig(mode="paper", tile=32)
    x = ptbxl_subset.signal(0)
    img = ecg_image(x, config=cfg)
    assert img.shape == cfg.shape == (96, 128, 3) and img.dtype == np.float32
    assert img.min() >= -1 and img.max() <= 1
    # columns I/II/III, aVR/aVL/aVF, V1-V3, V4-V6
    assert [[LEADS12[k] for k in row] for row in GRID] == [["I", "aVR", "V1", "V4"], ["II", "aVL", "V2", "V5"],
                                                          ["III", "aVF", "V3", "V6"]]
    present = np.ones(12, bool)
    present[LEADS12.index("V2")] = False
    img2 = ecg_image(np.where(present, x, 0), present, cfg)
    assert np.all(img2[32:64, 64:96] == 0) and np.any(img2[0:32, 64:96] != 0)
    np.testing.assert_array_equal(img2[:, :64], img[:, :64])


@pytest.mark.parametrize("rr_scale", ["angle", "linear"])
def test_golden_pixels(ptbxl_subset, rr_scale):
    """Guard against silent drift of the encoding (values computed once and pinned); ``linear`` is the RR map
    of bundles made before ``rr_scale`` existed and must keep imaging exactly as they were trained."""
    img = ecg_image(ptbxl_subset.signal(0), config=ImagingConfig(mode="rhythm", tile=32, rr_scale=rr_scale))
    got = [float(img[5, 7, 0]), float(img[40, 100, 1]), float(img[70, 20, 2]), float(img[100, 40, 1]),
           float(img[100, 40, 0]), float(img.mean())]
    np.testing.assert_allclose(got, GOLDEN[rr_scale], atol=1e-4)


GOLDEN = {"linear": [-0.996645, 0.980715, -0.993333, 0.98877, -0.999938, -0.154975],
          "angle": [-0.996645, 0.980715, -0.993333, 0.993896, 0.008726, -0.140477]}


@pytest.mark.parametrize("tile", [32, 8, 7])
def test_tile_fields_do_not_depend_on_the_summation_order(ptbxl_subset, tile):
    """The recurrence channel is exact (whole numbers in float32): the same pixels as a float64 computation of
    the same sums, so no BLAS or numpy build can round them differently; the GASF and MTF channels equal
    float64 computed and rounded once. Against the unrounded plot the error stays under 2**-12."""
    from edge.imaging import _area_matrix, _area_units, fields, resize_field, tile_fields
    rng = np.random.default_rng(0)
    x = np.clip(np.concatenate([np.asarray(ptbxl_subset.signal(3)[:100].T, np.float32) / 4,
                                rng.uniform(-1, 1, (4, 100)).astype(np.float32)]), -1, 1)
    got = tile_fields(x, tile)
    w, scale, q = _area_units(100, tile)
    xg = np.rint(x.astype(np.float64) * 2.0 ** q)
    rp = np.abs(xg[:, :, None] - xg[:, None, :])
    sums = w.astype(np.float64) @ rp @ w.T.astype(np.float64)          # the same whole numbers, in float64
    assert np.all(sums == np.rint(sums)) and sums.max() < 2 ** 24
    want_rp = np.float32(1.0) - sums.astype(np.float32) * np.float32(scale * scale * 2.0 ** -q)
    np.testing.assert_array_equal(got[..., 1], want_rp)
    ref = resize_field(fields(x.astype(np.float64)), tile)          # the plain definition, float64
    assert np.abs(got - ref).max() < 2.0 ** -q + 1e-6
    assert np.abs(got[..., [0, 2]] - ref[..., [0, 2]]).max() < 1e-6


def test_rr_tile_separates_heart_rates(ptbxl_subset):
    """With the "angle" RR map, the steady-rhythm GASF of the RR tile moves with the rate across the whole
    sinus range (bradycardia vs normal vs tachycardia), where the "linear" map was flat."""
    def rr_tile_mean(code, rr_scale):
        idx = [i for i, c in enumerate(ptbxl_subset.cases) if c.rhythm == (code,)][:8]
        cfg = ImagingConfig(mode="rhythm", tile=32, rr_scale=rr_scale)
        return float(np.median([ecg_image(ptbxl_subset.signal(i), config=cfg)[96:, 32:64, 0].mean() for i in idx]))
    ang = [rr_tile_mean(c, "angle") for c in ("STACH", "SR", "SBRAD")]
    lin = [rr_tile_mean(c, "linear") for c in ("STACH", "SR", "SBRAD")]
    assert ang[0] > ang[1] > ang[2], ang
    assert ang[1] - ang[2] > 2 * (lin[1] - lin[2]), (ang, lin)   # the flat spot "angle" removes


def test_imaging_config_from_old_manifest_is_linear():
    assert ImagingConfig.from_dict({"mode": "rhythm", "tile": 32}).rr_scale == "linear"
    assert ImagingConfig.from_dict(ImagingConfig().to_dict()) == ImagingConfig()


def test_rhythm_row_separates_afib_from_sinus(ptbxl_subset):
    """The RR tiles of an AFIB record differ from a regular sinus record's far more than between two sinus ones."""
    cfg = ImagingConfig(mode="rhythm", tile=32)
    afib = [i for i, c in enumerate(ptbxl_subset.cases) if c.rhythm == ("AFIB",)][:10]
    sr = [i for i, c in enumerate(ptbxl_subset.cases) if c.rhythm == ("SR",)][:10]
    def irregularity(i):
        img = ecg_image(ptbxl_subset.signal(i), config=cfg)
        return float(np.std(img[96:, 64:96, 1]))  # recurrence channel of the RR-difference tile
    a = np.median([irregularity(i) for i in afib])
    s = np.median([irregularity(i) for i in sr])
    assert a > 2 * s, (a, s)


def test_unknown_mode_is_refused(ptbxl_subset):
    with pytest.raises(ValueError, match="unknown imaging mode"):
        ecg_image(ptbxl_subset.signal(0), config=ImagingConfig(mode="beat"))


def test_r_peaks_early_stop_equals_full_suppression(ptbxl_subset):
    """r_peaks stops suppressing at the first energy maximum under the threshold; the result must equal the
    full local_maxima pass followed by the threshold, on real leads and on noise."""
    from edge.peaks import _energy_peaks, local_maxima, percentiles

    def full(e, distance):
        p = local_maxima(e, distance)
        if p.size == 0:
            return p, 0.0
        ref = float(np.median(np.sort(e[p])[::-1][:8]))
        return p[e[p] >= 0.25 * ref], ref

    rng = np.random.default_rng(3)
    series = [np.asarray(ptbxl_subset.signal(i)[:, k], np.float64) for i in range(0, 1600, 40) for k in (0, 1, 7)]
    series += [rng.normal(size=1000) for _ in range(20)] + [np.sin(np.arange(1000) / 7.0)]
    for x in series:
        e = np.convolve(np.diff(x, prepend=x[0]) ** 2, np.ones(12) / 12, mode="same")
        a, ra = _energy_peaks(e, 25)
        b, rb = full(e, 25)
        np.testing.assert_array_equal(a, b)
        assert ra == pytest.approx(rb)
        q = rng.uniform(0, 100, 2)
        np.testing.assert_allclose(percentiles(x, *q), [np.percentile(x, v) for v in q], rtol=0, atol=1e-12)
