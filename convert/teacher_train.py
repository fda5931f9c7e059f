"""Training the teacher (``ecgret-convert train-teacher``, ``make teacher``; the recipe is
:mod:`convert.teacher_config`'s).

* text: each case's English statements plus its translated report, embedded once by a frozen
  sentence-transformers model (:mod:`convert.text`, run in a subprocess; this process never imports torch);
* image: :func:`edge.imaging.ecg_image` of the augmented signal (:mod:`convert.augment`), imaged on the fly
  in a ``tf.data`` pipeline, into the ViT of :mod:`convert.teacher_model`;
* selection: every ``eval_every`` epochs the fold-8 cases (12 leads, no augmentation) are retrieved from a
  folds 1-7 archive with :func:`convert.evaluate.evaluate`; the best ``select_metric`` is kept, training
  stops after ``patience`` epochs without improvement (never before ``min_epochs``), or at ``max_minutes``;
* scale-out: the loop runs under a ``tf.distribute`` strategy (``default``, ``one-device``, ``mirrored``,
  ``multi-worker`` via ``TF_CONFIG``), fed by ``distribute_datasets_from_function``; each replica computes
  the contrastive loss over its own share of the global batch and gradients are all-reduced;
* checkpoints: every epoch (model, optimizer and loop state), so an interrupted run resumes where it stopped;
  the best weights are exported at the end (:func:`convert.teacher_export.export`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.atomicio import atomic_path, atomic_write
from edge.errors import ArchiveError, ConfigError
from edge.imaging import ecg_image

from .augment import augment
from .evaluate import evaluate
from .images import embed_images, image_cases, n_valid
from .ptbxl import open_archive, read_scp_statements
from .teacher_config import STRATEGIES, TeacherConfig, config_toml, select_score, validate_config
from .teacher_export import export
from .teacher_model import (
    build_image_encoder,
    build_label_head,
    build_text_head,
    clip_loss,
    import_keras,
    label_loss,
)
from .text import embed_texts, resolve_text_model

__all__ = [
    "train_teacher",
    "check_texts",
    "rhythm_texts",
    "rhythm_codes",
    "label_codes",
    "epoch_batches",
    "make_strategy",
]


# ============================================================================================ data


def rhythm_codes(archive) -> np.ndarray:
    """(n_cases, n_codes) float32 multi-hot of the cases' rhythm statements (all zero where none is stated)."""
    codes = sorted({c for case in archive.cases for c in case.rhythm})
    pos = {c: k for k, c in enumerate(codes)}
    out = np.zeros((len(archive), max(len(codes), 1)), np.float32)
    for i, case in enumerate(archive.cases):
        for c in case.rhythm:
            out[i, pos[c]] = 1.0
    return out


LABEL_FIELDS = ("super_class", "sub_class", "form", "rhythm")


def label_codes(archive) -> tuple[np.ndarray, list[str]]:
    """(n_cases, n_labels) float32 multi-hot of every statement label the cases carry (superclass, subclass,
    form and rhythm, named ``field:code``), and the label names: the supervised auxiliary term's targets."""
    names = sorted({f"{f}:{c}" for case in archive.cases for f in LABEL_FIELDS for c in getattr(case, f)})
    pos = {n: k for k, n in enumerate(names)}
    out = np.zeros((len(archive), max(len(names), 1)), np.float32)
    for i, case in enumerate(archive.cases):
        for f in LABEL_FIELDS:
            for c in getattr(case, f):
                out[i, pos[f"{f}:{c}"]] = 1.0
    return out, names


def check_texts(archive, indices=None) -> list[str]:
    """Every case's text; :class:`ArchiveError` naming the cases that have none."""
    idx = range(len(archive)) if indices is None else indices
    texts = [archive.text(int(i)) for i in idx]
    empty = [archive.ids[int(i)] for i, t in zip(idx, texts) if not t.strip()]
    if empty:
        raise ArchiveError(
            f"{len(empty)} case(s) have no text (statements or report) to train on, e.g. "
            f"{', '.join(empty[:5])}; the teacher needs a text for every case"
        )
    return texts


