"""The PyTorch ResNet for 96x96 keypoints, its masked loss, and loading a saved model for prediction."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fkd.keypoints import N_COORDS, widen_to_extended

#: Coordinates are trained as (xy - CENTRE) / CENTRE when targets are normalised.
CENTRE = 48.0


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus shortcut (1x1 conv + BN when the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class KeypointResNet(nn.Module):
    """Stem conv 7x7/2 + BN + ReLU + max-pool; stages of residual blocks (stride 2 from the 2nd stage); global pool; linear."""

    def __init__(self, n_outputs: int, stem_channels: int = 32, widths=(32, 64, 128, 256, 512), blocks_per_stage: int = 2):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem_channels, 7, 2, 3, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks, c_in = [], stem_channels
        for i, width in enumerate(widths):
            for j in range(blocks_per_stage):
                blocks.append(BasicBlock(c_in, width, 2 if (i > 0 and j == 0) else 1))
                c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over finite targets only; 0 (with a zero gradient) when a batch has none."""
    mask = torch.isfinite(target)
    diff = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff * diff).sum() / mask.sum().clamp(min=1)


def build_model(config: dict) -> nn.Module:
    """A network from the architecture dict stored in a checkpoint (``arch``: resnet, the default, or heatmap)."""
    if config.get("arch", "resnet") == "heatmap":
        from fkd.heatmap import build_heatmap_model

        return build_heatmap_model(config)
    return KeypointResNet(config["n_outputs"], config["stem_channels"], tuple(config["widths"]), config["blocks_per_stage"])


def to_pixels(outputs: torch.Tensor, normalized: bool) -> torch.Tensor:
    return outputs * CENTRE + CENTRE if normalized else outputs


def load_model_fn(path: str | Path, device: str = "cpu", batch_size: int = 256):
    """Model function (uint8 (N, 96, 96) -> float (N, 34) pixels) of a saved ``resnet.pt``."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    config = ckpt["config"]
    model = build_model(config).to(device)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            x = x.unsqueeze(1).float() / 255.0
            out.append(to_pixels(model(x).float(), config["normalize_targets"]).cpu().numpy())
        pixels = np.concatenate(out) if out else np.zeros((0, config["n_outputs"]), np.float32)
        return widen_to_extended(pixels) if pixels.shape[1] == N_COORDS else pixels

    return predict
