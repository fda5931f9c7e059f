"""ecgret's query path next to the pipeline the paper describes (Qiu et al., ML4H 2023), in the same run.

The paper's pipeline, as published:

* preprocessing: the same as ecgret's (``edge.signal.preprocess``: 0.5-40 Hz, 50 Hz notch, 100 Hz, 10 s, z-score per
  lead; the paper's own filter chain is not the comparison here, so both sides pay the same for it);
* R peaks on lead II (ecgret's Pan-Tompkins-style detector, ``edge.peaks.r_peaks``: the paper names none),
  *one random beat* per lead (35 samples before and 65 after
  the R peak at 100 Hz, the same beat position on every lead), max-abs normalised per lead;
* GASF, recurrence plot and MTF (4 quantile bins) with ``pyts.image`` (``GramianAngularField``, ``RecurrencePlot``,
  ``MarkovTransitionField``) as the R, G and B channels (each mapped to [-1, 1]), the 12 leads in the 3 x 4 grid
  (300 x 400), resized to 224 x 224 (PIL, bilinear);
* a ViT in float32 TFLite at 224 x 224: ViT-Tiny dimensions (patch 16, width 192, depth 12, 3 heads, MLP 768, a class
  token; the embedding is the class token after the final layer norm, 192-d), random init, built in Keras and
  converted in a subprocess (TensorFlow never enters the benchmark processes), cached under ``runs/bench_vs_paper/``;
  run by the interpreter ecgret uses (``edge.encoder.Encoder``, 1 thread, the same kernel set);
* exhaustive float32 cosine search over an archive of the default bundle's item count (1,625) at the ViT's dimension:
  ``A @ q`` and the top 10. The archive vectors are random unit vectors: the search costs the same whatever they are,
  and embedding 1,625 archive records with a random ViT would take minutes and mean nothing.

ecgret: ``edge.retrieval.Retriever`` on the shipped bundle (``edge/bundles/default``) at threads=1, as ``ecgret query``
runs it (quality gate, measurements, int8 student, Annoy, measured rerank); per-stage timings from ``query_record``.

The timed pass runs every side in this one process: each side is built here, and query i goes to each side in turn
(which side goes first rotates from one query to the next), so all are timed in the same process and run under the
same load; reading the record is not timed. BLAS, OpenMP and numba run on 1 thread (the script re-executes itself
with those variables set before numpy loads). Start-up time and peak RSS (VmHWM) need a process of their own per
side, so each side is then started alone in a child process (this script with ``--side``) and given the first
queries of the plan. A second timed pass (``--xnnpack``, on by default) runs both encoders with the XNNPACK delegate
instead of the built-in kernels: the float32 ViT gains most from it, so the speed-up is reported both ways.

Queries: raw CinC 2021 records (500 Hz, mV) and PTB-XL fold-9 rows (100 Hz) from the shared data, alternating.

    python benchmarks/bench_vs_paper.py [--queries 60] [--warmup 5] [--json results/bench_vs_paper.json]

The trained paper-mode teacher (``benchmarks/paper_teacher.py``): where ``runs/`` holds one (``ecgret-convert
train-teacher --config configs/teacher_paper224.toml``, the paper's 224 x 224 input and ViT-Tiny dimensions, or
``configs/teacher_paper.toml``, 96 x 128 and 4 layers; ``--teacher RUN`` names which, ``--teacher none`` leaves it
out) a third child runs the paper's query path with it (preprocess, median beats, the paper's 3 x 4 GASF/RP/MTF grid
by ``edge.imaging`` mode ``paper``, the teacher in float32 TFLite, exhaustive cosine over folds 1-8), timed in the
same pass, and then computes the fold-9 retrieval of both sides (the teacher through its TFLite, ecgret's int8 student
through the device interpreter; EVALUATION.md protocol). The random-init ViT-Tiny has no retrieval figures.

Recorded figures beside them: ecgret's fold-9 metrics from the bundle manifest (``evaluation``, ``rerank.cv.fold9``).
A benchmark reports; it asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_CACHE = ROOT / "runs" / "bench_vs_paper"
VIT = {"image": 224, "patch": 16, "width": 192, "depth": 12, "heads": 3, "mlp": 768, "seed": 0}
VIT_NAME = "vit_tiny_p16_224_f32_seed0.tflite"
TOP_K = 10
BEFORE, AFTER = 35, 65  # the paper's beat window at 100 Hz
GRID = ((0, 3, 6, 9), (1, 4, 7, 10), (2, 5, 8, 11))  # rows x columns of LEADS12 indices (I/II/III, aVR/aVL/aVF, ...)
TARGET_SPEEDUP = 15.0
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
ECGRET_STAGES = ("preprocess", "quality", "measure", "image", "encode", "search")
PAPER_STAGES = ("preprocess", "rpeaks", "image", "encode", "search")
# rows of the table: (label, ecgret stage, paper stage)
ROWS = (
    ("preprocess", "preprocess", "preprocess"),
    ("quality gate", "quality", None),
    ("measurements", "measure", None),
    ("R peaks + beat", None, "rpeaks"),
    ("image", "image", "image"),
    ("encode", "encode", "encode"),
    ("search", "search", "search"),
)


# ============================================================================================ the machine


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    from edge.bench import machine

    m = machine()
    m["numpy"] = np.__version__
    m["versions"] = {
        d: _version(d)
        for d in (
            "ai-edge-litert",
            "tflite-runtime",
            "annoy",
            "pyts",
            "numba",
            "scipy",
            "pillow",
            "scikit-learn",
            "tensorflow-cpu",
        )
    }
    if m["versions"]["tensorflow-cpu"] is None:
        m["versions"]["tensorflow"] = _version("tensorflow")
    return m


# ============================================================================================ queries


def query_plan(n: int, data_dir: Path | None = None) -> list[dict]:
    """``n`` query specs, alternating raw CinC 2021 records (500 Hz) and PTB-XL fold-9 rows (100 Hz)."""
    import csv

    from edge.paths import shared_data_dir

    d = Path(data_dir) if data_dir else shared_data_dir()
    cinc = [{"kind": "cinc500", "path": str(p), "name": p.stem} for p in sorted((d / "cinc2021-sample").glob("*.hea"))]
    ptb = []
    cases = d / "ptbxl-subset" / "cases.csv"
    if cases.is_file():
        with open(cases, newline="") as f:
            for row in csv.DictReader(f):
                if row["strat_fold"] == "9" and row["signal_row"]:
                    ptb.append({"kind": "ptbxl100", "row": int(row["signal_row"]), "name": f"ptbxl-{row['ecg_id']}"})
    if not cinc and not ptb:
        raise SystemExit(f"no query records in {d} (set ECGRET_DATA to the shared data)")
    out: list[dict] = []
    i = j = 0
    while len(out) < n and (i < len(cinc) or j < len(ptb)):
        if i < len(cinc) and (len(out) % 2 == 0 or j >= len(ptb)):
            out.append(cinc[i])
            i += 1
        elif j < len(ptb):
            out.append(ptb[j])
            j += 1
    for q in out:
        q["data_dir"] = str(d)
    return out


def load_query(spec: dict):
    """The :class:`edge.record.Record` of a query spec."""
    from edge.leads import LEADS12
    from edge.record import Record

    if spec["kind"] == "cinc500":
        from edge.io import read_record

        return read_record(spec["path"])
    sig = np.load(Path(spec["data_dir"]) / "ptbxl-subset" / "signals_100hz.npy", mmap_mode="r")
    return Record(np.asarray(sig[spec["row"]], dtype=np.float64), 100.0, LEADS12, spec["name"])


# ============================================================================================ the paper's ViT


def vit_macs(v: dict = VIT) -> int:
    """Multiply-accumulates of one ViT forward pass (patch embedding, attention, MLP; norms and softmax left out)."""
    n_patch = (v["image"] // v["patch"]) ** 2
    n, d, mlp = n_patch + 1, v["width"], v["mlp"]
    embed = n_patch * (v["patch"] ** 2 * 3) * d
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * mlp
    return int(embed + v["depth"] * block)


def build_vit(out: Path) -> None:
    """(Run in a subprocess: imports TensorFlow.) The random-init ViT-Tiny as float32 TFLite at ``out``, and
    ``out``.json with its parameter count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(VIT["seed"])
    L = keras.layers
    v = VIT

    class ClassTokenPosition(L.Layer):
        """Prepends a learned class token and adds learned position embeddings: (B, N, D) -> (B, N + 1, D)."""

        def build(self, input_shape):
            init = keras.initializers.RandomNormal(stddev=0.02)
            self.cls = self.add_weight(shape=(1, 1, input_shape[2]), initializer=init, name="cls")
            self.pos = self.add_weight(shape=(1, input_shape[1] + 1, input_shape[2]), initializer=init, name="pos")

        def call(self, x):
            cls = keras.ops.broadcast_to(self.cls, (keras.ops.shape(x)[0], 1, self.cls.shape[2]))
            return keras.ops.concatenate([cls, x], axis=1) + self.pos

    inp = keras.Input((v["image"], v["image"], 3), batch_size=1, name="image")
    x = L.Conv2D(v["width"], v["patch"], strides=v["patch"], name="patch_embed")(inp)
    n_tok = (v["image"] // v["patch"]) ** 2
    x = L.Reshape((n_tok, v["width"]))(x)
    x = ClassTokenPosition(name="cls_pos")(x)
    for b in range(v["depth"]):
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln1")(x)
        y = L.MultiHeadAttention(v["heads"], v["width"] // v["heads"], name=f"b{b}_attn")(y, y)
        x = L.Add()([x, y])
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln2")(x)
        y = L.Dense(v["mlp"], activation="gelu", name=f"b{b}_mlp1")(y)
        y = L.Dense(v["width"], name=f"b{b}_mlp2")(y)
        x = L.Add()([x, y])
    x = L.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    z = L.Lambda(lambda t: t[:, 0], name="cls_out")(x)
    model = keras.Model(inp, z, name="vit_tiny")
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    info = {
        **VIT,
        "params": int(model.count_params()),
        "macs": vit_macs(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "init": "random (Keras defaults; class token and positions N(0, 0.02))",
    }
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")


def ensure_vit(cache: Path, say) -> tuple[Path, dict]:
    """The cached ViT-Tiny float32 TFLite (built in a subprocess on first use) and its info."""
    path = cache / VIT_NAME
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        say(f"building the random-init ViT-Tiny (float32 TFLite) in a subprocess -> {path} ...")
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--build-vit", str(path)],
            cwd=ROOT,
            env=_child_env(),
            capture_output=True,
            text=True,
        )
        if r.returncode != 0 or not path.is_file():
            raise SystemExit(f"building the ViT failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
        say(f"  built in {time.perf_counter() - t0:.1f} s")
    return path, json.loads(path.with_suffix(".json").read_text())


def paper_teacher_runs() -> list[str]:
    """Trained paper-mode teachers under runs/ (``ecgret-convert train-teacher --config configs/teacher_paper.toml``
    writes runs/teacher/paper/)."""
    found = []
    for cfg in sorted((ROOT / "runs").glob("**/config.toml")):
        d = cfg.parent
        try:
            import tomllib

            mode = tomllib.loads(cfg.read_text()).get("imaging", {}).get("mode")
        except Exception:  # noqa: BLE001 - an unreadable config is not a teacher
            continue
        if mode == "paper" and (d / "image_encoder.keras").is_file():
            found.append(str(d.relative_to(ROOT)))
    return found


# ============================================================================================ the two sides


class EcgretSide:
    """edge.retrieval.Retriever on the shipped bundle, 1 interpreter thread."""

    stages = ECGRET_STAGES

    def __init__(self):
        from edge.bundle import load_bundle, resolve_bundle_path
        from edge.retrieval import Retriever

        self.bundle = b = load_bundle(None, threads=1)  # the kernel set: $ECGRET_KERNELS, else "builtin"
        self.retriever = Retriever(b, threads=1)
        enc = self.retriever.encoder
        self.last: list = [None]
        inner = enc.encode

        def encode(img):
            v = inner(img)
            self.last[0] = v
            return v

        enc.encode = encode  # keeps the query's embedding (for the shape check); a function call per query
        path = Path(resolve_bundle_path(None))
        man = b.manifest
        self.info = {
            "pipeline": "edge.retrieval.Retriever.query_record (ecgret query), shipped bundle",
            "bundle": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
            "bundle_name": b.name,
            "image_shape": list(man["imaging"]["shape"]),
            "model": "int8 TFLite student (distilled)",
            "model_bytes": (path / "encoder.tflite").stat().st_size,
            "model_params": man["encoder"].get("params"),
            "model_macs": man["encoder"].get("macs"),
            "embedding_dim": int(enc.dim),
            "archive_items": len(b.index),
            "search": f"Annoy ({man['index']['n_trees']} trees, search_k {man['index']['search_k']}) "
            f"+ measured rerank (pool {man.get('rerank', {}).get('pool', '-')})",
            "index_bytes": (path / "index.ann").stat().st_size,
            "interpreter": enc.backend,
            "kernels": enc.kernels,
            "op_resolver": enc.op_resolver,
            "threads": enc.threads,
        }

    def query(self, rec, i: int) -> tuple[dict, np.ndarray]:
        res = self.retriever.query_record(rec)
        return dict(res.timings), self.last[0]


class PaperSide:
    """The paper's pipeline (module docstring): pyts images of one random beat per lead, a float32 ViT at 224 x 224,
    exhaustive float32 cosine search."""

    stages = PAPER_STAGES

    def __init__(self, vit_path: Path, n_items: int, seed: int = 0):
        from PIL import Image
        from pyts.image import GramianAngularField, MarkovTransitionField, RecurrencePlot

        from edge.encoder import Encoder
        from edge.peaks import r_peaks

        self.Image, self.r_peaks = Image, r_peaks
        self.gaf = GramianAngularField(method="summation", sample_range=None)  # the beats are max-abs normalised
        self.rp = RecurrencePlot()
        self.mtf = MarkovTransitionField(n_bins=4, strategy="quantile")
        self.enc = Encoder(vit_path, threads=1)  # the kernel set as ecgret's: $ECGRET_KERNELS, else "builtin"
        self.size = int(self.enc.input_shape[1])
        self.seed = seed
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((n_items, self.enc.dim)).astype(np.float32)
        self.archive = a / np.linalg.norm(a, axis=1, keepdims=True)
        info = json.loads(Path(vit_path).with_suffix(".json").read_text())
        self.info = {
            "pipeline": "the paper's: random beat per lead, pyts GASF/RP/MTF, 3x4 grid, 224x224, ViT, exact cosine",
            "image_shape": [self.size, self.size, 3],
            "model": "float32 TFLite ViT-Tiny (patch 16, width 192, depth 12, 3 heads, MLP 768), random init",
            "model_path": str(Path(vit_path).relative_to(ROOT))
            if Path(vit_path).is_relative_to(ROOT)
            else str(vit_path),
            "model_bytes": Path(vit_path).stat().st_size,
            "model_params": info.get("params"),
            "model_macs": info.get("macs"),
            "converted_with": {"tensorflow": info.get("tensorflow"), "keras": info.get("keras")},
            "embedding_dim": int(self.enc.dim),
            "archive_items": int(n_items),
            "search": "exhaustive float32 cosine (archive matrix @ query, top 10); archive vectors random unit",
            "index_bytes": int(self.archive.nbytes),
            "interpreter": self.enc.backend,
            "kernels": self.enc.kernels,
            "op_resolver": self.enc.op_resolver,
            "threads": self.enc.threads,
        }

    def beat(self, pre, i: int) -> np.ndarray:
        """(12, 100) one random beat, R-peak centred, the same position on every lead; max-abs normalised."""
        x, n, fs = pre.signal, pre.n_valid, pre.fs
        present = np.asarray(pre.present, bool)
        lead = 1 if present[1] else int(np.flatnonzero(present)[0]) if present.any() else 1  # lead II
        pk = self.r_peaks(x[:n, lead], fs)
        pk = pk[(pk >= BEFORE) & (pk < n - AFTER)]
        rng = np.random.default_rng([self.seed, i])
        p = int(rng.choice(pk)) if pk.size else max(BEFORE, min(n - AFTER, n // 2))
        b = np.ascontiguousarray(x[p - BEFORE : p + AFTER].T, dtype=np.float64)
        m = np.abs(b).max(axis=1, keepdims=True)
        return np.where(m > 0, b / np.where(m > 0, m, 1.0), 0.0)

    def image(self, beats: np.ndarray) -> np.ndarray:
        """(224, 224, 3) float32: GASF, RP, MTF of each lead's beat as R, G, B in [-1, 1], leads in the 3 x 4 grid."""
        w = beats.shape[1]
        ok = beats.std(axis=1) > 1e-6  # pyts' quantile bins refuse a constant series (an absent lead: zero tile)
        tiles = np.zeros((12, w, w, 3), np.float32)
        if ok.any():
            b = beats[ok]
            tiles[ok, :, :, 0] = self.gaf.fit_transform(b)
            tiles[ok, :, :, 1] = 1.0 - self.rp.fit_transform(b)
            tiles[ok, :, :, 2] = 2.0 * self.mtf.fit_transform(b) - 1.0
        grid = np.zeros((3 * w, 4 * w, 3), np.float32)
        for r, row in enumerate(GRID):
            for c, lead in enumerate(row):
                grid[r * w : (r + 1) * w, c * w : (c + 1) * w] = tiles[lead]
        out = np.empty((self.size, self.size, 3), np.float32)
        for ch in range(3):
            im = self.Image.fromarray(np.ascontiguousarray(grid[:, :, ch]))
            out[:, :, ch] = np.asarray(im.resize((self.size, self.size), self.Image.Resampling.BILINEAR))
        return out

    def query(self, rec, i: int) -> tuple[dict, np.ndarray]:
        from edge.signal import preprocess

        t0 = time.perf_counter()
        pre = preprocess(rec, target_fs=100, duration_s=10.0, notch_hz=50.0)
        t1 = time.perf_counter()
        beats = self.beat(pre, i)
        t2 = time.perf_counter()
        img = self.image(beats)
        t3 = time.perf_counter()
        v = self.enc.encode(img)
        t4 = time.perf_counter()
        s = self.archive @ v
        top = np.argpartition(-s, TOP_K)[:TOP_K]
        top = top[np.argsort(-s[top])]
        t5 = time.perf_counter()
        t = {"preprocess": t1 - t0, "rpeaks": t2 - t1, "image": t3 - t2, "encode": t4 - t3, "search": t5 - t4}
        t["total"] = t5 - t0
        return t, v


def _status_kb(key: str = "VmHWM") -> int:
    """``VmHWM`` (peak resident set) or ``VmRSS`` of this process, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def make_side(side: str, vit: Path | None, n_items: int, seed: int, teacher=None):
    """One side, built in this process: ``ecgret``, ``paper`` (the ViT-Tiny at ``vit``) or ``teacher`` (the
    paper-mode teacher's float32 TFLite ``teacher``: benchmarks/paper_teacher.py)."""
    if side == "teacher":
        import paper_teacher

        tfl = Path(teacher)
        return paper_teacher.TeacherSide(tfl, json.loads(tfl.with_suffix(".json").read_text()))
    return EcgretSide() if side == "ecgret" else PaperSide(vit, n_items, seed)


def _query_result(side, rec, i: int) -> dict:
    """One query of one side: its stage timings and what its embedding looks like, or the error it raised."""
    try:
        t, v = side.query(rec, i)
        v = np.asarray(v)
        return {"i": i, "timings": t, "shape": list(v.shape), "dtype": str(v.dtype), "norm": float(np.linalg.norm(v))}
    except Exception as e:  # noqa: BLE001 - a query one side refuses is reported and left out of all
        return {"i": i, "error": f"{type(e).__name__}: {e}"}


def worker(
    side: str, plan_path: Path, vit: Path | None, n_items: int, seed: int, kernels: str | None, teacher=None
) -> None:
    """A child: answers one line per command on the original stdout (fd 1 is pointed at stderr, so that nothing a
    library prints can break the protocol). Commands: ``q I`` (query I of the plan), ``rss``, ``end``."""
    if kernels:
        os.environ["ECGRET_KERNELS"] = kernels
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    t0 = time.perf_counter()
    plan = json.loads(Path(plan_path).read_text())

    s = make_side(side, vit, n_items, seed, teacher)
    hello = {"ready": True, "startup_s": time.perf_counter() - t0, "info": s.info}
    hello["rss_ready_mb"] = _status_kb("VmRSS") / 1024.0
    hello["peak_rss_ready_mb"] = _status_kb("VmHWM") / 1024.0
    proto.write(json.dumps(hello) + "\n")
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "q":
            i = int(arg)
            try:
                out = _query_result(s, load_query(plan[i]), i)
            except Exception as e:  # noqa: BLE001 - a record that cannot be read is reported and left out
                out = {"i": i, "error": f"{type(e).__name__}: {e}"}
            proto.write(json.dumps(out) + "\n")
        elif cmd == "rss":
            proto.write(json.dumps({"vmhwm_kb": _status_kb("VmHWM")}) + "\n")
        elif cmd == "end":
            proto.write(json.dumps({"bye": True}) + "\n")
            break


# ============================================================================================ the parent


def _child_env() -> dict:
    env = dict(os.environ)
    env.update(ONE_THREAD)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


class Child:
    def __init__(self, side: str, args: list[str], log: Path):
        self.side = side
        self.log = log
        self._err = open(log, "w")
        self.p = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--side", side, *args],
            cwd=ROOT,
            env=_child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            bufsize=1,
        )
        self.hello = self.read()

    def read(self) -> dict:
        line = self.p.stdout.readline()
        if not line:
            code = self.p.wait(timeout=30)
            self._err.flush()
            err = self.log.read_text(errors="replace")
            raise SystemExit(f"the {self.side} process ended unexpectedly (exit {code}):\n{err[-3000:]}")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            self.ask("end")
        finally:
            self.p.stdin.close()
            self.p.wait(timeout=30)
            self._err.close()


def _pass(children: dict, n: int, warmup: int, say, label: str) -> tuple[dict, list, dict]:
    """Warm-up on queries 0..warmup-1, then queries 0..n-1 to both children in turn.

    Returns (per side the query results, the queries left out, per side the first warm-up query's seconds)."""
    order = list(children)
    first: dict = {}
    for i in range(min(warmup, n)):
        for side in order:
            r = children[side].ask(f"q {i}")
            if "timings" in r:
                first.setdefault(side, r["timings"]["total"])
    raw: dict = {side: [] for side in order}
    skipped = []
    t0 = time.perf_counter()
    for i in range(n):
        got = {}
        for side in order if i % 2 == 0 else order[::-1]:
            got[side] = children[side].ask(f"q {i}")
        errs = {s: r["error"] for s, r in got.items() if "error" in r}
        if errs:
            skipped.append({"query": i, "errors": errs})
            continue
        for side in order:
            raw[side].append(got[side])
        if (i + 1) % 20 == 0:
            say(f"  {label}: {i + 1}/{n} queries ({time.perf_counter() - t0:.0f} s)")
    return raw, skipped, first


def _summary(results: list, stages) -> dict:
    from edge.bench import latency_stats

    out = {k: latency_stats([r["timings"][k] for r in results]) for k in stages if results}
    if results:
        out["total"] = latency_stats([r["timings"]["total"] for r in results])
    return out


def _embeddings(results: list) -> dict:
    shapes = sorted({tuple(r["shape"]) for r in results})
    norms = [r["norm"] for r in results]
    return {
        "shape": list(shapes[0]) if len(shapes) == 1 else [list(s) for s in shapes],
        "dtype": sorted({r["dtype"] for r in results}),
        "norm_min": round(min(norms), 6) if norms else None,
        "norm_max": round(max(norms), 6) if norms else None,
        "n": len(results),
    }


def _ratio(a, b):
    return round(a / b, 2) if a and b else None


def fold9_metrics() -> dict:
    """The retrieval metrics of both sides on PTB-XL fold 9, from what is recorded (nothing is computed here)."""
    man = json.loads((ROOT / "edge" / "bundles" / "default" / "manifest.json").read_text())
    ev = man.get("evaluation", {})
    keys = ("P@1", "P@10", "mAP@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")
    rows = {}
    for name, m in ev.get("metrics", {}).items():
        if name == "student int8 (int8 in/out, LiteRT)":
            rows["ecgret int8 student, cosine"] = {k: round(m[k], 3) for k in keys if k in m}
    cv = man.get("rerank", {}).get("cv", {}).get("fold9", {})
    if "measured rerank" in cv:
        rows["ecgret int8 student, measured rerank (as shipped)"] = {
            k: round(v, 3) for k, v in cv["measured rerank"].items()
        }
    reference = None
    doc = ROOT / "docs" / "TRAINING.md"
    if doc.is_file():  # ecgret's own retrained paper-mode teacher, recorded there (its run is not kept)
        head = None
        for line in doc.read_text().splitlines():
            if line.startswith("| variant |") and head is None:
                head = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| teacher paper |") and head:
                vals = [c.strip() for c in line.strip("|").split("|")]
                reference = {
                    "source": "docs/TRAINING.md, 'teacher paper' row (ECG -> ECG)",
                    "what": "ecgret's recipe on paper-mode images (96x128, median beat, 0.65 M-parameter ViT, "
                    "ecgret's imaging); not the 224x224 ViT-Tiny timed here, and its run is not kept under runs/",
                    "metrics": {h: float(v) for h, v in zip(head[1:], vals[1:]) if h in keys},
                }
                break
    teachers = paper_teacher_runs()
    return {
        "protocol": ev.get("heading"),
        "ecgret": rows,
        "paper": {
            "available": False,
            "reason": "the paper-side ViT is random-init: no paper-mode teacher at 224x224 was trained, so it has no "
            "meaningful retrieval metrics"
            + (f" (paper-mode teachers found under runs/, not timed here: {', '.join(teachers)})" if teachers else "")
            + "",
            "paper_mode_teachers_under_runs": teachers,
            "reference_not_timed": reference,
        },
    }


def inprocess_pass(names, plan, n, warmup, make, say, label, teacher_run: Path | None = None) -> dict:
    """The timed pass: the sides ``names`` built in this process by ``make(name)``, query i to each in turn (the
    first rotates), after ``warmup`` untimed queries each. With the teacher among them, its fold-9 retrieval and
    ecgret's are computed at the end, and its TFLite checked against ``teacher_run``'s embeddings."""
    sides, built = {}, {}
    for name in names:
        t0 = time.perf_counter()
        sides[name] = make(name)
        built[name] = time.perf_counter() - t0
    for i in range(min(warmup, n)):
        rec = load_query(plan[i])
        for name in names:
            sides[name].query(rec, i)
    raw: dict = {name: [] for name in names}
    skipped = []
    t0 = time.perf_counter()
    for i in range(n):
        rec = load_query(plan[i])
        k = i % len(names)
        got = {name: _query_result(sides[name], rec, i) for name in names[k:] + names[:k]}
        errs = {name: r["error"] for name, r in got.items() if "error" in r}
        if errs:
            skipped.append({"query": i, "errors": errs})
            continue
        for name in names:
            raw[name].append(got[name])
        if (i + 1) % 20 == 0:
            say(f"  {label}: {i + 1}/{n} queries ({time.perf_counter() - t0:.0f} s)")
    fold9 = None
    if "teacher" in sides and teacher_run is not None:
        import paper_teacher

        say("retrieval on PTB-XL fold 9: the paper-mode teacher and ecgret's int8 student, computed now ...")
        fold9 = {
            "fold9": paper_teacher.fold9(sides["teacher"]),
            "check": sides["teacher"].check_against_run(teacher_run),
        }
    return {
        "raw": raw,
        "skipped": skipped,
        "info": {name: side.info for name, side in sides.items()},
        "build_s": {name: round(v, 2) for name, v in built.items()},
        "fold9": fold9,
    }


def side_pass(
    plan_path: Path, vit: Path, n: int, warmup: int, kernels: str | None, say, teacher: Path | None = None
) -> dict:
    """Each side (and the trained paper-mode teacher, with ``teacher``: its float32 TFLite) in a fresh process of its
    own on the first ``n`` queries (:func:`_pass`): its start-up time, RSS when ready and peak RSS (VmHWM)."""
    extra = ["--plan", str(plan_path)] + (["--kernels", kernels] if kernels else [])
    logs = Path(plan_path).parent
    ec = Child("ecgret", extra, logs / f"ecgret-{kernels or 'default'}.log")
    children = {"ecgret": ec}
    try:
        n_items = int(ec.hello["info"]["archive_items"])
        children["paper"] = Child(
            "paper", extra + ["--vit", str(vit), "--items", str(n_items)], logs / f"paper-{kernels or 'default'}.log"
        )
        if teacher is not None:
            children["teacher"] = Child("teacher", extra + ["--teacher-tflite", str(teacher)], logs / "teacher.log")
        raw, skipped, first = _pass(children, n, warmup, say, kernels or "timed pass")
        rss = {s: round(c.ask("rss")["vmhwm_kb"] / 1024.0, 1) for s, c in children.items()}
    finally:
        for c in children.values():
            c.close()
    return {
        "raw": raw,
        "skipped": skipped,
        "rss": rss,
        "info": {s: c.hello["info"] for s, c in children.items()},
        "startup": {
            s: {
                "startup_s": round(c.hello["startup_s"], 2),
                "rss_ready_mb": round(c.hello["rss_ready_mb"], 1),
                "peak_rss_ready_mb": round(c.hello["peak_rss_ready_mb"], 1),
                "first_query_ms": round(first[s] * 1e3, 2) if s in first else None,
            }
            for s, c in children.items()
        },
    }


def run(args) -> dict:
    import tempfile

    from edge.bench import latency_stats

    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    load_start = [round(x, 2) for x in os.getloadavg()]
    vit, vit_info = ensure_vit(Path(args.cache), say)
    teacher, teacher_info = None, None
    if args.teacher != "none":
        import paper_teacher

        runs = [Path(args.teacher)] if args.teacher else paper_teacher.run_dirs(ROOT)
        if runs:
            teacher, teacher_info = paper_teacher.ensure_tflite(runs[0], Path(args.cache), _child_env(), say)
        else:
            say(
                "no trained paper-mode teacher under runs/ (ecgret-convert train-teacher --config "
                "configs/teacher_paper.toml): the paper side has no retrieval figures"
            )
    plan = query_plan(args.queries, Path(args.data) if args.data else None)
    n = len(plan)
    from edge.bundle import resolve_bundle_path

    n_items = int(json.loads((Path(resolve_bundle_path(None)) / "manifest.json").read_text())["index"]["n_items"])
    names = ["ecgret", "paper"] + (["teacher"] if teacher is not None else [])

    def maker(kernels: str | None):
        def make(name: str):
            old = os.environ.get("ECGRET_KERNELS")
            if kernels:
                os.environ["ECGRET_KERNELS"] = kernels
            try:
                return make_side(name, vit, n_items, args.seed, teacher)
            finally:
                if kernels and old is None:
                    del os.environ["ECGRET_KERNELS"]
                elif kernels:
                    os.environ["ECGRET_KERNELS"] = old

        return make

    teacher_run = Path(teacher_info["run"]) if teacher_info else None
    say(f"timed pass: {', '.join(names)} in this process, {n} queries, interpreter kernels as ecgret's ...")
    main_pass = inprocess_pass(names, plan, n, args.warmup, maker(None), say, "timed pass", teacher_run)
    xnn = None
    if args.xnnpack:
        say(f"second pass: both encoders on the XNNPACK delegate, in this process, {n} queries ...")
        xnn = inprocess_pass(["ecgret", "paper"], plan, n, args.warmup, maker("xnnpack"), say, "xnnpack")
    n_rss = min(n, args.rss_queries)
    with tempfile.TemporaryDirectory(prefix="bench_vs_paper-") as tmp:
        plan_path = Path(tmp) / "plan.json"
        plan_path.write_text(json.dumps(plan))
        say(f"start-up and peak RSS: each side alone in its own process, {n_rss} queries ...")
        rss = side_pass(plan_path, vit, n_rss, min(args.warmup, n_rss), None, say, teacher)
        xnn_rss = side_pass(plan_path, vit, n_rss, min(args.warmup, n_rss), "xnnpack", say) if args.xnnpack else None
    sides = {}
    for s in ("ecgret", "paper"):
        st = ECGRET_STAGES if s == "ecgret" else PAPER_STAGES
        sides[s] = {
            **main_pass["info"][s],
            **rss["startup"][s],
            "stages": _summary(main_pass["raw"][s], st),
            "end_to_end_by_source": {
                k: latency_stats([r["timings"]["total"] for r in main_pass["raw"][s] if plan[r["i"]]["kind"] == k])
                for k in sorted({q["kind"] for q in plan})
                if any(plan[r["i"]]["kind"] == k for r in main_pass["raw"][s])
            },
            "peak_rss_mb": rss["rss"][s],
            "embeddings": _embeddings(main_pass["raw"][s]),
        }
        if xnn and xnn_rss:
            sides[s]["xnnpack"] = {
                "kernels": xnn["info"][s]["kernels"],
                "op_resolver": xnn["info"][s]["op_resolver"],
                "stages": _summary(xnn["raw"][s], st),
                "peak_rss_mb": xnn_rss["rss"][s],
                **xnn_rss["startup"][s],
                "skipped": xnn["skipped"],
            }
    if teacher is not None:
        import paper_teacher

        sides["teacher"] = {
            **main_pass["info"]["teacher"],
            **rss["startup"]["teacher"],
            "stages": _summary(main_pass["raw"]["teacher"], paper_teacher.STAGES),
            "peak_rss_mb": rss["rss"]["teacher"],
            "embeddings": _embeddings(main_pass["raw"]["teacher"]),
            "tflite_vs_training_run": main_pass["fold9"]["check"],
            "exported": teacher_info,
        }
    skipped = main_pass["skipped"]
    raw = main_pass["raw"]
    e, p = sides["ecgret"], sides["paper"]
    ratios = {
        "stages_p50": {
            lab: _ratio(p["stages"][ps]["p50_ms"], e["stages"][es]["p50_ms"])
            for lab, es, ps in ROWS
            if es and ps and es in e["stages"] and ps in p["stages"]
        },
        "end_to_end_p50": _ratio(p["stages"]["total"]["p50_ms"], e["stages"]["total"]["p50_ms"]),
        "end_to_end_p95": _ratio(p["stages"]["total"]["p95_ms"], e["stages"]["total"]["p95_ms"]),
        "peak_rss": _ratio(p["peak_rss_mb"], e["peak_rss_mb"]),
        "model_bytes": _ratio(p["model_bytes"], e["model_bytes"]),
        "model_macs": _ratio(p["model_macs"], e["model_macs"]),
    }
    if "teacher" in sides:
        ratios["teacher_end_to_end_p50"] = _ratio(
            sides["teacher"]["stages"]["total"]["p50_ms"], e["stages"]["total"]["p50_ms"]
        )
    if xnn and raw["ecgret"] and xnn["raw"]["paper"]:
        xe, xp = e["xnnpack"]["stages"], p["xnnpack"]["stages"]
        ratios["encode_p50_xnnpack"] = _ratio(xp["encode"]["p50_ms"], xe["encode"]["p50_ms"])
        ratios["end_to_end_p50_xnnpack"] = _ratio(xp["total"]["p50_ms"], xe["total"]["p50_ms"])
        ratios["end_to_end_p95_xnnpack"] = _ratio(xp["total"]["p95_ms"], xe["total"]["p95_ms"])
        # each side as it would be deployed: ecgret as shipped (built-in kernels), the float ViT on XNNPACK
        ratios["end_to_end_p50_paper_xnnpack_vs_ecgret_shipped"] = _ratio(
            xp["total"]["p50_ms"], e["stages"]["total"]["p50_ms"]
        )
        ratios["end_to_end_p95_paper_xnnpack_vs_ecgret_shipped"] = _ratio(
            xp["total"]["p95_ms"], e["stages"]["total"]["p95_ms"]
        )
    sources: dict = {}
    for q in plan:
        sources[q["kind"]] = sources.get(q["kind"], 0) + 1
    x50 = ratios.get("end_to_end_p50_paper_xnnpack_vs_ecgret_shipped")
    mach = machine_info()
    # the 1/5/15-minute load averages: other processes on the machine slow both sides (the queries interleave)
    mach["loadavg_start"], mach["loadavg_end"] = load_start, [round(x, 2) for x in os.getloadavg()]
    res = {
        "benchmark": "benchmarks/bench_vs_paper.py",
        "machine": mach,
        "queries": {
            "n": n,
            "timed": len(raw["ecgret"]),
            "warmup": min(args.warmup, n),
            "sources": sources,
            "names": [q["name"] for q in plan],
            "skipped": skipped,
            "protocol": "every side in this one process, query i to each in turn (the first rotates); record "
            "reading not timed; 1 interpreter thread, BLAS/OpenMP/numba 1 thread; start-up and peak RSS from each "
            "side alone in its own process on the first queries",
            "rss_queries": n_rss,
        },
        "vit": vit_info,
        "sides": sides,
        "ratios": ratios,
        "target": {
            "end_to_end_speedup_min": TARGET_SPEEDUP,
            "measured_p50": ratios["end_to_end_p50"],
            "met": bool(ratios["end_to_end_p50"] and ratios["end_to_end_p50"] >= TARGET_SPEEDUP),
            "measured_p50_paper_on_xnnpack": x50,
            "met_paper_on_xnnpack": None if x50 is None else bool(x50 >= TARGET_SPEEDUP),
            # the paper's pipeline with a trained ViT (the paper-mode teacher; at 224 x 224 with ViT-Tiny dimensions
            # from configs/teacher_paper224.toml), whose retrieval is computed in the same run
            "teacher_image_shape": sides["teacher"]["image_shape"] if "teacher" in sides else None,
            "teacher_model_params": sides["teacher"]["model_params"] if "teacher" in sides else None,
            "measured_p50_trained_teacher": ratios.get("teacher_end_to_end_p50"),
            "met_trained_teacher": None
            if ratios.get("teacher_end_to_end_p50") is None
            else bool(ratios["teacher_end_to_end_p50"] >= TARGET_SPEEDUP),
        },
        "retrieval_fold9": {**fold9_metrics(), "measured": main_pass["fold9"] and main_pass["fold9"]["fold9"]},
        "seconds": None,
    }
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    res["table_markdown"] = table_markdown(res)
    return res


def _fmt(x, nd=2) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def table_markdown(res: dict) -> str:
    m, e, p, r = res["machine"], res["sides"]["ecgret"], res["sides"]["paper"], res["ratios"]
    v = m["versions"]
    q = res["queries"]
    src = ", ".join(f"{k} {n}" for k, n in sorted(q["sources"].items()))
    lines = [
        f"ecgret vs the paper's pipeline, {q['timed']} queries ({src}), 1 thread, {m['cpu']} ({m['cores']} cores), "
        f"Python {m['python']}, numpy {m['numpy']}, ai-edge-litert {v.get('ai-edge-litert')}, pyts {v.get('pyts')}; "
        f"interpreter kernels: {e['kernels']} (both sides); load average {m['loadavg_start'][0]:.1f} at the start, "
        f"{m['loadavg_end'][0]:.1f} at the end",
        "",
        "| stage | ecgret p50 / p95 (ms) | paper p50 / p95 (ms) | paper / ecgret (p50) |",
        "| --- | --- | --- | --- |",
    ]

    def cell(side, st):
        if st is None or st not in side["stages"]:
            return "—"
        s = side["stages"][st]
        return f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f}"

    for lab, es, ps in ROWS:
        ratio = r["stages_p50"].get(lab)
        lines.append(f"| {lab} | {cell(e, es)} | {cell(p, ps)} | {_fmt(ratio, 1) + '×' if ratio else '—'} |")
    lines.append(
        f"| **end to end** | **{cell(e, 'total')}** | **{cell(p, 'total')}** | **{_fmt(r['end_to_end_p50'], 1)}×** "
        f"(p95 {_fmt(r['end_to_end_p95'], 1)}×) |"
    )
    if "xnnpack" in e and "total" in e["xnnpack"]["stages"]:
        xe, xp = e["xnnpack"]["stages"], p["xnnpack"]["stages"]
        lines.append(
            f"| encode, XNNPACK delegate | {xe['encode']['p50_ms']:.2f} / {xe['encode']['p95_ms']:.2f} | "
            f"{xp['encode']['p50_ms']:.2f} / {xp['encode']['p95_ms']:.2f} | {_fmt(r.get('encode_p50_xnnpack'), 1)}× |"
        )
        lines.append(
            f"| end to end, XNNPACK delegate | {xe['total']['p50_ms']:.2f} / {xe['total']['p95_ms']:.2f} | "
            f"{xp['total']['p50_ms']:.2f} / {xp['total']['p95_ms']:.2f} | "
            f"{_fmt(r.get('end_to_end_p50_xnnpack'), 1)}× (p95 {_fmt(r.get('end_to_end_p95_xnnpack'), 1)}×) |"
        )
        lines.append(
            f"| end to end, ecgret as shipped (1st pass) vs paper on XNNPACK (2nd pass) | {cell(e, 'total')} | "
            f"{xp['total']['p50_ms']:.2f} / {xp['total']['p95_ms']:.2f} | "
            f"**{_fmt(r.get('end_to_end_p50_paper_xnnpack_vs_ecgret_shipped'), 1)}×** "
            f"(p95 {_fmt(r.get('end_to_end_p95_paper_xnnpack_vs_ecgret_shipped'), 1)}×) |"
        )
    lines += [
        f"| process start to ready (imports, model, index; s) | {e['startup_s']:.2f} | {p['startup_s']:.2f} | "
        f"{_fmt(_ratio(p['startup_s'], e['startup_s']), 0)}× |",
        f"| RSS when ready (MB) | {e['rss_ready_mb']:.1f} | {p['rss_ready_mb']:.1f} | "
        f"{_fmt(_ratio(p['rss_ready_mb'], e['rss_ready_mb']), 1)}× |",
        f"| peak RSS (MB, own process) | {e['peak_rss_mb']:.1f} | {p['peak_rss_mb']:.1f} | {_fmt(r['peak_rss'], 1)}× |",
        *(
            [
                f"| peak RSS, XNNPACK delegate (MB) | {e['xnnpack']['peak_rss_mb']:.1f} | "
                f"{p['xnnpack']['peak_rss_mb']:.1f} | "
                f"{_fmt(_ratio(p['xnnpack']['peak_rss_mb'], e['xnnpack']['peak_rss_mb']), 1)}× |"
            ]
            if "xnnpack" in e
            else []
        ),
        f"| model size | {e['model_bytes'] / 1e6:.2f} MB int8 ({e['model_params'] / 1e6:.2f} M params) | "
        f"{p['model_bytes'] / 1e6:.2f} MB float32 ({p['model_params'] / 1e6:.2f} M params) | "
        f"{_fmt(r['model_bytes'], 0)}× |",
        f"| MACs per image | {e['model_macs'] / 1e6:.1f} M | {p['model_macs'] / 1e6:.0f} M | "
        f"{_fmt(r['model_macs'], 0)}× |",
        f"| image | {'×'.join(map(str, e['image_shape']))} | {'×'.join(map(str, p['image_shape']))} | |",
        f"| archive search | {e['archive_items']} × {e['embedding_dim']}, {e['search']} | "
        f"{p['archive_items']} × {p['embedding_dim']}, exhaustive float32 cosine | |",
    ]
    t = res["sides"].get("teacher")
    if t:
        lines += [
            "",
            f"The paper's pipeline with the paper-mode teacher trained here ({t['model']}; "
            f"{'×'.join(map(str, t['image_shape']))} images, the ViT seeing {'×'.join(map(str, t['vit_input']))}, "
            f"{t['model_params'] / 1e6:.2f} M params, "
            f"{t['model_bytes'] / 1e6:.2f} MB; exhaustive float32 cosine over {t['archive_items']} cases; its TFLite "
            f"against the training run's embeddings: cosine min {t['tflite_vs_training_run']['min']:.6f} over "
            f"{t['tflite_vs_training_run']['n']} cases), timed in the same pass:",
            "",
            "| stage | ecgret p50 / p95 (ms) | paper-mode teacher p50 / p95 (ms) | teacher / ecgret (p50) |",
            "| --- | --- | --- | --- |",
        ]
        for st in ("preprocess", "image", "encode", "search"):
            ratio = _ratio(t["stages"][st]["p50_ms"], e["stages"][st]["p50_ms"])
            lines.append(f"| {st} | {cell(e, st)} | {cell(t, st)} | {_fmt(ratio, 1)}× |")
        lines.append(
            f"| **end to end** | **{cell(e, 'total')}** | **{cell(t, 'total')}** | "
            f"**{_fmt(r.get('teacher_end_to_end_p50'), 1)}×** (p95 "
            f"{_fmt(_ratio(t['stages']['total']['p95_ms'], e['stages']['total']['p95_ms']), 1)}×) |"
        )
        lines.append(f"| peak RSS (MB, own process) | {e['peak_rss_mb']:.1f} | {t['peak_rss_mb']:.1f} | |")
    f9 = res["retrieval_fold9"]
    keys = ("P@10", "mAP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")
    lines += ["", f"Retrieval, PTB-XL fold 9 ({f9.get('protocol') or 'EVALUATION.md protocol'}):", ""]
    lines += ["| model | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    meas = f9.get("measured")
    if meas:
        for name, key in (
            ("ecgret int8 student, cosine (computed in this run)", "ecgret_int8_cosine"),
            ("paper's pipeline, paper-mode teacher float32 (computed in this run)", "paper_teacher"),
        ):
            lines.append(f"| {name} | " + " | ".join(_fmt(meas[key].get(k), 3) for k in keys) + " |")
    for name, mm in f9["ecgret"].items():
        lines.append(f"| {name} (recorded in the manifest) | " + " | ".join(_fmt(mm.get(k), 3) for k in keys) + " |")
    lines.append("| paper pipeline timed here (random-init ViT-Tiny) | " + " | ".join("n/a" for _ in keys) + " |")
    ref = f9["paper"].get("reference_not_timed")
    if not meas:
        lines += ["", f"Paper side: not available — {f9['paper']['reason']}."]
    if ref and not meas:
        mm = ref["metrics"]
        lines.append(
            f"For reference only ({ref['source']}; {ref['what']}): "
            + ", ".join(f"{k} {mm[k]:.3f}" for k in keys if k in mm)
            + "."
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=60, help="timed queries (half CinC 500 Hz, half PTB-XL fold 9)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up queries per side (numba compiles pyts')")
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON (e.g. results/bench_vs_paper.json)")
    ap.add_argument("--cache", default=str(DEFAULT_CACHE), help="where the converted ViT is kept (gitignored runs/)")
    ap.add_argument("--data", default=None, help="the shared data folder (default: $ECGRET_DATA or ../shared/data)")
    ap.add_argument("--no-xnnpack", dest="xnnpack", action="store_false", help="skip the XNNPACK second pass")
    ap.add_argument(
        "--teacher",
        default=None,
        help="a trained paper-mode teacher run (default: the first under runs/; 'none' to leave it out)",
    )
    ap.add_argument(
        "--rss-queries", type=int, default=10, help="queries each side answers alone in its own process (peak RSS)"
    )
    ap.add_argument("--quiet", action="store_true")
    # internal: the child processes
    ap.add_argument("--side", choices=("ecgret", "paper", "teacher"), help=argparse.SUPPRESS)
    ap.add_argument("--teacher-tflite", help=argparse.SUPPRESS)
    ap.add_argument("--export-teacher", nargs=2, metavar=("RUN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    ap.add_argument("--vit", help=argparse.SUPPRESS)
    ap.add_argument("--items", type=int, default=1625, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--kernels", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--build-vit", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if argv is None and any(os.environ.get(k) != v for k, v in ONE_THREAD.items()):
        # BLAS, OpenMP and numba read these when they load (numpy is loaded already): start again with them set
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], _child_env())
    if args.build_vit:
        build_vit(Path(args.build_vit))
        return
    if args.export_teacher:
        import paper_teacher

        paper_teacher.export_tflite(Path(args.export_teacher[0]), Path(args.export_teacher[1]))
        return
    if args.side:
        worker(
            args.side,
            Path(args.plan),
            Path(args.vit) if args.vit else None,
            args.items,
            args.seed,
            args.kernels,
            args.teacher_tflite,
        )
        return
    res = run(args)
    print(res["table_markdown"])
    print(f"\n(benchmark wall time {res['seconds']:.1f} s)")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
