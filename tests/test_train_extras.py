"""The torch loop's options beyond plain training: a moving average of the weights, and pseudo-labels from a teacher
or from the network itself."""
import logging
import re

import numpy as np
import pytest
import torch

from fkd.core.data import load_fold
from fkd.core.keypoints import training_targets
from fkd.core.schema import ParamsError
from fkd.models.resnet import fit as train_resnet
from fkd.models.resnet.network import architecture, build, load_model_fn
from fkd.nn.augment import augment_batch
from fkd.nn.torch_nn import masked_mse
from fkd.nn.torch_params import AugmentParams
from fkd.nn.torch_train import masked_rmse, pseudo_labels
from tests.conftest import tiny_params

AUGMENT = AugmentParams(flip=True, rotate_deg=10.0, scale=0.08, shift_px=4.0, brightness=0.15, contrast=0.15)


@pytest.mark.slow
def test_an_ema_of_the_weights_is_what_is_validated_and_saved(split_dir, tmp_path):
    """With ``ema_decay`` the saved file is the moving average the reported val RMSE was measured on, byte-stably."""
    train, val = load_fold(split_dir)
    plain = train_resnet(train, val, tiny_params("resnet", epochs=2), tmp_path / "plain.safetensors")
    p = tiny_params("resnet", epochs=2, ema_decay=0.9)
    averaged = train_resnet(train, val, p, tmp_path / "a.safetensors")
    train_resnet(train, val, p, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "plain.safetensors").read_bytes()
    assert averaged.best_val_rmse != plain.best_val_rmse
    pred = torch.from_numpy(load_model_fn(tmp_path / "a.safetensors")(val.images))
    target = torch.from_numpy(training_targets(val.keypoints, pred.shape[1]))
    assert masked_rmse(pred, target) == pytest.approx(averaged.best_val_rmse, rel=1e-4)


@pytest.mark.parametrize("key, value", [("ema_decay", -0.1), ("ema_decay", 1.0), ("pseudo_label_weight", -0.5),
                                        ("pseudo_label_weight", 1.5)])
def test_out_of_range_values_are_refused_naming_the_key(key, value):
    with pytest.raises(ParamsError, match=rf"resnet\.{key}"):
        tiny_params("resnet", **{key: value})


def test_pseudo_labels_are_weighted_and_never_override_a_label():
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[1.0, float("nan"), float("nan")]])
    pseudo = torch.tensor([[9.0, 4.0, float("nan")]])  # 9.0 sits where a label is: ignored
    assert masked_mse(pred, target, pseudo, 0.0) == masked_mse(pred, target) == 0
    assert masked_mse(pred, target, pseudo, 0.5).item() == pytest.approx(0.5 * 2.0**2 / (1 + 0.5))
    assert masked_mse(pred, target, pseudo, 1.0).item() == pytest.approx(2.0**2 / 2)


def test_labels_and_pseudo_labels_move_with_their_image_exactly_like_labels_alone():
    images, labels = torch.rand(16, 1, 96, 96), torch.rand(16, 34) * 80 + 8
    labels[::3, :8] = float("nan")
    stacked = torch.stack([labels, labels.flip(0)], 1)
    alone_images, alone = augment_batch(images, labels, AUGMENT, torch.Generator().manual_seed(3))
    both_images, both = augment_batch(images, stacked, AUGMENT, torch.Generator().manual_seed(3))
    assert both.shape == stacked.shape and torch.equal(alone_images, both_images)
    assert torch.equal(torch.nan_to_num(both[:, 0], -1.0), torch.nan_to_num(alone, -1.0))
    flipped_alone = augment_batch(images, labels.flip(0), AUGMENT, torch.Generator().manual_seed(3))[1]
    assert torch.equal(torch.nan_to_num(both[:, 1], -1.0), torch.nan_to_num(flipped_alone, -1.0))


def test_pseudo_labels_fill_only_what_a_row_lacks(split_dir):
    train, _ = load_fold(split_dir)
    p = tiny_params("resnet")
    torch.manual_seed(0)
    pseudo = pseudo_labels(build(architecture(p)), train, p.normalize_targets)
    labels = training_targets(train.keypoints, pseudo.shape[1])
    assert pseudo.shape == labels.shape and pseudo.dtype == np.float32
    assert np.array_equal(np.isfinite(pseudo), np.isnan(labels))  # every missing coordinate, and no labelled one
    assert np.isnan(labels).any(axis=1).mean() > 0.5  # the drawn set's partial rows


@pytest.mark.slow
def test_a_student_is_trained_on_its_teachers_pseudo_labels_byte_stably(split_dir, tmp_path, caplog):
    train, val = load_fold(split_dir)
    plain = train_resnet(train, val, tiny_params("resnet", epochs=2), tmp_path / "plain.safetensors")
    p = tiny_params("resnet", epochs=2, pseudo_label_weight=0.5)
    with caplog.at_level(logging.INFO, logger="fkd.train_torch"):
        student = train_resnet(train, val, p, tmp_path / "a.safetensors")
    log = caplog.text
    assert "training the teacher" in log and f"teacher's val RMSE is {plain.best_val_rmse:.3f} px" in log
    assert log.index("training the teacher") < log.index("training the student")
    assert student.best_val_rmse != plain.best_val_rmse and student.epochs_run == 2
    train_resnet(train, val, p, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "plain.safetensors"]


