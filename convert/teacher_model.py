"""The teacher's networks (Keras): the ViT image encoder, the text projection head, the contrastive loss.

* :func:`build_image_encoder`: image (H, W, 3) in [-1, 1] -> patch embedding, learned positions, pre-norm
  transformer blocks, mean pooling (``features``), a linear projection (``image_projection``), L2 normalisation;
* :func:`build_text_head`: a frozen text embedding -> a learnable linear projection, L2-normalised;
* :func:`clip_loss`: the symmetric contrastive (CLIP) loss with soft or identity targets.

Keras and TensorFlow are imported inside the functions: importing this module loads neither.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError

from .teacher_config import TeacherConfig

__all__ = [
    "position_embedding_layer",
    "build_image_encoder",
    "build_text_head",
    "feature_model",
    "clip_loss",
    "build_label_head",
    "label_loss",
    "load_teacher_model",
    "TeacherEnsemble",
    "ensemble_vectors",
]


def import_keras():
    """Import and return ``keras``, silencing Keras 3's harmless warning about a bare tensor passed to a
    one-input functional model."""
    import warnings

    # Keras 3 warns when a one-input functional model is called with a bare tensor (harmless)
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    import keras

    return keras


def _register():
    keras: Any = import_keras()  # untyped: a Keras class is the base below

    @keras.saving.register_keras_serializable(package="ecgret")
    class PositionEmbedding(keras.layers.Layer):
        """Adds a learned embedding per token position: (B, N, D) -> (B, N, D)."""

        def build(self, input_shape):
            self.pos = self.add_weight(
                shape=(1, input_shape[1], input_shape[2]),
                name="pos",
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

        def call(self, x):
            return x + self.pos

    return PositionEmbedding


_PE = None


def position_embedding_layer():
    """The ``PositionEmbedding`` layer class, defined and registered as Keras-serializable
    (``ecgret>PositionEmbedding``) on the first call, so that importing this module loads no Keras."""
    global _PE
    if _PE is None:
        _PE = _register()
    return _PE


def build_image_encoder(cfg: TeacherConfig, name: str = "image_encoder"):
    """ViT: image (H, W, 3) in [-1, 1] -> L2-normalised embedding (proj_dim,). The last two layers are the
    projection head (``image_projection``, a Dense) and ``l2norm``; ``features`` is the pooled output."""
    keras = import_keras()
    L = keras.layers
    m = cfg.model
    h0, w0, _ = cfg.imaging.shape
    h, w = cfg.image_size
    inp = keras.Input((h0, w0, 3), name="image")
    x = inp if (h, w) == (h0, w0) else L.Resizing(h, w, interpolation=m.resize, name="resize")(inp)
    x = L.Conv2D(m.width, m.patch, strides=m.patch, name="patch_embed")(x)
    n_tok = (h // m.patch) * (w // m.patch)
    x = L.Reshape((n_tok, m.width), name="tokens")(x)
    x = position_embedding_layer()(name="pos_embed")(x)
    x = L.Dropout(m.dropout, name="embed_drop")(x)
    mlp = int(round(m.width * m.mlp_ratio))
    for b in range(m.depth):
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln1")(x)
        y = L.MultiHeadAttention(m.heads, m.width // m.heads, dropout=m.dropout, name=f"b{b}_attn")(y, y)
        x = L.Add(name=f"b{b}_add1")([x, L.Dropout(m.dropout, name=f"b{b}_drop1")(y)])
        y = L.LayerNormalization(epsilon=1e-6, name=f"b{b}_ln2")(x)
        y = L.Dense(mlp, activation="gelu", name=f"b{b}_mlp1")(y)
        y = L.Dense(m.width, name=f"b{b}_mlp2")(y)
        x = L.Add(name=f"b{b}_add2")([x, L.Dropout(m.dropout, name=f"b{b}_drop2")(y)])
    x = L.LayerNormalization(epsilon=1e-6, name="final_ln")(x)
    feat = L.GlobalAveragePooling1D(name="features")(x)
    z = L.Dense(m.proj_dim, name="image_projection")(feat)
    z = L.UnitNormalization(name="l2norm")(z)
    return keras.Model(inp, z, name=name)


def build_text_head(cfg: TeacherConfig, text_dim: int, name: str = "text_head"):
    """Frozen text embedding (text_dim,) -> L2-normalised projection (proj_dim,)."""
    keras = import_keras()
    inp = keras.Input((text_dim,), name="text_embedding")
    z = keras.layers.Dense(cfg.model.proj_dim, name="text_projection")(inp)
    z = keras.layers.UnitNormalization(name="l2norm")(z)
    return keras.Model(inp, z, name=name)


def build_label_head(cfg: TeacherConfig, n_labels: int, name: str = "label_head"):
    """Image embedding (proj_dim,) -> one logit per statement label (the supervised auxiliary term)."""
    keras = import_keras()
    inp = keras.Input((cfg.model.proj_dim,), name="image_embedding")
    return keras.Model(inp, keras.layers.Dense(n_labels, name="label_logits")(inp), name=name)


def label_loss(logits, labels):
    """Multi-label binary cross-entropy, summed over the labels and averaged over the batch."""
    import tensorflow as tf

    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(tf.reduce_sum(bce, axis=1))


def feature_model(encoder):
    """The encoder up to the pooled features (the projection head's input)."""
    keras = import_keras()
    return keras.Model(encoder.inputs, encoder.get_layer("features").output, name="features")


def clip_loss(zi, zt, t_raw, logit_scale, targets: str, tau_t: float, rhythm=None, w_rhythm: float = 0.0):
    """Symmetric contrastive loss. zi, zt: (B, D) normalised; t_raw: (B, Dt) normalised frozen text vectors.
    With ``rhythm`` (B, R) multi-hot rhythm statements and ``w_rhythm`` > 0 the soft targets are
    softmax((cos(t_i, t_j) + w_rhythm * [i and j share a rhythm statement]) / tau_t): the report texts
    differ in many words besides the rhythm, so this makes "same rhythm" count as much as the words do."""
    import tensorflow as tf

    scale = tf.exp(tf.minimum(logit_scale, math.log(100.0)))
    logits = scale * tf.matmul(zi, zt, transpose_b=True)
    if targets == "clip":
        y = tf.eye(tf.shape(zi)[0], dtype=logits.dtype)
    else:
        sim = tf.matmul(t_raw, t_raw, transpose_b=True)
        if rhythm is not None and w_rhythm > 0:
            shared = tf.cast(tf.matmul(rhythm, rhythm, transpose_b=True) > 0.5, sim.dtype)
            sim = sim + w_rhythm * shared
        y = tf.nn.softmax(sim / tau_t, axis=1)
    li = tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits)
    lt = tf.nn.softmax_cross_entropy_with_logits(labels=tf.transpose(y), logits=tf.transpose(logits))
    return 0.5 * (tf.reduce_mean(li) + tf.reduce_mean(lt))


