"""How to apply an MPO to a batch of vectors: through the cores, or rebuild ``W`` then GEMM.

One planner answers this question for :meth:`tnlm.MPO.apply` and for the model layer
(``tnlm_models.MPOLinear``); the calibration of the cost model lives here, once
(:class:`CostModel`, documented in ``docs/theory.md``, Section 6).

::

    cores:  x ──[W_1]──[W_2]── ... ──[W_n]── y      contract x through the cores
    dense:  W = W_1 W_2 ... W_n;  y = W x           rebuild W, then one GEMM

The decision depends only on the core shapes, the number of vectors, the rank of an additive
low-rank adapter, the rebuild's FLOP count and the cost model, and it is cached on exactly
those (``functools.lru_cache``): a different :class:`CostModel` is a different key, so changing
the calibration takes effect at once.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import opt_einsum as oe

from ._checks import check_int
from ._tt_ops import dense_equation
from .contract import contract_cost

__all__ = ["CostModel", "DEFAULT_COST_MODEL", "ApplyPlan", "plan_apply", "apply_equation"]


@dataclass(frozen=True)
class CostModel:
    """The weights that turn the two FLOP counts into comparable costs.

    "cores" is chosen when ``cores_flop_weight * cores_flops`` is below
    ``dense_flops + dense_element_cost * I * J`` (``I x J`` is the shape of ``W``).

    Attributes
    ----------
    cores_flop_weight : float, default 3.0
        The input contraction is a chain of small permuted tensor products that run at a
        fraction of a large GEMM's FLOP rate, so its FLOPs count this many times.
    dense_element_cost : float, default 600.0
        FLOP-equivalents charged per element of ``W`` that the dense path materialises
        (memory-bound passes: writing and permuting ``W``, the adapter update and, when
        training, its gradient), on top of the rebuild's and the GEMM's FLOPs.

    Both were calibrated on a 2-core x86 CPU (``docs/benchmarks.md``; ``docs/theory.md``,
    Section 6). Instances are immutable and hashable: they are part of the planner's cache key.

    Examples
    --------
    >>> CostModel()
    CostModel(cores_flop_weight=3.0, dense_element_cost=600.0)
    >>> CostModel(cores_flop_weight=0.0)
    Traceback (most recent call last):
    ...
    ValueError: cores_flop_weight must be a finite number > 0; got 0.0
    """

    cores_flop_weight: float = 3.0
    dense_element_cost: float = 600.0

    def __post_init__(self) -> None:
        for name, low_ok in (("cores_flop_weight", False), ("dense_element_cost", True)):
            value = getattr(self, name)
            bound = ">= 0" if low_ok else "> 0"
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(
                    f"{name} must be a finite number {bound}; got {type(value).__name__} {value!r}"
                )
            number = float(value)
            if not math.isfinite(number) or number < 0 or (number == 0 and not low_ok):
                raise ValueError(f"{name} must be a finite number {bound}; got {value!r}")
            object.__setattr__(self, name, number)


#: The calibration used when no ``cost_model`` is given (by ``MPO.apply`` and ``MPOLinear``).
DEFAULT_COST_MODEL = CostModel()


@dataclass(frozen=True)
class ApplyPlan:
    """The planner's answer for one (structure, batch, adapter, rebuild, cost model).

    Attributes
    ----------
    method : {"cores", "dense"}
        The cheaper way under ``cost_model``.
    cores_flops : int
        FLOPs of contracting the batch through the cores in the FLOP-optimal order (plus
        ``2 B r (I + J)`` for an adapter of rank ``r``).
    dense_flops : int
        FLOPs of rebuilding ``W`` (plus ``2 r I J`` for the adapter) and the GEMM ``2 I J B``.
    cores_cost, dense_cost : float
        ``cores_flop_weight * cores_flops`` and ``dense_flops + dense_element_cost * I * J``.
    equation : str
        The einsum of the cores path, operands ``(W_1, ..., W_n, x)`` (see
        :func:`apply_equation`).
    path : tuple of tuple of int
        opt_einsum's FLOP-optimal pairwise order for ``equation`` (pass as ``optimize=``).
    cost_model : CostModel
        The calibration the choice was made with.
    """

    method: str
    cores_flops: int
    dense_flops: int
    cores_cost: float
    dense_cost: float
    equation: str
    path: tuple[tuple[int, ...], ...]
    cost_model: CostModel


@functools.lru_cache(maxsize=64)
def apply_equation(n_cores: int, *, batch_first: bool = False) -> str:
    """The einsum of ``y = W x`` through ``n_cores`` cores, operands ``(W_1, ..., W_n, x)``.

    Cores have tnlm's layout ``(r_left, row, col, r_right)``. With ``batch_first=False`` the
    vectors are columns: ``x`` is ``(j_1, ..., j_n, B)`` and ``y`` is ``(i_1, ..., i_n, B)``
    (``MPO.apply``); with ``batch_first=True`` they are rows: ``x`` is ``(B, j_1, ..., j_n)``
    and ``y`` is ``(B, i_1, ..., i_n)`` (``nn.Linear``'s layout). The boundary bonds (size 1)
    are summed. Symbols come from ``opt_einsum.get_symbol``, so any number of cores works.

    Examples
    --------
    >>> apply_equation(2)
    'adfb,begc,fgh->deh'
    >>> apply_equation(2, batch_first=True)
    'adfb,begc,hfg->hde'
    """
    n = check_int(n_cores, "n_cores", low=1)
    sym = oe.get_symbol
    bond = [sym(k) for k in range(n + 1)]
    rows = "".join(sym(n + 1 + k) for k in range(n))
    cols = "".join(sym(2 * n + 1 + k) for k in range(n))
    batch = sym(3 * n + 1)
    cores = ",".join(bond[k] + rows[k] + cols[k] + bond[k + 1] for k in range(n))
    if batch_first:
        return f"{cores},{batch}{cols}->{batch}{rows}"
    return f"{cores},{cols}{batch}->{rows}{batch}"


def _check_core_shapes(core_shapes: Any) -> tuple[tuple[int, int, int, int], ...]:
    """``core_shapes`` as a tuple of 4-tuples of positive ints forming a valid MPO."""
    try:
        shapes = [tuple(s) for s in core_shapes]
    except TypeError:
        raise TypeError(
            "core_shapes must be a sequence of (r_left, row, col, r_right) shapes; got "
            f"{core_shapes!r}"
        ) from None
    if not shapes:
        raise ValueError("core_shapes is empty; expected at least one core shape")
    out = []
    for k, s in enumerate(shapes):
        if len(s) != 4 or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and int(d) >= 1 for d in s
        ):
            raise ValueError(
                f"core_shapes[{k}] is {s!r}; expected (r_left, row, col, r_right), four ints >= 1"
            )
        out.append((int(s[0]), int(s[1]), int(s[2]), int(s[3])))
    if out[0][0] != 1 or out[-1][3] != 1:
        raise ValueError(f"boundary ranks must be 1; got r_0 = {out[0][0]} and r_n = {out[-1][3]}")
    for k in range(len(out) - 1):
        if out[k][3] != out[k + 1][0]:
            raise ValueError(
                f"core_shapes[{k}] has r_right = {out[k][3]} but core_shapes[{k + 1}] has "
                f"r_left = {out[k + 1][0]}; expected matching bonds"
            )
    return tuple(out)


def plan_apply(
    core_shapes: Sequence[Sequence[int]],
    batch: int,
    *,
    adapter_rank: int = 0,
    rebuild_flops: int | None = None,
    batch_first: bool = False,
    cost_model: CostModel | None = None,
) -> ApplyPlan:
    """Choose between contracting ``batch`` vectors through the cores and rebuild-then-GEMM.

    Parameters
    ----------
    core_shapes : sequence of (r_left, row, col, r_right)
        The MPO's core shapes (``W`` has shape ``(prod(row), prod(col))``, ``I x J``).
    batch : int >= 1
        Number of vectors ``B`` (1 for a single vector).
    adapter_rank : int >= 0, default 0
        Rank ``r`` of an additive adapter ``up @ down`` (``MPOLinear``): the dense path adds
        it to ``W`` (``2 r I J``), the cores path applies it to the batch (``2 B r (I + J)``).
    rebuild_flops : int >= 0, optional
        FLOPs of the caller's rebuild of ``W``; default: opt_einsum's FLOP-optimal order, as
        ``MPO.to_dense`` contracts.
    batch_first : bool, default False
        Layout of the batch in ``equation`` (see :func:`apply_equation`); not in the costs.
    cost_model : CostModel, optional
        Default :data:`DEFAULT_COST_MODEL`, read at call time.

    Returns
    -------
    ApplyPlan
        Cached per distinct argument tuple (the cost model included).

    References
    ----------
    D. G. A. Smith and J. Gray, "opt_einsum - A Python package for optimizing contraction
    order for einsum-like expressions", *JOSS* 3(26), 753, 2018 (the path and FLOP counts).

    Examples
    --------
    >>> shapes = [(1, 2, 3, 4), (4, 5, 6, 1)]              # W is 10 x 18, bond 4
    >>> plan = plan_apply(shapes, 1)
    >>> plan.method, plan.cores_flops, plan.dense_flops
    ('cores', 768, 1800)
    >>> plan_apply(shapes, 1, cost_model=CostModel(1000.0, 0.0)).method
    'dense'
    """
    shapes = _check_core_shapes(core_shapes)
    b = check_int(batch, "batch", low=1)
    r = check_int(adapter_rank, "adapter_rank", low=0)
    rebuild = None if rebuild_flops is None else check_int(rebuild_flops, "rebuild_flops", low=0)
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first must be a bool; got {type(batch_first).__name__}")
    model = DEFAULT_COST_MODEL if cost_model is None else cost_model
    if not isinstance(model, CostModel):
        raise TypeError(
            f"cost_model must be a tnlm.planning.CostModel or None; got {type(model).__name__}"
        )
    return _plan(shapes, b, r, rebuild, batch_first, model)


@functools.lru_cache(maxsize=1024)
def _plan(
    shapes: tuple[tuple[int, int, int, int], ...],
    batch: int,
    adapter_rank: int,
    rebuild_flops: int | None,
    batch_first: bool,
    model: CostModel,
) -> ApplyPlan:
    """The plan, memoised on every argument (path search is not free)."""
    n = len(shapes)
    rows = math.prod(s[1] for s in shapes)
    cols = math.prod(s[2] for s in shapes)
    col_dims = tuple(s[2] for s in shapes)
    eq = apply_equation(n, batch_first=batch_first)
    x_shape = (batch, *col_dims) if batch_first else (*col_dims, batch)
    cores = contract_cost(eq, *shapes, x_shape)
    if rebuild_flops is None:
        rebuild_flops = contract_cost(dense_equation(n, legs=2), *shapes).flops
    cores_flops = cores.flops + 2 * batch * adapter_rank * (rows + cols)
    dense_flops = rebuild_flops + 2 * adapter_rank * rows * cols + 2 * rows * cols * batch
    cores_cost = model.cores_flop_weight * cores_flops
    dense_cost = dense_flops + model.dense_element_cost * rows * cols
    return ApplyPlan(
        method="cores" if cores_cost < dense_cost else "dense",
        cores_flops=cores_flops,
        dense_flops=dense_flops,
        cores_cost=cores_cost,
        dense_cost=dense_cost,
        equation=eq,
        path=cores.path,
        cost_model=model,
    )
