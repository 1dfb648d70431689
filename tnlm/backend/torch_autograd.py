"""torch autograd functions for the SVD, the Hermitian eigen-decomposition and the QR whose
backward passes stay finite at degenerate spectra (used by :mod:`tnlm.backend.dispatch` on
tensors that require grad). torch is imported only when they are first needed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ["safe_linalg"]


def _guarded_inverse(x: Any, scale: Any, eps: float) -> Any:
    """``1 / x`` for a tensor ``x`` of magnitude ``scale`` at most, broadened where ``|x|`` is
    near rounding level: ``x / (x**2 + (eps scale)**2)`` (computed on ``x / scale``, so no
    square over- or underflows). Exactly 0 where ``x`` is 0 (also when ``scale`` is 0)."""
    import torch

    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    xn = x / safe
    return torch.where(scale > 0, xn / (xn * xn + eps * eps) / safe, torch.zeros_like(x))


@lru_cache(maxsize=1)
def safe_linalg() -> tuple[Any, Any, Any]:
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
