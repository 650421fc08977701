"""The trained models, registered once: each model's contract module ``fkd/models/<name>/__init__.py`` (its params
section ``Params``, file ``SUFFIX``, ``build``, ``fit`` and ``load``), its folder under ``models/`` (one file per fold of
``split.folds``), and the checks on what its loaded function returns.

Adding a model: its folder ``fkd/models/<name>/``, one line in :data:`MODELS` (and its import), its section in
``params.yaml``, its entry in ``dvc.yaml``'s ``train`` matrix and ``models/<name>`` in the deps of evaluate and submit
(docs/models.md "Adding a model"; tests/test_plugin.py does it). Frameworks are imported only when a model is built,
trained or loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

from fkd.core.errors import PredictionError
from fkd.models import cnn, heatmap, resnet
from fkd.core.schema import ParamsError

ModelFn = Callable[[np.ndarray], np.ndarray]


def check_predictions(pred: np.ndarray, n_rows: int, who: str, finite: bool = True) -> np.ndarray:
    """``pred`` as float64 (n_rows, 34) (and all finite, with ``finite``), or :class:`PredictionError` naming ``who``."""
    from fkd.core.keypoints import N_EXTENDED

    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != (n_rows, 2 * N_EXTENDED):
        raise PredictionError(f"{who} returned shape {pred.shape}, expected ({n_rows}, {2 * N_EXTENDED})")
    if finite and not np.isfinite(pred).all():
        raise PredictionError(f"{who} predicted non-finite keypoints for {int((~np.isfinite(pred)).any(axis=1).sum())} faces")
    return pred


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its contract module ``fkd.models.<name>`` (``Params``, ``SUFFIX``, ``build``, ``fit``,
    ``load``; ``FOLDER`` if its files are not under ``models/<name>/``) and where its files go."""

    module: ModuleType

    @property
    def name(self) -> str:  # its folder fkd/models/<name>/ and its params section
        return self.module.__name__.rpartition(".")[2]

    @property
    def folder(self) -> str:  # under models/: one file per fold, <fold><suffix>
        return getattr(self.module, "FOLDER", self.name)

    @property
    def suffix(self) -> str:
        return self.module.SUFFIX

    def file(self, fold) -> str:
        """Fold ``fold``'s model file, relative to the models folder."""
        return f"{self.folder}/{fold}{self.suffix}"

    def load(self, path: Path) -> ModelFn:
        """The model saved at ``path`` as a function: uint8 faces (N, 96, 96) -> keypoints (N, 34) in pixels."""
        return self.module.load(path)

    def fit(self, train, val, params, model_path: Path, live=None):
        """Train this model from scratch on one fold's parts ``train``/``val`` with its section of ``params``
        (:func:`fkd.core.config.load_params` with its section), every phase, as its training stage(s) do; saves it
        to ``model_path`` and returns the last phase's :class:`fkd.nn.train_result.TrainResult`."""
        return self.module.fit(train, val, getattr(params, self.name), model_path, live)


#: One line per model, in the order reports list them.
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec(resnet),
    ModelSpec(heatmap),
    ModelSpec(cnn),
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
