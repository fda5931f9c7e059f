"""Cross-validating a teacher *recipe* (a training choice): one teacher per rotation, each trained without its
rotation's query folds (``ecgret-convert train-teacher --cv``).

A choice that concerns training (the imaging mode, a loss weight, the epochs) cannot be cross-validated on one
trained model: the model has seen the query folds. So for each rotation of :data:`convert.evaluate.ROTATIONS`
(two of folds 1-8 as queries, the other six as the archive) a teacher is trained on five of the six archive folds,
selects its epoch on the sixth (the last), and never sees the two query folds nor fold 9; its embeddings of the
query folds are then searched against the six archive folds (:func:`convert.evaluate.evaluate`, exact cosine) and
the rotations summarised as mean ± SD (:func:`convert.evaluate.summarise_cv`), as ``evaluate --cv`` does for a
trained model. Runs go to ``<out_dir>/cv/<name>-q<folds>/`` and resume like any teacher run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .evaluate import CV_FOLDS, ROTATIONS, cv_splits, evaluate, summarise_cv
from .ptbxl import open_archive
from .teacher_config import TeacherConfig

__all__ = ["rotation_config", "cv_teacher"]


def rotation_config(cfg: TeacherConfig, query_folds, pool=CV_FOLDS) -> TeacherConfig:
    """``cfg`` for one rotation: its query folds as the test folds, the last other fold of ``pool`` for the epoch
    selection, the rest for training; its own run folder ``<out_dir>/cv/<name>-q<folds>``."""
    qf = tuple(int(f) for f in query_folds)
    rest = [f for f in pool if f not in qf]
    tag = "".join(map(str, qf))
    return replace(
        cfg,
        name=f"{cfg.name}-q{tag}",
        out_dir=str(Path(cfg.out_dir) / "cv"),
        train=replace(cfg.train, train_folds=tuple(rest[:-1]), val_folds=(rest[-1],), test_folds=qf),
    )


def cv_teacher(cfg: TeacherConfig, archive=None, rotations=ROTATIONS, pool=CV_FOLDS, *, progress=True, log=None):
    """Train (or resume) one teacher per rotation and evaluate each on its own query folds. Returns
    (the :func:`convert.evaluate.summarise_cv` result for the variant ``cfg.name``, the per-rotation training
    metrics dicts)."""
    from .teacher_train import train_teacher

    archive = archive if archive is not None else open_archive(cfg.archive)
    folds = np.array([c.fold if c.fold is not None else -1 for c in archive.cases])
    per, runs = [], []
    for qf, qi, ai in cv_splits(folds, rotations, pool):
        rc = rotation_config(cfg, qf, pool)
        m = train_teacher(rc, archive=archive, progress=progress, log=log)
        runs.append({"run": str(rc.run_dir), "query_folds": list(qf), **{k: m.get(k) for k in _RUN_KEYS}})
        emb = np.load(Path(rc.run_dir) / "embeddings.npy")
        per.append(evaluate(archive, {cfg.name: emb}, qi, ai))
    return summarise_cv(per), runs


_RUN_KEYS = ("best_epoch", "epochs_run", "val_best", "stopped", "train_time_s")
