"""Training the Keras/TensorFlow CNN in two phases.

Phase 1 (:func:`train_adam`) trains from scratch with Adam; phase 2 (:func:`train_sgd`) loads
phase 1's model and fine-tunes it with SGD. Both train on uint8 faces streamed through a
``tf.data`` pipeline with batched horizontal-flip augmentation.
"""
from __future__ import annotations

import fkd.nn.tf_env  # noqa: F401,I001  first: puts Keras on TensorFlow and quiets TensorFlow's start-up before they load

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from fkd.core.data import Part
from fkd.core.errors import ModelFileError
from fkd.core.keypoints import flip_permutation, masked_rmse, point_names, training_targets
from fkd.models.cnn.network import (EVAL_BATCH, MaskedHuber, MaskedRMSE, build_model, load_keras, n_outputs,
                                    precision_of, save_model)
from fkd.models.cnn.params import CnnParams
from fkd.nn.train_result import TrainResult, bf16_here, cpu_threads

log = logging.getLogger("fkd.cnn")


# --- data ------------------------------------------------------------------------------------


def targets_for(keypoints: np.ndarray, outputs: int, missing: str = "mask") -> np.ndarray:
    """Pixel targets for a model with ``outputs`` outputs; ``missing="ffill"`` fills NaN from the previous row."""
    y = training_targets(keypoints, outputs)
    if missing == "ffill":
        # The published recipe; leading rows with nothing above them stay NaN and are masked.
        y = pd.DataFrame(y).ffill().to_numpy(dtype=np.float32)
    return y


def flip_batch(images: tf.Tensor, targets: tf.Tensor, flip: tf.Tensor, perm: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirror the images (B, H, W, 1) where ``flip`` (B,) is true; their pixel targets swap left/right, x -> W-1-x."""
    width = tf.cast(tf.shape(images)[2], targets.dtype)
    pts = tf.reshape(targets, (-1, len(perm), 2))
    pts = tf.gather(pts, perm, axis=1)
    mirrored = tf.reshape(tf.stack([width - 1.0 - pts[..., 0], pts[..., 1]], axis=-1), tf.shape(targets))
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    targets = tf.where(flip[:, None], mirrored, targets)
    return images, targets


def train_dataset(images: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, flip: bool, threads: int) -> tf.data.Dataset:
    """Shuffled batches of (float pixels (B, 96, 96, 1), pixel targets); with ``flip`` each face is mirrored with p=1/2.

    Targets stay in pixels here (the model's last layer scales to pixels), so a mirrored x is W-1-x exactly as
    in :func:`fkd.core.keypoints.flip_coords`.
    """
    perm = flip_permutation(point_names(targets.shape[1]))
    ds = tf.data.Dataset.from_tensor_slices((images[..., None], targets))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    # One fresh stateless seed per batch, different every epoch but fixed by ``seed``.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))

    def prepare(batch, pair):
        x, y = batch
        x = tf.cast(x, tf.float32)
        if flip:
            coin = tf.random.stateless_uniform(tf.shape(x)[:1], seed=pair) < 0.5
            x, y = flip_batch(x, y, coin, perm)
        return x, y

    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _with_threads(ds, threads).prefetch(tf.data.AUTOTUNE)


def eval_dataset(images: np.ndarray, targets: np.ndarray, threads: int) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((images[..., None], targets)).batch(EVAL_BATCH)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return _with_threads(ds, threads).prefetch(tf.data.AUTOTUNE)


def _with_threads(ds: tf.data.Dataset, threads: int) -> tf.data.Dataset:
    if threads:
        opts = tf.data.Options()
        opts.threading.private_threadpool_size = threads
        ds = ds.with_options(opts)
    return ds


# --- training --------------------------------------------------------------------------------


def configure(seed: int, threads: int) -> str:
    """Seed everything, make ops deterministic, set CPU threads (0 = all cores); returns the device label."""
    n = cpu_threads(threads)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # the TF runtime already started in this process (tests): keep its pools
        log.debug("TensorFlow already initialised; thread counts unchanged")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return "cpu"


def use_bf16(p: CnnParams, device: str) -> bool:
    """Whether phase 1 builds the model in mixed bfloat16: ``cnn.bf16`` on a GPU or on a CPU of
    :func:`fkd.nn.train_result.bf16_here` (a CPU without bf16 instructions only emulates it, slower than float32). Phase 2 and
    every prediction compute as the saved model's layers say."""
    return bf16_here(p.bf16, device == "cpu", "cnn.bf16")


class EpochLog(keras.callbacks.Callback):
    """Per epoch: one progress line on stderr and train_loss, val_loss, val_rmse, lr to dvclive."""

    def __init__(self, epochs: int, images_per_epoch: int, live=None):
        super().__init__()
        self.epochs, self.images_per_epoch, self.live = epochs, images_per_epoch, live
        self.train_seconds, self.epochs_run = 0.0, 0
        self.history: list[dict] = []
        self._start = self._train_end = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), 0.0

    def on_test_begin(self, logs=None):  # validation starts: the epoch's training is done
        if self._start and not self._train_end:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self._train_end or time.perf_counter()) - self._start
        self.train_seconds += seconds
        self.epochs_run = epoch + 1
        row = {
            "train_loss": float(logs["loss"]),
            "val_loss": float(logs["val_loss"]),
            "val_rmse": float(logs["val_rmse"]),
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
        }
        self.history.append(row)
        log.info("epoch %3d/%d  loss %.6f  val_loss %.6f  val RMSE %.3f px  %6.1f img/s  lr %.2e", epoch + 1, self.epochs,
                 row["train_loss"], row["val_loss"], row["val_rmse"], self.images_per_epoch / max(seconds, 1e-9), row["lr"])
        if self.live is not None:
            for name, value in row.items():
                self.live.log_metric(name, value)
            self.live.next_step()

    def result(self, device: str) -> TrainResult:
        rmse = [h["val_rmse"] for h in self.history]
        best = int(np.argmin(np.nan_to_num(rmse, nan=np.inf))) if rmse else 0
        return TrainResult(
            best_val_rmse=rmse[best] if rmse else float("nan"),
            best_epoch=best + 1,
            epochs_run=self.epochs_run,
            train_seconds=self.train_seconds,
            images_per_second=self.epochs_run * self.images_per_epoch / self.train_seconds if self.train_seconds else 0.0,
            device=device,
            precision=precision_of(self.model),
        )


