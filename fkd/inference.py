"""One prediction interface over both models: flip test-time augmentation and the ensemble.

A *model function* takes uint8 images (N, 96, 96) and returns keypoints (N, 34) in pixels in
the extended layout of :mod:`fkd.keypoints` (15 scheme-A points, then scheme-B nose tip and
bottom lip). ``fkd.resnet.load_model_fn`` and ``fkd.cnn.load_model_fn`` build one from a
saved model file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from fkd.keypoints import EXTENDED_NAMES, flip_coords

ModelFn = Callable[[np.ndarray], np.ndarray]

#: Model files under ``models/`` that each model kind predicts with.
MODEL_FILES = {"resnet": "resnet.pt", "cnn": "cnn_sgd.keras"}


def with_flip_tta(model_fn: ModelFn) -> ModelFn:
    """Average the prediction on each image with the swapped-back prediction on its mirror."""

    def predict(images: np.ndarray) -> np.ndarray:
        direct = model_fn(images)
        mirrored = model_fn(np.ascontiguousarray(images[:, :, ::-1]))
        return (direct + flip_coords(mirrored, width=images.shape[2], names=EXTENDED_NAMES)) / 2

    return predict


def ensemble(model_fns: list[ModelFn], weights: list[float] | tuple[float, ...]) -> ModelFn:
    """Weighted mean of several model functions (weights are normalised to sum to 1)."""
    w = np.asarray(weights, dtype=np.float64)
    if len(w) != len(model_fns) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"ensemble weights must be {len(model_fns)} non-negative numbers with a positive sum, got {list(weights)}")
    w = w / w.sum()

    def predict(images: np.ndarray) -> np.ndarray:
        return sum(wi * fn(images) for wi, fn in zip(w, model_fns) if wi > 0)

    return predict


def load_model_fn(kind: str, models_dir: str | Path = "models") -> ModelFn:
    """The model function of ``resnet`` or ``cnn`` from its file in ``models_dir``."""
    path = Path(models_dir) / MODEL_FILES[kind]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `dvc repro` (or `dvc pull`) to get the trained {kind} model")
    if kind == "resnet":
        from fkd.resnet import load_model_fn as load
    else:
        from fkd.cnn import load_model_fn as load
    return load(path)


def load_predictor(kind: str, models_dir: str | Path = "models", weights=(0.5, 0.5), tta_flip: bool = True) -> ModelFn:
    """Model function for ``resnet``, ``cnn`` or ``ensemble`` (weights: resnet, cnn), with optional flip TTA."""
    if kind == "ensemble":
        fns = [load_model_fn(k, models_dir) for k in ("resnet", "cnn")]
        if tta_flip:
            fns = [with_flip_tta(f) for f in fns]
        return ensemble(fns, weights)
    if kind not in MODEL_FILES:
        raise ValueError(f"unknown model {kind!r}: choose resnet, cnn or ensemble")
    fn = load_model_fn(kind, models_dir)
    return with_flip_tta(fn) if tta_flip else fn
