"""convert.teacher_cv: each rotation's teacher is trained and selected without its query folds (and never on
fold 9), and the CV summary is the one ``evaluate --cv`` gives."""
from __future__ import annotations

import numpy as np
import pytest

from convert.evaluate import ROTATIONS, mean_sd, summarise_cv
from convert.teacher_config import TeacherConfig, validate_config
from convert.teacher_cv import rotation_config


@pytest.mark.parametrize("qf", ROTATIONS)
def test_rotation_never_trains_or_selects_on_its_queries_or_fold_9(qf, tmp_path):
    rc = rotation_config(TeacherConfig(name="rhythm", out_dir=str(tmp_path)), qf)
    t = rc.train
    assert t.test_folds == qf
    assert set(t.train_folds) | set(t.val_folds) == set(range(1, 9)) - set(qf)
    assert not (set(t.train_folds) | set(t.val_folds)) & (set(qf) | {9})
    assert len(t.val_folds) == 1 and len(t.train_folds) == 5
    assert rc.run_dir == tmp_path / "cv" / f"rhythm-q{''.join(map(str, qf))}"
    validate_config(rc)  # disjoint folds: the config's own check


def test_summary_is_mean_and_sd_over_rotations():
    rng = np.random.default_rng(0)
    keys = ("P@1", "P@5", "P@10", "P@10_exact", "mAP@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")
    per = []
    for _ in range(4):
        m = {k: float(rng.random()) for k in keys}
        m["per_class"] = {c: {"AUROC": float(rng.random())} for c in ("NORM", "MI", "STTC", "CD", "HYP")}
        per.append({"v": m})
    s = summarise_cv(per)["v"]
    want = mean_sd([p["v"] for p in per])
    for k in keys:
        assert s["mean"][k] == pytest.approx(want[k][0]) and s["sd"][k] == pytest.approx(want[k][1])
    assert s["mean"]["AUROC_MI"] == pytest.approx(np.mean([p["v"]["per_class"]["MI"]["AUROC"] for p in per]))
    assert len(s["per_rotation"]) == 4
