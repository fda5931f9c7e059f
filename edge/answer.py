"""The answer to one query as a person reads it (text) and as a program reads it (a JSON object).

Both lead with what was measured and the rhythm of the answer, then say plainly that what follows are similar
past cases, not a diagnosis, then the similar cases' findings in plain words with their PTB-XL codes in brackets
("7 of 10 similar cases: sinus bradycardia [SBRAD]"), what a reduced lead set cannot show, the quality findings,
the table of cases (wrapped to the terminal's width, 80 columns included) and the statements they carry.
Every answer carries the ecgret version, the bundle id and a UTC timestamp (:func:`stamp`).
"""

from __future__ import annotations

import textwrap
import time

from .labels import describe, not_shown, plain_name
from .termtext import printable

__all__ = [
    "NOTICE",
    "TWIN_SCORE",
    "stamp",
    "stamp_line",
    "lead_limits",
    "archive_twin",
    "result_dict",
    "format_result",
    "clip",
    "case_summary",
    "case_lines",
]

NOTICE = (
    "NOT A DIAGNOSIS: these are similar past cases from the archive and what their reports said; "
    "a clinician reads the ECG"
)
TWIN_SCORE = 0.975  # a bundle case this similar, and standing out from the next by TWIN_MARGIN, is the same
TWIN_MARGIN = 0.05  # recording (default bundle: HR06005 -> ptbxl:6005 0.988, next 0.856; the highest of the 47
#                      other CinC sample records is 0.960)


