"""MPO algebra against dense oracles: apply / @, products, sums, scalars, transposes, norm,
inner, canonical forms, rounding (compress), bond spectra, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tnlm

# --------------------------------------------------------------------------------------------
# random MPOs from explicit seeds, and an independent numpy oracle for their dense matrix
# --------------------------------------------------------------------------------------------


def _random_cores(rng, row_dims, col_dims, bonds, dtype):
    ranks = (1, *bonds, 1)
    out = []
    for k, (i, j) in enumerate(zip(row_dims, col_dims)):
        shape = (ranks[k], i, j, ranks[k + 1])
        c = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            c = c + 1j * rng.standard_normal(shape)
        out.append(c)
    return out


def oracle_dense(cores):
    """Dense matrix of numpy cores by explicit pairwise contraction (no tnlm code)."""
    m = cores[0]
    for c in cores[1:]:
        a, i, j, _ = m.shape
        _, k, l, d = c.shape
        m = np.einsum("aijb,bklc->aikjlc", m, c).reshape(a, i * k, j * l, d)
    return m[0, :, :, 0]


class Case:
    """An MPO in the backend under test, its cores' exact values, and its dense oracle."""

    def __init__(self, backend, cores_np, dtype):
        self.mpo = tnlm.MPO([backend.asarray(c, dtype) for c in cores_np])
        self.cores = [backend.to_numpy(c) for c in self.mpo.cores]
        self.dense = oracle_dense(self.cores)
        # rounding in any contraction of the cores is bounded relative to this scale
        self.scale = math.prod(np.linalg.norm(c) for c in self.cores)


def draw_case(data, backend, dtype, tn, shape=None, min_cores=1, max_bond=3):
    if shape is None:
        shape = data.draw(tn.mpo_shapes(min_cores=min_cores), label="shape")
    n = len(shape[0])
    bonds = data.draw(st.lists(st.integers(1, max_bond), min_size=n - 1, max_size=n - 1))
    rng = np.random.default_rng(data.draw(tn.seeds, label="seed"))
    return Case(backend, _random_cores(rng, *shape, bonds, dtype), dtype)


def draw_scalar(data, dtype):
    re = data.draw(st.floats(-3, 3).filter(lambda v: abs(v) > 1e-2), label="alpha")
    if np.dtype(dtype).kind == "c":
        return complex(re, data.draw(st.floats(-3, 3), label="alpha.imag"))
    return re


def close(backend, x, oracle, bound):
    err = np.linalg.norm(backend.to_numpy(x) - oracle)
    assert err <= bound, f"error {err:.3e} > allowance {bound:.3e}"


# --------------------------------------------------------------------------------------------
# dense, apply, @
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_to_dense_and_structure(backend, dtype, tn, data):
    c = draw_case(data, backend, dtype, tn)
    m = c.mpo
    d = m.to_dense()
    backend.check(d, dtype)
    assert m.shape == c.dense.shape
    close(backend, d, c.dense, tn.atol(dtype, c.dense.size, c.scale))
    assert m.central_index == len(m.cores) // 2 and m.n_cores == len(c.cores)
    assert m.num_params == sum(x.size for x in c.cores)


@pytest.mark.parametrize("method", ["cores", "dense", "auto"])
@given(data=st.data())
def test_apply_matches_dense(backend, dtype, tn, method, data):
    c = draw_case(data, backend, dtype, tn)
    rows, cols = c.dense.shape
    batch = data.draw(st.none() | st.integers(1, 5), label="batch")
    rng = np.random.default_rng(data.draw(tn.seeds, label="x seed"))
    xshape = (cols,) if batch is None else (cols, batch)
    x = backend.asarray(rng.standard_normal(xshape) + 1j * rng.standard_normal(xshape), dtype)
    xn = backend.to_numpy(x)
    bound = tn.atol(dtype, rows * (batch or 1), c.scale * np.linalg.norm(xn), c=20)

    y = c.mpo.apply(x, method=method)
    backend.check(y, dtype)
    assert tuple(y.shape) == ((rows,) if batch is None else (rows, batch))
    close(backend, y, c.dense @ xn, bound)
    if method == "auto":
        y2 = c.mpo @ x
        backend.check(y2, dtype)
        close(backend, y2, c.dense @ xn, bound)

    # x @ W for x of shape (rows,) or (batch, rows)
    lshape = (rows,) if batch is None else (batch, rows)
    z = backend.asarray(rng.standard_normal(lshape), dtype)
    zn = backend.to_numpy(z)
    out = z @ c.mpo
    backend.check(out, dtype)
    assert tuple(out.shape) == ((cols,) if batch is None else (batch, cols))
    bound = tn.atol(dtype, math.prod(out.shape), c.scale * np.linalg.norm(zn), c=20)
    close(backend, out, zn @ c.dense, bound)


