import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fkd.nn.augment import augment_batch
from fkd.core.config import to_dict
from fkd.core.data import load_fold
from fkd.core.keypoints import EXTENDED_NAMES, flip_permutation, index, to_extended
from fkd.models.resnet.network import KeypointResNet, load_model_fn
from fkd.models.resnet import fit as train_resnet
from fkd.sources.synthetic import draw_face
from fkd.nn.torch_nn import masked_mse
from fkd.nn.torch_params import AugmentParams
from tests.conftest import tiny_params

NO_AUG = AugmentParams(flip=False, rotate_deg=0.0, scale=0.0, shift_px=0.0, brightness=0.0, contrast=0.0)


def test_masked_loss_counts_only_present_labels():
    pred = torch.tensor([[1.0, 2.0, 3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[1.0, float("nan"), 5.0, float("nan")]])
    loss = masked_mse(pred, target)
    assert loss.item() == pytest.approx((0 + 4) / 2)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[0, 3] == 0 and pred.grad[0, 2] != 0


def test_all_missing_batch_contributes_nothing_and_no_nan():
    pred = torch.randn(3, 34, requires_grad=True)
    loss = masked_mse(pred, torch.full((3, 34), float("nan")))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(pred.grad).all() and (pred.grad == 0).all()


def test_network_shapes_follow_params():
    net = KeypointResNet(34)
    assert net(torch.zeros(2, 1, 96, 96)).shape == (2, 34)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules()) == 4  # shortcuts 32->64..->512
    small = KeypointResNet(30, stem_channels=8, widths=(8, 16), blocks_per_stage=1)
    assert small(torch.zeros(1, 1, 96, 96)).shape == (1, 30)


def test_flip_lands_keypoints_on_the_flipped_features():
    rng = np.random.default_rng(7)
    faces = [draw_face(rng) for _ in range(8)]
    images = torch.from_numpy(np.stack([f[0] for f in faces])).unsqueeze(1).float() / 255
    kps = torch.from_numpy(to_extended(np.stack([f[1] for f in faces]).astype(np.float32)))
    params = AugmentParams(**{**to_dict(NO_AUG), "flip": True})
    out, moved = augment_batch(images, kps, params, torch.Generator().manual_seed(0))
    flipped = [bool(torch.allclose(o, i.flip(-1), atol=1e-4)) for o, i in zip(out, images)]
    assert any(flipped) and not all(flipped)
    le, re = index("left_eye_center", EXTENDED_NAMES), index("right_eye_center", EXTENDED_NAMES)
    for o, m, i, k, f in zip(out, moved.view(-1, 17, 2), images, kps.view(-1, 17, 2), flipped):
        assert m[le, 0] > m[re, 0]  # subject's left eye stays on the image's right
        for point in (le, re):  # the moved eye centre shows the pixel of the eye it came from
            x, y = m[point].round().long()
            x0, y0 = k[flip_permutation(EXTENDED_NAMES)[point] if f else point].round().long()
            assert o[0, y, x] == pytest.approx(i[0, y0, x0].item(), abs=0.02)
        if not f:
            torch.testing.assert_close(m, k, equal_nan=True)


def test_rotation_moves_keypoints_with_the_image_and_drops_points_that_leave():
    rng = np.random.default_rng(1)
    img, kp = draw_face(rng)
    images = torch.from_numpy(img[None, None]).float() / 255
    kps = torch.from_numpy(kp[None].astype(np.float32))
    params = AugmentParams(flip=False, rotate_deg=20.0, scale=0.0, shift_px=0.0, brightness=0.0, contrast=0.0)
    out, moved = augment_batch(images, kps, params, torch.Generator().manual_seed(3))
    assert not torch.equal(out, images)
    for point in ("left_eye_center", "right_eye_center", "nose_tip"):
        x, y = moved.view(15, 2)[index(point)].round().long()
        x0, y0 = kps.view(15, 2)[index(point)].round().long()
        assert out[0, 0, y, x] == pytest.approx(images[0, 0, y0, x0].item(), abs=0.08)  # the same feature under it
    shifted = AugmentParams(flip=False, rotate_deg=0.0, scale=0.0, shift_px=40.0, brightness=0.0, contrast=0.0)
    moved_far = torch.cat([augment_batch(images, kps, shifted, torch.Generator().manual_seed(s))[1] for s in range(6)])
    assert torch.isnan(moved_far).any()


