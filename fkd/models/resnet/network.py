"""The ResNet regressor (stem, stages of residual blocks, global pool, linear) and loading a saved one."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from fkd.core.keypoints import N_COORDS, N_EXTENDED
from fkd.models.resnet.params import ResnetParams
from fkd.core.schema import Length, build as build_section, to_dict
from fkd.nn.torch_nn import BasicBlock, BlocksPerStage, Channels, load_checkpoint_fn

ARCH = "resnet"


@dataclass(frozen=True)
class Architecture:
    """The architecture dict saved with a ResNet (checked when it is made and when a file is loaded)."""

    arch: Literal["resnet"]
    n_outputs: Literal[30, 34]
    stem_channels: Channels
    widths: Annotated[tuple[Channels, ...], Length(min=1, max=8)]
    blocks_per_stage: BlocksPerStage
    normalize_targets: bool


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
    """The architecture dict of the ResNet that ``p`` (params section ``resnet``) describes (saved with the model)."""
    return to_dict(build_section(Architecture, {
        "arch": ARCH, "n_outputs": 2 * N_EXTENDED if p.scheme_heads else N_COORDS, "stem_channels": p.stem_channels,
        "widths": list(p.widths), "blocks_per_stage": p.blocks_per_stage, "normalize_targets": p.normalize_targets}, ARCH))


def build(config: dict) -> KeypointResNet:
    """The network of an architecture dict (:func:`architecture`, as saved with the model)."""
    return KeypointResNet(config["n_outputs"], config["stem_channels"], tuple(config["widths"]), config["blocks_per_stage"])


def load_model_fn(path: str | Path, device: str = "cpu"):
    """Model function (uint8 (N, 96, 96) -> float (N, 34) pixels) of a saved ``resnet/<fold>.safetensors``."""
    return load_checkpoint_fn(path, ARCH, Architecture, build, device)
