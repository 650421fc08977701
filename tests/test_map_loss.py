"""The heatmap network's map loss: each map pulled towards a Gaussian at its label (``heatmap.map_loss_weight``)."""
import pytest
import torch

from fkd.core.data import load_fold
from fkd.core.schema import ParamsError
from fkd.models.heatmap import fit as train_heatmap
from fkd.models.heatmap.network import HeatmapNet, cell_centres, map_loss
from tests.conftest import tiny_params


def net_with_maps(prob: torch.Tensor) -> HeatmapNet:
    """A tiny network whose last training forward gave the maps ``prob`` (pixel outputs)."""
    net = HeatmapNet(prob.shape[1], widths=(4, 4, 4, 4), decoder_channels=4, heatmap_stride=4, normalized=False)
    net.training_maps = prob
    return net


def gaussian_maps(xy: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """(B, K, 24, 24) normalised Gaussians at pixel points ``xy`` (B, K, 2), independent of map_loss's own code."""
    centres = torch.arange(24.0) * 4 + 1.5
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    d2 = (xx - xy[..., 0, None, None]) ** 2 + (yy - xy[..., 1, None, None]) ** 2
    g = torch.exp(-d2 / (2 * sigma_px**2))
    return g / g.sum(dim=(-2, -1), keepdim=True)


def test_a_map_equal_to_the_gaussian_at_its_label_costs_nothing_and_a_displaced_one_costs_more_with_distance():
    label = torch.tensor([[[40.0, 50.0]]])
    losses = [map_loss(net_with_maps(gaussian_maps(label + torch.tensor([dx, 0.0]), 4.0)), label.view(1, 2), 1.0, 4.0).item()
              for dx in (0.0, 2.0, 8.0, 30.0)]
    assert losses[0] == pytest.approx(0.0, abs=1e-6)
    assert losses[0] < losses[1] < losses[2] < losses[3] <= torch.log(torch.tensor(2.0)).item() + 1e-6


def test_the_loss_is_the_weighted_mean_over_labelled_points_only():
    labels = torch.tensor([[[40.0, 50.0], [20.0, 30.0], [60.0, 60.0]]])
    prob = gaussian_maps(labels + torch.tensor([6.0, 0.0]), 4.0)
    one = map_loss(net_with_maps(prob[:, :1]), labels[:, :1].reshape(1, 2), 1.0, 4.0)
    missing = labels.clone()
    missing[0, 1, 0] = float("nan")  # a point with x missing counts as unlabelled
    missing[0, 2] = float("nan")
    torch.testing.assert_close(map_loss(net_with_maps(prob), missing.view(1, 6), 0.5, 4.0), 0.5 * one)
    nothing = map_loss(net_with_maps(prob.requires_grad_()), torch.full((1, 6), float("nan")), 1.0, 4.0)
    nothing.backward()
    assert nothing.item() == 0 and torch.count_nonzero(prob.grad) == 0


def test_its_gradient_moves_the_decoded_point_towards_the_label():
    """Descending the map loss alone on a map's logits brings the soft-argmax to the label (normalised targets)."""
    logits = torch.zeros(1, 1, 24, 24, requires_grad=True)
    net = HeatmapNet(1, widths=(4, 4, 4, 4), decoder_channels=4, heatmap_stride=4, normalized=True)
    label = torch.tensor([[70.0, 20.0]])
    opt = torch.optim.Adam([logits], lr=0.2)
    centres = cell_centres(24, 4, logits)
    for _ in range(200):
        prob = torch.softmax(logits.view(1, -1), -1).view(1, 1, 24, 24)
        net.training_maps = prob
        loss = map_loss(net, (label - 48) / 48, 1.0, 4.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    prob = torch.softmax(logits.detach().view(-1), -1).view(24, 24)
    decoded = torch.stack([(prob.sum(0) * centres).sum(), (prob.sum(1) * centres).sum()])
    torch.testing.assert_close(decoded, label[0], atol=0.5, rtol=0)
    assert net.training_maps is None and loss.item() < 0.01  # map_loss takes the maps: none outlive their step


def test_the_network_keeps_its_maps_only_while_training():
    net = HeatmapNet(17, widths=(4, 4, 4, 4), decoder_channels=4, heatmap_stride=4)
    net.eval()
    net(torch.rand(1, 1, 96, 96))
    assert net.training_maps is None
    net.train()
    net(torch.rand(2, 1, 96, 96))
    assert net.training_maps.shape == (2, 17, 24, 24)
    torch.testing.assert_close(net.training_maps.sum(dim=(-2, -1)), torch.ones(2, 17))


@pytest.mark.parametrize("key, value", [("map_loss_weight", -0.1), ("map_loss_weight", 11.0), ("map_sigma_px", 0.0),
                                        ("map_sigma_px", 30.0)])
def test_out_of_range_values_are_refused_naming_the_key(key, value):
    with pytest.raises(ParamsError, match=rf"heatmap\.{key}"):
        tiny_params("heatmap", **{key: value})


@pytest.mark.slow
def test_training_with_the_map_loss_is_byte_stable_and_differs_from_training_without(split_dir, tmp_path):
    train, val = load_fold(split_dir)
    plain = train_heatmap(train, val, tiny_params("heatmap"), tmp_path / "plain.safetensors")
    p = tiny_params("heatmap", map_loss_weight=0.5)
    pulled = train_heatmap(train, val, p, tmp_path / "a.safetensors")
    train_heatmap(train, val, p, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "plain.safetensors").read_bytes()
    assert pulled.best_val_rmse != plain.best_val_rmse
