import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from fkd.core.config import ParamsError
from fkd.core.data import load_fold
from fkd.core.keypoints import EXTENDED_NAMES, KEYPOINT_NAMES, flip_coords, flip_permutation, index, to_extended
from fkd.models.cnn.network import MaskedHuber, MaskedRMSE, build_model, load_model_fn, save_model
from fkd.models.cnn.train import flip_batch, targets_for, train_adam, train_dataset, train_sgd
from fkd.sources.synthetic import draw_face
from tests.conftest import tiny_params


def huber(err, delta):
    err = np.abs(err)
    return np.where(err <= delta, 0.5 * err**2, delta * (err - 0.5 * delta))


def test_masked_huber_counts_only_present_labels():
    y_true = np.array([[10.0, np.nan, 30.0], [np.nan, np.nan, 5.0]], dtype=np.float32)
    y_pred = np.array([[10.5, 99.0, 36.0], [-50.0, 7.0, 4.0]], dtype=np.float32)
    loss = float(MaskedHuber(delta=1.0, scale=2.0)(y_true, y_pred))
    # present errors /2: 0.25 (quadratic), 3.0 (linear), 0.5 (quadratic); mean over the 3 present values
    expected = huber(np.array([0.25, 3.0, 0.5]), 1.0).mean()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_all_missing_batch_gives_zero_loss_and_gradient_not_nan():
    y_true = tf.constant(np.full((4, 34), np.nan, dtype=np.float32))
    y_pred = tf.Variable(np.random.default_rng(0).normal(size=(4, 34)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = MaskedHuber(1.0, 96.0)(y_true, y_pred)
    grad = tape.gradient(loss, y_pred).numpy()
    assert float(loss) == 0.0
    assert np.all(grad == 0.0)


def test_masked_rmse_accumulates_present_labels_over_batches():
    metric = MaskedRMSE()
    metric.update_state(np.array([[1.0, np.nan]], np.float32), np.array([[4.0, 100.0]], np.float32))  # error 3
    metric.update_state(np.array([[np.nan, np.nan]], np.float32), np.array([[0.0, 0.0]], np.float32))
    metric.update_state(np.array([[0.0, 2.0]], np.float32), np.array([[0.0, 6.0]], np.float32))  # errors 0, 4
    assert float(metric.result()) == pytest.approx(np.sqrt((9 + 0 + 16) / 3))


def test_forward_fill_takes_missing_values_from_the_previous_row():
    kp = np.full((3, 30), np.nan, dtype=np.float32)
    kp[0] = np.arange(30)
    kp[1, :4] = 100.0
    filled = targets_for(kp, 30, "ffill")
    assert np.array_equal(filled[1], np.r_[np.full(4, 100.0), np.arange(4, 30)])
    assert np.array_equal(filled[2], filled[1])
    assert np.isnan(targets_for(kp, 30, "mask")[1, 4:]).all()


@pytest.mark.parametrize("scheme_heads,outputs", [(True, 34), (False, 30)])
def test_model_shapes_and_saved_model_fn_gives_34_pixels(tmp_path, scheme_heads, outputs):
    p = tiny_params("cnn", scheme_heads=scheme_heads)
    model = build_model(p, outputs)
    assert model.output_shape == (None, outputs)
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == list(p.filters)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 96, 96), dtype=np.uint8)
    direct = model.predict(images[..., None].astype(np.float32), verbose=0)
    save_model(model, tmp_path / "m.keras")
    pred = load_model_fn(tmp_path / "m.keras")(images)
    assert pred.shape == (5, 34) and pred.dtype == np.float32
    np.testing.assert_allclose(pred[:, :outputs], direct, rtol=1e-5, atol=1e-4)
    if outputs == 30:  # scheme-B slots repeat the scheme-A nose and lip
        nose, nose_b = index("nose_tip"), index("nose_tip_b", EXTENDED_NAMES)
        assert np.array_equal(pred[:, 2 * nose_b : 2 * nose_b + 2], pred[:, 2 * nose : 2 * nose + 2])


def test_mismatched_dropout_list_is_a_params_error():
    with pytest.raises(ParamsError, match="cnn.dropout"):
        tiny_params("cnn", dropout=[0.1, 0.1])  # checked with the params, before any model is built


def test_flip_lands_keypoints_on_the_flipped_features():
    image, kp = draw_face(np.random.default_rng(3))
    targets = to_extended(kp[None])
    x, y = flip_batch(tf.constant(image[None, :, :, None], tf.float32), tf.constant(targets), tf.constant([True]),
                      flip_permutation(EXTENDED_NAMES))
    flipped, y = x.numpy()[0, :, :, 0], y.numpy()[0]
    assert np.array_equal(flipped, image[:, ::-1])
    left, right = index("left_eye_center"), index("right_eye_center")
    # "left" stays on the image's right after the swap, and both labels sit on dark pupils
    assert y[2 * left] > y[2 * right]
    for i in (left, right):
        cx, cy = int(round(y[2 * i])), int(round(y[2 * i + 1]))
        assert flipped[cy - 1 : cy + 2, cx - 1 : cx + 2].mean() < 0.6 * flipped.mean()
    np.testing.assert_allclose(y, flip_coords(targets, names=EXTENDED_NAMES)[0], atol=1e-5)
    assert np.isnan(y[2 * index("nose_tip_b", EXTENDED_NAMES)])


