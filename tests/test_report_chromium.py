"""The report rendered by a real browser (headless Chromium): JS20004 (CinC, mV, large beats, three flat leads)
with the matched cases' waveforms. The screenshot is not blank; printed, one query is exactly one landscape page,
on A4 and on Letter; laid out at the page's width, no element's visible box lies outside its query's page; the
calibration pulses are in the rendered DOM. Skips only where no Chromium binary exists."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.io import read_record
from edge.retrieval import Retriever
from edge.report import write_report
from tests.fixtures_bundle import test_bundle  # noqa: F401

pytestmark = pytest.mark.slow  # every test starts a headless browser

# the page's content box (landscape, 6 mm margins) in CSS px (96 per inch)
PAGES_MM = {"A4": (297.0 - 12, 210.0 - 12), "letter": (279.4 - 12, 215.9 - 12)}
PX = 96 / 25.4

_MEASURE_JS = """<script>
window.addEventListener('load', () => {
  const out = {sections: [], outside: [], calibration: document.querySelectorAll('.calibration').length};
  const visible = (e, b) => {           // the box as drawn: cut by every ancestor that clips its overflow
    let r = {l: b.left, t: b.top, r: b.right, b: b.bottom};
    for (let a = e.parentElement; a; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (s.overflow !== 'visible' || a.tagName.toLowerCase() === 'svg') {
        const c = a.getBoundingClientRect();
        r = {l: Math.max(r.l, c.left), t: Math.max(r.t, c.top), r: Math.min(r.r, c.right), b: Math.min(r.b, c.bottom)};
      }
    }
    return r;
  };
  for (const s of document.querySelectorAll('section.query')) {
    const q = s.getBoundingClientRect();
    out.sections.push([q.left, q.top, q.width, q.height]);
    for (const e of s.querySelectorAll('*')) {
      const b = e.getBoundingClientRect();
      if (!b.width && !b.height) continue;
      const v = visible(e, b);
      if (v.r <= v.l || v.b <= v.t) continue;             // clipped away entirely
      if (v.l < q.left - 0.5 || v.r > q.right + 0.5 || v.t < q.top - 0.5 || v.b > q.bottom + 0.5)
        out.outside.push(e.tagName + '.' + (e.getAttribute('class') || ''));
    }
  }
  const p = document.createElement('pre'); p.id = 'measure'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>"""


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


@pytest.fixture(scope="module")
def exe():
    p = _chromium()
    if p is None:
        pytest.skip("no chromium binary found (Debian: apt-get install -y chromium)")
    return p


def _run(exe, tmp_path, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(test_bundle, shared_data, ptbxl_subset, tmp_path_factory):
    """The report of JS20004 and of JS20004 + HR06005, answered by a copy of the test bundle with waveforms."""
    from convert.waveforms import add_waveforms
    d = tmp_path_factory.mktemp("chromium")
    shutil.copytree(test_bundle, d / "bundle")
    add_waveforms(d / "bundle", ptbxl_subset)
    b = load_bundle(d / "bundle", threads=1, allow_unsigned=True)
    r = Retriever(b)
    res = [r.query_record(read_record(shared_data / "cinc2021-sample" / n)) for n in ("JS20004", "HR06005")]
    return d, write_report(d / "one.html", res[:1], b), write_report(d / "two.html", res, b)


def _pdf_pages(data: bytes) -> int:
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data)]
    counts += [int(n) for n in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data)]
    assert counts, "no page tree in the PDF"
    return max(counts)


def test_screenshot_is_not_blank(exe, report, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="Pillow decodes the screenshot (installed with the text extra)")
    _, one, _ = report
    shot = tmp_path / "shot.png"
    p = _run(exe, tmp_path, f"--screenshot={shot}", "--window-size=1100,1500", one.as_uri())
    assert shot.exists(), p.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    assert img.shape[:2] == (1500, 1100)
    nonwhite = np.any(img < 235, axis=2).mean()
    dark = np.all(img < 80, axis=2).mean()                  # ECG traces and text
    reddish = ((img[..., 0] - img[..., 1]) > 25).mean()     # the ECG paper grid
    assert nonwhite > 0.05 and dark > 0.002 and reddish > 0.01, (nonwhite, dark, reddish)


@pytest.mark.parametrize("paper", ["A4", "letter"])
def test_one_query_prints_on_one_page(exe, report, tmp_path, paper):
    d, one, two = report
    for page, n in ((one, 1), (two, 2)):
        html = page.read_text().replace("@page{size:landscape;", f"@page{{size:{paper} landscape;")
        assert f"size:{paper} landscape" in html
        src = tmp_path / f"{page.stem}-{paper}.html"
        src.write_text(html)
        pdf = tmp_path / f"{page.stem}-{paper}.pdf"
        p = _run(exe, tmp_path, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", src.as_uri())
        assert pdf.exists(), p.stderr[-2000:]
        assert _pdf_pages(pdf.read_bytes()) == n, (page.name, paper)


@pytest.mark.parametrize("paper", ["A4", "letter"])
def test_nothing_outside_the_page_and_calibration_present(exe, report, tmp_path, paper):
    """The print rules applied on screen at the page's content width: every query fits the page's content box
    and no element's visible box leaves its query."""
    _, _, two = report
    w_mm, h_mm = PAGES_MM[paper]
    html = two.read_text()
    assert "@media print{" in html
    html = html.replace("@media print{", "@media all{").replace("</body>", _MEASURE_JS + "</body>")
    src = tmp_path / "measure.html"
    src.write_text(html)
    p = _run(exe, tmp_path, f"--window-size={int(w_mm * PX)},{int(h_mm * PX)}", "--virtual-time-budget=5000",
             "--dump-dom", src.as_uri())
    m = re.search(r'<pre id="measure">(.*?)</pre>', p.stdout, re.S)
    assert m, p.stderr[-2000:]
    out = json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))
    assert out["calibration"] == 2 * 4                     # a 1 mV pulse on each of the 4 rows of both ECGs
    assert len(out["sections"]) == 2
    for left, top, w, h in out["sections"]:
        assert left >= 0 and w <= w_mm * PX + 0.5, (w / PX, w_mm)
        assert h <= h_mm * PX, (h / PX, h_mm)
    assert out["outside"] == []
