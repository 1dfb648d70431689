"""``MPOLinear``: a linear layer whose weight is a matrix product operator.

The weight ``W`` of shape ``(out_features, in_features)`` (``nn.Linear``'s layout,
``y = x @ W.T + b``) is held as ``n`` cores; core ``k`` has shape
``(r_{k-1}, out_k, in_k, r_k)`` with ``r_0 = r_n = 1``, ``prod(out_k) = out_features`` and
``prod(in_k) = in_features``::

         out_1      out_2      out_3          (rows of W: output features)
           |          |          |
    1 --[core0]--r1--[central]--r2--[core2]-- 1
           |          |          |
         in_1       in_2       in_3           (columns of W: input features)

The core at index ``n // 2`` is the *central tensor*; it may be a parameter shared with other
layers (MPOBERT). An optional low-rank adapter ``up @ down`` (rank ``adapter_size``, ``up``
zero at initialisation) is added to the weight.

The layout is ``tnlm.MPO``'s (rows = outputs, columns = inputs): ``layer.to_mpo()`` is the
cores as a ``tnlm.MPO`` over the parameters themselves (for tnlm's analysis, compression and
I/O), and ``MPOLinear.from_mpo(mpo)`` builds a layer from one.

The forward pass chooses, by FLOP count for the actual number of input rows, between
rebuilding ``W`` and doing one GEMM ("dense") or contracting the input through the cores
("cores"). tnlm's planner (``tnlm.planning.plan_apply``, the one ``tnlm.MPO.apply`` uses)
makes the choice and builds the contraction; it caches both on the layer's structure, the row
count and the cost model.
"""

from __future__ import annotations

import functools
import math
import string
import warnings
from collections.abc import Sequence
from typing import Any, cast

import opt_einsum
import torch
import torch.nn.functional as F
from torch import nn

import tnlm
from tnlm.planning import DEFAULT_COST_MODEL, ApplyPlan, CostModel, plan_apply

from ._fields import Bounds, check_value
from .config import FORWARD_MODES, auto_factorize, check_factorization

__all__ = ["MPOLinear", "full_bond_dims", "rebuild_weights"]


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast computes in on ``device_type`` now, or None when it is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None
    if device_type == "cpu":  # pragma: no cover - older torch
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return (
        torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    )  # pragma: no cover


