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

ENCODER = repo_root() / "edge" / "bundles" / "default" / "encoder.tflite"


@pytest.fixture(scope="module")
def small_archive_dir(ptbxl_subset, tmp_path_factory):
    """A 120-case archive folder written from real PTB-XL records (every fold), as an importer writes one."""
    from convert.archive import write_archive
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
