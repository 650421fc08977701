"""params.yaml -> typed, frozen config objects.

Every key is checked: a missing key, an unknown key (a typo in ``dvc exp run -S``) or a
value of the wrong type raises :class:`ParamsError` naming the dotted key.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """params.yaml does not match the schema."""


@dataclass(frozen=True)
class DataParams:
    source: Literal["kaggle", "local", "synthetic"]
    path: str  # local source: the competition zip, or a folder with the unpacked files
    competition: str


@dataclass(frozen=True)
class SyntheticParams:
    n_train: int
    n_test: int
    partial_fraction: float
    seed: int


@dataclass(frozen=True)
class SplitParams:
    val_fraction: float
    seed: int


@dataclass(frozen=True)
class AugmentParams:
    flip: bool
    rotate_deg: float
    scale: float
    shift_px: float
    brightness: float
    contrast: float


@dataclass(frozen=True)
class ResnetParams:
    device: Literal["auto", "cpu", "cuda", "mps"]
    threads: int  # 0: all cores
    seed: int
    stem_channels: int
    widths: tuple[int, ...]
    blocks_per_stage: int
    scheme_heads: bool  # predict scheme-B nose/lip separately (34 outputs) instead of 30
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: float
    weight_decay: float
    schedule: Literal["onecycle", "cosine", "step", "constant"]
    warmup_fraction: float
    step_size: int
    step_gamma: float
    batch_size: int
    epochs: int
    patience: int
    normalize_targets: bool
    bf16: bool  # autocast on CUDA only
    augment: AugmentParams


@dataclass(frozen=True)
class CnnAdamParams:
    lr: float
    epochs: int
    patience: int


@dataclass(frozen=True)
class CnnSgdParams:
    lr: float
    momentum: float
    epochs: int
    patience: int
    plateau_factor: float
    plateau_patience: int


@dataclass(frozen=True)
class CnnParams:
    seed: int
    threads: int
    filters: tuple[int, ...]
    kernel: int
    dropout: tuple[float, ...]
    dense: tuple[int, ...]
    leaky_alpha: float
    huber_delta: float
    target_scale: float
    missing: Literal["mask", "ffill"]
    scheme_heads: bool
    batch_size: int
    flip: bool
    adam: CnnAdamParams
    sgd: CnnSgdParams


@dataclass(frozen=True)
class EnsembleParams:
    weights: tuple[float, float]  # resnet, cnn


@dataclass(frozen=True)
class EvaluateParams:
    tta_flip: bool
    grid_faces: int
    worst_faces: int


@dataclass(frozen=True)
class SubmitParams:
    model: Literal["resnet", "cnn", "ensemble"]
    tta_flip: bool
    upload: bool
    message: str


@dataclass(frozen=True)
class Params:
    data: DataParams
    synthetic: SyntheticParams
    split: SplitParams
    resnet: ResnetParams
    cnn: CnnParams
    ensemble: EnsembleParams
    evaluate: EvaluateParams
    submit: SubmitParams


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"params: '{key}' must be a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(map(str, typing.get_args(tp)))
            raise ParamsError(f"params: '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"params: '{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ParamsError(f"params: '{key}' must have {len(args)} items, got {len(value)}")
        return tuple(_convert(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except ParamsError:
                continue
        raise ParamsError(f"params: '{key}' has the wrong type: {value!r}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"params: '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"params: '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        # YAML reads 1e-4 (no dot) as a string; accept it when it parses as a number.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ParamsError(f"params: '{key}' must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"params: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"params: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type {tp} for {key}")  # a bug in the schema, not in params


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = (lambda k: f"{prefix}.{k}" if prefix else k)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"params: unknown key '{dotted(unknown[0])}' (allowed here: {', '.join(names)})")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"params: missing key '{dotted(missing[0])}'")
    return cls(**{n: _convert(raw[n], hints[n], dotted(n)) for n in names})


def parse_params(raw: dict) -> Params:
    """Validate a params mapping (as read from YAML) into :class:`Params`."""
    if not isinstance(raw, dict):
        raise ParamsError("params: the top level must be a mapping")
    return _build(Params, raw)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: {path} not found (run from the project root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {exc}") from None
    return parse_params(raw)


def to_dict(obj: Any) -> Any:
    """A config object back to plain dicts/lists (for checkpoints and logs)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
