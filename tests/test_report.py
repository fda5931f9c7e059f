"""The offline HTML report: self-contained, a 12-lead printout in mV for physical records (gain, calibration
pulse, clipping stated), z-scored records said to be so, the patient line from the header, the plot and the
quality section in agreement, and the retrieved cases' waveforms from the bundle (optional, checked, bounded).
The rendering itself (one page, nothing outside it) is tests/test_report_chromium.py."""
from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.bundle_format import WAVEFORMS_FILE
from edge.errors import BundleError
from edge.io import read_record
from edge.io_wfdb import patient_meta
from edge.retrieval import Retriever
from edge.report import physical_units, render_report, write_report
from edge.report_svg import ecg_svg
from tests.fixtures_bundle import plain_bundle, test_bundle  # noqa: F401

@pytest.fixture(scope="module")
def results(plain_bundle, shared_data):
    b = load_bundle(plain_bundle, threads=1)
    r = Retriever(b)
    recs = [read_record(shared_data / "cinc2021-sample" / n) for n in ("HR06005", "JS20001")]
    return b, [r.query_record(recs[0]), r.query_record(recs[1], leads=("I", "II", "V2"), top_k=4)]


@pytest.fixture(scope="module")
def wf_bundle(plain_bundle, ptbxl_subset, tmp_path_factory):
    """A copy of the shipped bundle without waveforms, with waveforms.bin added again from the real archive."""
    from convert.waveforms import add_waveforms
    d = tmp_path_factory.mktemp("wf") / "bundle"
    shutil.copytree(plain_bundle, d)
    stats = add_waveforms(d, ptbxl_subset)
    return d, stats


def _cal_heights(svg: str) -> list[tuple[float, float]]:
    """(first step, second step) heights in mm of every calibration pulse path."""
    out = []
    for d in re.findall(r'class="calibration(?:-sd)?" d="([^"]+)"', svg):
        v = [float(x) for x in re.findall(r"[-\d.]+", d)]
        # M x0 y0 H x V y1 H x V y2 H x V y0 H x
        y0, y1, y2 = v[1], v[3], v[5]
        out.append((round(y0 - y1, 3), round(y0 - y2, 3)))
    return out