def stamp(bundle) -> dict:
    """``{"ecgret_version", "bundle_id", "utc": "2025-01-31T12:00:00Z"}`` for one result."""
    from . import __version__

    bid = (getattr(bundle, "id", None) or getattr(bundle, "hash", None)) if bundle is not None else None
    return {"ecgret_version": __version__, "bundle_id": bid, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def stamp_line(st: dict) -> str:
    """The stamp as one text line: ``ecgret 0.1.0, bundle 3fa2…, 2025-01-31T12:00:00Z``."""
    bid = st.get("bundle_id") or "?"
    return f"ecgret {st.get('ecgret_version')}, bundle {bid[:16]}, {st.get('utc')}"


def _codes(c) -> list[str]:
    """The codes a consensus puts forward (rhythm, superclasses, subclasses: the leading votes)."""
    return [v.label for kind in ("rhythm", "super_class", "sub_class") for v in c.leading(kind)]


def lead_limits(res) -> dict | None:
    """What the query's usable leads cannot show, or None when all 12 are usable: ``{"leads": usable leads,
    "cannot_show": [codes of the superclasses and subclasses], "similar_cases_cannot_show": [the leading codes
    of the similar cases among them]}``."""
    from .labels import SUBCLASSES, SUPERCLASSES

    usable = list(res.quality.usable_leads)
    if len(usable) >= 12:
        return None
    every = list(SUPERCLASSES) + [c for c in SUBCLASSES if c not in SUPERCLASSES]
    return {
        "leads": usable,
        "cannot_show": not_shown(every, usable),
        "similar_cases_cannot_show": not_shown(_codes(res.consensus), usable),
    }


def archive_twin(res, record_name: str = "", case_ids=()) -> dict | None:
    """The archive case the query is a copy of, or None: a CinC PTB-XL record ``HR0nnnn`` whose ``ptbxl:nnnn``
    is in the archive (``case_ids``), or a bundle case of similarity >= :data:`TWIN_SCORE` that exceeds the next
    case's by :data:`TWIN_MARGIN` (a copy stands out; a bundle whose similarities all crowd near 1 flags
    nothing). Then the answer
    looks better than it would for a new patient, and says so. ``{"case_id", "score", "why"}``."""
    import re

    m = re.fullmatch(r"HR0*(\d+)", str(record_name or "").rsplit("/", 1)[-1].split(".")[0])
    if m and f"ptbxl:{int(m.group(1))}" in set(case_ids):
        cid = f"ptbxl:{int(m.group(1))}"
        hit = next((x for x in res.matches if x.case_id == cid), None)
        return {
            "case_id": cid,
            "score": round(hit.score, 4) if hit else None,
            "why": f"{record_name} is PTB-XL record {int(m.group(1))}, which is in the archive",
        }
    bundle = sorted((x.score for x in res.matches if x.source == "bundle"), reverse=True)
    top = next((x for x in res.matches if x.source == "bundle" and x.score == bundle[0]), None) if bundle else None
    if top is not None and top.score >= TWIN_SCORE and (len(bundle) < 2 or top.score - bundle[1] >= TWIN_MARGIN):
        return {
            "case_id": top.case_id,
            "score": round(top.score, 4),
            "why": f"the most similar archive case is near-identical (similarity {top.score:.3f})",
        }
    return None


def result_dict(res, bundle=None, st: dict | None = None, twin: dict | None = None) -> dict:
    """:meth:`~edge.retrieval.QueryResult.to_dict` plus the plain names (each match's ``names``: code -> plain
    words), ``lead_limits``, ``archive_twin`` and the stamp (``ecgret_version``, ``bundle_id``, ``utc``)."""
    d = res.to_dict()
    for m in d.get("matches", []):
        codes = [*m.get("super_class", []), *m.get("sub_class", []), *m.get("rhythm", [])]
        m["names"] = {c: plain_name(c) for c in codes}
    d["lead_limits"] = lead_limits(res)
    d["archive_twin"] = twin
    d.update(st if st is not None else stamp(bundle))
    return d


def clip(s: str, n: int) -> str:
    """``s`` as one printable line of at most ``n`` characters (``…`` where it was cut)."""
    s = " ".join(printable(s).split())
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


def _wrap(text: str, width: int, max_lines: int | None = None) -> list[str]:
    lines = textwrap.wrap(
        " ".join(printable(text).split()), max(8, width), break_long_words=True, break_on_hyphens=False
    ) or [""]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        lines[-1] = (last if len(last) < width else last[: width - 1]) + "…"
    return lines


def _para(text: str, width: int, indent: str = "", first: str = "") -> list[str]:
    """A paragraph wrapped to ``width``: the first line starts with ``first``, the others with ``indent``."""
    return textwrap.wrap(
        printable(text), max(20, width), initial_indent=first, subsequent_indent=indent, break_on_hyphens=False
    ) or [first.rstrip()]


_ID, _SIM, _DIAG = 16, 10, 22
_FIXED = 4 + 2 + _ID + 1 + _SIM + 2 + _DIAG + 1  # the report column starts here
_MIN_REPORT = 40  # narrower than this: the report goes under its row


def _table(matches, width: int) -> list[str]:
    inline = width - _FIXED >= _MIN_REPORT
    head = f"{'rank':>4}  {'case id':<{_ID}} {'similarity':>{_SIM}}  {'diagnoses':<{_DIAG}}" + (
        " report" if inline else ""
    )
    out = [head.rstrip(), "-" * min(width, max(len(head), 60))]
    for i, m in enumerate(matches, 1):
        diag = " ".join(m.super_class) or "-"
        if m.rhythm:
            diag += " / " + " ".join(m.rhythm)
        cid = m.case_id + (" [local]" if m.source == "overlay" else "")
        ids = _wrap(cid, _ID)
        diags = _wrap(diag, _DIAG)
        text = m.report or m.statements or ""
        reps = _wrap(text, width - _FIXED, 3) if inline else []
        for j in range(max(len(ids), len(diags), len(reps))):
            left = (
                (f"{i:>4}  " if j == 0 else " " * 6)
                + f"{ids[j] if j < len(ids) else '':<{_ID}} "
                + (f"{m.score:>{_SIM}.3f}" if j == 0 else " " * _SIM)
                + f"  {diags[j] if j < len(diags) else '':<{_DIAG}}"
            )
            out.append((left + (" " + reps[j] if j < len(reps) else "")).rstrip())
        if not inline and text:
            out += [" " * 6 + x for x in _wrap(text, width - 6, 3)]
    return out


def _grouped(codes) -> str:
    """Codes by superclass: ``myocardial infarction [MI: AMI, IMI], hypertrophy [HYP: LVH]``."""
    from .labels import SUBCLASSES, SUPERCLASSES

    groups: dict[str, list[str]] = {}
    for c in codes:
        sup = c if c in SUPERCLASSES else SUBCLASSES.get(c, (c, ""))[0]
        groups.setdefault(sup, [])
        if c != sup:
            groups[sup].append(c)
    return ", ".join(
        (f"{plain_name(s)} [{s}" if s in codes else f"some kinds of {plain_name(s)} [")
        + (": " if s in codes and subs else "")
        + ", ".join(subs)
        + "]"
        for s, subs in groups.items()
    )


def format_result(res, *, width: int = 100, st: dict | None = None, twin: dict | None = None) -> str:
    """The human-readable answer to one query, wrapped to ``width`` columns (at least 60)."""
    width = max(60, int(width))
    q = res.quality
    lines = [f"== {res.query}"]
    if st:
        lines.append(stamp_line(st))
    m = getattr(res, "measurements", None)
    if m is not None:
        lines += _para(m.line, width, " " * 10, "measured: ")
        for why in m.findings:
            lines += _para(why, width, "    ", "  - ")
    if getattr(res, "rhythm", None) is not None:
        lines += _para(res.rhythm.line, width, "  ")
    lines += _para(NOTICE, width, "  ")
    if twin:
        lines += _para(
            f"NOTE: {twin['why']}: this recording is probably in the archive itself, so the answer "
            "looks better than it would for a new patient",
            width,
            "  ",
        )
    for ln in res.consensus.plain_lines():
        lines += _para(ln, width, "    ")
    lim = lead_limits(res)
    if lim is not None:
        n = len(lim["leads"])
        leads = ("only lead " if n == 1 else "only leads ") + ", ".join(lim["leads"]) if n else "no lead"
        if lim["similar_cases_cannot_show"]:
            lines += _para(
                f"{leads} usable: these leads cannot show "
                + ", ".join(describe(c) for c in lim["similar_cases_cannot_show"])
                + ", which the similar cases carry: this recording does not confirm them",
                width,
                "  ",
            )
        rest = _grouped([c for c in lim["cannot_show"] if c not in lim["similar_cases_cannot_show"]])
        if rest:
            lines += _para(
                ("nor can they" if lim["similar_cases_cannot_show"] else f"{leads} usable: these leads cannot")
                + " show "
                + rest,
                width,
                "  ",
            )
    usable, problems = q.usable_leads, q.problems
    lines.append(f"quality: {len(usable)} of 12 leads usable" + ("" if problems else ", no problems found"))
    for f in problems:
        lines += _para(str(f), width, "    ", "  ! ")
    by: dict[str, list[str]] = {}
    for f in q.findings:
        if f.kind in ("derived", "missing"):
            by.setdefault(f.kind, []).append(f.lead)
    for kind, names in by.items():
        lines.append(f"  {kind}: {', '.join(names)}")
    lines += [ln for f in q.findings if f.kind == "cropped" for ln in _para(f.detail, width, "    ", "  ")]
    lines += ["", *_table(res.matches, width)]
    if any(a.score < b.score for a, b in zip(res.matches, res.matches[1:])):
        lines += _para(
            "(ranked by ECG similarity and by how alike the measured rhythm is; the similarity column "
            "is the ECG similarity alone)",
            width,
            "   ",
            "  ",
        )
    c = res.consensus
    st_votes = c.leading("statements")
    lines += [""] + _para(f"consensus of {c.n_cases} cases (similarity-weighted): {c.summary}", width, "  ")
    if st_votes:
        lines += _para(
            "statements: " + "; ".join(f"{v.label} ({v.support:.0%})" for v in st_votes[:6]), width, "    ", "  "
        )
    return printable("\n".join(lines), newlines=True)  # case text, file names, lead names: no escapes


# ------------------------------------------------------------------------------------------- enrolled cases


def case_summary(c: dict) -> dict:
    """An enrolled case for ``ecgret cases list --json``: its fields with plain names, the signal described,
    not held."""
    d = {k: v for k, v in c.items() if k != "signal"}
    codes = [*c.get("rhythm", []), *c.get("super_class", []), *c.get("sub_class", []), *c.get("form", [])]
    d["names"] = {x: plain_name(x) for x in codes}
    sig = c.get("signal")
    d["signal"] = (
        {"fs": sig["fs"], "leads": sig["leads"], "seconds": round(sig["shape"][0] / sig["fs"], 2)} if sig else None
    )
    return d


def case_lines(c: dict, width: int) -> list[str]:
    """An enrolled case for ``ecgret cases list``, as printable lines of at most ``width`` columns: its id, when it
    was enrolled and the signal it keeps, then (indented) its labels in plain words and its report."""
    d = case_summary(c)
    sig = d["signal"]
    head = f"{c['case_id']}  enrolled {c.get('enrolled') or '?'}  " + (
        f"signal {', '.join(sig['leads'])} {sig['seconds']:g} s" if sig else "no signal stored (cannot be re-embedded)"
    )
    labels = ", ".join(describe(x) for x in d["names"]) or "no labels"
    body = _wrap(labels, width - 4) + _wrap("report: " + (c.get("report") or ""), width - 4, 2)
    return [printable(head)] + ["    " + line for line in body]
