"""Load and verify a model bundle (format: ``docs/BUNDLE.md``). ``convert.bundle`` writes them.

Which bundle: ``--bundle PATH`` or ``$ECGRET_BUNDLE``, else the one shipped in the package
(``edge/bundles/default/``). A bundle is verified as a whole before any native code (Annoy, the TFLite
interpreter) sees a byte of it, in this order:

1. ``manifest.json`` is read (a regular file, at most 4 MiB); its sha256 is the bundle id (:attr:`Bundle.id`).
2. ``signature.json``, when present, must be a valid Ed25519 signature of that id (:mod:`edge.trust`); a
   bundle that is not signed by a trusted key is refused unless unsigned bundles are allowed
   (``--allow-unsigned``, ``$ECGRET_ALLOW_UNSIGNED``, or ``allow_unsigned=True``).
3. The manifest is parsed within limits and checked against the schema (:mod:`edge.schema`).
4. Every file is read (regular files only, no symlinks, at most the size the manifest declares) and its
   sha256 checked; ``index.ann`` is checked structurally (:func:`edge.index.check_annoy`); ``cases.jsonl``
   is parsed and its line count checked against the index. The optional ``waveforms.bin`` (the cases'
   compact waveforms for the report) is checked the same way when it is first used (:attr:`Bundle.waveforms`).
5. Only then are the encoder and the index opened, from sealed in-memory copies of the checked bytes
   (:mod:`edge.sealed`), and the encoder's real input/output details compared with the manifest.

Every failure is a :class:`~edge.errors.BundleError` naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bundle_format import (
    BUNDLE_FILES,
    CASE_LABEL_FIELDS,
    CASE_TEXT_FIELDS,
    CASES_FILE,
    ENCODER_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    WAVEFORMS_FILE,
)
from .errors import BundleError
from .schema import read_bounded
from .trust import SIGNATURE_FILE, Trust, check_signature

ENV_VAR = "ECGRET_BUNDLE"
ENV_ALLOW_UNSIGNED = "ECGRET_ALLOW_UNSIGNED"

_CASE_LISTS = CASE_LABEL_FIELDS
_CASE_TEXT = CASE_TEXT_FIELDS

__all__ = [
    "Bundle",
    "CaseWaveforms",
    "VerifiedBundle",
    "load_bundle",
    "verify_bundle",
    "default_bundle_path",
    "resolve_bundle_path",
    "read_manifest",
    "parse_manifest",
    "verify_files",
    "bundle_id",
    "legacy_hash",
    "set_trust_policy",
    "unsigned_allowed",
    "file_sha256",
    "SIGNATURE_FILE",
    "ENV_ALLOW_UNSIGNED",
]

# Whether a bundle must be signed by a trusted key when the caller does not say (allow_unsigned=None). The
# library default is lenient (workstation tools load the bundles they just built); the ``ecgret`` CLI, the
# device's entry point, sets it strict (edge.cli.bundle_option), so every command it runs enforces it.
_POLICY = {"require_trusted": False}


def set_trust_policy(*, require_trusted: bool) -> None:
    """Make :func:`load_bundle` (with ``allow_unsigned=None``) require a trusted signature, or not."""
    _POLICY["require_trusted"] = bool(require_trusted)


def unsigned_allowed(allow_unsigned: bool | None = None) -> bool:
    """The effective policy: ``allow_unsigned`` if given, else ``$ECGRET_ALLOW_UNSIGNED`` set to a true value,
    else whether the process policy (:func:`set_trust_policy`) is lenient."""
    if allow_unsigned is not None:
        return bool(allow_unsigned)
    if os.environ.get(ENV_ALLOW_UNSIGNED, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return not _POLICY["require_trusted"]


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


def bundle_id(manifest_bytes: bytes) -> str:
    """A bundle's identity: the sha256 (hex) of its ``manifest.json`` bytes, which hash every other file."""
    return hashlib.sha256(manifest_bytes).hexdigest()


