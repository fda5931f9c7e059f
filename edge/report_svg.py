"""The ECG figures of the report (:mod:`edge.report`), as inline SVG sized in mm (1 user unit = 1 mm).

:func:`ecg_svg` draws a query's ECG as a 12-lead cardiograph prints it: a 1 mm / 5 mm grid, 25 mm/s, 10 mm/mV
with a 1 mV calibration pulse at the start of every row, the 3 x 4 layout (:data:`edge.imaging.GRID`: I, aVR,
V1, V4 / II, aVL, V2, V5 / III, aVF, V3, V6; 2.5 s each, consecutive in time) and a 10 s lead II rhythm strip.
Every trace is clipped to its row (an SVG ``clipPath``), so rows never overlap: when the deflections of the
limb leads (I-aVF, and the rhythm strip) or of the chest leads (V1-V6) do not fit their rows at 10 mm/mV, that
group is drawn at 5 or 2.5 mm/mV, as cardiographs do, and the figure says so ("limb 5 mm/mV, chest 2.5 mm/mV";
the calibration pulse shows both gains as a step, 0.1 s at each); a trace that still leaves its row is named as
clipped. A record without physical units is drawn z-scored, in standard deviations, and the plot says
"z-scored, no mV". :func:`case_svg` draws an archived case small: its median beats and 10 s of lead II.
"""

from __future__ import annotations

import html

import numpy as np

from .imaging import GRID
from .leads import LEADS12
from .termtext import encodable

__all__ = ["ecg_svg", "case_svg", "esc", "mm", "GAINS_MM_PER_MV", "GAINS_MM_PER_SD"]

GAINS_MM_PER_MV = (10.0, 5.0, 2.5)  # the cardiograph's gain steps; the first that fits is used
GAINS_MM_PER_SD = (2.0, 1.0, 0.5)  # the same steps for z-scored records
SPEED = 25.0  # mm/s
ROW_MM = 20.0  # one row of the 3 x 4 grid or the rhythm strip
CAL_MM = 7.5  # the calibration pulse's margin at the left of every row
FOOT_MM = 4.5  # the caption strip at the bottom of the figure


def esc(s) -> str:
    """``str(s)`` escaped for HTML/SVG text and attribute values (quotes included); undecodable bytes of a file
    name become U+FFFD (:func:`edge.termtext.encodable`), so the page encodes."""
    return html.escape(encodable(str(s)))