def full_bond_dims(
    out_dims: Sequence[int],
    in_dims: Sequence[int],
    bond_dim: int | Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Bond dimensions ``(r_0, ..., r_n)`` of an MPO with the given factorisation:
    :func:`tnlm.full_bond_dims` (the rule ``tnlm.shared_mpo_decompose`` uses too).

    Examples
    --------
    >>> full_bond_dims((2, 2, 2), (2, 2, 2), (3, 100))
    (1, 3, 4, 1)
    """
    return tnlm.full_bond_dims(out_dims, in_dims, cast(Any, bond_dim))


def _check_bond_dim(bond_dim: Any, num_cores: int) -> int | tuple[int, ...] | None:
    """``bond_dim`` checked: None, an int >= 1, or ``num_cores - 1`` ints >= 1."""
    bond_dim = check_value(
        "bond_dim", bond_dim, int | tuple[int, ...] | None, "MPOLinear argument", Bounds(1)
    )
    if isinstance(bond_dim, tuple):
        if len(bond_dim) != num_cores - 1:
            raise ValueError(
                f"bond_dim has {len(bond_dim)} caps {bond_dim}, expected one per internal "
                f"bond: {num_cores - 1} for {num_cores} cores"
            )
        for k, r in enumerate(bond_dim):
            if r < 1:
                raise ValueError(f"bond_dim[{k}] must be an int >= 1, got {r!r}")
    return cast("int | tuple[int, ...] | None", bond_dim)


def _isometry(
    rows: int, cols: int, generator: torch.Generator | None, dtype: Any, device: Any
) -> torch.Tensor:
    """A random ``(rows, cols)`` matrix with orthonormal columns (rows >= cols) or rows."""
    tall = rows >= cols
    a = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)  # (max, min)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    q = q if tall else q.T
    return q.to(dtype=dtype, device=device)


class MPOLinear(nn.Module):
    """A linear layer ``y = x @ W.T + b`` with ``W`` stored as MPO cores.

    Parameters
    ----------
    in_features, out_features : int
        Dimensions of the layer, as for ``nn.Linear``.
    out_dims, in_dims : sequence of int, optional
        Factorisations of ``out_features`` and ``in_features`` (same length ``n``); default
        ``auto_factorize(dim, num_cores)``.
    num_cores : int, default 5
        ``n`` when the factorisations are automatic.
    bond_dim : int or sequence of int, optional
        Cap on every internal bond, or ``n - 1`` caps, one per bond (None: full rank, i.e.
        any matrix is representable). ``bond_dims`` holds the resulting dimensions.
    bias : bool, default True
    central : nn.Parameter, optional
        A central tensor of shape ``(r_c, out_c, in_c, r_{c+1})`` (``c = n // 2``) to share
        with other layers. It is registered as this module's ``central`` parameter (same
        object, same storage).
    adapter_size : int, default 0
        Rank of the additive low-rank adapter ``up @ down`` (``up`` zero-initialised).
    forward_mode : {"auto", "dense", "cores"}
        "dense" rebuilds ``W`` and does one GEMM; "cores" contracts the input through the
        cores; "auto" picks the cheaper one for the input's row count, by FLOP counts
        weighted by ``cost_model`` (``tnlm.planning.plan_apply``).
    std : float, default 0.02
        Target standard deviation of the rebuilt weight (see ``reset_parameters``).
    initialize : bool, default True
        Call ``reset_parameters(std)``; False leaves the parameters zero for the owner to
        initialise (models do this in ``init_weights``).

    Examples
    --------
    >>> import torch
    >>> lin = MPOLinear(16, 8, num_cores=2)
    >>> lin(torch.randn(3, 16)).shape
    torch.Size([3, 8])
    """

    #: How "auto" weighs the two FLOP counts: a ``tnlm.planning.CostModel``, or None for
    #: ``tnlm.planning.DEFAULT_COST_MODEL`` (read at call time; the calibration
    #: ``tnlm.MPO.apply`` uses, docs/theory.md Section 6). Set it per instance or subclass;
    #: the choice is cached on it, so a new model takes effect at the next forward.
    cost_model: CostModel | None = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        out_dims: Sequence[int] | None = None,
        in_dims: Sequence[int] | None = None,
        num_cores: int = 5,
        bond_dim: int | Sequence[int] | None = None,
        bias: bool = True,
        central: nn.Parameter | None = None,
        adapter_size: int = 0,
        forward_mode: str = "auto",
        std: float = 0.02,
        initialize: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if forward_mode not in FORWARD_MODES:
            raise ValueError(
                f"unknown forward_mode {forward_mode!r}; expected one of {', '.join(FORWARD_MODES)}"
            )
        in_features, out_features, num_cores, adapter_size = (
            check_value(name, value, int, "MPOLinear argument", Bounds(low))
            for name, value, low in (
                ("in_features", in_features, 1),
                ("out_features", out_features, 1),
                ("num_cores", num_cores, 1),
                ("adapter_size", adapter_size, 0),
            )
        )
        self.in_features = in_features
        self.out_features = out_features
        out_dims, in_dims = check_factorization(
            out_dims if out_dims is not None else auto_factorize(self.out_features, num_cores),
            in_dims if in_dims is not None else auto_factorize(self.in_features, num_cores),
            "MPOLinear factorisation",
        )
        if math.prod(out_dims) != out_features or math.prod(in_dims) != in_features:
            raise ValueError(
                f"factorisation ({out_dims}, {in_dims}) multiplies to "
                f"({math.prod(out_dims)}, {math.prod(in_dims)}), expected "
                f"(out_features={out_features}, in_features={in_features})"
            )
        self.out_dims, self.in_dims = out_dims, in_dims
        self.num_cores = len(out_dims)
        self.central_index = self.num_cores // 2
        bond_dim = _check_bond_dim(bond_dim, self.num_cores)
        self.bond_dim = bond_dim
        self.bond_dims = full_bond_dims(out_dims, in_dims, bond_dim)
        self.forward_mode = forward_mode
        if central is not None:  # the layer's other parameters are made like the shared one
            if dtype is not None and dtype != central.dtype:
                raise ValueError(
                    f"shared central tensor has dtype {central.dtype}, but the layer was asked "
                    f"for dtype={dtype}; expected the same dtype"
                )
            if device is not None and torch.device(device) != central.device:
                raise ValueError(
                    f"shared central tensor is on {central.device}, but the layer was asked "
                    f"for device={device}; expected the same device"
                )
            dtype, device = central.dtype, central.device
        factory = {"device": device, "dtype": dtype}
        for k in range(self.num_cores):
            shape = self.core_shape(k)
            if k == self.central_index and central is not None:
                if tuple(central.shape) != shape:
                    raise ValueError(
                        f"shared central tensor has shape {tuple(central.shape)}, expected {shape}"
                    )
                self.central = central
            else:
                p = nn.Parameter(torch.empty(shape, **factory))
                self.register_parameter(self.core_name(k), p)
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        self.adapter_size = int(adapter_size)
        self.adapter_down: nn.Parameter | None = None
        self.adapter_up: nn.Parameter | None = None
        if self.adapter_size:
            self.adapter_down = nn.Parameter(torch.empty(self.adapter_size, in_features, **factory))
            self.adapter_up = nn.Parameter(torch.zeros(out_features, self.adapter_size, **factory))
        if initialize:
            self.reset_parameters(std, init_central=central is None)
        else:  # the owner (e.g. a model's init_weights) initialises; keep memory defined
            with torch.no_grad():
                for p in self.parameters(recurse=False):
                    if p is not central:
                        p.zero_()

    # ------------------------------------------------------------------ structure
    def core_name(self, k: int) -> str:
        """Parameter name of core ``k`` ("central" for the central one, else "core{k}")."""
        return "central" if k == self.central_index else f"core{k}"

    def core_shape(self, k: int) -> tuple[int, int, int, int]:
        """``(r_{k}, out_k, in_k, r_{k+1})`` of core ``k``."""
        r = self.bond_dims
        return (r[k], self.out_dims[k], self.in_dims[k], r[k + 1])

    @property
    def cores(self) -> list[torch.Tensor]:
        """The ``n`` cores, in order, each ``(r_left, out_k, in_k, r_right)``."""
        return [getattr(self, self.core_name(k)) for k in range(self.num_cores)]

    def auxiliary_parameters(self) -> list[torch.Tensor]:
        """The non-central cores."""
        return [c for k, c in enumerate(self.cores) if k != self.central_index]

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"out_dims={self.out_dims}, in_dims={self.in_dims}, bond_dims={self.bond_dims}, "
            f"adapter_size={self.adapter_size}, forward_mode={self.forward_mode!r}"
        )

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(
        self,
        std: float = 0.02,
        *,
        init_central: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        """Initialise the cores so that the rebuilt weight has standard deviation ``std``.

        Cores left of the centre are random left-orthonormal isometries
        (``core.reshape(r_l * out_k * in_k, r_r)`` has orthonormal columns), cores right of
        it right-orthonormal, so the map from the central tensor to ``W`` preserves the
        Frobenius norm. The central tensor is Gaussian with std
        ``std * sqrt(out * in / central.numel())``, hence
        ``E ||W||_F^2 = std^2 * out * in``. At full bond dimension the map is orthogonal and
        ``W`` is exactly i.i.d. ``N(0, std^2)``; with a bond cap the mean entry variance is
        ``std^2``. The bias is zero, ``adapter_down`` is ``N(0, std^2)`` and
        ``adapter_up`` zero (the adapter starts as the zero matrix).
        """
        dtype, device = self.core0_like().dtype, self.core0_like().device
        c = self.central_index
        for k in range(self.num_cores):
            if k == c:
                continue
            r_l, o, i, r_r = self.core_shape(k)
            if k < c:
                q = _isometry(r_l * o * i, r_r, generator, dtype, device)  # (r_l*o*i, r_r)
            else:
                q = _isometry(r_l, o * i * r_r, generator, dtype, device)  # (r_l, o*i*r_r)
            getattr(self, self.core_name(k)).copy_(q.reshape(r_l, o, i, r_r))
        if init_central:
            central = self.central
            std_c = std * math.sqrt(self.out_features * self.in_features / central.numel())
            central.copy_(
                torch.randn(central.shape, generator=generator, dtype=torch.float64).to(
                    dtype=dtype, device=device
                )
                * std_c
            )
        if self.bias is not None:
            self.bias.zero_()
        if self.adapter_down is not None and self.adapter_up is not None:
            self.adapter_down.copy_(
                torch.randn(self.adapter_down.shape, generator=generator, dtype=torch.float64).to(
                    dtype=dtype, device=device
                )
                * std
            )
            self.adapter_up.zero_()

    def core0_like(self) -> torch.Tensor:
        """A parameter of this module (for dtype/device)."""
        return getattr(self, self.core_name(0))

    @torch.no_grad()
    def set_cores(self, cores: Sequence[Any], *, include_central: bool = True) -> None:
        """Copy ``cores`` (layout ``(r_l, out_k, in_k, r_r)``) into the parameters.

        Raises
        ------
        ValueError
            If the number of cores or a core's shape differs from this layer's.
        """
        if len(cores) != self.num_cores:
            raise ValueError(f"expected {self.num_cores} cores, got {len(cores)}")
        for k, core in enumerate(cores):
            if k == self.central_index and not include_central:
                continue
            t = torch.as_tensor(core)
            if tuple(t.shape) != self.core_shape(k):
                raise ValueError(
                    f"core {k} has shape {tuple(t.shape)}, expected {self.core_shape(k)} "
                    f"(bond_dims={self.bond_dims})"
                )
            getattr(self, self.core_name(k)).copy_(t)

    # ------------------------------------------------------------------ contraction plans
    def _apply_plan(self, rows: int) -> ApplyPlan:
        """tnlm's plan for ``rows`` input rows (an empty input is planned as one row)."""
        if rows < 0:
            raise ValueError(f"rows must be an int >= 0; got {rows!r}")
        return plan_apply(
            [self.core_shape(k) for k in range(self.num_cores)],
            max(rows, 1),
            adapter_rank=self.adapter_size,
            rebuild_flops=self.rebuild_flops(),
            batch_first=True,
            cost_model=self.cost_model,
        )

    @property
    def cores_flop_weight(self) -> float:
        """The cost model's weight on the cores path's FLOPs (set ``cost_model`` to change)."""
        return (self.cost_model or DEFAULT_COST_MODEL).cores_flop_weight

    @property
    def dense_element_cost(self) -> float:
        """The cost model's charge per materialised weight element (set ``cost_model``)."""
        return (self.cost_model or DEFAULT_COST_MODEL).dense_element_cost

    def cost(self, rows: int) -> dict[str, int]:
        """FLOPs of the two strategies for an input with ``rows`` rows.

        Returns
        -------
        dict
            ``{"dense": rebuild + adapter + GEMM flops, "cores": input-contraction flops
            (+ the adapter applied to the input)}``.
        """
        plan = self._apply_plan(rows)
        return {"dense": plan.dense_flops, "cores": plan.cores_flops}

    def choose_mode(self, rows: int) -> str:
        """The strategy the forward uses for ``rows`` input rows ("dense" or "cores").

        Under "auto", the method of ``tnlm.planning.plan_apply`` for this layer's core
        shapes, adapter rank, ``rebuild_flops()`` and ``cost_model``.
        """
        if self.forward_mode != "auto":
            return self.forward_mode
        return _route(self, rows)[0]

    # ------------------------------------------------------------------ forward
    def mpo_weight(self) -> torch.Tensor:
        """The weight rebuilt from the cores alone, shape ``(out_features, in_features)``.

        See ``rebuild_weights`` for the contraction order.
        """
        return _rebuild([self], with_adapter=False)[0]

    def rebuild_flops(self) -> int:
        """FLOPs of ``mpo_weight()``."""
        shapes = [self.core_shape(k) for k in range(self.num_cores)]
        c = self.central_index
        flops, p_left, p_right = 0, 1, 1
        for k, (r_l, o, i, r_r) in enumerate(shapes[:c]):
            if k:
                flops += 2 * p_left * r_l * o * i * r_r
            p_left *= o * i
        for k, (r_l, o, i, r_r) in enumerate(reversed(shapes[c + 1 :])):
            if k:
                flops += 2 * r_l * o * i * r_r * p_right
            p_right *= o * i
        r_l, o, i, r_r = shapes[c]
        if c:
            flops += 2 * p_left * r_l * o * i * r_r
        if c + 1 < self.num_cores:
            flops += 2 * p_left * o * i * r_r * p_right
        return flops

    def rebuild_weight(self) -> torch.Tensor:
        """The full weight ``W = MPO + up @ down``, shape ``(out_features, in_features)``."""
        w = self.mpo_weight()
        if self.adapter_down is not None and self.adapter_up is not None:
            w = torch.addmm(w, self.adapter_up, self.adapter_down)  # (out, r) @ (r, in)
        return w

    @property
    def weight(self) -> torch.Tensor:
        """Deprecated: use ``rebuild_weight()``. Not a stored tensor: every access rebuilds
        ``W`` from the cores (a new tensor, autograd to the cores), and warns."""
        warnings.warn(
            "MPOLinear.weight rebuilds the matrix from the cores on every access and is "
            "deprecated; call rebuild_weight() (or mpo_weight() for the cores alone)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.rebuild_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : Tensor, shape (..., in_features)

        Returns
        -------
        Tensor, shape (..., out_features)
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"input has {x.shape[-1]} features in its last dimension, expected "
                f"in_features={self.in_features}"
            )
        lead = x.shape[:-1]
        rows = math.prod(lead)
        method, steps = ("dense", ()) if self.forward_mode == "dense" else _route(self, rows)
        if self.forward_mode != "cores" and method == "dense":
            return F.linear(x, self.rebuild_weight(), self.bias)
        x2 = x.reshape(rows, *self.in_dims)  # (N, in_1, ..., in_n)
        operands = [*self.cores, x2]
        low = _autocast_dtype(x.device.type)
        if low is not None:  # autocast does not reach the einsums of the contraction
            operands = [t.to(low) for t in operands]
        for positions, pair in steps:  # the plan's pairwise order
            picked = [operands.pop(k) for k in positions]
            operands.append(torch.einsum(pair, *picked))
        y = operands[0]  # (N, out_1, ..., out_n)
        y = y.reshape(*lead, self.out_features)  # (..., out)
        if self.adapter_down is not None and self.adapter_up is not None:
            y = y + (x @ self.adapter_down.T) @ self.adapter_up.T  # (..., r) -> (..., out)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)  # as F.linear: the output keeps the compute dtype
        return y

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        out_dims: Sequence[int] | None = None,
        in_dims: Sequence[int] | None = None,
        num_cores: int = 5,
        bond_dim: int | None = None,
        **kwargs: Any,
    ) -> MPOLinear:
        """Decompose a dense ``(out, in)`` weight with ``tnlm.mpo_decompose``.

        At full bond dimension the rebuilt weight equals ``weight`` up to rounding.
        """
        if weight.ndim != 2:
            raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
        out_f, in_f = (int(d) for d in weight.shape)
        layer = cls(
            in_f,
            out_f,
            out_dims=out_dims,
            in_dims=in_dims,
            num_cores=num_cores,
            bond_dim=bond_dim,
            bias=bias is not None,
            dtype=weight.dtype,
            device=weight.device,
            **kwargs,
        )
        mpo = tnlm.mpo_decompose(weight.detach(), (layer.out_dims, layer.in_dims), bond_dim)
        layer.set_cores(_pad_cores(list(mpo.cores), layer))
        if bias is not None and layer.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(bias)
        return layer

    def to_mpo(self) -> tnlm.MPO:
        """This layer's cores as a ``tnlm.MPO`` (a view: the cores are the parameters).

        The MPO's cores are this module's parameter tensors themselves, not copies: the
        central one is the same object as ``self.central`` (a shared central tensor stays
        shared), autograd reaches the parameters through every tnlm operation on it, and an
        in-place update of the layer (an optimizer step) shows in the MPO. tnlm's operations
        (``to_dense``, ``bond_entropies``, ``compress``, ``canonicalize``, ``save``, ...)
        return new arrays or MPOs that share nothing with the layer. The layouts agree:
        core ``k`` is ``(r_{k-1}, out_k, in_k, r_k)``, tnlm's ``(r_left, row, col, r_right)``,
        so ``row_dims == out_dims`` and ``col_dims == in_dims``.

        The MPO is of the cores alone: ``to_mpo().to_dense()`` equals ``mpo_weight()``. The
        low-rank adapter ``adapter_up @ adapter_down`` (if ``adapter_size > 0``) and the bias
        are not in it, so where the adapter is non-zero (after training), ``rebuild_weight()``
        differs from ``to_mpo().to_dense()`` by exactly ``adapter_up @ adapter_down``.

        Returns
        -------
        tnlm.MPO
            Shape ``(out_features, in_features)``, torch cores of this layer's dtype and
            device.

        Examples
        --------
        >>> lin = MPOLinear(12, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 2))
        >>> mpo = lin.to_mpo()
        >>> mpo.shape, mpo.bond_dims, mpo.cores[1] is lin.central
        ((24, 12), (6, 8), True)
        >>> torch.allclose(mpo.to_dense(), lin.mpo_weight())
        True
        """
        return tnlm.MPO(self.cores)

    @classmethod
    def from_mpo(
        cls,
        mpo: tnlm.MPO,
        bias: Any = None,
        *,
        central: nn.Parameter | None = None,
        adapter_size: int = 0,
        forward_mode: str = "auto",
        std: float = 0.02,
    ) -> MPOLinear:
        """A layer whose weight is ``mpo`` (rows: output features, columns: input features).

        The layer has the MPO's factorisation (``out_dims = mpo.row_dims``,
        ``in_dims = mpo.col_dims``) and bond dimensions (``bond_dim = mpo.bond_dims``), and
        the dtype and device of its cores (numpy cores give a CPU layer). The cores are
        copied into new parameters: training the layer leaves ``mpo`` unchanged. So
        ``from_mpo(layer.to_mpo(), layer.bias)`` computes what ``layer`` does when
        ``layer`` has no adapter (an adapter is not part of ``to_mpo()``).

        Parameters
        ----------
        mpo : tnlm.MPO, shape (out_features, in_features)
            numpy or torch cores of a real floating dtype. Every bond must be at most its
            full rank (``full_bond_dims(row_dims, col_dims)``); call ``mpo.compress()``
            first on a sum or product of MPOs.
        bias : tensor or array, shape (out_features,), optional
            Copied into the layer's bias (cast to the cores' dtype); None: no bias.
        central : nn.Parameter, shape (r_c, out_c, in_c, r_{c+1}), optional
            A shared central tensor (``c = n // 2``) for the layer to register, as in the
            constructor; it must hold the MPO's central core (the same tensor, or equal
            values, dtype and device): it is used, not overwritten, so other layers sharing
            it are untouched.
        adapter_size : int, default 0
            Rank of a new adapter, initialised as in ``reset_parameters(std)`` (``up`` zero,
            so the layer's weight is still the MPO).
        forward_mode : {"auto", "dense", "cores"}
        std : float, default 0.02
            Standard deviation of the adapter's ``down`` matrix.

        Returns
        -------
        MPOLinear

        Raises
        ------
        TypeError
            If ``mpo`` is not a ``tnlm.MPO``, its cores are neither numpy nor torch or not of
            a real floating dtype, or ``bias`` is not an array.
        ValueError
            If the MPO has a trivial core (``row = col = 1``, refused as for the
            constructor's factorisation), a bond above its full rank, ``bias`` does not have
            shape ``(out_features,)``, or ``central`` does not hold the MPO's central core.

        Examples
        --------
        >>> import numpy as np
        >>> W = np.random.default_rng(0).standard_normal((24, 12))
        >>> mpo = tnlm.mpo_decompose(W, ((2, 3, 4), (3, 2, 2)), bond_dim=4)
        >>> lin = MPOLinear.from_mpo(mpo, bias=np.zeros(24))
        >>> lin.out_dims, lin.in_dims, lin.bond_dims, lin.rebuild_weight().dtype
        ((2, 3, 4), (3, 2, 2), (1, 4, 4, 1), torch.float64)
        >>> bool(np.allclose(lin.rebuild_weight().detach().numpy(), mpo.to_dense()))
        True
        """
        if not isinstance(mpo, tnlm.MPO):
            hint = ""
            if isinstance(mpo, list | tuple):
                hint = " (wrap a list of cores as tnlm.MPO(cores))"
            elif hasattr(mpo, "shape"):
                hint = " (for a dense weight use MPOLinear.from_dense or tnlm.mpo_decompose)"
            raise TypeError(f"from_mpo takes a tnlm.MPO; got {type(mpo).__name__}{hint}")
        if mpo.backend not in ("numpy", "torch"):
            raise TypeError(
                f"from_mpo takes an MPO with numpy or torch cores; got {mpo.backend} cores"
            )
        cores = [c if isinstance(c, torch.Tensor) else torch.tensor(c) for c in mpo.cores]
        dtype, device = cores[0].dtype, cores[0].device
        if not dtype.is_floating_point:
            raise TypeError(
                f"from_mpo needs cores of a real floating dtype (float16, bfloat16, float32, "
                f"float64); the MPO's cores have dtype {mpo.dtype}"
            )
        out_dims, in_dims = check_factorization(
            mpo.row_dims, mpo.col_dims, "from_mpo: the MPO's factorisation"
        )
        full = full_bond_dims(out_dims, in_dims)[1:-1]
        for k, (r, f) in enumerate(zip(mpo.bond_dims, full)):
            if r > f:
                raise ValueError(
                    f"from_mpo: the MPO's bond {k} has dimension {r}, above its full rank {f} "
                    f"(bond_dims {mpo.bond_dims}, full rank {full}); expected at most the "
                    "full rank: call mpo.compress() first"
                )
        c, n = len(cores) // 2, len(cores)
        if central is not None and tuple(central.shape) != tuple(cores[c].shape):
            raise ValueError(
                f"from_mpo: central has shape {tuple(central.shape)}, but the MPO's central core "
                f"(core {c} of {n}) has shape {tuple(cores[c].shape)}; expected the central "
                f"tensor of a layer with the MPO's {n} cores, factorisation and bonds"
            )
        out_features, in_features = mpo.shape
        if bias is not None:
            if not isinstance(bias, torch.Tensor):
                if not hasattr(bias, "shape"):
                    raise TypeError(
                        f"from_mpo: bias must be None or a tensor/array of shape "
                        f"({out_features},); got {type(bias).__name__}"
                    )
                bias = torch.tensor(bias)
            if tuple(bias.shape) != (out_features,):
                raise ValueError(
                    f"from_mpo: bias has shape {tuple(bias.shape)}, expected "
                    f"(out_features,) = ({out_features},) for an MPO of shape {mpo.shape}"
                )
        layer = cls(
            in_features,
            out_features,
            out_dims=out_dims,
            in_dims=in_dims,
            bond_dim=mpo.bond_dims,
            bias=bias is not None,
            central=central,
            adapter_size=adapter_size,
            forward_mode=forward_mode,
            std=std,
            dtype=dtype,
            device=device,
        )
        if central is not None and cores[c] is not central and not torch.equal(cores[c], central):
            raise ValueError(
                f"from_mpo: central does not hold the MPO's central core (core {c}); expected "
                "the same values (the shared tensor is used, not overwritten: copy the core "
                "into it first, or pass central=None for a layer of its own)"
            )
        layer.set_cores(cores, include_central=central is None)
        if bias is not None and layer.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(bias)
        return layer


