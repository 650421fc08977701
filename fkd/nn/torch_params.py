"""The params every PyTorch model's section shares: how it is trained and augmented."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fkd.core.schema import Fraction, LearningRate, NonNegative, Positive, Range, Seed, Threads, rule_error


@dataclass(frozen=True)
class AugmentParams:
    flip: bool
    rotate_deg: Annotated[float, Range(ge=0, le=180)]
    scale: Annotated[float, Range(ge=0, lt=1)]  # 1 would allow a zero-size image
    shift_px: Annotated[float, Range(ge=0, lt=96)]
    brightness: Fraction
    contrast: Fraction


@dataclass(frozen=True)
class TorchTrainParams:
    """How a PyTorch model is trained (shared by every torch model's params section)."""

    device: Literal["auto", "cpu", "cuda", "mps"]
    threads: Threads
    seed: Seed
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: LearningRate
    weight_decay: NonNegative
    schedule: Literal["onecycle", "cosine", "step", "constant"]
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)]  # OneCycleLR divides by the part after warm-up
    step_size: Positive  # epochs
    step_gamma: Annotated[float, Range(gt=0, le=1)]
    batch_size: Positive
    epochs: Positive
    patience: Positive  # epochs without improvement; 0 would stop after the first epoch
    normalize_targets: bool
    ema_decay: Annotated[float, Range(ge=0, lt=1)]  # 0: off; else validate and save an exponential moving average of the weights
    pseudo_label_weight: Fraction  # 0: off; else a teacher trained first labels what the training rows lack, at this weight
    pseudo_label_from_epoch: Annotated[int, Range(ge=0)]  # 0: that teacher is trained first; N: the network labels its own rows after epoch N
    pseudo_label_every: Positive  # self-labelling: epochs between relabellings
    bf16: bool  # bfloat16 autocast + channels-last on CUDA
    cpu_bf16: bool  # the same on CPUs with bf16 instructions (AVX512-BF16, AMX); fp32 on other CPUs
    channels_last: bool  # channels-last memory format in CPU fp32 too (always on with CUDA or bf16): faster for some networks
    augment: AugmentParams

    def __post_init__(self) -> None:
        if self.pseudo_label_from_epoch >= self.epochs:
            raise rule_error("pseudo_label_from_epoch", f"must be below {{section}}.epochs ({self.epochs}) so that some epochs train "
                             f"on the labels, got {self.pseudo_label_from_epoch}; 0 trains a separate teacher first")