def rhythm_texts(archive, statements: dict | None = None) -> list[str]:
    """Each case's rhythm statements as text (``'atrial fibrillation'``), from its rhythm codes and the SCP
    dictionary of the shared data (codes as they are where the dictionary lacks them); ``'rhythm not
    stated'`` where a case has none. The text of the auxiliary rhythm term."""
    if statements is None:
        from edge.paths import shared_data_dir

        f = shared_data_dir() / "ptbxl-subset" / "scp_statements.csv"
        statements = read_scp_statements(f) if f.is_file() else {}
    out = []
    for c in archive.cases:
        names = [str(statements.get(code, {}).get("description") or code) for code in c.rhythm]
        out.append("; ".join(names) if names else "rhythm not stated")
    return out


def _augmented_image(archive, i: int, epoch: int, cfg: TeacherConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.train.seed, epoch, int(i)])
    x, present, n = augment(archive.signal(int(i)), rng, cfg.augment, n_valid(archive, i))
    return ecg_image(x, present, cfg.imaging, n)


def epoch_batches(n_train: int, global_batch: int, seed: int, epoch: int) -> np.ndarray:
    """(steps, global_batch) positions into the training set for one epoch (drop remainder)."""
    perm = np.random.default_rng([seed, epoch, 7919]).permutation(n_train)
    steps = n_train // global_batch
    return perm[: steps * global_batch].reshape(steps, global_batch)


# ============================================================================================ strategy


def make_strategy(name: str):
    """The ``tf.distribute`` strategy ``name`` (:data:`STRATEGIES`): ``default``; ``one-device`` (the first
    GPU, else the CPU); ``mirrored`` (every local GPU, else the logical CPUs); ``multi-worker`` from
    ``TF_CONFIG`` (one worker, with a warning, without it). :class:`ConfigError` for any other name."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one-device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        # every local GPU; on a machine without one, the logical CPU devices (one unless configured with
        # tf.config.set_logical_device_configuration, which is how the tests run two replicas on a CPU)
        gpus = tf.config.list_logical_devices("GPU")
        devs = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devs)
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            print("warning: strategy multi-worker without TF_CONFIG runs as a single worker", file=sys.stderr)
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def _is_chief() -> bool:
    tfc = os.environ.get("TF_CONFIG")
    if not tfc:
        return True
    task = json.loads(tfc).get("task", {})
    return task.get("type") == "chief" or (
        task.get("type") in (None, "worker")
        and int(task.get("index", 0)) == 0
        and "chief" not in json.loads(tfc).get("cluster", {})
    )


def configure_threads(threads: int) -> None:
    """TensorFlow's intra-op threads to ``threads``, inter-op threads to at most 2; ignored once TensorFlow's
    runtime is initialised (a second run in one process)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    except RuntimeError:
        pass  # already initialised (e.g. a second run in one process)


# ============================================================================================ training


class _State:
    """Everything a checkpoint holds, as numpy: model weights, optimizer variables, loop state."""

    def __init__(self, encoder, text_head, logit_scale, optimizer, rhythm_head=None, label_head=None):
        self.encoder, self.text_head, self.logit_scale, self.optimizer = encoder, text_head, logit_scale, optimizer
        self.rhythm_head, self.label_head = rhythm_head, label_head

    def _heads(self, attr: str) -> list:
        return [v for h in (self.rhythm_head, self.label_head) if h is not None for v in getattr(h, attr)]

    def variables(self):
        # ``variables`` (not ``weights``) so that dropout seed-generator states resume too
        extra = self._heads("variables")
        return (
            list(self.encoder.variables)
            + list(self.text_head.variables)
            + [self.logit_scale]
            + extra
            + list(self.optimizer.variables)
        )

    def save(self, path: Path, loop: dict) -> None:
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / "state.npz", suffix=".npz") as tmp:
            np.savez(tmp, *[np.asarray(v.numpy()) for v in self.variables()])
        atomic_write(path / "loop.json", json.dumps(loop, indent=1, default=float))

    def restore(self, path: Path) -> dict:
        with np.load(path / "state.npz") as z:
            arrays = [z[f"arr_{k}"] for k in range(len(z.files))]
        vs = self.variables()
        if len(arrays) != len(vs):  # a checkpoint written before seed states were saved: weights only
            extra = self._heads("weights")
            old = (
                list(self.encoder.weights)
                + list(self.text_head.weights)
                + [self.logit_scale]
                + extra
                + list(self.optimizer.variables)
            )
            if len(arrays) == len(old):
                vs = old
        if len(arrays) != len(vs):
            raise ConfigError(
                f"{path}: checkpoint holds {len(arrays)} variables, the model has {len(vs)} "
                f"(was it written with another config?)"
            )
        for v, a in zip(vs, arrays):
            if tuple(v.shape) != a.shape:
                raise ConfigError(f"{path}: checkpoint variable {v.name} has shape {a.shape}, model {tuple(v.shape)}")
            v.assign(a)
        return json.loads((path / "loop.json").read_text())


