"""The double-precision helpers of tnlm.backend (Gram matrix, norms, residual, LU basis)
against numpy oracles, on numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tnlm import backend as B


def _data(tn, backend, dtype, m, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n))
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal((m, n))
    a = backend.asarray(x, dtype)
    return a, backend.to_numpy(a).astype(np.complex128 if dtype.startswith("complex") else float)


@given(m=st.integers(1, 9), n=st.integers(1, 300), seed=st.integers(0, 99))
def test_gram_and_norms_are_double_precision(backend, dtype, tn, m, n, seed):
    a, a64 = _data(tn, backend, dtype, m, n, seed)
    g = B.gram(a)
    assert B.to_numpy(g).dtype in (np.float64, np.complex128)
    ref = a64 @ a64.conj().T
    scale = np.linalg.norm(a64) ** 2
    np.testing.assert_allclose(B.to_numpy(g), ref, rtol=0, atol=1e-13 * scale)
    assert B.sq_norm(a) == pytest.approx(scale, rel=1e-13)
    assert B.fnorm(a) == pytest.approx(np.sqrt(scale), rel=1e-13)


@given(m=st.integers(1, 70), n=st.integers(1, 200), k=st.integers(1, 5), seed=st.integers(0, 99))
def test_residual_sq_norm_is_the_dense_residual(backend, dtype, tn, m, n, k, seed):
    a, a64 = _data(tn, backend, dtype, m, n, seed)
    u, u64 = _data(tn, backend, dtype, m, k, seed + 1)
    rest, r64 = _data(tn, backend, dtype, k, n, seed + 2)
    ref = np.linalg.norm(a64 - u64 @ r64) ** 2
    scale = (np.linalg.norm(a64) + np.linalg.norm(u64) * np.linalg.norm(r64)) ** 2
    assert abs(B.residual_sq_norm(a, u, rest) - ref) <= 1e-13 * scale


@given(m=st.integers(2, 60), k=st.integers(1, 8), seed=st.integers(0, 99))
def test_lu_basis_spans_the_columns(backend, dtype, tn, m, k, seed):
    k = min(k, m)
    y, y64 = _data(tn, backend, dtype, m, k, seed)
    basis = B.to_numpy(B.lu_basis(y)).astype(y64.dtype)
    assert basis.shape == (m, k)
    # same column space: projecting y onto span(basis) loses nothing
    q, _ = np.linalg.qr(basis)
    resid = y64 - q @ (q.conj().T @ y64)
    assert np.linalg.norm(resid) <= tn.atol(dtype, y64.size, np.linalg.norm(y64), c=1e3)
