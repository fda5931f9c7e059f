"""A self-contained offline HTML page of query results (``--report out.html``): one printed page per query.

No network assets, no script: inline CSS and inline SVG. Each query, in this order: the notice that these are
similar past cases and not a diagnosis; the patient line (id, age, sex, acquisition time, source); the
measurements and the rhythm; "N of 10 similar cases: ..." in plain words with the codes in brackets; the ECG;
the quality findings; the retrieved cases, each with a small ECG of that case when the bundle carries waveforms.

The ECG (:func:`ecg_svg`) is drawn as a 12-lead cardiograph prints it: a 1 mm / 5 mm grid, 25 mm/s, 10 mm/mV
with a 1 mV calibration pulse at the start of every row, the 3 x 4 layout (I, aVR, V1, V4 / II, aVL, V2, V5 /
III, aVF, V3, V6; 2.5 s each, consecutive in time) and a 10 s lead II rhythm strip. Every trace is clipped to
its row (an SVG ``clipPath``), so rows never overlap: when the deflections of the limb leads (I-aVF, and the
rhythm strip) or of the chest leads (V1-V6) do not fit their rows at 10 mm/mV, that group is drawn at 5 or
2.5 mm/mV, as cardiographs do, and the figure says so ("limb 5 mm/mV, chest 2.5 mm/mV"; the calibration pulse
shows both gains as a step, 0.1 s at each); a trace that still leaves its row is named as clipped. A record without
physical units (CSV/NPY, or the z-scored archive) is drawn z-scored, in standard deviations, and the plot says
"z-scored, no mV". Leads the recording lacks are drawn as "not recorded"; a lead the quality gate rejected is
drawn as it is, labelled with the quality finding (so the plot and the quality section agree).

The print stylesheet lays each query out on one landscape A4 or Letter page (``@page``), at true scale.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .leads import LEADS12

__all__ = ["ecg_svg", "case_svg", "render_report", "write_report", "GAINS_MM_PER_MV"]

_GRID = ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11))
GAINS_MM_PER_MV = (10.0, 5.0, 2.5)  # the cardiograph's gain steps; the first that fits is used
GAINS_MM_PER_SD = (2.0, 1.0, 0.5)  # the same steps for z-scored records
SPEED = 25.0  # mm/s
ROW_MM = 20.0  # one row of the 3 x 4 grid or the rhythm strip
CAL_MM = 7.5  # the calibration pulse's margin at the left of every row
FOOT_MM = 4.5  # the caption strip at the bottom of the figure
_PROBLEMS = ("flat", "clipped", "lead_off", "noisy", "gaps")
_PHYSICAL = ("mv", "uv", "µv", "v", "millivolt", "millivolts")

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:12px;color:#1b1b1b;
background:#fff;font-size:13px;line-height:1.3}
.query{width:267mm;margin:0 auto 18px}
.notice{border:1.5px solid #a40000;color:#a40000;font-weight:600;padding:2px 6px;margin:0 0 3px;font-size:12px}
h1{font-size:16px;margin:0 0 1px} h1 .meta{font-weight:normal;margin-left:8px} .meta{color:#555;font-size:11px}
.patient{font-size:13px;margin:0 0 2px} .patient b{font-size:14px}
.answer{margin:2px 0 3px} .answer p{margin:1px 0} .lead{font-weight:600}
.note{font-size:11px;color:#555} .warn{color:#a40000} .ok{color:#0a6b20}
svg.ecg{display:block;margin:2px 0}
.quality{margin:2px 0 3px;font-size:12px}
.cases{display:grid;grid-template-columns:1fr 1fr;column-gap:3mm;row-gap:1mm}
.case{display:flex;gap:2mm;align-items:flex-start;border-top:1px solid #ddd;padding-top:1mm;min-width:0}
.case svg{flex:0 0 auto} .case .txt{min-width:0;flex:1 1 auto;font-size:11px}
.case .txt .hd{font-size:12px} .local{color:#06c;font-weight:600}
h2{font-size:13px;margin:3px 0 1px}
@page{size:landscape;margin:6mm}
@media print{
 body{margin:0;font-size:9pt} .query{width:auto;margin:0;break-after:page;page-break-after:always}
 .query:last-child{break-after:auto;page-break-after:auto}
 .notice{font-size:8pt} h1{font-size:10pt} .meta{font-size:7pt} .patient{font-size:8.5pt} .patient b{font-size:9pt}
 .answer{font-size:8pt} .quality{font-size:7.5pt} .note{font-size:7pt} h2{font-size:8.5pt;margin:1mm 0 0}
 .case{height:12.5mm;overflow:hidden;padding-top:0.6mm} .case .txt{font-size:6.5pt;line-height:1.2}
 .case .txt .hd{font-size:6.8pt;max-height:2.4em;overflow:hidden}
 .case .txt .st{max-height:3.6em;overflow:hidden}
}
"""


