"""Issue 8, tnlm numerics: tolerances a dtype can honour, finite gradients at degenerate
spectra, extreme magnitudes, method="auto" and the error budget, and ``factorize``."""

from __future__ import annotations

import numpy as np
import pytest

import tnlm

# --------------------------------------------------------------------------------------------
# gradients through mpo_decompose
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "svd", "rsvd"])
@pytest.mark.parametrize("kind", ["eye", "zero"])
@pytest.mark.parametrize(
    ("size", "shape"), [(16, ((4, 4), (4, 4))), (64, 3), (256, ((16, 16), (16, 16)))]
)
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
def test_gradients_are_finite_at_degenerate_spectra(kind, size, shape, method, dtype):
    """torch.eye (all singular values equal) and a zero matrix (all zero), cut to bond 2
    inside the degenerate spectrum: the gradient is finite (torch's SVD/eigh backward gives
    NaN there)."""
    torch = pytest.importorskip("torch")
    dt = getattr(torch, dtype)
    a = torch.eye(size, dtype=dt) if kind == "eye" else torch.zeros(size, size, dtype=dt)
    x = a.clone().requires_grad_(True)
    mpo = tnlm.mpo_decompose(x, shape, bond_dim=2, method=method)
    dense = mpo.to_dense()
    loss = (
        (dense.abs() ** 2).sum() + dense.real.sum() + sum((c.abs() ** 2).sum() for c in mpo.cores)
    )
    loss.backward()
    assert x.grad is not None
    assert bool(torch.isfinite(x.grad).all()), mpo.report


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize(
    ("rows", "cols", "shape", "cap"),
    [(16, 16, ((4, 4), (4, 4)), 3), (12, 16, ((2, 3, 2), (2, 4, 2)), (3, 2)), (16, 8, 2, 2)],
)
def test_gradient_matches_finite_differences(method, rows, cols, shape, cap):
    """A non-degenerate spectrum: the gradient of the truncated reconstruction is that of
    finite differences (torch.autograd.gradcheck, float64)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    s = 2.0 ** -np.arange(min(rows, cols))  # distinct singular values, clear gaps
    u, _ = np.linalg.qr(rng.standard_normal((rows, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((cols, len(s))))
    w = torch.tensor((u * s) @ v.T, dtype=torch.float64, requires_grad=True)
    probe = torch.tensor(rng.standard_normal((rows, cols)))

    def f(x):
        return (tnlm.mpo_decompose(x, shape, bond_dim=cap, method=method).to_dense() * probe).sum()

    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_complex_gradient_matches_finite_differences():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    a = rng.standard_normal((8, 8)) + 1j * rng.standard_normal((8, 8))
    w = torch.tensor(a, dtype=torch.complex128, requires_grad=True)
    probe = torch.tensor(rng.standard_normal((8, 8)) + 1j * rng.standard_normal((8, 8)))

    def f(x):
        dense = tnlm.mpo_decompose(x, ((2, 4), (4, 2)), bond_dim=4, method="svd").to_dense()
        return (dense * probe).sum().real

    assert torch.autograd.gradcheck(f, (w,), eps=1e-6, atol=1e-7, rtol=1e-5)