@pytest.mark.slow
def test_training_plumbs_params_and_is_deterministic(split_dir, tmp_path):
    train, val = load_fold(split_dir)
    p = tiny_params("resnet", epochs=2, scheme_heads=False, schedule="step", optimizer="adam")
    first = train_resnet(train, val, p, tmp_path / "a.safetensors")
    second = train_resnet(train, val, p, tmp_path / "b.safetensors")
    assert first.best_val_rmse == second.best_val_rmse and np.isfinite(first.best_val_rmse)
    with safe_open(tmp_path / "a.safetensors", framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    assert config["n_outputs"] == 30 and config["widths"] == [16, 16]
    pred = load_model_fn(tmp_path / "a.safetensors")(val.images[:3])
    assert pred.shape == (3, 34) and np.isfinite(pred).all()



@pytest.mark.slow
def test_cpu_bf16_trains_in_bfloat16_where_the_cpu_has_it_and_stays_byte_stable(split_dir, tmp_path):
    from fkd.nn.train_result import cpu_has_native_bf16

    train, val = load_fold(split_dir)
    p = tiny_params("resnet", epochs=2, cpu_bf16=True, device="cpu")
    first = train_resnet(train, val, p, tmp_path / "a.safetensors")
    second = train_resnet(train, val, p, tmp_path / "b.safetensors")
    assert first.precision == ("bf16" if cpu_has_native_bf16() else "fp32")  # emulated bf16 is slower: fp32 there
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    fp32 = train_resnet(train, val, tiny_params("resnet", epochs=2, device="cpu"), tmp_path / "fp32.safetensors")
    assert fp32.precision == "fp32" and "precision" in fp32.metrics()
    if cpu_has_native_bf16():
        assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "fp32.safetensors").read_bytes()
    pred = load_model_fn(tmp_path / "a.safetensors")(val.images[:3])  # a bf16-trained model predicts in fp32 like any other
    assert pred.shape == (3, 34) and np.isfinite(pred).all()


@pytest.mark.slow
def test_training_that_diverges_fails_and_writes_no_model(split_dir, tmp_path):
    from fkd.core.errors import TrainingError

    train, val = load_fold(split_dir)
    p = tiny_params("resnet", epochs=2, lr=1e30, optimizer="sgd", schedule="constant")
    with pytest.raises(TrainingError, match=r"training resnet: no finite validation RMSE in 2 epochs .*no model was written"):
        train_resnet(train, val, p, tmp_path / "a.safetensors")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_training_saves_the_best_epoch_byte_stably(split_dir, tmp_path):
    """The same run saved under two names gives the same bytes (torch names archive records after the file)."""
    train, val = load_fold(split_dir)
    p = tiny_params("resnet", epochs=2)
    train_resnet(train, val, p, tmp_path / "a.safetensors")
    train_resnet(train, val, p, tmp_path / "other_name.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "other_name.safetensors").read_bytes()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.safetensors", "other_name.safetensors"]  # no temporary file left


def test_heatmap_network_decodes_coordinates_by_soft_argmax():
    from fkd.models.heatmap.network import HeatmapNet

    net = HeatmapNet(17, widths=(4, 8, 8, 8), blocks_per_stage=1, decoder_channels=8, heatmap_stride=4, normalized=False)
    net.eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()  # flat heatmaps: every point at the centre of the grid
        out = net(torch.rand(2, 1, 96, 96))
    assert out.shape == (2, 34)
    torch.testing.assert_close(out, torch.full((2, 34), 47.5))
    peaked = torch.full((1, 17, 24, 24), -50.0)
    peaked[0, :, 6, 18] = 50.0  # one hot cell: row 6, column 18 at stride 4 -> pixel (73.5, 25.5)
    net.heatmaps = lambda x: peaked
    torch.testing.assert_close(net(torch.zeros(1, 1, 96, 96)).view(17, 2)[0], torch.tensor([73.5, 25.5]))


def test_a_missing_cuda_device_names_the_models_own_key(split_dir, tmp_path):
    import torch as _torch

    from fkd.core.config import ParamsError
    from fkd.models.heatmap import fit as train_heatmap

    if _torch.cuda.is_available():
        pytest.skip("a CUDA device is there")
    p = tiny_params("heatmap", device="cuda")
    train, val = load_fold(split_dir)
    with pytest.raises(ParamsError, match=r"'heatmap.device' is cuda but no CUDA device is available"):
        train_heatmap(train, val, p, tmp_path / "h.safetensors")
    assert not list(tmp_path.iterdir())
