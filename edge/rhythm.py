"""The answer's rhythm: what the similar cases say, checked against what was measured.

Retrieval alone answers sinus rhythm at 48 bpm and atrial fibrillation for isolated premature beats; a measurement
settles both. The rules, in order (thresholds below; each is tested in tests/test_rhythm.py):

1. Paced: pacemaker spikes before most QRS complexes -> the rules below name the atrial rhythm, and the note says
   the ventricles are paced (PR, QRS, QT and axis are not measured then). With no P wave before the paced beats
   (P/QRS under ``P_WEAK``) there is no sinus rhythm to name: paced rhythm (or the cases' atrial fibrillation or
   flutter), with a note.
2. Atrial fibrillation (measured): the RR series is irregular (irregularity >= ``IRREGULAR``, computed without the
   premature beats and the intervals after them) and no P wave stands out (P magnitude < ``P_WEAK`` x QRS).
   Irregular with weak P-like waves (under ``P_CLEAR`` x QRS): atrial fibrillation if the similar cases say so
   (confirm on the strip). Irregular with clear P waves: sinus arrhythmia (frequent premature beats look the same
   to the RR series), never atrial fibrillation, whatever the similar cases say (a note says so).
3. Not irregular: atrial fibrillation retrieved is *not* reported ("regular apart from N premature beats"); the
   rhythm is sinus (or atrial flutter, if the cases say so: a regular flutter cannot be told by the RR series).
4. Sinus: the rate names it. Under ``BRADY_SURE`` bpm sinus bradycardia, over ``TACHY_SURE`` sinus tachycardia
   (measured); between ``BRADY_SURE`` and 60, or 100 and ``TACHY_SURE``, the similar cases decide between the
   neighbouring labels; 60-100 bpm is never bradycardia or tachycardia; over ``SINUS_MAX`` bpm the rate names
   nothing (the cases' rhythm, marked retrieved, with a note to confirm it and check the sampling rate). A
   variable but not chaotic RR series
   (RR SD >= ``SARRH_CV`` x mean, at most one premature beat, P waves present) is sinus arrhythmia. A steady
   bigeminy (every other beat premature, the coupled cycles regular) is an irregular sinus rhythm: sinus arrhythmia
   at 60-100 bpm (as LUDB's cardiologists name it), with a note; never atrial fibrillation.
5. Nothing measurable (fewer than three beats): the similar cases' rhythm, marked as not measured.

The answer says where its label comes from (``basis``: measured, retrieved, or both agreeing) and, when the cases
and the measurement disagree, says so in words (``note``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RhythmAnswer",
    "ground",
    "measured_rhythm",
    "as_measurements",
    "RHYTHM_NAMES",
    "IRREGULAR",
    "P_WEAK",
    "P_CLEAR",
    "BRADY_SURE",
    "TACHY_SURE",
]

# Chosen by cross-validation over PTB-XL folds 1-8 (the archive cases' own measurements, 100 Hz; the grid and the
# figures are in the README, "Measurements and the rhythm of the answer"), checked on ludb-dev and CinC.
IRREGULAR = 0.08  # median |successive RR difference| / median RR, premature beats left out
P_WEAK = 0.07  # a P wave under this fraction of the QRS magnitude does not count as atrial activity
P_CLEAR = 0.14  # a P wave over this fraction is clear atrial activity: never atrial fibrillation
BRADY_SURE = 58.0  # bpm
TACHY_SURE = 100.0
SARRH_CV = 0.12
SINUS_MAX = 180.0  # bpm: a regular rhythm faster than this is not named sinus tachycardia from the rate

RHYTHM_NAMES = {
    "SR": "sinus rhythm",
    "SBRAD": "sinus bradycardia",
    "STACH": "sinus tachycardia",
    "SARRH": "sinus arrhythmia",
    "AFIB": "atrial fibrillation",
    "AFLT": "atrial flutter",
    "PACE": "paced rhythm",
    "SVARR": "supraventricular arrhythmia",
    "SVTAC": "supraventricular tachycardia",
    "PSVT": "paroxysmal supraventricular tachycardia",
    "BIGU": "bigeminy",
    "TRIGU": "trigeminy",
}
SINUS = ("SR", "SBRAD", "STACH", "SARRH")


@dataclass(frozen=True)
class RhythmAnswer:
    """The answer's rhythm (:func:`ground`): a PTB-XL rhythm code, where it comes from, what the similar cases
    said, and a note when the two disagree."""

    label: str  # PTB-XL rhythm code
    basis: str  # "measured", "retrieved", "measured and retrieved"
    retrieved: str | None  # the similar cases' leading rhythm code (None if they carry none)
    retrieved_support: float
    note: str = ""  # the contradiction, in words, when there is one

    @property
    def name(self) -> str:
        """The rhythm in plain words (:data:`RHYTHM_NAMES`; the code itself when it has no name there)."""
        return RHYTHM_NAMES.get(self.label, self.label)

    def to_dict(self) -> dict:
        """The answer as a JSON object, with the plain names of ``label`` and ``retrieved``."""
        return {
            "label": self.label,
            "name": self.name,
            "basis": self.basis,
            "retrieved": self.retrieved,
            "retrieved_name": RHYTHM_NAMES.get(self.retrieved, self.retrieved) if self.retrieved else None,
            "retrieved_support": round(self.retrieved_support, 4),
            "note": self.note,
        }

    @property
    def line(self) -> str:
        """One text line: ``rhythm: sinus bradycardia [SBRAD] (measured)``, then the note."""
        s = f"rhythm: {self.name} [{self.label}] ({self.basis})"
        return s + (f"; {self.note}" if self.note else "")


def _support(votes, label: str) -> float:
    return next((v.support for v in votes if v.label == label), 0.0)


def ground(consensus, m) -> RhythmAnswer:
    """The rhythm of the answer from the consensus (``edge.consensus.Consensus``) and the measurements
    (``edge.measure.Measurements``, or None)."""
    votes = tuple(consensus.rhythm) if consensus is not None else ()
    top = votes[0].label if votes else None
    top_s = votes[0].support if votes else 0.0

    def answer(label: str, note: str = "", measured: bool = True) -> RhythmAnswer:
        if not measured:
            basis = "retrieved"
        elif label == top:
            basis = "measured and retrieved"
        else:
            basis = "measured"
        if label != top and top and not note:
            note = (
                f"the similar cases say {RHYTHM_NAMES.get(top, top)} ({top_s:.0%}); "
                f"measured: {RHYTHM_NAMES.get(label, label)}"
            )
        return RhythmAnswer(label, basis, top, top_s, note)

    hr = getattr(m, "heart_rate_bpm", None) if m is not None else None
    p_paced = getattr(m, "p_rel", None) if m is not None and getattr(m, "paced", False) else None
    if p_paced is not None and p_paced < P_WEAK:  # ventricular pacing, and no P wave before the paced beats
        note = (
            "pacemaker spikes before most QRS complexes: ventricular pacing; no P waves before the paced beats: the "
            "atrial rhythm is not sinus (atrial fibrillation or flutter, or atrial standstill?); confirm on the strip"
        )
        if top in ("AFIB", "AFLT"):
            return RhythmAnswer(top, "measured and retrieved", top, top_s, note)
        if top:
            note += f"; the similar cases say {RHYTHM_NAMES.get(top, top)} ({top_s:.0%})"
        return RhythmAnswer("PACE", "measured", top, top_s, note)
    if m is not None and getattr(m, "paced", False):
        a = _unpaced(consensus, m, answer, votes, top, top_s, hr)
        note = "pacemaker spikes before most QRS complexes: ventricular pacing; the atrial rhythm is named"
        return RhythmAnswer(
            a.label, a.basis, a.retrieved, a.retrieved_support, "; ".join(x for x in (note, a.note) if x)
        )
    return _unpaced(consensus, m, answer, votes, top, top_s, hr)


def _unpaced(consensus, m, answer, votes, top, top_s, hr) -> RhythmAnswer:
    if hr is not None and getattr(m, "base_rate_bpm", None):  # a pause does not make a sinus bradycardia
        hr = m.base_rate_bpm
    if hr is None or m.irregularity is None:
        return RhythmAnswer(
            top or "SR",
            "retrieved",
            top,
            top_s,
            "rate and rhythm could not be measured" + ("" if top else "; no rhythm retrieved"),
        )
    p_rel = getattr(m, "p_rel", None)
    p_rel = p_rel if p_rel is not None else 0.0
    irregular = m.irregularity >= IRREGULAR
    afib_s = _support(votes, "AFIB")
    if getattr(m, "bigeminy", False) and p_rel < P_WEAK and (top == "AFIB" or afib_s >= 0.5):
        return answer(  # no P wave before the normal beats: not a sinus rhythm with premature beats
            "AFIB",
            "every other beat is premature (bigeminy) and no P wave is seen: atrial fibrillation with "
            "ventricular bigeminy? confirm on the strip",
        )
    if irregular and p_rel < P_WEAK:
        return answer(
            "AFIB",
            ""
            if top == "AFIB"
            else f"irregular RR series without P waves (irregularity {m.irregularity:.2f}): atrial fibrillation "
            f"(measured), the similar cases say {RHYTHM_NAMES.get(top, top or 'no rhythm')}",
        )
    if irregular:
        if top == "AFIB" and p_rel < P_CLEAR:
            return answer("AFIB", "irregular RR series; P-like waves present: confirm atrial fibrillation on the strip")
        if top == "AFIB" or afib_s >= 0.5:
            return answer(
                "SARRH",
                f"the similar cases say atrial fibrillation, but P waves precede the QRS complexes "
                f"(P/QRS {p_rel:.2f}): an irregular sinus rhythm (premature beats?); confirm on the strip",
            )
        return answer("SARRH")
    note = ""
    if top in ("AFIB",) or afib_s >= 0.5:
        pb = m.premature_beats or 0
        note = (
            "the similar cases say atrial fibrillation, but the RR series is regular"
            + (f" apart from {pb} premature beat{'s' if pb != 1 else ''}" if pb else "")
            + ": not atrial fibrillation"
        )
    if top == "AFLT" and p_rel < P_WEAK:
        return answer("AFLT", note, measured=False)
    if hr > SINUS_MAX:  # too fast to call sinus from the rate alone: the cases' rhythm, said to be unconfirmed
        named = RHYTHM_NAMES.get(top, top) if top else "no rhythm"
        return RhythmAnswer(
            top or "STACH",
            "retrieved",
            top,
            top_s,
            f"measured {hr:.0f} bpm and regular: faster than a sinus tachycardia usually is; the similar cases say "
            f"{named}; confirm on the strip (and check the sampling rate, --fs)",
        )
    rate_label = None
    if hr < BRADY_SURE:
        rate_label = "SBRAD"
    elif hr < 60:
        rate_label = "SBRAD" if top == "SBRAD" else "SR"
    elif hr > TACHY_SURE:
        rate_label = "STACH"
    elif hr > 100:
        rate_label = "STACH" if top == "STACH" else "SR"
    else:
        rate_label = "SR"
    if getattr(m, "bigeminy", False):  # a steady bigeminy (measure._rr_stats): an irregular sinus rhythm
        rate_label = "SARRH" if rate_label == "SR" else rate_label
        note = "; ".join(x for x in (note, "every other beat is premature (bigeminy)") if x)
    elif rate_label == "SR":
        cv = (m.rr_sd_ms or 0.0) / (m.rr_mean_ms or 1.0)
        varied = cv >= SARRH_CV and not getattr(m, "pauses", 0)  # one pause is not a sinus arrhythmia
        if (varied and (m.premature_beats or 0) <= 1 and p_rel >= P_WEAK) or top == "SARRH":
            rate_label = "SARRH"
    if not note and rate_label != top and top in SINUS + ("AFIB",):
        note = (
            f"the similar cases say {RHYTHM_NAMES.get(top, top)} ({top_s:.0%}); measured {hr:.0f} bpm"
            f": {RHYTHM_NAMES[rate_label]}"
        )
    return answer(rate_label, note)


class _M:
    """Attribute view of a measurements dict (``Measurements.to_dict()``, as the bundle's cases carry it)."""

    def __init__(self, d: dict):
        self.__dict__.update(d)
        self.p_rel = d.get("p_wave_ratio")


def as_measurements(m):
    """``m`` itself, or an attribute view of a measurements dict (as the bundle's cases carry them)."""
    return _M(m) if isinstance(m, dict) else m


def measured_rhythm(m) -> str:
    """The rhythm the measurements alone name (rules 1-4 without similar cases); ``m`` an object or its dict."""
    if isinstance(m, dict):
        m = _M(m)
    return ground(None, m).label
