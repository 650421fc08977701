"""Training the heatmap network: the shared torch loop (:func:`fkd.torch_train.train_torch`) on its architecture."""
from __future__ import annotations

from pathlib import Path

from fkd.data import Part
from fkd.models.heatmap.network import architecture, build
from fkd.models.heatmap.params import HeatmapParams
from fkd.torch_train import train_torch
from fkd.train_result import TrainResult


def train(train: Part, val: Part, p: HeatmapParams, model_path: str | Path, live=None) -> TrainResult:
    """Train the heatmap network of ``p`` on ``train``, early-stop on ``val``, save the best epoch to ``model_path``."""
    return train_torch(train, val, p, architecture(p), build, model_path, live)


#: The whole training from scratch (:meth:`fkd.registry.ModelSpec.fit`): one phase.
fit = train