def _latest_checkpoint(ckdir: Path) -> Path | None:
    cands = sorted(p for p in ckdir.glob("epoch-*") if (p / "loop.json").is_file() and (p / "state.npz").is_file())
    return cands[-1] if cands else None


def train_teacher(
    cfg: TeacherConfig,
    *,
    resume: bool = True,
    progress: bool = True,
    archive=None,
    log=None,
    until_epoch: int | None = None,
) -> dict:
    """Train (or resume) the teacher described by ``cfg``; write its artefacts under ``cfg.run_dir``.
    ``until_epoch`` ends this call after that epoch (as an interruption would; a later call resumes).
    Returns the metrics dict also written to ``metrics.json``."""
    validate_config(cfg)
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    t0 = time.time()
    archive = archive if archive is not None else open_archive(cfg.archive)
    tr = cfg.train
    train_idx, val_idx = archive.training_split(tr.train_folds, tr.val_folds, tr.batch_size, "teacher")
    texts = check_texts(archive)
    resolve_text_model(cfg.text_model)  # a clear error before anything heavy
    say(f"text embeddings of {len(texts)} cases ...")
    t_all = embed_texts(texts, cfg.text_model, progress=progress)
    aux = tr.rhythm_aux_weight > 0
    r_all = embed_texts(rhythm_texts(archive), cfg.text_model) if aux else np.zeros((len(archive), 1), np.float32)
    h_all = rhythm_codes(archive)
    use_labels = tr.label_aux_weight > 0
    y_all = label_codes(archive)[0] if use_labels else np.zeros((len(archive), 1), np.float32)

    # ---- TensorFlow from here on (never torch in this process)
    configure_threads(tr.threads)
    import tensorflow as tf

    keras = import_keras()
    keras.utils.set_random_seed(tr.seed)
    if tr.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = make_strategy(tr.strategy)
    n_rep = strategy.num_replicas_in_sync
    if tr.batch_size % n_rep:
        raise ConfigError(f"train.batch_size {tr.batch_size} is not divisible by the {n_rep} replicas")
    chief = _is_chief()
    run_dir = cfg.run_dir
    ckdir = run_dir / "checkpoints"
    run_dir.mkdir(parents=True, exist_ok=True)
    if chief:
        (run_dir / "config.toml").write_text(config_toml(cfg))

    steps_per_epoch = len(train_idx) // tr.batch_size
    total_steps = steps_per_epoch * tr.epochs
    warm = min(tr.warmup_epochs * steps_per_epoch, max(total_steps - 1, 0))
    with strategy.scope():
        encoder = build_image_encoder(cfg)
        text_head = build_text_head(cfg, t_all.shape[1])
        rhythm_head = build_text_head(cfg, r_all.shape[1], name="rhythm_head") if aux else None
        label_head = build_label_head(cfg, y_all.shape[1]) if use_labels else None
        logit_scale = keras.Variable(math.log(1.0 / tr.init_temperature), name="logit_scale", dtype="float32")
        sched = keras.optimizers.schedules.CosineDecay(
            0.0, max(total_steps - warm, 1), alpha=0.02, warmup_target=tr.lr, warmup_steps=warm
        )
        opt = keras.optimizers.AdamW(sched, weight_decay=tr.weight_decay, beta_2=0.98, clipnorm=None)
        opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta", "pos", "logit_scale"])
        train_vars = encoder.trainable_variables + text_head.trainable_variables + [logit_scale]
        for head in (rhythm_head, label_head):
            if head is not None:
                train_vars += head.trainable_variables
        opt.build(train_vars)
    state = _State(encoder, text_head, logit_scale, opt, rhythm_head, label_head)
    loop: dict[str, Any] = {
        "epoch": 0,
        "best": -math.inf,
        "best_epoch": None,
        "since_best": 0,
        "history": [],
        "elapsed_s": 0.0,
    }
    last = _latest_checkpoint(ckdir) if resume else None
    if last is not None:
        loop = state.restore(last)
        if str(loop.get("stopped") or "").startswith("time budget") and loop["elapsed_s"] < tr.max_minutes * 60:
            loop["stopped"] = None  # stopped by the clock only: a larger budget continues the run
        if str(loop.get("stopped") or "").startswith("early stop") and loop["epoch"] < tr.min_epochs:
            loop["stopped"] = None  # stopped before a (since raised) min_epochs: the run continues as if never stopped
        say(f"resumed from {last} (epoch {loop['epoch']}, best {loop['best']:.4f})")
    elif ckdir.exists() and chief and not resume:
        import shutil

        shutil.rmtree(ckdir)
    done = loop["epoch"] >= tr.epochs or loop.get("stopped")

    # ---- the data pipeline: per replica, an epoch's share of each global batch, imaged on the fly
    t_train, r_train, h_train, y_train = t_all[train_idx], r_all[train_idx], h_all[train_idx], y_all[train_idx]
    img_shape = cfg.imaging.shape

    def make_dataset(epoch: int):
        def fn(ctx):
            per_rep = ctx.get_per_replica_batch_size(tr.batch_size)
            reps_per_pipe = n_rep // ctx.num_input_pipelines
            my_reps = range(ctx.input_pipeline_id * reps_per_pipe, (ctx.input_pipeline_id + 1) * reps_per_pipe)

            def gen():
                for row in epoch_batches(len(train_idx), tr.batch_size, tr.seed, epoch):
                    for r in my_reps:
                        pos = row[r * per_rep : (r + 1) * per_rep]
                        imgs = np.stack([_augmented_image(archive, train_idx[p], epoch, cfg) for p in pos])
                        yield imgs.astype(np.float32), t_train[pos], r_train[pos], h_train[pos], y_train[pos]

            ds = tf.data.Dataset.from_generator(
                gen,
                output_signature=(
                    tf.TensorSpec((per_rep,) + img_shape, tf.float32),
                    tf.TensorSpec((per_rep, t_all.shape[1]), tf.float32),
                    tf.TensorSpec((per_rep, r_all.shape[1]), tf.float32),
                    tf.TensorSpec((per_rep, h_all.shape[1]), tf.float32),
                    tf.TensorSpec((per_rep, y_all.shape[1]), tf.float32),
                ),
            )
            opts = tf.data.Options()
            opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            return ds.with_options(opts).prefetch(2)

        return strategy.distribute_datasets_from_function(fn)

    tau_t, targets = float(tr.soft_target_temperature), tr.targets

    w_aux, w_rhythm, w_label = float(tr.rhythm_aux_weight), float(tr.rhythm_target_weight), float(tr.label_aux_weight)

    def replica_step(img, temb, remb, rhy, lab):
        with tf.GradientTape() as tape:
            zi = encoder(img, training=True)
            zt = text_head(temb, training=True)
            loss = clip_loss(zi, zt, temb, logit_scale, targets, tau_t, rhy, w_rhythm)
            if rhythm_head is not None:
                # the same contrastive loss against the rhythm statements' text (soft targets always: identical
                # rhythm texts are the norm)
                loss = loss + w_aux * clip_loss(zi, rhythm_head(remb, training=True), remb, logit_scale, "soft", tau_t)
            if label_head is not None:
                # supervised: the embedding itself must predict the case's statements (a linear read-out)
                loss = loss + w_label * label_loss(label_head(zi, training=True), lab)
            scaled = loss / n_rep
        grads = tape.gradient(scaled, train_vars)
        opt.apply_gradients(zip(grads, train_vars))
        return loss

    @tf.function
    def train_step(batch):
        per = strategy.run(replica_step, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per, axis=None)

    enc_fn = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)

    # ---- validation: fold-8 queries against a folds 1-7 archive, 12 leads, no augmentation
    val_cases = np.concatenate([train_idx, val_idx])
    clean = None

    def validate() -> dict:
        nonlocal clean
        if clean is None:
            clean = image_cases(archive, val_cases, cfg.imaging, progress=progress)
        emb = np.zeros((len(archive), cfg.model.proj_dim), np.float32)
        emb[val_cases] = embed_images(enc_fn, clean)
        m = evaluate(archive, {"teacher": emb}, val_idx, train_idx)["teacher"]
        return {k: v for k, v in m.items() if k != "per_class"}

    best_path = run_dir / "best.npz"
    budget_s = tr.max_minutes * 60.0
    start_elapsed = float(loop.get("elapsed_s", 0.0))
    t_loop = time.time()
    while not done:
        epoch = loop["epoch"]
        ds = make_dataset(epoch)
        losses = []
        it = iter(ds)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{tr.epochs}", file=sys.stderr, leave=False)
        for _ in range(steps_per_epoch):
            loss = float(train_step(next(it)))
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at epoch {epoch + 1}; lower train.lr")
            losses.append(loss)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
        if bar is not None:
            bar.close()
        loop["epoch"] = epoch + 1
        elapsed = start_elapsed + (time.time() - t_loop)
        loop["elapsed_s"] = elapsed
        rec = {
            "epoch": epoch + 1,
            "loss": float(np.mean(losses)),
            "temperature": float(1.0 / math.exp(min(float(logit_scale.numpy()), math.log(100.0)))),
            "elapsed_s": round(elapsed, 1),
        }
        last_epoch = loop["epoch"] >= tr.epochs or elapsed > budget_s
        if loop["epoch"] % tr.eval_every == 0 or last_epoch:
            m = validate()
            rec["val"] = m
            score = select_score(m, tr.select_metric)
            if score > loop["best"]:
                loop.update(best=float(score), best_epoch=epoch + 1, since_best=0)
                if chief:
                    with atomic_path(best_path, suffix=".npz") as tmp:
                        np.savez(
                            tmp,
                            *[
                                np.asarray(v.numpy())
                                for v in list(encoder.weights) + list(text_head.weights) + [logit_scale]
                            ],
                        )
            else:
                loop["since_best"] += tr.eval_every
            if loop["since_best"] >= tr.patience and loop["epoch"] >= tr.min_epochs:
                loop["stopped"] = f"early stop: no {tr.select_metric} gain for {tr.patience} epochs"
            say(
                f"epoch {epoch + 1}: loss {rec['loss']:.4f} T {rec['temperature']:.4f} val "
                f"{tr.select_metric} {score:.4f} rhythmP@10_nonSR {m['rhythmP@10_nonSR']:.3f} "
                f"P@10 {m['P@10']:.3f} (best {loop['best']:.4f} @ {loop['best_epoch']}) [{elapsed / 60:.1f} min]"
            )
        else:
            say(f"epoch {epoch + 1}: loss {rec['loss']:.4f} T {rec['temperature']:.4f} [{elapsed / 60:.1f} min]")
        if elapsed > budget_s and not loop.get("stopped"):
            loop["stopped"] = f"time budget of {tr.max_minutes} min reached"
        loop["history"].append(rec)
        if chief:
            state.save(ckdir / f"epoch-{epoch + 1:04d}", loop)
            for old in sorted(ckdir.glob("epoch-*"))[: -max(1, tr.keep_checkpoints)]:
                import shutil

                shutil.rmtree(old, ignore_errors=True)
        done = (
            loop["epoch"] >= tr.epochs
            or bool(loop.get("stopped"))
            or (until_epoch is not None and loop["epoch"] >= until_epoch)
        )

    # ---- export the best weights
    if best_path.exists():
        with np.load(best_path) as z:
            arrays = [z[f"arr_{k}"] for k in range(len(z.files))]
        for v, a in zip(list(encoder.weights) + list(text_head.weights) + [logit_scale], arrays):
            v.assign(a)
    metrics = {
        "name": cfg.name,
        "imaging": cfg.imaging.to_dict(),
        "best_epoch": loop["best_epoch"],
        "select_metric": tr.select_metric,
        "val_best": loop["best"],
        "epochs_run": loop["epoch"],
        "stopped": loop.get("stopped"),
        "train_time_s": round(float(loop["elapsed_s"]), 1),
        "replicas": n_rep,
        "strategy": tr.strategy,
        "history": loop["history"],
    }
    if chief:
        export(cfg, archive, encoder, text_head, logit_scale, t_all, enc_fn, progress=progress)
        metrics["wall_time_s"] = round(time.time() - t0, 1)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    return metrics
