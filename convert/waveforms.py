"""The cases' compact waveforms in a bundle (``waveforms.bin``), so the report can show each retrieved case's ECG.

Written at bundle build time from the archive signals (PTB-XL: 0.5-40 Hz, 100 Hz, z-scored per lead, so the
waveforms are z-scores, not millivolts, and the report says so). Per case, int8 at ``scale`` z per step:

* ``median_beats`` (n, 12, 100): each lead's sample-wise median beat over the record, the window of the
  imaging ([R - 0.35 s, R + 0.65 s), :func:`edge.peaks.median_beat`, R peaks on lead II as the imaging
  finds them): the shapes a clinician compares;
* ``rhythm_II`` (n, 1000): lead II over the 10 s: the rhythm.

1,625 cases take 3.6 MB (2,200 bytes a case). The file's layout is described by the manifest's ``waveforms``
section and hashed in its ``files`` (``docs/BUNDLE.md``); :mod:`edge.bundle` checks both when the report first
uses them. ``ecgret-convert add-waveforms BUNDLE`` adds (or replaces) them in a built bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_write
from edge.bundle import SIGNATURE_FILE, load_bundle
from edge.bundle_format import MANIFEST_FILE, WAVEFORMS_FILE
from edge.errors import BundleError
from edge.leads import LEADS12
from edge.peaks import AFTER, BEFORE, median_beat, peak_lead, r_peaks

from .ptbxl import open_subset
from .signing import sign_bundle

__all__ = ["SCALE", "case_waveforms", "encode_waveforms", "add_waveforms"]

SCALE = 1.0 / 16.0  # z per int8 step: +-7.9 SD, finer than the screen's pixel at the report's gains
SOURCE = "PTB-XL, 0.5-40 Hz, 100 Hz, z-scored per lead"
_II = LEADS12.index("II")


def case_waveforms(signal: np.ndarray, n_valid: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(median beats (100, 12), lead II (T,)) of one archive signal (T, 12) at 100 Hz, float32."""
    x = np.asarray(signal, dtype=np.float32)
    n = x.shape[0] if n_valid is None else int(n_valid)
    present = np.any(x[:n] != 0, axis=0)
    peaks = r_peaks(x[:n, peak_lead(present)])
    return median_beat(x, peaks, n), x[:, _II].copy()


def encode_waveforms(archive, case_ids, scale: float = SCALE) -> tuple[bytes, dict, dict]:
    """(file bytes, the manifest's ``waveforms`` section, stats) for ``case_ids`` (in index order) from
    ``archive`` (a :class:`convert.archive.Archive`). A case the archive does not hold is an error."""
    ids = list(case_ids)
    have = set(archive.ids)
    missing = [c for c in ids if c not in have]
    if missing:
        raise BundleError(
            f"{len(missing)} bundle cases are not in the archive (e.g. {missing[0]}); pass the archive "
            f"the bundle was built from (--data)"
        )
    if int(archive.fs) != 100:
        raise BundleError(f"the archive is at {archive.fs} Hz; waveforms are written at 100 Hz")
    n, T = len(ids), int(archive.T)
    med = np.zeros((n, 12, BEFORE + AFTER), np.float32)
    strip = np.zeros((n, T), np.float32)
    for i, cid in enumerate(ids):
        j = archive.index_of(cid)
        nv = getattr(archive.cases[j], "n_samples", None)
        mb, s2 = case_waveforms(archive.signal(j), nv if nv else None)
        med[i], strip[i] = mb.T, s2
    q = [np.clip(np.rint(a / scale), -127, 127).astype(np.int8) for a in (med, strip)]
    clipped = float(np.mean([np.mean(np.abs(a / scale) > 127.5) for a in (med, strip)]))
    data = q[0].tobytes() + q[1].tobytes()
    section = {
        "file": WAVEFORMS_FILE,
        "dtype": "int8",
        "scale": float(scale),
        "fs": 100,
        "units": "z-score",
        "source": SOURCE,
        "arrays": {
            "median_beats": {"offset": 0, "shape": list(q[0].shape), "r_index": BEFORE, "leads": list(LEADS12)},
            "rhythm_II": {"offset": q[0].size, "shape": list(q[1].shape), "lead": "II"},
        },
    }
    return data, section, {"cases": n, "bytes": len(data), "clipped_fraction": clipped}


def add_waveforms(bundle_dir, archive=None, scale: float = SCALE, sign_key=None) -> dict:
    """Write ``waveforms.bin`` into the bundle at ``bundle_dir`` and describe it in its manifest (the files
    entry and the ``waveforms`` section; each file replaced atomically). The bundle must load first (an
    unsigned load: it is being changed). Its old signature no longer matches and is removed; with
    ``sign_key`` the bundle is signed again. Returns the stats (cases, bytes, clipped fraction, bundle bytes)."""
    d = Path(bundle_dir)
    b = load_bundle(d, threads=1, ignore_signature=True, check_encoder=False)
    if archive is None:
        archive = open_subset()
    data, section, stats = encode_waveforms(archive, [c["case_id"] for c in b.cases], scale)
    man = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
    atomic_write(d / WAVEFORMS_FILE, data)
    man["files"][WAVEFORMS_FILE] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    man["waveforms"] = section
    if (d / SIGNATURE_FILE).exists():
        os.unlink(d / SIGNATURE_FILE)  # it signs the old manifest: a load would refuse it as tampering
    atomic_write(d / MANIFEST_FILE, (json.dumps(man, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    nb = load_bundle(d, threads=1, allow_unsigned=True, check_encoder=False)  # what a device will check
    if nb.waveforms is None or len(nb.waveforms) != len(nb.cases):
        raise BundleError(f"{d}: the waveforms written do not load back")
    if sign_key:
        sign_bundle(d, sign_key)
    stats["bundle_bytes"] = sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    stats["signed"] = bool(sign_key)
    return stats
