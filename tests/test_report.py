"""The offline HTML report: self-contained, and it renders (headless Chromium screenshot is not blank)."""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.io import read_record
from edge.pipeline import Retriever
from edge.report import ecg_svg, render_report, write_report
from tests.fixtures_bundle import test_bundle  # noqa: F401


@pytest.fixture(scope="module")
def results(test_bundle, shared_data):
    b = load_bundle(test_bundle, threads=1)
    r = Retriever(b)
    recs = [read_record(shared_data / "cinc2021-sample" / n) for n in ("HR06005", "JS20001")]
    return b, [r.query_record(recs[0]), r.query_record(recs[1], leads=("I", "II", "V2"), top_k=4)]


def test_report_is_self_contained(results, tmp_path):
    b, res = results
    page = write_report(tmp_path / "r.html", res, b).read_text()
    assert page.count("<svg") == 2 and page.count("<polyline") == (12 + 1) + (7 + 1)  # usable leads + strip
    # no network assets: no src/href to anything, no @import, no url() but the inline SVG patterns
    assert not re.search(r"""(src|href)\s*=""", page)
    assert "@import" not in page
    assert set(re.findall(r"url\(([^)]*)\)", page)) <= {"#g1", "#g5"}
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * 2  # SVG namespace only
    for m in res[0].matches:
        assert m.case_id in page
    assert res[0].consensus.summary in page
    assert "missing" in page and "V1 (missing)" in page  # second query: reduced lead set
    assert not list(tmp_path.glob(".*tmp*"))


def test_svg_draws_present_leads_only():
    x = np.sin(np.linspace(0, 60, 1000))[:, None].repeat(12, axis=1).astype(np.float32)
    present = np.ones(12, bool)
    present[[6, 8]] = False
    svg = ecg_svg(x, present)
    assert svg.count("<polyline") == 10 + 1  # 10 leads + the rhythm strip
    assert "V1 (missing)" in svg and "V3 (missing)" in svg


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def test_report_renders_in_headless_chromium(results, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary found (Debian: apt-get install -y chromium)")
    PIL = pytest.importorskip("PIL.Image")
    b, res = results
    page = write_report(tmp_path / "r.html", res, b)
    shot = tmp_path / "shot.png"
    p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                        f"--screenshot={shot}", "--window-size=1200,1400", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.exists(), p.stderr[-2000:]
    img = np.asarray(PIL.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    nonwhite = np.any(img < 235, axis=2).mean()
    dark = np.all(img < 80, axis=2).mean()          # ECG traces and text
    reddish = ((img[..., 0] - img[..., 1]) > 25).mean()  # the ECG paper grid
    assert nonwhite > 0.05, nonwhite
    assert dark > 0.002, dark
    assert reddish > 0.01, reddish
