"""params.yaml's ``heatmap`` section: the heatmap network's shape, on top of the shared torch training params."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fkd.core.schema import Length, Positive, Range
from fkd.nn.torch_params import TorchTrainParams


@dataclass(frozen=True)
class HeatmapParams(TorchTrainParams):
    widths: Annotated[tuple[Positive, ...], Length(min=4, max=4)]  # encoder stages at strides 2, 4, 8, 16
    blocks_per_stage: Positive
    decoder_channels: Positive
    heatmap_stride: Literal[2, 4, 8]
    map_loss_weight: Annotated[float, Range(ge=0, le=10)]  # 0: off; else the weight of network.map_loss (maps pulled to a Gaussian at the label)
    map_sigma_px: Annotated[float, Range(gt=0, le=24)]  # that Gaussian's sigma, in input pixels
