"""mpo_decompose and tt_decompose against dense oracles (numpy's SVD), on numpy and torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tnlm
from tnlm._tt_ops import rounding_allowance
from tnlm.truncation import TAIL_RTOL


def _dims(shape):
    return [i * j for i, j in zip(*shape)]


def _caps(data, n_bonds, max_cap=8):
    """An int cap, or one cap (int or None) per bond."""
    if data.draw(st.booleans(), label="one cap for all bonds"):
        return data.draw(st.integers(1, max_cap), label="bond_dim")
    return data.draw(
        st.lists(st.none() | st.integers(1, max_cap), min_size=n_bonds, max_size=n_bonds),
        label="bond_dim",
    )


def _cap_list(caps, n_bonds):
    return [caps] * n_bonds if isinstance(caps, int) else list(caps)


# --------------------------------------------------------------------------------------------
# exact decomposition
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_exact_round_trip(backend, dtype, tn, data):
    shape = data.draw(tn.mpo_shapes(), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    mpo = tnlm.mpo_decompose(w, shape)

    assert mpo.row_dims == shape[0] and mpo.col_dims == shape[1]
    assert mpo.shape == (rows, cols)
    assert mpo.dtype == backend.native_dtype(dtype)
    for c in mpo.cores:
        backend.check(c, dtype)
    assert mpo.bond_dims == tn.full_ranks(_dims(shape))
    ranks = (1, *mpo.bond_dims, 1)
    assert [tuple(c.shape) for c in mpo.cores] == [
        (ranks[k], shape[0][k], shape[1][k], ranks[k + 1]) for k in range(len(shape[0]))
    ]
    assert mpo.num_params == sum(ranks[k] * d * ranks[k + 1] for k, d in enumerate(_dims(shape)))
    assert mpo.compression_ratio == pytest.approx(rows * cols / mpo.num_params)

    dense = mpo.to_dense()
    backend.check(dense, dtype)
    norm = np.linalg.norm(wn)
    tol = tn.atol(dtype, wn.size, norm)
    assert np.linalg.norm(backend.to_numpy(dense) - wn) <= tol
    assert mpo.report.error <= tol
    assert mpo.report.norm == pytest.approx(norm, rel=10 * tn.eps_of(dtype))


@given(data=st.data())
def test_shape_as_int_uses_balanced_factors(backend, tn, data):
    n = data.draw(st.integers(1, 4), label="n")
    rows, cols = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48))
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), 0.3, "float64")
    mpo = tnlm.mpo_decompose(w, n)
    assert mpo.row_dims == tnlm.factorize(rows, n)
    assert mpo.col_dims == tnlm.factorize(cols, n)
    assert np.linalg.norm(backend.to_numpy(mpo.to_dense()) - wn) <= tn.atol(
        "float64", wn.size, np.linalg.norm(wn)
    )


# --------------------------------------------------------------------------------------------
# truncation: report, caps, tol, monotonicity, oracle bounds
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_reported_error_is_the_measured_error(backend, dtype, tn, data):
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    n = len(shape[0])
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    caps = _caps(data, n - 1)
    mpo = tnlm.mpo_decompose(w, shape, caps, method="svd")
    rep = mpo.report
    norm = np.linalg.norm(wn)
    measured = np.linalg.norm(backend.to_numpy(mpo.to_dense()) - wn)
    # rounding of the measurement itself grows with the number of cores multiplied
    assert abs(rep.error - measured) <= tn.atol(dtype, wn.size, norm, c=10.0 * n)
    assert rep.relative_error == pytest.approx(rep.error / rep.norm)
    assert rep.error == pytest.approx(math.sqrt(sum(e * e for e in rep.bond_errors)))

    # per bond: what was kept and cut, in the caller's backend and real dtype
    assert rep.ranks == mpo.bond_dims
    for b in rep.bonds:
        backend.check(b.kept, tn.real_of(dtype))
        backend.check(b.discarded, tn.real_of(dtype))
        kept, cut = backend.to_numpy(b.kept), backend.to_numpy(b.discarded)
        assert len(kept) == b.rank
        assert np.all(np.diff(kept) <= 0) and (cut.size == 0 or cut.max() <= kept.min())
        assert b.error == pytest.approx(np.linalg.norm(cut), rel=1e-12, abs=1e-300)
        assert b.method == "svd"
    # the first bond sees W itself: its spectrum is numpy's SVD of the first unfolding
    first = tn.unfolding_spectra(tn.interleave(wn, *shape))[0]
    sv = np.concatenate([backend.to_numpy(rep.bonds[0].kept), backend.to_numpy(rep.discarded[0])])
    np.testing.assert_allclose(sv, first, rtol=0, atol=tn.atol(dtype, wn.size, norm))


@given(data=st.data())
def test_bond_dims_respect_caps_and_full_rank(backend, dtype, tn, data):
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    n = len(shape[0])
    dims = _dims(shape)
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, _ = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    caps = _caps(data, n - 1)
    mpo = tnlm.mpo_decompose(w, shape, caps)
    full = tn.full_ranks(dims)
    expected, r = [], 1
    for k, cap in enumerate(_cap_list(caps, n - 1)):
        # the unfolding at bond k is (r_{k-1} d_k) x (d_{k+1} ... d_n)
        r = min(r * dims[k], math.prod(dims[k + 1 :]), cap or math.inf)
        expected.append(r)
    assert mpo.bond_dims == tuple(expected)
    for k, cap in enumerate(_cap_list(caps, n - 1)):
        assert mpo.bond_dims[k] <= full[k]
        assert cap is None or mpo.bond_dims[k] <= cap


@given(data=st.data())
def test_tol_is_honoured(backend, dtype, tn, data):
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    tol = data.draw(st.floats(1e-3, 0.9), label="tol")
    mpo = tnlm.mpo_decompose(w, shape, tol=tol)
    rel = np.linalg.norm(backend.to_numpy(mpo.to_dense()) - wn) / np.linalg.norm(wn)
    assert rel <= tol + tn.atol(dtype, wn.size, 1.0)
    assert mpo.report.relative_error <= tol * (1 + 1e-12)
    # rank selection is minimal: at every bond, one rank less would have spent more than
    # the whole budget on that bond alone (tol less the part kept aside for rounding)
    norm = mpo.report.norm
    eps = tn.eps_of(dtype)
    budget = tol - rounding_allowance(eps, eps, _dims(shape))
    for b in mpo.report.bonds:
        if b.rank > 1:
            one_less = math.hypot(b.error, float(backend.to_numpy(b.kept)[-1]))
            assert one_less > budget * norm / math.sqrt(len(shape[0]) - 1) * (1 - 1e-9)


@given(data=st.data())
def test_error_never_grows_with_bond_dim_and_obeys_oracle_bounds(backend, real_dtype, tn, data):
    """Exact SVD: error(r) is non-increasing in a uniform cap r, at least the best rank-r
    error of every unfolding (Eckart-Young) and at most sqrt(sum_k of those squared)
    (Oseledets 2011, Thm. 2.2)."""
    dtype = real_dtype
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    norm = np.linalg.norm(wn)
    slack = tn.atol(dtype, wn.size, norm)
    spectra = tn.unfolding_spectra(tn.interleave(wn, *shape))
    previous = math.inf
    top = max(tn.full_ranks(_dims(shape)))
    for r in sorted({*range(1, min(top, 8) + 1), top}):
        mpo = tnlm.mpo_decompose(w, shape, r, method="svd")
        err = np.linalg.norm(backend.to_numpy(mpo.to_dense()) - wn)
        tails = [np.linalg.norm(s[r:]) for s in spectra]
        assert err <= previous + slack
        assert max(tails) - slack <= err <= math.sqrt(sum(t * t for t in tails)) + slack
        previous = err
    assert previous <= slack  # the largest cap is exact


@given(data=st.data())
def test_rsvd_within_two_percent_of_exact(backend, dtype, tn, data):
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    cap = data.draw(st.integers(1, 6), label="cap")
    seed = data.draw(st.integers(0, 1000), label="seed")
    exact = tnlm.mpo_decompose(w, shape, cap, method="svd")
    rand = tnlm.mpo_decompose(w, shape, cap, method="rsvd", seed=seed)
    norm = np.linalg.norm(wn)
    slack = tn.atol(dtype, wn.size, norm)
    measured = np.linalg.norm(backend.to_numpy(rand.to_dense()) - wn)
    assert abs(rand.report.error - measured) <= slack
    assert measured <= 1.02 * exact.report.error + slack
    assert rand.bond_dims == exact.bond_dims
    assert all(b.method == "rsvd" and b.discarded is None for b in rand.report.bonds)
    # deterministic for a given seed
    again = tnlm.mpo_decompose(w, shape, cap, method="rsvd", seed=seed)
    for a, b in zip(rand.cores, again.cores):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_auto_picks_randomized_svd_on_a_large_unfolding(backend, tn):
    """A 256 x 256 unfolding with a cap of 8: "auto" picks the randomized SVD there."""
    w, wn = backend.spectral(256, 256, seed=11, decay=0.4, dtype="float64")
    shape = ((16, 16), (16, 16))
    exact = tnlm.mpo_decompose(w, shape, 8, method="svd")
    rand = tnlm.mpo_decompose(w, shape, 8, method="auto", seed=3)
    assert rand.report.bonds[0].method == "rsvd"
    backend.check(rand.cores[0], "float64")
    measured = np.linalg.norm(backend.to_numpy(rand.to_dense()) - wn)
    slack = tn.atol("float64", wn.size, np.linalg.norm(wn))
    assert abs(rand.report.error - measured) <= slack
    assert exact.report.error <= measured <= 1.02 * exact.report.error + slack


@given(data=st.data())
def test_auto_routes_report_the_measured_error_and_match_the_exact_sweep(backend, dtype, tn, data):
    """Method "auto" (identity / Gram / QR / randomized routes): the reported error is the measured
    one, per bond and in total, and the result is within 1.02x of LAPACK's sweep (equal where
    no bond took the randomized route)."""
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    n = len(shape[0])
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    caps = _caps(data, n - 1)
    auto = tnlm.mpo_decompose(w, shape, caps)
    exact = tnlm.mpo_decompose(w, shape, caps, method="svd")
    norm = np.linalg.norm(wn)
    # the Gram route reports a float64 error to a relative TAIL_RTOL (or measures it)
    slack = tn.atol(dtype, wn.size, norm) + TAIL_RTOL * exact.report.error
    measured = np.linalg.norm(backend.to_numpy(auto.to_dense()) - wn)
    assert abs(auto.report.error - measured) <= slack
    assert auto.bond_dims == exact.bond_dims
    assert measured <= 1.02 * exact.report.error + slack
    if all(b.method != "rsvd" for b in auto.report.bonds):
        assert abs(auto.report.error - exact.report.error) <= slack
    for b in auto.report.bonds:
        assert b.method in ("identity", "gram", "qr", "rsvd", "svd")
        backend.check(b.kept, tn.real_of(dtype))
        kept = backend.to_numpy(b.kept)
        assert len(kept) == b.rank and np.all(np.diff(kept) <= 0)
        if b.method == "identity":
            assert b.error == 0.0 and b.discarded is not None and b.discarded.shape[0] == 0


@given(data=st.data())
def test_identity_bonds_carry_the_exact_spectra(backend, dtype, tn, data):
    """Without truncation, "auto" leaves every wide unfolding alone (identity core) and reports
    its singular values, from a later Gram matrix, equal to the SVD of W's unfolding."""
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    mpo = tnlm.mpo_decompose(w, shape)
    spectra = tn.unfolding_spectra(tn.interleave(wn, *shape))
    norm = np.linalg.norm(wn)
    dims = _dims(shape)
    ranks = (1, *mpo.bond_dims)
    for k, b in enumerate(mpo.report.bonds):
        wide = ranks[k] * dims[k] <= math.prod(dims[k + 1 :])  # the unfolding the sweep sees
        assert (b.method == "identity") == wide
        # sqrt of a double-precision eigenvalue: absolute accuracy ~ sqrt(m eps64) s_1
        tol = tn.atol(dtype, wn.size, norm) + math.sqrt(64 * b.rank * 2.2e-16) * spectra[k][0]
        np.testing.assert_allclose(backend.to_numpy(b.kept), spectra[k][: b.rank], atol=tol)
        if b.method == "identity":
            core = backend.to_numpy(mpo.cores[k]).reshape(-1, b.rank)
            np.testing.assert_array_equal(core, np.eye(b.rank))


