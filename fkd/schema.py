"""How params sections are declared and checked: frozen dataclasses whose fields carry their types
and ranges (``Annotated[int, Range(ge=1)]``), built from YAML mappings by :func:`build`.

Every key is checked: a missing key, an unknown key (a typo in ``dvc exp run -S``), a value of
the wrong type or out of its range raises :class:`ParamsError` naming the dotted key; every float
must be finite. Rules that tie two keys together are a dataclass's ``check_fields``. The sections
themselves live with what they configure (:mod:`fkd.config`, each model's ``params.py``).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

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
        return build(tp, value, key)
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
                errors.append((_same_kind(value, arg), exc))
        # a list (or number) given where a name or a list (or number) is allowed: its own error says more than "not a name"
        shaped = [exc for same_kind, exc in errors if same_kind]
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
        # A number in quotes is a string: refused, not read (fkd.config's loader reads 1e-4 as a number).
        if isinstance(value, str) and _is_number(value):
            raise ParamsError(f"params: '{key}' must be a number, got the string {value!r}: write it without quotes")
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


def _is_number(text: str) -> bool:
    """Whether ``text`` reads as a finite number (``"1.5"``; ``"inf"`` and ``"nan"`` are not: YAML's are ``.inf``, ``.nan``)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _same_kind(value: Any, tp: Any) -> bool:
    """Whether ``value`` is a list for a list type or a number (or a number in quotes) for a number type
    (not a literal's alternative)."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is tuple:
        return isinstance(value, (list, tuple))
    if tp is float and isinstance(value, str):
        return _is_number(value)
    return tp in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) is tuple:
        return "a list"
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false"}.get(tp, getattr(tp, "__name__", str(tp)))


def build(cls: type, raw: dict, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from mapping ``raw``, every field converted and checked (keys named from ``prefix``)."""
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


def to_dict(obj: Any) -> Any:
    """A config object back to plain dicts/lists (for checkpoints and logs)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
