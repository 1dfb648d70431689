"""The two concepts: ``TensorTrain`` (a tensor of any order) and ``MPO`` (a matrix).

Both are immutable: every operation returns a new object. Algorithms live in
:mod:`tnlm._tt_ops`; the methods here are thin wrappers.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import autoray as ar
import numpy as np

from . import _tt_ops as T
from . import backend as B
from ._checks import check_array_type, check_bond_dims, check_int, check_tol
from ._types import Array, BondDim
from .contract import contract
from .planning import ApplyPlan, plan_apply
from .truncation import TruncationReport, check_method

__all__ = ["TensorTrain", "MPO", "APPLY_METHODS"]

#: Names accepted by ``MPO.apply(method=...)``.
APPLY_METHODS = ("auto", "dense", "cores")

#: Dtype name prefixes a scalar factor may have (bool, integers, floats, complex).
_NUMERIC_DTYPES = ("bool", "int", "uint", "float", "bfloat", "complex")


def _shape_of(x: Array) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _validate_cores(cores: Sequence[Array], ndim: int, what: str) -> list[Array]:
    cores = list(cores)
    if not cores:
        raise ValueError(f"{what} needs at least one core; got an empty list")
    layout = "(r_left, row, col, r_right)" if ndim == 4 else "(r_left, dim, r_right)"
    first = cores[0]
    for k, c in enumerate(cores):
        if not hasattr(c, "shape") or not hasattr(c, "dtype"):
            raise TypeError(f"core {k} is a {type(c).__name__}; expected an array")
        check_array_type(c, f"core {k}")
        if len(c.shape) != ndim:
            raise ValueError(
                f"core {k} has shape {_shape_of(c)}; expected {ndim}-D cores with layout {layout}"
            )
        if B.backend_name(c) != B.backend_name(first):
            raise TypeError(
                f"core {k} is a {B.backend_name(c)} array but core 0 is {B.backend_name(first)}; "
                "all cores must share one backend"
            )
        if c.dtype != first.dtype:
            raise TypeError(
                f"core {k} has dtype {B.dtype_name(c)} but core 0 has {B.dtype_name(first)}; "
                "all cores must share one dtype"
            )
    if int(cores[0].shape[0]) != 1 or int(cores[-1].shape[-1]) != 1:
        raise ValueError(
            f"boundary ranks must be 1; got r_0 = {int(cores[0].shape[0])} and "
            f"r_n = {int(cores[-1].shape[-1])}"
        )
    for k in range(len(cores) - 1):
        right, left = int(cores[k].shape[-1]), int(cores[k + 1].shape[0])
        if right != left:
            raise ValueError(
                f"mismatched neighbouring cores: core {k} has r_right = {right} but core {k + 1} "
                f"has r_left = {left}"
            )
    return cores


class _TrainBase:
    """Shared behaviour of TensorTrain and MPO, expressed on merged 3-D cores."""

    cores: list[Array]
    report: TruncationReport | None

    # numpy must not treat a train as a 0-d object array in ``x @ mpo``, ``a * mpo``: opting
    # out of ufuncs makes ndarray's operators return NotImplemented, so ours are used.
    __array_ufunc__ = None

    # subclasses provide
    def _merged(self) -> list[Array]:
        raise NotImplementedError

    def _from_merged(self, cores: Sequence[Array], report: TruncationReport | None = None) -> Any:
        raise NotImplementedError

    # -- structure ---------------------------------------------------------------------------
    @property
    def n_cores(self) -> int:
        return len(self.cores)

    def __len__(self) -> int:
        return len(self.cores)

    @property
    def bond_dims(self) -> tuple[int, ...]:
        """Internal bond dimensions ``(r_1, ..., r_{n-1})``."""
        return tuple(int(c.shape[-1]) for c in self.cores[:-1])

    @property
    def dtype(self) -> Any:
        return self.cores[0].dtype

    @property
    def device(self) -> Any:
        return B.device_of(self.cores[0])

    @property
    def backend(self) -> str:
        return B.backend_name(self.cores[0])

    @property
    def num_params(self) -> int:
        """Number of stored entries in all cores."""
        return sum(math.prod(_shape_of(c)) for c in self.cores)

    @property
    def central_index(self) -> int:
        """Index of the central core, ``n // 2`` (the core holding most parameters)."""
        return len(self.cores) // 2

    def _dense_size(self) -> int:
        raise NotImplementedError

    @property
    def compression_ratio(self) -> float:
        """Dense entries divided by stored entries (> 1 means smaller than dense)."""
        return self._dense_size() / self.num_params

    def _coerce_train(self, other: Any, op: str, *, same_structure: bool = True) -> Any:
        """``other`` checked as the second operand of ``op``: a train of the same class,
        backend and dtype (and, unless ``same_structure`` is False, the same dims).

        Every binary operation between trains goes through here, so they all refuse the same
        things with the same messages. Dtypes are not promoted between trains (as torch
        refuses ``float32 @ float64``): cast one operand's cores first.
        """
        mine = type(self).__name__
        if type(other) is not type(self):
            hint = " (use .to_dense() for dense arithmetic)" if hasattr(other, "shape") else ""
            article = "an" if mine == "MPO" else "a"
            raise TypeError(
                f"cannot {op} {mine} and {type(other).__name__}; expected {article} {mine}{hint}"
            )
        if other.backend != self.backend:
            raise TypeError(
                f"cannot {op} a {self.backend} {mine} and a {other.backend} {mine}; expected "
                "both in one backend"
            )
        if other.dtype != self.dtype:
            raise TypeError(
                f"cannot {op} {mine}s of dtype {B.dtype_name(self.cores[0])} and "
                f"{B.dtype_name(other.cores[0])}; expected one dtype (cast the cores of one)"
            )
        if same_structure and self._structure() != other._structure():
            raise ValueError(
                f"cannot {op}: structures differ ({self._structure()} vs {other._structure()})"
            )
        return other

    def _coerce_scalar(self, alpha: Any, op: str) -> Any:
        """``alpha`` checked as the scalar of ``op`` (``*`` or ``/``): a Python or numpy
        number, or a 0-d array of this train's backend."""
        if isinstance(alpha, _TrainBase) or (hasattr(alpha, "shape") and len(alpha.shape) > 0):
            what = type(alpha).__name__
            if not isinstance(alpha, _TrainBase):
                what += f" of shape {_shape_of(alpha)}"
            raise TypeError(f"{op} takes a scalar; got {what} (use @ for products)")
        if isinstance(alpha, np.generic) and self.backend != "numpy":
            # other backends get the Python number: torch reads a numpy complex scalar as its
            # real part (with only a warning), and treats numpy real scalars as Python ones
            return alpha.item()
        if isinstance(alpha, numbers.Number):
            return alpha
        if not hasattr(alpha, "shape") or not hasattr(alpha, "dtype"):
            raise TypeError(
                f"{op} takes a scalar (int, float, complex or a 0-d array); got "
                f"{type(alpha).__name__}"
            )
        if B.backend_name(alpha) != self.backend:
            raise TypeError(
                f"{op} got a 0-d {B.backend_name(alpha)} array for a {self.backend} "
                f"{type(self).__name__}; expected a Python number or a 0-d {self.backend} array"
            )
        if not B.dtype_name(alpha).startswith(_NUMERIC_DTYPES):
            raise TypeError(
                f"{op} takes a numeric scalar; got a 0-d array of dtype {B.dtype_name(alpha)}"
            )
        return alpha

    def _structure(self) -> tuple[Any, ...]:
        raise NotImplementedError

    # -- algebra -----------------------------------------------------------------------------
    def __add__(self, other: Any) -> Any:
        other = self._coerce_train(other, "add")
        return self._from_merged(T.tt_add(self._merged(), other._merged()))

    def __sub__(self, other: Any) -> Any:
        other = self._coerce_train(other, "subtract")
        return self._from_merged(T.tt_add(self._merged(), (-1 * other)._merged()))

    # ``x + mpo`` / ``x - mpo`` for a non-train ``x``: refused with the same message as
    # ``mpo + x`` (instead of Python's bare "unsupported operand type(s)")
    def __radd__(self, other: Any) -> Any:
        return self + other

    def __rsub__(self, other: Any) -> Any:
        return -(self - other)

    def __neg__(self) -> Any:
        return -1 * self

    def _scaled(self, alpha: Any, op: str) -> Any:
        """``A * alpha`` or ``A / alpha`` (``op``), the factor applied to the central core.

        The result's dtype is that of the same operation on ``A.to_dense()`` in the cores'
        backend (numpy's or torch's promotion of a scalar with an array of the cores' dtype):
        a Python float keeps float32, ``1j`` makes float64 complex128, ``np.float64`` makes a
        numpy float32 MPO float64 under numpy 2 but keeps a torch one float32. Every other
        core is cast to that dtype, so the cores always share one.
        """
        alpha = self._coerce_scalar(alpha, op)
        cores = self._merged()
        c = self.central_index
        cores[c] = cores[c] * alpha if op == "*" else cores[c] / alpha
        return self._from_merged([B.cast_like(x, cores[c]) for x in cores])

    def __mul__(self, alpha: Any) -> Any:
        """``A * alpha`` for a scalar ``alpha`` (dtype promoted as by ``A.to_dense() * alpha``)."""
        return self._scaled(alpha, "*")

    __rmul__ = __mul__

    def __truediv__(self, alpha: Any) -> Any:
        """``A / alpha`` for a scalar ``alpha`` (dtype promoted as by ``A.to_dense() / alpha``)."""
        return self._scaled(alpha, "/")

    def inner(self, other: Any) -> Array:
        """Frobenius inner product ``sum(conj(self) * other)`` without densifying (0-d array)."""
        other = self._coerce_train(other, "take the inner product of")
        return T.tt_inner(self._merged(), other._merged())

    def norm(self) -> Array:
        """Frobenius norm, computed from an orthogonalised core (0-d array)."""
        return T.tt_norm(self._merged())

    def canonicalize(self, center: int | None = None) -> Any:
        """Mixed-canonical form: cores left of ``center`` left-orthonormal, right of it
        right-orthonormal (QR sweeps). ``center`` defaults to ``central_index``."""
        c = self.central_index if center is None else self._check_center(center)
        return self._from_merged(T.tt_orthogonalize(self._merged(), c))

    def _check_center(self, center: int) -> int:
        n = len(self.cores)
        center = check_int(center, "center")
        if not -n <= center < n:
            raise ValueError(f"center must be an int in [0, {n}); got {center!r}")
        return center % n

    def compress(
        self, bond_dim: BondDim = None, *, tol: float | None = None, method: str = "auto"
    ) -> Any:
        """TT-rounding to bond caps and/or a relative tolerance (Oseledets 2011, Alg. 2).

        Parameters
        ----------
        bond_dim : None, int or sequence of int
            Cap for every bond, or one per bond.
        tol : float in (0, 1), optional
            Guaranteed relative Frobenius error ``||A - A'|| <= tol ||A||`` (unless a
            ``bond_dim`` cap binds first; the report tells the error committed).
        method : {"auto", "svd", "rsvd"}

        Returns
        -------
        same type as self, with ``report`` set.
        """
        caps = check_bond_dims(bond_dim, len(self.cores) - 1)
        check_method(method)
        cores, report = T.tt_round(self._merged(), caps, check_tol(tol), method)
        return self._from_merged(cores, report)

    def bond_singular_values(self) -> list[Array]:
        """Singular values (Schmidt coefficients) across every internal bond."""
        return list(self.compress(method="svd").report.kept)

    def bond_entropies(self) -> list[float]:
        """Von Neumann entropy ``-sum p log p`` with ``p = s**2 / sum s**2`` at every bond."""
        return [T.spectrum_entropy(s) for s in self.bond_singular_values()]

    def copy(self) -> Any:
        return self._from_merged(
            [B.copy(c) for c in self._merged()],
            self.report,
        )


