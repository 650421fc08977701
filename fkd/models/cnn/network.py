"""The Keras/TensorFlow CNN's network: conv blocks and dense layers, its masked loss and metric, and
saving and loading the model byte-stably.

The saved model is self-contained: it takes pixel values 0-255 (N, 96, 96, 1) and returns
keypoints in pixels. Its last dense layer learns the targets divided by ``cnn.target_scale``
(the published normalisation); a fixed ``Rescaling`` layer maps them back to pixels, and the
loss divides the error by the same scale, so the training maths is that of normalised targets.
Missing labels are NaN: :class:`MaskedHuber` and :class:`MaskedRMSE` count present ones only.
"""
from __future__ import annotations

import fkd.nn.tf_env  # noqa: F401,I001  first: puts Keras on TensorFlow and quiets TensorFlow's start-up before they load

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fkd.core.data import IMAGE_SIZE
from fkd.core.errors import ModelFileError
from fkd.core.io import save_bytes
from fkd.core.keypoints import N_COORDS, N_EXTENDED, widen_to_extended
from fkd.models.cnn.params import CnnParams

if keras.backend.backend() != "tensorflow":
    raise RuntimeError(f"the CNN needs Keras on the TensorFlow backend, but KERAS_BACKEND is {keras.backend.backend()!r}")

#: Validation and prediction batch size (no gradients, so larger than training batches).
EVAL_BATCH = 256


# --- loss and metric -------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="fkd")
class MaskedHuber(keras.losses.Loss):
    """Huber loss of ``(pred - target) / scale`` over present (finite) targets only.

    The sum is divided by the number of present coordinates in the batch; a batch without
    any present coordinate gives 0, not NaN. Targets and predictions are in pixels.
    """

    def __init__(self, delta: float = 1.0, scale: float = 1.0, name: str = "masked_huber", **kwargs):
        kwargs.setdefault("reduction", "sum")  # call() already returns the batch's scalar
        super().__init__(name=name, **kwargs)
        self.delta, self.scale = float(delta), float(scale)

    def call(self, y_true, y_pred):
        mask = tf.math.is_finite(y_true)
        err = tf.abs(tf.where(mask, y_pred - tf.where(mask, y_true, 0.0), 0.0)) / self.scale
        quad = tf.minimum(err, self.delta)
        huber = 0.5 * quad * quad + self.delta * (err - quad)
        count = tf.reduce_sum(tf.cast(mask, y_pred.dtype))
        return tf.reduce_sum(huber) / tf.maximum(count, 1.0)

    def get_config(self):
        return {**super().get_config(), "delta": self.delta, "scale": self.scale}


@keras.saving.register_keras_serializable(package="fkd")
class MaskedRMSE(keras.metrics.Metric):
    """Root mean squared error over all present (finite) target coordinates seen in an epoch."""

    def __init__(self, name: str = "rmse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.sum_sq = self.add_variable(shape=(), initializer="zeros", name="sum_sq")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        mask = tf.math.is_finite(y_true)
        err = tf.where(mask, y_pred - tf.where(mask, y_true, 0.0), 0.0)
        self.sum_sq.assign_add(tf.reduce_sum(err * err))
        self.count.assign_add(tf.reduce_sum(tf.cast(mask, self.dtype)))

    def result(self):
        return tf.sqrt(self.sum_sq / tf.maximum(self.count, 1.0))


# --- model -----------------------------------------------------------------------------------


def n_outputs(scheme_heads: bool) -> int:
    """34 outputs (extended layout) with scheme heads, Kaggle's 30 without."""
    return 2 * N_EXTENDED if scheme_heads else N_COORDS


def build_model(p: CnnParams, outputs: int, bf16: bool = False) -> keras.Model:
    """Conv blocks (Conv2D -> LeakyReLU -> MaxPool -> Dropout), Flatten, dense layers with LeakyReLU, linear head.
    With ``bf16`` the blocks and hidden dense layers compute in bfloat16 (Keras ``mixed_bfloat16``: float32
    weights); the head stays float32, where bfloat16's 8-bit mantissa would round keypoints to ~0.3 px."""
    hidden = keras.DTypePolicy("mixed_bfloat16" if bf16 else "float32")
    x = inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="pixels")
    x = keras.layers.Rescaling(1 / 255, name="unit_range", dtype=hidden)(x)
    for i, (filters, rate) in enumerate(zip(p.filters, p.dropout), start=1):
        x = keras.layers.Conv2D(filters, p.kernel, padding="same", name=f"conv{i}", dtype=hidden)(x)
        x = keras.layers.LeakyReLU(p.leaky_alpha, name=f"act{i}", dtype=hidden)(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}", dtype=hidden)(x)
        x = keras.layers.Dropout(rate, name=f"drop{i}", dtype=hidden)(x)
    x = keras.layers.Flatten(name="flatten", dtype=hidden)(x)
    for i, units in enumerate(p.dense, start=1):
        x = keras.layers.Dense(units, name=f"dense{i}", dtype=hidden)(x)
        x = keras.layers.LeakyReLU(p.leaky_alpha, name=f"dense_act{i}", dtype=hidden)(x)
    x = keras.layers.Dense(outputs, name="normalised_keypoints", dtype="float32")(x)
    out = keras.layers.Rescaling(p.target_scale, name="to_pixels", dtype="float32")(x)
    return keras.Model(inputs, out, name="fkd_cnn")


