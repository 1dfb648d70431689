"""Decompositions: dense matrix -> MPO, dense tensor -> TensorTrain (TT-SVD)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import autoray as ar

from . import backend as B
from ._checks import check_array, check_bond_dims, check_dims, check_tol
from ._tt_ops import rounding_allowance, tt_svd, warn_if_tol_unmet
from ._types import Array, BondDim, MatrixShape
from .factorize import factorize
from .mpo import MPO, TensorTrain
from .truncation import check_method

__all__ = ["mpo_decompose", "tt_decompose", "resolve_matrix_shape"]


def resolve_matrix_shape(shape: MatrixShape, rows: int, cols: int) -> tuple[tuple[int, ...], ...]:
    """Turn ``shape`` (an int n, or ``(row_dims, col_dims)``) into checked factor tuples."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        if shape < 1:
            raise ValueError(
                f"shape as an int is the number of cores and must be >= 1; got {shape}"
            )
        return factorize(rows, int(shape)), factorize(cols, int(shape))
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise TypeError(
            "shape must be an int n (number of cores) or a pair (row_dims, col_dims); "
            f"got {shape!r}"
        )
    row_dims = check_dims(shape[0], "row_dims")
    col_dims = check_dims(shape[1], "col_dims")
    if len(row_dims) != len(col_dims):
        raise ValueError(
            f"row_dims {row_dims} and col_dims {col_dims} have different lengths "
            f"({len(row_dims)} vs {len(col_dims)}); expected one row and one col factor per core"
        )
    if math.prod(row_dims) != rows:
        raise ValueError(
            f"row_dims {row_dims} multiply to {math.prod(row_dims)}, but W has {rows} rows; "
            "expected prod(row_dims) == W.shape[0]"
        )
    if math.prod(col_dims) != cols:
        raise ValueError(
            f"col_dims {col_dims} multiply to {math.prod(col_dims)}, but W has {cols} columns; "
            "expected prod(col_dims) == W.shape[1]"
        )
    return row_dims, col_dims


def _compute_view(x: Array) -> tuple[Array, Any]:
    """``x`` in its compute dtype (half precision runs in float32) and the dtype to return."""
    name = B.compute_dtype_name(x)
    if name == B.dtype_name(x):
        return x, None
    return B.astype(x, name), B.dtype_name(x)


def _cast_back(cores: list[Array], dtype: str | None) -> list[Array]:
    if dtype is None:
        return cores
    return [B.astype(c, dtype) for c in cores]


