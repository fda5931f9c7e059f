"""Where things live: the repository root, the shared (read-only) data directory, and the sample recordings
shipped inside the package (``edge/samples/``, CC BY 4.0 CinC 2021 records; see its README.md)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "shared_data_dir", "samples_dir", "sample_records", "default_record", "DEFAULT_SAMPLE"]

# The recording `ecgret demo` and `ecgret simulate` stream by default: Georgia E07506 (sinus rhythm), a CinC 2021
# record that is not in the shipped PTB-XL archive, so the demo never answers with the recording's own twin.
DEFAULT_SAMPLE = "E07506"


def repo_root() -> Path:
    """The repository root (the folder that holds ``edge/``); after a wheel install, site-packages."""
    return Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The shared data directory: ``$ECGRET_DATA`` if set, else ``<repo root>/../shared/data``."""
    env = os.environ.get("ECGRET_DATA")
    if env:
        return Path(env).expanduser()
    return repo_root().parent / "shared" / "data"


def samples_dir() -> Path:
    """The sample recordings shipped in the package (present in a checkout and in an installed wheel)."""
    return Path(__file__).resolve().parent / "samples"


def sample_records() -> list[Path]:
    """The shipped sample records as WFDB record paths (no suffix), sorted by name."""
    return sorted(p.with_suffix("") for p in samples_dir().glob("*.hea") if p.with_suffix(".mat").is_file())


def default_record() -> Path:
    """The record ``demo`` and ``simulate`` stream when no ``--record`` is given (a shipped sample)."""
    return samples_dir() / DEFAULT_SAMPLE
