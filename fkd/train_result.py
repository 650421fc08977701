"""What every training stage reports at the end (logged as its final dvclive metrics)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainResult:
    best_val_rmse: float
    best_epoch: int
    epochs_run: int
    train_seconds: float
    images_per_second: float
    device: str