def _compile(model: keras.Model, optimizer, p: CnnParams) -> None:
    model.compile(optimizer=optimizer, loss=MaskedHuber(p.huber_delta, p.target_scale), metrics=[MaskedRMSE()])


def _fit(model, train: Part, val: Part, p: CnnParams, epochs: int, callbacks, live, missing: str) -> EpochLog:
    outputs = model.output_shape[-1]
    y_train = targets_for(train.keypoints, outputs, missing)
    y_val = targets_for(val.keypoints, outputs)  # validation always scores present labels only
    train_ds = train_dataset(train.images, y_train, p.batch_size, p.seed, p.flip, p.threads)
    val_ds = eval_dataset(val.images, y_val, p.threads)
    epoch_log = EpochLog(epochs, len(train.images), live)
    log.info("training on %d faces (%d outputs, missing=%s, flip=%s), validating on %d", len(train.images), outputs,
             missing, p.flip, len(val.images))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[*callbacks, epoch_log], shuffle=False, verbose=0)
    return epoch_log


def train_adam(train: Part, val: Part, p: CnnParams, model_path: str | Path, live=None, callbacks=()) -> TrainResult:
    """Phase 1: train from scratch with Adam, early-stop on val RMSE, save the best epoch's model."""
    device = configure(p.seed, p.threads)
    model = build_model(p, n_outputs(p.scheme_heads), bf16=use_bf16(p, device))
    lr = p.adam.lr
    if p.adam.schedule == "cosine":
        steps = p.adam.epochs * math.ceil(len(train.images) / p.batch_size)
        lr = keras.optimizers.schedules.CosineDecay(p.adam.lr, decay_steps=max(steps, 1))
    _compile(model, keras.optimizers.Adam(lr), p)
    stop = keras.callbacks.EarlyStopping("val_rmse", mode="min", patience=p.adam.patience, restore_best_weights=True)
    epoch_log = _fit(model, train, val, p, p.adam.epochs, [stop, *callbacks], live, p.missing)
    result = epoch_log.result(device)
    result.check("CNN phase 1 (Adam)")
    save_model(model, model_path)
    return result


