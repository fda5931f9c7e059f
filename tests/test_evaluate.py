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


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------------- cross-validation

def test_cv_rotations_cover_folds_1_to_8_once_and_never_fold_9(ptbxl_subset):
    from convert import rerank
    from convert.evaluate import CV_FOLDS, ROTATIONS, cv_splits
    assert rerank.ROTATIONS is ROTATIONS           # one rotation constant: the re-ranking choice uses these
    folds = np.array([c.fold for c in ptbxl_subset.cases])
    sp = cv_splits(folds)
    assert [qf for qf, _, _ in sp] == [(1, 2), (3, 4), (5, 6), (7, 8)]
    seen = np.concatenate([qi for _, qi, _ in sp])
    np.testing.assert_array_equal(np.sort(seen), ptbxl_subset.select(folds=CV_FOLDS))   # each case a query once
    for qf, qi, ai in sp:
        assert set(folds[qi]) == set(qf) and set(folds[ai]) == set(CV_FOLDS) - set(qf)
        assert 9 not in set(folds[qi]) | set(folds[ai])
        pq = {ptbxl_subset.cases[int(i)].patient_id for i in qi} - {None}
        pa = {ptbxl_subset.cases[int(i)].patient_id for i in ai} - {None}
        assert not pq & pa                          # PTB-XL folds are patient-disjoint
    with pytest.raises(ValueError, match="outside"):
        cv_splits(folds, rotations=((8, 9),))


@pytest.mark.slow
def test_evaluate_cv_is_the_mean_and_sd_of_the_rotations(ptbxl_subset):
    from convert.evaluate import METRICS, cv_splits, cv_table, evaluate_cv
    emb = baselines(ptbxl_subset)
    res = evaluate_cv(ptbxl_subset, emb)
    folds = np.array([c.fold for c in ptbxl_subset.cases])
    per = [evaluate(ptbxl_subset, emb, qi, ai) for _, qi, ai in cv_splits(folds)]
    for name in ("random", "raw-signal"):
        for m in METRICS:
            v = [p[name][m] for p in per]
            assert res[name]["mean"][m] == pytest.approx(np.mean(v)) and res[name]["sd"][m] == pytest.approx(np.std(v))
        assert [r["n_queries"] for r in res[name]["per_rotation"]] == [p[name]["n_queries"] for p in per]
        assert res[name]["mean"]["AUROC_NORM"] == pytest.approx(np.mean([p[name]["per_class"]["NORM"]["AUROC"]
                                                                          for p in per]))
    # raw signal above chance in every rotation, and the SD is a real spread (rotations differ)
    assert all(p["raw-signal"]["kNN_macroAUROC"] > p["random"]["kNN_macroAUROC"] + 0.1 for p in per)
    assert 0 < res["raw-signal"]["sd"]["P@10"] < 0.05
    t = cv_table(res, "h")
    assert f"| raw-signal | {res['raw-signal']['mean']['P@1']:.3f} ± {res['raw-signal']['sd']['P@1']:.3f} |" in t


@pytest.mark.slow
def test_evaluate_command_cv(tmp_path, shared_data):
    import json

    from click.testing import CliRunner

    from convert.cli import main
    out = tmp_path / "cv.json"
    data = ["--data", str(shared_data / "ptbxl-subset")]
    r = CliRunner().invoke(main, ["evaluate", "--cv", *data, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "4 rotations (query folds 1+2 3+4 5+6 7+8)" in r.output and "357/367/373/345 queries" in r.output
    d = json.loads(out.read_text())
    assert [x["query_folds"] for x in d["rotations"]] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert sum(x["n_queries"] for x in d["rotations"]) == 1442
    assert all(9 not in x["archive_folds"] for x in d["rotations"])
    assert set(d["variants"]["raw-signal"]["mean"]) >= {"P@1", "mAP@10", "kNN_macroAUROC", "rhythmP@10_nonSR"}
    bad = CliRunner().invoke(main, ["evaluate", "--cv", *data, "--query-folds", "9"])
    assert bad.exit_code == 2 and "--cv and --external choose their own" in bad.output
