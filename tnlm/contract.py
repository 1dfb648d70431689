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

import numpy as np
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


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _check_optimize(optimize: Any) -> None:
    """The kind of ``optimize`` (a known name, or a list of index tuples); checked on every
    call, since the cache key is built from it."""
    if isinstance(optimize, str):
        if optimize not in PATH_OPTIMIZERS:
            raise ValueError(
                f"unknown optimize={optimize!r}; expected one of {', '.join(PATH_OPTIMIZERS)} "
                "or an explicit path (list of index pairs)"
            )
        return
    if not isinstance(optimize, (list, tuple)) or not all(
        isinstance(step, (list, tuple)) and step and all(_is_int(i) for i in step)
        for step in optimize
    ):
        raise TypeError(
            f"optimize must be a path optimiser name ({', '.join(PATH_OPTIMIZERS)}) or an "
            f"explicit path (a list of tuples of operand indices); got {optimize!r}"
        )


def _check_path(path: Any, n_operands: int) -> None:
    """Every step of an explicit path names distinct operands that exist at that step."""
    count = n_operands
    for k, step in enumerate(path):
        if len(set(step)) != len(step) or not all(0 <= int(i) < count for i in step):
            raise ValueError(
                f"optimize path step {k} {tuple(step)!r} is invalid: expected distinct operand "
                f"indices in [0, {count}) (the operands left after the earlier steps)"
            )
        count -= len(step) - 1


def _check_equation(eq: str, shapes: tuple[tuple[int, ...], ...]) -> None:
    """``eq`` against the operand shapes: one term per operand, one axis per label (an
    ellipsis standing for any number), equal sizes (or 1) for a repeated label, and output
    labels that occur in the inputs, once each."""
    lhs, arrow, out = eq.replace(" ", "").partition("->")
    if "->" in out:
        raise ValueError(f"equation {eq!r} has more than one '->'; expected 'inputs->output'")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(
            f"equation {eq!r} has {len(terms)} operand term(s) but {len(shapes)} operand(s) "
            "were given; expected one array per comma-separated term"
        )
    sizes: dict[str, tuple[int, int]] = {}
    for k, (term, shape) in enumerate(zip(terms, shapes)):
        pre, ellipsis, post = term.partition("...")
        n_named = len(pre) + len(post)
        if (len(shape) < n_named) if ellipsis else (len(shape) != n_named):
            more = " or more" if ellipsis else ""
            raise ValueError(
                f"operand {k} has shape {shape} ({len(shape)} axes) but the term {term!r} of "
                f"equation {eq!r} names {n_named}{more} axes"
            )
        named = list(zip(pre, shape)) + list(zip(post, shape[len(shape) - len(post) :]))
        for label, d in named:
            seen = sizes.get(label)
            if seen is None or seen[0] == 1:
                sizes[label] = (d, k)
            elif d not in (1, seen[0]):
                raise ValueError(
                    f"label {label!r} of equation {eq!r} has size {d} in operand {k} (shape "
                    f"{shape}) but {seen[0]} in operand {seen[1]}; expected equal sizes (or 1)"
                )
    if arrow:
        labels = out.replace("...", "")
        for label in labels:
            if label not in sizes:
                raise ValueError(
                    f"output label {label!r} of equation {eq!r} is not in any input term"
                )
            if labels.count(label) > 1:
                raise ValueError(f"output label {label!r} of equation {eq!r} appears twice")


def _key(eq: str, shapes: tuple[tuple[int, ...], ...], optimize: Any) -> tuple[Any, ...]:
    opt_key = optimize if isinstance(optimize, str) else tuple(map(tuple, optimize))
    return (eq.replace(" ", ""), shapes, opt_key)


def _check_eq_type(eq: Any) -> None:
    if not isinstance(eq, str):
        raise TypeError(
            f"eq must be an einsum equation string such as 'ij,jk->ik'; got {type(eq).__name__}"
        )


def _expression(eq: str, shapes: tuple[tuple[int, ...], ...], optimize: Any) -> Any:
    _check_eq_type(eq)
    _check_optimize(optimize)
    key = _key(eq, shapes, optimize)
    with _lock:
        expr = _cache.get(key)
        if expr is not None:
            _cache.move_to_end(key)
            return expr
    # a new plan: check the equation and path once, here, not on every cached call
    _check_equation(eq, shapes)
    if not isinstance(optimize, str):
        _check_path(optimize, len(shapes))
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
    try:
        return tuple(tuple(int(d) for d in a.shape) for a in arrays)
    except (AttributeError, TypeError):
        pass
    for k, a in enumerate(arrays):
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            raise TypeError(
                f"operand {k} is a {type(a).__name__}; expected an array (numpy, torch, ...)"
            ) from None
    raise TypeError("operand shapes must be tuples of ints")  # pragma: no cover


def _check_operands(arrays: tuple[Array, ...]) -> None:
    for k, a in enumerate(arrays):
        if isinstance(a, np.matrix):
            raise TypeError(
                f"operand {k} is a numpy.matrix; expected a numpy.ndarray: pass np.asarray(...)"
            )


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
        An opt_einsum path optimiser name (see ``tnlm.PATH_OPTIMIZERS``) or an explicit path
        (a list of tuples of operand indices, as ``ContractionCost.path``).

    Returns
    -------
    array
        The contraction.

    Raises
    ------
    TypeError
        ``eq`` is not a string, an operand is not an array (or is an ``np.matrix``), or
        ``optimize`` is neither a known name nor a list of index tuples.
    ValueError
        The equation does not fit the operands (number of terms, axes per term, sizes of a
        repeated label, output labels), ``optimize`` is an unknown name, or a path step names
        operands that do not exist. Checked once per new (equation, shapes, optimize) plan.

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> a, b = np.ones((2, 3)), np.ones((3, 4))
    >>> tnlm.contract("ij,jk->ik", a, b).shape
    (2, 4)
    """
    shapes = _shapes(arrays)
    _check_operands(arrays)
    return _expression(eq, shapes, optimize)(*arrays)


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
    _check_eq_type(eq)
    _check_optimize(optimize)
    shp = []
    for k, s in enumerate(shapes):
        try:
            dims = tuple(s)
        except TypeError:
            dims = None
        if dims is None or not all(_is_int(d) and d >= 0 for d in dims):
            raise TypeError(f"shape {k} must be a tuple of non-negative ints; got {s!r}")
        shp.append(tuple(int(d) for d in dims))
    _check_equation(eq, tuple(shp))
    if not isinstance(optimize, str):
        _check_path(optimize, len(shp))
    path, info = oe.contract_path(eq, *shp, optimize=optimize, shapes=True)
    return ContractionCost(
        flops=int(info.opt_cost),
        largest_intermediate=int(info.largest_intermediate),
        path=tuple(tuple(p) for p in path),
    )
