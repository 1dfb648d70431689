"""Everything that differs between array backends lives here.

The algorithms in tnlm call these helpers (and autoray / opt_einsum, which dispatch on the
array type) and never branch on the backend themselves. Supported: numpy and torch; other
autoray backends work where autoray can translate the calls used here.

Conventions enforced here:

* arrays are created like their input (same backend, dtype and device);
* one SVD sign convention for every backend (see :func:`svd`), so numpy and torch produce the
  same cores;
* LAPACK failures fall back to a more robust driver instead of crashing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import autoray as ar
import numpy as np

from ._types import Array

__all__ = [
    "backend_name",
    "is_torch",
    "to_numpy",
    "like",
    "zeros_like_shape",
    "eye_like",
    "svd",
    "qr",
    "eigh_desc",
    "svdvals",
    "upcast",
    "cast_like",
    "row_sq_norms",
    "like_real",
    "randn",
    "lu_basis",
    "real_dtype_eps",
    "real_dtype_max_exponent",
    "fnorm",
    "sq_norm",
    "gram",
    "residual_sq_norm",
    "check_float_dtype",
    "compute_dtype_of",
    "all_finite",
    "device_of",
    "requires_grad",
    "stop_gradient",
    "dtype_name",
    "blas_threads_for",
    "threads_for",
]

log = logging.getLogger(__name__)


def backend_name(x: Array) -> str:
    """Name of the array library of ``x`` ("numpy", "torch", ...)."""
    return ar.infer_backend(x)


def is_torch(x: Array) -> bool:
    return backend_name(x) == "torch"


def to_numpy(x: Array) -> np.ndarray:
    """A numpy copy/view of ``x`` (detached and moved to host for torch)."""
    if is_torch(x):
        t = x.detach().cpu().resolve_conj().resolve_neg()  # lazy conj views (MPO.H) have no numpy
        if t.dtype.is_floating_point and t.dtype.itemsize < 4:
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def requires_grad(x: Array) -> bool:
    """Whether autograd records operations on ``x`` (torch tensors that require grad)."""
    return bool(getattr(x, "requires_grad", False))


def stop_gradient(x: Array) -> Array:
    """``x`` without autograd history (torch: ``detach()``; other backends: ``x``)."""
    return x.detach() if is_torch(x) else x


def device_of(x: Array) -> Any:
    return getattr(x, "device", "cpu")


def dtype_name(x: Array) -> str:
    """Backend-neutral dtype name: 'float32', 'complex128', 'bfloat16', ..."""
    return str(x.dtype).replace("torch.", "")


def like(data: Any, ref: Array) -> Array:
    """``data`` (numpy array or nested lists) as an array like ``ref`` (backend, dtype, device)."""
    if is_torch(ref):
        import torch

        return torch.as_tensor(np.asarray(data), dtype=ref.dtype, device=ref.device)
    return np.asarray(data, dtype=ref.dtype)


def zeros_like_shape(shape: tuple[int, ...], ref: Array) -> Array:
    """Zeros of ``shape`` like ``ref`` (backend, dtype, device)."""
    if is_torch(ref):
        import torch

        return torch.zeros(shape, dtype=ref.dtype, device=ref.device)
    return ar.do("zeros", shape, like=ref, dtype=ref.dtype)


def eye_like(n: int, ref: Array) -> Array:
    if is_torch(ref):
        import torch

        return torch.eye(n, dtype=ref.dtype, device=ref.device)
    return np.eye(n, dtype=ref.dtype)


def all_finite(x: Array) -> bool:
    if is_torch(x):
        import torch

        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


def check_float_dtype(x: Array, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating or complex dtype.

    Integer and boolean arrays are *not* promoted: a decomposition of an integer matrix is
    floating point, and tnlm never changes a dtype behind the caller's back.
    """
    if is_torch(x):
        ok = x.dtype.is_floating_point or x.dtype.is_complex
    else:
        kind = np.asarray(x).dtype.kind if not hasattr(x, "dtype") else np.dtype(x.dtype).kind
        ok = kind in "fc"
    if not ok:
        raise TypeError(
            f"{name} has dtype {dtype_name(x)}; expected a floating or complex dtype "
            f"(float32, float64, complex64, complex128, ...). Integer and boolean arrays are "
            f"not promoted automatically: cast explicitly, e.g. {name}.astype(float) or "
            f"{name}.double()."
        )