def test_apply_cost(backend):
    """The dense route costs the rebuild plus one GEMM (2 I J per column); a single vector
    through thin cores is cheaper than rebuilding W."""
    rng = np.random.default_rng(0)
    cores = _random_cores(rng, (4, 4, 4), (5, 4, 3), (2, 2), "float64")
    mpo = tnlm.MPO([backend.asarray(c, "float64") for c in cores])
    i, j = mpo.shape
    one, many = mpo.apply_cost(1), mpo.apply_cost(7)
    assert many["dense"] - one["dense"] == 2 * i * j * 6
    assert mpo.apply_cost(None)["dense"] == one["dense"]
    assert one["cores"] < one["dense"]
    assert one["cores"] < many["cores"]


@given(data=st.data())
def test_mpo_times_mpo(backend, dtype, tn, data):
    n = data.draw(st.integers(1, 3), label="n")
    dims = st.lists(st.integers(1, 3), min_size=n, max_size=n)
    rows, mid, cols = data.draw(dims), data.draw(dims), data.draw(dims)
    a = draw_case(data, backend, dtype, tn, shape=(tuple(rows), tuple(mid)))
    b = draw_case(data, backend, dtype, tn, shape=(tuple(mid), tuple(cols)))
    p = a.mpo @ b.mpo
    assert isinstance(p, tnlm.MPO)
    assert p.bond_dims == tuple(x * y for x, y in zip(a.mpo.bond_dims, b.mpo.bond_dims))
    d = p.to_dense()
    backend.check(d, dtype)
    close(
        backend,
        d,
        a.dense @ b.dense,
        tn.atol(dtype, d.shape[0] * d.shape[1], a.scale * b.scale, c=20),
    )
    np.testing.assert_array_equal(
        backend.to_numpy(a.mpo.matmul(b.mpo).to_dense()), backend.to_numpy(d)
    )


# --------------------------------------------------------------------------------------------
# sums, scalars, transposes, norm, inner
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_linear_combinations(backend, dtype, tn, data):
    a = draw_case(data, backend, dtype, tn)
    shape = (a.mpo.row_dims, a.mpo.col_dims)
    b = draw_case(data, backend, dtype, tn, shape=shape)
    alpha = draw_scalar(data, dtype)
    size = a.dense.size
    ab = a.scale + b.scale

    s = a.mpo + b.mpo
    for c in s.cores:
        backend.check(c, dtype)
    if len(s.cores) > 1:
        assert s.bond_dims == tuple(x + y for x, y in zip(a.mpo.bond_dims, b.mpo.bond_dims))
    close(backend, s.to_dense(), a.dense + b.dense, tn.atol(dtype, size, ab))
    close(backend, (a.mpo - b.mpo).to_dense(), a.dense - b.dense, tn.atol(dtype, size, ab))
    close(backend, (-a.mpo).to_dense(), -a.dense, tn.atol(dtype, size, a.scale))
    sa = abs(alpha) * a.scale
    for scaled in (alpha * a.mpo, a.mpo * alpha):
        backend.check(scaled.cores[0], dtype)
        close(backend, scaled.to_dense(), alpha * a.dense, tn.atol(dtype, size, sa))
    q = a.mpo / alpha
    backend.check(q.to_dense(), dtype)
    close(backend, q.to_dense(), a.dense / alpha, tn.atol(dtype, size, a.scale / abs(alpha)))
    # the operands are unchanged (operations return new objects)
    close(backend, a.mpo.to_dense(), a.dense, tn.atol(dtype, size, a.scale))


@given(data=st.data())
def test_transposes(backend, dtype, tn, data):
    a = draw_case(data, backend, dtype, tn)
    tol = tn.atol(dtype, a.dense.size, a.scale)
    t, h = a.mpo.T, a.mpo.H
    assert t.row_dims == a.mpo.col_dims and t.col_dims == a.mpo.row_dims
    assert t.shape == a.dense.T.shape
    backend.check(t.to_dense(), dtype)
    close(backend, t.to_dense(), a.dense.T, tol)
    close(backend, h.to_dense(), a.dense.conj().T, tol)
    close(backend, t.T.to_dense(), a.dense, tol)