def mm(v: float) -> str:
    """A length in mm as an SVG number: two decimals at most, trailing zeros dropped (``12.5``, ``3``)."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


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
    cells = [[(k, x[c * n_col : (c + 1) * n_col, k]) for c, k in enumerate(row)] for row in GRID]
    segs = [((s, np.median(s)), k) for row in cells for k, s in row if present[k] and s.size]
    if present[rk]:
        segs.append(((x[:, rk], np.median(x[:, rk])), rk))
    steps = GAINS_MM_PER_MV if mv else GAINS_MM_PER_SD
    gl = _fit_gain([sb for sb, k in segs if k < 6], half, steps)  # limb leads (and a limb rhythm strip)
    gc = _fit_gain([sb for sb, k in segs if k >= 6], half, steps)  # chest leads
    unit = "mV" if mv else "SD"
    gains = f"{mm(gl)} mm/{unit}" if gl == gc else f"limb {mm(gl)} mm/{unit}, chest {mm(gc)} mm/{unit}"
    width = CAL_MM + 10 * SPEED
    height = 4 * ROW_MM + FOOT_MM
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ecg" viewBox="0 0 {mm(width)} {mm(height)}" '
        f'width="{mm(width)}mm" height="{mm(height)}mm" role="img" '
        f'aria-label="12-lead ECG, 25 mm/s, {gains}" font-family="sans-serif">',
        _grid_defs(uid),
    ]
    for r in range(4):
        parts.append(
            f'<clipPath id="{uid}r{r}"><rect x="{mm(CAL_MM)}" y="{mm(r * ROW_MM)}" width="{mm(10 * SPEED)}" '
            f'height="{mm(ROW_MM)}"/></clipPath>'
        )
    parts.append("</defs>")
    parts.append(
        f'<rect width="{mm(width)}" height="{mm(4 * ROW_MM)}" fill="#fff8f8"/>'
        f'<rect width="{mm(width)}" height="{mm(4 * ROW_MM)}" fill="url(#{uid}g5)"/>'
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
        return f'<text x="{mm(x0 + 1)}" y="{mm(r * ROW_MM + 3.2)}" font-size="2.8"{cls}>{esc(text)}</text>'

    for r in range(4):  # calibration pulse: 1 mV (or 1 SD), 0.2 s wide; a step when limb and chest differ
        y0 = (r + 0.5) * ROW_MM + 2.5
        cls = "calibration" if mv else "calibration-sd"
        parts.append(
            f'<path class="{cls}" d="M 0.5 {mm(y0)} H 1.5 V {mm(y0 - gl)} H 4 V {mm(y0 - gc)} H 6.5 '
            f'V {mm(y0)} H 7.5" fill="none" stroke="#111" stroke-width="0.25"/>'
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
                    f'<text class="not-recorded" x="{mm(x0 + 2.5 * SPEED / 2)}" y="{mm((r + 0.5) * ROW_MM + 1)}" '
                    f'font-size="3" fill="#777" text-anchor="middle">not recorded</text>'
                )
            if c:
                parts.append(
                    f'<line x1="{mm(x0)}" y1="{mm((r + 0.5) * ROW_MM - 3)}" x2="{mm(x0)}" '
                    f'y2="{mm((r + 0.5) * ROW_MM + 3)}" stroke="#111" stroke-width="0.25"/>'
                )
    if present[rk]:
        parts.append(trace(x[:, rk], CAL_MM, 3, rk, fs))
        parts.append(label(rk, CAL_MM, 3, " (rhythm, 10 s)"))
    else:
        parts.append(label(rk, CAL_MM, 3, " (rhythm, 10 s)"))
    foot = ["25 mm/s", gains + ("" if gl == gc == steps[0] else " (gain reduced to fit the rows)"), f"{mm(fs)} Hz"]
    if not mv:
        foot.insert(0, "z-scored, no mV")
    if caption:
        foot.append(caption)
    if clipped:
        foot.append("clipped at the row edge: " + ", ".join(dict.fromkeys(clipped)))
    cls = ' class="zscored"' if not mv else ""
    parts.append(
        f'<text{cls} x="0.5" y="{mm(4 * ROW_MM + 3.3)}" font-size="2.8" fill="#222">{esc(" · ".join(foot))}</text>'
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
        f'<svg xmlns="http://www.w3.org/2000/svg" class="case-ecg" viewBox="0 0 {mm(w)} {mm(h)}" '
        f'width="{mm(w)}mm" height="{mm(h)}mm" role="img" aria-label="archived case ECG, z-scored">',
        f'<defs><clipPath id="{uid}c"><rect width="{mm(w)}" height="{mm(h)}"/></clipPath></defs>',
        f'<rect width="{mm(w)}" height="{mm(h)}" fill="#fff8f8" stroke="#e8a3a3" stroke-width="0.1"/>',
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
                    f'<line x1="{mm(c * bw)}" y1="{mm(r * bh + 1)}" x2="{mm(c * bw)}" y2="{mm(r * bh + bh - 1)}" '
                    f'stroke="#e8a3a3" stroke-width="0.1"/>'
                )
        parts.append(
            f'<line x1="0" y1="{mm(bh)}" x2="{mm(6 * bw)}" y2="{mm(bh)}" stroke="#e8a3a3" stroke-width="0.1"/>'
        )
    if strip is not None:
        s = np.asarray(strip, dtype=np.float64)
        s = np.clip(s - np.median(s), -(h / 2 - 0.3) / gain, (h / 2 - 0.3) / gain)
        pts.append(_points(s, fs, 6 * bw + 1.5, h / 2, gain, sw / (s.size / fs)))
    for p in pts:
        parts.append(f'<polyline clip-path="url(#{uid}c)" fill="none" stroke="#111" stroke-width="0.15" points="{p}"/>')
    parts.append("</svg>")
    return "".join(parts)
