"""The query pipeline on real records against the real test bundle, and the consensus vote."""
from __future__ import annotations

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.consensus import split_statements, vote
from edge.errors import ConfigError, QualityError, RecordError
from edge.io import read_record
from edge.leads import LEADS12
from edge.retrieval import Match, Retriever
from edge.record import Record
from tests.fixtures_bundle import test_bundle  # noqa: F401


@pytest.fixture(scope="module")
def retriever(test_bundle):
    return Retriever(load_bundle(test_bundle, threads=1))


def test_raw_record_finds_its_processed_self(retriever, shared_data):
    """HR06005 is the raw 500 Hz mV version of PTB-XL 6005, which is in the archive."""
    res = retriever.query_record(read_record(shared_data / "cinc2021-sample" / "HR06005.hea"))
    assert res.matches[0].case_id == "ptbxl:6005"
    assert res.matches[0].score > 0.98
    assert len(res.matches) == 10
    # the shipped bundle re-ranks (edge.rerank): scores stay cosines, in cosine order only without re-ranking
    plain = Retriever(retriever.bundle, measure=False).query_record(read_record(shared_data / "cinc2021-sample" /
                                                                                "HR06005.hea"))
    assert [m.score for m in plain.matches] == sorted((m.score for m in plain.matches), reverse=True)
    assert res.quality.usable.all()
    assert set(res.timings) == {"preprocess", "quality", "measure", "image", "encode", "search", "total"}
    d = res.to_dict()
    assert set(d) >= {"query", "quality", "consensus", "matches", "measurements", "rhythm"}
    assert 80 <= d["measurements"]["heart_rate_bpm"] <= 90 and d["rhythm"]["label"] == "SR"
    assert set(d["matches"][0]) >= {"case_id", "score", "super_class", "sub_class", "rhythm", "statements", "report"}


def test_archive_rows_find_themselves(retriever, shared_data):
    sig = np.load(shared_data / "ptbxl-subset" / "signals_100hz.npy", mmap_mode="r")
    from convert.ptbxl import open_subset
    arc = open_subset(shared_data / "ptbxl-subset")
    by_cosine = Retriever(retriever.bundle, measure=False)   # embedding and index alone, no re-ranking
    for c in retriever.cases[:8]:
        row = arc.index_of(c["case_id"])
        rec = Record(np.asarray(sig[row], np.float64), 100.0, LEADS12, c["case_id"])
        res = by_cosine.query_record(rec, top_k=3)
        assert res.matches[0].case_id == c["case_id"]


def test_reduced_lead_set_marks_the_rest_missing(retriever, shared_data):
    rec = read_record(shared_data / "cinc2021-sample" / "HR06005.hea")
    res = retriever.query_record(rec, leads=("I", "II", "V2"), top_k=5)
    kinds = {f.lead: f.kind for f in res.quality.findings}
    for lead in ("V1", "V3", "V4", "V5", "V6"):
        assert kinds[lead] == "missing"
    for lead in ("III", "aVR", "aVL", "aVF"):
        assert kinds[lead] == "derived"
    assert res.quality.usable_leads == ("I", "II", "III", "aVR", "aVL", "aVF", "V2")
    assert res.leads == ("I", "II", "V2")
    assert len(res.matches) == 5
    with pytest.raises(RecordError, match="none of the declared leads"):
        retriever.query_record(Record(rec.signal[:, 6:], rec.fs, rec.leads[6:], "v-only"), leads=("I", "II"))


def test_bad_records(retriever, shared_data):
    rec = read_record(shared_data / "cinc2021-sample" / "HR06005.hea")
    short = Record(rec.signal[: int(1.5 * rec.fs)], rec.fs, rec.leads, "short")
    with pytest.raises(RecordError, match="under the 2 s minimum"):
        retriever.query_record(short)
    flat = Record(np.zeros_like(rec.signal), rec.fs, rec.leads, "flat", {"units": "mV"})
    with pytest.raises(QualityError, match="no usable lead"):
        retriever.query_record(flat)
    with pytest.raises(ConfigError):
        retriever.query_record(rec, top_k=0)


def test_lead_off_mask_excludes_the_lead(retriever, shared_data):
    rec = read_record(shared_data / "cinc2021-sample" / "HR06005.hea")
    lo = np.zeros(rec.signal.shape, bool)
    lo[:, rec.leads.index("V3")] = True
    res = retriever.query_record(rec, lead_off=lo)
    assert "V3" not in res.quality.usable_leads
    assert any(f.lead == "V3" and f.kind == "lead_off" for f in res.quality.findings)


def test_consensus_vote_golden():
    ms = [Match("a", 0.9, ("NORM",), ("NORM",), ("SR",), "sinus rhythm; normal ECG", ""),
          Match("b", 0.6, ("MI",), ("IMI",), ("SR",), "sinus rhythm; inferior MI", ""),
          Match("c", 0.5, ("NORM", "MI"), (), ("AFIB",), "atrial fibrillation", ""),
          Match("d", -0.2, ("STTC",), (), (), "", "")]
    c = vote(ms)
    tot = 0.9 + 0.6 + 0.5 + 1e-3
    sup = {v.label: v.support for v in c.super_class}
    assert sup["NORM"] == pytest.approx(1.4 / tot)
    assert sup["MI"] == pytest.approx(1.1 / tot)
    assert sup["STTC"] == pytest.approx(1e-3 / tot)
    assert [v.label for v in c.rhythm] == ["SR", "AFIB"]
    assert c.rhythm[0].support == pytest.approx(1.5 / tot) and c.rhythm[0].count == 2
    assert c.leading("super_class")[0].label == "NORM"
    assert c.summary == f"NORM {1.4 / tot:.0%}, MI {1.1 / tot:.0%}; SR {1.5 / tot:.0%}"
    assert split_statements(" a; b ;;c ") == ("a", "b", "c")
    assert vote([]).summary.startswith("no consensus")
