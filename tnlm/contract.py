"""Einsum contraction with plans computed once per (equation, shapes) and cached.

``tnlm.contract`` is opt_einsum's ``contract`` with a bounded cache of
``contract_expression`` objects, so that the path search (which can cost more than the
contraction for small operands) runs once per distinct equation and operand shapes.
``tnlm.contract_cost`` returns what a plan costs without running it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Any

import opt_einsum as oe

from ._types import Array

__all__ = ["contract", "contract_cost", "ContractionCost", "PATH_OPTIMIZERS", "clear_plan_cache"]

#: Names accepted by ``optimize=`` (opt_einsum's path optimisers).
PATH_OPTIMIZERS: tuple[str, ...] = tuple(
    sorted(set(oe.paths._PATH_OPTIONS.keys()) | {"auto", "auto-hq"})  # noqa: SLF001
)

_CACHE_SIZE = 512
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_lock = Lock()


@dataclass(frozen=True)
class ContractionCost:
    """The cost of a contraction plan.

    Attributes
    ----------
    flops : int
        Floating point operations (opt_einsum's count: multiply-adds counted as 2 where the
        contraction sums an index).
    largest_intermediate : int
        Number of elements of the largest intermediate tensor.
    path : tuple of tuple of int
        The pairwise contraction order (opt_einsum format).
    """

    flops: int
    largest_intermediate: int
    path: tuple[tuple[int, ...], ...]


def _check_optimize(optimize: Any) -> None:
    if isinstance(optimize, str) and optimize not in PATH_OPTIMIZERS:
        raise ValueError(
            f"unknown optimize={optimize!r}; expected one of {', '.join(PATH_OPTIMIZERS)} "
            "or an explicit path (list of index pairs)"
        )


def _key(eq: str, shapes: tuple[tuple[int, ...], ...], optimize: Any) -> tuple[Any, ...]:
    opt_key = optimize if isinstance(optimize, str) else tuple(map(tuple, optimize))
    return (eq.replace(" ", ""), shapes, opt_key)


def _expression(eq: str, shapes: tuple[tuple[int, ...], ...], optimize: Any) -> Any:
    _check_optimize(optimize)
    key = _key(eq, shapes, optimize)
    with _lock:
        expr = _cache.get(key)
        if expr is not None:
            _cache.move_to_end(key)
            return expr
    expr = oe.contract_expression(eq, *shapes, optimize=optimize)
    with _lock:
        _cache[key] = expr
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return expr


def clear_plan_cache() -> None:
    """Forget every cached contraction plan."""
    with _lock:
        _cache.clear()


def _shapes(arrays: tuple[Array, ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(d) for d in a.shape) for a in arrays)


def contract(eq: str, *arrays: Array, optimize: Any = "auto") -> Array:
    """Evaluate an einsum equation with a cached, FLOP-optimised contraction plan.

    Parameters
    ----------
    eq : str
        Einsum equation, e.g. ``"ij,jk->ik"``.
    *arrays : array
        Operands of any backend opt_einsum supports (numpy, torch, ...); the result is in the
        same backend, dtype and device, and autograd flows through torch operands.
    optimize : str or path, default "auto"
        An opt_einsum path optimiser name (see ``tnlm.PATH_OPTIMIZERS``) or an explicit path.

    Returns
    -------
    array
        The contraction.

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> a, b = np.ones((2, 3)), np.ones((3, 4))
    >>> tnlm.contract("ij,jk->ik", a, b).shape
    (2, 4)
    """
    return _expression(eq, _shapes(arrays), optimize)(*arrays)


def contract_cost(eq: str, *shapes: tuple[int, ...], optimize: Any = "auto") -> ContractionCost:
    """FLOP count, largest intermediate and path of a plan, without running it.

    Parameters
    ----------
    eq : str
        Einsum equation.
    *shapes : tuple of int
        One shape per operand.
    optimize : str or path, default "auto"

    Examples
    --------
    >>> import tnlm
    >>> tnlm.contract_cost("ij,jk->ik", (2, 3), (3, 4)).flops
    48
    """
    _check_optimize(optimize)
    shp = tuple(tuple(int(d) for d in s) for s in shapes)
    path, info = oe.contract_path(eq, *shp, optimize=optimize, shapes=True)
    return ContractionCost(
        flops=int(info.opt_cost),
        largest_intermediate=int(info.largest_intermediate),
        path=tuple(tuple(p) for p in path),
    )
