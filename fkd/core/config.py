"""params.yaml -> typed, frozen config objects, one section at a time (:func:`load_params`).

The pipeline's own sections are declared here, each model's in its folder (``Params`` of ``fkd/models/<name>/``,
imported by name only when that section is loaded, so a data stage imports no model code); how a section is
declared and checked is :mod:`fkd.core.schema`.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml

from fkd.core.schema import (Count, Fraction, Length, NonNegative, ParamsError, Positive, PositiveSum, Range, Seed,  # noqa: F401
                        build, name_or, rule_error, to_dict)


@dataclass(frozen=True)
class DataParams:
    source: Literal["kaggle", "local", "synthetic"]
    path: str  # local source: the competition zip, or a folder with the unpacked files
    competition: str
    # How far right (px) of the features they mark the labels sit: auto (estimated by the split stage) or a number.
    label_offset_x: name_or(Literal["auto"], Annotated[float, Range(ge=-4, le=4)])  # fkd/core/label_offset.py says why


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
    # Images whose thumbnails correlate at least this much share a fold (frames of one video); 1: only exact copies.
    near_duplicate_corr: Annotated[float, Range(ge=0.5, le=1)]

    def __post_init__(self) -> None:
        if list(self.folds) != list(range(len(self.folds))):
            raise rule_error("folds", "must list the fold numbers from 0 ([0]: one hold-out; [0, 1, 2, 3, 4]: "
                             f"5-fold cross-validation), got {list(self.folds)}; expected {list(range(len(self.folds)))}")


@dataclass(frozen=True)
class EnsembleParams:
    members: Annotated[tuple[str, ...], Length(min=1)]  # model names of fkd.models.registry, checked where they are used
    weights: name_or(Literal["fitted"], Annotated[tuple[NonNegative, ...], PositiveSum()])  # fitted, or one per member
    per_keypoint: bool  # fitted: one weight vector per keypoint instead of one per model

    def __post_init__(self) -> None:
        if len(set(self.members)) != len(self.members):
            raise rule_error("members", f"lists a model twice: {list(self.members)}")
        if self.weights != "fitted" and len(self.weights) != len(self.members):
            raise rule_error("weights", f"must be 'fitted' or one weight per member ({len(self.members)}), got {list(self.weights)}")


#: A test-time turn (degrees) and scale: small, so that the face stays framed like the training faces.
TurnDegrees = Annotated[float, Range(ge=-30, le=30)]
TestScale = Annotated[float, Range(ge=0.8, le=1.25)]


@dataclass(frozen=True)
class TTAParams:
    """Test-time augmentation beyond the flip, wherever evaluate.tta_flip / submit.tta_flip turn TTA on."""

    turns_deg: tuple[TurnDegrees, ...]  # also predict on each face turned by these angles, and turn the points back
    scales: tuple[TestScale, ...]  # ... and scaled by these factors about its centre


@dataclass(frozen=True)
class EvaluateParams:
    tta_flip: bool
    grid_faces: Positive
    worst_faces: Count

    def __post_init__(self) -> None:
        if self.worst_faces > self.grid_faces:
            raise rule_error("worst_faces", f"must be between 0 and {{section}}.grid_faces ({self.grid_faces}), got {self.worst_faces}")


@dataclass(frozen=True)
class SubmitParams:
    model: str  # a model name of fkd.models.registry, or ensemble; checked where it is used
    tta_flip: bool
    upload: bool
    message: str


#: The models' sections: one per folder of fkd/models/ (a model's contract, :mod:`fkd.models.registry`), found by
#: their names alone, so that loading params imports no model code.
MODEL_NAMES: tuple[str, ...] = tuple(sorted(
    m.name for m in pkgutil.iter_modules([str(Path(__file__).resolve().parents[1] / "models")]) if m.ispkg))
#: The pipeline's own sections; with the models' (by name) after split.
PIPELINE_SECTIONS = {"data": DataParams, "synthetic": SyntheticParams, "split": SplitParams,
                     "ensemble": EnsembleParams, "tta": TTAParams, "evaluate": EvaluateParams, "submit": SubmitParams}
SECTIONS: tuple[str, ...] = ("data", "synthetic", "split", *MODEL_NAMES, "ensemble", "tta", "evaluate", "submit")


def section_class(name: str) -> type:
    """The dataclass of section ``name``: a model's is ``Params`` of ``fkd.models.<name>`` (imported only now)."""
    if name in PIPELINE_SECTIONS:
        return PIPELINE_SECTIONS[name]
    if name in MODEL_NAMES:
        return importlib.import_module(f"fkd.models.{name}").Params
    raise ValueError(f"no params section {name!r}")  # a bug in the caller, not in params.yaml


@functools.cache
def _params_class(sections: tuple[str, ...]) -> type:
    """A frozen dataclass with one field per section (``p.split.folds``)."""
    return dataclasses.make_dataclass("Params", [(name, section_class(name)) for name in sections], frozen=True)


def __getattr__(name: str):
    if name == "Params":  # every section (imports every model's params): for tools that handle the whole file
        return _params_class(SECTIONS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_params(raw, *sections: str):
    """Validate ``sections`` (default: all) of a params mapping (as read from YAML). Every top-level key must be a known
    section (a typo is an unknown key here, whichever sections are asked for); the other sections are not checked."""
    if not isinstance(raw, dict):
        raise ParamsError("params: the top level must be a mapping")
    unknown = sorted(set(map(str, raw)) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"params: unknown key '{unknown[0]}' (allowed here: {', '.join(SECTIONS)})")
    sections = sections or SECTIONS
    for name in sections:
        if name not in raw:
            raise ParamsError(f"params: missing key '{name}'")
    return _params_class(sections)(**{name: build(section_class(name), raw[name], name) for name in sections})


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats, as DVC (ruamel.yaml) reads and writes params.yaml: ``1e-5``, which
    ``dvc exp run -S resnet.lr=1e-5`` writes, is a number, not YAML 1.1's string; so the schema takes no numbers from strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$"), list("-+.0123456789"))


def load_yaml(text: str):
    """YAML text as :func:`yaml.safe_load` reads it, but with YAML 1.2's floats (``1e-4`` is a number), as DVC reads
    ``params.yaml`` and ``-S key=value``."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader


def deep_update(base: dict, new: dict) -> dict:
    """Merge ``new`` into ``base`` in place, mappings key by key (``dvc exp run -S`` style), and return ``base``."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load_params(*sections: str, path: str | Path = "params.yaml", overrides: dict | None = None):
    """Read ``path`` and validate ``sections`` of it (default: all), e.g. ``load_params("split").split.folds``.
    A first argument that is a path (a :class:`~pathlib.Path`, or a name ending ``.yaml``) is ``path``.
    ``overrides`` (e.g. ``{"heatmap": {"epochs": 80}}``) is merged into the file's mapping before it is checked."""
    if sections and (isinstance(sections[0], Path) or str(sections[0]).endswith((".yaml", ".yml"))):
        path, sections = sections[0], sections[1:]
    path = Path(path)
    try:
        raw = load_yaml(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: {path} not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {exc}") from None
    if overrides and isinstance(raw, dict):
        deep_update(raw, overrides)
    return parse_params(raw, *sections)


