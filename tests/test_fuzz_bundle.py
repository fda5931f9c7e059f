"""Fuzzing what a bundle and an overlay may hold: structural mutation of ``index.ann`` (with the manifest's
sha256 recomputed, no signature, unsigned loads allowed), and hypothesis over manifest JSON and overlay JSON.

What must hold: every input is either refused with one ``EcgretError`` naming the file and field, or loads and
answers; nothing else escapes, no input crashes the test process, and every ``index.ann`` the checks accept is
loaded and searched by Annoy itself in a forked child of a worker process (so a wrong acceptance shows up as a
signal there, not as a dead test run). ``ECGRET_FUZZ_EXAMPLES`` scales the runs (default 2,000 hypothesis
examples per target and 600 index mutations; the closing note of issue 11 records a longer run).
"""
from __future__ import annotations

import copy
import json
import os
import resource
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.bundle import default_bundle_path, parse_manifest, verify_bundle
from edge.bundle_format import INDEX_FILE, MANIFEST_FILE
from edge.errors import BundleError, EcgretError, OverlayError
from edge.overlay import Overlay
from edge.overlay_file import FILE
from tests.bundle_small import DIM, build_small_bundle, rehash, unit_vectors, write_manifest

N_EXAMPLES = int(os.environ.get("ECGRET_FUZZ_EXAMPLES", "2000"))
N_MUTATIONS = max(600, N_EXAMPLES // 4)
FUZZ = settings(max_examples=N_EXAMPLES, deadline=timedelta(milliseconds=2000), database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------ index.ann: structural mutation

_WORKER = r"""
import json, os, resource, signal, sys
import numpy as np
from annoy import AnnoyIndex
job = json.load(sys.stdin)
dim, out = job["dim"], []
rng = np.random.default_rng(0)
qs = rng.normal(size=(4, dim)).astype(np.float32)
qs /= np.linalg.norm(qs, axis=1, keepdims=True)
for path in job["files"]:
    pid = os.fork()
    if pid == 0:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
            signal.alarm(20)
            a = AnnoyIndex(dim, "angular")
            a.load(path, prefault=False)
            n = a.get_n_items()
            for q in qs:
                for sk in (-1, job["search_k"], 10 ** 6):
                    a.get_nns_by_vector(q.tolist(), 10, search_k=sk, include_distances=True)
            for i in (0, n // 2, n - 1):
                a.get_item_vector(i)
                a.get_nns_by_item(i, 10)
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    out.append(-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
print(json.dumps(out))
"""


def annoy_in_children(files, dim, search_k) -> list[int]:
    """Annoy loads and searches each file in a forked child of a worker; per file 0 (fine), 3 (Python error),
    or -signal (a crash: SIGSEGV -11, SIGBUS -7, SIGALRM -14 for a hang, SIGKILL/ABRT for memory)."""
    if not files:
        return []
    p = subprocess.run([sys.executable, "-c", _WORKER], input=json.dumps({"files": [str(f) for f in files],
                       "dim": dim, "search_k": search_k}), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout)


def _mutate(data: bytes, rng, n_items: int, dim: int) -> tuple[str, bytes]:
    s = 12 + 4 * dim
    w = s // 4
    k_max = w - 1
    ints = np.frombuffer(data, dtype="<i4").reshape(-1, w).copy()
    n = ints.shape[0]
    inner = lambda: int(rng.integers(n_items, n))                     # noqa: E731
    big = [2 ** 31 - 1, -1, -(2 ** 31), n, n - 1, n_items, int(rng.integers(0, 2 * n)),
           int(rng.integers(-2 ** 31, 2 ** 31))]
    op = int(rng.integers(0, 13))
    name = ["last20", "word", "n_descendants", "split-child", "leaf-id", "bitflip", "float", "truncate", "extend",
            "swap", "zero", "random-node", "multi"][op]
    if op == 0:
        k = int(rng.integers(1, 21))
        ints[-k:, 1:3] = 2 ** 31 - 1
    elif op == 1:
        ints[inner(), int(rng.integers(0, w))] = big[int(rng.integers(len(big)))]
    elif op == 2:
        i = int(rng.integers(0, n))
        ints[i, 0] = [0, -1, 1, 2, k_max, k_max + 1, n_items, n_items - 1, n_items + 1, 2 ** 31 - 1,
                      int(rng.integers(-1000, 1000))][int(rng.integers(11))]
    elif op == 3:
        rows = [i for i in range(n_items, n) if ints[i, 0] > k_max] or [inner()]
        i = rows[int(rng.integers(len(rows)))]
        ints[i, 1 + int(rng.integers(2))] = [i, i + 1, n - 1, int(rng.integers(0, n)), -1, n][int(rng.integers(6))]
    elif op == 4:
        rows = [i for i in range(n_items, n) if 1 < ints[i, 0] <= k_max] or [inner()]
        i = rows[int(rng.integers(len(rows)))]
        j = 1 + int(rng.integers(0, max(1, min(int(ints[i, 0]), k_max))))
        ints[i, j] = [n_items, n, -1, int(rng.integers(0, n)), 2 ** 31 - 1][int(rng.integers(5))]
    elif op == 5:
        b = bytearray(ints.tobytes())
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        return name, bytes(b)
    elif op == 6:
        f = ints.view("<f4")
        f[int(rng.integers(0, n)), 3 + int(rng.integers(dim))] = [np.nan, np.inf, -np.inf, 1e30, 0.0, 1e-30,
                                                                  3.0][int(rng.integers(7))]
    elif op == 7:
        b = ints.tobytes()
        cut = int(rng.integers(1, len(b))) if rng.random() < 0.5 else s * int(rng.integers(1, n))
        return name, b[: len(b) - cut]
    elif op == 8:
        extra = rng.integers(0, 256, size=int(rng.choice([s, 2 * s, int(rng.integers(1, 3 * s))])), dtype=np.uint8)
        return name, ints.tobytes() + extra.tobytes()
    elif op == 9:
        i, j = int(rng.integers(0, n)), int(rng.integers(0, n))
        ints[[i, j]] = ints[[j, i]]
    elif op == 10:
        ints[int(rng.integers(0, n))] = 0
    elif op == 11:
        ints[inner()] = rng.integers(-2 ** 31, 2 ** 31, size=w, dtype=np.int64).astype(np.int32)
    else:
        for _ in range(int(rng.integers(2, 6))):
            ints[inner(), int(rng.integers(0, 3))] = big[int(rng.integers(len(big)))]
    return name, ints.tobytes()


@pytest.mark.slow
def test_index_structural_fuzz(tmp_path):
    """>= 600 mutations of a real Annoy index, hashes recomputed: every one is refused by name or, if
    accepted, loaded and searched by Annoy without a crash; a sample of the refused ones shows what the
    check protects from (Annoy alone crashes on some)."""
    d = build_small_bundle(tmp_path / "b")
    m0 = json.loads((d / MANIFEST_FILE).read_text())
    good = (d / INDEX_FILE).read_bytes()
    n_items, sk = m0["index"]["n_items"], m0["index"]["search_k"]
    rng = np.random.default_rng(11)
    accepted, refused, kinds = [], [], {}
    (tmp_path / "mut").mkdir()
    for t in range(N_MUTATIONS):
        name, data = _mutate(good, rng, n_items, DIM)
        if data == good:
            continue
        (d / INDEX_FILE).write_bytes(data)
        write_manifest(d, rehash(d, copy.deepcopy(m0), INDEX_FILE))
        f = tmp_path / "mut" / f"{t:05d}-{name}.ann"
        f.write_bytes(data)
        try:
            verify_bundle(d, allow_unsigned=True)       # numpy only: no native code sees the mutant here
            accepted.append(f)
        except BundleError as e:
            assert "index.ann" in str(e) and ": " in str(e)
            refused.append(f)
            kinds[name] = kinds.get(name, 0) + 1
    tried = len(accepted) + len(refused)
    assert tried >= 500
    status = annoy_in_children(accepted, DIM, sk)
    crashed = [str(f.name) for f, s in zip(accepted, status) if s != 0]
    assert not crashed, f"accepted mutants that Annoy cannot take: {crashed[:10]}"
    sample = refused[:: max(1, len(refused) // 150)]
    control = annoy_in_children(sample, DIM, sk)
    n_crash = sum(1 for s in control if s < 0)
    print(f"\nindex.ann fuzz: {tried} mutations, {len(refused)} refused, {len(accepted)} accepted and searched by "
          f"Annoy with 0 crashes; unchecked Annoy crashed on {n_crash} of {len(sample)} refused ones; refused by "
          f"kind {dict(sorted(kinds.items()))}")
    assert n_crash > 0        # the control: without the check these would have killed the process


def test_reported_crash_last_20_nodes(tmp_path):
    """The case of issue 11 on the real default index: the last 20 nodes' child pointers set to 2^31-1."""
    import shutil
    d = tmp_path / "b"
    shutil.copytree(default_bundle_path(), d)
    (d / "signature.json").unlink()
    m = json.loads((d / MANIFEST_FILE).read_text())
    a = np.frombuffer((d / INDEX_FILE).read_bytes(), dtype="<i4").reshape(-1, 3 + 128).copy()
    a[-20:, 1:3] = 2 ** 31 - 1
    (d / INDEX_FILE).write_bytes(a.tobytes())
    write_manifest(d, rehash(d, m, INDEX_FILE))
    with pytest.raises(BundleError, match=r"index\.ann: (node \d+|n_items|n_trees)"):
        verify_bundle(d, allow_unsigned=True)
    assert annoy_in_children([d / INDEX_FILE], 128, m["index"]["search_k"])[0] < 0   # unchecked: a crash


# ------------------------------------------------------------------ manifest JSON (hypothesis)

_BASE = json.loads((default_bundle_path() / MANIFEST_FILE).read_text())
_PATHS = []


def _walk(v, path):
    _PATHS.append(path)
    if isinstance(v, dict):
        for k, x in v.items():
            if k not in ("evaluation", "training") or not path:
                _walk(x, path + (k,))
    elif isinstance(v, list) and len(v) <= 4:
        for i, x in enumerate(v):
            _walk(x, path + (i,))


_walk(_BASE, ())
_PATHS = _PATHS[1:]

_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2 ** 70, max_value=2 ** 70),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                     st.sampled_from([0, -1, 1, 2 ** 31, 2 ** 63, 1e308, "1280", "", "angular", "rhythm", 4, 128,
                                      [1, 128], [128, 128, 3], {}, [], 10.0, 50.0, 0.5]))
_json = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                   st.dictionaries(st.text(max_size=8), c, max_size=4)),
                     max_leaves=12)


