"""Lead names, their canonical order, and derivation of limb leads (Einthoven/Goldberger)."""

from __future__ import annotations

import numpy as np

__all__ = ["LEADS12", "LEAD_SETS", "canonical_lead", "parse_lead_set", "derive_limb_leads"]

LEADS12: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# LEADS8 (I, II, V1-V6: what an 8-channel board records) is firmware_bridge.info's (edge -> firmware_bridge).

# Named lead sets a query may declare (``--leads``).
LEAD_SETS: dict[str, tuple[str, ...]] = {
    "12": LEADS12,
    "limb6": LEADS12[:6],
    "3": ("I", "II", "V2"),
    "I": ("I",),
    "II": ("II",),
}

_ALIASES = {
    "i": "I",
    "ii": "II",
    "iii": "III",
    "avr": "aVR",
    "avl": "aVL",
    "avf": "aVF",
    "v1": "V1",
    "v2": "V2",
    "v3": "V3",
    "v4": "V4",
    "v5": "V5",
    "v6": "V6",
    "lead i": "I",
    "lead ii": "II",
    "lead iii": "III",
    "mlii": "II",
}


def canonical_lead(name: str) -> str | None:
    """Return the canonical spelling of a lead name (``'avr'`` -> ``'aVR'``), or None if unknown."""
    key = str(name).strip().lower().replace("_", " ").replace("-", " ")
    if key.startswith("lead ") and key not in _ALIASES:
        key = key[5:]
    return _ALIASES.get(key)


def parse_lead_set(spec: str) -> tuple[str, ...]:
    """Parse ``--leads``: a named set (``12``, ``limb6``, ``3``) or a comma list (``I,II,V2``)."""
    if spec in LEAD_SETS:
        return LEAD_SETS[spec]
    from .errors import ConfigError

    out = []
    for part in spec.split(","):
        lead = canonical_lead(part)
        if lead is None:
            raise ConfigError(
                f"unknown lead name {part.strip()!r} in --leads {spec!r}; "
                f"known: {', '.join(LEADS12)} or a set {', '.join(LEAD_SETS)}"
            )
        out.append(lead)
    return tuple(out)


def derive_limb_leads(lead_i: np.ndarray, lead_ii: np.ndarray) -> dict[str, np.ndarray]:
    """Derive III, aVR, aVL, aVF from I and II (Einthoven's law and Goldberger's augmented leads).

    III = II - I; aVR = -(I + II)/2; aVL = I - II/2; aVF = II - I/2.
    """
    i = np.asarray(lead_i, dtype=np.float64)
    ii = np.asarray(lead_ii, dtype=np.float64)
    return {"III": ii - i, "aVR": -(i + ii) / 2.0, "aVL": i - ii / 2.0, "aVF": ii - i / 2.0}