@given(data=st.data())
def test_norm_and_inner(backend, dtype, tn, data):
    a = draw_case(data, backend, dtype, tn)
    b = draw_case(data, backend, dtype, tn, shape=(a.mpo.row_dims, a.mpo.col_dims))
    nrm = a.mpo.norm()
    backend.check(nrm, tn.real_of(dtype))
    assert float(backend.to_numpy(nrm)) == pytest.approx(
        np.linalg.norm(a.dense), abs=tn.atol(dtype, a.dense.size, a.scale)
    )
    ip = a.mpo.inner(b.mpo)
    backend.check(ip, dtype)
    expected = np.vdot(a.dense, b.dense)  # conjugates the first argument
    assert abs(complex(backend.to_numpy(ip)) - expected) <= tn.atol(
        dtype, a.dense.size, a.scale * b.scale
    )


# --------------------------------------------------------------------------------------------
# canonical form, rounding, spectra
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_canonicalize(backend, dtype, tn, data):
    a = draw_case(data, backend, dtype, tn, max_bond=12)
    n = len(a.cores)
    center = data.draw(st.integers(-n, n - 1), label="center")
    c = a.mpo.canonicalize(center)
    k0 = center % n
    close(backend, c.to_dense(), a.dense, tn.atol(dtype, a.dense.size, a.scale, c=20))
    dims = [i * j for i, j in zip(a.mpo.row_dims, a.mpo.col_dims)]
    for k, r in enumerate(c.bond_dims):  # bonds only shrink, to what the QR factors allow
        assert r <= a.mpo.bond_dims[k]
        assert r <= (math.prod(dims[: k + 1]) if k < k0 else math.prod(dims[k + 1 :]))
    for k, core in enumerate(c.cores):
        backend.check(core, dtype)
        x = backend.to_numpy(core)
        r, i, j, s = x.shape
        if k < k0:  # left-orthonormal: columns of (r i j, s) orthonormal
            m = x.reshape(r * i * j, s)
            gram = m.conj().T @ m
        elif k > k0:  # right-orthonormal: rows of (r, i j s) orthonormal
            m = x.reshape(r, i * j * s)
            gram = m @ m.conj().T
        else:
            continue
        np.testing.assert_allclose(
            gram, np.eye(gram.shape[0]), rtol=0, atol=tn.atol(dtype, gram.size, 1.0)
        )
    # the default center is the central core
    d = a.mpo.canonicalize()
    close(backend, d.to_dense(), a.dense, tn.atol(dtype, a.dense.size, a.scale, c=20))


def _gap_allowance(backend, report, base, norm):
    """``base`` scaled by how close the kept singular values come to each other, to the cut
    and to zero at every bond (the conditioning of the truncated subspaces)."""
    total = 0.0
    for b in report.bonds:
        s = backend.to_numpy(b.kept)
        cut = backend.to_numpy(b.discarded)
        s = np.concatenate([s, cut[:1], [0.0]])
        total += norm / max(np.min(np.abs(np.diff(s))[: b.rank]), 1e-300)
    return base * total


@given(data=st.data())
def test_compress_matches_decomposing_the_dense_matrix(backend, dtype, tn, data):
    """Rounding an MPO (A + A, or the over-parameterised A + B - B) gives what TT-SVD of its
    dense matrix gives at the same caps: same singular values, same matrix."""
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(st.floats(0.1, 1)), dtype)
    a = tnlm.mpo_decompose(w, shape)
    b = draw_case(data, backend, dtype, tn, shape=shape)
    if data.draw(st.booleans(), label="A + A"):
        big, target = a + a, 2 * wn
    else:
        big, target = a + b.mpo - b.mpo, wn
    cap = data.draw(st.none() | st.integers(1, 6), label="bond_dim")
    rounded = big.compress(cap, method="svd")
    ref = tnlm.mpo_decompose(backend.asarray(target, dtype), shape, cap, method="svd")

    norm = np.linalg.norm(target)
    base = tn.atol(dtype, target.size, norm + 2 * b.scale, c=20)
    assert rounded.bond_dims == ref.bond_dims
    for c in rounded.cores:
        backend.check(c, dtype)
    dense = backend.to_numpy(rounded.to_dense())
    measured = np.linalg.norm(dense - target)
    assert abs(measured - rounded.report.error) <= base
    allowance = _gap_allowance(backend, ref.report, base, norm)
    assert abs(rounded.report.error - ref.report.error) <= allowance
    for x, y in zip(rounded.report.kept, ref.report.kept):
        np.testing.assert_allclose(backend.to_numpy(x), backend.to_numpy(y), rtol=0, atol=allowance)
    np.testing.assert_allclose(dense, backend.to_numpy(ref.to_dense()), rtol=0, atol=allowance)
    if cap is None:  # without a cap nothing is lost, and the bonds shrink to full rank
        assert measured <= base
        assert rounded.bond_dims == tn.full_ranks([i * j for i, j in zip(*shape)])