def compute_dtype_of(x: Array) -> Any:
    """The dtype linear algebra runs in for ``x``: half precision is computed in float32."""
    if is_torch(x):
        import torch

        if x.dtype in (torch.float16, torch.bfloat16):
            return torch.float32
        return x.dtype
    if np.dtype(x.dtype) == np.float16:
        return np.float32
    return x.dtype


def real_dtype_eps(x: Array) -> float:
    """Machine epsilon of the real dtype of ``x`` (float32 for complex64, etc.)."""
    if is_torch(x):
        import torch

        dt = x.dtype
        if dt.is_complex:
            dt = torch.float32 if dt == torch.complex64 else torch.float64
        return float(torch.finfo(dt).eps)
    return float(np.finfo(np.dtype(x.dtype)).eps)


def real_dtype_max_exponent(x: Array) -> int:
    """``finfo.maxexp`` of the real dtype of ``x``: its values are below ``2**maxexp``
    (1024 for float64, 128 for float32 and bfloat16, 16 for float16)."""
    if is_torch(x):
        import torch

        dt = x.dtype
        if dt.is_complex:
            dt = torch.float32 if dt == torch.complex64 else torch.float64
        return int(math.frexp(float(torch.finfo(dt).max))[1])
    return int(np.finfo(np.dtype(x.dtype)).maxexp)


#: Elements per block when numpy data is upcast to double precision block by block (fits
#: in L2 cache as float64, and avoids a full-size double-precision copy).
_BLOCK = 1 << 16


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


def sq_norm(x: Array) -> float:
    """``||x||_F**2`` as a Python float, accumulated in double precision."""
    if is_torch(x):
        import torch

        t = x.detach()
        dt = torch.complex128 if t.dtype.is_complex else torch.float64
        if t.dtype != dt:
            t = t.to(dt)
        nrm = float(torch.linalg.vector_norm(t))
        return nrm * nrm
    a = np.asarray(x)
    if a.dtype in (np.float64, np.complex128):
        with np.errstate(over="ignore", under="ignore"):  # callers check the result
            return _sumsq(np.ascontiguousarray(a).ravel())
    flat = a.reshape(1, -1)
    total = 0.0
    for sl in _blocks(flat.shape[1], 1):
        total += _sumsq(_np_double(flat[0, sl]))
    return total


def fnorm(x: Array) -> float:
    """Frobenius norm of ``x`` as a Python float, accumulated in double precision (without a
    full-size double-precision copy of a single-precision numpy array), and scaled by the
    largest entry where the sum of squares would overflow or underflow."""
    if is_torch(x):
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
    a = np.asarray(x)
    with np.errstate(over="ignore", under="ignore"):  # detected below, and rescaled
        out = math.sqrt(sq_norm(a))
    if _UNSAFE[0] < out < _UNSAFE[1] or math.isnan(out):
        return out
    amax = float(np.abs(a).max())
    if amax == 0.0 or math.isinf(amax):
        return out if amax else 0.0
    return amax * math.sqrt(_sumsq((_np_double(a) / amax).ravel()))


#: Outside this range a norm computed as sqrt(sum of squares) may have over- or underflowed.
_UNSAFE = (2.0**-480, 2.0**480)


def gram(c: Array) -> Array:
    """``c @ c^H`` of an (m, n) matrix, computed and returned in double precision (float64 or
    complex128) in ``c``'s backend; a real numpy product goes to BLAS ``syrk`` (half the
    flops of a GEMM).

    Single-precision numpy input is upcast a block of about 2M elements at a time into one
    reused buffer: measured at 256 x 65536 (2 cores), 215 ms against 332 ms for upcasting
    the whole matrix first (a 134 MB copy) and then one ``syrk``.
    """
    if is_torch(c):
        import torch

        t = c
        dt = torch.complex128 if t.dtype.is_complex else torch.float64
        if t.dtype != dt:
            t = t.to(dt)
        return t @ t.mH
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


#: Elements per upcast block of :func:`gram`.
_GRAM_BLOCK = 1 << 21


def residual_sq_norm(c: Array, u: Array, rest: Array) -> float:
    """``||c - u @ rest||_F**2`` in double precision, as a Python float.

    numpy: formed a few rows at a time (``rest`` stays in cache), so no full-size residual
    or double-precision copy is ever stored.
    """
    if is_torch(c):
        import torch

        dt = torch.complex128 if c.dtype.is_complex else torch.float64
        r = c.detach().to(dt) - u.detach().to(dt) @ rest.detach().to(dt)
        nrm = float(torch.linalg.vector_norm(r))
        return nrm * nrm
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


