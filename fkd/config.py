"""params.yaml -> typed, frozen config objects.

Every key is checked: a missing key, an unknown key (a typo in ``dvc exp run -S``), a value of
the wrong type or out of its range raises :class:`ParamsError` naming the dotted key. Ranges sit
with the types, as ``Annotated[int, Range(ge=1)]``; every float must be finite. Rules that tie
two keys together are a dataclass's ``check_fields``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml


class ParamsError(ValueError):
    """params.yaml does not match the schema."""


@dataclass(frozen=True)
class Range:
    """Allowed values of a number: ``ge``/``gt`` a lower bound (inclusive/exclusive), ``le``/``lt`` an upper one."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: float, key: str) -> None:
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if not ok:
            raise ParamsError(f"params: '{key}' must be {self.describe()}, got {value!r}")

    def describe(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)`` ..."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt)
        high = ("]", self.le) if self.le is not None else (")", self.lt)
        if low[1] is not None and high[1] is not None:
            return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        if low[1] is not None:
            return f"{'>=' if low[0] == '[' else '>'} {_num(low[1])}"
        return f"{'<=' if high[0] == ']' else '<'} {_num(high[1])}"


@dataclass(frozen=True)
class Length:
    """Allowed number of items of a list."""

    min: int = 0
    max: int | None = None

    def check(self, value: tuple, key: str) -> None:
        if len(value) < self.min or (self.max is not None and len(value) > self.max):
            want = f"{self.min} to {self.max}" if self.max is not None else f"at least {self.min}"
            raise ParamsError(f"params: '{key}' must have {want} items, got {len(value)}")


@dataclass(frozen=True)
class PositiveSum:
    """Numbers whose sum must be above 0 (weights that get normalised)."""

    def check(self, value: tuple, key: str) -> None:
        if not sum(value) > 0:
            raise ParamsError(f"params: '{key}' must have a positive sum, got {list(value)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# Shared ranges. Seeds go to numpy, which takes 0 .. 2**32 - 1.
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]
Threads = Annotated[int, Range(ge=0)]  # 0: all cores
Positive = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]
LearningRate = Annotated[float, Range(gt=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
NonNegative = Annotated[float, Range(ge=0)]


@dataclass(frozen=True)
class DataParams:
    source: Literal["kaggle", "local", "synthetic"]
    path: str  # local source: the competition zip, or a folder with the unpacked files
    competition: str


@dataclass(frozen=True)
class SyntheticParams:
    n_train: Positive
    n_test: Positive
    partial_fraction: Fraction
    seed: Seed


@dataclass(frozen=True)
class SplitParams:
    val_fraction: Annotated[float, Range(gt=0, lt=1)]
    seed: Seed


@dataclass(frozen=True)
class AugmentParams:
    flip: bool
    rotate_deg: Annotated[float, Range(ge=0, le=180)]
    scale: Annotated[float, Range(ge=0, lt=1)]  # 1 would allow a zero-size image
    shift_px: Annotated[float, Range(ge=0, lt=96)]
    brightness: Fraction
    contrast: Fraction


@dataclass(frozen=True)
class TorchTrainParams:
    """How a PyTorch model is trained (shared by every torch model's params section)."""

    device: Literal["auto", "cpu", "cuda", "mps"]
    threads: Threads
    seed: Seed
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: LearningRate
    weight_decay: NonNegative
    schedule: Literal["onecycle", "cosine", "step", "constant"]
    warmup_fraction: Annotated[float, Range(ge=0, lt=1)]  # OneCycleLR divides by the part after warm-up
    step_size: Positive  # epochs
    step_gamma: Annotated[float, Range(gt=0, le=1)]
    batch_size: Positive
    epochs: Positive
    patience: Positive  # epochs without improvement; 0 would stop after the first epoch
    normalize_targets: bool
    bf16: bool  # bfloat16 autocast on CUDA
    augment: AugmentParams


@dataclass(frozen=True)
class ResnetParams(TorchTrainParams):
    stem_channels: Positive
    widths: Annotated[tuple[Positive, ...], Length(min=1)]
    blocks_per_stage: Positive
    scheme_heads: bool  # predict scheme-B nose/lip separately (34 outputs) instead of 30


@dataclass(frozen=True)
class HeatmapParams(TorchTrainParams):
    widths: Annotated[tuple[Positive, ...], Length(min=4, max=4)]  # encoder stages at strides 2, 4, 8, 16
    blocks_per_stage: Positive
    decoder_channels: Positive
    heatmap_stride: Literal[2, 4, 8]


@dataclass(frozen=True)
class CnnAdamParams:
    lr: LearningRate
    schedule: Literal["cosine", "constant"]  # cosine: decays to 0 over the epochs, so the last epochs settle
    epochs: Positive
    patience: Positive


@dataclass(frozen=True)
class CnnSgdParams:
    lr: LearningRate
    momentum: Annotated[float, Range(ge=0, lt=1)]
    epochs: Positive
    patience: Positive
    plateau_factor: Annotated[float, Range(gt=0, lt=1)]  # Keras refuses factor >= 1
    plateau_patience: Count  # 0: lower the rate after every epoch without improvement


@dataclass(frozen=True)
class CnnParams:
    seed: Seed
    threads: Threads
    filters: Annotated[tuple[Positive, ...], Length(min=1, max=6)]  # each block halves 96 px; a 7th leaves none
    kernel: Annotated[int, Range(ge=1, le=96)]
    dropout: tuple[Annotated[float, Range(ge=0, lt=1)], ...]
    dense: tuple[Positive, ...]
    leaky_alpha: Annotated[float, Range(ge=0, le=1)]
    huber_delta: Annotated[float, Range(gt=0)]
    target_scale: Annotated[float, Range(gt=0)]
    missing: Literal["mask", "ffill"]
    scheme_heads: bool
    batch_size: Positive
    flip: bool
    adam: CnnAdamParams
    sgd: CnnSgdParams

    def check_fields(self, key: str) -> None:
        if len(self.dropout) != len(self.filters):
            raise ParamsError(f"params: '{key}.dropout' must have one rate per {key}.filters entry ({len(self.filters)}), "
                              f"got {len(self.dropout)}")


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


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *constraints = typing.get_args(tp)
        value = _convert(value, inner, key)
        for constraint in constraints:
            constraint.check(value, key)
        return value
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
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except ParamsError as exc:
                errors.append((typing.get_origin(arg) is Literal, exc))
        # a list given where a name or a list is allowed: the list's own error says more than "not a name"
        shaped = [exc for is_literal, exc in errors if not is_literal and isinstance(value, (list, tuple))]
        if shaped:
            raise shaped[0]
        choices = " or ".join(_describe(arg) for arg in typing.get_args(tp))
        raise ParamsError(f"params: '{key}' must be {choices}, got {value!r}")
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
        if not math.isfinite(value):
            raise ParamsError(f"params: '{key}' must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"params: '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported type {tp} for {key}")  # a bug in the schema, not in params


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return "a list" if typing.get_origin(tp) is tuple else getattr(tp, "__name__", str(tp))


def _build(cls: type, raw: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    dotted = (lambda k: f"{prefix}.{k}" if prefix else k)
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"params: unknown key '{dotted(unknown[0])}' (allowed here: {', '.join(names)})")
    missing = [n for n in names if n not in raw]
    if missing:
        raise ParamsError(f"params: missing key '{dotted(missing[0])}'")
    obj = cls(**{n: _convert(raw[n], hints[n], dotted(n)) for n in names})
    if hasattr(obj, "check_fields"):
        obj.check_fields(prefix)
    return obj


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
