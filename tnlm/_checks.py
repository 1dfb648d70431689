"""Validation of user input, with messages that name the value and what was expected."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backend as B
from ._types import Array, BondDim

__all__ = [
    "check_array",
    "check_array_type",
    "check_bond_dims",
    "check_tol",
    "check_dims",
    "check_int",
]


def check_array_type(x: Any, name: str) -> None:
    """``TypeError`` unless ``x`` is an array (it has ``shape`` and ``dtype``).

    ``numpy.matrix`` is refused rather than converted: it keeps every result 2-D and makes
    ``*`` a matrix product, so it cannot stand for a core, a vector or a tensor, and a silent
    ``np.asarray`` would hand back a different type than the caller passed in. The message
    says how to convert it.
    """
    if isinstance(x, np.matrix):
        raise TypeError(
            f"{name} is a numpy.matrix; expected a numpy.ndarray (np.matrix keeps results 2-D "
            f"and makes * a matrix product): pass np.asarray({name})"
        )
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array (numpy, torch, ...); got {type(x).__name__}")


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python int: any integer scalar (``int``, ``np.int64``, a 0-d integer
    tensor, ...); ``bool`` and floats (even integral ones) raise ``TypeError``. With ``low``
    and/or ``high``, the value must lie in ``[low, high)`` (``ValueError`` otherwise)."""
    if low is not None and high is not None:
        expected = f"an int in [{low}, {high})"
    elif low is not None:
        expected = f"an int >= {low}"
    else:
        expected = "an int"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be {expected}; got the bool {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name} must be {expected}; got {value!r} ({type(value).__name__})"
        ) from None
    if (low is not None and out < low) or (high is not None and out >= high):
        raise ValueError(f"{name} must be {expected}; got {out}")
    return out


def check_array(x: Array, name: str, ndim: int | None = None) -> float:
    """Floating/complex dtype, expected ndim, non-empty, finite; returns ``||x||_F`` (the
    finiteness check and the norm share one pass over the data)."""
    check_array_type(x, name)
    if ndim is not None and len(x.shape) != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D; got a {len(x.shape)}-D array of shape {tuple(x.shape)}"
        )
    B.check_float_dtype(x, name)
    if any(int(d) == 0 for d in x.shape):
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); expected no zero-size axis")
    sq = B.sq_norm(x)  # finite unless an entry is NaN/Inf (or float64 squares overflow)
    if not math.isfinite(sq) and not B.all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf entries; expected finite values only")
    norm = math.sqrt(sq)
    if not 2.0**-480 < norm < 2.0**480:  # the sum of squares may have over/underflowed
        norm = B.fnorm(x)  # rescaled by the largest entry
    return norm


def check_dims(dims: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        out = tuple(dims)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive ints; got {dims!r}") from None
    if not out or any(
        isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in out
    ):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints; got {dims!r}")
    return tuple(int(d) for d in out)


def check_bond_dims(bond_dim: BondDim, n_bonds: int) -> list[int | None]:
    """Normalise ``bond_dim`` to one cap (or None) per internal bond."""
    if bond_dim is None:
        return [None] * n_bonds
    if isinstance(bond_dim, numbers.Integral) and not isinstance(bond_dim, bool):
        if bond_dim < 1:
            raise ValueError(f"bond_dim must be >= 1; got {bond_dim}")
        return [int(bond_dim)] * n_bonds
    try:
        caps = list(bond_dim)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"bond_dim must be None, an int or a sequence of {n_bonds} ints; got {bond_dim!r}"
        ) from None
    if len(caps) != n_bonds:
        raise ValueError(
            f"bond_dim has {len(caps)} entries; expected one per internal bond ({n_bonds})"
        )
    out: list[int | None] = []
    for c in caps:
        if c is None:
            out.append(None)
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 1:
            out.append(int(c))
        else:
            raise ValueError(f"bond_dim entries must be ints >= 1 (or None); got {c!r}")
    return out


def check_tol(tol: float | None) -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a float in (0, 1); got {tol!r}")
    if not 0.0 < float(tol) < 1.0:
        raise ValueError(f"tol must lie in the open interval (0, 1); got {tol}")
    return float(tol)