# --------------------------------------------------------------------------------------------
# SVD and QR with one sign convention and a robust fallback
# --------------------------------------------------------------------------------------------


def _svd_numpy(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import scipy.linalg as sla

    try:
        return sla.svd(a, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        log.warning("gesdd did not converge on a %s matrix; retrying with gesvd", a.shape)
        return sla.svd(a, full_matrices=False, lapack_driver="gesvd", check_finite=False)


def _svd_torch(a: Any) -> tuple[Any, Any, Any]:
    import torch

    if a.requires_grad:
        return _safe_linalg()[0].apply(a)  # type: ignore[no-any-return]
    try:
        return torch.linalg.svd(a, full_matrices=False)
    except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
        log.warning("torch SVD did not converge on a %s matrix; retrying with gesvd", a.shape)
        if a.is_cuda:
            return torch.linalg.svd(a, full_matrices=False, driver="gesvd")
        u, s, vh = _svd_numpy(to_numpy(a))  # resolves lazy conj views (MPO.H cores)
        return (
            torch.as_tensor(u, device=a.device),
            torch.as_tensor(s, device=a.device),
            torch.as_tensor(vh, device=a.device),
        )


def _guarded_inverse(x: Any, scale: Any, eps: float) -> Any:
    """``1 / x`` for a tensor ``x`` of magnitude ``scale`` at most, broadened where ``|x|`` is
    near rounding level: ``x / (x**2 + (eps scale)**2)`` (computed on ``x / scale``, so no
    square over- or underflows). Exactly 0 where ``x`` is 0 (also when ``scale`` is 0)."""
    import torch

    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    xn = x / safe
    return torch.where(scale > 0, xn / (xn * xn + eps * eps) / safe, torch.zeros_like(x))


@lru_cache(maxsize=1)
def _safe_linalg() -> tuple[Any, Any, Any]:
    """torch autograd functions for the SVD, the Hermitian eigen-decomposition and the QR of
    a tall matrix whose backward passes stay finite at degenerate spectra (equal or zero
    singular values, repeated eigenvalues, rank-deficient QR), where torch's own backward
    returns NaN or Inf.

    The backward formulas are the usual ones (Townsend 2016; Wan and Zhang 2019) with every
    ``1 / (s_j**2 - s_i**2)``, ``1 / s_i`` and ``1 / (w_j - w_i)`` replaced by the guarded
    inverse of :func:`_guarded_inverse`, broadened by the dtype's epsilon relative to the
    largest singular value (eigenvalue). Away from degeneracies (gaps and singular values
    above ``eps * s_max``) they agree with the exact derivative to rounding; at a degeneracy
    the derivative does not exist and the guarded one drops the ill-defined rotation inside
    the degenerate subspace (a finite, bounded choice, as in Liao et al. 2019).

    References
    ----------
    J. Townsend, "Differentiating the Singular Value Decomposition", 2016.
    H.-J. Liao, J.-G. Liu, L. Wang, T. Xiang, "Differentiable Programming Tensor Networks",
    Phys. Rev. X 9, 031041, 2019.
    """
    import torch

    def herm(x: Any) -> Any:
        return x.mH

    class SafeSVD(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any) -> Any:  # type: ignore[override]
            u, s, vh = torch.linalg.svd(a, full_matrices=False)
            ctx.save_for_backward(u, s, vh)
            return u, s, vh

        @staticmethod
        def backward(ctx: Any, gu: Any, gs: Any, gvh: Any) -> Any:  # type: ignore[override]
            u, s, vh = ctx.saved_tensors
            v = herm(vh)  # (n, k)
            eps = float(torch.finfo(s.dtype).eps)
            smax = s.max() if s.numel() else s.new_zeros(())
            s2 = s * s
            f = _guarded_inverse(s2[None, :] - s2[:, None], smax * smax, eps)  # (k, k)
            f.fill_diagonal_(0.0)
            sinv = _guarded_inverse(s, smax, eps)  # (k,)
            inner = torch.zeros((s.shape[0], s.shape[0]), dtype=u.dtype, device=u.device)
            if gs is not None:
                inner = inner + torch.diag(gs).to(u.dtype)
            if gu is not None:
                uhgu = herm(u) @ gu  # (k, k)
                j = f * uhgu
                inner = inner + (j + herm(j)) * s[None, :]
                if u.dtype.is_complex:
                    inner = inner + torch.diag(1j * uhgu.diagonal().imag * sinv)
            if gvh is not None:
                gv = herm(gvh)  # (n, k)
                k_ = f * (vh @ gv)
                inner = inner + s[:, None] * (k_ + herm(k_))
            ga = u @ inner @ vh  # (m, n)
            if gu is not None and u.shape[0] > u.shape[1]:
                ga = ga + ((gu - u @ (herm(u) @ gu)) * sinv[None, :]) @ vh
            if gvh is not None and v.shape[0] > v.shape[1]:
                gv = herm(gvh)
                ga = ga + u @ (herm(gv - v @ (vh @ gv)) * sinv[:, None])
            return ga

    class SafeEigh(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, a: Any) -> Any:  # type: ignore[override]
            w, v = torch.linalg.eigh(a)
            ctx.save_for_backward(w, v)
            return w, v

        @staticmethod
        def backward(ctx: Any, gw: Any, gv: Any) -> Any:  # type: ignore[override]
            w, v = ctx.saved_tensors
            eps = float(torch.finfo(w.dtype).eps)
            wmax = w.abs().max() if w.numel() else w.new_zeros(())
            inner = torch.zeros((w.shape[0], w.shape[0]), dtype=v.dtype, device=v.device)
            if gv is not None:
                f = _guarded_inverse(w[None, :] - w[:, None], wmax, eps)  # (m, m)
                f.fill_diagonal_(0.0)
                inner = inner + f * (herm(v) @ gv)
            if gw is not None:
                inner = inner + torch.diag(gw).to(v.dtype)
            return v @ inner @ herm(v)

    class SafeQR(torch.autograd.Function):
        """Reduced QR of a tall (m >= n) matrix; backward ``gA = (gQ + Q copyltu(M)) R^-H``,
        ``M = R gR^H - gQ^H Q`` (Liao et al. 2019), with ``R^-H = U diag(1 / s) V^H``
        (``R = U diag(s) V^H``) and the guarded ``1 / s``: exact to rounding for a
        well-conditioned R, finite for a rank-deficient one (where Q has no derivative)."""

        @staticmethod
        def forward(ctx: Any, a: Any) -> Any:  # type: ignore[override]
            q, r = torch.linalg.qr(a, mode="reduced")
            ctx.save_for_backward(q, r)
            return q, r

        @staticmethod
        def backward(ctx: Any, gq: Any, gr: Any) -> Any:  # type: ignore[override]
            q, r = ctx.saved_tensors
            gq = torch.zeros_like(q) if gq is None else gq
            gr = torch.zeros_like(r) if gr is None else gr.triu()
            m_ = r @ herm(gr) - herm(gq) @ q  # (n, n)
            low = m_.tril(-1)
            diag = m_.diagonal().real if m_.dtype.is_complex else m_.diagonal()
            b = gq + q @ (low + herm(low) + torch.diag(diag).to(m_.dtype))  # (m, n)
            # R^-H = U diag(1 / s) V^H for R = U diag(s) V^H, with the guarded 1 / s
            ur, sr, vhr = torch.linalg.svd(r)
            eps = float(torch.finfo(sr.dtype).eps)
            smax = sr.max() if sr.numel() else sr.new_zeros(())
            sinv = _guarded_inverse(sr, smax, eps)
            return ((b @ ur) * sinv[None, :]) @ vhr

    return SafeSVD, SafeEigh, SafeQR


def _fix_signs(u: Array, vh: Array) -> tuple[Array, Array]:
    """Make the largest-magnitude entry of every column of ``u`` real and positive.

    Applying the inverse phase to the matching row of ``vh`` leaves ``u @ diag(s) @ vh``
    unchanged, and makes the factors unique for distinct singular values, whatever the backend.
    """
    if u.shape[1] == 0:
        return u, vh
    if is_torch(u):
        import torch

        idx = torch.argmax(u.abs(), dim=0)
        pivot = u.gather(0, idx[None, :])[0]
        mag = pivot.abs()
        phase = torch.where(mag > 0, pivot / torch.where(mag > 0, mag, 1), torch.ones_like(pivot))
        return u * phase.conj()[None, :], vh * phase[:, None]
    idx_np = np.argmax(np.abs(u), axis=0)
    piv = u[idx_np, np.arange(u.shape[1])]
    piv_mag = np.abs(piv)
    ph = np.where(piv_mag > 0, piv / np.where(piv_mag > 0, piv_mag, 1), 1).astype(u.dtype)
    return u * ph.conj()[None, :], vh * ph[:, None]


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

    Uses LAPACK's divide-and-conquer driver (gesdd) and falls back to gesvd when it fails to
    converge.
    """
    if is_torch(a):
        u, s, vh = _svd_torch(a)
    else:
        an = np.asarray(a)
        with threads_for(12.0 * max(an.shape) * min(an.shape) ** 2):
            u, s, vh = _svd_numpy(an)
    u, vh = _fix_signs(u, vh)
    return u, s, vh


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
    if is_torch(a):
        import torch

        if a.requires_grad and a.shape[0] >= a.shape[1]:
            q, r = _safe_linalg()[2].apply(a)
        else:
            q, r = torch.linalg.qr(a, mode="reduced")
        d = torch.diagonal(r)
        mag = d.abs()
        phase = torch.where(mag > 0, d / torch.where(mag > 0, mag, 1), torch.ones_like(d))
        return q * phase[None, :], r * phase.conj()[:, None]
    import scipy.linalg as sla

    an = np.asarray(a)
    with threads_for(2.0 * an.shape[0] * an.shape[1] * min(an.shape)):
        qn, rn = sla.qr(an, mode="economic", check_finite=False)
    dn = np.diagonal(rn)
    dn_mag = np.abs(dn)
    ph = np.where(dn_mag > 0, dn / np.where(dn_mag > 0, dn_mag, 1), 1).astype(qn.dtype)
    return qn * ph[None, :], rn * ph.conj()[:, None]


def lu_basis(a: Array) -> Array:
    """``P L`` of a partially pivoted LU factorisation of a tall ``a`` (m, k): a
    well-conditioned basis of ``a``'s column space, cheaper than QR (no orthogonality). The
    normaliser between power iterations of a randomized SVD (Halko et al. 2011, Sec. 4.5)."""
    if is_torch(a):
        import torch

        p, lower, _ = torch.linalg.lu(a)
        return p @ lower
    import scipy.linalg as sla

    return sla.lu(np.asarray(a), permute_l=True, check_finite=False)[0]


def randn(shape: tuple[int, ...], ref: Array, seed: int) -> Array:
    """Standard normal samples of ``shape`` like ``ref``, from a private seeded generator.

    The samples are drawn by numpy's PCG64 generator whatever the backend and then moved to
    ``ref``'s backend, dtype and device, so numpy and torch see the same random sketch.
    No global random state is read or changed. Complex dtypes get complex normal samples.
    """
    rng = np.random.default_rng(seed)
    if _is_complex_dtype(ref):
        data = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    else:
        data = rng.standard_normal(shape)
    return like(data, ref)


def _is_complex_dtype(x: Array) -> bool:
    if is_torch(x):
        return bool(x.dtype.is_complex)
    return np.dtype(x.dtype).kind == "c"


# --------------------------------------------------------------------------------------------
# helpers of the Gram / QR routes in tnlm.truncation
# --------------------------------------------------------------------------------------------


def upcast(x: Array) -> Array:
    """``x`` in double precision (float32 -> float64, complex64 -> complex128); other dtypes
    (already double) are returned as they are, without a copy."""
    if is_torch(x):
        import torch

        if x.dtype == torch.float32:
            return x.to(torch.float64)
        if x.dtype == torch.complex64:
            return x.to(torch.complex128)
        return x
    a = np.asarray(x)
    if a.dtype == np.float32:
        return a.astype(np.float64)
    if a.dtype == np.complex64:
        return a.astype(np.complex128)
    return a


def cast_like(x: Array, ref: Array) -> Array:
    """``x`` in ``ref``'s dtype (no copy when it already is)."""
    if x.dtype == ref.dtype:
        return x
    return x.to(ref.dtype) if is_torch(x) else x.astype(ref.dtype)


def eigh_desc(a: Array) -> tuple[Array, Array]:
    """Eigen-decomposition of a Hermitian matrix, eigenvalues in *descending* order.

    Returns ``(w, v)``: real ``w`` of shape (m,), ``v`` of shape (m, m) with ``a @ v = v * w``.
    """
    if is_torch(a):
        import torch

        w, v = _safe_linalg()[1].apply(a) if a.requires_grad else torch.linalg.eigh(a)
        return torch.flip(w, dims=(0,)), torch.flip(v, dims=(1,))
    import scipy.linalg as sla

    an = np.asarray(a)
    with threads_for(9.0 * an.shape[0] ** 3):
        w, v = sla.eigh(an, check_finite=False, driver="evd")
    return w[::-1], np.ascontiguousarray(v[:, ::-1])


def svdvals(a: Array) -> Array:
    """Singular values of ``a`` (descending, real), without singular vectors."""
    if is_torch(a):
        import torch

        return torch.linalg.svdvals(a)
    import scipy.linalg as sla

    an = np.asarray(a)
    try:
        with threads_for(4.0 * max(an.shape) * min(an.shape) ** 2):
            return sla.svd(an, compute_uv=False, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        log.warning("gesdd did not converge on a %s matrix; retrying with gesvd", a.shape)
        return sla.svd(np.asarray(a), compute_uv=False, check_finite=False, lapack_driver="gesvd")


def row_sq_norms(a: Array) -> np.ndarray:
    """Squared Euclidean norm of every row of ``a`` (shape (m, n)), as a float64 numpy array."""
    if is_torch(a):
        import torch

        t = a.detach()
        sq = (t.real**2 + t.imag**2) if t.dtype.is_complex else t * t
        return sq.sum(dim=1).to(torch.float64).cpu().numpy()
    x = np.asarray(a)
    sq = (x.real**2 + x.imag**2) if x.dtype.kind == "c" else x * x
    return sq.sum(axis=1, dtype=np.float64)


def like_real(data: Any, ref: Array) -> Array:
    """``data`` as an array of ``ref``'s *real* dtype (float32 for complex64, ...), backend
    and device."""
    if is_torch(ref):
        import torch

        dt = ref.dtype
        if dt.is_complex:
            dt = torch.float32 if dt == torch.complex64 else torch.float64
        return torch.as_tensor(np.asarray(data), dtype=dt, device=ref.device)
    dt = np.dtype(ref.dtype)
    return np.asarray(data, dtype=np.finfo(dt).dtype if dt.kind == "c" else dt)


# --------------------------------------------------------------------------------------------
# BLAS threading for numpy sweeps
# --------------------------------------------------------------------------------------------

#: numpy inputs with fewer elements than this are decomposed with one BLAS thread.
SMALL_BLAS_WORK = 1 << 22


@lru_cache(maxsize=1)
def _thread_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional at run time: without it BLAS keeps its own threading
        return None
    return ThreadpoolController()


#: While a numpy sweep runs with one BLAS thread, the caller's thread count, lent back to
#: single operations of at least ``BIG_BLAS_FLOPS`` (see :func:`threads_for`).
_LENT_THREADS: ContextVar[int | None] = ContextVar("tnlm_lent_blas_threads", default=None)

#: Flop count from which one BLAS call gets the caller's threads back during a sweep.
BIG_BLAS_FLOPS = 1 << 28


@contextmanager
def blas_threads_for(x: Array) -> Iterator[None]:
    """Run a TT sweep over numpy data ``x`` with one BLAS thread, lending the caller's threads
    back to single large operations (:func:`threads_for`).

    A TT-SVD is a chain of GEMM/QR/eigh/LU calls, most of them thin or small, on which
    OpenBLAS's thread start-up and synchronisation cost more than they save. Measured on 2
    cores: at 768x768 and 768x3072 (bond 64/16/exact) one thread for everything was 1.0-5x
    faster than two, with 5x less spread between repeats; at 4096x4096 bond 16 two threads
    made a 1024 x 26 QR take 30 ms instead of 1.5 ms, while the 256 x 65536 Gram matrix
    (4.3 Gflop) is 1.6x faster on two. Torch tensors are left to torch's own thread pool.
    """
    ctl = None if is_torch(x) else _thread_controller()
    if ctl is None:
        yield
        return
    blas = ctl.select(user_api="blas")
    full = max((lib.num_threads for lib in blas.lib_controllers), default=1)
    size = 1
    for d in x.shape:
        size *= int(d)
    token = _LENT_THREADS.set(full if full > 1 and size >= SMALL_BLAS_WORK else None)
    try:
        with ctl.limit(limits=1, user_api="blas"):
            yield
    finally:
        _LENT_THREADS.reset(token)


@contextmanager
def threads_for(flops: float) -> Iterator[None]:
    """Inside :func:`blas_threads_for`: the caller's BLAS threads for one operation of
    ``flops`` >= ``BIG_BLAS_FLOPS``; otherwise (and outside a sweep) nothing changes."""
    full = _LENT_THREADS.get()
    ctl = _thread_controller() if full is not None and flops >= BIG_BLAS_FLOPS else None
    if ctl is None:
        yield
        return
    with ctl.limit(limits=full, user_api="blas"):
        yield
