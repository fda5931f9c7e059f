"""Bounded JSON reading and the bundle manifest's schema (hand-written: numpy and the stdlib only).

:func:`loads_bounded` parses JSON that a user or an attacker may have written: a size cap, no duplicate keys,
no ``NaN``/``Infinity``, no integer longer than 40 digits, no float that overflows, a nesting depth cap. Every
failure is a ``ValueError`` subclass (:class:`JSONLimitError`) whose message names the path of the offending
value (``index.search_k``), so the caller wraps it into its own :class:`~edge.errors.EcgretError`.

:func:`validate_manifest` checks a parsed manifest against the schema below (types, ranges, lengths, the
cross-field rules the runtime relies on) and raises one :class:`~edge.errors.BundleError` naming the field:
``.../manifest.json: index.search_k: must be an integer, got str``. The runtime may then index the manifest
without further checks. Sections the device does not interpret (``training``, ``evaluation``, ``archive``
details, ``tools``) are only bounded (type, depth, size). The optional ``waveforms`` section (with its file
``waveforms.bin``) is checked in full: names, dtype, shapes against the index, and a layout that fills the file.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from .errors import BundleError

__all__ = [
    "JSONLimitError",
    "loads_bounded",
    "validate_manifest",
    "MAX_MANIFEST_BYTES",
    "MAX_FILE_BYTES",
    "MAX_DEPTH",
    "printable",
    "case_problem",
    "case_id_ok",
    "FOLD_RANGE",
]

MAX_MANIFEST_BYTES = 4 << 20  # the default manifest is 28 KB (its evaluation tables included)
MAX_DEPTH = 32  # the default manifest nests 6 deep
MAX_INT_DIGITS = 40
FOLD_RANGE = (0, 1000)  # archive.folds: the folds a bundle's cases may belong to
NAME_MAX = 60  # archive.sources and the label counts: a source or label name
CASE_ID_MAX = 200
# the most each bundle file may hold: they are read into memory to be hashed and checked before use
MAX_FILE_BYTES = {
    "encoder.tflite": 256 << 20,
    "index.ann": 1 << 30,
    "cases.jsonl": 512 << 20,
    "MODEL_CARD.md": 4 << 20,
    "waveforms.bin": 64 << 20,
}
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class JSONLimitError(ValueError):
    """JSON that breaks one of :func:`loads_bounded`'s limits or is not JSON at all."""


class _Huge:
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


class _Bad:
    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


def _pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise JSONLimitError(f"duplicate key {printable(repr(k), 60)}")
        d[k] = v
    return d


def _parse_int(s):
    return int(s) if len(s.lstrip("-")) <= MAX_INT_DIGITS else _Huge(s)


