"""How params sections are declared and checked: frozen dataclasses whose fields carry their types and ranges
(``Annotated[int, Range(ge=1)]``), validated by pydantic (strict: no number from a string, no int from a bool;
unknown keys refused; every float finite) in :func:`build`.

A :class:`pydantic.ValidationError` becomes one :class:`ParamsError` line naming the dotted key (``resnet.widths[1]``).
Rules that tie two keys together are a dataclass's ``__post_init__`` raising :func:`rule_error`. The sections
themselves live with what they configure (:mod:`fkd.core.config`, each model's ``params.py``).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

import pydantic
from pydantic import ConfigDict, Discriminator, Tag, TypeAdapter, with_config
from pydantic_core import PydanticCustomError, core_schema

from fkd.core.errors import FkdError

#: Every section's validation: strict types, no unknown keys, finite floats.
CONFIG = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ParamsError(FkdError, ValueError):
    """params.yaml does not match the schema."""


def _refuse(tail: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError("params", "{tail}", {"tail": tail, **ctx})


def rule_error(field: str, tail: str) -> PydanticCustomError:
    """A cross-field rule's error (raise it from ``__post_init__``): ``'<section>.<field>' <tail>``; ``{section}`` in
    ``tail`` becomes the section's dotted key."""
    return _refuse(tail, field=field)


class _Check:
    """Metadata checked by pydantic after the type: :meth:`problem` returns what is wrong, or None."""

    def __get_pydantic_core_schema__(self, source: Any, handler: pydantic.GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def check(value):
            problem = self.problem(value)
            if problem:
                raise _refuse(problem)
            return value
        return core_schema.no_info_after_validator_function(check, handler(source))

    def problem(self, value) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Range(_Check):
    """Allowed values of a number: ``ge``/``gt`` a lower bound (inclusive/exclusive), ``le``/``lt`` an upper one."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> str | None:
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return None if ok else f"must be {self.describe()}, got {value!r}"

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
class Length(_Check):
    """Allowed number of items of a list."""

    min: int = 0
    max: int | None = None

    def problem(self, value: tuple) -> str | None:
        if len(value) < self.min or (self.max is not None and len(value) > self.max):
            want = f"{self.min} to {self.max}" if self.max is not None else f"at least {self.min}"
            return f"must have {want} items, got {len(value)}"
        return None


@dataclass(frozen=True)
class PositiveSum(_Check):
    """Numbers whose sum must be above 0 (weights that get normalised)."""

    def problem(self, value: tuple) -> str | None:
        return None if sum(value) > 0 else f"must have a positive sum, got {list(value)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def name_or(names: Any, other: Any) -> Any:
    """One of the names of Literal ``names``, or a value of type ``other`` (a number or a list): a value of ``other``'s
    kind gets ``other``'s error (a range, a number in quotes), anything else ``must be 'auto' or a number``."""
    base = typing.get_args(other)[0] if typing.get_origin(other) is Annotated else other
    is_list = typing.get_origin(base) is tuple

    def kind(value: Any) -> str | None:
        if isinstance(value, str) and value in typing.get_args(names):
            return "name"
        if is_list:
            of_kind = isinstance(value, list)
        elif isinstance(value, str):  # a number in quotes: the number's error says to drop them
            of_kind = _is_number(value)
        else:
            of_kind = isinstance(value, (int, float)) and not isinstance(value, bool)
        return "value" if of_kind else None

    choices = " or ".join([*map(repr, typing.get_args(names)), "a list" if is_list else "a number"])
    return Annotated[Union[Annotated[names, Tag("name")], Annotated[other, Tag("value")]],
                     Discriminator(kind, custom_error_type="params_choice", custom_error_message=f"must be {choices}")]


# Shared ranges. Seeds go to numpy, which takes 0 .. 2**32 - 1.
Seed = Annotated[int, Range(ge=0, le=2**32 - 1)]
Threads = Annotated[int, Range(ge=0)]  # 0: all cores
Positive = Annotated[int, Range(ge=1)]
Count = Annotated[int, Range(ge=0)]
LearningRate = Annotated[float, Range(gt=0)]
Fraction = Annotated[float, Range(ge=0, le=1)]
NonNegative = Annotated[float, Range(ge=0)]


def _is_number(text: str) -> bool:
    """Whether ``text`` reads as a finite number (``"1.5"``; ``"inf"`` and ``"nan"`` are not: YAML's are ``.inf``, ``.nan``)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    # a root holding the section: CONFIG reaches every dataclass inside, which keep no config of their own
    return TypeAdapter(with_config(CONFIG)(dataclasses.make_dataclass("Section", [("section", cls)], frozen=True)))


#: What stands in for a value JSON cannot hold (a YAML date, bytes, a set): a mapping no field takes.
_STAND_IN = "\0yaml value"


def _json_text(raw: Any) -> tuple[str, list]:
    """``{"section": raw}`` as JSON, each value JSON cannot hold replaced by ``{_STAND_IN: i}`` (``i`` its index in the list)."""
    held: list = []

    def stand_in(value):
        held.append(value)
        return {_STAND_IN: len(held) - 1}
    return json.dumps({"section": raw}, default=stand_in), held


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from mapping ``raw``, every field checked (keys named from ``prefix``), or
    :class:`ParamsError`."""
    text, held = _json_text(raw)
    try:  # JSON mode: strict types, yet a list fills a tuple and a mapping a dataclass
        return _as_written(_adapter(cls).validate_json(text).section, raw)
    except pydantic.ValidationError as exc:
        # the error a depth-first check meets first: in each mapping its unknown keys, its missing keys, then field by field
        err = min(exc.errors(include_url=False), key=lambda e: _order(cls, e))
        raise ParamsError(_message(cls, err, prefix, held)) from None


def _as_written(obj: Any, raw: Any) -> Any:
    """``obj`` with each Literal field's value as written (pydantic matches ``34.0`` to ``Literal[34]`` and gives 34; the
    hand-written checker kept 34.0, which a network then refuses: fkd.nn.torch_nn says "does not build")."""
    changes = {}
    for name, tp in typing.get_type_hints(type(obj), include_extras=True).items():
        value, written = getattr(obj, name), raw[name]
        if dataclasses.is_dataclass(value):
            changes[name] = _as_written(value, written)
        elif typing.get_origin(_bare(tp)) is Literal and type(written) is not type(value):
            changes[name] = written
    changes = {k: v for k, v in changes.items() if v is not getattr(obj, k)}
    return dataclasses.replace(obj, **changes) if changes else obj


def _walk(cls: type, loc: tuple, prefix: str) -> tuple[str, Any, Any, list]:
    """The dotted key of ``loc`` (``resnet.widths[1]``), its declared type (None for an unknown key), the dataclass
    holding it and the position of each step (field or item number)."""
    key, tp, parent, steps = prefix, cls, None, []
    for part in loc:
        tp = _bare(tp)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp, include_extras=True)
            parent, tp = tp, hints.get(part)
            steps.append(list(hints).index(part) if part in hints else -1)
            key = f"{key}.{part}" if key else str(part)
        elif typing.get_origin(tp) is tuple:
            args = typing.get_args(tp)
            tp = args[0] if len(args) == 2 and args[1] is Ellipsis else args[part] if part < len(args) else None
            steps.append(part)
            key = f"{key}[{part}]"
        elif typing.get_origin(tp) is Union:  # a tagged branch of name_or
            tp = next(a for a in typing.get_args(tp) if any(getattr(m, "tag", None) == part for m in a.__metadata__))
    return key, _bare(tp), parent, steps