def test_report_is_self_contained(results, tmp_path):
    b, res = results
    page = write_report(tmp_path / "r.html", res, b).read_text()
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="ecg"') == 2
    # no network assets, no script: no src/href, no @import, url() only to this page's own SVG ids
    assert not re.search(r"""(src|href)\s*=""", page) and "<script" not in page and "@import" not in page
    assert all(re.fullmatch(r"#q\d+(g1|g5|r\d|m\d+c)", u) for u in re.findall(r"url\(([^)]*)\)", page))
    assert set(re.findall(r"https?://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}   # SVG namespace only
    for m in res[0].matches:
        assert m.case_id in page
    assert page.count("Similar past cases, not a diagnosis") == 2      # on every query's page
    assert "no waveform in this bundle" in page                        # the test bundle carries none
    # the second query declared I, II, V2: the other chest leads are not recorded, on the plot and in quality
    q2 = page.split('id="q2"')[1]
    assert q2.count(">not recorded</text>") == 5 and "V1: <b>not recorded</b>" in q2
    assert not list(tmp_path.glob(".*tmp*"))


def test_answer_leads_with_measurements_then_similar_cases(results):
    b, res = results
    page = render_report(res[:1], b)
    i_meas, i_sim, i_ecg = page.index("Measured: heart rate"), page.index(" similar cases: "), page.index('class="ecg"')
    assert i_meas < i_sim < i_ecg
    hr = res[0].measurements.heart_rate_bpm
    assert f"heart rate {hr:.0f} bpm" in page
    first = res[0].consensus.plain_lines()[0] if hasattr(res[0].consensus, "plain_lines") else None
    if first:
        assert first.split(":")[0] in page


def test_physical_record_is_drawn_in_mV_with_calibration(results):
    """HR06005 (CinC, mV): the filtered signal on the 250 Hz measurement grid (a 500 Hz record), 25 mm/s, a 1 mV pulse on all 4 rows drawn at
    the stated gains, and each gain is the largest step at which the leads fit their rows."""
    b, res = results
    r = res[0]
    svg = render_report([r], b).split('class="ecg"')[1].split("</svg>")[0]
    cal = _cal_heights(svg)
    assert len(cal) == 4 and len(set(cal)) == 1
    gl, gc = cal[0]
    assert gl in (10.0, 5.0, 2.5) and gc in (10.0, 5.0, 2.5)
    want = (f"{gl:g} mm/mV" if gl == gc else f"limb {gl:g} mm/mV, chest {gc:g} mm/mV")
    assert want in svg and "250 Hz" in svg and "25 mm/s" in svg and "z-scored" not in svg
    # the gain is the first step that fits: at twice the gain the leads would not fit (unless already 10)
    x, w = r.native, int(round(2.5 * r.native_fs))
    ext = lambda ks: max(np.percentile(np.abs(x[c * w:(c + 1) * w, k] - np.median(x[c * w:(c + 1) * w, k])),
                                       99.8) for k in ks for c in range(4))
    for g, ks in ((gl, range(6)), (gc, range(6, 12))):
        assert ext(ks) * g <= 20 / 2 - 0.6
        if g < 10:
            assert ext(ks) * g * 2 > 20 / 2 - 0.6


def test_svg_gain_calibration_clipping_and_absent_leads():
    """A synthetic 12-lead in mV: limb leads 0.8 mV fit at 10 mm/mV; chest leads 3 mV need 2.5 mm/mV; a 10 mV
    spike on V4 is clipped by its row's clipPath and named; absent leads say "not recorded"."""
    fs = 500.0
    t = np.arange(5000) / fs
    beat = np.exp(-((t % 0.8) - 0.4) ** 2 / (2 * 0.01 ** 2))          # narrow 'QRS' every 0.8 s
    x = np.zeros((5000, 12))
    x[:, :6] = 0.8 * beat[:, None]
    x[:, 6:] = 3.0 * beat[:, None]
    x[3800:3850, 9] = 10.0                                             # V4 (7.5-10 s column) spike, 100 ms
    present = np.ones(12, bool)
    present[[7, 8]] = False
    svg = ecg_svg(x, present, fs, units="mV", labels={9: "noisy"})
    assert _cal_heights(svg) == [(10.0, 2.5)] * 4
    assert "limb 10 mm/mV, chest 2.5 mm/mV (gain reduced to fit the rows)" in svg
    assert "clipped at the row edge: V4" in svg and "V4 — noisy" in svg
    assert svg.count(">not recorded</text>") == 2
    assert svg.count("<polyline") == 10 + 1                            # 10 leads + the rhythm strip
    assert all('clip-path="url(#er' in p for p in re.findall(r"<polyline[^>]*>", svg))
    # every clip box lies inside its row: rows never overlap
    rows = [(float(y), float(h)) for y, h in re.findall(r'<clipPath id="er\d"><rect x="[\d.]+" y="([\d.]+)" '
                                                        r'width="[\d.]+" height="([\d.]+)"', svg)]
    assert rows == [(0.0, 20.0), (20.0, 20.0), (40.0, 20.0), (60.0, 20.0)]


def test_zscored_input_says_so(test_bundle, shared_data, tmp_path):
    """An NPY record (no units) is drawn z-scored, in SD, and the plot says "z-scored, no mV" (no mV pulse)."""
    rec = read_record(shared_data / "cinc2021-sample" / "HR06005")
    np.save(tmp_path / "hr.npy", rec.signal.astype(np.float32))
    npy = read_record(tmp_path / "hr.npy", fs=rec.fs)
    assert not physical_units(npy.meta) and physical_units(rec.meta)
    b = load_bundle(test_bundle, threads=1)
    page = render_report([Retriever(b).query_record(npy)], b)
    assert "z-scored, no mV" in page and 'class="calibration-sd"' in page and 'class="calibration"' not in page
    assert "mm/SD" in page and "100 Hz" in page


def test_plot_and_quality_agree_on_flat_leads_and_patient_line(test_bundle, shared_data):
    """JS20004: V2, V4 and V6 are all zeros in the file: "flat" in the quality section and on the plot (drawn,
    labelled flat, not called missing); the patient line carries the header's age and sex."""
    b = load_bundle(test_bundle, threads=1)
    res = Retriever(b).query_record(read_record(shared_data / "cinc2021-sample" / "JS20004"))
    flat = sorted(f.lead for f in res.quality.findings if f.kind == "flat")
    assert flat == ["V2", "V4", "V6"]
    page = render_report([res], b)
    for lead in flat:
        assert f"{lead} — flat</text>" in page and f"{lead}: <b>flat</b>" in page
    svg = page.split('class="ecg"')[1].split("</svg>")[0]
    assert "not recorded" not in svg and "missing" not in svg
    assert "<b>JS20004</b> · age 89 · male · acquisition time not in the file" in page
    assert "clipped at the row edge" not in page or "V5" in page      # V5's 4 mV beats: clipped only if said


def test_patient_meta_from_headers(shared_data, tmp_path):
    ludb = read_record(shared_data / "ludb-dev" / "data" / "100")
    assert (ludb.meta.get("age"), ludb.meta.get("sex")) == (76, "female")           # '#<age>: 76', '#<sex>: F'
    assert patient_meta({"Age": "NaN", "Sex": "Unknown"}) == {}
    assert patient_meta({"Age": "999", "Sex": "x" * 1000, "y" * 100: "1"}) == {}
    assert patient_meta({"Age": "63.0", "Gender": "M"}) == {"age": 63, "sex": "male"}
    assert patient_meta(None) == {} and patient_meta({1: 2}) == {}
    # the record line's base time and date become the acquisition time; a bad one is left out, never refused
    src = shared_data / "cinc2021-sample" / "JS20004"
    for line, want in (("JS20004 12 500 5000 11:39:16 05/02/2020", "2020-02-05 11:39:16"),
                       ("JS20004 12 500 5000 25:99:00 05/02/2020", None), ("JS20004 12 500 5000 08:01", "08:01:00")):
        hea = src.with_suffix(".hea").read_text().split("\n")
        hea[0] = line
        (tmp_path / "JS20004.hea").write_text("\n".join(hea))
        shutil.copy(src.with_suffix(".mat"), tmp_path / "JS20004.mat")
        assert read_record(tmp_path / "JS20004").meta.get("acquired") == want


@pytest.mark.slow
def test_waveforms_in_bundle_and_in_report(wf_bundle, plain_bundle, shared_data, ptbxl_subset):
    d, stats = wf_bundle
    b = load_bundle(d, threads=1, allow_unsigned=True)
    wf = b.waveforms
    n = len(b.cases)
    assert len(wf) == n and wf.median_beats.shape == (n, 12, 100) and wf.rhythm_II.shape == (n, 1000)
    assert stats["bytes"] == (d / WAVEFORMS_FILE).stat().st_size == n * 2200
    assert stats["clipped_fraction"] < 1e-3
    # the stored strip is the archive's lead II to within half an int8 step
    j = 3
    sig = ptbxl_subset.signal(ptbxl_subset.index_of(b.cases[j]["case_id"]))
    assert np.max(np.abs(wf.strip(j) - np.clip(sig[:, 1], -127 * wf.scale, 127 * wf.scale))) <= wf.scale / 2 + 1e-6
    res = Retriever(b).query_record(read_record(shared_data / "cinc2021-sample" / "JS20004"))
    page = render_report([res], b)
    assert page.count('class="case-ecg"') == len(res.matches) and "no waveform in this bundle" not in page
    assert "z-score, no mV" in page
    # the same answer with and without the waveforms: the file is for the report only
    plain = Retriever(load_bundle(plain_bundle, threads=1)).query_record(
        read_record(shared_data / "cinc2021-sample" / "JS20004"))
    assert [m.case_id for m in plain.matches] == [m.case_id for m in res.matches]


def _tamper_manifest(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("change, field", [
    (lambda m: m.pop("waveforms"), "waveforms"),
    (lambda m: m["files"].pop(WAVEFORMS_FILE), "files.waveforms.bin"),
    (lambda m: m["waveforms"].update(dtype="float32"), "waveforms.dtype"),
    (lambda m: m["waveforms"]["arrays"]["rhythm_II"].update(offset=7), "waveforms.arrays.rhythm_II.offset"),
    (lambda m: m["waveforms"]["arrays"]["median_beats"]["shape"].__setitem__(0, 5), "median_beats.shape"),
    (lambda m: m["waveforms"]["arrays"].update(evil={"offset": 0, "shape": [1]}), "waveforms.arrays.evil"),
    (lambda m: m["files"][WAVEFORMS_FILE].update(bytes=10 ** 12), "files.waveforms.bin.bytes"),
])
def test_hostile_waveform_manifest_is_refused_at_load(wf_bundle, tmp_path, change, field):
    d = tmp_path / "b"
    shutil.copytree(wf_bundle[0], d)
    _tamper_manifest(d, change)
    with pytest.raises(BundleError, match=re.escape(field)):
        load_bundle(d, threads=1, allow_unsigned=True, check_encoder=False)


@pytest.mark.parametrize("how", ["truncate", "flip", "link", "grow"])
def test_hostile_waveform_file_is_a_bundle_error(wf_bundle, tmp_path, how):
    """The file is checked (regular, size, sha256) when the report first uses it: a BundleError, no crash;
    the bundle still answers queries."""
    d = tmp_path / "b"
    shutil.copytree(wf_bundle[0], d)
    p = d / WAVEFORMS_FILE
    data = bytearray(p.read_bytes())
    if how == "truncate":
        p.write_bytes(data[:-100])
    elif how == "flip":
        data[1234] ^= 0x55
        p.write_bytes(bytes(data))
    elif how == "grow":
        p.write_bytes(bytes(data) + b"\0" * 10)
    else:
        (tmp_path / "elsewhere.bin").write_bytes(bytes(data))
        p.unlink()
        p.symlink_to(tmp_path / "elsewhere.bin")
    b = load_bundle(d, threads=1, allow_unsigned=True)
    assert len(b.cases)
    with pytest.raises(BundleError, match=re.escape(WAVEFORMS_FILE)):
        b.waveforms


def test_bundle_without_waveforms_loads_and_says_so(plain_bundle):
    b = load_bundle(plain_bundle, threads=1)
    assert b.waveforms is None and WAVEFORMS_FILE not in b.manifest["files"]


@pytest.mark.slow
def test_default_bundle_with_waveforms_stays_under_8_mb(tmp_path):
    """The shipped bundle plus waveforms (on a copy: the signed original is not touched) is at most 8 MB and
    still loads; the copy's stale signature is removed by add-waveforms."""
    from edge.bundle import default_bundle_path
    from edge.paths import shared_data_dir
    if not (shared_data_dir() / "ptbxl-subset" / "signals_100hz.npy").exists():
        from tests.shared import missing_data
        missing_data(f"shared data not found at {shared_data_dir()}")
    from convert.waveforms import add_waveforms
    d = tmp_path / "default"
    shutil.copytree(default_bundle_path(), d)
    before = hashlib.sha256((default_bundle_path() / "manifest.json").read_bytes()).hexdigest()
    st = add_waveforms(d)
    assert st["bundle_bytes"] <= 8_000_000 and not st["signed"] and not (d / "signature.json").exists()
    b = load_bundle(d, threads=1, allow_unsigned=True)
    assert len(b.waveforms) == len(b.cases) == 1625
    assert hashlib.sha256((default_bundle_path() / "manifest.json").read_bytes()).hexdigest() == before


def test_record_without_units_is_not_physical():
    assert physical_units({"units": ["mV"] * 12}) and physical_units({"units": "mV"})
    assert not physical_units({}) and not physical_units({"units": ["mV", "adu"]}) and not physical_units(None)


def test_every_query_page_carries_version_bundle_id_and_utc(results):
    """Issue 13: every saved or printed result names the ecgret version, the bundle id and a UTC timestamp."""
    import re

    from edge import __version__
    b, res = results
    page = render_report(res[:2], b)
    heads = re.findall(r'<span class="meta">([^<]*)</span>', page)
    assert len(heads) >= 2
    for h in heads[:2]:
        assert f"ecgret {__version__}" in h and b.id[:16] in h and re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h)


def test_an_undecodable_file_name_still_gets_its_report(test_bundle, shared_data, tmp_path):
    """A record whose file name is not UTF-8 (the bytes come to Python as lone surrogates) was answered, then the
    report died with an internal UnicodeEncodeError and nothing was written. The page names it with U+FFFD."""
    import os
    src = shared_data / "cinc2021-sample"
    shutil.copy(src / "E07500.mat", tmp_path / "E07500.mat")
    name = os.fsdecode(b"\xff\xfe.hea")
    (tmp_path / name).write_bytes((src / "E07500.hea").read_bytes())
    b = load_bundle(test_bundle, threads=1)
    res = Retriever(b).query_record(read_record(tmp_path / name))
    page = write_report(tmp_path / "r.html", [res], b).read_bytes().decode("utf-8")   # strict: valid UTF-8
    assert "\ufffd\ufffd" in page and "E07500" in page


def test_an_undecodable_name_still_saves_the_acquisition(test_bundle, shared_data, tmp_path):
    """``listen --save`` on a port whose name is not UTF-8 lost the acquisition (an orphan .dat, no .hea, no .json)."""
    import os
    from edge.answer import result_dict
    from edge.save import save_acquisition
    rec = read_record(shared_data / "cinc2021-sample" / "E07500")
    rec = type(rec)(rec.signal, rec.fs, rec.leads, os.fsdecode(b"/dev/port\xff"), rec.meta)
    b = load_bundle(test_bundle, threads=1)
    res = Retriever(b).query_record(rec)
    out = save_acquisition(rec, result_dict(res), tmp_path, "ecg-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ecg-1.dat", "ecg-1.hea", "ecg-1.json"]
    doc = json.loads(out.with_suffix(".json").read_bytes().decode("utf-8"))
    assert "\ufffd" in json.dumps(doc, ensure_ascii=False)
    assert read_record(out).signal.shape == rec.signal.shape
