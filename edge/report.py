"""A self-contained offline HTML page of query results (``--report out.html``).

No network assets: inline CSS, the ECG drawn as inline SVG (12-lead layout: 3 rows x 4 columns of
2.5 s, plus a 10 s lead II rhythm strip, on a 1 mm / 5 mm grid at 25 mm/s, 1 z-unit = 5 mm).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from .leads import LEADS12

__all__ = ["ecg_svg", "render_report", "write_report"]

_GRID = ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11))
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1b1b1b;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #c33;padding-bottom:4px}
.meta{color:#555;font-size:13px} table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top} th{background:#f3f3f3}
td.num{text-align:right;font-variant-numeric:tabular-nums} .bar{display:inline-block;height:10px;background:#c33}
.warn{color:#a40000} .ok{color:#0a6b20} .local{color:#06c;font-weight:600} svg{max-width:100%;height:auto;border:1px solid #e0a0a0}
.note{font-size:12px;color:#666}
.ecgrow{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap} .ecg{flex:3 1 480px;min-width:0}
.meas{flex:1 1 220px;max-width:320px} .meas table{width:100%}
"""


def _path(y: np.ndarray, x0: float, y0: float, px_per_s: float, fs: float, px_per_unit: float) -> str:
    t = x0 + np.arange(y.size) * (px_per_s / fs)
    v = y0 - np.clip(y, -3.0, 3.0) * px_per_unit
    return " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(t, v))