def _set(doc, path, value):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value


def _delete(doc, path):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    if isinstance(cur, dict):
        cur.pop(path[-1], None)
    else:
        cur.pop(path[-1])


@st.composite
def manifests(draw) -> bytes:
    doc = copy.deepcopy(_BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_PATHS))
        try:
            kind = draw(st.integers(0, 9))
            if kind <= 5:
                _set(doc, path, draw(_json))
            elif kind == 6:
                _delete(doc, path)
            elif kind == 7:
                n = draw(st.integers(20, 3000))
                _set(doc, path, "@@" + "[" * n + "1" + "]" * n + "@@")      # nesting json.dumps cannot write
            else:
                v = draw(st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "1" * 5000, "-" + "9" * 60]))
                _set(doc, path, f"@@{v}@@")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
    text = json.dumps(doc)
    text = text.replace('"@@', "").replace('@@"', "")         # the raw numbers JSON writers should never emit
    if draw(st.integers(0, 9)) == 0:                           # byte-level damage
        b = bytearray(text.encode())
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b)
    if draw(st.integers(0, 19)) == 0:
        text = text.replace(', "index"', ', "index": {}, "index"', 1)       # a duplicate key
    return text.encode()


@pytest.mark.slow
@FUZZ
@given(manifests())
def test_manifest_fuzz(data):
    try:
        m = parse_manifest(data, "manifest.json")
    except BundleError as e:
        msg = str(e)
        assert msg.startswith("manifest.json: ") and "\n" not in msg and len(msg) < 1000
        return
    # accepted: everything the runtime reads from it works
    from edge.bundle import Bundle
    from edge.imaging import ImagingConfig
    b = Bundle(Path("."), m, ())
    assert b.dim == m["encoder"]["embedding_dim"] and isinstance(b.search_k, int)
    assert list(ImagingConfig.from_dict(m["imaging"]).shape) == m["imaging"]["shape"]
    float(m["preprocessing"]["duration_s"]), int(m["preprocessing"]["target_fs"])


