"""A self-contained offline HTML page of query results (``--report out.html``): one printed page per query.

No network assets, no script: inline CSS and inline SVG. Each query, in this order: the notice that these are
similar past cases and not a diagnosis; the patient line (id, age, sex, acquisition time, source); the
measurements and the rhythm; "N of 10 similar cases: ..." in plain words with the codes in brackets; the ECG;
the quality findings; the retrieved cases, each with a small ECG of that case when the bundle carries waveforms.

The ECG is drawn as a 12-lead cardiograph prints it, at true scale (:mod:`edge.report_svg`). A record without
physical units (CSV/NPY, or the z-scored archive) is drawn z-scored. Leads the recording lacks are drawn as "not
recorded"; a lead the quality gate rejected is drawn as it is, labelled with the quality finding (so the plot
and the quality section agree).

The print stylesheet lays each query out on one landscape A4 or Letter page (``@page``), at true scale.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np

from .labels import describe
from .leads import LEADS12
from .quality import INFORMATIONAL
from .report_svg import case_svg, ecg_svg, esc

__all__ = ["render_report", "write_report", "physical_units", "refuse_target", "PAGE_HEAD", "MAX_QUERIES"]

_PROBLEMS = ("flat", "clipped", "lead_off", "noisy", "gaps", "lost")
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


def physical_units(meta) -> bool:
    """Whether a record's metadata states physical units (mV, after :mod:`edge.io`'s conversion of uV/V) for
    every signal: WFDB headers do; CSV/NPY files do not (their values are whatever the file holds)."""
    u = meta.get("units") if isinstance(meta, dict) else None
    if isinstance(u, str):
        u = [u]
    return isinstance(u, (list, tuple)) and len(u) > 0 and all(str(x).lower() in _PHYSICAL for x in u)


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


def _patient_line(res) -> str:
    meta = res.meta if isinstance(getattr(res, "meta", None), dict) else {}
    pid = meta.get("record_name") or Path(str(res.query)).stem or str(res.query)
    age = meta.get("age")
    bits = [
        f"<b>{esc(pid)}</b>",
        f"age {age}" if isinstance(age, int) else "age not stated",
        esc(meta["sex"]) if meta.get("sex") in ("male", "female") else "sex not stated",
        f"acquired {esc(meta['acquired'])}" if meta.get("acquired") else "acquisition time not in the file",
    ]
    fmt = meta.get("format")
    src = meta.get("path") or res.query
    bits.append(f"source: {esc(fmt.upper() + ' ') if isinstance(fmt, str) else ''}{esc(src)}")
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
        cls = "" if f.kind in INFORMATIONAL else ' class="warn"'
        what = "not recorded" if f.kind == "missing" else f.kind.replace("_", " ")
        items.append(f"<span{cls}>{esc(f.lead)}: <b>{esc(what)}</b> ({esc(f.detail)})</span>")
    head = f"{len(q.usable_leads)} of 12 leads usable: {esc(', '.join(q.usable_leads))}."
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
        codes = [describe(x) for x in (*m.rhythm, *m.super_class, *[s for s in m.sub_class if s not in m.super_class])]
        cls = ' class="local"' if m.source == "overlay" else ""
        text = m.statements if not m.report else (f"{m.statements}. Report: {m.report}" if m.statements else m.report)
        out.append(
            f'<div class="case">{pic}<div class="txt"><div class="hd">{r}. <span{cls}>{esc(m.case_id)}'
            f"{' [local]' if m.source == 'overlay' else ''}</span> · similarity {m.score:.3f} · "
            f'{esc(", ".join(codes)) or "no labels"}</div><div class="st">{esc(text)}</div></div></div>'
        )
    if not out:
        return "<p>No similar case was retrieved.</p>"
    note = (
        f"case ECGs: archive {esc(wf.source)} ({esc(wf.units)}, no mV), 12 median beats (I-aVF over V1-V6) and "
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
        f'<h1>Query {i}: {esc(res.query)}<span class="meta">{head}</span></h1>',
        _patient_line(res),
    ]
    ans = ['<div class="answer">']
    m = getattr(res, "measurements", None)
    if m is not None:
        why = f' <span class="note">({esc("; ".join(m.findings))})</span>' if m.findings else ""
        ans.append(f'<p><span class="lead">Measured: {esc(_measurement_line(m))}</span>{why}</p>')
    rh = getattr(res, "rhythm", None)
    if rh is not None:
        ans.append(
            f"<p><b>Rhythm: {esc(rh.name)}</b> [{esc(rh.label)}] ({esc(rh.basis)})"
            + (f' <span class="note">{esc(rh.note)}</span>' if rh.note else "")
            + "</p>"
        )
    ans.append(f'<p class="similar">{" · ".join(esc(x) for x in res.consensus.plain_lines())}</p>')
    ans.append("</div>")
    out.append("".join(ans))
    fig, _ = _ecg(res, f"q{i}")
    out.append(fig)
    out.append(_quality(res))
    out.append(_matches(res, i, bundle))
    out.append("</section>")
    return "\n".join(x for x in out if x)


def render_report(results, bundle=None) -> str:
    """The HTML page (a string) for a list of :class:`~edge.retrieval.QueryResult`; ``bundle`` (the
    :class:`~edge.bundle.Bundle` that answered) names the archive and gives the cases' waveforms."""
    from .answer import stamp, stamp_line

    st = stamp(bundle)
    head = esc(stamp_line(st)) + (f"; bundle {esc(bundle.name)}, {len(bundle.cases)} archived cases" if bundle else "")
    body = [_section(r, i, bundle, head) for i, r in enumerate(results, 1)]
    if not results:
        body = [
            '<section class="query"><p class="notice">Similar past cases, not a diagnosis.</p>'
            f'<p class="meta">{head}</p><p class="warn">No query could be answered.</p></section>'
        ]
    return PAGE_HEAD + f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"


MAX_QUERIES = 200  # queries one page holds (~0.3 MB of memory and ~160 kB of page each): the last ones of a listen
PAGE_HEAD = (  # how every report page begins: what refuse_target recognises as a page it may replace
    "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
    "<meta name='viewport' content='width=device-width, initial-scale=1'><title>ecgret report</title>"
)


def refuse_target(path) -> str | None:
    """Why ``path`` must not be written as a report, or None: a report replaces only a missing file or an earlier
    ecgret report, never a record, another file, a symbolic link, a folder, a device or a FIFO (``--report
    /dev/null`` run as root would replace the device node; ``--report *.hea`` makes the first record the report's
    name): :func:`edge.atomicio.refuse_replacing`."""
    from .atomicio import refuse_replacing

    return refuse_replacing(path, PAGE_HEAD.encode(), "an ecgret report", "report.html")


def write_report(path, results, bundle=None) -> Path:
    """Write the page atomically and safely (:func:`edge.atomicio.atomic_write`: an O_EXCL temp file in the
    report's folder, fsync, rename). A report that cannot be written is an :class:`OSError` naming ``path``."""
    from .atomicio import atomic_write

    p = Path(path)
    why = refuse_target(p)
    if why:  # the CLI checked before any work; this is for every other caller, and a file that appeared since
        raise FileExistsError(errno.EEXIST, f"not written: {why}", str(p))
    page = render_report(results, bundle)
    try:
        atomic_write(p, page)
    except OSError as e:
        raise type(e)(e.errno, f"cannot write the report ({e.strerror or e})", str(p)) from None
    return p