class TensorTrain(_TrainBase):
    """A tensor of order n as a train of 3-D cores.

    ::

        r_0=1      r_1        r_2              r_{n-1}     r_n=1
          ── [G_1] ──── [G_2] ──── ... ──── [G_n] ──
               |          |                   |
              d_1        d_2                 d_n

    Each core ``G_k`` has shape ``(r_{k-1}, d_k, r_k)``.

    Parameters
    ----------
    cores : sequence of array, shapes (r_{k-1}, d_k, r_k)
        Validated once here: same backend and dtype, 3-D, boundary ranks 1, matching bonds.
    report : TruncationReport, optional
        Set by :func:`tnlm.tt_decompose` and :meth:`compress`.
    """

    def __init__(self, cores: Sequence[Array], report: TruncationReport | None = None) -> None:
        self.cores = _validate_cores(cores, 3, "TensorTrain")
        self.report = report

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(int(c.shape[1]) for c in self.cores)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.dims

    def _structure(self) -> tuple[Any, ...]:
        return (self.dims,)

    def _dense_size(self) -> int:
        return math.prod(self.dims)

    def _merged(self) -> list[Array]:
        return self.cores

    def _from_merged(self, cores: Sequence[Array], report: TruncationReport | None = None) -> Any:
        return TensorTrain(cores, report)

    def to_dense(self) -> Array:
        """The full tensor, shape ``dims``."""
        return T.tt_to_dense(self.cores)

    def __repr__(self) -> str:
        return (
            f"TensorTrain(dims={self.dims}, bond_dims={self.bond_dims}, "
            f"dtype={B.dtype_name(self.cores[0])}, backend={self.backend})"
        )


