"""The measured-rhythm ranking (edge.rerank): its manifest section is checked, step 2 pulls in the cases of the
answer's rhythm, and the answer's rhythm comes from step 1 (never its own echo)."""
from __future__ import annotations

import numpy as np
import pytest

from edge.errors import BundleError
from edge.measure import Measurements
from edge.rerank import Ranker, Setting, setting_of


def _case(rhythm, hr):
    return {"case_id": f"c{hr}", "rhythm": (rhythm,), "super_class": ("NORM",), "statements": "",
            "measured": {"heart_rate_bpm": hr, "irregularity": 0.02, "rr_sd_ms": 10.0, "rr_mean_ms": 60000.0 / hr}}


def _archive():
    rng = np.random.default_rng(0)
    q = rng.normal(size=16)
    q /= np.linalg.norm(q)
    # 12 sinus-rhythm cases close to the query, 3 sinus-bradycardia cases further away
    vec = [q + 0.05 * rng.normal(size=16) for _ in range(12)] + [q + 0.25 * rng.normal(size=16) for _ in range(3)]
    vec = np.stack([v / np.linalg.norm(v) for v in vec]).astype(np.float32)
    cases = [_case("SR", 70.0 + i) for i in range(12)] + [_case("SBRAD", 45.0 + i) for i in range(3)]
    return q.astype(np.float32), vec, cases


def _brady():
    return Measurements(heart_rate_bpm=46.0, rr_mean_ms=1304.0, rr_sd_ms=12.0, irregularity=0.01,
                        premature_beats=0, n_beats=8, p_rel=0.2)


def test_step_two_brings_in_the_measured_rhythm():
    q, vec, cases = _archive()
    pool = np.argsort(-(vec @ q))[:10]          # the Annoy pool: only sinus-rhythm cases
    assert all(cases[i]["rhythm"] == ("SR",) for i in pool)
    plain = Ranker(cases, lambda v, ids: vec[ids].astype(np.float64) @ v, Setting(0.1, 10, 0.0))
    ids, cos, _, ans = plain.rank(q, pool, vec[pool] @ q, _brady(), 5)
    assert ans is None and all(cases[i]["rhythm"] == ("SR",) for i in ids)
    rk = Ranker(cases, lambda v, ids: vec[ids].astype(np.float64) @ v, Setting(0.1, 10, 0.5))
    ids, cos, keys, ans = rk.rank(q, pool, vec[pool] @ q, _brady(), 5)
    assert ans.label == "SBRAD" and ans.retrieved == "SR"        # grounded in step 1: the cases said SR
    assert [cases[i]["rhythm"][0] for i in ids[:3]] == ["SBRAD"] * 3
    assert np.allclose(cos, vec[ids] @ q, atol=1e-5)             # scores shown stay the cosines
    assert np.all(np.diff(keys) <= 1e-12)


def test_unmeasured_query_keeps_the_cosine_order():
    q, vec, cases = _archive()
    pool = np.argsort(-(vec @ q))[:10]
    rk = Ranker(cases, lambda v, ids: vec[ids].astype(np.float64) @ v, Setting(0.1, 10, 0.5))
    ids, cos, _, ans = rk.rank(q, pool, vec[pool] @ q, Measurements(findings=("fewer than 3 R peaks",)), 5)
    assert ans is None and list(ids) == list(pool[:5])


@pytest.mark.parametrize("sec, field", [({"weight": "0.2"}, "weight"), ({"weight": 0.1, "pool": 0}, "pool"),
                                        ({"weight": 0.1, "rhythm_bonus": float("nan")}, "rhythm_bonus"),
                                        ({"weight": True}, "weight"), ("x", "rerank")])
def test_a_malformed_rerank_section_names_its_field(sec, field):
    with pytest.raises(BundleError, match=f"rerank[.:]? ?{field}|{field}"):
        setting_of({"rerank": sec})


def test_no_section_or_zero_setting_ranks_by_cosine():
    assert setting_of({}) is None and setting_of({"rerank": {"weight": 0, "pool": 50}}) is None
    assert setting_of({"rerank": {"weight": 0.1, "pool": 50, "rhythm_bonus": 0.5}}) == Setting(0.1, 50, 0.5)


def test_local_cases_rank_beside_the_reranked_bundle_cases():
    """A local case at twin similarity ranks first; one of the grounded rhythm gets the bonus a bundle case of
    that rhythm gets; any other keeps its cosine."""
    from edge.answer import TWIN_SCORE
    from edge.retrieval import _local_key

    assert _local_key({"rhythm": ["SR"]}, TWIN_SCORE, "SBRAD", 0.5) > 1.5 + 1.0    # above any bundle key
    assert _local_key({"rhythm": ["SBRAD"]}, 0.8, "SBRAD", 0.5) == pytest.approx(1.3)
    assert _local_key({"rhythm": ["SR"]}, 0.8, "SBRAD", 0.5) == pytest.approx(0.8)
    assert _local_key({}, 0.8, None, 0.0) == pytest.approx(0.8)