@pytest.mark.slow
def test_manifest_fuzz_reaches_the_native_loaders(tmp_path):
    """Accepted manifests of a real bundle: the whole load (encoder and index opened) ends in a result or
    one BundleError, never anything else (a few hundred, the native loads are slower)."""
    from hypothesis import find  # noqa: F401 - hypothesis is the generator here too
    d = build_small_bundle(tmp_path / "b")
    base = json.loads((d / MANIFEST_FILE).read_text())
    seen = {"ok": 0, "refused": 0}

    @settings(max_examples=max(200, N_EXAMPLES // 10), deadline=timedelta(milliseconds=3000), database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([("index", "dim"), ("index", "n_items"), ("index", "n_trees"), ("index", "search_k"),
                            ("encoder", "embedding_dim"), ("encoder", "output_shape"), ("imaging", "tile"),
                            ("imaging", "mtf_bins"), ("preprocessing", "duration_s"), ("preprocessing", "notch_hz"),
                            ("encoder", "input_shape"), ("imaging", "shape")]), _json)
    def run(path, value):
        from edge.bundle import load_bundle
        from edge.retrieval import Retriever
        m = copy.deepcopy(base)
        _set(m, path, value)
        write_manifest(d, m)
        try:
            b = load_bundle(d, allow_unsigned=True)
            r = Retriever(b)
            ids, _ = r.index.search(unit_vectors(1, 5)[0], 5)
            assert len(ids) == 5
            seen["ok"] += 1
        except EcgretError as e:
            assert "\n" not in str(e)
            seen["refused"] += 1
    run()
    assert seen["refused"] > 0


