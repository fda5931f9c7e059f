"""Load and verify a model bundle (format: ``docs/BUNDLE.md``). ``convert.bundle`` writes them.

Which bundle: ``--bundle PATH`` or ``$ECGRET_BUNDLE``, else the one shipped in the package
(``edge/bundles/default/``). Loading verifies the format and version, the sha256 of every file, the
encoder's real input/output details against the manifest, the index's metric, dimension and item count
against the manifest and ``cases.jsonl``, and the imaging shape against the encoder input. Every failure
is a :class:`~edge.errors.BundleError` naming the file and the field.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import BundleError

FORMAT = "ecgret-bundle"
FORMAT_VERSION = 1
METRIC = "angular"
ENCODER_FILE = "encoder.tflite"
INDEX_FILE = "index.ann"
CASES_FILE = "cases.jsonl"
MANIFEST_FILE = "manifest.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
BUNDLE_FILES = (ENCODER_FILE, INDEX_FILE, CASES_FILE, MODEL_CARD_FILE)
ENV_VAR = "ECGRET_BUNDLE"

_REQUIRED = ("format", "format_version", "name", "created", "files", "preprocessing", "imaging", "encoder",
             "index", "archive", "training", "tools")
_ENCODER_KEYS = ("input_shape", "input_dtype", "input_scale", "input_zero_point", "output_shape", "output_dtype",
                 "output_scale", "output_zero_point", "embedding_dim", "quantization")
_INDEX_KEYS = ("metric", "dim", "n_items", "n_trees", "search_k", "recall_at_10")
_CASE_LISTS = ("super_class", "sub_class", "form", "rhythm")

__all__ = ["Bundle", "load_bundle", "default_bundle_path", "resolve_bundle_path", "read_manifest",
           "verify_files", "FORMAT", "FORMAT_VERSION"]


def default_bundle_path() -> Path:
    """The bundle shipped in the package: ``edge/bundles/default/``."""
    return Path(__file__).resolve().parent / "bundles" / "default"


def resolve_bundle_path(path=None) -> Path:
    """``path`` if given, else ``$ECGRET_BUNDLE``, else :func:`default_bundle_path`."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return default_bundle_path()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. ``encoder`` and ``index`` are created on first use and kept (one per bundle)."""

    path: Path
    manifest: dict
    cases: tuple[dict, ...]
    threads: int | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def dim(self) -> int:
        return int(self.manifest["index"]["dim"])

    @property
    def search_k(self) -> int:
        return int(self.manifest["index"]["search_k"])

    @property
    def hash(self) -> str:
        """A short identity of the bundle's content: sha256 over the files' sha256 (16 hex digits)."""
        files = self.manifest["files"]
        h = hashlib.sha256("".join(f"{k}:{files[k]['sha256']}\n" for k in sorted(files)).encode())
        return h.hexdigest()[:16]

    @property
    def imaging_config(self):
        from .imaging import ImagingConfig
        im = self.manifest["imaging"]
        return ImagingConfig.from_dict(im)

    @property
    def encoder(self):
        enc = self._cache.get("encoder")
        if enc is None:
            from .encoder import Encoder
            enc = self._cache["encoder"] = Encoder(self.path / ENCODER_FILE, threads=self.threads)
        return enc

    @property
    def index(self):
        idx = self._cache.get("index")
        if idx is None:
            from .index import CaseIndex
            m = self.manifest["index"]
            idx = self._cache["index"] = CaseIndex(self.path / INDEX_FILE, m["dim"], m["metric"], m["search_k"])
        return idx


def _err(where, fld: str, msg: str) -> BundleError:
    return BundleError(f"{where}: {fld}: {msg}")


