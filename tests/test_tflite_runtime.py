"""The shipped default bundle on the classic interpreter: tflite-runtime 2.14 with numpy<2 (what 32-bit Pi OS
runs) must return the same top-10 cases as LiteRT in the main environment, for ~20 real raw records.

Runs inside ``.venv-tflite`` (``make test``: tflite-runtime 2.14, numpy<2, scipy, annoy, pyserial, click,
pytest and this package installed with --no-deps). In the main environment, where ``tflite_runtime`` is absent,
it skips. The main environment's answers come from a ``.venv/bin/python`` subprocess (LiteRT); this process
never imports TensorFlow (a tflite-runtime interpreter created after ``import tensorflow`` crashed).

Both interpreters run their built-in integer kernels (``edge.encoder`` asks for them: no XNNPACK delegate)
and the student's head is folded into one CONV_2D on export (``convert.quantize.fold_head``), so every op of
the int8 graph is computed with the same fixed-point arithmetic in LiteRT and in tflite-runtime 2.14; the
imaging does not depend on BLAS summation order (``edge.imaging.tile_fields``), so numpy 1.26 and 2.x give the
same int8 input. The int8 inputs and outputs must be bit-identical and the top-10 lists identical, case for
case and in order. (With
LiteRT's XNNPACK delegate, ~40 % of the int8 outputs moved by 1-2 steps and near-tied neighbours swapped.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

tflite_interpreter = pytest.importorskip("tflite_runtime.interpreter",
                                        reason="tflite-runtime is not installed (runs in .venv-tflite)")

ROOT = Path(__file__).resolve().parent.parent
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
N_RECORDS = 48

QUERY = r"""
import json, sys
from edge.bundle import load_bundle
from edge.errors import EcgretError
from edge.io import read_record
from edge.retrieval import Retriever
want = sys.argv[1]
if want == "tflite-runtime":
    import edge.encoder as E
    from tflite_runtime.interpreter import Interpreter
    E.interpreter_class = lambda: (Interpreter, "tflite-runtime")
b = load_bundle(threads=1)
r = Retriever(b, threads=1)
out = {"backend": b.encoder.backend, "numpy": __import__("numpy").__version__, "top10": {}, "vec": {}, "raw": {}, "inp": {}}
for p in sys.argv[2:]:
    try:
        rec = read_record(p)
        res = r.query_record(rec, top_k=10)
        out["top10"][p] = [m.case_id for m in res.matches]
        out["vec"][p] = r.embed_record(rec)[0].tolist()
        enc = r.encoder
        out["raw"][p] = enc._interp.get_tensor(enc._out_idx).reshape(-1).tolist()
        out["inp"][p] = __import__("hashlib").sha256(enc._interp.get_tensor(enc._in_idx).tobytes()).hexdigest()
    except EcgretError as e:
        out["top10"][p] = "error: " + type(e).__name__
print(json.dumps(out))
"""


def _records() -> list[str]:
    from edge.paths import shared_data_dir
    d = shared_data_dir() / "cinc2021-sample"
    if not d.is_dir():
        from tests.shared import missing_data
        missing_data(f"shared data not found at {d}")
    return [str(p.with_suffix("")) for p in sorted(d.glob("*.hea"))][:N_RECORDS]


def _run(python: str, backend: str, records: list[str]) -> dict:
    env = dict(os.environ)
    env.pop("ECGRET_BUNDLE", None)
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([python, "-c", QUERY, backend, *records], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_default_bundle_same_top10_on_tflite_runtime_and_litert():
    if not MAIN_PYTHON.exists():
        pytest.skip(f"{MAIN_PYTHON} missing: the main environment gives the reference answers")
    records = _records()
    assert len(records) == N_RECORDS
    # this process: the classic interpreter, forced (a subprocess keeps this test's own imports clean too)
    here = _run(sys.executable, "tflite-runtime", records)
    assert here["backend"] == "tflite-runtime"
    assert here["numpy"].startswith("1.")
    main = _run(str(MAIN_PYTHON), "ai-edge-litert", records)
    assert main["backend"] == "ai-edge-litert"
    answered = [p for p in records if isinstance(main["top10"][p], list)]
    assert len(answered) >= N_RECORDS // 2
    for p in records:
        a, m = here["top10"][p], main["top10"][p]
        assert a == m, p                            # the same refusal, or the same ten cases in the same order
        if isinstance(m, list):
            assert here["inp"][p] == main["inp"][p], p    # numpy 1.26 and 2.x image it bit for bit alike
            assert here["raw"][p] == main["raw"][p], p    # and the two interpreters compute the same int8 output


def test_load_bundle_in_process_with_tflite_runtime(monkeypatch):
    """In this process, forced classic interpreter: archived PTB-XL records are encoded to the ECG part of their
    own index items, and the Annoy search agrees with exact search over the items."""
    import numpy as np

    import edge.encoder as E
    from edge.bundle import load_bundle
    from edge.imaging import ecg_image
    from edge.paths import shared_data_dir
    monkeypatch.setattr(E, "interpreter_class", lambda: (tflite_interpreter.Interpreter, "tflite-runtime"))
    b = load_bundle(threads=1)
    assert b.encoder.backend == "tflite-runtime"
    assert b.encoder.input_dtype == np.int8 and b.encoder.output_dtype == np.int8
    npy = shared_data_dir() / "ptbxl-subset" / "signals_100hz.npy"
    if not npy.is_file():
        pytest.skip(f"{npy} missing")
    sig = np.load(npy, mmap_mode="r")
    assert len(b.cases) == sig.shape[0]  # the default bundle indexes every subset record, in row order
    items = np.stack([b.index.item(i) for i in range(len(b.cases))])
    w = b.manifest["index"]["items"]["report_weight"]
    for i in (0, 777, len(b.cases) - 1):
        x = np.asarray(sig[i], dtype=np.float32)
        v = b.encoder.encode(ecg_image(x, None, b.imaging_config))
        assert v.shape == (b.dim,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
        assert 1 - w - 1e-3 < float(items[i] @ v) <= 1 + 1e-4       # its own item: (1 - w) ECG + w report
        ids, scores = b.index.search(v, 10)
        exact = np.argsort(-(items @ v), kind="stable")[:10]
        assert list(ids[:5]) == list(exact[:5])
        np.testing.assert_allclose(scores, np.sort(items @ v)[::-1][:10], atol=1e-4)