# --------------------------------------------------------------------------------------------
# backends agree; half precision
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_numpy_and_torch_give_the_same_cores(dtype, tn, data):
    pytest.importorskip("torch")
    npb, tob = tn.Backend("numpy"), tn.Backend("torch")
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    seed = data.draw(tn.seeds)
    cap = data.draw(st.none() | st.integers(1, 8), label="bond_dim")
    w_np, wn = npb.spectral(rows, cols, seed, data.draw(st.floats(0.05, 0.5)), dtype)
    w_to = tob.asarray(wn, dtype)
    a = tnlm.mpo_decompose(w_np, shape, cap, method="svd")
    b = tnlm.mpo_decompose(w_to, shape, cap, method="svd")
    assert a.bond_dims == b.bond_dims
    norm = np.linalg.norm(wn)
    base = tn.atol(dtype, wn.size, norm)
    # singular vectors are determined up to the sign convention, with a perturbation of order
    # eps * ||W|| / gap, where gap separates each kept value from its neighbours (and from 0);
    # later bonds see the earlier bonds' (perturbed) subspaces
    gaps = []
    for bnd in a.report.bonds:
        s = np.concatenate([npb.to_numpy(bnd.kept), npb.to_numpy(bnd.discarded), [0.0]])
        gaps.append(np.min(np.abs(np.diff(s))[: bnd.rank]))
    allowance = base * sum(norm / max(g, 1e-300) for g in gaps)
    for k, (x, y) in enumerate(zip(a.report.kept, b.report.kept)):
        np.testing.assert_allclose(
            npb.to_numpy(x), tob.to_numpy(y), rtol=0, atol=base if k == 0 else allowance
        )
    for x, y in zip(a.cores, b.cores):
        np.testing.assert_allclose(npb.to_numpy(x), tob.to_numpy(y), rtol=0, atol=allowance)
    np.testing.assert_allclose(
        npb.to_numpy(a.to_dense()),
        tob.to_numpy(b.to_dense()),
        rtol=0,
        atol=2 * base + (2 * a.report.error if cap is not None else 0),
    )