class MPO(_TrainBase):
    """A matrix ``W`` of shape ``(prod(row_dims), prod(col_dims))`` as a matrix product operator.

    ::

                 j_1        j_2                 j_n        (col indices)
                  |          |                   |
        r_0=1 ── [W_1] ─r_1─ [W_2] ─r_2─ ... ── [W_n] ── r_n=1
                  |          |                   |
                 i_1        i_2                 i_n        (row indices)

        W[(i_1..i_n), (j_1..j_n)] = W_1[:, i_1, j_1, :] @ ... @ W_n[:, i_n, j_n, :]

    Row indices are row-major: ``i = ((i_1 * row_dims[1] + i_2) * ...)``; likewise columns.
    Every core has layout ``(r_left, row, col, r_right)``. For an ``nn.Linear`` weight of
    shape (out, in), ``row_dims`` factor ``out`` and ``col_dims`` factor ``in``.

    Parameters
    ----------
    cores : sequence of array, shapes (r_{k-1}, i_k, j_k, r_k)
        Validated once here: same backend and dtype, 4-D, boundary ranks 1, matching bonds.
    report : TruncationReport, optional
        Set by :func:`tnlm.mpo_decompose` and :meth:`compress`.

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> W = np.random.default_rng(0).standard_normal((12, 20))
    >>> mpo = tnlm.mpo_decompose(W, ((3, 4), (4, 5)))
    >>> mpo.bond_dims, np.allclose(mpo.to_dense(), W)
    ((12,), True)
    """

    def __init__(self, cores: Sequence[Array], report: TruncationReport | None = None) -> None:
        self.cores = _validate_cores(cores, 4, "MPO")
        self.report = report

    # -- structure ---------------------------------------------------------------------------
    @property
    def row_dims(self) -> tuple[int, ...]:
        return tuple(int(c.shape[1]) for c in self.cores)

    @property
    def col_dims(self) -> tuple[int, ...]:
        return tuple(int(c.shape[2]) for c in self.cores)

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the dense matrix, ``(prod(row_dims), prod(col_dims))``."""
        return (math.prod(self.row_dims), math.prod(self.col_dims))

    def _structure(self) -> tuple[Any, ...]:
        return (self.row_dims, self.col_dims)

    def _dense_size(self) -> int:
        return self.shape[0] * self.shape[1]

    def _merged(self) -> list[Array]:
        return [
            ar.do("reshape", c, (c.shape[0], c.shape[1] * c.shape[2], c.shape[3]))
            for c in self.cores
        ]  # (r, i j, r')

    def _from_merged(self, cores: Sequence[Array], report: TruncationReport | None = None) -> Any:
        split = [
            ar.do("reshape", c, (c.shape[0], i, j, c.shape[2]))  # (r, i, j, r')
            for c, i, j in zip(cores, self.row_dims, self.col_dims)
        ]
        return MPO(split, report)

    def __repr__(self) -> str:
        return (
            f"MPO(shape={self.shape}, row_dims={self.row_dims}, col_dims={self.col_dims}, "
            f"bond_dims={self.bond_dims}, dtype={B.dtype_name(self.cores[0])}, "
            f"backend={self.backend})"
        )

    # -- dense and products ------------------------------------------------------------------
    def to_dense(self) -> Array:
        """The dense matrix, shape ``(prod(row_dims), prod(col_dims))``, contracted in the
        FLOP-optimal order."""
        full = contract(T.dense_equation(len(self.cores), legs=2), *self.cores)
        return ar.do("reshape", full, self.shape)

    @property
    def T(self) -> MPO:  # noqa: N802 -- numpy's name
        """Transpose (rows and columns swapped in every core; no conjugation)."""
        return MPO([ar.do("transpose", c, (0, 2, 1, 3)) for c in self.cores])

    @property
    def H(self) -> MPO:  # noqa: N802
        """Conjugate transpose."""
        return MPO([ar.do("transpose", c.conj(), (0, 2, 1, 3)) for c in self.cores])

    def apply_cost(self, batch: int | None) -> dict[str, int]:
        """FLOPs of the two ways to compute ``W @ x`` for ``x`` of shape (J, batch).

        Returns ``{"cores": ..., "dense": ...}``: contracting x through the cores in the
        FLOP-optimal order, and rebuilding W then one GEMM (``batch=None``, a single vector,
        costs as ``batch=1``). ``tnlm.planning.plan_apply`` gives the choice as well.
        """
        plan = self._apply_plan(batch)
        return {"cores": plan.cores_flops, "dense": plan.dense_flops}

    def _apply_plan(self, batch: int | None) -> ApplyPlan:
        batch = 1 if batch is None else check_int(batch, "batch", low=1)
        return plan_apply([_shape_of(c) for c in self.cores], batch)

    def _coerce_vector(self, x: Any, name: str = "x") -> Array:
        """``x`` checked as the array operand of ``apply`` / ``@``: an array (not a list or
        ``np.matrix``) of the cores' backend.

        Its dtype must be the cores' or one that promotes to it (float32 ``x`` for a float64
        MPO, real ``x`` for a complex one): ``x`` is then cast, and the result has the dtype
        numpy would give. A dtype the cores would have to be promoted to (float64 ``x`` for a
        float32 MPO) raises ``TypeError``, as torch does for ``float32 @ float64``.
        """
        check_array_type(x, name)
        if B.backend_name(x) != self.backend:
            raise TypeError(
                f"{name} is a {B.backend_name(x)} array but the MPO's cores are {self.backend}; "
                f"expected a {self.backend} array (convert {name}, or the cores)"
            )
        if x.dtype == self.dtype:
            return x
        core = self.cores[0]
        promoted = B.zeros_like_shape((), x) * B.zeros_like_shape((), core)
        if promoted.dtype != self.dtype:
            raise TypeError(
                f"{name} has dtype {B.dtype_name(x)} but the MPO has dtype {B.dtype_name(core)}; "
                f"expected {B.dtype_name(core)} or a dtype that promotes to it (cast one of them)"
            )
        return B.cast_like(x, core)

    def apply(self, x: Array, *, method: str = "auto") -> Array:
        """``W @ x`` without forming W unless that is cheaper.

        Parameters
        ----------
        x : array, shape (J,) or (J, batch)
            Same backend as the cores.
        method : {"auto", "dense", "cores"}
            "cores": contract x through the cores (FLOP-optimal order, plan cached);
            "dense": rebuild W, then one GEMM; "auto": the one ``tnlm.planning.plan_apply``
            chooses (FLOP counts weighted by ``tnlm.planning.DEFAULT_COST_MODEL``, the
            calibration ``MPOLinear`` uses too; ``docs/theory.md``, Section 6).

        Returns
        -------
        array, shape (I,) or (I, batch)
        """
        if method not in APPLY_METHODS:
            raise ValueError(f"unknown method={method!r}; expected one of {APPLY_METHODS}")
        x = self._coerce_vector(x)
        nd = len(x.shape)
        i, j = self.shape
        if nd not in (1, 2) or int(x.shape[0]) != j:
            raise ValueError(
                f"x has shape {_shape_of(x)}; expected ({j},) or ({j}, batch) for an MPO of "
                f"shape {self.shape}"
            )
        batch = int(x.shape[1]) if nd == 2 else 1
        plan = None if method == "dense" else self._apply_plan(batch)
        if plan is None or (method == "auto" and plan.method == "dense"):
            return self.to_dense() @ x
        xs = ar.do("reshape", x, (*self.col_dims, batch))  # (j_1, ..., j_n, B)
        y = contract(plan.equation, *self.cores, xs, optimize=list(plan.path))  # (i_1.., B)
        return ar.do("reshape", y, (i, batch) if nd == 2 else (i,))

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, MPO):
            return self.matmul(other)
        return self.apply(other)

    def __rmatmul__(self, other: Any) -> Any:
        """``x @ W`` for x of shape (batch, I) or (I,): computed as ``(W^T @ x^T)^T``."""
        other = self._coerce_vector(other)
        if len(other.shape) == 1:
            return self.T.apply(other)
        return self.T.apply(other.T).T

    def matmul(self, other: MPO) -> MPO:
        """MPO @ MPO: cores multiply pairwise, bond dims multiply (no truncation).

        Requires ``self.col_dims == other.row_dims``; follow with :meth:`compress`.
        """
        if not isinstance(other, MPO):
            raise TypeError(f"matmul takes an MPO; got {type(other).__name__}")
        self._coerce_train(other, "multiply", same_structure=False)
        if self.col_dims != other.row_dims:
            raise ValueError(
                f"cannot multiply: left col_dims {self.col_dims} != right row_dims {other.row_dims}"
            )
        cores = []
        for a, b in zip(self.cores, other.cores):
            ra, i, _, sa = a.shape
            rb, _, k, sb = b.shape
            c = contract("aijb,cjkd->acikbd", a, b)  # (ra, rb, i, k, sa, sb)
            cores.append(ar.do("reshape", c, (ra * rb, i, k, sa * sb)))  # (ra rb, i, k, sa sb)
        return MPO(cores)

    # -- interop -----------------------------------------------------------------------------
    def to_quimb(self) -> Any:
        """This MPO as ``quimb.tensor.MatrixProductOperator`` (upper index = row)."""
        from .interop import mpo_to_quimb

        return mpo_to_quimb(self)

    @classmethod
    def from_quimb(cls, qmpo: Any) -> MPO:
        """Convert a ``quimb.tensor.MatrixProductOperator`` (upper index = row)."""
        from .interop import mpo_from_quimb

        return mpo_from_quimb(qmpo)

    def save(self, path: Any) -> None:
        """Write to one ``.npz`` file that :func:`tnlm.load` reads back bit-exact."""
        from .io import save

        save(self, path)
