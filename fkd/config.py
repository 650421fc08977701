"""params.yaml -> typed, frozen config objects (:class:`Params`).

The pipeline's own sections are declared here, each model's in its folder
(``fkd/models/<name>/params.py``); how a section is declared and checked is :mod:`fkd.schema`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml

from fkd.models.cnn.params import CnnParams
from fkd.models.heatmap.params import HeatmapParams
from fkd.models.resnet.params import ResnetParams
from fkd.schema import (Count, Fraction, Length, NonNegative, ParamsError, Positive, PositiveSum, Range, Seed,  # noqa: F401
                        build, to_dict)


@dataclass(frozen=True)
class DataParams:
    source: Literal["kaggle", "local", "synthetic"]
    path: str  # local source: the competition zip, or a folder with the unpacked files
    competition: str
    # How far right (px) of the features they mark the labels sit: auto (estimated by the split stage) or a number.
    label_offset_x: Literal["auto"] | Annotated[float, Range(ge=-4, le=4)]  # fkd/label_offset.py says why


@dataclass(frozen=True)
class SyntheticParams:
    n_train: Positive
    n_test: Positive
    partial_fraction: Fraction
    seed: Seed


@dataclass(frozen=True)
class SplitParams:
    val_fraction: Annotated[float, Range(gt=0, lt=1)]  # the held-out part when there is one fold
    seed: Seed
    # The fold numbers 0..K-1, a list because DVC's foreach makes one training stage per item (it cannot count).
    folds: Annotated[tuple[Count, ...], Length(min=1, max=20)]

    def check_fields(self, key: str) -> None:
        if list(self.folds) != list(range(len(self.folds))):
            raise ParamsError(f"params: '{key}.folds' must list the fold numbers from 0 ([0]: one hold-out; [0, 1, 2, 3, 4]: "
                              f"5-fold cross-validation), got {list(self.folds)}; expected {list(range(len(self.folds)))}")


@dataclass(frozen=True)
class EnsembleParams:
    members: Annotated[tuple[str, ...], Length(min=1)]  # model names of fkd.registry, checked where they are used
    weights: Literal["fitted"] | Annotated[tuple[NonNegative, ...], PositiveSum()]  # fitted, or one per member
    per_keypoint: bool  # fitted: one weight vector per keypoint instead of one per model

    def check_fields(self, key: str) -> None:
        if len(set(self.members)) != len(self.members):
            raise ParamsError(f"params: '{key}.members' lists a model twice: {list(self.members)}")
        if self.weights != "fitted" and len(self.weights) != len(self.members):
            raise ParamsError(f"params: '{key}.weights' must be 'fitted' or one weight per member ({len(self.members)}), "
                              f"got {list(self.weights)}")


@dataclass(frozen=True)
class EvaluateParams:
    tta_flip: bool
    grid_faces: Positive
    worst_faces: Count

    def check_fields(self, key: str) -> None:
        if self.worst_faces > self.grid_faces:
            raise ParamsError(f"params: '{key}.worst_faces' must be between 0 and {key}.grid_faces ({self.grid_faces}), "
                              f"got {self.worst_faces}")


@dataclass(frozen=True)
class SubmitParams:
    model: str  # a model name of fkd.registry, or ensemble; checked where it is used
    tta_flip: bool
    upload: bool
    message: str


@dataclass(frozen=True)
class Params:
    data: DataParams
    synthetic: SyntheticParams
    split: SplitParams
    resnet: ResnetParams
    heatmap: HeatmapParams
    cnn: CnnParams
    ensemble: EnsembleParams
    evaluate: EvaluateParams
    submit: SubmitParams


def parse_params(raw: dict) -> Params:
    """Validate a params mapping (as read from YAML) into :class:`Params`."""
    if not isinstance(raw, dict):
        raise ParamsError("params: the top level must be a mapping")
    return build(Params, raw)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats, as DVC (ruamel.yaml) reads and writes params.yaml: ``1e-5``, which
    ``dvc exp run -S resnet.lr=1e-5`` writes, is a number, not YAML 1.1's string; so the schema takes no numbers from strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def load_yaml(text: str):
    """YAML text as :func:`yaml.safe_load` reads it, but with YAML 1.2's floats (``1e-4`` is a number), as DVC reads
    ``params.yaml`` and ``-S key=value``."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: {path} not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {exc}") from None
    return parse_params(raw)


