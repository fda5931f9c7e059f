"""The recording an enrolled case keeps (``signal`` in ``overlay.json``): the preprocessed leads that were
recorded, float16, base64, with their rate, so that ``ecgret cases reembed`` can embed the case again with
another bundle's encoder; and the correlation that finds the same recording enrolled twice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stored_signal", "decode_signal", "correlation", "MAX_SIGNAL_VALUES"]

MAX_SIGNAL_VALUES = 32 * 10_000  # up to 32 leads x 10,000 samples


def stored_signal(pre) -> dict:
    """The preprocessed recording of an :class:`edge.signal.PreprocessedECG` as the overlay stores it: the
    leads that were recorded (not the derived ones, not the missing ones), float16, base64, with its rate."""
    import base64

    from .leads import LEADS12

    keep = [j for j in range(len(LEADS12)) if pre.present[j] and not pre.derived[j]]
    x = np.ascontiguousarray(pre.signal[: max(int(pre.n_valid), 1), keep], dtype="<f2")
    return {
        "fs": float(pre.fs),
        "leads": [LEADS12[j] for j in keep],
        "dtype": "float16",
        "shape": list(x.shape),
        "data": base64.b64encode(x.tobytes()).decode("ascii"),
    }


def decode_signal(sig: dict) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """(float32 (T, n) signal, rate, lead names) of a stored signal; ValueError when it is malformed."""
    import base64
    import binascii

    from .leads import LEADS12

    if not isinstance(sig, dict):
        raise ValueError("not an object")
    fs, leads, shape, data = sig.get("fs"), sig.get("leads"), sig.get("shape"), sig.get("data")
    if sig.get("dtype") != "float16":
        raise ValueError("dtype must be float16")
    if isinstance(fs, bool) or not isinstance(fs, (int, float)) or not 10 <= fs <= 32000:
        raise ValueError("fs must be a rate in Hz")
    if (
        not isinstance(leads, list)
        or not leads
        or not all(x in LEADS12 for x in leads)
        or len(set(leads)) != len(leads)
    ):
        raise ValueError("leads must be distinct lead names")
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(type(n) is int and n > 0 for n in shape)
        or shape[1] != len(leads)
        or shape[0] * shape[1] > MAX_SIGNAL_VALUES
    ):
        raise ValueError("shape must be [samples, leads]")
    if not isinstance(data, str) or len(data) > 4 * MAX_SIGNAL_VALUES:
        raise ValueError("data must be base64 text")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("data is not base64") from None
    if len(raw) != 2 * shape[0] * shape[1]:
        raise ValueError(f"data holds {len(raw)} bytes, the shape needs {2 * shape[0] * shape[1]}")
    x = np.frombuffer(raw, dtype="<f2").reshape(shape).astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("data holds NaN or Inf")
    return x, float(fs), tuple(leads)


def correlation(a, b) -> float | None:
    """Pearson correlation of two decoded signals over their common leads and samples (None: nothing shared)."""
    (xa, fa, la), (xb, fb, lb) = a, b
    common = [x for x in la if x in lb]
    n = min(len(xa), len(xb))
    if fa != fb or not common or n < 10:
        return None
    u = np.stack([xa[:n, la.index(x)] for x in common]).ravel().astype(np.float64)
    w = np.stack([xb[:n, lb.index(x)] for x in common]).ravel().astype(np.float64)
    u, w = u - u.mean(), w - w.mean()
    den = float(np.sqrt((u @ u) * (w @ w)))
    return float(u @ w / den) if den > 0 else None