@pytest.mark.parametrize("names", [EXTENDED_NAMES, KEYPOINT_NAMES])
def test_flip_pipeline_mirrors_some_images_with_their_keypoints(names):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(16, 96, 96), dtype=np.uint8)
    targets = rng.uniform(10, 80, size=(16, 2 * len(names))).astype(np.float32)
    targets[::3, 4:] = np.nan
    by_image = {im.tobytes(): i for i, im in enumerate(images)}
    mirrored = 0
    for x, y in train_dataset(images, targets, batch_size=8, seed=0, flip=True, threads=1):
        for img, t in zip(x.numpy()[..., 0].astype(np.uint8), y.numpy()):
            if img.tobytes() in by_image:
                np.testing.assert_array_equal(t, targets[by_image[img.tobytes()]])
            else:
                i = by_image[img[:, ::-1].tobytes()]
                np.testing.assert_allclose(t, flip_coords(targets[i][None], names=names)[0], atol=1e-5)
                mirrored += 1
    assert 0 < mirrored < 16


@pytest.mark.slow
def test_adam_phase_is_deterministic_for_a_seed(split_dir, tmp_path):
    train, val = load_fold(split_dir)
    p = tiny_params("cnn")
    first = train_adam(train, val, p, tmp_path / "a.keras")
    second = train_adam(train, val, p, tmp_path / "b.keras")
    assert first.best_val_rmse == second.best_val_rmse
    assert np.array_equal(load_model_fn(tmp_path / "a.keras")(val.images), load_model_fn(tmp_path / "b.keras")(val.images))


@pytest.mark.slow
def test_sgd_phase_starts_from_the_adam_model_and_keeps_it_without_improvement(split_dir, tmp_path):
    import keras

    train, val = load_fold(split_dir)
    p = tiny_params("cnn")
    adam = train_adam(train, val, p, tmp_path / "adam.keras")
    assert adam.epochs_run == 1 and np.isfinite(adam.best_val_rmse)
    phase1 = load_model_fn(tmp_path / "adam.keras")(val.images)

    seen = {}

    class FirstStep(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["pred"] = self.model.predict(val.images[..., None].astype(np.float32), verbose=0)

    # lr 0: the fine-tuned weights cannot beat phase 1, so phase 1's weights must be saved
    p0 = dataclasses.replace(p, sgd=dataclasses.replace(p.sgd, lr=0.0))
    sgd = train_sgd(train, val, p0, tmp_path / "adam.keras", tmp_path / "sgd.keras", callbacks=[FirstStep()])
    np.testing.assert_allclose(seen["pred"], phase1, rtol=1e-5, atol=1e-4)
    assert sgd.adam_val_rmse == pytest.approx(adam.best_val_rmse, rel=1e-4)
    assert sgd.improved_on_adam is False
    np.testing.assert_allclose(load_model_fn(tmp_path / "sgd.keras")(val.images), phase1, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_bf16_computes_hidden_layers_in_bfloat16_keeps_the_head_float32_and_phase_2_inherits_it(split_dir, tmp_path):
    import keras

    from fkd.nn.train_result import cpu_has_native_bf16

    model = build_model(tiny_params("cnn"), 34, bf16=True)
    assert model.get_layer("conv1").compute_dtype == "bfloat16" and model.get_layer("dense1").compute_dtype == "bfloat16"
    assert model.get_layer("conv1").variable_dtype == "float32"  # mixed: the weights stay float32
    assert model.get_layer("normalised_keypoints").compute_dtype == "float32" and model.output.dtype == "float32"
    assert all(layer.compute_dtype == "float32" for layer in build_model(tiny_params("cnn"), 34).layers)

    train, val = load_fold(split_dir)
    p = tiny_params("cnn", bf16=True)
    native = cpu_has_native_bf16()  # elsewhere bf16 would only be emulated (slower): float32 there
    adam = train_adam(train, val, p, tmp_path / "adam.keras")
    again = train_adam(train, val, p, tmp_path / "again.keras")
    assert adam.precision == ("bf16" if native else "fp32") and "precision" in adam.metrics()
    assert (tmp_path / "adam.keras").read_bytes() == (tmp_path / "again.keras").read_bytes()
    saved = keras.models.load_model(tmp_path / "adam.keras", compile=False)
    assert saved.get_layer("conv2").compute_dtype == ("bfloat16" if native else "float32")
    sgd = train_sgd(train, val, tiny_params("cnn"), tmp_path / "adam.keras", tmp_path / "sgd.keras")  # cnn.bf16 off here
    assert sgd.precision == adam.precision  # phase 2 fine-tunes the saved model as it was built
    pred = load_model_fn(tmp_path / "sgd.keras")(val.images[:3])
    assert pred.dtype == np.float32 and pred.shape == (3, 34) and np.isfinite(pred).all()
    fp32 = train_adam(train, val, tiny_params("cnn"), tmp_path / "fp32.keras")
    assert fp32.precision == "fp32"
    if native:
        assert fp32.best_val_rmse != adam.best_val_rmse

