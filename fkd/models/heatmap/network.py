"""A heatmap keypoint network for 96x96 faces, decoded by soft-argmax (integral regression).

A residual encoder (strides 2, 4, 8, 16) and a top-down decoder with lateral connections give
one heatmap per keypoint at ``heatmap_stride``; a softmax over each map and the expected grid
position turn it into sub-pixel coordinates. The output is the same as the ResNet's (N, 2K
coordinates, normalised as (xy - 48) / 48 when the targets are), so the masked coordinate loss,
the training loop and every consumer apply unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fkd.core.keypoints import N_EXTENDED
from fkd.models.heatmap.params import HeatmapParams
from fkd.core.schema import Length, build as build_section, to_dict
from fkd.nn.torch_nn import CENTRE, BasicBlock, BlocksPerStage, Channels, load_checkpoint_fn

ARCH = "heatmap"


@dataclass(frozen=True)
class Architecture:
    """The architecture dict saved with a heatmap network (checked when it is made and when a file is loaded)."""

    arch: Literal["heatmap"]
    n_outputs: Literal[34]
    widths: Annotated[tuple[Channels, ...], Length(min=4, max=4)]
    blocks_per_stage: BlocksPerStage
    decoder_channels: Channels
    heatmap_stride: Literal[2, 4, 8]
    normalize_targets: bool


class HeatmapNet(nn.Module):
    """Encoder-decoder to ``n_points`` heatmaps, soft-argmax to (x, y) per point."""

    def __init__(self, n_points: int, widths=(32, 64, 128, 256), blocks_per_stage: int = 1, decoder_channels: int = 64,
                 heatmap_stride: int = 2, normalized: bool = True):
        super().__init__()
        if heatmap_stride not in (2, 4, 8):
            raise ValueError(f"heatmap_stride must be 2, 4 or 8, got {heatmap_stride}")
        self.n_points, self.heatmap_stride, self.normalized = n_points, heatmap_stride, normalized
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            blocks = [BasicBlock(c_in, width, 1 if i == 0 else 2)] + [BasicBlock(width, width, 1) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        # levels at strides 2, 4, 8, 16: the decoder climbs back to heatmap_stride
        self.first_level = {2: 0, 4: 1, 8: 2}[heatmap_stride]
        self.laterals = nn.ModuleList(nn.Conv2d(w, decoder_channels, 1) for w in widths[self.first_level :])
        self.smooth = nn.Sequential(nn.Conv2d(decoder_channels, decoder_channels, 3, 1, 1, bias=False),
                                    nn.BatchNorm2d(decoder_channels), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(decoder_channels, n_points, 1)
        self.training_maps: torch.Tensor | None = None  # the last training forward's maps, for map_loss

    def heatmaps(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, H, W) at ``heatmap_stride``."""
        features = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features = features[self.first_level :]
        top = self.laterals[-1](features[-1])
        for lateral, feature in zip(reversed(self.laterals[:-1]), reversed(features[:-1])):
            top = F.interpolate(top, size=feature.shape[-2:], mode="nearest") + lateral(feature)
        return self.head(self.smooth(top))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.heatmaps(x).float()
        b, k, h, w = logits.shape
        prob = torch.softmax(logits.view(b, k, h * w), dim=-1).view(b, k, h, w)
        if self.training:
            self.training_maps = prob
        xs, ys = cell_centres(w, self.heatmap_stride, prob), cell_centres(h, self.heatmap_stride, prob)
        px = (prob.sum(dim=2) * xs).sum(dim=-1)
        py = (prob.sum(dim=3) * ys).sum(dim=-1)
        coords = torch.stack([px, py], dim=-1).reshape(b, 2 * k)
        return (coords - CENTRE) / CENTRE if self.normalized else coords


def cell_centres(n: int, stride: int, like: torch.Tensor) -> torch.Tensor:
    """The centres of ``n`` heatmap cells along one axis, in input pixels (pixel centres at 0..95)."""
    return (torch.arange(n, device=like.device, dtype=like.dtype) + 0.5) * stride - 0.5


def map_loss(model: HeatmapNet, targets: torch.Tensor, weight: float, sigma_px: float) -> torch.Tensor:
    """``weight`` times the mean Jensen-Shannon divergence between each map of ``model``'s last training forward and a Gaussian
    of ``sigma_px`` at its label (the DSNT regulariser, Nibali et al. 2018), over the points whose x and y are labelled.

    ``targets``: (B, 2K) as the model outputs them (normalised when it is). Soft-argmax alone lets a map take any shape with the
    right mean; this keeps it one compact blob at the label.
    """
    prob = model.training_maps
    model.training_maps = None
    b, k, h, w = prob.shape
    xy = targets.view(b, k, 2) * CENTRE + CENTRE if model.normalized else targets.view(b, k, 2)
    labelled = torch.isfinite(xy).all(dim=-1)
    xy = torch.nan_to_num(xy)
    s = model.heatmap_stride
    gx = torch.exp(-((cell_centres(w, s, prob) - xy[..., :1]) ** 2) / (2 * sigma_px**2))  # (B, K, W)
    gy = torch.exp(-((cell_centres(h, s, prob) - xy[..., 1:]) ** 2) / (2 * sigma_px**2))  # (B, K, H)
    gauss = gy.unsqueeze(-1) * gx.unsqueeze(-2)
    gauss = gauss / gauss.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-12)
    mid = (prob + gauss) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return (a * (torch.log(a + 1e-12) - torch.log(mid + 1e-12))).sum(dim=(-2, -1))

    js = 0.5 * kl(prob) + 0.5 * kl(gauss)
    return weight * ((js * labelled).sum() / labelled.sum().clamp(min=1))


def architecture(p: HeatmapParams) -> dict:
    """The architecture dict of the heatmap network that ``p`` (params section ``heatmap``) describes (always 34 outputs: both schemes)."""
    return to_dict(build_section(Architecture, {
        "arch": ARCH, "n_outputs": 2 * N_EXTENDED, "widths": list(p.widths), "blocks_per_stage": p.blocks_per_stage,
        "decoder_channels": p.decoder_channels, "heatmap_stride": p.heatmap_stride, "normalize_targets": p.normalize_targets}, ARCH))


def build(config: dict) -> HeatmapNet:
    """The network of an architecture dict (:func:`architecture`, as saved with the model)."""
    return HeatmapNet(config["n_outputs"] // 2, tuple(config["widths"]), config["blocks_per_stage"], config["decoder_channels"],
                      config["heatmap_stride"], config["normalize_targets"])


def load_model_fn(path: str | Path, device: str = "cpu"):
    """Model function (uint8 (N, 96, 96) -> float (N, 34) pixels) of a saved ``heatmap/<fold>.safetensors``."""
    return load_checkpoint_fn(path, ARCH, Architecture, build, device)