@torch.compiler.assume_constant_result
def _route(layer: MPOLinear, rows: int) -> tuple[str, tuple[tuple[tuple[int, ...], str], ...]]:
    """The layer's plan for ``rows`` rows: its method, and the cores path's pairwise steps
    ``(positions, einsum)`` in the plan's FLOP-optimal order (operands ``cores..., x``; each
    step pops ``positions`` in that order and appends the product, as opt_einsum does).

    Shapes alone decide it, so ``torch.compile`` evaluates it once while tracing and keeps
    the answer as a constant: the planner's Python and opt_einsum never enter the graph.
    """
    plan = layer._apply_plan(rows)
    if plan.method == "dense" and layer.forward_mode != "cores":
        return plan.method, ()
    shapes = tuple(layer.core_shape(k) for k in range(layer.num_cores))
    x_shape = (max(rows, 1), *layer.in_dims)
    return plan.method, _pairwise_steps(plan.equation, (*shapes, x_shape), plan.path)


@functools.lru_cache(maxsize=1024)
def _pairwise_steps(
    equation: str, shapes: tuple[tuple[int, ...], ...], path: tuple[tuple[int, ...], ...]
) -> tuple[tuple[tuple[int, ...], str], ...]:
    """opt_einsum's pairwise contractions of ``equation`` along ``path``."""
    _, info = opt_einsum.contract_path(equation, *shapes, optimize=list(path), shapes=True)
    return tuple((tuple(c[0]), _ascii_letters(str(c[2]))) for c in info.contraction_list)