def legacy_hash(manifest: dict) -> str:
    """The identity ecgret used before bundle ids (it did not cover the manifest): the first 16 hex digits of
    the sha256 over the sorted ``name:sha256`` lines of ``files``. Only for finding old overlays."""
    files = manifest["files"]
    h = hashlib.sha256("".join(f"{k}:{files[k]['sha256']}\n" for k in sorted(files)).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle. ``encoder`` and ``index`` are created on first use and kept (one per bundle)."""

    path: Path
    manifest: dict
    cases: tuple[dict, ...]
    threads: int | None = None
    id: str = ""  # sha256 of manifest.json (hex)
    trust: Trust = Trust("unsigned")
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        """The manifest's ``name``, else the folder's name."""
        return str(self.manifest.get("name", self.path.name))

    @property
    def dim(self) -> int:
        """The embedding dimension (``index.dim``), the encoder's output and the index's vectors alike."""
        return int(self.manifest["index"]["dim"])

    @property
    def search_k(self) -> int:
        """Annoy's ``search_k`` for a query (``index.search_k``: nodes inspected; -1 is Annoy's default)."""
        return int(self.manifest["index"]["search_k"])

    @property
    def hash(self) -> str:
        """The short bundle id (16 hex digits) shown to users; :attr:`id` is the whole sha256."""
        return self.id[:16] if self.id else legacy_hash(self.manifest)

    @property
    def legacy_hash(self) -> str:
        """:func:`legacy_hash` of this bundle's manifest (where overlays of ecgret before bundle ids live)."""
        return legacy_hash(self.manifest)

    @property
    def imaging_config(self):
        """The :class:`~edge.imaging.ImagingConfig` of the manifest's ``imaging`` section: how queries are imaged."""
        from .imaging import ImagingConfig

        im = self.manifest["imaging"]
        return ImagingConfig.from_dict(im)

    @property
    def encoder(self):
        """The :class:`~edge.encoder.Encoder`, opened on first use from the sealed copy of the verified model;
        its ``path`` names the bundle's file. A model the interpreter refuses is a :class:`BundleError`."""
        enc = self._cache.get("encoder")
        if enc is None:
            from .encoder import Encoder

            real = self.path / ENCODER_FILE
            src = self._cache.get("encoder_sealed")
            try:
                enc = Encoder(src.path if src is not None else real, threads=self.threads)
            except BundleError as e:
                raise BundleError(str(e).replace(src.path, str(real)) if src is not None else str(e)) from None
            enc.path = real
            self._cache["encoder"] = enc
        return enc

    @property
    def waveforms(self) -> CaseWaveforms | None:
        """The cases' compact waveforms (``waveforms.bin``), read and checked on first use; None when this bundle
        carries none. A file that does not match the manifest is a :class:`BundleError`."""
        if "waveforms" not in self._cache:
            self._cache["waveforms"] = _load_waveforms(self.path, self.manifest)
        return self._cache["waveforms"]

    @property
    def index(self):
        """The :class:`~edge.index.CaseIndex`, opened on first use from the verified bytes (checked again by
        :func:`~edge.index.check_annoy` against the manifest's ``dim``, ``n_items`` and ``n_trees``)."""
        idx = self._cache.get("index")
        if idx is None:
            from .index import CaseIndex

            m = self.manifest["index"]
            idx = self._cache["index"] = CaseIndex(
                self.path / INDEX_FILE,
                m["dim"],
                m["metric"],
                m["search_k"],
                data=self._cache.pop("index_bytes", None),
                n_items=m["n_items"],
                n_trees=m["n_trees"],
            )
        return idx


