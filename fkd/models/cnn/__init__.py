"""The Keras CNN: convolution blocks and a dense head onto the keypoints (``network.py``), trained in two phases,
Adam from scratch then SGD fine-tuning (``train.py``), each phase its own DVC stage.

This module is the model's contract with the pipeline (:mod:`fkd.models.registry`); TensorFlow is imported only
when the model is built, trained or loaded.
"""
from __future__ import annotations

from fkd.models.cnn.params import CnnParams as Params  # noqa: F401  params.yaml's section "cnn"

#: Each fold's model: ``models/cnn_sgd/<fold>.keras``, phase 2's (phase 1's go to ``models/cnn_adam/``).
SUFFIX = ".keras"
FOLDER = "cnn_sgd"
#: The phases a stage can run by name (``python -m stages.train cnn.adam ...``): trainers taking ``(train, val, p,
#: *paths, live=None)``; ``adam`` writes a model, ``sgd`` reads phase 1's and writes the final one.
PHASES = ("adam", "sgd")


def build(p: Params):
    """The untrained Keras model that params ``p`` describe."""
    from fkd.models.cnn.network import build_model, n_outputs

    return build_model(p, n_outputs(p.scheme_heads))


def fit(train, val, p: Params, model_path, live=None):
    """Both phases from scratch into ``model_path`` (phase 1's model in a temporary folder)."""
    from fkd.models.cnn.train import fit

    return fit(train, val, p, model_path, live)


def phase(name: str):
    """The trainer of phase ``name`` (one of :data:`PHASES`)."""
    from fkd.models.cnn.train import train_adam, train_sgd

    return {"adam": train_adam, "sgd": train_sgd}[name]


def load(path):
    """A saved model as a function: uint8 faces (N, 96, 96) -> keypoints (N, 34) in pixels."""
    from fkd.models.cnn.network import load_model_fn

    return load_model_fn(path)