def _parse_float(s):
    f = float(s)
    return f if math.isfinite(f) else _Huge(s)


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def loads_bounded(
    data: bytes | str, *, max_bytes: int = MAX_MANIFEST_BYTES, max_depth: int = MAX_DEPTH, root: str = ""
):
    """Parse ``data`` within the limits above; ``root`` prefixes the paths in messages."""
    if len(data) > max_bytes:
        raise JSONLimitError(f"{len(data):,} bytes, more than the {max_bytes:,} allowed")
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONLimitError(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        doc = json.loads(
            data, object_pairs_hook=_pairs, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_Bad
        )
    except JSONLimitError:
        raise
    except RecursionError:
        raise JSONLimitError(f"nested more than {max_depth} levels deep") from None
    except ValueError as e:
        raise JSONLimitError(f"not valid JSON ({printable(str(e), 200)})") from None
    # one iterative walk: depth, and the numbers the hooks marked
    stack: list[tuple[Any, list[str | int], int]] = [(doc, [root] if root else [], 1)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > max_depth:
                raise JSONLimitError(f"{_path(path)}: nested more than {max_depth} levels deep")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            stack.extend((x, path + [k], depth + 1) for k, x in items)
        elif isinstance(v, _Huge):
            raise JSONLimitError(f"{_path(path)}: number {printable(v.text, 30)} is out of range")
        elif isinstance(v, _Bad):
            raise JSONLimitError(f"{_path(path)}: {v.text} is not a JSON number")
    return doc


def printable(s, n: int = 200) -> str:
    """``s`` without control or bidi-override characters, clipped to ``n`` characters (for messages)."""
    s = _CONTROL.sub("?", str(s))
    return s if len(s) <= n else s[: n - 1] + "…"


# ------------------------------------------------------------------ manifest schema


def case_id_ok(cid) -> bool:
    """A case id the device takes (``cases.jsonl``): a string of 1 to 200 printable characters."""
    return type(cid) is str and 0 < len(cid) <= CASE_ID_MAX and cid.isprintable()


def case_problem(case: dict) -> tuple[str, str] | None:
    """(field, why) when the device would refuse a bundle holding ``case`` (a ``cases.jsonl`` object): its id
    (:func:`case_id_ok`), its fold (``archive.folds``), its source and labels (the keys of ``archive.sources``,
    ``super_class_counts``, ``rhythm_counts``: 1 to 60 characters, no control characters); None when it is fine.
    The importers check every case with it, so that an archive never builds a bundle the device refuses."""
    if not case_id_ok(case.get("case_id")):
        return "case_id", f"missing, empty, longer than {CASE_ID_MAX} characters or holding control characters"
    try:
        if case.get("fold") is not None:
            _int(case["fold"], "fold", *FOLD_RANGE)
        if case.get("source"):
            _str(case["source"], "source", NAME_MAX)
        for k in ("super_class", "sub_class", "form", "rhythm"):
            for x in case.get(k) or ():
                _str(x, k, NAME_MAX)
    except _Fail as e:
        return e.field, e.msg
    return None


class _Fail(Exception):
    def __init__(self, field, msg):
        self.field, self.msg = field, msg


def _tname(v) -> str:
    return (
        "null"
        if v is None
        else {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}.get(
            type(v), type(v).__name__
        )
    )


def _obj(v, f):
    if not isinstance(v, dict):
        raise _Fail(f, f"must be an object, got {_tname(v)}")
    return v


def _int(v, f, lo, hi):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Fail(f, f"must be an integer, got {_tname(v)}")
    if not lo <= v <= hi:
        raise _Fail(f, f"{v} is out of range [{lo}, {hi}]")
    return v


def _num(v, f, lo, hi, *, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Fail(f, f"must be a number, got {_tname(v)}")
    if not math.isfinite(v) or not (lo < v if lo_open else lo <= v) or not v <= hi:
        raise _Fail(f, f"{v!r} is out of range {'(' if lo_open else '['}{lo}, {hi}]")
    return v


def _str(v, f, max_len=200, choices=None, pattern=None):
    if not isinstance(v, str):
        raise _Fail(f, f"must be a string, got {_tname(v)}")
    if not v or len(v) > max_len:
        raise _Fail(f, f"must hold 1 to {max_len} characters, got {len(v)}")
    if _CONTROL.search(v):
        raise _Fail(f, "holds control characters")
    if choices is not None and v not in choices:
        raise _Fail(f, f"{printable(repr(v), 40)} is not one of {', '.join(map(repr, choices))}")
    if pattern is not None and not pattern.match(v):
        raise _Fail(f, f"{printable(repr(v), 80)} is not {pattern.pattern!r}")
    return v


def _ints(v, f, n, lo, hi):
    if not isinstance(v, list):
        raise _Fail(f, f"must be an array, got {_tname(v)}")
    if len(v) != n:
        raise _Fail(f, f"must hold {n} values, got {len(v)}")
    return [_int(x, f"{f}[{i}]", lo, hi) for i, x in enumerate(v)]


def _req(d, f, k):
    if k not in d:
        raise _Fail(f"{f}.{k}" if f else k, "missing")
    return d[k]


def _check(m: dict) -> None:
    from .bundle_format import BUNDLE_FILES, FORMAT, FORMAT_VERSION, METRIC, OPTIONAL_FILES
    from .encoder import KERNELS
    from .imaging import MODES, RR_SCALES, ImagingConfig
    from .signal import MIN_DURATION_S

    _obj(m, "manifest")
    if m.get("format") != FORMAT:
        raise _Fail("format", f"{printable(repr(m.get('format')), 40)} is not {FORMAT!r}")
    if m.get("format_version") != FORMAT_VERSION or isinstance(m.get("format_version"), bool):
        raise _Fail(
            "format_version",
            f"bundle format version {printable(repr(m.get('format_version')), 20)}; this "
            f"ecgret reads version {FORMAT_VERSION} (rebuild the bundle with a matching ecgret-convert)",
        )
    _str(_req(m, "", "name"), "name", 120)
    _str(_req(m, "", "created"), "created", 64)

    files = _obj(_req(m, "", "files"), "files")
    for fn in files:
        if fn not in BUNDLE_FILES + OPTIONAL_FILES:
            raise _Fail(
                f"files.{printable(fn, 60)}",
                f"not a file of this bundle format (files: {', '.join(BUNDLE_FILES + OPTIONAL_FILES)})",
            )
    for fn in BUNDLE_FILES + tuple(f for f in OPTIONAL_FILES if f in files):
        meta = _obj(_req(files, "files", fn), f"files.{fn}")
        _str(_req(meta, f"files.{fn}", "sha256"), f"files.{fn}.sha256", 64, pattern=_HEX64)
        _int(_req(meta, f"files.{fn}", "bytes"), f"files.{fn}.bytes", 1, MAX_FILE_BYTES[fn])

    pp = _obj(_req(m, "", "preprocessing"), "preprocessing")
    fs = _int(_req(pp, "preprocessing", "target_fs"), "preprocessing.target_fs", 50, 1000)
    _num(_req(pp, "preprocessing", "duration_s"), "preprocessing.duration_s", MIN_DURATION_S, 60.0)
    notch = pp.get("notch_hz")
    if notch is not None and notch != 0:
        # the mains: 50 or 60 Hz and a little either side (16.7 Hz railway, 1e-300 Hz: every lead "no usable")
        _num(notch, "preprocessing.notch_hz", 45.0, 65.0)
    # what this runtime applies (edge.signal.preprocess): a manifest asking for anything else would be
    # answered with other filters than its index was built with, so it is refused
    if "bandpass_hz" in pp:
        bp = pp["bandpass_hz"]
        if (
            not isinstance(bp, list)
            or len(bp) != 2
            or [_num(x, f"preprocessing.bandpass_hz[{i}]", 0, 1e4) for i, x in enumerate(bp)] != [0.5, 40.0]
        ):
            raise _Fail("preprocessing.bandpass_hz", f"{printable(bp, 60)}: this ecgret applies [0.5, 40.0] only")
    if "order" in pp and (_int(pp["order"], "preprocessing.order", 1, 16) != 4):
        raise _Fail("preprocessing.order", f"{pp['order']}: this ecgret applies order 4 only")
    if "zscore" in pp:
        _str(pp["zscore"], "preprocessing.zscore", 20, choices=("per-lead",))

    im = _obj(_req(m, "", "imaging"), "imaging")
    _str(_req(im, "imaging", "mode"), "imaging.mode", 20, choices=MODES)
    tile = _int(_req(im, "imaging", "tile"), "imaging.tile", 4, 128)
    _int(_req(im, "imaging", "mtf_bins"), "imaging.mtf_bins", 2, 64)
    if _int(_req(im, "imaging", "fs"), "imaging.fs", 50, 1000) != fs:
        raise _Fail("imaging.fs", f"{im['fs']} differs from preprocessing.target_fs {fs}")
    if "rr_scale" in im:
        _str(im["rr_scale"], "imaging.rr_scale", 20, choices=RR_SCALES)
    shape = _ints(_req(im, "imaging", "shape"), "imaging.shape", 3, 1, 4 * 128)
    want = list(ImagingConfig.from_dict(im).shape)
    if shape != want:
        raise _Fail("imaging.shape", f"{shape} but mode {im['mode']!r} with tile {tile} gives {want}")

    enc = _obj(_req(m, "", "encoder"), "encoder")
    ins = _ints(_req(enc, "encoder", "input_shape"), "encoder.input_shape", 4, 1, 4 * 128)
    if ins[0] != 1 or ins[1:] != shape:
        raise _Fail("encoder.input_shape", f"{ins} but imaging.shape is {shape} (batch 1)")
    outs = _ints(_req(enc, "encoder", "output_shape"), "encoder.output_shape", 2, 1, 4096)
    dim = _int(_req(enc, "encoder", "embedding_dim"), "encoder.embedding_dim", 1, 4096)
    if outs != [1, dim]:
        raise _Fail("encoder.output_shape", f"{outs} but encoder.embedding_dim is {dim} (batch 1)")
    for side in ("input", "output"):
        dt = _str(
            _req(enc, "encoder", f"{side}_dtype"), f"encoder.{side}_dtype", 10, choices=("int8", "uint8", "float32")
        )
        lo = 0.0 if dt == "float32" else 1e-12
        _num(_req(enc, "encoder", f"{side}_scale"), f"encoder.{side}_scale", lo, 1e6)
        _int(_req(enc, "encoder", f"{side}_zero_point"), f"encoder.{side}_zero_point", -128, 255)
    _str(_req(enc, "encoder", "quantization"), "encoder.quantization", 40)
    if "kernels" in enc:
        _str(enc["kernels"], "encoder.kernels", 20, choices=KERNELS)
    for k in ("params", "macs"):
        if enc.get(k) is not None:
            _int(enc[k], f"encoder.{k}", 0, 10**15)

    idx = _obj(_req(m, "", "index"), "index")
    _str(_req(idx, "index", "metric"), "index.metric", 20, choices=(METRIC,))
    if _int(_req(idx, "index", "dim"), "index.dim", 1, 4096) != dim:
        raise _Fail("index.dim", f"{idx['dim']} but encoder.embedding_dim is {dim}")
    _int(_req(idx, "index", "n_items"), "index.n_items", 1, 50_000_000)
    _int(_req(idx, "index", "n_trees"), "index.n_trees", 1, 4096)
    sk = _int(_req(idx, "index", "search_k"), "index.search_k", -1, 2**31 - 1)
    if sk == 0 or sk < -1:
        raise _Fail("index.search_k", f"{sk}: must be -1 (Annoy's default) or positive")
    _num(_req(idx, "index", "recall_at_10"), "index.recall_at_10", 0.0, 1.0)
    if "seed" in idx:
        _int(idx["seed"], "index.seed", 0, 2**63 - 1)
    if "items" in idx:
        it = _obj(idx["items"], "index.items")
        for k in ("ecg_weight", "report_weight"):
            if k in it:
                _num(it[k], f"index.items.{k}", 0.0, 1.0)

    arc = _obj(_req(m, "", "archive"), "archive")
    if "n_cases" in arc:
        _int(arc["n_cases"], "archive.n_cases", 0, 50_000_000)
    for k in ("sources", "super_class_counts", "rhythm_counts"):
        if k in arc:
            for name, n in _obj(arc[k], f"archive.{k}").items():
                _str(name, f"archive.{k} key", NAME_MAX)
                _int(n, f"archive.{k}.{printable(name, 60)}", 0, 50_000_000)
    if "folds" in arc:
        if not isinstance(arc["folds"], list):
            raise _Fail("archive.folds", f"must be an array, got {_tname(arc['folds'])}")
        for i, x in enumerate(arc["folds"]):
            _int(x, f"archive.folds[{i}]", *FOLD_RANGE)
    _obj(_req(m, "", "training"), "training")
    for k, v in _obj(_req(m, "", "tools"), "tools").items():
        _str(k, "tools key", 60)
        _str(v, f"tools.{printable(k, 60)}", 120)
    _check_waveforms(m, files, idx["n_items"])
    if m.get("evaluation") is not None:
        ev = _obj(m["evaluation"], "evaluation")
        if ev.get("table_markdown") is not None and not isinstance(ev["table_markdown"], str):
            raise _Fail("evaluation.table_markdown", f"must be a string, got {_tname(ev['table_markdown'])}")


def _check_waveforms(m: dict, files: dict, n_items: int) -> None:
    """The optional ``waveforms`` section and its file (``docs/BUNDLE.md``): int8 arrays of known names, one row
    per index item, laid end to end from offset 0 and filling ``files.waveforms.bin.bytes`` exactly."""
    from .bundle_format import WAVEFORM_ARRAYS, WAVEFORMS_FILE

    wf = m.get("waveforms")
    if (wf is None) != (WAVEFORMS_FILE not in files):
        raise _Fail(
            "waveforms" if wf is None else f"files.{WAVEFORMS_FILE}",
            f"the waveforms section and files.{WAVEFORMS_FILE} go together (one is missing)",
        )
    if wf is None:
        return
    _obj(wf, "waveforms")
    _str(_req(wf, "waveforms", "file"), "waveforms.file", 40, choices=(WAVEFORMS_FILE,))
    _str(_req(wf, "waveforms", "dtype"), "waveforms.dtype", 10, choices=("int8",))
    _num(_req(wf, "waveforms", "scale"), "waveforms.scale", 0.0, 1e3, lo_open=True)
    _int(_req(wf, "waveforms", "fs"), "waveforms.fs", 50, 1000)
    _str(_req(wf, "waveforms", "units"), "waveforms.units", 40)
    if "source" in wf:
        _str(wf["source"], "waveforms.source", 400)
    arrays = _obj(_req(wf, "waveforms", "arrays"), "waveforms.arrays")
    if not arrays:
        raise _Fail("waveforms.arrays", "holds no array")
    spans = []
    for name, a in arrays.items():
        f = f"waveforms.arrays.{printable(name, 40)}"
        if name not in WAVEFORM_ARRAYS:
            raise _Fail(f, f"not an array of this format ({', '.join(WAVEFORM_ARRAYS)})")
        _obj(a, f)
        nd = WAVEFORM_ARRAYS[name]
        shape = _ints(_req(a, f, "shape"), f"{f}.shape", nd, 1, 50_000_000)
        if shape[0] != n_items:
            raise _Fail(f"{f}.shape", f"{shape[0]} rows but index.n_items is {n_items}")
        if name == "median_beats":
            if shape[1] != 12:
                raise _Fail(f"{f}.shape", f"{shape[1]} leads; median beats hold the 12 leads")
            _int(shape[2], f"{f}.shape[2]", 10, 1000)
            _int(_req(a, f, "r_index"), f"{f}.r_index", 0, shape[2] - 1)
        else:
            _int(shape[1], f"{f}.shape[1]", 10, 60_000)
        off = _int(_req(a, f, "offset"), f"{f}.offset", 0, MAX_FILE_BYTES[WAVEFORMS_FILE])
        spans.append((off, math.prod(shape), f))
    pos = 0
    for off, size, f in sorted(spans):
        if off != pos:
            raise _Fail(f"{f}.offset", f"{off}, but the arrays are laid end to end: {pos} expected")
        pos += size
    if pos != files[WAVEFORMS_FILE]["bytes"]:
        raise _Fail(
            f"files.{WAVEFORMS_FILE}.bytes",
            f"{files[WAVEFORMS_FILE]['bytes']} but the arrays of the waveforms section hold {pos} bytes",
        )


def validate_manifest(m, where) -> None:
    """Check a parsed manifest against the schema; one :class:`BundleError` ``<where>: <field>: <what>``."""
    try:
        _check(m)
    except _Fail as e:
        raise BundleError(f"{where}: {e.field}: {e.msg}") from None


def read_bounded(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from an open file descriptor, in 4 MiB reads (a file that grew past what its
    ``fstat`` said shows as ``limit`` bytes: the caller asks for one more than it accepts)."""
    chunks, left = [], int(limit)
    while left > 0:
        b = os.read(fd, min(left, 1 << 22))
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)
