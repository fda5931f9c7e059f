"""Fixtures: a real test bundle (int8 TFLite CNN on the real imaging shape, ~200 real PTB-XL cases).

The bundle is built once by ``python -m tests.bundle_factory`` in a subprocess (TensorFlow stays out of the
test process) and cached on disk under ``$ECGRET_TEST_CACHE`` (default: ``<tmp>/ecgret-test-cache-<uid>``),
keyed by the factory, imaging and bundle code (a change rebuilds it). Import the fixtures in a test module
(``from tests.fixtures_bundle import test_bundle, ecgret_env``) or list this module in the root conftest's
``pytest_plugins``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge.paths import repo_root, shared_data_dir


def _cache_root() -> Path:
    env = os.environ.get("ECGRET_TEST_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"ecgret-test-cache-{os.getuid()}"


def build_or_get_bundle() -> Path:
    from tests.bundle_factory import factory_key
    if not (shared_data_dir() / "ptbxl-subset" / "signals_100hz.npy").exists():
        from tests.shared import missing_data
        missing_data(f"shared data not found at {shared_data_dir()}")
    out = _cache_root() / f"bundle-{factory_key()}"
    if (out / "manifest.json").exists():
        return out
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("building the test bundle needs TensorFlow (pip install -e .[convert])")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(repo_root()))
    p = subprocess.run([sys.executable, "-m", "tests.bundle_factory", str(out)], cwd=repo_root(), env=env,
                       capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"building the test bundle failed:\n{p.stderr[-4000:]}")
    return out


@pytest.fixture(scope="session")
def test_bundle() -> Path:
    """Path of the cached, read-only test bundle. Do not modify it; copy it (``bundle_copy``) to tamper."""
    return build_or_get_bundle()


@pytest.fixture
def bundle_copy(test_bundle, tmp_path) -> Path:
    """A private copy of the test bundle that a test may tamper with."""
    dst = tmp_path / "bundle"
    shutil.copytree(test_bundle, dst)
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