def mpo_decompose(
    W: Array,
    shape: MatrixShape,
    bond_dim: BondDim = None,
    *,
    tol: float | None = None,
    method: str = "auto",
    seed: int = 0,
) -> MPO:
    """Decompose a matrix into an MPO by TT-SVD, with a reported (and optionally guaranteed)
    truncation error.

    ``W`` of shape ``(I, J)`` with ``I = prod(row_dims)``, ``J = prod(col_dims)`` is viewed
    as a 2n-way tensor with axes interleaved ``(i_1, j_1, ..., i_n, j_n)`` and split by a
    left-to-right sweep of truncated SVDs::

        W[(i_1..i_n), (j_1..j_n)] = W_1[i_1, j_1] W_2[i_2, j_2] ... W_n[i_n, j_n]

    Parameters
    ----------
    W : array, shape (I, J)
        numpy or torch (any device); floating or complex. float16/bfloat16 are computed in
        float32 and the cores returned in the input dtype. Integer and boolean arrays raise
        ``TypeError`` (cast explicitly).
    shape : int or (sequence of int, sequence of int)
        ``(row_dims, col_dims)`` of equal length n; or an int n for balanced factors
        (:func:`tnlm.factorize`).
    bond_dim : None, int or sequence of n-1 ints
        Cap on every bond (quimb's ``max_bond``, TensorLy's ``rank`` without the boundary
        1s, ttpy's ``rmax``). None keeps the full rank
        ``r_k = min(prod_{m<=k} i_m j_m, prod_{m>k} i_m j_m)``.
    tol : float in (0, 1), optional
        Guaranteed relative error ``||W - W'||_F <= tol * ||W||_F`` (ttpy's ``eps``) of the
        cores as computed, rounding included. The budget is spread over the bonds
        (Oseledets: ``tol ||W|| / sqrt(n-1)`` each, with unused budget passed on), less an
        estimate ``rho`` of the rounding error kept aside
        (:func:`tnlm._tt_ops.rounding_allowance`, at most ``tol / 2``). The smallest
        tolerance a dtype can honour is ``2 rho`` (float32, 768 x 3072, 5 cores: about
        4e-5; float64: about 1e-13); below it a ``UserWarning`` names it. If ``bond_dim``
        also binds, the cap wins (with a ``UserWarning``), the report gives the error
        actually committed, and the later bonds still truncate to at least their even share
        of ``tol`` (docs/theory.md, Section 2).
    method : {"auto", "svd", "rsvd"}
        SVD driver per bond: exact LAPACK SVD, randomized SVD (only with a cap and no tol),
        or "auto", which picks per unfolding the fastest route with the exact method's error:
        an identity core where nothing can be cut (the site merges with the next one), the
        Gram route for wide unfoldings (``C C^H`` diagonalised in double precision, all
        GEMMs), a QR step for tall ones kept at full rank, the randomized SVD where a cap is
        far below the unfolding's size (flop model in ``tnlm.truncation._rsvd_pays``), else
        LAPACK's SVD. The report's ``method`` per bond says which ("identity", "gram", "qr",
        "rsvd", "svd"); every reported error is the committed one (see docs/theory.md,
        Section 3a, for its accuracy). On torch tensors that require grad, "auto" takes
        the exact split where it would pick the randomized SVD, and every backward pass is
        finite, degenerate spectra included (docs/theory.md, Section 3b).
    seed : int
        Seed of the randomized SVD (results are deterministic for a given seed).

    Returns
    -------
    MPO
        Cores ``(r_{k-1}, i_k, j_k, r_k)`` in W's backend, dtype and device, with
        ``.report`` (:class:`tnlm.TruncationReport`): per-bond and total error, kept and
        discarded singular values.

    References
    ----------
    I. V. Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), 2011.
    N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness", SIAM Rev. 2011.

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> W = np.random.default_rng(0).standard_normal((64, 48))
    >>> mpo = tnlm.mpo_decompose(W, ((4, 4, 4), (4, 3, 4)), bond_dim=8)
    >>> mpo.bond_dims
    (8, 8)
    >>> err = np.linalg.norm(W - mpo.to_dense())
    >>> bool(abs(err - mpo.report.error) < 1e-9 * np.linalg.norm(W))
    True
    """
    norm = check_array(W, "W", ndim=2)
    rows, cols = int(W.shape[0]), int(W.shape[1])
    row_dims, col_dims = resolve_matrix_shape(shape, rows, cols)
    n = len(row_dims)
    caps = check_bond_dims(bond_dim, n - 1)
    tol = check_tol(tol)
    check_method(method)
    Wc, back = _compute_view(W)
    reserve = _reserve(W, Wc, [i * j for i, j in zip(row_dims, col_dims)], tol)
    # the sweep reads W as (i_1..i_n, j_1..j_n) and interleaves only what each bond needs
    cores, report = tt_svd(
        Wc, row_dims, caps, tol, method, seed, col_dims=col_dims, norm=norm, reserve=reserve
    )
    cores = [
        ar.do("reshape", c, (c.shape[0], i, j, c.shape[2]))  # (r, i, j, r')
        for c, i, j in zip(_cast_back(cores, back), row_dims, col_dims)
    ]
    _warn_if_tol_missed(report, tol, reserve, W)
    return MPO(cores, report)


def tt_decompose(
    T: Array,
    bond_dim: BondDim = None,
    *,
    tol: float | None = None,
    method: str = "auto",
    seed: int = 0,
) -> TensorTrain:
    """Decompose a tensor of any order into a tensor train by TT-SVD.

    Parameters
    ----------
    T : array, shape (d_1, ..., d_n)
    bond_dim, tol, method, seed
        As in :func:`mpo_decompose`.

    Returns
    -------
    TensorTrain
        Cores ``(r_{k-1}, d_k, r_k)`` with ``.report``.

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> T = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    >>> tt = tnlm.tt_decompose(T)
    >>> tt.bond_dims, bool(np.allclose(tt.to_dense(), T))
    ((3, 12, 6), True)
    """
    if not hasattr(T, "shape"):
        raise TypeError(f"T must be an array (numpy, torch, ...); got {type(T).__name__}")
    if len(T.shape) < 1:
        raise ValueError("T must have at least one axis; got a 0-d array")
    norm = check_array(T, "T")
    dims = [int(d) for d in T.shape]
    caps = check_bond_dims(bond_dim, len(dims) - 1)
    tol = check_tol(tol)
    check_method(method)
    Tc, back = _compute_view(T)
    reserve = _reserve(T, Tc, dims, tol)
    cores, report = tt_svd(Tc, dims, caps, tol, method, seed, norm=norm, reserve=reserve)
    _warn_if_tol_missed(report, tol, reserve, T)
    return TensorTrain(_cast_back(cores, back), report)


def _reserve(x: Array, xc: Array, dims: list[int], tol: float | None) -> float:
    """The part of ``tol`` kept aside for rounding (:func:`tnlm._tt_ops.rounding_allowance`)."""
    if tol is None:
        return 0.0
    return rounding_allowance(B.real_dtype_eps(xc), B.real_dtype_eps(x), dims)


def _warn_if_tol_missed(report: Any, tol: float | None, reserve: float, x: Array) -> None:
    warn_if_tol_unmet(report, tol, reserve, B.dtype_name(x), stacklevel=4)
