"""The one rule for tests that need ``../shared/data``: missing data is a failure (CI must not go green by
skipping), unless ``ECGRET_TESTS_WITHOUT_DATA=1`` says this machine deliberately has none; then they skip."""
from __future__ import annotations

import os

import pytest

ENV = "ECGRET_TESTS_WITHOUT_DATA"


def missing_data(what: str) -> None:
    """Fail (or, with ``$ECGRET_TESTS_WITHOUT_DATA=1``, skip) the calling test: ``what`` is not there."""
    msg = f"{what} (set ECGRET_DATA, or {ENV}=1 to skip the tests that need the shared data)"
    if os.environ.get(ENV) == "1":
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)