def test_bfloat16_is_computed_in_float32_and_returned_as_bfloat16(tn):
    torch = pytest.importorskip("torch")
    tob = tn.Backend("torch")
    w, wn = tob.spectral(24, 18, seed=5, decay=0.3, dtype="bfloat16")
    mpo = tnlm.mpo_decompose(w, ((2, 3, 4), (3, 2, 3)), 4)
    for c in mpo.cores:
        tob.check(c, "bfloat16")
    assert all(k.dtype == torch.float32 for k in mpo.report.kept)
    measured = np.linalg.norm(tob.to_numpy(mpo.to_dense()) - wn)
    assert abs(measured - mpo.report.error) <= tn.atol("bfloat16", wn.size, np.linalg.norm(wn))


# --------------------------------------------------------------------------------------------
# tt_decompose: orders 1..5
# --------------------------------------------------------------------------------------------

_MAX_DIM_BY_ORDER = {1: 6, 2: 6, 3: 5, 4: 4, 5: 3}


@st.composite
def tensor_dims(draw):
    order = draw(st.integers(1, 5))
    return tuple(
        draw(st.lists(st.integers(1, _MAX_DIM_BY_ORDER[order]), min_size=order, max_size=order))
    )


@given(data=st.data())
def test_tt_decompose_properties(backend, dtype, tn, data):
    dims = data.draw(tensor_dims(), label="dims")
    n = len(dims)
    t = backend.asarray(
        tn.spectral_tensor(dims, data.draw(tn.seeds), data.draw(tn.decays), dtype), dtype
    )
    tnp = backend.to_numpy(t)
    norm = np.linalg.norm(tnp)
    # rounding of a reconstruction grows with the number of cores multiplied
    slack = tn.atol(dtype, tnp.size, norm, c=10.0 * n)

    exact = tnlm.tt_decompose(t)
    assert exact.dims == dims and exact.shape == dims and len(exact) == n
    assert exact.bond_dims == tn.full_ranks(dims)
    for c in exact.cores:
        backend.check(c, dtype)
    dense = exact.to_dense()
    backend.check(dense, dtype)
    assert tuple(dense.shape) == dims
    assert np.linalg.norm(backend.to_numpy(dense) - tnp) <= slack

    if n == 1:
        return
    spectra = tn.unfolding_spectra(tnp)
    previous = math.inf
    top = max(tn.full_ranks(dims))
    for r in sorted({*range(1, min(top, 8) + 1), top}):
        tt = tnlm.tt_decompose(t, r, method="svd")
        assert all(b <= min(r, f) for b, f in zip(tt.bond_dims, tn.full_ranks(dims)))
        err = np.linalg.norm(backend.to_numpy(tt.to_dense()) - tnp)
        assert abs(err - tt.report.error) <= slack
        assert err <= previous + slack
        tails = [np.linalg.norm(s[r:]) for s in spectra]
        assert max(tails) - slack <= err <= math.sqrt(sum(x * x for x in tails)) + slack
        previous = err

    tol = data.draw(st.floats(1e-3, 0.9), label="tol")
    tt = tnlm.tt_decompose(t, tol=tol)
    rel = np.linalg.norm(backend.to_numpy(tt.to_dense()) - tnp) / norm
    assert rel <= tol + tn.atol(dtype, tnp.size, 1.0)


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-310])
@pytest.mark.parametrize("method", ["auto", "svd"])
def test_extreme_magnitudes_decompose_like_the_unit_matrix(backend, tn, scale, method):
    """float64 data near the ends of the range (whose squares over/underflow, as in a Gram
    matrix) is decomposed after an exact power-of-two rescaling: the same errors, spectra and
    matrix as the unscaled data, times the scale."""
    w, wn = backend.spectral(64, 48, seed=4, decay=0.3, dtype="float64")
    ref = tnlm.mpo_decompose(w, 3, 4, method=method)
    big = tnlm.mpo_decompose(w * scale, 3, 4, method=method)
    rel = 1e-12 if scale > 1e-308 else 1e-3  # subnormal input keeps only a few digits
    assert big.report.norm == pytest.approx(ref.report.norm * scale, rel=rel)
    assert big.report.error == pytest.approx(ref.report.error * scale, rel=rel)
    for a, b in zip(big.report.bonds, ref.report.bonds):
        assert a.method == b.method and a.rank == b.rank
        np.testing.assert_allclose(
            backend.to_numpy(a.kept) / scale, backend.to_numpy(b.kept), rtol=rel, atol=0
        )
    dense = backend.to_numpy(big.to_dense())
    assert np.all(np.isfinite(dense))
    measured = np.linalg.norm(dense / scale - wn)
    assert measured == pytest.approx(ref.report.error, rel=max(rel, 1e-9))
