"""The trained models, registered once: each model's folder under ``models/`` (one file per fold of
``split.folds``) and the function that loads such a file into a model function (uint8 (N, 96, 96) -> keypoints (N, 34) in pixels).

Adding a model: its folder ``fkd/models/<name>/`` (``params.py``, ``network.py`` with
``load_model_fn``, ``train.py``), one entry here, its section in :class:`fkd.config.Params` and
``params.yaml``, and its stage in ``dvc.yaml`` (a two-line module in ``stages/``). Frameworks
are imported only when a loader runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from fkd.errors import PredictionError
from fkd.schema import ParamsError

ModelFn = Callable[[np.ndarray], np.ndarray]


def check_predictions(pred: np.ndarray, n_rows: int, who: str, finite: bool = True) -> np.ndarray:
    """``pred`` as float64 (n_rows, 34) (and all finite, with ``finite``), or :class:`PredictionError` naming ``who``."""
    from fkd.keypoints import N_EXTENDED

    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != (n_rows, 2 * N_EXTENDED):
        raise PredictionError(f"{who} returned shape {pred.shape}, expected ({n_rows}, {2 * N_EXTENDED})")
    if finite and not np.isfinite(pred).all():
        raise PredictionError(f"{who} predicted non-finite keypoints for {int((~np.isfinite(pred)).any(axis=1).sum())} faces")
    return pred


def _resnet(path: Path) -> ModelFn:
    from fkd.models.resnet.network import load_model_fn

    return load_model_fn(path)


def _heatmap(path: Path) -> ModelFn:
    from fkd.models.heatmap.network import load_model_fn

    return load_model_fn(path)


def _cnn(path: Path) -> ModelFn:
    from fkd.models.cnn.network import load_model_fn

    return load_model_fn(path)


@dataclass(frozen=True)
class ModelSpec:
    folder: str  # under models/: one file per fold, <fold><suffix>
    suffix: str
    load: Callable[[Path], ModelFn]

    def file(self, fold: int) -> str:
        """Fold ``fold``'s model file, relative to the models folder."""
        return f"{self.folder}/{fold}{self.suffix}"


MODELS: dict[str, ModelSpec] = {
    "resnet": ModelSpec("resnet", ".pt", _resnet),
    "heatmap": ModelSpec("heatmap", ".pt", _heatmap),
    "cnn": ModelSpec("cnn_sgd", ".keras", _cnn),  # phase 2's models
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
#: The ensemble's weights, written by evaluate beside the models.
ENSEMBLE_FILE = "ensemble.json"


def check_model_names(names, key: str, extra: tuple[str, ...] = ()) -> None:
    """Raise :class:`ParamsError` unless every name in ``names`` is a registered model (or in ``extra``)."""
    for i, name in enumerate([names] if isinstance(names, str) else names):
        if name not in MODELS and name not in extra:
            where = key if isinstance(names, str) else f"{key}[{i}]"
            raise ParamsError(f"params: '{where}' is {name!r}: choose one of {', '.join((*MODEL_NAMES, *extra))}")
