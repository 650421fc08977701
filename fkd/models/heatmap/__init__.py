"""The heatmap network: an encoder-decoder with one heatmap per keypoint, read out by soft-argmax (``network.py``),
trained by the shared torch loop with a loss that skips missing labels (:mod:`fkd.nn.torch_train`).

This module is the model's contract with the pipeline (:mod:`fkd.models.registry`); the framework is imported
only when the model is built, trained or loaded.
"""
from __future__ import annotations

from fkd.models.heatmap.params import HeatmapParams as Params  # noqa: F401  params.yaml's section "heatmap"

#: Each fold's model: ``models/heatmap/<fold>.safetensors``.
SUFFIX = ".safetensors"


def build(p: Params):
    """The untrained network that params ``p`` describe."""
    from fkd.models.heatmap.network import architecture, build

    return build(architecture(p))


def fit(train, val, p: Params, model_path, live=None):
    """Train on ``train``, early-stop on ``val``, save the best epoch to ``model_path``: a :class:`~fkd.nn.train_result.TrainResult`."""
    from functools import partial

    from fkd.models.heatmap.network import architecture, build, map_loss
    from fkd.nn.torch_train import fit_torch

    extra_loss = partial(map_loss, weight=p.map_loss_weight, sigma_px=p.map_sigma_px) if p.map_loss_weight > 0 else None
    return fit_torch(train, val, p, architecture(p), build, model_path, live, extra_loss)


def load(path):
    """A saved model as a function: uint8 faces (N, 96, 96) -> keypoints (N, 34) in pixels."""
    from fkd.models.heatmap.network import load_model_fn

    return load_model_fn(path)