def load_teacher_model(run_dir):
    """The teacher's Keras image encoder (image -> unit embedding)."""
    import keras

    position_embedding_layer()
    p = Path(run_dir) / "image_encoder.keras"
    try:
        return keras.saving.load_model(p, compile=False)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file
        raise ConfigError(f"{p}: cannot load the teacher model ({e})") from None


class TeacherEnsemble:
    """Several teachers as one target model for distillation: image -> the teachers' unit embeddings side by side,
    each scaled by 1/sqrt(k) (a unit vector of k x D). The cosine of two such vectors is the mean of the teachers'
    cosines, so nearest neighbours in it are those of the ensemble's averaged similarity. Called as a Keras model is
    (``ensemble(images, training=False)``); ``parts`` = k tells :func:`convert.student.distill` to centre and
    normalise each teacher's part on its own."""

    def __init__(self, models):
        if not models:
            raise ConfigError("a teacher ensemble needs at least one teacher")
        self.models = list(models)
        self.parts = len(self.models)

    def __call__(self, images, training: bool = False):
        import tensorflow as tf

        z = [tf.math.l2_normalize(m(images, training=training), axis=1) for m in self.models]
        return tf.concat(z, axis=1) * (1.0 / float(np.sqrt(self.parts)))


def ensemble_vectors(parts) -> np.ndarray:
    """The same side-by-side form of per-teacher vectors (a list of (N, D) arrays: embeddings or text vectors):
    each row of each part L2-normalised, scaled by 1/sqrt(k), concatenated."""
    k = len(parts)
    out = [np.asarray(p, np.float32) for p in parts]
    out = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in out]
    return (np.concatenate(out, axis=1) / np.float32(np.sqrt(k))).astype(np.float32)