def read_manifest(path) -> dict:
    """Read and structurally check ``manifest.json`` (format, version, required keys)."""
    mpath = Path(path) / MANIFEST_FILE
    if not Path(path).is_dir():
        raise BundleError(f"{path}: no bundle folder there")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{mpath}: unreadable JSON ({e})") from None
    if not isinstance(m, dict):
        raise _err(mpath, "manifest", "not a JSON object")
    if m.get("format") != FORMAT:
        raise _err(mpath, "format", f"{m.get('format')!r} is not {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION:
        raise _err(mpath, "format_version", f"bundle format version {m.get('format_version')!r}; this ecgret "
                   f"reads version {FORMAT_VERSION} (rebuild the bundle with a matching ecgret-convert)")
    for k in _REQUIRED:
        if k not in m:
            raise _err(mpath, k, "missing")
    for k in _ENCODER_KEYS:
        if k not in m["encoder"]:
            raise _err(mpath, f"encoder.{k}", "missing")
    for k in _INDEX_KEYS:
        if k not in m["index"]:
            raise _err(mpath, f"index.{k}", "missing")
    if not isinstance(m["files"], dict):
        raise _err(mpath, "files", "not an object")
    for fn in BUNDLE_FILES:
        if fn not in m["files"]:
            raise _err(mpath, f"files.{fn}", "missing")
    return m


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(path, manifest: dict) -> None:
    """Every listed file exists, has the listed size and sha256 (a tampered file is refused by name)."""
    d = Path(path)
    for fn, meta in manifest["files"].items():
        if "/" in fn or "\\" in fn or fn.startswith("."):
            raise _err(d / MANIFEST_FILE, f"files.{fn}", "not a plain file name")
        p = d / fn
        if not p.is_file():
            raise _err(p, "file", "missing")
        try:
            size = p.stat().st_size
            if "bytes" in meta and size != meta["bytes"]:
                raise _err(p, "bytes", f"{size} bytes, manifest says {meta['bytes']} (file changed or truncated)")
            if _sha256(p) != meta.get("sha256"):
                raise _err(p, "sha256", "does not match the manifest (file changed or corrupted)")
        except OSError as e:
            raise _err(p, "file", f"unreadable ({e})") from None


def _read_cases(path: Path) -> tuple[dict, ...]:
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                try:
                    c = json.loads(line)
                except ValueError as e:
                    raise _err(path, f"line {i}", f"not JSON ({e})") from None
                if not isinstance(c, dict) or not isinstance(c.get("case_id"), str):
                    raise _err(path, f"line {i}", "no case_id")
                for k in _CASE_LISTS:
                    if not isinstance(c.get(k, []), list):
                        raise _err(path, f"line {i}.{k}", "not a list")
                out.append(c)
    except (OSError, UnicodeDecodeError) as e:
        raise _err(path, "file", f"unreadable ({e})") from None
    return tuple(out)


def _check_encoder(path: Path, want: dict, got: dict) -> None:
    for k in ("input_shape", "input_dtype", "input_zero_point", "output_shape", "output_dtype",
              "output_zero_point", "embedding_dim"):
        if want[k] != got[k]:
            raise _err(path, f"encoder.{k}", f"model has {got[k]!r}, manifest says {want[k]!r}")
    for k in ("input_scale", "output_scale"):
        if not math.isclose(float(want[k]), float(got[k]), rel_tol=1e-6, abs_tol=1e-12):
            raise _err(path, f"encoder.{k}", f"model has {got[k]!r}, manifest says {want[k]!r}")


def load_bundle(path=None, *, threads: int | None = None, check_encoder: bool = True) -> Bundle:
    """Load and verify the bundle at ``path`` (default: :func:`resolve_bundle_path`). The encoder and the
    index are opened here (once) and kept on the returned :class:`Bundle`."""
    d = resolve_bundle_path(path)
    m = read_manifest(d)
    verify_files(d, m)
    mpath = d / MANIFEST_FILE
    idx_m, enc_m, im = m["index"], m["encoder"], m["imaging"]
    if idx_m["metric"] != METRIC:
        raise _err(mpath, "index.metric", f"{idx_m['metric']!r}; only {METRIC!r} is supported")
    if idx_m["dim"] != enc_m["embedding_dim"]:
        raise _err(mpath, "index.dim", f"{idx_m['dim']} but encoder.embedding_dim is {enc_m['embedding_dim']}")
    if list(im.get("shape", [])) != list(enc_m["input_shape"])[1:]:
        raise _err(mpath, "imaging.shape", f"{im.get('shape')} but encoder.input_shape is {enc_m['input_shape']}")
    cases = _read_cases(d / CASES_FILE)
    if len(cases) != idx_m["n_items"]:
        raise _err(d / CASES_FILE, "lines", f"{len(cases)} cases but index.n_items is {idx_m['n_items']}")
    b = Bundle(d, m, cases, threads)
    if check_encoder:
        enc = b.encoder
        _check_encoder(d / ENCODER_FILE, enc_m, enc.details())
        from .imaging import ImagingConfig  # noqa: F401 - imaging config must build
        if tuple(b.imaging_config.shape) != tuple(enc.input_shape[1:]):
            raise _err(mpath, "imaging", f"mode/tile give shape {b.imaging_config.shape} but the encoder "
                       f"takes {enc.input_shape}")
    idx = b.index
    if len(idx) != idx_m["n_items"]:
        raise _err(d / INDEX_FILE, "n_items", f"index holds {len(idx)} items, manifest says {idx_m['n_items']}")
    if len(idx):
        probe = [0, len(idx) // 2, len(idx) - 1]
        norms = np.array([np.linalg.norm(idx.item(i)) for i in probe])
        if not np.all(np.abs(norms - 1.0) < 1e-2):
            raise _err(d / INDEX_FILE, "dim", f"items are not unit vectors of dimension {idx_m['dim']} "
                       f"(norms {np.round(norms, 3).tolist()}): wrong dimension or not this bundle's index")
    return b
