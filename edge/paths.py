"""Where things live: the repository root and the shared (read-only) data directory."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The repository root (the folder that holds ``edge/``)."""
    return Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The shared data directory: ``$ECGRET_DATA`` if set, else ``<repo root>/../shared/data``."""
    env = os.environ.get("ECGRET_DATA")
    if env:
        return Path(env).expanduser()
    return repo_root().parent / "shared" / "data"
