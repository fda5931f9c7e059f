"""Fixtures: the shipped default bundle (int8 TFLite student, 1,625 real PTB-XL cases), as a device runs it:
no TensorFlow, nothing trained for the tests. Tests that tamper take a private unsigned copy (``bundle_copy``),
tests of bundles without waveforms the ``plain_bundle``. Import the fixtures in a test module
(``from tests.fixtures_bundle import test_bundle, ecgret_env``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge.paths import repo_root


@pytest.fixture(scope="session")
def test_bundle() -> Path:
    """The shipped default bundle (what a device runs; no TensorFlow needed), read-only: copy it
    (``bundle_copy``) to tamper."""
    from edge.bundle import default_bundle_path

    return default_bundle_path()


def strip_waveforms(src: Path, dst: Path) -> Path:
    """Copy the bundle ``src`` to ``dst`` without its ``waveforms.bin`` (a bundle from before waveforms existed),
    unsigned."""
    import json

    shutil.copytree(src, dst)
    (dst / "signature.json").unlink(missing_ok=True)
    (dst / "waveforms.bin").unlink(missing_ok=True)
    m = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
    m["files"].pop("waveforms.bin", None)
    m.pop("waveforms", None)
    (dst / "manifest.json").write_text(json.dumps(m, indent=1) + "\n", encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def plain_bundle(test_bundle, tmp_path_factory) -> Path:
    """The shipped bundle without its waveforms (read-only; unsigned: run with ``ECGRET_ALLOW_UNSIGNED=1``)."""
    return strip_waveforms(test_bundle, tmp_path_factory.mktemp("plain") / "bundle")


@pytest.fixture
def bundle_copy(test_bundle, tmp_path) -> Path:
    """A private copy of the shipped bundle that a test may tamper with; unsigned (its signature would refuse
    any change first), so a test sees the check it aims at (``ecgret_env`` allows unsigned bundles)."""
    dst = tmp_path / "bundle"
    shutil.copytree(test_bundle, dst)
    (dst / "signature.json").unlink(missing_ok=True)
    return dst


@pytest.fixture
def ecgret_env(test_bundle, tmp_path) -> dict:
    """Environment for running ``ecgret`` in a subprocess: the test bundle, a private ECGRET_HOME, and
    ECGRET_ALLOW_UNSIGNED=1 (the test bundle is not signed; tests/test_bundle_security.py checks the policy)."""
    home = tmp_path / "ecgret-home"
    return dict(os.environ, ECGRET_BUNDLE=str(test_bundle), ECGRET_HOME=str(home), PYTHONPATH=str(repo_root()),
                TF_CPP_MIN_LOG_LEVEL="3", ECGRET_ALLOW_UNSIGNED="1")


def run_ecgret(args, env, timeout=120, **kw) -> subprocess.CompletedProcess:
    """``python -m edge.cli ARGS`` in a subprocess (the installed console script may not be on PATH)."""
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=repo_root(), **kw)
