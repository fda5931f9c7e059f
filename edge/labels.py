"""The PTB-XL label vocabulary: plain names for every code the bundle knows, enrolment labels checked against
it, and which findings a reduced lead set cannot show.

Codes are spelled as the bundles store them: PTB-XL's SCP statement codes and diagnostic subclasses without
their padding underscores (``NST_`` -> ``NST``, ``_AVB`` -> ``AVB``, as :func:`convert.archive.ptbxl_labels`
writes them). Three kinds:

* the 5 diagnostic superclasses (:data:`SUPERCLASSES`),
* the 23 diagnostic subclasses (:data:`SUBCLASSES`, each with its superclass),
* the 71 SCP statements of PTB-XL's ``scp_statements.csv`` (:data:`STATEMENTS`: its description, whether it is
  diagnostic (and then its subclass), a form statement, a rhythm statement).

Plain names are PTB-XL's descriptions put in plain words ("ischemic in inferior leads" -> "ischemia in inferior
leads", "Wolf-Parkinson-White" -> "Wolff-Parkinson-White"); rhythms take the names of
:data:`edge.rhythm.RHYTHM_NAMES`, the names the measured rhythm is given, so one rhythm has one name everywhere.
``tests/test_labels.py`` checks the table against ``../shared/data/ptbxl-subset/scp_statements.csv``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import ConfigError
from .leads import LEADS12
from .rhythm import RHYTHM_NAMES

__all__ = [
    "SUPERCLASSES",
    "SUBCLASSES",
    "STATEMENTS",
    "Statement",
    "plain_name",
    "describe",
    "parse_labels",
    "LabelError",
    "not_shown",
    "derived_leads",
]

SUPERCLASSES: dict[str, str] = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}

# subclass -> (superclass, plain name)
SUBCLASSES: dict[str, tuple[str, str]] = {
    "NORM": ("NORM", "normal ECG"),
    "STTC": ("STTC", "ST/T change"),
    "NST": ("STTC", "non-specific ST changes"),
    "ISC": ("STTC", "non-specific ischemia"),
    "ISCA": ("STTC", "ischemia in anterior or lateral leads"),
    "ISCI": ("STTC", "ischemia in inferior or inferolateral leads"),
    "AMI": ("MI", "anterior myocardial infarction"),
    "IMI": ("MI", "inferior myocardial infarction"),
    "LMI": ("MI", "lateral myocardial infarction"),
    "PMI": ("MI", "posterior myocardial infarction"),
    "LAFB/LPFB": ("CD", "left anterior or posterior fascicular block"),
    "IRBBB": ("CD", "incomplete right bundle branch block"),
    "CRBBB": ("CD", "complete right bundle branch block"),
    "ILBBB": ("CD", "incomplete left bundle branch block"),
    "CLBBB": ("CD", "complete left bundle branch block"),
    "AVB": ("CD", "atrioventricular block"),
    "IVCD": ("CD", "non-specific intraventricular conduction disturbance"),
    "WPW": ("CD", "Wolff-Parkinson-White syndrome"),
    "LVH": ("HYP", "left ventricular hypertrophy"),
    "RVH": ("HYP", "right ventricular hypertrophy"),
    "LAO/LAE": ("HYP", "left atrial overload or enlargement"),
    "RAO/RAE": ("HYP", "right atrial overload or enlargement"),
    "SEHYP": ("HYP", "septal hypertrophy"),
}


@dataclass(frozen=True)
class Statement:
    """One SCP statement: its code (no padding underscores), PTB-XL's description, the plain name, the kind
    flags and, for a diagnostic statement, its subclass."""

    code: str
    description: str
    name: str
    diagnostic: bool
    form: bool
    rhythm: bool
    subclass: str | None = None

    @property
    def superclass(self) -> str | None:
        """The diagnostic superclass of a diagnostic statement (through its subclass), else None."""
        return SUBCLASSES[self.subclass][0] if self.subclass else None


def _s(code: str, description: str, kind: str, subclass: str | None = None, form: bool = False) -> Statement:
    return Statement(
        code, description, _NAMES.get(code, description), kind == "d", form or kind == "f", kind == "r", subclass
    )


# The plain name where it differs from PTB-XL's description (rhythms take edge.rhythm.RHYTHM_NAMES'):
_NAMES = {
    "DIG": "digitalis effect",
    "LNGQT": "long QT interval",
    "ISC": "non-specific ischemia",
    "1AVB": "first degree atrioventricular block",
    "IVCD": "non-specific intraventricular conduction disturbance",
    "ISCAL": "ischemia in anterolateral leads",
    "LAO/LAE": "left atrial overload or enlargement",
    "ISCIN": "ischemia in inferior leads",
    "ISCIL": "ischemia in inferolateral leads",
    "ISCAS": "ischemia in anteroseptal leads",
    "ISCLA": "ischemia in lateral leads",
    "ANEUR": "ST/T changes compatible with a ventricular aneurysm",
    "RAO/RAE": "right atrial overload or enlargement",
    "EL": "electrolyte disturbance or drug effect",
    "WPW": "Wolff-Parkinson-White syndrome",
    "ISCAN": "ischemia in anterior leads",
    "3AVB": "third degree atrioventricular block",
    "2AVB": "second degree atrioventricular block",
    "PVC": "ventricular premature beats",
    "VCLVH": "QRS voltage criteria for left ventricular hypertrophy",
    "LOWT": "low T waves",
    "NT": "non-specific T wave changes",
    "PAC": "atrial premature beats",
    "INVT": "inverted T waves",
    "LVOLT": "low QRS voltage",
    "TAB": "T wave abnormality",
    "PRC(S)": "premature beats",
}

# (code, PTB-XL description, kind d/f/r, subclass, also a form statement)
_TABLE = (
    _s("NDT", "non-diagnostic T abnormalities", "d", "STTC", True),
    _s("NST", "non-specific ST changes", "d", "NST", True),
    _s("DIG", "digitalis-effect", "d", "STTC", True),
    _s("LNGQT", "long QT-interval", "d", "STTC", True),
    _s("NORM", "normal ECG", "d", "NORM"),
    _s("IMI", "inferior myocardial infarction", "d", "IMI"),
    _s("ASMI", "anteroseptal myocardial infarction", "d", "AMI"),
    _s("LVH", "left ventricular hypertrophy", "d", "LVH"),
    _s("LAFB", "left anterior fascicular block", "d", "LAFB/LPFB"),
    _s("ISC", "non-specific ischemic", "d", "ISC"),
    _s("IRBBB", "incomplete right bundle branch block", "d", "IRBBB"),
    _s("1AVB", "first degree AV block", "d", "AVB"),
    _s("IVCD", "non-specific intraventricular conduction disturbance (block)", "d", "IVCD"),
    _s("ISCAL", "ischemic in anterolateral leads", "d", "ISCA"),
    _s("CRBBB", "complete right bundle branch block", "d", "CRBBB"),
    _s("CLBBB", "complete left bundle branch block", "d", "CLBBB"),
    _s("ILMI", "inferolateral myocardial infarction", "d", "IMI"),
    _s("LAO/LAE", "left atrial overload/enlargement", "d", "LAO/LAE"),
    _s("AMI", "anterior myocardial infarction", "d", "AMI"),
    _s("ALMI", "anterolateral myocardial infarction", "d", "AMI"),
    _s("ISCIN", "ischemic in inferior leads", "d", "ISCI"),
    _s("INJAS", "subendocardial injury in anteroseptal leads", "d", "AMI"),
    _s("LMI", "lateral myocardial infarction", "d", "LMI"),
    _s("ISCIL", "ischemic in inferolateral leads", "d", "ISCI"),
    _s("LPFB", "left posterior fascicular block", "d", "LAFB/LPFB"),
    _s("ISCAS", "ischemic in anteroseptal leads", "d", "ISCA"),
    _s("INJAL", "subendocardial injury in anterolateral leads", "d", "AMI"),
    _s("ISCLA", "ischemic in lateral leads", "d", "ISCA"),
    _s("RVH", "right ventricular hypertrophy", "d", "RVH"),
    _s("ANEUR", "ST-T changes compatible with ventricular aneurysm", "d", "STTC"),
    _s("RAO/RAE", "right atrial overload/enlargement", "d", "RAO/RAE"),
    _s("EL", "electrolytic disturbance or drug (former EDIS)", "d", "STTC"),
    _s("WPW", "Wolf-Parkinson-White syndrome", "d", "WPW"),
    _s("ILBBB", "incomplete left bundle branch block", "d", "ILBBB"),
    _s("IPLMI", "inferoposterolateral myocardial infarction", "d", "IMI"),
    _s("ISCAN", "ischemic in anterior leads", "d", "ISCA"),
    _s("IPMI", "inferoposterior myocardial infarction", "d", "IMI"),
    _s("SEHYP", "septal hypertrophy", "d", "SEHYP"),
    _s("INJIN", "subendocardial injury in inferior leads", "d", "IMI"),
    _s("INJLA", "subendocardial injury in lateral leads", "d", "AMI"),
    _s("PMI", "posterior myocardial infarction", "d", "PMI"),
    _s("3AVB", "third degree AV block", "d", "AVB"),
    _s("INJIL", "subendocardial injury in inferolateral leads", "d", "IMI"),
    _s("2AVB", "second degree AV block", "d", "AVB"),
    _s("ABQRS", "abnormal QRS", "f"),
    _s("PVC", "ventricular premature complex", "f"),
    _s("STD", "non-specific ST depression", "f"),
    _s("VCLVH", "voltage criteria (QRS) for left ventricular hypertrophy", "f"),
    _s("QWAVE", "Q waves present", "f"),
    _s("LOWT", "low amplitude T-waves", "f"),
    _s("NT", "non-specific T-wave changes", "f"),
    _s("PAC", "atrial premature complex", "f"),
    _s("LPR", "prolonged PR interval", "f"),
    _s("INVT", "inverted T-waves", "f"),
    _s("LVOLT", "low QRS voltages in the frontal and horizontal leads", "f"),
    _s("HVOLT", "high QRS voltage", "f"),
    _s("TAB", "T-wave abnormality", "f"),
    _s("STE", "non-specific ST elevation", "f"),
    _s("PRC(S)", "premature complex(es)", "f"),
    _s("SR", "sinus rhythm", "r"),
    _s("AFIB", "atrial fibrillation", "r"),
    _s("STACH", "sinus tachycardia", "r"),
    _s("SARRH", "sinus arrhythmia", "r"),
    _s("SBRAD", "sinus bradycardia", "r"),
    _s("PACE", "normal functioning artificial pacemaker", "r"),
    _s("SVARR", "supraventricular arrhythmia", "r"),
    _s("BIGU", "bigeminal pattern (unknown origin, SV or Ventricular)", "r"),
    _s("AFLT", "atrial flutter", "r"),
    _s("SVTAC", "supraventricular tachycardia", "r"),
    _s("PSVT", "paroxysmal supraventricular tachycardia", "r"),
    _s("TRIGU", "trigeminal pattern (unknown origin, SV or Ventricular)", "r"),
)
STATEMENTS: dict[str, Statement] = {
    s.code: (
        s if not s.rhythm else Statement(s.code, s.description, RHYTHM_NAMES.get(s.code, s.name), False, False, True)
    )
    for s in _TABLE
}


def plain_name(code: str) -> str:
    """The plain words for a code (superclass, subclass, SCP statement); an unknown code is returned as is."""
    c = str(code)
    if c in SUPERCLASSES:
        return SUPERCLASSES[c]
    if c in SUBCLASSES:
        return SUBCLASSES[c][1]
    s = STATEMENTS.get(c)
    return s.name if s is not None else c


def describe(code: str) -> str:
    """``"left ventricular hypertrophy [LVH]"``: the plain name, the code in brackets (the code alone when
    it has no name)."""
    n = plain_name(code)
    return f"{n} [{code}]" if n != code else str(code)


# ------------------------------------------------------------------------------------------- enrolment labels


class LabelError(ConfigError):
    """A label that is not a PTB-XL code (the message suggests the nearest ones)."""


def _vocabulary() -> dict[str, str]:
    """Every accepted spelling (exact) -> its code."""
    v = {c: c for c in (*SUPERCLASSES, *SUBCLASSES, *STATEMENTS)}
    for raw in ("NST_", "ISC_", "STD_", "NT_", "TAB_", "STE_", "_AVB"):  # PTB-XL's own spellings
        v[raw] = raw.strip("_")
    return v


_VOCAB = _vocabulary()


def _by_folded() -> dict[str, set[str]]:
    """Case-folded spelling or plain name -> the codes it may mean (more than one: ambiguous)."""
    out: dict[str, set[str]] = {}
    for spelling, code in _VOCAB.items():
        out.setdefault(spelling.casefold(), set()).add(code)
    for code in _VOCAB.values():
        out.setdefault(plain_name(code).casefold(), set()).add(code)
        s = STATEMENTS.get(code)
        if s is not None:
            out.setdefault(s.description.casefold(), set()).add(code)
    return out


_FOLDED = _by_folded()


def resolve(label: str) -> str:
    """The code a ``--labels`` entry means: an exact code, else a case-insensitive code, PTB-XL spelling or
    plain name that means exactly one code. Anything else raises :class:`LabelError` with suggestions."""
    lab = " ".join(str(label).split())
    if lab in _VOCAB:
        return _VOCAB[lab]
    codes = _FOLDED.get(lab.casefold(), set())
    if len(codes) == 1:
        return next(iter(codes))
    if len(codes) > 1:
        raise LabelError(f"label {lab!r} is ambiguous: it may mean {', '.join(sorted(codes))}; give the code")
    near = difflib.get_close_matches(lab.upper(), sorted(set(_VOCAB.values())), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    raise LabelError(
        f"label {lab!r} is not a PTB-XL code{hint} (superclasses {', '.join(SUPERCLASSES)}; "
        f"subclasses such as IMI, LVH, CRBBB; statements such as ASMI, 1AVB; rhythms such as SR, "
        f"AFIB, SBRAD: `ecgret cases codes` lists them all)"
    )


def parse_labels(spec: str | None) -> dict:
    """``--labels "IMI,sr,PVC"`` -> ``{"super_class", "sub_class", "form", "rhythm", "statements"}``, filled as
    :func:`convert.archive.ptbxl_labels` fills an archive case: a subclass brings its superclass, a diagnostic
    statement its subclass and superclass, a form or rhythm statement its own list; ``statements`` is the
    PTB-XL descriptions joined by ``"; "`` (rhythm first, then diagnostic, then form, each in the given order;
    the lists sorted, as in the archive). Every entry must be a
    code (:func:`resolve`); one that is not raises :class:`LabelError` naming it."""
    sup: list[str] = []
    sub: list[str] = []
    form: list[str] = []
    rhythm: list[str] = []
    desc: dict[str, list[str]] = {"r": [], "d": [], "f": []}

    def add(lst, x):
        if x and x not in lst:
            lst.append(x)

    for part in (spec or "").replace(";", ",").split(","):
        if not part.strip():
            continue
        code = resolve(part)
        if code in SUPERCLASSES and code != "NORM":
            add(sup, code)
            continue
        st = STATEMENTS.get(code)
        subclass = code if code in SUBCLASSES else (st.subclass if st is not None else None)
        if subclass:
            add(sub, subclass)
            add(sup, SUBCLASSES[subclass][0])
        if st is not None:
            if st.form:
                add(form, code)
            if st.rhythm:
                add(rhythm, code)
            add(desc["r" if st.rhythm else "d" if st.diagnostic else "f"], st.description)
        elif subclass:
            add(desc["d"], SUBCLASSES[subclass][1])
    return {
        "super_class": sorted(sup),
        "sub_class": sorted(sub),
        "form": sorted(form),
        "rhythm": sorted(rhythm),
        "statements": "; ".join(desc["r"] + desc["d"] + desc["f"]),
    }


def all_codes() -> list[tuple[str, str, str]]:
    """(code, kind, plain name) of every code, kinds ``superclass``, ``subclass``, ``statement``, ``rhythm``."""
    out = [(c, "superclass", n) for c, n in SUPERCLASSES.items()]
    out += [(c, f"subclass of {s}", n) for c, (s, n) in SUBCLASSES.items()]
    for s in STATEMENTS.values():
        kind = "rhythm" if s.rhythm else (f"statement ({s.subclass})" if s.diagnostic else "form statement")
        out.append((s.code, kind, s.name))
    return out


# ------------------------------------------------------------------------------------------- lead sets

_INFERIOR = ("II", "III", "aVF")
_LATERAL = ("I", "aVL", "V5", "V6")
_ANTERIOR = ("V1", "V2", "V3", "V4")

# what a finding is read from: every clause (leads, k) must have at least k of its leads present. A finding
# not listed (rhythms, AV block, non-specific ST/T changes) can be seen on any one lead.
_NEEDS: dict[str, tuple[tuple[tuple[str, ...], int], ...]] = {
    "NORM": ((LEADS12, 12),),  # a normal ECG is a statement about all 12 leads
    "IMI": ((_INFERIOR, 2),),
    "ISCI": ((_INFERIOR, 2),),  # two contiguous leads of a territory
    "AMI": ((_ANTERIOR, 2),),
    "LMI": ((_LATERAL, 2),),
    "PMI": ((("V1", "V2", "V3"), 2),),
    "ISCA": ((_ANTERIOR + _LATERAL, 2),),
    "CRBBB": ((("V1", "V2"), 1), (("I", "V5", "V6"), 1)),
    "IRBBB": ((("V1", "V2"), 1), (("I", "V5", "V6"), 1)),
    "CLBBB": ((("V1", "V2"), 1), (("I", "aVL", "V5", "V6"), 1)),
    "ILBBB": ((("V1", "V2"), 1), (("I", "aVL", "V5", "V6"), 1)),
    "LAFB/LPFB": ((("I",), 1), (("aVF",), 1)),  # the frontal axis
    "LVH": ((("V1", "V2"), 1), (("V5", "V6"), 1)),
    "RVH": ((("V1",), 1), (("V5", "V6"), 1)),
    "SEHYP": ((("V1", "V2"), 1),),
    "LAO/LAE": ((("II",), 1), (("V1",), 1)),
    "RAO/RAE": ((("II",), 1), (("V1",), 1)),
    "WPW": ((LEADS12, 2),),
}
# a superclass is shown when one of its subclasses can be
_SUPER_NEEDS = {"MI": ("IMI", "AMI", "LMI", "PMI"), "HYP": ("LVH", "RVH", "SEHYP", "LAO/LAE", "RAO/RAE")}


def derived_leads(leads) -> set[str]:
    """The leads a query holds, with III, aVR, aVL and aVF when I and II are both there (derived)."""
    have = set(leads)
    if {"I", "II"} <= have:
        have |= {"III", "aVR", "aVL", "aVF"}
    return have


def _shown(code: str, have: set[str]) -> bool:
    if code in _SUPER_NEEDS:
        return any(_shown(c, have) for c in _SUPER_NEEDS[code])
    st = STATEMENTS.get(code)
    key = code if code in _NEEDS else (st.subclass if st is not None and st.subclass in _NEEDS else None)
    if key is None:
        return True
    return all(sum(lead in have for lead in leads) >= k for leads, k in _NEEDS[key])


def not_shown(codes, leads) -> list[str]:
    """The ``codes`` that a recording of ``leads`` (usable leads, derived ones included or not) cannot show,
    in the given order: e.g. lead II alone cannot show an inferior infarction (two inferior leads are needed),
    a bundle branch block (V1 and V6) or a normal ECG (all 12 leads)."""
    have = derived_leads(leads)
    return [c for c in dict.fromkeys(codes) if not _shown(c, have)]