def precision_of(model: keras.Model) -> str:
    """``bf16`` if any layer of ``model`` computes in bfloat16, else ``fp32`` (:class:`fkd.nn.train_result.TrainResult`)."""
    return "bf16" if any(layer.compute_dtype == "bfloat16" for layer in model.layers) else "fp32"


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save the architecture and weights without optimizer state or loss (a third of the size; loads anywhere),
    byte-stably (:func:`stable_keras_archive`)."""
    bare = keras.Model.from_config(model.get_config())  # clone_model would copy the compile state too
    bare.set_weights(model.get_weights())
    with tempfile.TemporaryDirectory(prefix="fkd_keras_") as tmp_dir:
        tmp = Path(tmp_dir) / "model.keras"
        bare.save(tmp)
        save_bytes(path, stable_keras_archive(tmp.read_bytes()))


def stable_keras_archive(data: bytes) -> bytes:
    """A ``.keras`` archive rewritten so that the same model gives the same bytes: no save date in
    ``metadata.json``, ``shared_object_id`` (Python object addresses) in ``config.json`` renumbered
    in order of appearance, and a fixed timestamp on every zip member."""
    def renumber(node, ids: dict):
        if isinstance(node, dict):
            return {k: (ids.setdefault(v, len(ids) + 1) if k == "shared_object_id" else renumber(v, ids)) for k, v in node.items()}
        if isinstance(node, list):
            return [renumber(v, ids) for v in node]
        return node

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "metadata.json":
                content = json.dumps({k: v for k, v in json.loads(content).items() if k != "date_saved"}).encode()
            elif info.filename == "config.json":
                content = json.dumps(renumber(json.loads(content), {})).encode()
            member = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type, member.external_attr = info.compress_type, info.external_attr
            dst.writestr(member, content)
    return out.getvalue()



# --- inference -------------------------------------------------------------------------------


def load_keras(path: str | Path) -> keras.Model:
    """A saved ``.keras`` model, uncompiled, in Keras' safe mode: nothing in the file runs (a ``Lambda`` layer's
    Python code is refused). A file Keras refuses or cannot read is a one-line :class:`ModelFileError` naming it."""
    path = Path(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError, ... for damaged or refused files
        fold_stage = path.stem.isdigit() and path.parent.name in ("cnn_adam", "cnn_sgd")
        retrain = f"`dvc repro train_{path.parent.name}@{path.stem}`" if fold_stage else "`dvc repro`"
        raise ModelFileError(f"{path}: cannot load the cnn model ({keras_reason(exc)}); "
                             f"rebuild it with {retrain} (or fetch it with `dvc pull`)") from exc


def keras_reason(exc: Exception, limit: int = 200) -> str:
    """The whole sentences of the first line of ``exc``'s message that fit in ``limit`` characters (at least the first
    one): Keras' reasons are long, and its last sentence tells how to turn safe mode off, which is not for a pipeline."""
    line = (str(exc).strip().splitlines() or [""])[0].strip()
    sentences = re.split(r"(?<=[.!?])\s+", line)
    kept = sentences[0]
    for sentence in sentences[1:]:
        if len(kept) + 1 + len(sentence) > limit:
            break
        kept += " " + sentence
    return kept.rstrip(".") or type(exc).__name__


def load_model_fn(path: str | Path):
    """Model function of a saved CNN: uint8 images (N, 96, 96) -> keypoints (N, 34) in pixels."""
    model = load_keras(path)
    outputs = model.output_shape[-1]

    def predict(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)[..., None]
        pred = model.predict(x, batch_size=EVAL_BATCH, verbose=0).astype(np.float32)
        return pred if outputs == 2 * N_EXTENDED else widen_to_extended(pred)

    return predict
