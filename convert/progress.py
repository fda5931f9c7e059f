"""Progress bars on stderr (tqdm, the ``convert`` extra) for the toolkit's long loops."""

from __future__ import annotations

import sys


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "case"):
    """A tqdm bar on stderr that vanishes when done, or None when ``enabled`` is false."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