# ------------------------------------------------------------------ overlay JSON (hypothesis)

OV_DIM = 8
OV_ID = "b" * 64


def _ov_doc(n=3):
    v = unit_vectors(n, 3)[:, :OV_DIM]
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return {"format": "ecgret-overlay", "format_version": 1, "bundle": OV_ID, "dim": OV_DIM,
            "cases": [{"case_id": f"local:{i + 1}", "super_class": ["MI"], "sub_class": [], "rhythm": ["SR"],
                       "statements": "", "report": "confirmed", "source": "local", "enrolled": "2026-01-01",
                       "record": "/x.hea", "embedding": [float(x) for x in v[i]]} for i in range(n)]}


_OV_BASE = _ov_doc()
_OV_PATHS = [("format",), ("format_version",), ("bundle",), ("dim",), ("cases",)] + \
            [("cases", i, k) for i in range(3) for k in _OV_BASE["cases"][0]] + \
            [("cases", 0, "embedding", j) for j in range(OV_DIM)] + [("cases", 1), ("cases", 2, "super_class", 0)]


@st.composite
def overlays(draw) -> bytes:
    doc = copy.deepcopy(_OV_BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_OV_PATHS))
        try:
            kind = draw(st.integers(0, 9))
            if kind <= 6:
                _set(doc, path, draw(_json))
            elif kind == 7:
                _delete(doc, path)
            elif kind == 8:
                n = draw(st.integers(5, 3000))
                _set(doc, path, "@@" + '{"a":' * n + "0" + "}" * n + "@@")
            else:
                _set(doc, path, f"@@{draw(st.sampled_from(['NaN', '1e999', '7' * 5000]))}@@")
        except (KeyError, IndexError, TypeError, AttributeError):
            pass
    text = json.dumps(doc).replace('"@@', "").replace('@@"', "")
    if draw(st.integers(0, 7)) == 0:
        b = bytearray(text.encode())
        cut = draw(st.integers(0, len(b)))
        b = b[:cut] + bytes(draw(st.lists(st.integers(0, 255), max_size=8)))
        return bytes(b)
    return text.encode()


@pytest.fixture(scope="module")
def ov_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ov")


@pytest.mark.slow
@FUZZ
@given(overlays())
def test_overlay_fuzz(ov_dir, data):
    (ov_dir / FILE).write_bytes(data)
    ov = Overlay(ov_dir, OV_DIM, OV_ID, strict=False)         # the query path: never raises
    if ov.error is not None:
        assert len(ov) == 0 and "\n" not in ov.error
        with pytest.raises(OverlayError):
            Overlay(ov_dir, OV_DIM, OV_ID)                    # the strict path: one OverlayError
        with pytest.raises(OverlayError):
            ov.enroll({"report": "x"}, np.ones(OV_DIM))       # never overwrites a file it cannot read
        assert (ov_dir / FILE).read_bytes() == data
        return
    hits = ov.search(np.ones(OV_DIM, dtype=np.float32) / np.sqrt(OV_DIM), 5)
    assert all(np.isfinite(s) and -1.0001 <= s <= 1.0001 for _, s in hits)
    assert all(isinstance(c["case_id"], str) for c in ov.cases)


@pytest.mark.slow
def test_fuzz_memory_bounded():
    """Peak RSS of this process after the fuzz runs above stays modest (they run in this process)."""
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert peak_mb < 1500, peak_mb
