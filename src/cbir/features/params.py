"""Typed extractor parameters, in the spirit of scikit-learn's `get_params`.

Each extractor declares its parameters as a frozen dataclass of `Params`: one field per
parameter, its type and default, and a `validate` step for ranges and choices. Parameters that
change the vectors (`params_type`) are declared apart from runtime knobs that never do
(`knobs_type`: batch size, threads), so that a collection compares only the first.

Values are checked strictly (an int is not a float, a bool not an int, numpy scalars become
Python ones); a list of strings also reads from "a,b". A field declared with `none_was(x)`
defaults to None and reads the sentinel `x` that earlier cbir versions wrote for it ("" for
"the default weights", -1 for "as tta") as None, so their collections still open.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from cbir.errors import CbirError

_WAS = "cbir.none_was"  # field metadata: what earlier versions wrote where None is now


def none_was(sentinel: Any) -> Any:
    """A field defaulting to None, read from `sentinel` too (what earlier versions wrote)."""
    return field(default=None, metadata={_WAS: sentinel})


class InvalidParameter(Exception):
    """Raised by `Params.validate`; the extractor turns it into a one-line CbirError."""

    def __init__(self, key: str, requirement: str) -> None:
        super().__init__(key, requirement)
        self.key, self.requirement = key, requirement


@dataclass(frozen=True, kw_only=True)
class Params:
    """Base of every parameter dataclass: no parameters, nothing to validate."""

    def validate(self) -> None:
        """Raise InvalidParameter for a value out of range; subclasses call super() first."""

    def require(self, ok: bool, key: str, requirement: str) -> None:
        if not ok:
            raise InvalidParameter(key, requirement)

    def require_range(self, key: str, minimum: float, maximum: float | None = None) -> None:
        value = getattr(self, key)
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        self.require(minimum <= value and (maximum is None or value <= maximum), key,
                     f"must be {bounds}")  # fmt: skip

    def require_choice(self, key: str, choices: tuple[str, ...], requirement: str = "") -> None:
        self.require(getattr(self, key) in choices, key,
                     requirement or f"must be one of {', '.join(choices)}")  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists), in declaration order."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}  # fmt: skip

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return cls().as_dict()

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def converted(cls, key: str, value: Any) -> Any:
        """`value` as field `key` holds it, or raise TypeError."""
        declared = next(f for f in fields(cls) if f.name == key)
        was = declared.metadata.get(_WAS, MISSING)
        if was is not MISSING and _same_value(value, was):
            return None
        return _convert(value, typing.get_type_hints(cls)[key])


@dataclass(frozen=True, kw_only=True)
class NetworkKnobs(Params):
    """How a network runs on this machine, never what it computes: images per forward pass
    and CPU threads."""

    batch_size: int = 64
    threads: int = 2

    def validate(self) -> None:
        self.require_range("batch_size", 1)
        self.require_range("threads", 1)


def build_params(
    extractor: str, params_type: type[Params], knobs_type: type[Params], values: dict
) -> tuple[Params, Params]:
    """(parameters, runtime knobs) from keyword arguments: unknown names, wrong types and
    values out of range raise a one-line CbirError that names the extractor."""
    valid = ", ".join(f"{key}={value!r}" for key, value in
                      {**params_type.defaults(), **knobs_type.defaults()}.items())  # fmt: skip
    unknown = sorted(set(values) - set(params_type.names()) - set(knobs_type.names()))
    if unknown:
        raise CbirError(
            f"unknown parameter(s) {', '.join(unknown)} for extractor {extractor!r}; "
            f"valid parameters (with defaults): {valid}"
        )
    built = []
    for kind in (params_type, knobs_type):
        mine = {}
        for key in kind.names():
            if key not in values:
                continue
            try:
                mine[key] = kind.converted(key, values[key])
            except TypeError as error:
                raise CbirError(
                    f"parameter {key}={values[key]!r} of extractor {extractor!r} must be of "
                    f"type {error}; valid parameters (with defaults): {valid}"
                ) from None
        built.append(validated(extractor, kind(**mine)))
    return built[0], built[1]


def validated(extractor: str, params: Params, check: Callable[[], None] | None = None) -> Params:
    """`params` once `check` (by default its `validate`) passes; else a one-line CbirError."""
    try:
        (check or params.validate)()
    except InvalidParameter as error:
        value = getattr(params, error.key)
        value = list(value) if isinstance(value, tuple) else value
        raise CbirError(
            f"parameter {error.key}={value!r} of extractor {extractor!r} {error.requirement}"
        ) from None
    return params


def comparable(params_type: type[Params], knobs_type: type[Params], values: dict) -> dict:
    """A params dict as a manifest holds it, written by this cbir or an earlier one (sentinels,
    "a,b" lists, runtime knobs among the parameters), in the form `as_dict` writes today:
    runtime knobs dropped, each known value converted (left as it is when it does not
    convert, or is unknown: the comparison then fails, as it should)."""
    knobs, out = set(knobs_type.names()), {}
    for key, value in values.items():
        if key in knobs:
            continue
        if key in params_type.names():
            with contextlib.suppress(TypeError):
                value = params_type.converted(key, value)
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _same_value(value: Any, sentinel: Any) -> bool:
    if isinstance(value, bool | np.bool_) or isinstance(value, str) != isinstance(sentinel, str):
        return False
    return bool(value == sentinel)


def _convert(value: Any, kind: Any) -> Any:
    """`value` as a plain Python value of the declared type `kind`, or raise TypeError with
    the type's name."""
    options = typing.get_args(kind)
    if type(None) in options:  # X | None
        if value is None:
            return None
        (kind,) = (option for option in options if option is not type(None))
        try:
            return _convert(value, kind)
        except TypeError as error:
            raise TypeError(f"{error} or None") from None
    if typing.get_origin(kind) is tuple:  # tuple[str, ...]: a list, or "a,b"
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise TypeError("list of str")
        return tuple(value)
    if kind is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
    elif isinstance(value, bool | np.bool_):  # bool is an int subclass, never a valid number
        pass
    elif kind is int:
        if isinstance(value, int | np.integer):
            return int(value)
    elif kind is float:
        if isinstance(value, int | float | np.integer | np.floating):
            return float(value)
    elif isinstance(value, kind):
        return value
    raise TypeError(kind.__name__)