def _e(s) -> str:
    return html.escape(str(s))


def _f(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def physical_units(meta) -> bool:
    """Whether a record's metadata states physical units (mV, after :mod:`edge.io`'s conversion of uV/V) for
    every signal: WFDB headers do; CSV/NPY files do not (their values are whatever the file holds)."""
    u = meta.get("units") if isinstance(meta, dict) else None
    if isinstance(u, str):
        u = [u]
    return isinstance(u, (list, tuple)) and len(u) > 0 and all(str(x).lower() in _PHYSICAL for x in u)


def _decimate(y: np.ndarray, fs: float, max_fs: float = 250.0) -> tuple[np.ndarray, np.ndarray]:
    """(sample positions, values) of ``y`` thinned for drawing to about ``max_fs`` points a second, each bin
    keeping its minimum and maximum in time order (so no QRS peak is lost)."""
    k = int(fs // (max_fs / 2))
    t = np.arange(y.size, dtype=np.float64)
    if k < 2 or y.size < 4 * k:
        return t, y
    n = y.size // k * k
    b = y[:n].reshape(-1, k)
    i0, i1 = np.argmin(b, axis=1), np.argmax(b, axis=1)
    first, second = np.minimum(i0, i1), np.maximum(i0, i1)
    base = np.arange(b.shape[0]) * k
    idx = np.stack([base + first, base + second], axis=1).ravel()
    idx = np.concatenate([idx, np.arange(n, y.size)])
    return t[idx], y[idx]


def _points(y: np.ndarray, fs: float, x0: float, y0: float, mm_per_unit: float, speed: float = SPEED) -> str:
    t, v = _decimate(np.asarray(y, dtype=np.float64), fs)
    xs = x0 + t * (speed / fs)
    ys = y0 - v * mm_per_unit
    return " ".join(f"{a:.2f},{b:.2f}" for a, b in zip(xs, ys))


def _grid_defs(uid: str) -> str:
    return (
        f'<defs><pattern id="{uid}g1" width="1" height="1" patternUnits="userSpaceOnUse">'
        '<path d="M 1 0 L 0 0 0 1" fill="none" stroke="#f6cfcf" stroke-width="0.06"/></pattern>'
        f'<pattern id="{uid}g5" width="5" height="5" patternUnits="userSpaceOnUse">'
        f'<rect width="5" height="5" fill="url(#{uid}g1)"/>'
        '<path d="M 5 0 L 0 0 0 5" fill="none" stroke="#e8a3a3" stroke-width="0.15"/></pattern>'
    )


def _fit_gain(segments, half: float, gains, q: float = 99.8) -> float:
    """The first of ``gains`` (mm per unit) at which every segment's excursion from its baseline fits ``half``;
    the excursion is the ``q`` th percentile of |x - baseline|, so that a spike of a few samples (an artefact)
    does not shrink the whole figure: it is clipped at the row edge and named."""
    ext = max((float(np.percentile(np.abs(s - b), q)) for s, b in segments if s.size), default=0.0)
    for g in gains:
        if ext * g <= half:
            return g
    return gains[-1]


def ecg_svg(
    signal: np.ndarray,
    present=None,
    fs: float = 100.0,
    *,
    units: str = "z",
    labels=None,
    uid: str = "e",
    caption: str = "",
) -> str:
    """Inline SVG of a 12-lead ECG ``signal`` (T, 12) in LEADS12 order at ``fs`` Hz: the 3 x 4 grid of 2.5 s,
    a 10 s lead II strip, a calibration pulse per row; sized in mm (1 user unit = 1 mm) at 25 mm/s.

    units: ``"mV"`` (10 mm/mV, reduced to 5 or 2.5 when the deflections do not fit a row) or ``"z"`` (z-scored,
    drawn in standard deviations and marked "z-scored, no mV"). present: bool (12,), leads to draw (others are
    "not recorded"). labels: optional {lead index: text} shown after a lead's name (quality findings).
    uid: a prefix for the SVG ids, unique per figure on a page. caption: extra text for the caption strip."""
    x = np.asarray(signal, dtype=np.float64)
    present = np.ones(12, bool) if present is None else np.asarray(present, bool)
    labels = dict(labels or {})
    mv = units.lower() == "mv"
    n_col = int(round(2.5 * fs))
    half = ROW_MM / 2 - 0.6
    rk = 1 if present[1] else (int(np.argmax(present)) if present.any() else 1)  # the rhythm strip's lead
    cells = [[(k, x[c * n_col : (c + 1) * n_col, k]) for c, k in enumerate(row)] for row in _GRID]
    segs = [((s, np.median(s)), k) for row in cells for k, s in row if present[k] and s.size]
    if present[rk]:
        segs.append(((x[:, rk], np.median(x[:, rk])), rk))
    steps = GAINS_MM_PER_MV if mv else GAINS_MM_PER_SD
    gl = _fit_gain([sb for sb, k in segs if k < 6], half, steps)  # limb leads (and a limb rhythm strip)
    gc = _fit_gain([sb for sb, k in segs if k >= 6], half, steps)  # chest leads
    unit = "mV" if mv else "SD"
    gains = f"{_f(gl)} mm/{unit}" if gl == gc else f"limb {_f(gl)} mm/{unit}, chest {_f(gc)} mm/{unit}"
    width = CAL_MM + 10 * SPEED
    height = 4 * ROW_MM + FOOT_MM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ecg" viewBox="0 0 {_f(width)} {_f(height)}" '
        f'width="{_f(width)}mm" height="{_f(height)}mm" role="img" '
        f'aria-label="12-lead ECG, 25 mm/s, {gains}" font-family="sans-serif">',
        _grid_defs(uid),
    ]
    for r in range(4):
        parts.append(
            f'<clipPath id="{uid}r{r}"><rect x="{_f(CAL_MM)}" y="{_f(r * ROW_MM)}" width="{_f(10 * SPEED)}" '
            f'height="{_f(ROW_MM)}"/></clipPath>'
        )
    parts.append("</defs>")
    parts.append(
        f'<rect width="{_f(width)}" height="{_f(4 * ROW_MM)}" fill="#fff8f8"/>'
        f'<rect width="{_f(width)}" height="{_f(4 * ROW_MM)}" fill="url(#{uid}g5)"/>'
    )
    clipped = []

    def trace(y, x0, r, k, fsx):
        gain = gl if k < 6 else gc
        b = float(np.median(y)) if y.size else 0.0
        y0 = (r + 0.5) * ROW_MM
        if y.size and float(np.max(np.abs(y - b))) * gain > ROW_MM / 2:
            clipped.append(LEADS12[k])
        return (
            f'<polyline clip-path="url(#{uid}r{r})" fill="none" stroke="#111" stroke-width="0.22" '
            f'stroke-linejoin="round" points="{_points(y - b, fsx, x0, y0, gain)}"/>'
        )

    def label(k, x0, r, extra=""):
        text = LEADS12[k] + extra + (f" — {labels[k]}" if k in labels else "")
        cls = ' class="lbl-warn" fill="#a40000"' if k in labels else ' fill="#222"'
        return f'<text x="{_f(x0 + 1)}" y="{_f(r * ROW_MM + 3.2)}" font-size="2.8"{cls}>{_e(text)}</text>'

    for r in range(4):  # calibration pulse: 1 mV (or 1 SD), 0.2 s wide; a step when limb and chest differ
        y0 = (r + 0.5) * ROW_MM + 2.5
        cls = "calibration" if mv else "calibration-sd"
        parts.append(
            f'<path class="{cls}" d="M 0.5 {_f(y0)} H 1.5 V {_f(y0 - gl)} H 4 V {_f(y0 - gc)} H 6.5 '
            f'V {_f(y0)} H 7.5" fill="none" stroke="#111" stroke-width="0.25"/>'
        )
    for r, row in enumerate(cells):
        for c, (k, seg) in enumerate(row):
            x0 = CAL_MM + c * 2.5 * SPEED
            if present[k] and seg.size:
                parts.append(trace(seg, x0, r, k, fs))
                parts.append(label(k, x0, r))
            else:
                parts.append(label(k, x0, r))
                parts.append(
                    f'<text class="not-recorded" x="{_f(x0 + 2.5 * SPEED / 2)}" y="{_f((r + 0.5) * ROW_MM + 1)}" '
                    f'font-size="3" fill="#777" text-anchor="middle">not recorded</text>'
                )
            if c:
                parts.append(
                    f'<line x1="{_f(x0)}" y1="{_f((r + 0.5) * ROW_MM - 3)}" x2="{_f(x0)}" '
                    f'y2="{_f((r + 0.5) * ROW_MM + 3)}" stroke="#111" stroke-width="0.25"/>'
                )
    if present[rk]:
        parts.append(trace(x[:, rk], CAL_MM, 3, rk, fs))
        parts.append(label(rk, CAL_MM, 3, " (rhythm, 10 s)"))
    else:
        parts.append(label(rk, CAL_MM, 3, " (rhythm, 10 s)"))
    foot = ["25 mm/s", gains + ("" if gl == gc == steps[0] else " (gain reduced to fit the rows)"), f"{_f(fs)} Hz"]
    if not mv:
        foot.insert(0, "z-scored, no mV")
    if caption:
        foot.append(caption)
    if clipped:
        foot.append("clipped at the row edge: " + ", ".join(dict.fromkeys(clipped)))
    cls = ' class="zscored"' if not mv else ""
    parts.append(
        f'<text{cls} x="0.5" y="{_f(4 * ROW_MM + 3.3)}" font-size="2.8" fill="#222">{_e(" · ".join(foot))}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def case_svg(median: np.ndarray | None, strip: np.ndarray | None, fs: float, uid: str, gain: float = 0.6) -> str:
    """A small ECG of an archived case: its 12 median beats (I, II, III, aVR, aVL, aVF over V1-V6; 1 s each at
    5 mm/s) and 10 s of lead II (at 2.8 mm/s), z-scored, ``gain`` mm per SD, each trace clipped to its box."""
    bw, bh = 5.0, 6.0  # one median beat's box (mm)
    sw = 28.0  # the strip's width (mm)
    w, h = 6 * bw + 1.5 + sw, 2 * bh
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="case-ecg" viewBox="0 0 {_f(w)} {_f(h)}" '
        f'width="{_f(w)}mm" height="{_f(h)}mm" role="img" aria-label="archived case ECG, z-scored">',
        f'<defs><clipPath id="{uid}c"><rect width="{_f(w)}" height="{_f(h)}"/></clipPath></defs>',
        f'<rect width="{_f(w)}" height="{_f(h)}" fill="#fff8f8" stroke="#e8a3a3" stroke-width="0.1"/>',
    ]
    pts = []
    if median is not None:
        m = np.asarray(median, dtype=np.float64)
        for k in range(12):
            r, c = divmod(k, 6)
            y = m[:, k] - np.median(m[:, k])
            y = np.clip(y, -(bh / 2 - 0.2) / gain, (bh / 2 - 0.2) / gain)
            pts.append(_points(y, fs, c * bw, (r + 0.5) * bh, gain, bw))
            if c:
                parts.append(
                    f'<line x1="{_f(c * bw)}" y1="{_f(r * bh + 1)}" x2="{_f(c * bw)}" y2="{_f(r * bh + bh - 1)}" '
                    f'stroke="#e8a3a3" stroke-width="0.1"/>'
                )
        parts.append(
            f'<line x1="0" y1="{_f(bh)}" x2="{_f(6 * bw)}" y2="{_f(bh)}" stroke="#e8a3a3" stroke-width="0.1"/>'
        )
    if strip is not None:
        s = np.asarray(strip, dtype=np.float64)
        s = np.clip(s - np.median(s), -(h / 2 - 0.3) / gain, (h / 2 - 0.3) / gain)
        pts.append(_points(s, fs, 6 * bw + 1.5, h / 2, gain, sw / (s.size / fs)))
    for p in pts:
        parts.append(f'<polyline clip-path="url(#{uid}c)" fill="none" stroke="#111" stroke-width="0.15" points="{p}"/>')
    parts.append("</svg>")
    return "".join(parts)


_MEAS = (
    ("heart rate", "heart_rate_bpm", "bpm"),
    ("RR", "rr_mean_ms", "ms"),
    ("PR", "pr_ms", "ms"),
    ("QRS", "qrs_ms", "ms"),
    ("QT", "qt_ms", "ms"),
    ("QTc Bazett", "qtc_bazett_ms", "ms"),
    ("QTc Fridericia", "qtc_fridericia_ms", "ms"),
    ("axis", "axis_deg", "°"),
    ("premature beats", "premature_beats", ""),
    ("irregularity", "irregularity", ""),
)


def _measurement_line(m) -> str:
    d = m.to_dict()
    out = []
    for name, key, unit in _MEAS:
        v = d.get(key)
        if v is None:
            out.append(f"{name} —")
        elif key == "rr_mean_ms" and d.get("rr_sd_ms") is not None:
            out.append(f"RR {v:.0f} ± {d['rr_sd_ms']:.0f} ms")
        else:
            out.append(
                f"{name} {v:.2f}" if key == "irregularity" else f"{name} {v:.0f}{' ' if unit != '°' else ''}{unit}"
            )
    return " · ".join(out).replace(" ·  ", " · ")


def _describe(code: str) -> str:
    """``plain name [CODE]`` from :mod:`edge.labels` (the codes alone where it is not installed)."""
    try:
        from .labels import describe
    except ImportError:  # hook: edge/labels.py names the codes
        return code
    return describe(code)


def _plain_lines(c) -> list[str]:
    """The consensus in plain words: ``"7 of 10 similar cases: ..."`` (:meth:`Consensus.plain_lines`)."""
    f = getattr(c, "plain_lines", None)
    if callable(f):
        return list(f())
    if not c.n_cases:
        return ["no similar cases were retrieved"]
    by: dict[int, list[str]] = {}
    for v in list(c.leading("rhythm")) + list(c.leading("super_class")):
        by.setdefault(v.count, []).append(_describe(v.label))
    return [f"{n} of {c.n_cases} similar cases: {', '.join(x)}" for n, x in sorted(by.items(), key=lambda kv: -kv[0])]


def _patient_line(res) -> str:
    meta = res.meta if isinstance(getattr(res, "meta", None), dict) else {}
    pid = meta.get("record_name") or Path(str(res.query)).stem or str(res.query)
    age = meta.get("age")
    bits = [
        f"<b>{_e(pid)}</b>",
        f"age {age}" if isinstance(age, int) else "age not stated",
        _e(meta["sex"]) if meta.get("sex") in ("male", "female") else "sex not stated",
        f"acquired {_e(meta['acquired'])}" if meta.get("acquired") else "acquisition time not in the file",
    ]
    fmt = meta.get("format")
    src = meta.get("path") or res.query
    bits.append(f"source: {_e(fmt.upper() + ' ') if isinstance(fmt, str) else ''}{_e(src)}")
    return '<p class="patient">Patient ' + " · ".join(bits) + "</p>"


def _ecg(res, uid: str) -> tuple[str, set[int]]:
    """The query's ECG figure and the lead indices it draws."""
    q = res.quality
    kinds: dict[str, str] = {}
    for f in q.findings:
        if f.kind in _PROBLEMS and f.lead in LEADS12:
            kinds.setdefault(f.lead, f.kind)
        elif f.kind == "derived" and f.lead in LEADS12:
            kinds.setdefault(f.lead, "derived")
    missing = {f.lead for f in q.findings if f.kind == "missing"}
    labels = {LEADS12.index(k): v.replace("_", " ") for k, v in kinds.items()}
    meta = res.meta if isinstance(getattr(res, "meta", None), dict) else {}
    native = getattr(res, "native", None)
    if native is not None and physical_units(meta) and getattr(res, "native_fs", None):
        sig, fs, units = native, float(res.native_fs), "mV"
        cap = "filtered 0.5-40 Hz"
    elif res.signal is not None:
        sig, fs, units = res.signal, 100.0, "z"
        cap = "filtered 0.5-40 Hz, resampled to 100 Hz"
    else:
        return "", set()
    sig = np.asarray(sig)
    leads = set(getattr(res, "leads", ()) or ())
    drawn = np.array(
        [LEADS12[k] not in missing and (LEADS12[k] in leads or bool(np.any(sig[:, k] != 0))) for k in range(12)]
    )
    return ecg_svg(sig, drawn, fs, units=units, labels=labels, uid=uid, caption=cap), set(np.flatnonzero(drawn))


def _quality(res) -> str:
    q = res.quality
    items = []
    for f in q.findings:
        cls = "" if f.kind in ("derived", "missing") else ' class="warn"'
        what = "not recorded" if f.kind == "missing" else f.kind.replace("_", " ")
        items.append(f"<span{cls}>{_e(f.lead)}: <b>{_e(what)}</b> ({_e(f.detail)})</span>")
    head = f"{len(q.usable_leads)} of 12 leads usable: {_e(', '.join(q.usable_leads))}."
    body = " · ".join(items) if items else '<span class="ok">No quality problems found.</span>'
    return f'<p class="quality"><b>Signal quality.</b> {head} {body}</p>'


def _case_index(bundle) -> dict:
    if bundle is None:
        return {}
    idx = bundle._cache.get("case_rows") if isinstance(getattr(bundle, "_cache", None), dict) else None
    if idx is None:
        idx = {c["case_id"]: i for i, c in enumerate(bundle.cases)}
        if isinstance(getattr(bundle, "_cache", None), dict):
            bundle._cache["case_rows"] = idx
    return idx


def _matches(res, i: int, bundle) -> str:
    wf = getattr(bundle, "waveforms", None) if bundle is not None else None
    rows = _case_index(bundle) if wf is not None else {}
    out = []
    for r, m in enumerate(res.matches, 1):
        j = rows.get(m.case_id) if m.source == "bundle" else None
        if wf is not None and j is not None:
            pic = case_svg(wf.median(j), wf.strip(j), wf.fs, f"q{i}m{r}")
        else:
            why = "local case: no waveform" if m.source == "overlay" else "no waveform in this bundle"
            pic = (
                f'<svg xmlns="http://www.w3.org/2000/svg" class="case-ecg none" viewBox="0 0 59.5 12" width="59.5mm" '
                f'height="12mm"><rect width="59.5" height="12" fill="#fafafa" stroke="#ddd" stroke-width="0.1"/>'
                f'<text x="29.75" y="7" font-size="2.8" fill="#777" text-anchor="middle">{why}</text></svg>'
            )
        codes = [_describe(x) for x in (*m.rhythm, *m.super_class, *[s for s in m.sub_class if s not in m.super_class])]
        cls = ' class="local"' if m.source == "overlay" else ""
        text = m.statements if not m.report else (f"{m.statements}. Report: {m.report}" if m.statements else m.report)
        out.append(
            f'<div class="case">{pic}<div class="txt"><div class="hd">{r}. <span{cls}>{_e(m.case_id)}'
            f"{' [local]' if m.source == 'overlay' else ''}</span> · similarity {m.score:.3f} · "
            f'{_e(", ".join(codes)) or "no labels"}</div><div class="st">{_e(text)}</div></div></div>'
        )
    if not out:
        return "<p>No similar case was retrieved.</p>"
    note = (
        f"case ECGs: archive {_e(wf.source)} ({_e(wf.units)}, no mV), 12 median beats (I-aVF over V1-V6) and "
        f"10 s of lead II"
        if wf is not None
        else "no waveform in this bundle"
    )
    return (
        f'<h2>Similar past cases <span class="note">ranked; similarity = ECG similarity; {note}</span></h2>'
        '<div class="cases">' + "".join(out) + "</div>"
    )


def _section(res, i: int, bundle=None, head: str = "") -> str:
    out = [
        f'<section class="query" id="q{i}">',
        '<p class="notice">Similar past cases, not a diagnosis: a clinician reads this ECG and these cases.</p>',
        f'<h1>Query {i}: {_e(res.query)}<span class="meta">{head}</span></h1>',
        _patient_line(res),
    ]
    ans = ['<div class="answer">']
    m = getattr(res, "measurements", None)
    if m is not None:
        why = f' <span class="note">({_e("; ".join(m.findings))})</span>' if m.findings else ""
        ans.append(f'<p><span class="lead">Measured: {_e(_measurement_line(m))}</span>{why}</p>')
    rh = getattr(res, "rhythm", None)
    if rh is not None:
        ans.append(
            f"<p><b>Rhythm: {_e(rh.name)}</b> [{_e(rh.label)}] ({_e(rh.basis)})"
            + (f' <span class="note">{_e(rh.note)}</span>' if rh.note else "")
            + "</p>"
        )
    ans.append(f'<p class="similar">{" · ".join(_e(x) for x in _plain_lines(res.consensus))}</p>')
    ans.append("</div>")
    out.append("".join(ans))
    fig, _ = _ecg(res, f"q{i}")
    out.append(fig)
    out.append(_quality(res))
    out.append(_matches(res, i, bundle))
    out.append("</section>")
    return "\n".join(x for x in out if x)


def render_report(results, bundle=None) -> str:
    """The HTML page (a string) for a list of :class:`~edge.pipeline.QueryResult`; ``bundle`` (the
    :class:`~edge.bundle.Bundle` that answered) names the archive and gives the cases' waveforms."""
    from .answer import stamp, stamp_line

    st = stamp(bundle)
    head = _e(stamp_line(st)) + (f"; bundle {_e(bundle.name)}, {len(bundle.cases)} archived cases" if bundle else "")
    body = [_section(r, i, bundle, head) for i, r in enumerate(results, 1)]
    if not results:
        body = [
            '<section class="query"><p class="notice">Similar past cases, not a diagnosis.</p>'
            f'<p class="meta">{head}</p><p class="warn">No query could be answered.</p></section>'
        ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>ecgret report</title><style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(path, results, bundle=None) -> Path:
    """Write the page atomically and safely (:func:`edge.atomicio.atomic_write`: an O_EXCL temp file in the
    report's folder, fsync, rename). A report that cannot be written is an :class:`OSError` naming ``path``."""
    from .atomicio import atomic_write

    p = Path(path)
    page = render_report(results, bundle)
    try:
        atomic_write(p, page)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write the report ({e.strerror or e})", str(p)) from None
    return p
