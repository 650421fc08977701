"""Torch pieces the torch models share: the residual block, the masked loss, the target scaling and
loading a saved checkpoint into a model function."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fkd.errors import ModelFileError
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


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over finite targets only; 0 (with a zero gradient) when a batch has none."""
    mask = torch.isfinite(target)
    diff = torch.where(mask, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff * diff).sum() / mask.sum().clamp(min=1)


def to_pixels(outputs: torch.Tensor, normalized: bool) -> torch.Tensor:
    return outputs * CENTRE + CENTRE if normalized else outputs


def load_checkpoint_fn(path: str | Path, arch: str, build: Callable[[dict], nn.Module], device: str = "cpu",
                       batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """Model function (uint8 (N, 96, 96) -> float (N, 34) pixels) of a checkpoint saved by
    :func:`fkd.torch_train.train_torch` for architecture ``arch``, its network made by ``build(config)``."""
    ckpt = torch.load(path, map_location=device, weights_only=False)
    config = ckpt["config"]
    held = config.get("arch", "resnet")  # checkpoints from before the heatmap model name no network: ResNets
    if held != arch:
        raise ModelFileError(f"{path}: holds a {held!r} network, expected {arch!r}")
    model = build(config).to(device)
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