def ecg_svg(signal: np.ndarray, present=None, fs: float = 100.0, mm: float = 4.0) -> str:
    """Inline SVG of a preprocessed ECG (T, 12) at ``fs``: a 3x4 lead grid of 2.5 s and a lead II strip."""
    x = np.asarray(signal, dtype=np.float32)
    present = np.ones(12, bool) if present is None else np.asarray(present, bool)
    col_s = 2.5
    n_col = int(round(col_s * fs))
    px_s = 25 * mm                      # 25 mm/s
    unit = 5 * mm                       # 5 mm per z-unit (standard deviation)
    row_h = 30 * mm
    width = 4 * col_s * px_s
    height = 4 * row_h
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="12-lead ECG">',
             '<defs><pattern id="g1" width="{0}" height="{0}" patternUnits="userSpaceOnUse">'
             '<path d="M {0} 0 L 0 0 0 {0}" fill="none" stroke="#f4c7c7" stroke-width="0.5"/></pattern>'
             '<pattern id="g5" width="{1}" height="{1}" patternUnits="userSpaceOnUse">'
             '<rect width="{1}" height="{1}" fill="url(#g1)"/>'
             '<path d="M {1} 0 L 0 0 0 {1}" fill="none" stroke="#e39a9a" stroke-width="1"/></pattern></defs>'
             .format(mm, 5 * mm),
             f'<rect width="{width:.0f}" height="{height:.0f}" fill="#fff8f8"/>'
             f'<rect width="{width:.0f}" height="{height:.0f}" fill="url(#g5)"/>']
    for r, row in enumerate(_GRID):
        for c, k in enumerate(row):
            x0, y0 = c * col_s * px_s, (r + 0.5) * row_h
            seg = x[c * n_col:(c + 1) * n_col, k]
            label = LEADS12[k] + ("" if present[k] else " (missing)")
            parts.append(f'<text x="{x0 + 4:.0f}" y="{y0 - row_h * 0.3:.0f}" font-size="{3.5 * mm:.0f}" '
                         f'fill="#333">{html.escape(label)}</text>')
            if present[k] and seg.size:
                parts.append(f'<polyline fill="none" stroke="#111" stroke-width="1.3" '
                             f'points="{_path(seg, x0, y0, px_s, fs, unit)}"/>')
            if c:
                parts.append(f'<line x1="{x0:.0f}" y1="{y0 - 2 * unit:.0f}" x2="{x0:.0f}" y2="{y0 + 2 * unit:.0f}" '
                             f'stroke="#111" stroke-width="1"/>')
    y0 = 3.5 * row_h
    k = 1 if present[1] else int(np.argmax(present)) if present.any() else 1
    parts.append(f'<text x="4" y="{y0 - row_h * 0.3:.0f}" font-size="{3.5 * mm:.0f}" fill="#333">'
                 f'{LEADS12[k]} (10 s)</text>')
    if present[k]:
        parts.append(f'<polyline fill="none" stroke="#111" stroke-width="1.3" '
                     f'points="{_path(x[:, k], 0.0, y0, px_s, fs, unit)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _e(s) -> str:
    return html.escape(str(s))


_MEAS_ROWS = (("heart rate", "heart_rate_bpm", "bpm"), ("RR mean", "rr_mean_ms", "ms"), ("RR SD", "rr_sd_ms", "ms"),
              ("irregularity", "irregularity", ""), ("premature beats", "premature_beats", ""), ("PR", "pr_ms", "ms"),
              ("QRS", "qrs_ms", "ms"), ("QT", "qt_ms", "ms"), ("QTc Bazett", "qtc_bazett_ms", "ms"),
              ("QTc Fridericia", "qtc_fridericia_ms", "ms"), ("frontal axis", "axis_deg", "°"), ("beats", "n_beats", ""))


def _measurements(res) -> str:
    """The measurement box beside the ECG: the values, why any is missing, and the rhythm of the answer."""
    m = getattr(res, "measurements", None)
    if m is None:
        return ""
    d = m.to_dict()
    rows = []
    for name, key, unit in _MEAS_ROWS:
        v = d.get(key)
        shown = "—" if v is None else (f"{v:.2f}" if key == "irregularity" else f"{v:.0f}")
        rows.append(f"<tr><td>{_e(name)}</td><td class='num'>{shown} {_e(unit) if v is not None else ''}</td></tr>")
    why = "".join(f"<li>{_e(f)}</li>" for f in m.findings)
    rh = getattr(res, "rhythm", None)
    rline = (f"<p><b>Rhythm: {_e(rh.name)}</b> [{_e(rh.label)}] ({_e(rh.basis)})"
             + (f"<br><span class='note'>{_e(rh.note)}</span>" if rh.note else "") + "</p>") if rh else ""
    return (f'<div class="meas"><h3>Measured</h3>{rline}<table>{"".join(rows)}</table>'
            + (f"<ul class='note'>{why}</ul>" if why else "") + "</div>")


def _section(res, i: int) -> str:
    q = res.quality
    out = [f'<h2 id="q{i}">Query {i}: {_e(res.query)}</h2>']
    ecg = ""
    if res.signal is not None:
        ecg = (ecg_svg(res.signal, q.usable) + '<p class="note">Preprocessed signal (0.5-40 Hz, 100 Hz, z-scored '
               'per lead); 25 mm/s, 5 mm per standard deviation.</p>')
    out.append(f'<div class="ecgrow"><div class="ecg">{ecg}</div>{_measurements(res)}</div>')
    out.append(f"<h3>Signal quality</h3><p>{len(q.usable_leads)} of 12 leads usable: {_e(', '.join(q.usable_leads))}</p>")
    if q.findings:
        out.append("<ul>" + "".join(
            f'<li class="{"warn" if f.kind not in ("derived", "missing") else ""}">{_e(f.lead)}: <b>{_e(f.kind)}</b> '
            f'({_e(f.detail)})</li>' for f in q.findings) + "</ul>")
    else:
        out.append('<p class="ok">No quality problems found.</p>')
    c = res.consensus
    out.append(f"<h3>Consensus</h3><p><b>{_e(c.summary)}</b> "
               f"<span class='note'>(similarity-weighted vote over {c.n_cases} retrieved cases)</span></p>")
    out.append("<table><tr><th>kind</th><th>label</th><th>support</th><th>cases</th></tr>")
    for kind, votes in (("superclass", c.super_class), ("rhythm", c.rhythm), ("statement", c.statements[:8])):
        for v in votes:
            out.append(f"<tr><td>{kind}</td><td>{_e(v.label)}</td><td class='num'>{v.support:.0%} "
                       f"<span class='bar' style='width:{60 * v.support:.0f}px'></span></td>"
                       f"<td class='num'>{v.count}</td></tr>")
    out.append("</table>")
    out.append("<h3>Retrieved cases</h3><table><tr><th>rank</th><th>case</th><th>similarity</th>"
               "<th>superclass</th><th>subclass</th><th>rhythm</th><th>statements</th><th>report</th></tr>")
    for r, m in enumerate(res.matches, 1):
        cls = ' class="local"' if m.source == "overlay" else ""
        out.append(f"<tr><td class='num'>{r}</td><td{cls}>{_e(m.case_id)}</td><td class='num'>{m.score:.3f}</td>"
                   f"<td>{_e(' '.join(m.super_class))}</td><td>{_e(' '.join(m.sub_class))}</td>"
                   f"<td>{_e(' '.join(m.rhythm))}</td><td>{_e(m.statements)}</td><td>{_e(m.report)}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def render_report(results, bundle=None) -> str:
    """The HTML page (a string) for a list of :class:`~edge.pipeline.QueryResult`."""
    import time
    head = f"bundle {_e(bundle.name)} ({_e(bundle.hash)}), {len(bundle.cases)} archived cases" if bundle else ""
    body = [f"<h1>ecgret: similar archived ECG cases</h1><p class='meta'>{head}; generated "
            f"{_e(time.strftime('%Y-%m-%d %H:%M:%S'))}. These are similar past cases, not a diagnosis.</p>"]
    if not results:
        body.append("<p class='warn'>No query could be answered.</p>")
    body += [_section(r, i) for i, r in enumerate(results, 1)]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>ecgret report</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


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
