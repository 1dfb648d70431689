"""Numerics tnlm's algorithms rely on, in every backend: norms and Gram matrices accumulated
in double precision, the SVD and QR with one sign convention, seeded random sketches.

Each operation is dispatched per call (:mod:`tnlm.backend.dispatch`): numpy has blocked
implementations that avoid full-size double-precision copies, torch stays on the tensor's
device, and any other backend (jax, ...) takes the generic path, which computes host-side
values (norms, residuals) in numpy from a gradient-free copy and arrays (Gram matrices,
factors) with autoray in the caller's backend.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import autoray as ar
import numpy as np

from .._types import Array
from .dispatch import (
    dispatching,
    eigh_desc,
    from_numpy,
    is_complex,
    qr_raw,
    register,
    stop_gradient,
    svd_raw,
    to_numpy,
    upcast,
)
from .threads import threads_for

__all__ = [
    "sq_norm",
    "fnorm",
    "gram",
    "residual_sq_norm",
    "row_sq_norms",
    "fix_signs",
    "svd",
    "qr",
    "eigh_desc",
    "randn",
]

#: Elements per block when numpy data is upcast to double precision block by block (fits
#: in L2 cache as float64, and avoids a full-size double-precision copy).
_BLOCK = 1 << 16

#: Elements per upcast block of :func:`gram`.
_GRAM_BLOCK = 1 << 21

#: Outside this range a norm computed as sqrt(sum of squares) may have over- or underflowed.
_UNSAFE = (2.0**-480, 2.0**480)


def _blocks(n: int, m: int) -> Iterator[slice]:
    """Column slices of an (m, n) matrix with about ``_BLOCK`` elements each."""
    step = max(1, _BLOCK // max(m, 1))
    for j in range(0, n, step):
        yield slice(j, min(n, j + step))


def _np_double(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "c":
        return a.astype(np.complex128, copy=False)
    return a.astype(np.float64, copy=False)


def _sumsq(v: np.ndarray) -> float:
    """Sum of ``|v_i|**2`` of a contiguous double-precision vector, without BLAS: numpy's
    ``dot``/``vdot`` go to a multi-threaded BLAS whose spinning workers then slow down the
    single-threaded sweep that follows (measured: a 144 x 144 eigh from 4 ms to 15 ms)."""
    if v.dtype.kind == "c":
        v = v.view(v.real.dtype)  # (re, im) pairs: the same sum of squares
    return float(np.einsum("i,i->", v, v))


def _host(x: Array) -> np.ndarray:
    """A gradient-free numpy copy of ``x`` (the generic path of the host-side values)."""
    return to_numpy(stop_gradient(x))


# --------------------------------------------------------------------------------------------
# norms
# --------------------------------------------------------------------------------------------

sq_norm = dispatching(
    "sq_norm", "``||x||_F**2`` as a Python float, accumulated in double precision."
)


@register("sq_norm", "numpy")
def _numpy_sq_norm(x: Array) -> float:
    a = np.asarray(x)
    if a.dtype in (np.float64, np.complex128):
        with np.errstate(over="ignore", under="ignore"):  # callers check the result
            return _sumsq(np.ascontiguousarray(a).ravel())
    flat = a.reshape(1, -1)
    total = 0.0
    for sl in _blocks(flat.shape[1], 1):
        total += _sumsq(_np_double(flat[0, sl]))
    return total


@register("sq_norm")
def _generic_sq_norm(x: Array) -> float:
    return float(_numpy_sq_norm(_host(x)))


@register("sq_norm", "torch")
def _torch_sq_norm(x: Array) -> float:
    import torch

    t = x.detach()
    dt = torch.complex128 if t.dtype.is_complex else torch.float64
    if t.dtype != dt:
        t = t.to(dt)
    nrm = float(torch.linalg.vector_norm(t))
    return nrm * nrm


fnorm = dispatching(
    "fnorm",
    """Frobenius norm of ``x`` as a Python float, accumulated in double precision (without a
    full-size double-precision copy of a single-precision numpy array), and scaled by the
    largest entry where the sum of squares would overflow or underflow.""",
)


@register("fnorm", "numpy")
def _numpy_fnorm(x: Array) -> float:
    a = np.asarray(x)
    with np.errstate(over="ignore", under="ignore"):  # detected below, and rescaled
        out = math.sqrt(_numpy_sq_norm(a))
    if _UNSAFE[0] < out < _UNSAFE[1] or math.isnan(out):
        return out
    amax = float(np.abs(a).max())
    if amax == 0.0 or math.isinf(amax):
        return out if amax else 0.0
    return amax * math.sqrt(_sumsq((_np_double(a) / amax).ravel()))


@register("fnorm")
def _generic_fnorm(x: Array) -> float:
    return _numpy_fnorm(_host(x))


@register("fnorm", "torch")
def _torch_fnorm(x: Array) -> float:
    import torch

    t = x.detach()
    if not (t.dtype == torch.float64 or t.dtype == torch.complex128):
        t = t.to(torch.complex128 if t.dtype.is_complex else torch.float64)
    out = float(torch.linalg.vector_norm(t))
    if _UNSAFE[0] < out < _UNSAFE[1] or math.isnan(out):
        return out
    amax = float(t.abs().max())
    if amax == 0.0 or math.isinf(amax):
        return out if amax else 0.0
    return amax * float(torch.linalg.vector_norm(t / amax))


row_sq_norms = dispatching(
    "row_sq_norms",
    "Squared Euclidean norm of every row of ``a`` (shape (m, n)), as a float64 numpy array.",
)


@register("row_sq_norms", "numpy")
def _numpy_row_sq_norms(a: Array) -> np.ndarray:
    x = np.asarray(a)
    sq = (x.real**2 + x.imag**2) if x.dtype.kind == "c" else x * x
    return sq.sum(axis=1, dtype=np.float64)  # type: ignore[no-any-return]


@register("row_sq_norms")
def _generic_row_sq_norms(a: Array) -> np.ndarray:
    return _numpy_row_sq_norms(_host(a))


@register("row_sq_norms", "torch")
def _torch_row_sq_norms(a: Array) -> np.ndarray:
    import torch

    t = a.detach()
    sq = (t.real**2 + t.imag**2) if t.dtype.is_complex else t * t
    return sq.sum(dim=1).to(torch.float64).cpu().numpy()  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------
# Gram matrix and residual
# --------------------------------------------------------------------------------------------

gram = dispatching(
    "gram",
    """``c @ c^H`` of an (m, n) matrix, computed and returned in double precision (float64 or
    complex128; jax without x64: the input dtype) in ``c``'s backend, autodiff intact.

    numpy: a real product goes to BLAS ``syrk`` (half the flops of a GEMM), and
    single-precision input is upcast a block of about 2M elements at a time into one reused
    buffer: measured at 256 x 65536 (2 cores), 215 ms against 332 ms for upcasting the whole
    matrix first (a 134 MB copy) and then one ``syrk``.
    """,
)


@register("gram", "numpy")
def _numpy_gram(c: Array) -> Array:
    a = np.asarray(c)
    m, n = a.shape
    cplx = a.dtype.kind == "c"
    with threads_for(float(m) * m * n):
        if a.dtype in (np.float64, np.complex128):
            return a @ a.conj().T if cplx else np.dot(a, a.T)
        dd = np.dtype(np.complex128 if cplx else np.float64)
        step = max(256, _GRAM_BLOCK // max(m, 1))
        if step >= n:
            x = a.astype(dd)
            return x @ x.conj().T if cplx else np.dot(x, x.T)
        g = np.zeros((m, m), dtype=dd)
        buf = np.empty((m, step), dtype=dd)
        for j in range(0, n, step):
            w = min(step, n - j)
            blk = buf[:, :w]
            np.copyto(blk, a[:, j : j + w])
            g += blk @ blk.conj().T if cplx else np.dot(blk, blk.T)
        return g


@register("gram")
def _generic_gram(c: Array) -> Array:
    t = upcast(c)
    return t @ (ar.do("conj", t).T if is_complex(t) else t.T)


@register("gram", "torch")
def _torch_gram(c: Array) -> Array:
    t = upcast(c)
    return t @ t.mH


residual_sq_norm = dispatching(
    "residual_sq_norm",
    """``residual_sq_norm(c, u, rest)``: ``||c - u @ rest||_F**2`` in double precision, as a
    Python float.

    numpy: formed a few rows at a time (``rest`` stays in cache), so no full-size residual
    or double-precision copy is ever stored.
    """,
)


@register("residual_sq_norm", "numpy")
def _numpy_residual_sq_norm(c: Array, u: Array, rest: Array) -> float:
    a = np.asarray(c)
    m, n = a.shape
    u64 = _np_double(np.asarray(u))
    r64 = _np_double(np.asarray(rest))
    # tiles of about _BLOCK elements: a few rows of a short matrix, or column blocks of a wide
    # one (where one row of ``rest`` would already be large)
    rstep = min(m, 32, _BLOCK // max(n, 1))
    if rstep >= 4:
        cstep = n
    else:
        rstep, cstep = m, max(256, 2 * _BLOCK // max(m, 1))
    total = 0.0
    for i in range(0, m, rstep):
        for j in range(0, n, cstep):
            blk = _np_double(a[i : i + rstep, j : j + cstep])
            blk = blk - u64[i : i + rstep] @ r64[:, j : j + cstep]
            total += _sumsq(blk.ravel())
    return total


@register("residual_sq_norm")
def _generic_residual_sq_norm(c: Array, u: Array, rest: Array) -> float:
    return _numpy_residual_sq_norm(_host(c), _host(u), _host(rest))


@register("residual_sq_norm", "torch")
def _torch_residual_sq_norm(c: Array, u: Array, rest: Array) -> float:
    import torch

    dt = torch.complex128 if c.dtype.is_complex else torch.float64
    r = c.detach().to(dt) - u.detach().to(dt) @ rest.detach().to(dt)
    nrm = float(torch.linalg.vector_norm(r))
    return nrm * nrm


# --------------------------------------------------------------------------------------------
# SVD and QR with one sign convention
# --------------------------------------------------------------------------------------------


def _unit_phase(p: Array) -> Array:
    """``p / |p|`` where ``p != 0``, else 1 (any backend; the same operations as before the
    dispatch existed, so numpy and torch results are unchanged)."""
    mag = ar.do("abs", p)
    nz = mag > 0
    one = ar.do("ones_like", p)
    return ar.do("where", nz, p / ar.do("where", nz, mag, ar.do("ones_like", mag)), one)


fix_signs = dispatching(
    "fix_signs",
    """``fix_signs(u, vh)``: make the largest-magnitude entry of every column of ``u`` real
    and positive.

    Applying the inverse phase to the matching row of ``vh`` leaves ``u @ diag(s) @ vh``
    unchanged, and makes the factors unique for distinct singular values, whatever the
    backend.
    """,
)


@register("fix_signs", "numpy")
def _numpy_fix_signs(u: Array, vh: Array) -> tuple[Array, Array]:
    if u.shape[1] == 0:
        return u, vh
    idx = np.argmax(np.abs(u), axis=0)
    piv = u[idx, np.arange(u.shape[1])]
    piv_mag = np.abs(piv)
    ph = np.where(piv_mag > 0, piv / np.where(piv_mag > 0, piv_mag, 1), 1).astype(u.dtype)
    return u * ph.conj()[None, :], vh * ph[:, None]


@register("fix_signs", "torch")
def _torch_fix_signs(u: Array, vh: Array) -> tuple[Array, Array]:
    import torch

    if u.shape[1] == 0:
        return u, vh
    idx = torch.argmax(u.abs(), dim=0)
    pivot = u.gather(0, idx[None, :])[0]
    mag = pivot.abs()
    phase = torch.where(mag > 0, pivot / torch.where(mag > 0, mag, 1), torch.ones_like(pivot))
    return u * phase.conj()[None, :], vh * phase[:, None]


@register("fix_signs")
def _generic_fix_signs(u: Array, vh: Array) -> tuple[Array, Array]:
    if u.shape[1] == 0:
        return u, vh
    idx = ar.do("argmax", ar.do("abs", u), axis=0)
    piv = u[idx, np.arange(u.shape[1])]
    ph = _unit_phase(piv)
    return u * ar.do("conj", ph)[None, :], vh * ph[:, None]


def svd(a: Array) -> tuple[Array, Array, Array]:
    """Thin SVD ``a = u @ diag(s) @ vh`` in ``a``'s backend, with tnlm's sign convention.

    Parameters
    ----------
    a : array, shape (m, n)

    Returns
    -------
    u : array, shape (m, k)
    s : array, shape (k,)  (real, descending)
    vh : array, shape (k, n)
        with ``k = min(m, n)``.

    numpy uses LAPACK's divide-and-conquer driver (gesdd) and falls back to gesvd when it
    fails to converge; torch the same drivers through torch, with a backward pass that stays
    finite at degenerate spectra; other backends their own ``linalg.svd`` and its gradient.
    """
    u, s, vh = svd_raw(a)
    u, vh = fix_signs(u, vh)
    return u, s, vh


_qr_phase = dispatching("qr_phase", "``qr_phase(q, r)``: make the diagonal of ``r`` real >= 0.")


@register("qr_phase", "numpy")
def _numpy_qr_phase(qn: Array, rn: Array) -> tuple[Array, Array]:
    dn = np.diagonal(rn)
    dn_mag = np.abs(dn)
    ph = np.where(dn_mag > 0, dn / np.where(dn_mag > 0, dn_mag, 1), 1).astype(qn.dtype)
    return qn * ph[None, :], rn * ph.conj()[:, None]


@register("qr_phase", "torch")
def _torch_qr_phase(q: Array, r: Array) -> tuple[Array, Array]:
    import torch

    d = torch.diagonal(r)
    mag = d.abs()
    phase = torch.where(mag > 0, d / torch.where(mag > 0, mag, 1), torch.ones_like(d))
    return q * phase[None, :], r * phase.conj()[:, None]


@register("qr_phase")
def _generic_qr_phase(q: Array, r: Array) -> tuple[Array, Array]:
    ph = _unit_phase(ar.do("diag", r))
    return q * ph[None, :], r * ar.do("conj", ph)[:, None]


def qr(a: Array) -> tuple[Array, Array]:
    """Reduced QR ``a = q @ r`` in ``a``'s backend.

    Parameters
    ----------
    a : array, shape (m, n)

    Returns
    -------
    q : array, shape (m, k)
    r : array, shape (k, n)
        with ``k = min(m, n)``; the diagonal of ``r`` is made non-negative (real), so that
        the factorisation is unique for full-rank ``a`` on every backend.
    """
    q, r = qr_raw(a)
    return _qr_phase(q, r)  # type: ignore[no-any-return]


def randn(shape: tuple[int, ...], ref: Array, seed: int) -> Array:
    """Standard normal samples of ``shape`` like ``ref``, from a private seeded generator.

    The samples are drawn by numpy's PCG64 generator whatever the backend and then moved to
    ``ref``'s backend, dtype and device, so every backend sees the same random sketch.
    No global random state is read or changed. Complex dtypes get complex normal samples.
    """
    rng = np.random.default_rng(seed)
    data: Any
    if is_complex(ref):
        data = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        data = rng.standard_normal(shape)
    return from_numpy(ref, data)
