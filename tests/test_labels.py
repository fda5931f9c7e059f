"""The PTB-XL label vocabulary (edge/labels.py) against PTB-XL's own statement table and archive labelling."""
from __future__ import annotations

import json

import pytest

from edge.labels import (STATEMENTS, SUBCLASSES, SUPERCLASSES, LabelError, not_shown, parse_labels, plain_name,
                         resolve)
from edge.paths import repo_root
from edge.rhythm import RHYTHM_NAMES


@pytest.fixture
def scp(shared_data):
    from convert.ptbxl import read_scp_statements
    return read_scp_statements(shared_data / "ptbxl-subset" / "scp_statements.csv")


def test_the_table_is_ptbxls(scp):
    assert len(scp) == 71 == len(STATEMENTS)
    for code, row in scp.items():
        s = STATEMENTS[code.strip("_")]
        assert s.description == row["description"], code
        assert (s.diagnostic, s.form, s.rhythm) == (row["diagnostic"], row["form"], row["rhythm"]), code
        assert s.subclass == (row["subclass"].strip("_") or None), code
        assert s.superclass == (row["class"] or None), code
    assert {r["subclass"].strip("_") for r in scp.values() if r["subclass"]} == set(SUBCLASSES)
    assert {r["class"] for r in scp.values() if r["class"]} == set(SUPERCLASSES)
    for code in RHYTHM_NAMES:                       # the measured rhythm's names, one name a rhythm
        assert plain_name(code) == RHYTHM_NAMES[code]


def test_every_code_of_the_shipped_bundle_has_plain_words():
    seen = set()
    for line in (repo_root() / "edge" / "bundles" / "default" / "cases.jsonl").read_text().splitlines():
        c = json.loads(line)
        seen.update(c["super_class"], c["sub_class"], c["form"], c["rhythm"])
    assert len(seen) > 50
    for code in seen:
        name = plain_name(code)
        assert name != code and name == name.strip() and any(c.islower() for c in name), (code, name)  # words
        assert "(" not in name and "/" not in name.replace("ST/T", ""), (code, name)


def test_enrolment_labels_are_labelled_like_the_archive(scp):
    from convert.ptbxl import ptbxl_labels
    for codes in (["IMI", "SR"], ["ASMI", "1AVB", "AFIB"], ["NST_", "PVC", "SBRAD"], ["LAO/LAE", "NORM"],
                  ["NDT", "LVH", "VCLVH", "STACH"], ["ILMI", "IPLMI", "CRBBB", "LAFB", "SARRH"]):
        want = ptbxl_labels({c: 100.0 for c in codes}, scp)
        got = parse_labels(",".join(codes))
        for k in ("super_class", "sub_class", "form", "rhythm", "statements"):
            assert tuple(got[k]) == tuple(want[k]) if k != "statements" else got[k] == want[k], (codes, k)


def test_what_the_issue_named():
    assert parse_labels("LAO/LAE")["super_class"] == ["HYP"]          # the subclass brings its superclass
    assert parse_labels("norm")["super_class"] == ["NORM"]            # case-insensitive: one code only
    assert parse_labels("sinus bradycardia")["rhythm"] == ["SBRAD"]   # a plain name that means one code
    assert parse_labels("MI,IMI,SR") == {"super_class": ["MI"], "sub_class": ["IMI"], "form": [], "rhythm": ["SR"],
                                         "statements": "sinus rhythm; inferior myocardial infarction"}
    with pytest.raises(LabelError, match="'AFIBB' is not a PTB-XL code; did you mean AFIB"):
        parse_labels("AFIBB,norm")
    with pytest.raises(LabelError, match="not a PTB-XL code"):
        resolve("heart attack")


def test_no_spelling_means_two_codes():
    from edge.labels import _FOLDED
    assert {k: v for k, v in _FOLDED.items() if len(v) > 1} == {}


def test_what_a_lead_set_cannot_show():
    assert not_shown(["IMI", "AFIB", "SR", "AVB"], ["II"]) == ["IMI"]       # one lead: no infarct territory
    assert not_shown(["IMI", "LAFB/LPFB", "MI"], ["I", "II"]) == []          # III and aVF derived
    # I, II, V2: one anterior lead (no anterior infarct), no V5/V6 (no LVH); V2 and I do show a RBBB
    assert not_shown(["AMI", "CRBBB", "LVH", "NORM", "ASMI"], ["I", "II", "V2"]) == ["AMI", "LVH", "NORM", "ASMI"]
    from edge.leads import LEADS12
    assert not_shown(list(SUBCLASSES) + list(SUPERCLASSES) + list(STATEMENTS), LEADS12) == []
