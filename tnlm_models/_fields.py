"""One validation mechanism for the config dataclasses, driven by their field types.

``check_fields(obj, bounds, label)`` walks the fields of a dataclass instance, checks each
value against the field's type annotation and stores the normalised value:

- ``int`` accepts Python and numpy integers (never ``bool``, never a float, even an integral
  one such as ``8.0``: a TOML/YAML value that should be an int must be written as one);
- ``float`` accepts real numbers (ints included, never ``bool``, never a string) and stores
  them as ``float``; the value must be finite;
- ``bool`` accepts only ``True``/``False`` (numpy's too);
- ``str`` accepts strings and ``os.PathLike`` (stored as ``str``);
- ``list[X]`` and ``tuple[X, ...]`` accept lists and tuples whose items are ``X``;
- ``dict`` accepts any mapping; ``None`` only where the annotation allows it.

A value of the wrong type is a ``TypeError`` naming the field, the expected type and the
value; a non-finite float or a value outside the field's ``Bounds`` is a ``ValueError``.
Cross-field rules (one field must divide another, ...) stay with the config class.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["POSITIVE", "PROBABILITY", "Bounds", "check_fields", "check_value"]


@dataclass(frozen=True)
class Bounds:
    """An interval of allowed numbers: ``lo`` and ``hi`` (None: unbounded), each closed
    unless ``lo_open``/``hi_open``.

    Examples
    --------
    >>> Bounds(0, 1, hi_open=True).describe("a float")
    'in [0, 1)'
    >>> Bounds(1).describe("an int")
    'an int >= 1'
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, v: float) -> bool:
        """Whether ``v`` lies in the interval."""
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self, kind: str) -> str:
        """``"in [lo, hi)"`` or ``"<kind> >= lo"`` (``kind``: "an int", "a float")."""
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo is not None:
            return f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        return kind


#: ints >= 1 (sizes, counts)
POSITIVE = Bounds(1)
#: a fraction or probability in [0, 1)
PROBABILITY = Bounds(0, 1, hi_open=True)


def _options(tp: Any) -> tuple[Any, ...]:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return typing.get_args(tp)
    return (tp,)


def _type_name(tp: Any) -> str:
    names = []
    for a in _options(tp):
        if a is type(None):
            names.append("None")
        elif typing.get_origin(a) is not None:
            names.append(str(a).replace("typing.", ""))
        else:
            names.append(getattr(a, "__name__", str(a)))
    return " or ".join(names)


class _NoMatch(Exception):
    pass


def _convert(value: Any, tp: Any) -> Any:
    """``value`` normalised to type ``tp``, or ``_NoMatch``."""
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _NoMatch
    is_bool = isinstance(value, bool | np.bool_)
    if tp is bool:
        if is_bool:
            return bool(value)
        raise _NoMatch
    if tp is int:
        if isinstance(value, numbers.Integral) and not is_bool:
            return int(value)
        raise _NoMatch
    if tp is float:
        if isinstance(value, numbers.Real) and not is_bool:
            return float(value)
        raise _NoMatch
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise _NoMatch
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _NoMatch
        item = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        items = [_convert(v, item) for v in value]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise _NoMatch
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _NoMatch


def check_value(name: str, value: Any, tp: Any, label: str, bounds: Bounds | None = None) -> Any:
    """Check one value against a type annotation (and bounds); return it normalised.

    Raises
    ------
    TypeError
        If ``value`` is not of type ``tp`` (the message names ``label``, ``name``, the
        expected type and the value).
    ValueError
        If a float is not finite or a number lies outside ``bounds``.
    """
    for option in _options(tp):
        try:
            out = _convert(value, option)
        except _NoMatch:
            continue
        break
    else:
        hint = ""
        if float in _options(tp) and isinstance(value, str):
            try:
                float(value)
                hint = (
                    " (write numbers without quotes; YAML reads 1e-3 without a decimal point "
                    "as text, write 1.0e-3)"
                )
            except ValueError:
                pass
        raise TypeError(
            f"{label} {name!r} must be {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}"
        )
    if isinstance(out, float) and not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {out!r}")
    if bounds is not None and isinstance(out, int | float) and not isinstance(out, bool):
        if not bounds.contains(out):
            kind = "an int" if isinstance(out, int) else "a number"
            none = "None or " if type(None) in _options(tp) else ""
            raise ValueError(f"{name} must be {none}{bounds.describe(kind)}, got {out!r}")
    return out


def check_fields(obj: Any, bounds: Mapping[str, Bounds], label: str) -> None:
    """Check and normalise every field of the dataclass instance ``obj`` in place.

    Parameters
    ----------
    obj : dataclass instance
    bounds : mapping of field name to Bounds
        Numeric ranges; fields not named have none.
    label : str
        How the message names a field, e.g. ``"training config key"``.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     n: int = 1
    ...     x: float = 0.5
    >>> c = C(n=True)
    >>> check_fields(c, {"n": Bounds(1)}, "field")
    Traceback (most recent call last):
    ...
    TypeError: field 'n' must be int, got bool True
    >>> c = C(n=3, x=2)
    >>> check_fields(c, {}, "field"); c.x
    2.0
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = check_value(f.name, getattr(obj, f.name), hints[f.name], label, bounds.get(f.name))
        setattr(obj, f.name, value)
