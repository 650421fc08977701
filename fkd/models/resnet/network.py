"""The ResNet regressor (stem, stages of residual blocks, global pool, linear) and loading a saved one."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fkd.keypoints import N_COORDS, N_EXTENDED
from fkd.models.resnet.params import ResnetParams
from fkd.torch_nn import load_checkpoint_fn, BasicBlock

ARCH = "resnet"


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


def architecture(p: ResnetParams) -> dict:
    """The architecture dict of the ResNet that ``p`` describes (stored in the checkpoint)."""
    return {"arch": ARCH, "n_outputs": 2 * N_EXTENDED if p.scheme_heads else N_COORDS, "stem_channels": p.stem_channels,
            "widths": list(p.widths), "blocks_per_stage": p.blocks_per_stage, "normalize_targets": p.normalize_targets}


def build(config: dict) -> KeypointResNet:
    """The network of an architecture dict (:func:`architecture`, as stored in a checkpoint)."""
    return KeypointResNet(config["n_outputs"], config["stem_channels"], tuple(config["widths"]), config["blocks_per_stage"])


def load_model_fn(path: str | Path, device: str = "cpu"):
    """Model function (uint8 (N, 96, 96) -> float (N, 34) pixels) of a saved ``resnet.pt``."""
    return load_checkpoint_fn(path, ARCH, build, device)