@dataclass
class SgdResult(TrainResult):
    adam_val_rmse: float  # the phase-1 model's val RMSE, measured before fine-tuning
    improved_on_adam: bool


def load_for_finetune(path: str | Path, p: CnnParams) -> keras.Model:
    """Phase 1's saved model, recompiled with SGD for phase 2."""
    if not Path(path).exists():
        raise ModelFileError(f"{path} not found: run the train_cnn_adam stage first")
    model = load_keras(path)
    _compile(model, keras.optimizers.SGD(p.sgd.lr, momentum=p.sgd.momentum), p)
    return model


def evaluate_rmse(model: keras.Model, part: Part) -> float:
    """Val RMSE in pixels over present labels."""
    pred = model.predict(part.images[..., None].astype(np.float32), batch_size=EVAL_BATCH, verbose=0)
    return masked_rmse(pred, targets_for(part.keypoints, pred.shape[1]))


def train_sgd(train: Part, val: Part, p: CnnParams, start_path: str | Path, model_path: str | Path, live=None,
              callbacks=()) -> SgdResult:
    """Phase 2: fine-tune phase 1's model with SGD; saves the best epoch, or phase 1's weights if none beat them."""
    device = configure(p.seed, p.threads)
    model = load_for_finetune(start_path, p)
    start_weights = model.get_weights()
    adam_rmse = evaluate_rmse(model, val)
    log.info("phase 1 model %s: val RMSE %.3f px", start_path, adam_rmse)
    with tempfile.TemporaryDirectory(prefix="cnn_sgd_") as tmp_dir:
        best_path = Path(tmp_dir) / "best.weights.h5"
        # Fresh callbacks: a reused EarlyStopping/checkpoint would carry phase 1's best value.
        checkpoint = keras.callbacks.ModelCheckpoint(best_path, monitor="val_rmse", mode="min", save_best_only=True,
                                                     save_weights_only=True, initial_value_threshold=adam_rmse)
        plateau = keras.callbacks.ReduceLROnPlateau("val_rmse", factor=p.sgd.plateau_factor, patience=p.sgd.plateau_patience,
                                                    mode="min")
        stop = keras.callbacks.EarlyStopping("val_rmse", mode="min", patience=p.sgd.patience)
        epoch_log = _fit(model, train, val, p, p.sgd.epochs, [checkpoint, plateau, stop, *callbacks], live, p.missing)
        result = epoch_log.result(device)
        result.check("CNN phase 2 (SGD)")
        improved = best_path.exists()  # the checkpoint only saves epochs that beat phase 1
        if improved:
            log.info("phase 2 improved on phase 1's %.3f px: saving its best epoch (%.3f px)", adam_rmse, result.best_val_rmse)
            model.load_weights(best_path)
        else:
            log.info("phase 2 did not improve on phase 1 (%.3f >= %.3f px): saving phase 1's weights", result.best_val_rmse, adam_rmse)
            model.set_weights(start_weights)
    save_model(model, model_path)
    return SgdResult(**vars(result), adam_val_rmse=adam_rmse, improved_on_adam=bool(improved))


def fit(train: Part, val: Part, p: CnnParams, model_path: str | Path, live=None) -> SgdResult:
    """Both phases from scratch, as the two training stages run them: Adam, its model kept in a temporary
    folder, then SGD from it into ``model_path`` (``live`` logs phase 2)."""
    with tempfile.TemporaryDirectory(prefix="cnn_adam_") as tmp_dir:
        start = Path(tmp_dir) / "adam.keras"
        train_adam(train, val, p, start)
        return train_sgd(train, val, p, start, model_path, live)
