"""Truncation of one bond (its routes and SVD drivers) and the truncation report.

Every decomposition and rounding in tnlm goes through :func:`truncated_split`, so rank
selection, error accounting and the SVD driver are decided in one place.

Error accounting
----------------
A sweep in canonical form commits an error ``eps_k`` at bond ``k`` that is orthogonal to all
other bonds' errors, so ``||W - W'||_F**2 = sum_k eps_k**2`` exactly (Oseledets 2011,
Thm. 2.2). ``eps_k`` is the norm of the discarded singular values for the exact SVD, the norm
of the discarded rows of ``V^H C`` for the Gram route (equal to ``||C - V_r V_r^H C||_F``, V
orthogonal), 0 for a full-rank QR step, and the explicitly computed residual norm
``||C - U_k U_k^H C||_F`` for the randomized SVD (whose discarded spectrum is never formed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend as B
from ._types import Array

__all__ = [
    "TruncationReport",
    "truncated_split",
    "split_route",
    "SVD_METHODS",
    "BondTruncation",
]

#: Names accepted by ``method=``.
SVD_METHODS: tuple[str, ...] = ("auto", "svd", "rsvd")

#: Extra random directions sampled by the randomized SVD, and its power iterations.
RSVD_OVERSAMPLE = 10
RSVD_POWER_ITERS = 2


@dataclass(frozen=True)
class BondTruncation:
    """What one bond's truncation kept and cut.

    Attributes
    ----------
    rank : int
        Bond dimension kept.
    error : float
        Frobenius norm of what was discarded at this bond (absolute).
    kept : array, shape (rank,)
        Kept singular values (descending, real, in the input's backend).
    discarded : array, shape (m,) or None
        Discarded singular values; ``None`` where a randomized SVD never formed them.
    method : str
        "svd" (LAPACK), "rsvd" (randomized), "gram" (Gram route of a wide unfolding), "qr"
        (QR step of a tall unfolding kept at full rank) or "identity" (a wide unfolding that
        nothing could truncate: identity core, singular values from the double-precision
        Gram matrix); see :func:`truncated_split` and :func:`split_route`.
    """

    rank: int
    error: float
    kept: Array
    discarded: Array | None
    method: str


@dataclass(frozen=True)
class TruncationReport:
    """The error a decomposition or rounding committed, bond by bond.

    Attributes
    ----------
    norm : float
        Frobenius norm of the input.
    bonds : tuple of BondTruncation
        One entry per internal bond (n - 1 of them).
    """

    norm: float
    bonds: tuple[BondTruncation, ...] = field(default_factory=tuple)

    @property
    def bond_errors(self) -> tuple[float, ...]:
        """Absolute Frobenius error committed at each bond."""
        return tuple(b.error for b in self.bonds)

    @property
    def error(self) -> float:
        """Total absolute error ``||W - W'||_F = sqrt(sum_k eps_k**2)``."""
        return math.hypot(*self.bond_errors)  # no overflow for huge errors

    @property
    def relative_error(self) -> float:
        """``error / ||W||_F`` (0 for a zero input)."""
        return self.error / self.norm if self.norm > 0 else 0.0

    @property
    def kept(self) -> tuple[Array, ...]:
        """Kept singular values at each bond."""
        return tuple(b.kept for b in self.bonds)

    @property
    def discarded(self) -> tuple[Array | None, ...]:
        """Discarded singular values at each bond (``None`` where not formed)."""
        return tuple(b.discarded for b in self.bonds)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(b.rank for b in self.bonds)

    def __repr__(self) -> str:
        return (
            f"TruncationReport(ranks={self.ranks}, error={self.error:.3e}, "
            f"relative_error={self.relative_error:.3e})"
        )


def _sq_tail(s: Array) -> list[float]:
    """``tail[r] = sum_{i >= r} s_i**2`` for r = 0..len(s), accumulated in float64."""
    vals = B.to_numpy(s).astype("float64")
    tail = [0.0] * (len(vals) + 1)
    acc = 0.0
    for i in range(len(vals) - 1, -1, -1):
        acc += float(vals[i]) ** 2
        tail[i] = acc
    return tail


def _choose_rank(tail: Sequence[float], cap: int | None, delta: float | None) -> int:
    full = len(tail) - 1
    r = full
    if delta is not None:
        r = next(k for k in range(1, full + 1) if tail[k] <= delta * delta) if full else 0
    if cap is not None:
        r = min(r, cap)
    return max(r, min(1, full))


def _exact(c: Array, cap: int | None, delta: float | None) -> tuple[Any, ...]:
    u, s, vh = B.svd(c)
    tail = _sq_tail(s)
    r = _choose_rank(tail, cap, delta)
    err = math.sqrt(tail[r])
    return u[:, :r], s[:r], vh[:r, :], err, s[r:], "svd"


def _herm(x: Array) -> Array:
    return x.conj().T if B.is_complex(x) else x.T


def _small_svd_of_wide(b: Array) -> tuple[Array, Array, Array]:
    """``(u, s2, p)`` for a wide ``b`` (k x n, k <= n) by its Gram matrix, in double precision:
    ``u`` (k x k) orthonormal eigenvectors of ``b b^H`` (descending), ``p = u^H b`` (k x n)
    and ``s2`` the squared row norms of ``p`` (float64 numpy), rows sorted by ``s2``.

    ``s2`` are Rayleigh quotients, i.e. the squared singular values to double-precision
    accuracy for the well-separated ones; whatever the accuracy of ``u``, ``u`` is orthonormal
    and ``sum_{i >= r} s2[i] = ||b - u_r u_r^H b||_F**2`` exactly (up to rounding of the
    products), so an error computed from ``s2`` is the measured residual.
    """
    bw = B.upcast(b)  # (k, n) in float64 / complex128
    _, v = B.eigh_desc(bw @ _herm(bw))  # (k, k)
    p = _herm(v) @ bw  # (k, n)
    s2 = B.row_sq_norms(p)
    order = sorted(range(len(s2)), key=lambda i: -s2[i])
    if order != list(range(len(s2))):
        v, p, s2 = v[:, order], p[order, :], s2[order]
    return v, s2, p


#: Machine epsilon of float64, the precision of every Gram matrix.
_EPS64 = float(np.finfo(np.float64).eps)

#: Relative accuracy the Gram route guarantees for a reported float64 error before it
#: measures the residual instead (single precision: its own epsilon).
TAIL_RTOL = 1e-10


def _gram(
    c: Array, cap: int | None, delta: float | None, seed: int, g: Array | None = None
) -> tuple[Any, ...]:
    """Exact truncation of a wide unfolding (m <= n) through its m x m Gram matrix.

    ``G = C C^H`` is formed in double precision (float32 input is upcast: more accurate than
    a float32 SVD; BLAS ``syrk``, ``m^2 n`` flops) and diagonalised, ``G = V diag(w) V^H``;
    the rank is chosen from the eigenvalue tails, and only the kept rows of the next core's
    matrix, ``P = V_r^H C``, are formed (``2 r m n`` flops). ``g`` is ``G`` when the caller
    already has it.

    Accuracy. ``V`` is orthonormal to double precision, so the error committed is exactly
    ``||C - V_r V_r^H C||_F``. It is reported as ``sqrt(sum_{i >= r} w_i)`` where that sum's
    uncertainty (bounded by ``8 m eps64 w_1``) makes at most a relative ``eps`` (float32
    input) or ``TAIL_RTOL`` (float64) of the reported error, and is otherwise measured
    directly as the residual norm ``||C - U P||_F`` in double precision (small cuts). Kept
    singular values are the row norms of ``P`` (Rayleigh quotients) for double-precision
    input and ``sqrt(w)`` otherwise; discarded ones are ``sqrt(w)``, accurate to about
    ``sqrt(8 m eps64) s_1`` in absolute terms. A
    tolerance is met with that uncertainty as margin. Where the split point falls in the
    part of the spectrum the Gram matrix cannot resolve (``w_r < 1e4 m eps64 w_1``), LAPACK's
    SVD is used instead.
    """
    m, n = c.shape
    if g is None:
        g = B.gram(c)
    w_b, v = B.eigh_desc(g)
    w = np.maximum(B.to_numpy(w_b).astype(np.float64), 0.0)
    unc = 8.0 * m * _EPS64 * float(w[0]) if m else 0.0
    tail = np.concatenate([np.cumsum(w[::-1])[::-1], [0.0]]).tolist()
    safe = [t + unc for t in tail[:-1]] + [0.0]  # a tolerance is met despite the uncertainty
    r = _choose_rank(safe, cap, delta)
    if 0 < r < m and w[r - 1] < 1e4 * m * _EPS64 * w[0]:
        return _exact_split(c, cap, delta, seed)
    if r > _choose_rank(tail, cap, delta):
        # the tolerance is below what the Gram matrix resolves (its uncertainty, not the
        # data, keeps rank r): the SVD finds the rank the exact method finds
        return _exact_split(c, cap, delta, seed)
    u = B.cast_like(v[:, :r], c)  # (m, r)
    with B.threads_for(2.0 * r * m * n):
        rest = _herm(u) @ c  # (r, n) = diag(s) vh
    u, rest = B.fix_signs(u, rest)  # the convention of B.svd
    eps = B.real_dtype_eps(c)
    double = eps <= _EPS64
    kept2 = B.row_sq_norms(rest) if double else w[:r]
    if double and np.any(np.diff(kept2) > 0):
        order = np.argsort(-kept2, kind="stable")
        u, rest, kept2 = u[:, order.tolist()], rest[order.tolist(), :], kept2[order]
    if r == m:
        err = 0.0
    elif unc <= 2.0 * max(eps, TAIL_RTOL) * tail[r]:
        err = math.sqrt(tail[r])
    else:
        err = math.sqrt(B.residual_sq_norm(c, u, rest))
    sv = B.like_real(np.sqrt(np.concatenate([kept2, w[r:]])), c)
    return u, sv[:r], rest, err, sv[r:], "gram"


def _qr(c: Array) -> tuple[Any, ...]:
    """No truncation of a tall unfolding (m > n, rank n kept): ``C = Q R`` (Householder,
    positive diagonal), so the core is Q and the next matrix R; the singular values are
    ``svdvals(R)``, without singular vectors. Error 0 (quimb's exact ``from_dense`` does the
    same QR sweep)."""
    q, rr = B.qr(c)  # (m, n), (n, n)
    s = B.svdvals(rr)
    return q, s, rr, 0.0, s[:0], "qr"


def _randomized_parts(c: Array, cap: int, seed: int) -> tuple[Array, Array, Array, Array]:
    """Randomized range finder with power iterations (Halko, Martinsson, Tropp 2011, Alg. 4.4),
    renormalised by LU between products and orthonormalised by QR at the end (their Sec. 4.5;
    the span is that of Alg. 4.4, at about half the cost of a QR per product). Returns
    ``(u, s, rest, err)``: u (m, k) orthonormal, rest = u^H c (k, n), err = ||c - u rest||_F
    measured in double precision."""
    m, n = c.shape
    k = min(cap, m, n)
    ell = min(k + RSVD_OVERSAMPLE, m, n)
    # the sampled basis q is a constant for autograd (the LU and QR of a rank-deficient
    # sketch have no finite derivative); gradients flow through b = q^H c and its SVD
    cd = B.stop_gradient(c)
    ch = _herm(cd)  # (n, m)
    omega = B.randn((n, ell), c, seed)
    with B.threads_for(2.0 * m * n * ell):
        y = cd @ omega  # (m, ell)
    for _ in range(RSVD_POWER_ITERS):  # LU between products, QR at the end (Halko Sec. 4.5)
        with B.threads_for(2.0 * m * n * ell):
            z = B.lu_basis(ch @ B.lu_basis(y))  # (n, ell)
            y = cd @ z  # (m, ell)
    q, _ = B.qr(y)  # (m, ell) orthonormal
    with B.threads_for(2.0 * m * n * ell):
        b = _herm(q) @ c  # (ell, n)
    ub, s2, p = _small_svd_of_wide(b)  # ub (ell, ell), p = ub^H b, in double precision
    u = q @ B.cast_like(ub[:, :k], q)  # (m, k)
    rest = B.cast_like(p[:k], c)  # (k, n) = u^H c = diag(s) vh
    u, rest = B.fix_signs(u, rest)  # same convention as the exact path
    s = B.like_real(np.sqrt(np.maximum(s2[:k], 0.0)), c)
    return u, s, rest, math.sqrt(B.residual_sq_norm(c, u, rest))


def _randomized_split(c: Array, cap: int | None, delta: float | None, seed: int) -> tuple[Any, ...]:
    if cap is None or delta is not None:
        u, s, vh, err, disc, used = _exact(c, cap, delta)
        return u, s, s[:, None] * vh, err, disc, used
    u, s, rest, err = _randomized_parts(c, cap, seed)
    return u, s, rest, err, None, "rsvd"


def _rsvd_pays(m: int, n: int, cap: int) -> bool:
    """Whether the randomized SVD is expected to be faster than the exact route for an
    m x n unfolding with rank cap ``cap``.

    Flop model, calibrated on 2 cores (OpenBLAS and MKL, float32 and float64, unfoldings of
    the 768 / 3072 / 4096 matrices): the randomized SVD's GEMMs
    ``(2 q + 2) 2 m n l + 2 m n k`` count 3x for its QRs, sampling and residual; the Gram
    route of a wide unfolding costs ``3 m^2 n + 10 m^3``; LAPACK's SVD of a tall one
    ``12 m n^2 + 40 n^3``. Measured: the Gram route beats the randomized SVD on every wide
    unfolding of those matrices (e.g. 256 x 65536, cap 64: 0.5-0.7 s vs 1.8-3.5 s on one
    thread), the randomized SVD wins on the tall ones (4096 x 1024, cap 64: 0.19 s vs 1.4 s).
    """
    small = min(m, n)
    k = min(cap, small)
    ell = min(k + RSVD_OVERSAMPLE, small)
    if 2 * ell > small:
        return False
    rsvd = 3.0 * ((2 * RSVD_POWER_ITERS + 2) * 2 * m * n * ell + 2 * m * n * k)
    if m <= n:
        exact = 3.0 * m * m * n + 10.0 * m**3
    else:
        exact = 12.0 * m * n * n + 40.0 * n**3
    return rsvd < exact


def split_route(m: int, n: int, cap: int | None, delta: float | None, method: str) -> str:
    """The route :func:`truncated_split` takes for an m x n unfolding: "identity", "gram",
    "qr", "rsvd" or "svd".

    "identity" (method "auto" only) is a wide unfolding that nothing can truncate (no
    tolerance, the cap at least m): its left factor is the identity and the matrix passes
    on unchanged; a TT sweep uses it (``truncated_split`` itself never returns it) and takes
    the bond's singular values from a later Gram matrix.
    """
    if method == "svd":
        return "svd"
    if method == "rsvd":
        return "rsvd" if cap is not None and delta is None else "svd"
    if cap is not None and delta is None and cap < min(m, n) and _rsvd_pays(m, n, cap):
        return "rsvd"
    if m <= n:
        return "identity" if delta is None and (cap is None or cap >= m) else "gram"
    if delta is None and (cap is None or cap >= n):
        return "qr"
    return "svd"


def _auto_split(
    c: Array, cap: int | None, delta: float | None, seed: int, g: Array | None = None
) -> tuple[Any, ...]:
    m, n = c.shape
    route = split_route(m, n, cap, delta, "auto")
    if route == "rsvd" and B.requires_grad(c):  # exact gradients need the exact split
        route = "gram" if m <= n else "svd"
    if route == "rsvd":
        return _randomized_split(c, cap, delta, seed)
    if route in ("gram", "identity"):
        return _gram(c, cap, delta, seed, g)
    if route == "qr":
        return _qr(c)
    return _exact_split(c, cap, delta, seed)


def _exact_split(c: Array, cap: int | None, delta: float | None, seed: int) -> tuple[Any, ...]:
    """The exact split; ``seed`` is unused (the signature of every entry of ``_SPLITS``)."""
    u, s, vh, err, disc, used = _exact(c, cap, delta)
    return u, s, s[:, None] * vh, err, disc, used


#: The fixed-driver splits; "auto" goes through :func:`_auto_split` (it also takes the Gram).
_SPLITS: dict[str, Callable[..., tuple[Any, ...]]] = {
    "svd": _exact_split,
    "rsvd": _randomized_split,
}


def check_method(method: str) -> None:
    if method not in SVD_METHODS:
        raise ValueError(f"unknown method={method!r}; expected one of {', '.join(SVD_METHODS)}")


def truncated_split(
    c: Array,
    cap: int | None,
    delta: float | None,
    method: str = "auto",
    seed: int = 0,
    gram: Array | None = None,
) -> tuple[Array, Array, BondTruncation]:
    """Split one unfolding ``c ~= u @ rest`` with u left-orthonormal, as a TT sweep needs it.

    Truncation rule: the smallest rank within ``cap`` whose discarded Frobenius norm is
    ``<= delta``. ``rest = diag(s) @ vh = u^H c`` is returned instead of ``vh``, which lets
    "auto" use routes that never form ``vh`` (:func:`split_route` names the choice):

    * wide unfoldings (m <= n): the Gram route (``c c^H`` diagonalised in double precision,
      ``rest = u^H c`` for the kept rows only), all GEMMs, exact in the same sense as the SVD
      (see :func:`_gram`); ``gram`` is ``c c^H`` in double precision when the caller has it;
    * tall unfoldings kept at full rank (no cap binds, no tolerance): a QR step, with the
      singular values from ``R``;
    * a cap well below the unfolding's size: the randomized SVD where it needs fewer flops
      (:func:`_rsvd_pays`); its error is the measured residual ``||c - u rest||_F``;
    * otherwise LAPACK's SVD.

    "svd" always uses LAPACK's SVD, "rsvd" the randomized SVD (with a cap and no tolerance).

    Returns
    -------
    u : array, shape (m, r)
    rest : array, shape (r, n)
    info : BondTruncation
    """
    check_method(method)
    if method == "auto":
        u, s, rest, err, discarded, used = _auto_split(c, cap, delta, seed, gram)
    else:
        u, s, rest, err, discarded, used = _SPLITS[method](c, cap, delta, seed)
    info = BondTruncation(rank=int(s.shape[0]), error=err, kept=s, discarded=discarded, method=used)
    return u, rest, info