@dataclass(frozen=True)
class CaseWaveforms:
    """The compact waveform of every archived case (the optional ``waveforms.bin``; ``docs/BUNDLE.md``), row i
    being case i: int8 arrays, value = int8 x ``scale`` in ``units``, at ``fs`` Hz.

    median_beats: (n, 12, L), each lead's median beat in LEADS12 order, the R peak at sample ``r_index``;
    rhythm_II: (n, T), lead II over the whole record. Either may be None when the file does not hold it."""

    median_beats: np.ndarray | None
    rhythm_II: np.ndarray | None
    scale: float
    fs: int
    r_index: int
    units: str
    source: str

    def __len__(self) -> int:
        a = self.median_beats if self.median_beats is not None else self.rhythm_II
        return 0 if a is None else int(a.shape[0])

    def median(self, i: int) -> np.ndarray | None:
        """Case i's median beats, float32 (L, 12) in ``units`` (None when the file holds none)."""
        a = self.median_beats
        return None if a is None else a[int(i)].T.astype(np.float32) * np.float32(self.scale)

    def strip(self, i: int) -> np.ndarray | None:
        """Case i's lead II rhythm strip, float32 (T,) in ``units`` (None when the file holds none)."""
        a = self.rhythm_II
        return None if a is None else a[int(i)].astype(np.float32) * np.float32(self.scale)


def _load_waveforms(d: Path, m: dict) -> CaseWaveforms | None:
    """Read and check ``waveforms.bin`` against the manifest (size and sha256; layout already checked by the
    schema): a :class:`BundleError` naming the file, never a crash. None when the bundle has none."""
    wf = m.get("waveforms")
    meta = m["files"].get(WAVEFORMS_FILE)
    if wf is None or meta is None:
        return None
    p = d / WAVEFORMS_FILE
    data = _read_regular(p, int(meta["bytes"]), int(meta["bytes"]))
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise _err(p, "sha256", "does not match the manifest (file changed or corrupted)")
    arrays = {}
    for name, a in wf["arrays"].items():
        shape = tuple(a["shape"])
        n = int(np.prod(shape))
        arrays[name] = np.frombuffer(data, dtype=np.int8, count=n, offset=int(a["offset"])).reshape(shape)
    mb = wf["arrays"].get("median_beats") or {}
    return CaseWaveforms(
        arrays.get("median_beats"),
        arrays.get("rhythm_II"),
        float(wf["scale"]),
        int(wf["fs"]),
        int(mb.get("r_index", 0)),
        str(wf["units"]),
        str(wf.get("source", "")),
    )


def _err(where, fld: str, msg: str) -> BundleError:
    return BundleError(f"{where}: {fld}: {msg}")


def _read_regular(p: Path, cap: int, size: int | None = None) -> bytes:
    """The bytes of ``p``, a regular file (not a symlink, FIFO or device) of at most ``cap`` bytes (exactly
    ``size`` when given), read without blocking and without reading past the limit."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise _err(p, "file", "missing") from None
    except OSError as e:
        if os.path.islink(p):
            raise _err(p, "file", "is a symbolic link (bundle files must be regular files)") from None
        raise _err(p, "file", f"unreadable ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _err(p, "file", "not a regular file")
        if size is not None and st.st_size != size:
            raise _err(p, "bytes", f"{st.st_size} bytes, manifest says {size} (file changed or truncated)")
        if st.st_size > cap:
            raise _err(p, "bytes", f"{st.st_size:,} bytes, more than the {cap:,} allowed")
        data = read_bounded(fd, (st.st_size if size is None else size) + 1)  # one more: a file that grew shows
    except OSError as e:
        raise _err(p, "file", f"unreadable ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) != st.st_size:
        raise _err(p, "bytes", f"changed while it was read ({st.st_size} bytes stated, {len(data)} read)")
    return data


def parse_manifest(data: bytes, where) -> dict:
    """Parse manifest bytes within limits and check them against the schema (:mod:`edge.schema`)."""
    from .schema import JSONLimitError, loads_bounded, validate_manifest

    try:
        m = loads_bounded(data)
    except JSONLimitError as e:
        raise BundleError(f"{where}: {e}") from None
    validate_manifest(m, where)
    return m


def _read_manifest_bytes(d: Path) -> bytes:
    from .schema import MAX_MANIFEST_BYTES

    if not d.is_dir():
        raise BundleError(f"{d}: no bundle folder there")
    if not os.path.lexists(d / MANIFEST_FILE):
        raise BundleError(f"{d / MANIFEST_FILE}: missing")
    return _read_regular(d / MANIFEST_FILE, MAX_MANIFEST_BYTES)


def read_manifest(path) -> dict:
    """Read, parse and check ``manifest.json`` of the bundle folder ``path`` (no signature policy)."""
    d = Path(path)
    return parse_manifest(_read_manifest_bytes(d), d / MANIFEST_FILE)


def file_sha256(path) -> str:
    """The sha256 of a file's bytes (hex), read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_files(path, manifest: dict) -> dict[str, bytes]:
    """Every bundle file is a regular file of the listed size and sha256 (a tampered file is refused by
    name). Returns the verified bytes by file name."""
    d = Path(path)
    out = {}
    for fn in BUNDLE_FILES:
        meta = manifest["files"][fn]
        p = d / fn
        data = _read_regular(p, int(meta["bytes"]), int(meta["bytes"]))
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise _err(p, "sha256", "does not match the manifest (file changed or corrupted)")
        out[fn] = data
    return out