def _ascii_letters(equation: str) -> str:
    """``equation`` with its index symbols renamed to ASCII letters in order of appearance:
    opt_einsum names indices beyond the 52 letters with other Unicode characters, which
    ``torch.einsum`` refuses (a pairwise step of up to 20 cores uses at most 47 indices)."""
    letters = string.ascii_letters
    names: dict[str, str] = {}
    out = []
    for ch in equation:
        if ch in ",->":
            out.append(ch)
        else:
            if ch not in names:
                if len(names) == len(letters):
                    raise ValueError(f"einsum step {equation!r} has more than 52 indices")
                names[ch] = letters[len(names)]
            out.append(names[ch])
    return "".join(out)


def rebuild_weights(layers: Sequence[MPOLinear]) -> torch.Tensor:
    """The weights of several MPOLinear layers of one structure, rebuilt in one batch.

    Equal to ``torch.stack([layer.rebuild_weight() for layer in layers])`` (up to rounding),
    but every step is one batched matrix product over the layers, and a core that is the
    same parameter in every layer (a shared central tensor) enters once, broadcast. A model
    does this once per forward pass for all its layers (``MPOBertEncoder``).

    Parameters
    ----------
    layers : sequence of MPOLinear
        Same factorisation and bond dimensions.

    Returns
    -------
    Tensor, shape (len(layers), out_features, in_features)

    Raises
    ------
    ValueError
        If the layers differ in structure.
    """
    first = layers[0]
    for layer in layers[1:]:
        if (layer.out_dims, layer.in_dims, layer.bond_dims, layer.adapter_size) != (
            first.out_dims,
            first.in_dims,
            first.bond_dims,
            first.adapter_size,
        ):
            raise ValueError(
                "rebuild_weights needs layers of one structure; got "
                f"{layer.extra_repr()} and {first.extra_repr()}"
            )
    return _rebuild(layers, with_adapter=True)