def _order(cls: type, err: dict) -> tuple:
    *_, steps = _walk(cls, err["loc"][1:], "")
    last = {"unexpected_keyword_argument": (0, str(err["loc"][-1])), "missing": (1, steps[-1] if steps else 0)}.get(err["type"])
    if last is None:  # a bad value (at its own position) or a cross-field rule (after its dataclass's fields)
        return (*((2, s) for s in steps), (3,) if err["type"] == "params" and "field" in (err.get("ctx") or {}) else (2, -1))
    return (*((2, s) for s in steps[:-1]), last)


def _bare(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


_TYPE_WORDS = {"int_type": "an integer", "int_from_float": "an integer", "bool_type": "true or false",
               "string_type": "a string", "tuple_type": "a list", "list_type": "a list", "finite_number": "a finite number",
               "dataclass_type": "a mapping", "dataclass_exact_type": "a mapping", "dict_type": "a mapping"}


def _message(cls: type, err: dict, prefix: str, held: list) -> str:
    loc, kind, value, ctx = err["loc"][1:], err["type"], err.get("input"), err.get("ctx") or {}  # loc[0]: the section's holder
    if loc and loc[-1] == _STAND_IN:  # a YAML value JSON cannot hold, where a mapping goes
        loc, kind, value = loc[:-1], "dataclass_type", {_STAND_IN: value}
    if isinstance(value, dict) and list(value) == [_STAND_IN]:
        value = held[value[_STAND_IN]]
    key, tp, parent, _ = _walk(cls, loc, prefix)
    if kind == "missing":
        return f"params: missing key '{key}'"
    if kind == "unexpected_keyword_argument":
        return f"params: unknown key '{key}' (allowed here: {', '.join(f.name for f in dataclasses.fields(parent))})"
    if kind == "params":
        if "field" in ctx:
            return f"params: '{key}.{ctx['field']}' {ctx['tail'].replace('{section}', key)}"
        return f"params: '{key}' {ctx['tail']}"
    if kind == "params_choice":
        return f"params: '{key}' {err['msg']}, got {value!r}"
    if kind == "literal_error":
        return f"params: '{key}' must be one of {', '.join(map(str, typing.get_args(tp)))}, got {value!r}"
    if kind == "float_type" and isinstance(value, str) and _is_number(value):
        return f"params: '{key}' must be a number, got the string {value!r}: write it without quotes"
    if kind == "float_type":
        return f"params: '{key}' must be a number, got {value!r}"
    if kind in _TYPE_WORDS:
        return f"params: '{key}' must be {_TYPE_WORDS[kind]}, got {value!r}"
    return f"params: '{key}' {err['msg'][:1].lower()}{err['msg'][1:]}, got {value!r}"


def to_dict(obj: Any) -> Any:
    """A config object back to plain dicts/lists (for checkpoints and logs)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