@pytest.mark.parametrize("value", [2, 3])
def test_self_labelling_must_start_before_the_last_epoch(value):
    with pytest.raises(ParamsError, match=rf"^params: 'resnet.pseudo_label_from_epoch' must be below resnet.epochs \(2\) .* got {value};"):
        tiny_params("resnet", epochs=2, pseudo_label_weight=0.5, pseudo_label_from_epoch=value)
    with pytest.raises(ParamsError, match=r"resnet\.pseudo_label_every"):
        tiny_params("resnet", pseudo_label_every=0)


@pytest.mark.slow
def test_the_network_labels_its_own_rows_from_the_epoch_asked_byte_stably(split_dir, tmp_path, caplog):
    """No teacher is trained: after epoch 1 (and every 2nd epoch, not after the last) the network pseudo-labels its rows."""
    train, val = load_fold(split_dir)
    plain = train_resnet(train, val, tiny_params("resnet", epochs=4), tmp_path / "plain.safetensors")
    p = tiny_params("resnet", epochs=4, pseudo_label_weight=0.5, pseudo_label_from_epoch=1, pseudo_label_every=2)
    with caplog.at_level(logging.INFO, logger="fkd.train_torch"):
        own = train_resnet(train, val, p, tmp_path / "a.safetensors")
    relabelled = [int(n) for n in re.findall(r"relabelled what its training rows lack \(after epoch (\d+)\)", caplog.text)]
    assert relabelled == [1, 3] and "teacher" not in caplog.text and own.epochs_run == 4
    assert own.best_val_rmse != plain.best_val_rmse
    train_resnet(train, val, p, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    weightless = tiny_params("resnet", epochs=4, pseudo_label_from_epoch=1, pseudo_label_every=2)  # weight 0: off
    train_resnet(train, val, weightless, tmp_path / "c.safetensors")
    assert (tmp_path / "c.safetensors").read_bytes() == (tmp_path / "plain.safetensors").read_bytes()


def test_channels_last_is_the_memory_format_where_asked_and_always_with_cuda_or_bf16():
    from fkd.nn.torch_train import memory_format

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert memory_format(tiny_params("heatmap", channels_last=False), cpu, bf16=False) == torch.contiguous_format
    assert memory_format(tiny_params("heatmap", channels_last=True), cpu, bf16=False) == torch.channels_last
    assert memory_format(tiny_params("heatmap", channels_last=False), cpu, bf16=True) == torch.channels_last
    assert memory_format(tiny_params("heatmap", channels_last=False), cuda, bf16=False) == torch.channels_last


@pytest.mark.slow
def test_a_channels_last_heatmap_network_trains_byte_stably_and_its_file_predicts_what_was_validated(split_dir, tmp_path):
    from fkd.models.heatmap import fit as train_heatmap
    from fkd.models.heatmap.network import load_model_fn as load_heatmap

    train, val = load_fold(split_dir)
    p = tiny_params("heatmap", epochs=2, channels_last=True, device="cpu")
    result = train_heatmap(train, val, p, tmp_path / "a.safetensors")
    train_heatmap(train, val, p, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    pred = torch.from_numpy(load_heatmap(tmp_path / "a.safetensors")(val.images))  # loaded contiguous, as every model is
    target = torch.from_numpy(training_targets(val.keypoints, pred.shape[1]))
    assert masked_rmse(pred, target) == pytest.approx(result.best_val_rmse, rel=1e-4)


@pytest.mark.slow
def test_channels_last_refuses_strided_1x1_convolutions_too_narrow_for_onednn_and_writes_nothing(split_dir, tmp_path):
    """oneDNN#6035: their CPU weight gradient is wrong in channels-last (and crashes with AVX2), so training stops first."""
    from fkd.models.heatmap import fit as train_heatmap

    train, val = load_fold(split_dir)
    narrow = {"widths": [4, 8, 8, 8], "device": "cpu"}
    with pytest.raises(ParamsError, match=r"^params: 'heatmap.channels_last' \(channels-last on the CPU\) needs .* with \[4, 8\]: "
                                          r"set 'heatmap.channels_last' to false, or make heatmap's widths at least 16$"):
        train_heatmap(train, val, tiny_params("heatmap", channels_last=True, **narrow), tmp_path / "a.safetensors")
    assert not list(tmp_path.iterdir())
    result = train_heatmap(train, val, tiny_params("heatmap", channels_last=False, **narrow), tmp_path / "a.safetensors")
    assert np.isfinite(result.best_val_rmse) and (tmp_path / "a.safetensors").is_file()