def _parse_cases(data: bytes, path: Path, n_items: int | None = None) -> tuple[dict, ...]:
    """The cases of ``cases.jsonl``, each checked as soon as it is decoded (a file of millions of bad lines fails
    at the first, not after all of them were decoded: that took ~12x the file's size in memory); with ``n_items``
    (the index's), the line count is checked before any line is decoded."""
    from .schema import case_id_ok, printable

    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if n_items is not None and n_lines != n_items:
        raise _err(path, "lines", f"{n_lines} cases but index.n_items is {n_items}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(path, "file", f"not UTF-8 ({e.reason} at byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    cases: list = []
    decode = json.JSONDecoder().decode
    seen = set()
    for i, line in enumerate(lines, 1):
        try:
            c = decode(line)
        except (ValueError, RecursionError) as e:
            raise _err(path, f"line {i}", f"not JSON ({printable(e, 120)})") from None
        cases.append(c)
        cid = c.get("case_id") if type(c) is dict else None
        if not case_id_ok(cid):
            raise _err(path, f"line {i}.case_id", "missing, empty, too long or holding control characters")
        if cid in seen:
            raise _err(path, f"line {i}.case_id", f"duplicate case id {cid!r}")
        seen.add(cid)
        for k in _CASE_LISTS:
            v = c.get(k)
            if v is not None:
                try:
                    if type(v) is not list:
                        raise TypeError
                    "".join(v)  # TypeError unless every element is a string
                except TypeError:
                    raise _err(path, f"line {i}.{k}", "not a list of strings") from None
        for k in _CASE_TEXT:
            v = c.get(k)
            if v is not None and type(v) is not str:
                raise _err(path, f"line {i}.{k}", "not a string")
        meas = c.get("measured")
        if meas is not None and not _measured_ok(meas):
            raise _err(path, f"line {i}.measured", "not an object of numbers (null where not measured)")
    return tuple(cases)


def _measured_ok(m) -> bool:
    """A case's ``measured`` (:meth:`edge.measure.Measurements.to_dict`): finite numbers or null, ``paced`` a
    boolean. Anything else reached the ranking as an internal error on every query."""
    if type(m) is not dict or len(m) > 64:
        return False
    for k, v in m.items():
        if v is None or (k == "paced" and type(v) is bool):
            continue
        if type(v) not in (int, float) or not math.isfinite(v):
            return False
    return True


def _check_encoder(path: Path, want: dict, got: dict) -> None:
    for k in (
        "input_shape",
        "input_dtype",
        "input_zero_point",
        "output_shape",
        "output_dtype",
        "output_zero_point",
        "embedding_dim",
    ):
        if want[k] != got[k]:
            raise _err(path, f"encoder.{k}", f"model has {got[k]!r}, manifest says {want[k]!r}")
    for k in ("input_scale", "output_scale"):
        if not math.isclose(float(want[k]), float(got[k]), rel_tol=1e-6, abs_tol=1e-12):
            raise _err(path, f"encoder.{k}", f"model has {got[k]!r}, manifest says {want[k]!r}")


@dataclass(frozen=True)
class VerifiedBundle:
    """What :func:`verify_bundle` checked, before any native code: the folder, the manifest, its id, the
    signature's verdict, the verified bytes of every file and the parsed cases."""

    path: Path
    manifest: dict
    id: str
    trust: Trust
    data: dict
    cases: tuple[dict, ...]


def verify_bundle(path=None, *, allow_unsigned: bool | None = None, ignore_signature: bool = False) -> VerifiedBundle:
    """Steps 1-4 of the module docstring (numpy and the stdlib only: no native parser sees the bundle).
    ``allow_unsigned``: accept a bundle that is not signed by a trusted key (None: the process policy,
    :func:`unsigned_allowed`). ``ignore_signature``: do not read ``signature.json`` (the signer, which
    replaces it; implies an unsigned load)."""
    from .index import check_annoy
    from .trust import MAX_SIGNATURE_BYTES

    d = resolve_bundle_path(path)
    mpath = d / MANIFEST_FILE
    mbytes = _read_manifest_bytes(d)
    sig_path = d / SIGNATURE_FILE
    if ignore_signature:
        trust = Trust("unsigned")
    else:
        sig = _read_regular(sig_path, MAX_SIGNATURE_BYTES) if os.path.lexists(sig_path) else None
        trust = check_signature(sig, mbytes, sig_path)
    if not trust.trusted and not (ignore_signature or unsigned_allowed(allow_unsigned)):
        raise _err(
            d,
            "signature",
            f"{trust.describe()}. Only bundles signed by a trusted publisher load by "
            f"default; to load this one anyway pass --allow-unsigned (or set {ENV_ALLOW_UNSIGNED}=1)",
        )
    m = parse_manifest(mbytes, mpath)
    data = verify_files(d, m)
    idx_m = m["index"]
    cases = _parse_cases(data[CASES_FILE], d / CASES_FILE, idx_m["n_items"])
    if len(cases) != idx_m["n_items"]:
        raise _err(d / CASES_FILE, "lines", f"{len(cases)} cases but index.n_items is {idx_m['n_items']}")
    check_annoy(data[INDEX_FILE], idx_m["dim"], idx_m["n_items"], idx_m["n_trees"], where=d / INDEX_FILE)
    return VerifiedBundle(d, m, bundle_id(mbytes), trust, data, cases)


def load_bundle(
    path=None,
    *,
    threads: int | None = None,
    check_encoder: bool = True,
    allow_unsigned: bool | None = None,
    ignore_signature: bool = False,
) -> Bundle:
    """Load and verify the bundle at ``path`` (default: :func:`resolve_bundle_path`): :func:`verify_bundle`,
    then the encoder and the index are opened (once, from sealed copies of the verified bytes) and kept;
    the encoder's real input/output details must match the manifest."""
    from .sealed import sealed_copy

    v = verify_bundle(path, allow_unsigned=allow_unsigned, ignore_signature=ignore_signature)
    d, m = v.path, v.manifest
    idx_m, enc_m = m["index"], m["encoder"]
    cache = {"index_bytes": v.data[INDEX_FILE], "encoder_sealed": sealed_copy(v.data[ENCODER_FILE], ENCODER_FILE)}
    b = Bundle(d, m, v.cases, threads, v.id, v.trust, cache)
    if check_encoder:
        enc = b.encoder
        _check_encoder(d / ENCODER_FILE, enc_m, enc.details())
        if tuple(b.imaging_config.shape) != tuple(enc.input_shape[1:]):
            raise _err(
                d / MANIFEST_FILE,
                "imaging",
                f"mode/tile give shape {b.imaging_config.shape} but the encoder takes {enc.input_shape}",
            )
    idx = b.index
    if len(idx) != idx_m["n_items"]:
        raise _err(d / INDEX_FILE, "n_items", f"index holds {len(idx)} items, manifest says {idx_m['n_items']}")
    return b
