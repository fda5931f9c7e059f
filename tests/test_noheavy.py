"""The device runtime works with TensorFlow, PyTorch and sentence-transformers blocked from import."""
from __future__ import annotations

import json
import os

from edge.paths import repo_root
from tests.fixtures_bundle import ecgret_env, run_ecgret, test_bundle  # noqa: F401

BLOCKED = ("tensorflow", "torch", "sentence_transformers", "keras", "pandas", "matplotlib", "wfdb")

_SITECUSTOMIZE = '''
import sys

BLOCKED = {blocked!r}


class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test (the device must not need it)")
        return None


sys.meta_path.insert(0, _Block())
'''


def _blocked_env(env, tmp_path):
    d = tmp_path / "block"
    d.mkdir()
    (d / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(blocked=BLOCKED))
    return dict(env, PYTHONPATH=os.pathsep.join([str(d), str(repo_root())]))


def test_query_with_heavy_frameworks_blocked(ecgret_env, shared_data, tmp_path):
    env = _blocked_env(ecgret_env, tmp_path)
    # the blocker works
    p = run_ecgret(["--help"], env)  # importing edge.cli is fine
    assert p.returncode == 0 and "query" in p.stdout
    import subprocess
    import sys
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked in this test" in probe.stderr
    # the whole query path, enroll and info work
    rec = shared_data / "cinc2021-sample" / "HR06005"
    p = run_ecgret(["query", "--json", rec], env)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.splitlines()[0])
    assert res["ok"] and res["matches"][0]["case_id"] == "ptbxl:6005"
    assert run_ecgret(["enroll", rec, "--text", "confirmed normal"], env).returncode == 0
    assert run_ecgret(["info"], env).returncode == 0


def test_edge_modules_import_without_heavy_frameworks(tmp_path):
    env = _blocked_env(dict(os.environ), tmp_path)
    import subprocess
    import sys
    mods = ["edge." + p.stem for p in (repo_root() / "edge").glob("*.py") if p.stem != "__init__"]
    code = ("import importlib, sys\n"
            f"for m in {mods!r}:\n    importlib.import_module(m)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]\n"
            "assert not bad, bad\nprint('ok', len(sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ok")