def _rebuild(layers: Sequence[MPOLinear], with_adapter: bool) -> torch.Tensor:
    """Batched rebuild; ``(len(layers), out, in)``.

    Meet in the middle: the small left block ``L`` (cores before the centre) and right block
    ``R`` (cores after it) are contracted first and their rows put in ``(out..., in...)``
    order (cheap: they are small); then two batched GEMMs ``(L @ C) @ R`` give ``W`` as
    ``(out_L, in_L, out_c, in_c, out_R, in_R)``, and one 6-way permutation with long
    contiguous runs gives ``(out, in)``.
    """
    first = layers[0]
    n, c = first.num_cores, first.central_index
    od, idm = first.out_dims, first.in_dims
    per_layer = [layer.cores for layer in layers]

    def core(k: int) -> torch.Tensor:
        ps = [cores[k] for cores in per_layer]
        if all(p is ps[0] for p in ps):
            return ps[0].unsqueeze(0)  # (1, r_l, o, i, r_r), broadcast over layers
        return torch.stack(ps)  # (L, r_l, o, i, r_r)

    o_left, i_left = math.prod(od[:c]), math.prod(idm[:c])
    o_right, i_right = math.prod(od[c + 1 :]), math.prod(idm[c + 1 :])
    left: torch.Tensor | None = None
    for k in range(c):
        t = core(k)
        b, r_l, o, i, r_r = t.shape
        if left is None:
            left = t.reshape(b, o * i, r_r)  # (B, out_1 in_1, r_1)
        else:
            left = torch.matmul(left, t.reshape(b, r_l, o * i * r_r))  # (L, P, o i r_r)
            left = left.reshape(left.shape[0], -1, r_r)  # (L, P o i, r_r)
    if left is not None and c > 1:
        r = left.shape[-1]
        inter = [d for k in range(c) for d in (od[k], idm[k])]
        perm = [0] + [1 + 2 * k for k in range(c)] + [2 + 2 * k for k in range(c)] + [2 * c + 1]
        left = left.reshape(left.shape[0], *inter, r).permute(perm)  # (L, o.., i.., r)
        left = left.reshape(left.shape[0], o_left * i_left, r)  # (L, out_L in_L, r_c)
    right: torch.Tensor | None = None
    for k in reversed(range(c + 1, n)):
        t = core(k)
        b, r_l, o, i, r_r = t.shape
        if right is None:
            right = t.reshape(b, r_l, o * i)  # (B, r_{n-1}, out_n in_n)
        else:
            right = torch.matmul(t.reshape(b, r_l * o * i, r_r), right)  # (L, r_l o i, P)
            right = right.reshape(right.shape[0], r_l, -1)  # (L, r_l, o i P)
    if right is not None and n - c - 1 > 1:
        m = n - c - 1
        r = right.shape[1]
        inter = [d for k in range(c + 1, n) for d in (od[k], idm[k])]
        perm = [0, 1] + [2 + 2 * k for k in range(m)] + [3 + 2 * k for k in range(m)]
        right = right.reshape(right.shape[0], r, *inter).permute(perm)  # (L, r, o.., i..)
        right = right.reshape(right.shape[0], r, o_right * i_right)  # (L, r, out_R in_R)
    t = core(c)
    b, r_l, o, i, r_r = t.shape
    x = t.reshape(b, r_l, o * i * r_r)  # (B, r_c, out_c in_c r_{c+1})
    if left is not None:
        x = _batched_matmul(left, x)  # (L, out_L in_L, out_c in_c r_{c+1})
    x = x.reshape(x.shape[0], -1, r_r)  # (L, out_L in_L out_c in_c, r_{c+1})
    if right is not None:
        x = _batched_matmul(x, right)  # (L, out_L in_L out_c in_c, out_R in_R)
    count = len(layers)
    x = x.expand(count, *x.shape[1:])  # (L, ...) even when nothing varied per layer
    w = x.reshape(count, o_left, i_left, o, i, o_right, i_right)
    w = w.permute(0, 1, 3, 5, 2, 4, 6)  # (L, out_L, out_c, out_R, in_L, in_c, in_R)
    w = w.reshape(count, first.out_features, first.in_features)  # (L, out, in)
    if with_adapter and first.adapter_size:
        up = torch.stack([cast(torch.Tensor, layer.adapter_up) for layer in layers])
        down = torch.stack([cast(torch.Tensor, layer.adapter_down) for layer in layers])
        w = torch.baddbmm(w, up, down)  # (L, out, r) @ (L, r, in)
    return w


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` over a batch of layers, ``(L, m, k) @ (L, k, n)``, where either side may be
    one matrix for every layer (batch 1: a shared core).

    A shared right factor makes one GEMM of the stacked rows, ``(L m, k) @ (k, n)``, instead
    of broadcasting it over the batch: no copy per layer forward, and in the backward its
    gradient is one GEMM instead of a batched product summed over the layers.
    """
    if b.shape[0] == 1 and a.shape[0] > 1:
        batch, m, k = a.shape
        return (a.reshape(batch * m, k) @ b[0]).reshape(batch, m, b.shape[-1])
    return torch.matmul(a, b)


def _pad_cores(cores: list[Any], layer: MPOLinear) -> list[torch.Tensor]:
    """Zero-pad decomposed cores whose bonds came out smaller than the layer's bonds.

    ``tnlm.mpo_decompose`` may return smaller bonds (numerical rank); padding with zeros
    leaves the represented matrix unchanged.
    """
    out = []
    for k, core in enumerate(cores):
        t = torch.as_tensor(core)
        target = layer.core_shape(k)
        if tuple(t.shape) != target:
            if any(a > b for a, b in zip(t.shape, target)):
                raise ValueError(
                    f"decomposed core {k} has shape {tuple(t.shape)}, larger than {target}"
                )
            p = t.new_zeros(target)
            p[: t.shape[0], :, :, : t.shape[3]] = t
            t = p
        out.append(t)
    return out
