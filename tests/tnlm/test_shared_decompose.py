"""tnlm.shared_mpo_decompose against dense oracles: mpo_decompose for one matrix, constructed
matrices that truly share a core, the objective per sweep, numpy against torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnlm


def _dense(mpo):
    return np.asarray(tnlm.MPO([np.asarray(c, dtype=np.float64) for c in _np(mpo)]).to_dense())


def _np(mpo):
    out = []
    for c in mpo.cores:
        if hasattr(c, "detach"):
            c = c.detach().cpu().double().numpy()
        out.append(np.asarray(c, dtype=np.float64))
    return out


def _shared_matrices(rows, cols, bonds, k, count, seed, tn):
    """Matrices ``W_l`` whose MPOs share core ``k``: isometric blocks around one core."""
    rng = np.random.default_rng(seed)
    sizes = [i * j for i, j in zip(rows, cols)]
    p, m, q = math.prod(sizes[:k]), sizes[k], math.prod(sizes[k + 1 :])
    r, s = bonds[k], bonds[k + 1]
    core = rng.standard_normal((r, m, s))
    out = []
    for _ in range(count):
        left = tn.random_orthonormal(rng, p, r, False)  # (P, r)
        right = tn.random_orthonormal(rng, q, s, False).T  # (s, Q)
        block = np.einsum("pa,axb,bq->pxq", left, core, right)  # (P, m, Q), interleaved
        n = len(rows)
        t = block.reshape([d for i, j in zip(rows, cols) for d in (i, j)])
        t = t.transpose([2 * a for a in range(n)] + [2 * a + 1 for a in range(n)])
        out.append(t.reshape(math.prod(rows), math.prod(cols)))
    return out


@settings(max_examples=8)
@given(data=st.data())
def test_one_matrix_is_mpo_decompose(data, tn):
    """Without a sweep, one matrix gives mpo_decompose's matrix and error; sweeps never make
    it worse."""
    rows, cols = data.draw(tn.mpo_shapes(min_cores=2, max_cores=4))
    n = len(rows)
    cap = data.draw(st.integers(1, 6))
    w = tn.spectral_matrix(math.prod(rows), math.prod(cols), data.draw(tn.seeds), 0.5, "float64")
    ref = tnlm.mpo_decompose(w, (rows, cols), cap)
    ref_err = np.linalg.norm(w - ref.to_dense()) / np.linalg.norm(w)
    tol = 1e3 * np.finfo(np.float64).eps
    mpos, report = tnlm.shared_mpo_decompose([w], (rows, cols), cap, init="clone", max_sweeps=0)
    np.testing.assert_allclose(_dense(mpos[0]), ref.to_dense(), atol=tol * np.linalg.norm(w))
    assert report.relative_errors[0] == pytest.approx(ref_err, abs=tol)
    assert report.sweeps == 0 and len(report.objective) == 1
    assert report.shared_index == n // 2 == mpos[0].central_index
    _, swept = tnlm.shared_mpo_decompose([w], (rows, cols), cap, rtol=0.0, max_sweeps=5)
    assert swept.relative_errors[0] <= ref_err + tol


@pytest.mark.parametrize("real_dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "rows, cols, bond_dim, shared",
    [
        ((2, 3, 2), (3, 2, 2), (6, 4), "central"),
        ((2, 2, 3, 2), (3, 2, 2, 2), (None, 5, 3), "central"),
        ((2, 2, 3, 2), (3, 2, 2, 2), (4, None, None), 1),
        ((2, 3, 2), (2, 2, 3), None, 0),
    ],
)
def test_recovers_matrices_that_share_a_core(rows, cols, bond_dim, shared, real_dtype, backend, tn):
    n = len(rows)
    sizes = [i * j for i, j in zip(rows, cols)]
    caps = [None] * (n - 1) if bond_dim is None else list(bond_dim)
    bonds = [1] + [
        min(math.prod(sizes[:b]), math.prod(sizes[b:]), caps[b - 1] or 10**9) for b in range(1, n)
    ]
    bonds.append(1)
    k = n // 2 if shared == "central" else shared
    ws = _shared_matrices(rows, cols, bonds, k, 4, 7, tn)
    arrays = [backend.asarray(w, real_dtype) for w in ws]
    mpos, report = tnlm.shared_mpo_decompose(arrays, (rows, cols), bond_dim, shared=shared)
    eps = tn.eps_of(real_dtype)
    assert max(report.relative_errors) <= 1e3 * eps, report
    assert report.converged and report.shared_index == k
    for w, mpo in zip(ws, mpos):
        backend.check(mpo.cores[0], real_dtype)
        assert mpo.cores[k] is mpos[0].cores[k]
        assert np.linalg.norm(_dense(mpo) - w) <= 1e3 * eps * np.linalg.norm(w)
        assert mpo.bond_dims == tuple(bonds[1:-1])


@settings(max_examples=6)
@given(data=st.data())
def test_objective_never_increases(data, tn):
    rows, cols = data.draw(tn.mpo_shapes(min_cores=2, max_cores=4))
    count = data.draw(st.integers(2, 4))
    seed = data.draw(tn.seeds)
    ws = [
        tn.spectral_matrix(math.prod(rows), math.prod(cols), seed + i, 0.3, "float64")
        for i in range(count)
    ]
    cap = data.draw(st.one_of(st.none(), st.integers(1, 5)))
    init = data.draw(st.sampled_from(tnlm.shared_decompose.SHARED_INITS))
    _, report = tnlm.shared_mpo_decompose(ws, (rows, cols), cap, init=init, max_sweeps=8)
    total = sum(float(np.sum(w * w)) for w in ws)
    slack = 1e3 * np.finfo(np.float64).eps * total
    hist = report.objective
    assert all(b <= a + slack for a, b in zip(hist, hist[1:])), hist
    assert len(hist) == report.sweeps + 1
    # the block objective is the summed squared error when no inner bond truncates
    if cap is None:
        errs = sum(e**2 * float(np.sum(w * w)) for e, w in zip(report.relative_errors, ws))
        assert errs == pytest.approx(hist[-1], abs=slack)


def test_fit_beats_clone_and_stops_at_the_tolerance():
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal((16, 12)) for _ in range(5)]
    shape = ((2, 4, 2), (2, 3, 2))
    _, clone = tnlm.shared_mpo_decompose(ws, shape, init="clone", max_sweeps=0)
    _, fit = tnlm.shared_mpo_decompose(ws, shape, rtol=1e-3, max_sweeps=200)
    assert not clone.converged and clone.init == "clone"
    assert fit.converged and fit.objective[-1] < clone.objective[0]
    assert fit.objective[-2] - fit.objective[-1] <= 1e-3 * fit.objective[-2]
    assert all(a - b > 1e-3 * a for a, b in zip(fit.objective[:-2], fit.objective[1:-1]))
    _, capped = tnlm.shared_mpo_decompose(ws, shape, rtol=1e-12, max_sweeps=2)
    assert capped.sweeps == 2 and not capped.converged


def test_numpy_and_torch_agree(tn):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    ws = [rng.standard_normal((12, 16)) for _ in range(3)]
    shape = ((2, 3, 2), (2, 4, 2))
    a, ra = tnlm.shared_mpo_decompose(ws, shape, 5, max_sweeps=8)
    b, rb = tnlm.shared_mpo_decompose([torch.as_tensor(w) for w in ws], shape, 5, max_sweeps=8)
    assert ra.init == rb.init and ra.sweeps == rb.sweeps
    np.testing.assert_allclose(ra.objective, rb.objective, rtol=1e-10)
    for x, y in zip(a, b):
        assert isinstance(y.cores[0], torch.Tensor)
        for cx, cy in zip(_np(x), _np(y)):
            np.testing.assert_allclose(cx, cy, atol=1e-10)


def test_bad_input():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 12))
    shape = ((2, 2, 2), (2, 3, 2))
    with pytest.raises(ValueError, match="Ws is empty; expected at least one matrix"):
        tnlm.shared_mpo_decompose([], shape)
    with pytest.raises(TypeError, match="Ws must be a sequence of 2-D arrays"):
        tnlm.shared_mpo_decompose(w, shape)
    with pytest.raises(ValueError, match=r"Ws\[1\] has shape \(12, 8\), but Ws\[0\] has \(8, 12\)"):
        tnlm.shared_mpo_decompose([w, w.T], shape)
    with pytest.raises(TypeError, match=r"Ws\[1\] is a numpy array of dtype float32, but Ws\[0\]"):
        tnlm.shared_mpo_decompose([w, w.astype(np.float32)], shape)
    with pytest.raises(TypeError, match="complex dtype complex128; .* real floating"):
        tnlm.shared_mpo_decompose([w + 0j], shape)
    with pytest.raises(ValueError, match=r"Ws\[0\] must be 2-D"):
        tnlm.shared_mpo_decompose([w[0]], shape)
    with pytest.raises(ValueError, match=r"row_dims \(2, 2, 2\) multiply to 8"):
        tnlm.shared_mpo_decompose([w.T], shape)
    with pytest.raises(ValueError, match=r"unknown shared site 'middle'; expected one of central"):
        tnlm.shared_mpo_decompose([w], shape, shared="middle")
    with pytest.raises(ValueError, match=r"shared must be an int in \[0, 3\); got 3"):
        tnlm.shared_mpo_decompose([w], shape, shared=3)
    with pytest.raises(ValueError, match="unknown init 'random'; expected one of auto, clone"):
        tnlm.shared_mpo_decompose([w], shape, init="random")
    with pytest.raises(ValueError, match=r"start must be an int in \[0, 2\); got 2"):
        tnlm.shared_mpo_decompose([w, w], shape, start=2)
    with pytest.raises(ValueError, match="max_sweeps must be an int >= 0; got -1"):
        tnlm.shared_mpo_decompose([w], shape, max_sweeps=-1)
    with pytest.raises(ValueError, match=r"rtol must be a float in \[0, 1\); got 1.5"):
        tnlm.shared_mpo_decompose([w], shape, rtol=1.5)
    with pytest.raises(ValueError, match="bond_dim must be >= 1; got 0"):
        tnlm.shared_mpo_decompose([w], shape, 0)
