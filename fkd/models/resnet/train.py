"""Training the resnet network: the shared torch loop (:func:`fkd.torch_train.train_torch`) on its architecture."""
from __future__ import annotations

from pathlib import Path

from fkd.data import Part
from fkd.models.resnet.network import architecture, build
from fkd.models.resnet.params import ResnetParams
from fkd.torch_train import train_torch
from fkd.train_result import TrainResult


def train(train: Part, val: Part, p: ResnetParams, model_path: str | Path, live=None) -> TrainResult:
    """Train the resnet network of ``p`` on ``train``, early-stop on ``val``, save the best epoch to ``model_path``."""
    return train_torch(train, val, p, architecture(p), build, model_path, live)


#: The whole training from scratch (:meth:`fkd.registry.ModelSpec.fit`): one phase.
fit = train
