"""The retrieval evaluation of shared/docs/EVALUATION.md: metrics on hand-checked cases, baselines on real data."""
from __future__ import annotations

import numpy as np
import pytest

from convert.evaluate import (SUPERCLASSES, auroc, baselines, default_split, evaluate, markdown_table,
                              raw_signal_embeddings, retrieval_metrics, top_k)


def fs(*xs):
    return frozenset(xs)


def test_metrics_by_hand():
    # archive: 4 cases; query 0 is NORM, query 1 is MI+CD (AFIB), query 2 has no superclass (skipped)
    a_lab = [fs("NORM"), fs("MI"), fs("CD"), fs("NORM")]
    a_rhy = [fs("SR"), fs("AFIB"), fs("SR"), fs("AFIB")]
    q_lab = [fs("NORM"), fs("MI", "CD"), fs()]
    q_rhy = [fs("SR"), fs("AFIB"), fs("SR")]
    idx = np.array([[0, 1, 3, 2], [1, 0, 2, 3], [0, 1, 2, 3]])
    sims = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.5, 0.4, 0.2], [1, 1, 1, 1]])
    m = retrieval_metrics(q_lab, q_rhy, a_lab, a_rhy, idx, sims)
    assert m["n_queries"] == 2
    assert m["P@1"] == 1.0
    assert m["P@10"] == pytest.approx(((1 + 0 + 1 + 0) / 4 + (1 + 0 + 1 + 0) / 4) / 2)
    assert m["P@10_exact"] == pytest.approx((2 / 4 + 0) / 2)
    # AP@10 query 0: relevant at ranks 1 and 3; 2 relevant in archive -> (1/1 + 2/3) / 2
    # query 1: relevant at ranks 1 and 3 (MI, CD); 2 relevant in archive -> same
    assert m["mAP@10"] == pytest.approx((1 + 2 / 3) / 2)
    # rhythm: only query 1 is non-SR: top 4 = AFIB, SR, SR, AFIB -> 0.5
    assert m["rhythmP@10_nonSR"] == pytest.approx(0.5) and m["n_queries_nonSR"] == 1
    # NORM class: P@10 for query 0 = 2/4
    assert m["per_class"]["NORM"]["P@10"] == pytest.approx(0.5)


def test_auroc_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s = np.round(rng.random(300), 1)  # many ties
    y = rng.random(300) < 0.3
    assert auroc(s, y) == pytest.approx(sk.roc_auc_score(y, s))
    assert np.isnan(auroc(s, np.zeros(300, bool)))


def test_top_k_is_exact_cosine():
    rng = np.random.default_rng(1)
    q, a = rng.standard_normal((5, 8)), rng.standard_normal((50, 8))
    idx, sims = top_k(q, a, 10)
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (a / np.linalg.norm(a, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, np.argsort(-s, axis=1)[:, :10])
    assert np.all(np.diff(sims, axis=1) <= 0)


def test_baselines_on_fold9(ptbxl_subset):
    q, a = default_split(ptbxl_subset)
    assert len(q) == 183 and len(a) == 1442
    assert not set(np.asarray(ptbxl_subset.ids)[q]) & set(np.asarray(ptbxl_subset.ids)[a])
    res = evaluate(ptbxl_subset, baselines(ptbxl_subset), q, a)
    r, raw = res["random"], res["raw-signal"]
    # chance level near the documented reference (fold 10: P@10 0.43, AUROC 0.52); raw signal above it
    assert 0.38 < r["P@10"] < 0.50 and 0.40 < r["kNN_macroAUROC"] < 0.62
    assert raw["P@10"] > r["P@10"] + 0.05 and raw["kNN_macroAUROC"] > r["kNN_macroAUROC"] + 0.1
    table = markdown_table(res, "heading")
    assert "| raw-signal |" in table and "kNN_macroAUROC" in table
    assert set(res["raw-signal"]["per_class"]) == set(SUPERCLASSES)


def test_reduced_lead_queries(ptbxl_subset):
    q, a = default_split(ptbxl_subset)
    present = np.zeros(12, bool)
    present[1] = True
    qe = raw_signal_embeddings(ptbxl_subset, q, present)
    res = evaluate(ptbxl_subset, {"raw II": (qe, raw_signal_embeddings(ptbxl_subset, a, present))}, q, a)
    assert 0.3 < res["raw II"]["P@10"] < 0.8


def test_evaluate_command_prints_table_and_writes_json(tmp_path, shared_data):
    import json

    from click.testing import CliRunner

    from convert.cli import main
    out = tmp_path / "ev.json"
    r = CliRunner().invoke(main, ["evaluate", "--data", str(shared_data / "ptbxl-subset"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "183 queries (folds 9)" in r.output and "1442 cases (folds 1,2,3,4,5,6,7,8)" in r.output
    d = json.loads(out.read_text())
    assert d["query_folds"] == [9] and d["archive_folds"] == list(range(1, 9))
    assert set(d["variants"]) == {"random", "raw-signal"}
    assert set(d["variants"]["raw-signal"]["per_class"]) == {"NORM", "MI", "STTC", "CD", "HYP"}
    bad = CliRunner().invoke(main, ["evaluate", "--data", str(shared_data / "ptbxl-subset"),
                                    "--embeddings", "x=" + str(tmp_path / "none.npy")])
    assert bad.exit_code == 2 and "cannot read" in bad.output and bad.exception is None or isinstance(bad.exception, SystemExit)
