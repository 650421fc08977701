"""params.yaml's ``cnn`` section: the Keras CNN's shape and its two training phases (``cnn.adam``, ``cnn.sgd``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fkd.core.schema import Count, LearningRate, Length, Positive, Range, Seed, Threads, rule_error


@dataclass(frozen=True)
class CnnAdamParams:
    lr: LearningRate
    schedule: Literal["cosine", "constant"]  # cosine: decays to 0 over the epochs, so the last epochs settle
    epochs: Positive
    patience: Positive


@dataclass(frozen=True)
class CnnSgdParams:
    lr: LearningRate
    momentum: Annotated[float, Range(ge=0, lt=1)]
    epochs: Positive
    patience: Positive
    plateau_factor: Annotated[float, Range(gt=0, lt=1)]  # Keras refuses factor >= 1
    plateau_patience: Count  # 0: lower the rate after every epoch without improvement


@dataclass(frozen=True)
class CnnParams:
    seed: Seed
    threads: Threads
    filters: Annotated[tuple[Positive, ...], Length(min=1, max=6)]  # each block halves 96 px; a 7th leaves none
    kernel: Annotated[int, Range(ge=1, le=96)]
    dropout: tuple[Annotated[float, Range(ge=0, lt=1)], ...]
    dense: tuple[Positive, ...]
    leaky_alpha: Annotated[float, Range(ge=0, le=1)]
    huber_delta: Annotated[float, Range(gt=0)]
    target_scale: Annotated[float, Range(gt=0)]
    missing: Literal["mask", "ffill"]
    scheme_heads: bool
    batch_size: Positive
    flip: bool
    bf16: bool  # Keras mixed_bfloat16 for the conv and hidden dense layers (GPU, or a CPU with bf16 instructions)
    adam: CnnAdamParams
    sgd: CnnSgdParams

    def __post_init__(self) -> None:
        if len(self.dropout) != len(self.filters):
            raise rule_error("dropout", f"must have one rate per {{section}}.filters entry ({len(self.filters)}), got {len(self.dropout)}")
