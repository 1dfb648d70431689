"""Functional core of the tensor-train algebra, on lists of 3-D cores.

A tensor train of order n is a list of cores of shape ``(r_{k-1}, d_k, r_k)`` with
``r_0 = r_n = 1``. An MPO is the same train with each physical index ``d_k = i_k * j_k``
split into (row, col); the classes in :mod:`tnlm.mpo` merge and split that index and call
the functions here, so every identity is implemented (and tested) once.

References
----------
I. V. Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), 2011.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import autoray as ar
import opt_einsum as oe

from . import _backend as B
from ._types import Array
from .contract import contract
from .truncation import BondTruncation, TruncationReport, truncated_split

__all__ = [
    "tt_svd",
    "tt_to_dense",
    "tt_add",
    "tt_scale",
    "tt_inner",
    "tt_orthogonalize",
    "tt_round",
    "tt_norm",
    "dense_equation",
]


class _Budget:
    """Per-bond error allowance for a global relative tolerance.

    The total squared budget ``(tol * ||A||)**2`` is split evenly over the bonds still to be
    truncated, and what a bond leaves unused is passed on to the next ones. Because the bond
    errors are orthogonal, ``sum_k eps_k**2 <= budget`` guarantees
    ``||A - A'||_F <= tol * ||A||_F``; the even split alone is Oseledets' bound
    ``tol * ||A|| / sqrt(n - 1)`` per bond.
    """

    def __init__(self, tol: float | None, norm: float, n_bonds: int) -> None:
        self.remaining = None if tol is None else (tol * norm) ** 2
        self.left = n_bonds

    def delta(self) -> float | None:
        if self.remaining is None:
            return None
        return math.sqrt(max(self.remaining, 0.0) / max(self.left, 1))

    def spend(self, err: float) -> None:
        self.left -= 1
        if self.remaining is not None:
            self.remaining -= err * err


def tt_svd(
    t: Array,
    dims: Sequence[int],
    caps: Sequence[int | None],
    tol: float | None,
    method: str = "auto",
    seed: int = 0,
) -> tuple[list[Array], TruncationReport]:
    """TT-SVD: left-to-right sweep of truncated SVDs (Oseledets 2011, Alg. 1).

    Parameters
    ----------
    t : array, shape (prod(dims),) or dims
    dims : sequence of int, length n
    caps : sequence of (int or None), length n - 1
    tol : float or None
        Global relative Frobenius tolerance.

    Returns
    -------
    cores : list of array, shapes (r_{k-1}, d_k, r_k)
    report : TruncationReport
    """
    with B.blas_threads_for(t):
        return _tt_svd_sweep(t, dims, caps, tol, method, seed)


def _tt_svd_sweep(
    t: Array,
    dims: Sequence[int],
    caps: Sequence[int | None],
    tol: float | None,
    method: str,
    seed: int,
) -> tuple[list[Array], TruncationReport]:
    n = len(dims)
    norm = B.fnorm(t)
    budget = _Budget(tol, norm, n - 1)
    cores: list[Array] = []
    bonds: list[BondTruncation] = []
    c = ar.do("reshape", t, (dims[0], -1))  # (d_1, d_2 ... d_n)
    r = 1
    for k in range(n - 1):
        c = ar.do("reshape", c, (r * dims[k], -1))  # (r_{k-1} d_k, d_{k+1} ... d_n)
        u, c, info = truncated_split(c, caps[k], budget.delta(), method, seed + k)
        # u: (r_{k-1} d_k, r_k) left-orthonormal; c = u^H c: (r_k, d_{k+1} ... d_n)
        budget.spend(info.error)
        bonds.append(info)
        cores.append(ar.do("reshape", u, (r, dims[k], info.rank)))  # (r_{k-1}, d_k, r_k)
        r = info.rank
    cores.append(ar.do("reshape", c, (r, dims[-1], 1)))  # (r_{n-1}, d_n, 1)
    return cores, TruncationReport(norm=norm, bonds=tuple(bonds))


def dense_equation(n: int, legs: int = 1) -> str:
    """Einsum equation contracting n cores with ``legs`` physical indices each.

    For legs=2 (an MPO) the output lists all row indices, then all column indices:
    ``(b_0, i_1..i_n, j_1..j_n, b_n)``.
    """
    bond = [oe.get_symbol(k) for k in range(n + 1)]
    phys = [[oe.get_symbol(n + 1 + legs * k + m) for m in range(legs)] for k in range(n)]
    ins = ",".join(bond[k] + "".join(phys[k]) + bond[k + 1] for k in range(n))
    out = bond[0] + "".join("".join(p[m] for p in phys) for m in range(legs)) + bond[n]
    return f"{ins}->{out}"


def tt_to_dense(cores: Sequence[Array]) -> Array:
    """Contract a train into its full tensor, shape ``(d_1, ..., d_n)``."""
    dims = tuple(int(c.shape[1]) for c in cores)
    if len(cores) == 1:
        return ar.do("reshape", cores[0], dims)
    full = contract(dense_equation(len(cores)), *cores)  # (1, d_1, ..., d_n, 1)
    return ar.do("reshape", full, dims)


def tt_add(a: Sequence[Array], b: Sequence[Array]) -> list[Array]:
    """Cores of ``A + B``: block-diagonal cores, bond dims add (Oseledets 2011, Sec. 4.1)."""
    n = len(a)
    if n == 1:
        return [a[0] + b[0]]
    out = []
    for k, (x, y) in enumerate(zip(a, b)):
        ra, d, sa = x.shape
        rb, _, sb = y.shape
        if k == 0:
            out.append(ar.do("concatenate", (x, y), axis=2))  # (1, d, sa + sb)
        elif k == n - 1:
            out.append(ar.do("concatenate", (x, y), axis=0))  # (ra + rb, d, 1)
        else:
            top = ar.do("concatenate", (x, B.zeros_like_shape((ra, d, sb), x)), axis=2)
            bot = ar.do("concatenate", (B.zeros_like_shape((rb, d, sa), x), y), axis=2)
            z = ar.do("concatenate", (top, bot), axis=0)  # (ra + rb, d, sa + sb)
            out.append(z)
    return out


def tt_scale(cores: Sequence[Array], alpha: Any, index: int) -> list[Array]:
    """Cores of ``alpha * A``: the factor goes into core ``index``."""
    out = list(cores)
    out[index] = out[index] * alpha
    return out


def tt_inner(a: Sequence[Array], b: Sequence[Array]) -> Array:
    """``<A, B> = sum conj(A) * B`` by a left-to-right sweep, never forming A or B.

    ::

        E_k = E_{k-1} . conj(a_k) . b_k      cost O(n d r^3)
    """
    conj_first = [x.conj() if _is_complex(x) else x for x in a]
    env = contract("xdy,xdz->yz", conj_first[0], b[0])  # (ra_1, rb_1)
    for x, y in zip(conj_first[1:], b[1:]):
        env = contract("ab,adc,bde->ce", env, x, y)  # (ra_k, rb_k)
    return env[0, 0]


def _is_complex(x: Array) -> bool:
    if B.is_torch(x):
        return bool(x.dtype.is_complex)
    return x.dtype.kind == "c"


def tt_orthogonalize(cores: Sequence[Array], center: int) -> list[Array]:
    """Mixed-canonical form around ``center`` by QR sweeps.

    Cores left of ``center`` become left-orthonormal (reshaped to ``(r d, r')`` their columns
    are orthonormal), cores right of it right-orthonormal; the full tensor is unchanged.
    Bond dimensions may shrink to ``min(r d, r')`` where they exceeded it.
    """
    out = list(cores)
    n = len(out)
    for k in range(center):
        r, d, s = out[k].shape
        q, rr = B.qr(ar.do("reshape", out[k], (r * d, s)))  # (r d, m), (m, s)
        out[k] = ar.do("reshape", q, (r, d, q.shape[1]))
        out[k + 1] = contract("ab,bdc->adc", rr, out[k + 1])
    for k in range(n - 1, center, -1):
        r, d, s = out[k].shape
        mat = ar.do("reshape", out[k], (r, d * s))  # (r, d s)
        q, rr = B.qr(_herm(mat))  # q: (d s, m), rr: (m, r)
        out[k] = ar.do("reshape", _herm(q), (q.shape[1], d, s))
        out[k - 1] = contract("adb,bc->adc", out[k - 1], _herm(rr))
    return out


def _herm(x: Array) -> Array:
    return x.conj().T if _is_complex(x) else x.T


def tt_norm(cores: Sequence[Array]) -> Array:
    """Frobenius norm via orthogonalisation (no cancellation, unlike sqrt(<A, A>))."""
    ortho = tt_orthogonalize(cores, len(cores) - 1)
    return ar.do("linalg.norm", ar.do("reshape", ortho[-1], (-1,)))


def tt_round(
    cores: Sequence[Array],
    caps: Sequence[int | None],
    tol: float | None,
    method: str = "auto",
    seed: int = 0,
) -> tuple[list[Array], TruncationReport]:
    """TT-rounding (Oseledets 2011, Alg. 2): right-orthogonalise, then truncate left to right.

    Gives the same tensor (in exact arithmetic) as :func:`tt_svd` of the dense tensor with the
    same caps and tolerance, at cost O(n d r^3) instead of O(prod d).
    """
    n = len(cores)
    out = tt_orthogonalize(cores, 0)
    norm = B.fnorm(out[0])
    budget = _Budget(tol, norm, n - 1)
    bonds: list[BondTruncation] = []
    for k in range(n - 1):
        r, d, s = out[k].shape
        u, rest, info = truncated_split(
            ar.do("reshape", out[k], (r * d, s)), caps[k], budget.delta(), method, seed + k
        )  # u: (r d, r'), rest = u^H core: (r', s)
        budget.spend(info.error)
        bonds.append(info)
        out[k] = ar.do("reshape", u, (r, d, info.rank))
        out[k + 1] = contract("ab,bdc->adc", rest, out[k + 1])
    return out, TruncationReport(norm=norm, bonds=tuple(bonds))