@given(data=st.data())
def test_compress_tol_is_honoured(backend, dtype, tn, data):
    a = draw_case(data, backend, dtype, tn, min_cores=2, max_bond=6)
    tol = data.draw(st.floats(1e-3, 0.9), label="tol")
    out = a.mpo.compress(tol=tol)
    err = np.linalg.norm(backend.to_numpy(out.to_dense()) - a.dense)
    nrm = np.linalg.norm(a.dense)
    assert err <= tol * nrm + tn.atol(dtype, a.dense.size, a.scale, c=20)
    assert out.report.relative_error <= tol * (1 + 1e-12)
    assert abs(err - out.report.error) <= tn.atol(dtype, a.dense.size, a.scale, c=20)
    assert abs(out.report.norm - nrm) <= tn.atol(dtype, a.dense.size, a.scale, c=20)


def test_compress_tol_uses_the_whole_norm_of_a_non_canonical_mpo(backend, real_dtype):
    """The tolerance is relative to the norm of the whole MPO, whatever its gauge: with the
    first core scaled down by 64 and the second up by 64 (the same matrix), compress(tol) must
    cut as much as the dense TT-SVD with the same tolerance, and report the matrix's norm."""
    w, wn = backend.spectral(16, 16, seed=2, decay=0.6, dtype=real_dtype)
    exact = tnlm.mpo_decompose(w, ((4, 4), (4, 4)))
    c0, c1 = exact.cores
    skewed = tnlm.MPO([c0 / 64, c1 * 64])
    out = skewed.compress(tol=0.3)
    ref = tnlm.mpo_decompose(w, ((4, 4), (4, 4)), tol=0.3)
    assert out.report.norm == pytest.approx(float(np.linalg.norm(wn)), rel=1e-4)
    assert out.bond_dims == ref.bond_dims
    assert out.bond_dims[0] < exact.bond_dims[0]  # the tolerance allowed a cut


@given(data=st.data())
def test_bond_spectra_are_the_unfolding_spectra(backend, real_dtype, tn, data):
    dtype = real_dtype
    a = draw_case(data, backend, dtype, tn, min_cores=2)
    spectra = tn.unfolding_spectra(tn.interleave(a.dense, a.mpo.row_dims, a.mpo.col_dims))
    got = a.mpo.bond_singular_values()
    ents = a.mpo.bond_entropies()
    assert len(got) == len(spectra) == len(ents) == len(a.cores) - 1
    tol = tn.atol(dtype, a.dense.size, a.scale, c=20)
    for s, ref, ent in zip(got, spectra, ents):
        backend.check(s, dtype)
        s = backend.to_numpy(s)
        np.testing.assert_allclose(s, ref[: len(s)], rtol=0, atol=tol)
        assert np.all(ref[len(s) :] <= tol)
        p = ref**2 / np.sum(ref**2)
        p = p[p > 0]
        assert ent == pytest.approx(-np.sum(p * np.log(p)), abs=1e3 * tn.eps_of(dtype) + tol)


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cores", "dense"])
def test_torch_gradients_pass_gradcheck(method):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    cores = [
        torch.tensor(c, requires_grad=True)
        for c in _random_cores(rng, (2, 1, 2), (2, 3, 1), (2, 3), "float64")
    ]
    x = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)  # (J, batch)

    def apply(x, *cs):
        return tnlm.MPO(list(cs)).apply(x, method=method)

    def dense(*cs):
        return tnlm.MPO(list(cs)).to_dense()

    assert torch.autograd.gradcheck(apply, (x, *cores))
    assert torch.autograd.gradcheck(dense, tuple(cores))
