"""Consensus over retrieved cases: a similarity-weighted vote on their labels and statements.

Each retrieved case votes for its diagnostic superclasses and subclasses, its rhythm statements and its
statement phrases (``statements`` split at ``;``) with weight max(similarity, FLOOR). A label's support is the sum
of the weights of the cases that carry it over the sum of all weights (0..1), the same score as the
``kNN_macroAUROC`` metric of docs/EVALUATION.md. Labels with support >= ``LEADING_SUPPORT`` lead the summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

FLOOR = 1e-3
LEADING_SUPPORT = 0.5

__all__ = ["Vote", "Consensus", "vote", "split_statements", "FLOOR", "LEADING_SUPPORT"]


@dataclass(frozen=True)
class Vote:
    """One label's share of the vote: its code (or statement phrase), weighted support and case count."""

    label: str
    support: float  # weighted share of the retrieved cases carrying the label, 0..1
    count: int  # how many retrieved cases carry it

    def to_dict(self, named: bool = False) -> dict:
        """``{"label", "support", "count"}``, and the plain ``name`` of a PTB-XL code when ``named``."""
        d = {"label": self.label, "support": round(self.support, 4), "count": self.count}
        if named:
            from .labels import plain_name

            d["name"] = plain_name(self.label)
        return d


@dataclass(frozen=True)
class Consensus:
    """The votes of ``n_cases`` retrieved cases, per kind of label, each tuple best first (support, then count,
    then label)."""

    super_class: tuple[Vote, ...]
    rhythm: tuple[Vote, ...]
    statements: tuple[Vote, ...]
    n_cases: int
    sub_class: tuple[Vote, ...] = ()

    def leading(self, kind: str, threshold: float = LEADING_SUPPORT) -> tuple[Vote, ...]:
        """Votes of ``kind`` with support >= threshold (the top one alone if none reaches it)."""
        votes = getattr(self, kind)
        lead = tuple(v for v in votes if v.support >= threshold)
        return lead or votes[:1]

    @property
    def summary(self) -> str:
        """The leading superclasses and rhythms in codes: ``"NORM 80%; SR 90%"``."""
        parts = []
        for kind in ("super_class", "rhythm"):
            lead = self.leading(kind)
            if lead:
                parts.append(", ".join(f"{v.label} {v.support:.0%}" for v in lead))
        return "; ".join(parts) if parts else "no consensus (no cases retrieved)"

    def plain_lines(self) -> list[str]:
        """The leading labels in plain words with their codes, one line per number of cases carrying them:
        ``"7 of 10 similar cases: sinus bradycardia [SBRAD], conduction disturbance [CD]"``. Subclasses that
        only repeat their superclass (NORM, STTC) are left out."""
        from .labels import describe

        if not self.n_cases:
            return ["no similar cases were retrieved"]
        by_count: dict[int, list[str]] = {}
        lead = list(self.leading("rhythm")) + list(self.leading("super_class"))
        lead += [v for v in self.sub_class if v.support >= LEADING_SUPPORT and v.label not in ("NORM", "STTC")]
        for v in lead:
            by_count.setdefault(v.count, []).append(describe(v.label))
        return [
            f"{n} of {self.n_cases} similar cases: {', '.join(names)}"
            for n, names in sorted(by_count.items(), key=lambda kv: -kv[0])
        ]

    def to_dict(self) -> dict:
        """The votes with their codes (``label``) and plain names (``name``); ``summary`` in codes,
        ``plain`` the :meth:`plain_lines`."""
        return {
            "summary": self.summary,
            "plain": self.plain_lines(),
            "n_cases": self.n_cases,
            "super_class": [v.to_dict(True) for v in self.super_class],
            "sub_class": [v.to_dict(True) for v in self.sub_class],
            "rhythm": [v.to_dict(True) for v in self.rhythm],
            "statements": [v.to_dict() for v in self.statements],
        }


def split_statements(s: str) -> tuple[str, ...]:
    """A case's ``statements`` text split at ``;`` into stripped, non-empty phrases (None or "" gives ())."""
    return _split(s or "")


@lru_cache(maxsize=8192)
def _split(s: str) -> tuple[str, ...]:
    # an archive's statement texts recur query after query: each is split once
    return tuple(p.strip() for p in s.split(";") if p.strip())


def _tally(labels: Sequence[Iterable[str]], weights: Sequence[float]) -> tuple[Vote, ...]:
    total = float(sum(weights))
    acc: dict[str, list] = {}
    for ls, w in zip(labels, weights):
        for lab in dict.fromkeys(ls):  # each case votes once per label
            a = acc.setdefault(lab, [0.0, 0])
            a[0] += w
            a[1] += 1
    votes = [Vote(lab, (s / total) if total > 0 else 0.0, n) for lab, (s, n) in acc.items()]
    return tuple(sorted(votes, key=lambda v: (-v.support, -v.count, v.label)))


def vote(matches: Sequence, rhythm_only: bool = False) -> Consensus:
    """Consensus of matches (objects or dicts with ``score``, ``super_class``, ``rhythm``, ``statements`` and
    optionally ``sub_class``). ``rhythm_only``: tally the rhythm alone (the other kinds stay empty), what
    :func:`edge.rhythm.ground` reads."""

    def get(m, k, default=None):
        if isinstance(m, dict):
            return m[k] if default is None else m.get(k, default)
        return getattr(m, k) if default is None else getattr(m, k, default)

    w = [max(float(get(m, "score")), FLOOR) for m in matches]
    if rhythm_only:
        return Consensus((), _tally([get(m, "rhythm") for m in matches], w), (), len(matches))
    return Consensus(
        super_class=_tally([get(m, "super_class") for m in matches], w),
        rhythm=_tally([get(m, "rhythm") for m in matches], w),
        statements=_tally([split_statements(get(m, "statements")) for m in matches], w),
        n_cases=len(matches),
        sub_class=_tally([get(m, "sub_class", ()) for m in matches], w),
    )
