"""Truncated SVD of one bond, the SVD-method registry, and the truncation report.

Every decomposition and rounding in tnlm goes through :func:`truncated_svd`, so rank
selection, error accounting and the SVD driver are decided in one place.

Error accounting
----------------
A sweep in canonical form commits an error ``eps_k`` at bond ``k`` that is orthogonal to all
other bonds' errors, so ``||W - W'||_F**2 = sum_k eps_k**2`` exactly (Oseledets 2011,
Thm. 2.2). ``eps_k`` is the norm of the discarded singular values for the exact SVD, and the
explicitly computed residual norm ``||C - U_k U_k^H C||_F`` for the randomized SVD (whose
discarded spectrum is never formed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _backend as B
from ._types import Array

__all__ = ["TruncationReport", "truncated_svd", "SVD_METHODS", "BondTruncation"]

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
        "svd" or "rsvd".
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
        return math.sqrt(sum(e * e for e in self.bond_errors))

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


def _exact(c: Array, cap: int | None, delta: float | None, seed: int) -> tuple[Any, ...]:
    u, s, vh = B.svd(c)
    tail = _sq_tail(s)
    r = _choose_rank(tail, cap, delta)
    err = math.sqrt(tail[r])
    return u[:, :r], s[:r], vh[:r, :], err, s[r:], "svd"


def _randomized(c: Array, cap: int | None, delta: float | None, seed: int) -> tuple[Any, ...]:
    """Randomized range finder with power iterations (Halko, Martinsson, Tropp 2011, Alg. 4.4)."""
    m, n = c.shape
    if cap is None or delta is not None:
        return _exact(c, cap, delta, seed)
    k = min(cap, m, n)
    ell = min(k + RSVD_OVERSAMPLE, m, n)
    ch = c.conj().T if _is_complex(c) else c.T  # (n, m)
    omega = B.randn((n, ell), c, seed)
    q, _ = B.qr(c @ omega)  # (m, ell)
    for _ in range(RSVD_POWER_ITERS):
        z, _ = B.qr(ch @ q)  # (n, ell)
        q, _ = B.qr(c @ z)  # (m, ell)
    b = (q.conj().T if _is_complex(c) else q.T) @ c  # (ell, n)
    ub, s, vh = B.svd(b)
    u = q @ ub[:, :k]  # (m, k)
    s, vh = s[:k], vh[:k, :]
    u, vh = B._fix_signs(u, vh)  # noqa: SLF001 -- same convention as the exact path
    resid = c - u @ (s[:, None] * vh)
    err = B.fnorm(resid)
    return u, s, vh, err, None, "rsvd"


def _is_complex(x: Array) -> bool:
    if B.is_torch(x):
        return bool(x.dtype.is_complex)
    return x.dtype.kind == "c"


def _auto(c: Array, cap: int | None, delta: float | None, seed: int) -> tuple[Any, ...]:
    m, n = c.shape
    small = min(m, n)
    if cap is not None and delta is None and small >= 256 and 4 * (cap + RSVD_OVERSAMPLE) <= small:
        return _randomized(c, cap, delta, seed)
    return _exact(c, cap, delta, seed)


_METHODS: dict[str, Callable[..., tuple[Any, ...]]] = {
    "svd": _exact,
    "rsvd": _randomized,
    "auto": _auto,
}


def check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"unknown method={method!r}; expected one of {', '.join(SVD_METHODS)}")


def truncated_svd(
    c: Array, cap: int | None, delta: float | None, method: str = "auto", seed: int = 0
) -> tuple[Array, Array, Array, BondTruncation]:
    """Truncated SVD ``c ~= u @ diag(s) @ vh`` of one unfolding.

    Parameters
    ----------
    c : array, shape (m, n)
    cap : int or None
        Largest rank to keep.
    delta : float or None
        Keep the smallest rank whose discarded Frobenius norm is ``<= delta``.
    method : {"auto", "svd", "rsvd"}
        "svd": LAPACK (gesdd, falling back to gesvd). "rsvd": randomized range finder with
        ``RSVD_POWER_ITERS`` power iterations, used only with a cap and no ``delta``.
        "auto": "rsvd" when the cap is at most a quarter of ``min(m, n)`` (>= 256), else "svd".
    seed : int
        Seed of the randomized SVD's private generator.

    Returns
    -------
    u : array, shape (m, r)
    s : array, shape (r,)
    vh : array, shape (r, n)
    info : BondTruncation
    """
    check_method(method)
    u, s, vh, err, discarded, used = _METHODS[method](c, cap, delta, seed)
    info = BondTruncation(rank=int(s.shape[0]), error=err, kept=s, discarded=discarded, method=used)
    return u, s, vh, info
