"""The trained models, registered once: each model's folder under ``models/`` (one file per fold of
``split.folds``) and the function that loads such a file into a model function (uint8 (N, 96, 96) -> keypoints (N, 34) in pixels).

Adding a model: its folder ``fkd/models/<name>/`` (``params.py``, ``network.py`` with
``load_model_fn``, ``train.py`` with ``fit``, its section class as ``SECTION`` in ``params.py``), one entry here, its name in
:data:`fkd.config.MODEL_NAMES` and
``params.yaml``, and its stage in ``dvc.yaml`` (a two-line module in ``stages/``). Frameworks
are imported only when a model loads or trains.
"""
from __future__ import annotations

import importlib
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


# Static imports inside the loaders: tests/test_deps.py follows them to each stage's dvc.yaml code deps.
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
    name: str  # its folder fkd/models/<name>/ and its params section
    folder: str  # under models/: one file per fold, <fold><suffix>
    suffix: str
    load: Callable[[Path], ModelFn]

    def file(self, fold: int) -> str:
        """Fold ``fold``'s model file, relative to the models folder."""
        return f"{self.folder}/{fold}{self.suffix}"

    def fit(self, train, val, params, model_path: Path):
        """Train this model from scratch on one fold's parts ``train``/``val`` with its section of ``params``
        (:func:`fkd.config.load_params` with its section), every phase, as its training stage(s) do (its ``train.fit``); saves it to
        ``model_path`` and returns the last phase's :class:`fkd.train_result.TrainResult`. For benchmarks: each
        training stage imports its own trainer, so no stage's code deps hang on this import."""
        return importlib.import_module(f"fkd.models.{self.name}.train").fit(train, val, getattr(params, self.name), model_path)


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("resnet", "resnet", ".safetensors", _resnet),
    ModelSpec("heatmap", "heatmap", ".safetensors", _heatmap),
    ModelSpec("cnn", "cnn_sgd", ".keras", _cnn),  # phase 2's models
)}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
#: The ensemble's weights, written by evaluate beside the models.
ENSEMBLE_FILE = "ensemble.json"


def check_model_names(names, key: str, extra: tuple[str, ...] = ()) -> None:
    """Raise :class:`ParamsError` unless every name in ``names`` is a registered model (or in ``extra``)."""
    for i, name in enumerate([names] if isinstance(names, str) else names):
        if name not in MODELS and name not in extra:
            where = key if isinstance(names, str) else f"{key}[{i}]"
            raise ParamsError(f"params: '{where}' is {name!r}: choose one of {', '.join((*MODEL_NAMES, *extra))}")
