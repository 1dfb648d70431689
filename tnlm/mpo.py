"""The two concepts: ``TensorTrain`` (a tensor of any order) and ``MPO`` (a matrix).

Both are immutable: every operation returns a new object. Algorithms live in
:mod:`tnlm._tt_ops`; the methods here are thin wrappers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import autoray as ar
import numpy as np
import opt_einsum as oe

from . import _backend as B
from . import _tt_ops as T
from ._checks import check_bond_dims, check_tol
from ._types import Array, BondDim
from .contract import contract, contract_cost
from .truncation import TruncationReport, check_method

__all__ = ["TensorTrain", "MPO", "APPLY_METHODS", "CORES_FLOP_WEIGHT"]

#: Names accepted by ``MPO.apply(method=...)``.
APPLY_METHODS = ("auto", "dense", "cores")


#: "auto" in ``MPO.apply`` contracts through the cores only when that path's FLOP count times
#: this weight is below the rebuild-then-GEMM path's. Measured on 2 cores (numpy/OpenBLAS,
#: float32, 4096x4096, bond 16, batch 512): the cores path ran at about half the FLOP rate
#: of the dense path (0.42 s for 10.7 GFLOP vs 0.33 s for 17.7 GFLOP).
CORES_FLOP_WEIGHT = 2.0


@functools.lru_cache(maxsize=256)
def _apply_costs(
    core_shapes: tuple[tuple[int, ...], ...], batch: int | None
) -> tuple[tuple[str, int], ...]:
    """FLOPs of both apply paths, cached per (core shapes, batch): path search is not free."""
    n = len(core_shapes)
    i = math.prod(s[1] for s in core_shapes)
    j = math.prod(s[2] for s in core_shapes)
    b = 1 if batch is None else batch
    col_dims = tuple(s[2] for s in core_shapes)
    x_shape = col_dims + ((b,) if batch is not None else ())
    sym = oe.get_symbol
    bond = [sym(k) for k in range(n + 1)]
    rows = [sym(n + 1 + k) for k in range(n)]
    cols = [sym(2 * n + 1 + k) for k in range(n)]
    bat = sym(3 * n + 1) if batch is not None else ""
    ins = ",".join(bond[k] + rows[k] + cols[k] + bond[k + 1] for k in range(n))
    eq = f"{ins},{''.join(cols)}{bat}->{bond[0]}{''.join(rows)}{bond[n]}{bat}"
    cores_cost = contract_cost(eq, *core_shapes, x_shape)
    dense_cost = contract_cost(T.dense_equation(n, legs=2), *core_shapes)
    return (("cores", cores_cost.flops), ("dense", dense_cost.flops + 2 * i * j * b))


def _shape_of(x: Array) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _validate_cores(cores: Sequence[Array], ndim: int, what: str) -> list[Array]:
    cores = list(cores)
    if not cores:
        raise ValueError(f"{what} needs at least one core; got an empty list")
    layout = "(r_left, row, col, r_right)" if ndim == 4 else "(r_left, dim, r_right)"
    first = cores[0]
    for k, c in enumerate(cores):
        if not hasattr(c, "shape"):
            raise TypeError(f"core {k} is a {type(c).__name__}; expected an array")
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

    def _check_same_structure(self, other: Any, op: str) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot {op} {type(self).__name__} and {type(other).__name__}")
        if self._structure() != other._structure():
            raise ValueError(
                f"cannot {op}: structures differ ({self._structure()} vs {other._structure()})"
            )

    def _structure(self) -> tuple[Any, ...]:
        raise NotImplementedError

    # -- algebra -----------------------------------------------------------------------------
    def __add__(self, other: Any) -> Any:
        self._check_same_structure(other, "add")
        return self._from_merged(T.tt_add(self._merged(), other._merged()))

    def __sub__(self, other: Any) -> Any:
        self._check_same_structure(other, "subtract")
        return self._from_merged(T.tt_add(self._merged(), (-1 * other)._merged()))

    def __neg__(self) -> Any:
        return -1 * self

    def __mul__(self, alpha: Any) -> Any:
        if isinstance(alpha, _TrainBase) or (hasattr(alpha, "shape") and len(alpha.shape) > 0):
            raise TypeError(f"* takes a scalar; got {type(alpha).__name__} (use @ for products)")
        return self._from_merged(T.tt_scale(self._merged(), alpha, self.central_index))

    __rmul__ = __mul__

    def __truediv__(self, alpha: Any) -> Any:
        return self * (1.0 / alpha)

    def inner(self, other: Any) -> Array:
        """Frobenius inner product ``sum(conj(self) * other)`` without densifying (0-d array)."""
        self._check_same_structure(other, "take the inner product of")
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
        if isinstance(center, bool) or not isinstance(center, int) or not -n <= center < n:
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
        out = []
        for s in self.bond_singular_values():
            p = B.to_numpy(s).astype("float64") ** 2
            tot = p.sum()
            p = p[p > 0] / tot if tot > 0 else p[:0]
            out.append(float(-(p * np.log(p)).sum()))
        return out

    def copy(self) -> Any:
        return self._from_merged(
            [ar.do("copy", c) if not B.is_torch(c) else c.clone() for c in self._merged()],
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

    def _apply_equation(self, batched: bool) -> str:
        n = len(self.cores)
        sym = oe.get_symbol
        bond = [sym(k) for k in range(n + 1)]
        rows = [sym(n + 1 + k) for k in range(n)]
        cols = [sym(2 * n + 1 + k) for k in range(n)]
        batch = sym(3 * n + 1) if batched else ""
        ins = ",".join(bond[k] + rows[k] + cols[k] + bond[k + 1] for k in range(n))
        return f"{ins},{''.join(cols)}{batch}->{bond[0]}{''.join(rows)}{bond[n]}{batch}"

    def apply_cost(self, batch: int | None) -> dict[str, int]:
        """FLOPs of the two ways to compute ``W @ x`` for ``x`` of shape (J, batch).

        Returns ``{"cores": ..., "dense": ...}``: contracting x through the cores in the
        FLOP-optimal order, and rebuilding W then one GEMM.
        """
        return dict(_apply_costs(tuple(_shape_of(c) for c in self.cores), batch))

    def apply(self, x: Array, *, method: str = "auto") -> Array:
        """``W @ x`` without forming W unless that is cheaper.

        Parameters
        ----------
        x : array, shape (J,) or (J, batch)
            Same backend as the cores.
        method : {"auto", "dense", "cores"}
            "cores": contract x through the cores (FLOP-optimal order, plan cached);
            "dense": rebuild W, then one GEMM; "auto": "cores" only where its FLOP count
            times ``CORES_FLOP_WEIGHT`` is below the dense path's (the cores path runs as many
            small contractions with transposes, the dense path as one large GEMM).

        Returns
        -------
        array, shape (I,) or (I, batch)
        """
        if method not in APPLY_METHODS:
            raise ValueError(f"unknown method={method!r}; expected one of {APPLY_METHODS}")
        nd = len(x.shape)
        i, j = self.shape
        if nd not in (1, 2) or int(x.shape[0]) != j:
            raise ValueError(
                f"x has shape {_shape_of(x)}; expected ({j},) or ({j}, batch) for an MPO of "
                f"shape {self.shape}"
            )
        batch = int(x.shape[1]) if nd == 2 else None
        if method == "auto":
            cost = self.apply_cost(batch)
            weighted = CORES_FLOP_WEIGHT * cost["cores"]
            method = "dense" if cost["dense"] <= weighted else "cores"
        if method == "dense":
            return self.to_dense() @ x
        xs = ar.do("reshape", x, self.col_dims + ((batch,) if batch is not None else ()))
        y = contract(self._apply_equation(batch is not None), *self.cores, xs)
        return ar.do("reshape", y, (i, batch) if batch is not None else (i,))

    def __matmul__(self, other: Any) -> Any:
        if isinstance(other, MPO):
            return self.matmul(other)
        return self.apply(other)

    def __rmatmul__(self, other: Any) -> Any:
        """``x @ W`` for x of shape (batch, I) or (I,): computed as ``(W^T @ x^T)^T``."""
        if len(other.shape) == 1:
            return self.T.apply(other)
        return self.T.apply(other.T).T

    def matmul(self, other: MPO) -> MPO:
        """MPO @ MPO: cores multiply pairwise, bond dims multiply (no truncation).

        Requires ``self.col_dims == other.row_dims``; follow with :meth:`compress`.
        """
        if not isinstance(other, MPO):
            raise TypeError(f"matmul takes an MPO; got {type(other).__name__}")
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
