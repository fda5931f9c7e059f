"""Cross-validating the deployed encoder: per rotation, the teacher, the distilled student and its int8 export are
all made without the rotation's query folds, and the int8 student is evaluated through the device interpreter
(``ecgret-convert distill --cv``).

A teacher's CV figures (:mod:`convert.teacher_cv`) say how a *recipe* generalises, but the device searches with
the int8 student. For each rotation of :data:`convert.evaluate.ROTATIONS` (two of folds 1-8 as queries, the other
six as the archive):

1. the rotation's teacher (:func:`convert.teacher_cv.rotation_config`: trained on five archive folds, its epoch
   selected on the sixth) is trained or reused;
2. the student of ``[student]`` is distilled from it on the same five folds, its epoch selected on the sixth;
3. it is exported to int8 with a representative set drawn from the six archive folds only;
4. every case is embedded by that int8 model through :class:`edge.encoder.Encoder` (what the device runs), the
   query folds are searched against the six archive folds (exact cosine), with 12 leads and with each reduced
   lead set of ``lead_sets`` on the query side.

Fold 9 is never used. Runs go to ``<student out_dir>/cv/<name>-<teacher>-q<folds>/``; a student whose
``student.json`` exists there is reused.

Several teachers (``[teacher] seeds = [0, 1]`` in the pipeline config, or ``--set teacher.seeds=[0,1]``): one
teacher of the recipe per seed and rotation (:func:`teacher_recipes`), the student regressing their unit embeddings
side by side (:class:`convert.teacher_model.TeacherEnsemble`, ``[student] dim`` = their total width), the report
vectors of ECG+report items side by side in the same way, and the teachers' own float rows (alone and side by
side) beside the student's.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge.atomicio import atomic_write
from edge.errors import ConfigError

from .evaluate import CV_FOLDS, ROTATIONS, case_image, cv_splits, evaluate, summarise_cv
from .ptbxl import open_archive
from .teacher_cv import rotation_config

__all__ = ["cv_document", "cv_evaluation", "cv_recipe", "cv_student", "external_summary", "teacher_recipes"]

# what does not change a CV's figures, or differs between a CV and a bundle build by design: folders, threads,
# the folds (a rotation trains on its own), the teacher's name
_NOT_RECIPE = {
    "teacher": ("name", "out_dir", "archive"),
    "train": ("threads", "strategy", "train_folds", "val_folds", "test_folds", "keep_checkpoints"),
    "student": ("out_dir", "train_folds", "val_folds", "threads"),
    "quantize": ("threads", "rep_folds"),
}
# the rows a model card shows of a student CV, in this order
CV_CARD_METRICS = ("P@10", "macroP@10", "kNN_macroAUROC", "rhythmP@10_nonSR")


def cv_student(
    cfg,
    tcfg,
    archive=None,
    rotations=ROTATIONS,
    pool=CV_FOLDS,
    *,
    lead_sets=("I", "II"),
    report_weights=(0.5,),
    external_dir=None,
    progress: bool = True,
    log=None,
):
    """``cfg``: a :class:`convert.training_pipeline.PipelineConfig` (its ``[student]`` and ``[quantize]``);
    ``tcfg``: the teacher recipe. Returns (the :func:`convert.evaluate.summarise_cv` result with the variants
    ``student int8`` and ``student int8, query leads <set>``, and for each of ``report_weights`` the same with
    archive items that carry the case's report as a bundle with ``[bundle] report_weight = w`` builds them
    (:func:`convert.teacher_export.case_vectors` of the int8 embedding and the rotation teacher's text embedding,
    :func:`convert.bundle_build.case_text_vectors`), the per-rotation runs). With ``external_dir`` (an external
    LUDB-format set) each rotation's int8 student and its six archive folds also answer every external record
    through the device's query path (:func:`rotation_bundle`), and each run gets its
    :func:`convert.evaluate_external.external_metrics` (``external``); :func:`external_summary` summarises them."""
    from edge.leads import LEAD_SETS

    from .bundle_build import case_text_vectors
    from .quantize import embed_tflite, export_tflite, representative_images
    from .student import distill, load_student
    from .teacher_export import case_vectors
    from .teacher_model import TeacherEnsemble, ensemble_vectors, load_teacher_model
    from .teacher_train import train_teacher
    from .training_pipeline import _cache_dir, _clean_images

    tcfgs = teacher_recipes(tcfg, cfg.teacher_seeds)
    width = sum(t.model.proj_dim for t in tcfgs)
    if cfg.student.dim != width:  # before any training
        raise ConfigError(
            f"[student] dim {cfg.student.dim} differs from the teacher targets' width {width}"
            + (f" ({len(tcfgs)} teachers side by side: --set student.dim={width})" if len(tcfgs) > 1 else "")
        )
    tag = tcfg.name if len(tcfgs) == 1 else f"{tcfg.name}_seeds{'-'.join(str(t.train.seed) for t in tcfgs)}"
    archive = archive if archive is not None else open_archive(cfg.archive)
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    clean = _clean_images(archive, tcfg.imaging, progress, _cache_dir(cfg))
    per, runs = [], []
    for qf, qi, ai in cv_splits(folds, rotations, pool):
        rcs = [rotation_config(t, qf, pool) for t in tcfgs]
        for rc in rcs:
            if not (Path(rc.run_dir) / "metrics.json").is_file():
                train_teacher(rc, archive=archive, progress=progress, log=log)
        teacher_run = "+".join(str(r.run_dir) for r in rcs)
        rest = tuple(f for f in pool if f not in qf)
        s = replace(
            cfg.student, train_folds=rest[:-1], val_folds=(rest[-1],), out_dir=str(Path(cfg.student.out_dir) / "cv")
        )
        name = f"{cfg.name}-{tag}-q{''.join(map(str, qf))}"
        sdir = Path(s.out_dir) / name
        if (sdir / "student.json").is_file():
            held = json.loads((sdir / "student.json").read_text())
            if held.get("config") != s.to_dict() or held.get("teacher", {}).get("run") != teacher_run:
                raise ConfigError(
                    f"{sdir} holds a student of another config or teacher; give this variant its own --name "
                    f"(or remove that folder)"
                )
        if not (sdir / "student.json").is_file() or not (sdir / "student.keras").is_file():
            (sdir / "encoder_int8.tflite").unlink(missing_ok=True)
            models = [load_teacher_model(r.run_dir) for r in rcs]
            distill(
                s,
                archive,
                models[0] if len(models) == 1 else TeacherEnsemble(models),
                imaging=tcfg.imaging,
                name=name,
                teacher_info={"run": teacher_run},
                clean=clean,
                progress=progress,
                log=log,
                cache_dir=_cache_dir(cfg),
            )
        info = json.loads((sdir / "student.json").read_text())
        int8 = sdir / "encoder_int8.tflite"
        if not int8.is_file():
            model, _ = load_student(sdir)
            reps = representative_images(archive, tcfg.imaging, replace(cfg.quantize, rep_folds=rest))
            atomic_write(int8, export_tflite(model, "int8", reps))
        blob = int8.read_bytes()
        emb = embed_tflite(blob, clean, threads=cfg.quantize.threads, progress=progress)
        queries = {"": emb[qi]}
        for ls in lead_sets:
            imgs = np.stack([case_image(archive, int(i), tcfg.imaging, LEAD_SETS[ls]) for i in qi])
            queries[f", query leads {ls}"] = embed_tflite(blob, imgs, cfg.quantize.threads)
        items = {"": emb[ai]}
        if report_weights:
            texts = [case_text_vectors(r.run_dir, len(archive)) for r in rcs]
            text = texts[0] if len(texts) == 1 else ensemble_vectors(texts)
            for w in report_weights:
                items[f", archive ECG+report w={w:g}"] = case_vectors(emb[ai], text[ai], w)
        variants = {f"student int8{q}{a}": (qe, ae) for a, ae in items.items() for q, qe in queries.items()}
        if len(rcs) > 1:  # what the student is asked to copy: the teachers' float embeddings, alone and together
            temb = [np.load(Path(r.run_dir) / "embeddings.npy") for r in rcs]
            for t, e in zip(tcfgs, temb):
                variants[f"teacher seed {t.train.seed} (float)"] = (e[qi], e[ai])
            ens = ensemble_vectors(temb)
            variants["teachers side by side (float)"] = (ens[qi], ens[ai])
        per.append(evaluate(archive, variants, qi, ai))
        ext = None
        if external_dir is not None:
            ext = _external(rotation_bundle(sdir / "bundle", archive, ai, emb[ai], blob, tcfg.imaging), external_dir)
        runs.append(
            {
                **({"external": ext} if ext is not None else {}),
                "teacher_run": teacher_run,
                "student_run": str(sdir),
                "query_folds": list(qf),
                "best_epoch": info.get("best_epoch"),
                "epochs_run": info.get("epochs_run"),
                "train_time_s": info.get("train_time_s"),
                "int8_bytes": len(blob),
            }
        )
    return summarise_cv(per), runs


def teacher_recipes(tcfg, seeds=None) -> list:
    """The teacher recipes a student CV distills from: ``tcfg`` alone, or one per seed of ``seeds`` (``[teacher]
    seeds``), the config's own seed keeping its name and every other seed named ``<name>_s<seed>`` (the runs
    ``train-teacher --cv --set train.seed=S --name <name>_s<S>`` makes)."""
    if not seeds:
        return [tcfg]
    return [
        tcfg if s == tcfg.train.seed else replace(tcfg, name=f"{tcfg.name}_s{s}", train=replace(tcfg.train, seed=s))
        for s in seeds
    ]


def rotation_bundle(out_dir, archive, archive_idx, emb: np.ndarray, tflite: bytes, imaging) -> Path:
    """An unsigned bundle (evaluation only) of the cases ``archive_idx`` embedded as ``emb`` by the int8 encoder
    ``tflite``: the device's preprocessing, an Annoy index tuned to recall@10 >= 0.99, no re-ranking (that needs
    folds 1-8 to choose its weight)."""
    from .archive import subset
    from .bundle import write_bundle
    from .bundle_build import PREPROCESSING
    from .index_build import tune_index

    arch = subset(archive, np.asarray(archive_idx))
    n_trees, search_k, recall = tune_index(emb, k=10, target_recall=0.99, seed=0, max_queries=len(emb))
    return write_bundle(
        out_dir,
        tflite_bytes=tflite,
        embeddings=emb,
        cases=list(arch.cases),
        preprocessing=dict(PREPROCESSING),
        imaging=imaging.to_dict(),
        n_trees=n_trees,
        search_k=search_k,
        recall_at_10=recall,
        training={"note": "a cross-validation rotation's student (convert.student_cv); for evaluation only"},
        evaluation=None,
        name=Path(out_dir).parent.name,
        force=True,
        sign_key=False,
    )


def _external(bundle_dir, external_dir) -> dict:
    from edge.bundle import load_bundle
    from edge.retrieval import Retriever

    from .evaluate_external import external_answers, external_metrics
    from .ludb import load_cases

    r = Retriever(load_bundle(bundle_dir, allow_unsigned=True))
    m = external_metrics(external_answers(load_cases(external_dir), r))
    return {k: v for k, v in m.items() if k not in ("rhythm", "rhythm_cases")}


CV_HEADING = "per rotation a teacher, a student and its int8 export made without the query folds"


def cv_document(res, runs, archive, cfg, tcfg, external_dir=None) -> dict:
    """The JSON ``distill --cv`` writes: :func:`convert.evaluate.cv_json` of the results, the heading, the runs,
    the config names, the recipe (:func:`cv_recipe`) and, with ``external_dir``, the external set's
    :func:`external_summary`."""
    from .evaluate import cv_heading, cv_json

    h = cv_heading(archive) + "; " + CV_HEADING
    doc = {**cv_json(res, archive), "heading": h, "runs": runs, "teacher_config": tcfg.name, "config": cfg.name}
    doc["recipe"] = cv_recipe(cfg, tcfg)  # what a bundle build checks before its model card quotes these figures
    if external_dir:
        doc["external"] = {"set": str(external_dir), "mean_sd": external_summary(runs)}
    return doc


def cv_recipe(cfg, tcfg) -> dict:
    """The recipe a student CV measures, as ``distill --cv`` records it (``recipe``) and a bundle build compares
    it (:func:`cv_evaluation`): the teacher's imaging, model, training and augmentation, the ``[student]`` and
    ``[quantize]`` settings, less what :data:`_NOT_RECIPE` names."""
    t = {k: v for k, v in tcfg.to_dict().items() if k not in _NOT_RECIPE["teacher"]}
    t["train"] = {k: v for k, v in t["train"].items() if k not in _NOT_RECIPE["train"]}
    if cfg.teacher_seeds:  # several teachers (absent for one, so that older files stay comparable)
        t["seeds"] = list(cfg.teacher_seeds)
    return json.loads(
        json.dumps(
            {
                "teacher": t,
                "student": {k: v for k, v in cfg.student.to_dict().items() if k not in _NOT_RECIPE["student"]},
                "quantize": {k: v for k, v in cfg.quantize.to_dict().items() if k not in _NOT_RECIPE["quantize"]},
            }
        )
    )


def _differences(a, b, where: str = "") -> list[str]:
    """The dotted keys at which two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))
        return out
    return [] if a == b else [f"{where} ({a!r} in the CV, {b!r} here)"]


