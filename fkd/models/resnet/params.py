"""params.yaml's ``resnet`` section: the ResNet's shape, on top of the shared torch training params."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fkd.core.schema import Length, Positive
from fkd.nn.torch_params import TorchTrainParams


@dataclass(frozen=True)
class ResnetParams(TorchTrainParams):
    stem_channels: Positive
    widths: Annotated[tuple[Positive, ...], Length(min=1)]
    blocks_per_stage: Positive
    scheme_heads: bool  # predict scheme-B nose/lip separately (34 outputs) instead of 30
