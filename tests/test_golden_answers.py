"""The shipped bundle's answers on all 48 CinC records are pinned: top-10 ids and scores, the rhythm and the
heart rate. A change that moves them must say so by regenerating tests/golden/cinc_top10.json on purpose."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).with_name("golden") / "cinc_top10.json"


def test_default_bundle_answers_are_pinned(shared_data):
    from edge.bundle import load_bundle
    from edge.io import read_record
    from edge.retrieval import Retriever
    want = json.loads(GOLDEN.read_text())
    r = Retriever(load_bundle(None, threads=1))
    assert r.bundle.id == want["bundle_id"], "the default bundle changed: regenerate the golden answers on purpose"
    recs = sorted((shared_data / "cinc2021-sample").glob("*.hea"))
    assert len(recs) == 48 == len(want["records"])
    for f in recs:
        res = r.query_record(read_record(f))
        w = want["records"][f.stem]
        assert [m.case_id for m in res.matches] == w["ids"], f.stem
        assert [round(m.score, 6) for m in res.matches] == pytest.approx(w["scores"], abs=2e-6), f.stem
        assert res.rhythm.label == w["rhythm"], f.stem
        assert res.measurements.to_dict()["heart_rate_bpm"] == w["heart_rate_bpm"], f.stem


def regenerate(data: Path) -> list[str]:
    """Rewrite the golden answers from the current code (on purpose: say why in the commit); the records that
    changed."""
    from edge.bundle import load_bundle
    from edge.io import read_record
    from edge.retrieval import Retriever
    r = Retriever(load_bundle(None, threads=1))
    old = json.loads(GOLDEN.read_text())["records"] if GOLDEN.exists() else {}
    recs = {}
    for f in sorted((data / "cinc2021-sample").glob("*.hea")):
        res = r.query_record(read_record(f))
        recs[f.stem] = {"ids": [m.case_id for m in res.matches], "scores": [round(m.score, 6) for m in res.matches],
                        "rhythm": res.rhythm.label, "heart_rate_bpm": res.measurements.to_dict()["heart_rate_bpm"]}
    GOLDEN.write_text(json.dumps({"bundle_id": r.bundle.id, "records": recs}, indent=1) + "\n")
    return [k for k in recs if old.get(k) != recs[k]]


if __name__ == "__main__":  # python tests/test_golden_answers.py [DATA]
    import os
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print("changed:", regenerate(Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ECGRET_DATA", "../shared/data"))))