def cv_evaluation(path, cfg, tcfg) -> dict:
    """The manifest's ``evaluation.cv`` (what the model card shows) from a ``distill --cv`` JSON at ``path``,
    after checking that it measured this pipeline's recipe (:func:`cv_recipe`). A file that is missing,
    unreadable, written before CV files recorded their recipe, or of another recipe is a ConfigError, so a
    bundle never carries figures of a model it is not."""
    import hashlib

    p = Path(path)
    try:
        if p.stat().st_size > 64 << 20:  # a CV result is kilobytes; never read a stray huge file whole
            raise ConfigError(f"[bundle] cv_results {p}: {p.stat().st_size >> 20} MiB is no distill --cv result")
        raw = p.read_bytes()
        doc = json.loads(raw)
    except (OSError, ValueError) as e:
        raise ConfigError(f"[bundle] cv_results {p}: cannot be read ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("variants"), dict):
        raise ConfigError(f"[bundle] cv_results {p}: not an `ecgret-convert distill --cv` result")
    if "recipe" not in doc:
        raise ConfigError(
            f"[bundle] cv_results {p}: it records no recipe (written before distill --cv recorded one), so it "
            "cannot be checked against this config; rerun `ecgret-convert distill --config ... --cv` for it"
        )
    diff = _differences(doc["recipe"], cv_recipe(cfg, tcfg))
    if diff:
        raise ConfigError(
            f"[bundle] cv_results {p}: the CV measured another recipe; it differs at " + "; ".join(diff[:6])
        )
    rows = {
        name: {m: [round(float(v["mean"][m]), 4), round(float(v["sd"][m]), 4)] for m in CV_CARD_METRICS}
        for name, v in doc["variants"].items()
    }
    out = {
        "source": p.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "heading": doc.get("heading"),
        "rotations": doc.get("rotations"),
        "rows": rows,
    }
    if doc.get("external"):
        ext = doc["external"]
        out["external"] = {
            "set": Path(str(ext.get("set", ""))).name,
            "mean_sd": {k: [round(float(m), 4), round(float(sd), 4)] for k, (m, sd) in ext["mean_sd"].items()},
        }
    return out


def external_summary(runs) -> dict:
    """{figure: (mean, SD)} over the rotations (:func:`convert.evaluate.mean_sd`) of each external figure
    (:data:`convert.evaluate_external.EXTERNAL_METRICS`) and the per-superclass AUROCs (``AUROC_<class>``)."""
    from .evaluate import SUPERCLASSES, mean_sd
    from .evaluate_external import EXTERNAL_METRICS

    rows = [
        {**r["external"], **{f"AUROC_{c}": r["external"]["per_class"][c]["AUROC"] for c in SUPERCLASSES}}
        for r in runs
        if r.get("external")
    ]
    return mean_sd(rows, EXTERNAL_METRICS + tuple(f"AUROC_{c}" for c in SUPERCLASSES))
