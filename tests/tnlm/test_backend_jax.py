"""jax as a third backend, beyond what the ``backend`` fixture runs on every array test:
gradients through ``mpo_decompose(...).to_dense()`` (finite differences and torch's autograd
as oracles), results that stay jax arrays in the input dtype through the MPO algebra,
``contract`` against numpy's einsum, and the error raised under ``jax.jit``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import tnlm

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


@pytest.fixture(scope="module", autouse=True)
def _x64(tn):
    """float64 and complex128 exist in jax only with x64 enabled (see tests/conftest.py)."""
    tn.enable_jax_x64()


#: (rows, cols, shape, bond cap): two cores, three cores with one cap per bond, a tall
#: matrix with a balanced split, and an exact decomposition (identity and QR steps).
CASES = [
    (16, 16, ((4, 4), (4, 4)), 3),
    (12, 16, ((2, 3, 2), (2, 4, 2)), (3, 2)),
    (16, 8, 2, 2),
    (8, 8, ((2, 2, 2), (2, 2, 2)), None),
]


def _gapped(rows: int, cols: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A matrix with singular values ``2**-k`` (distinct, clear gaps, so that the truncated
    reconstruction is differentiable) and a probe of the same shape; float64 numpy."""
    rng = np.random.default_rng(seed)
    s = 2.0 ** -np.arange(min(rows, cols))
    u, _ = np.linalg.qr(rng.standard_normal((rows, len(s))))
    v, _ = np.linalg.qr(rng.standard_normal((cols, len(s))))
    return (u * s) @ v.T, rng.standard_normal((rows, cols))


def _loss(shape, cap, method, probe):
    """``W -> sum(mpo_decompose(W).to_dense() * probe)``: a scalar of the reconstruction."""

    def f(w):
        dense = tnlm.mpo_decompose(w, shape, bond_dim=cap, method=method).to_dense()
        return (dense * probe).sum()

    return f


# --------------------------------------------------------------------------------------------
# jax.grad through mpo_decompose(...).to_dense()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize(("rows", "cols", "shape", "cap"), CASES)
def test_jax_grad_matches_finite_differences(tn, rows, cols, shape, cap, method):
    """Directional derivatives of the float64 gradient against central differences of the
    numpy decomposition: ``<grad f(W), D> = (f(W + hD) - f(W - hD)) / 2h + O(h**2)``, with
    ``h = eps**(1/3)`` (truncation and rounding errors both of order ``eps**(2/3)``)."""
    w64, probe = _gapped(rows, cols, seed=7)
    grad = jax.grad(_loss(shape, cap, method, jnp.asarray(probe)))(jnp.asarray(w64))
    assert isinstance(grad, jax.Array) and grad.dtype == jnp.float64
    assert grad.shape == (rows, cols)
    g = np.asarray(grad)

    f = _loss(shape, cap, "svd", probe)  # numpy: the oracle's evaluations
    eps = tn.eps_of("float64")
    h = eps ** (1 / 3)
    rng = np.random.default_rng(11)
    for _ in range(3):
        d = rng.standard_normal((rows, cols))
        d /= np.linalg.norm(d)
        fd = (f(w64 + h * d) - f(w64 - h * d)) / (2 * h)
        assert float(np.sum(g * d)) == pytest.approx(
            fd, abs=1e2 * eps ** (2 / 3) * np.linalg.norm(probe)
        )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize(("rows", "cols", "shape", "cap"), CASES)
def test_jax_grad_matches_torch_autograd(tn, rows, cols, shape, cap, method, dtype):
    """The whole gradient, in float32 and float64, against torch's autograd in float64 on
    the same (rounded) matrix; the gradient is a jax array of the input's dtype."""
    torch = pytest.importorskip("torch")
    w64, probe = _gapped(rows, cols, seed=3)
    w = jnp.asarray(w64, dtype=dtype)
    grad = jax.grad(_loss(shape, cap, method, jnp.asarray(probe, dtype=dtype)))(w)
    assert isinstance(grad, jax.Array) and grad.dtype == jnp.dtype(dtype)

    wt = torch.tensor(np.asarray(w, dtype=np.float64), requires_grad=True)
    _loss(shape, cap, "svd", torch.tensor(np.asarray(jnp.asarray(probe, dtype), np.float64)))(
        wt
    ).backward()
    ref = wt.grad.numpy()
    np.testing.assert_allclose(
        np.asarray(grad, dtype=np.float64),
        ref,
        rtol=0,
        atol=tn.atol(dtype, rows * cols, np.linalg.norm(probe), c=1e2),
    )


def test_jax_grad_flows_through_the_algebra(tn):
    """Gradients of ``norm``, ``inner``, ``apply`` and ``compress`` with respect to a core
    against the dense formulas' gradients (jax itself on the dense matrix: the oracle)."""
    rng = np.random.default_rng(5)
    w64, probe = _gapped(12, 16, seed=5)
    cores = tnlm.mpo_decompose(jnp.asarray(w64), ((3, 4), (4, 4))).cores
    x = jnp.asarray(rng.standard_normal((16, 3)))  # (J, batch)

    def via_mpo(c0):
        mpo = tnlm.MPO([c0, *cores[1:]])
        return (
            mpo.norm() ** 2
            + mpo.inner(mpo * 0.5)
            + (mpo.apply(x) ** 2).sum()
            + (mpo.compress(bond_dim=12).to_dense() * jnp.asarray(probe)).sum()
        )

    def via_dense(c0):
        d = tnlm.MPO([c0, *cores[1:]]).to_dense()
        return 1.5 * (d**2).sum() + ((d @ x) ** 2).sum() + (d * jnp.asarray(probe)).sum()

    g = np.asarray(jax.grad(via_mpo)(cores[0]))
    ref = np.asarray(jax.grad(via_dense)(cores[0]))
    scale = np.linalg.norm(ref)
    np.testing.assert_allclose(g, ref, rtol=0, atol=tn.atol("float64", g.size, scale, c=1e3))


# --------------------------------------------------------------------------------------------
# results stay jax arrays in the input dtype
# --------------------------------------------------------------------------------------------


def _check(x, dtype):
    assert isinstance(x, jax.Array), f"expected a jax.Array, got {type(x)}"
    assert x.dtype == jnp.dtype(dtype), f"dtype {x.dtype}, expected {dtype}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mpo_algebra_returns_jax_arrays_of_the_input_dtype(tn, dtype):
    """Every operation of the MPO algebra on a jax MPO: jax arrays in the input's dtype,
    values equal to the dense numpy computation."""
    backend = tn.Backend("jax")
    w, w64 = backend.spectral(12, 16, seed=2, decay=0.3, dtype=dtype)
    rng = np.random.default_rng(2)
    x = backend.asarray(rng.standard_normal((16, 3)), dtype)
    x64 = np.asarray(x, dtype=np.float64)
    n64 = np.linalg.norm(w64)

    mpo = tnlm.mpo_decompose(w, ((3, 4), (4, 4)))
    assert mpo.backend == "jax"
    for c in mpo.cores:
        _check(c, dtype)

    def close(got, want, scale):
        _check(got, dtype)
        np.testing.assert_allclose(
            np.asarray(got, dtype=np.float64),
            want,
            rtol=0,
            atol=tn.atol(dtype, np.size(want), scale, c=1e2),
        )

    close(mpo.to_dense(), w64, n64)
    close(mpo.apply(x), w64 @ x64, n64 * np.linalg.norm(x64))
    close(mpo @ x, w64 @ x64, n64 * np.linalg.norm(x64))
    close((mpo + mpo).to_dense(), 2 * w64, n64)
    close((mpo - mpo * 0.5).to_dense(), 0.5 * w64, n64)
    close((2.5 * mpo).to_dense(), 2.5 * w64, n64)
    close(mpo.T.to_dense(), w64.T, n64)
    close((mpo @ mpo.T).to_dense(), w64 @ w64.T, n64**2)
    close(mpo.norm(), np.linalg.norm(w64), n64)
    close(mpo.inner(mpo), n64**2, n64**2)
    canon = mpo.canonicalize(0)
    for c in canon.cores:
        _check(c, dtype)
    close(canon.to_dense(), w64, n64)

    # compress: the best rank-4 approximation of the single bond (numpy's SVD: the oracle)
    small = mpo.compress(bond_dim=4)
    assert small.bond_dims == (4,)
    t = tn.interleave(w64, (3, 4), (4, 4))  # (i1 j1, i2 j2)
    u, s, vh = np.linalg.svd(t)
    best = _deinterleave((u[:, :4] * s[:4]) @ vh[:4], (3, 4), (4, 4))  # back to (I, J)
    close(small.to_dense(), best, n64)


def _deinterleave(t, row_dims, col_dims):
    """Inverse of ``tn.interleave`` for two cores: (i1 j1, i2 j2) -> (i1 i2, j1 j2)."""
    (i1, i2), (j1, j2) = row_dims, col_dims
    a = np.asarray(t).reshape(i1, j1, i2, j2).transpose(0, 2, 1, 3)
    return a.reshape(i1 * i2, j1 * j2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tt_decompose_returns_jax_cores(tn, dtype):
    backend = tn.Backend("jax")
    t64 = tn.spectral_tensor((3, 4, 2, 5), seed=4, decay=0.4, dtype=dtype)
    t = backend.asarray(t64, dtype)
    tt = tnlm.tt_decompose(t)
    for c in tt.cores:
        _check(c, dtype)
    dense = tt.to_dense()
    _check(dense, dtype)
    ref = np.asarray(t, dtype=np.float64)
    np.testing.assert_allclose(
        np.asarray(dense, np.float64),
        ref,
        rtol=0,
        atol=tn.atol(dtype, ref.size, np.linalg.norm(ref), c=1e2),
    )


# --------------------------------------------------------------------------------------------
# contract on jax arrays
# --------------------------------------------------------------------------------------------

EQUATIONS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("aij,bjk,ck->abi", [(2, 3, 4), (3, 4, 5), (6, 5)]),
    ("ii->", [(4, 4)]),
    ("abc,cd,bd->a", [(2, 3, 4), (4, 5), (3, 5)]),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
@pytest.mark.parametrize(("eq", "shapes"), EQUATIONS)
def test_contract_on_jax_matches_numpy_einsum(tn, eq, shapes, dtype):
    backend = tn.Backend("jax")
    rng = np.random.default_rng(len(eq))
    data = [rng.standard_normal(s) + 1j * rng.standard_normal(s) for s in shapes]
    arrays = [backend.asarray(a, dtype) for a in data]
    ops64 = [backend.to_numpy(a) for a in arrays]
    out = tnlm.contract(eq, *arrays)
    _check(out, dtype)
    ref = np.einsum(eq, *ops64)
    scale = float(np.prod([np.linalg.norm(a) for a in ops64]))
    np.testing.assert_allclose(
        backend.to_numpy(out), ref, rtol=0, atol=tn.atol(dtype, ref.size, scale)
    )
    # the same plan under jax.jit and jax.grad (contract needs no concrete values)
    jitted = jax.jit(lambda *a: tnlm.contract(eq, *a))(*arrays)
    np.testing.assert_allclose(
        backend.to_numpy(jitted), ref, rtol=0, atol=tn.atol(dtype, ref.size, scale)
    )


def test_jax_grad_through_contract_is_the_einsum_gradient(tn):
    rng = np.random.default_rng(9)
    a = jnp.asarray(rng.standard_normal((3, 4)))
    b = jnp.asarray(rng.standard_normal((4, 5)))
    g = jax.grad(lambda x: (tnlm.contract("ij,jk->ik", x, b) ** 2).sum())(a)
    ref = 2 * (np.asarray(a) @ np.asarray(b)) @ np.asarray(b).T  # d/dA ||AB||^2 = 2 A B B^T
    np.testing.assert_allclose(np.asarray(g), ref, rtol=0, atol=tn.atol("float64", 12, 1e2))


# --------------------------------------------------------------------------------------------
# what cannot work: tnlm needs concrete values (ranks, norms, reports)
# --------------------------------------------------------------------------------------------

_ABSTRACT = r"abstract, as inside jax\.jit or jax\.vmap; expected a concrete array"


def test_decompose_under_jit_raises_a_clear_error():
    w = jnp.asarray(_gapped(16, 16, seed=1)[0])
    with pytest.raises(TypeError, match=_ABSTRACT):
        jax.jit(lambda x: tnlm.mpo_decompose(x, 2, bond_dim=3).to_dense())(w)
    with pytest.raises(TypeError, match=_ABSTRACT):
        jax.vmap(lambda x: tnlm.mpo_decompose(x, 2, bond_dim=3).to_dense())(jnp.stack([w, w]))


def test_apply_runs_under_jit_and_compress_raises_a_clear_error(tn):
    """``apply`` and ``to_dense`` need no concrete values and trace under ``jax.jit``;
    ``compress`` chooses ranks from singular values, so it needs them."""
    w = jnp.asarray(_gapped(16, 16, seed=1)[0])
    mpo = tnlm.mpo_decompose(w, 2, bond_dim=3)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((16, 2)))
    jitted = np.asarray(jax.jit(lambda v: mpo.apply(v))(x))
    ref = np.asarray(mpo.to_dense()) @ np.asarray(x)
    np.testing.assert_allclose(jitted, ref, rtol=0, atol=tn.atol("float64", ref.size, 1e2))
    with pytest.raises(TypeError, match=_ABSTRACT):
        jax.jit(lambda c: tnlm.MPO([c, *mpo.cores[1:]]).compress(2).to_dense())(mpo.cores[0])


# --------------------------------------------------------------------------------------------
# the representative subset of the backend fixture's jax cases
# --------------------------------------------------------------------------------------------


def test_jax_subset_names_tests_that_take_the_backend_fixture(tn):
    """Every entry of tests/conftest.py's JAX_SUBSET is a test function, in that file of
    tests/tnlm, that takes ``backend`` (a renamed test would silently drop out of it)."""
    here = Path(__file__).resolve().parent
    missing = []
    for key in sorted(tn.JAX_SUBSET):
        module, name = key.split("::")
        path = here / module
        text = path.read_text() if path.is_file() else ""
        if not re.search(rf"^def {name}\([^)]*\bbackend\b", text, flags=re.MULTILINE):
            missing.append(key)
    assert missing == [], f"JAX_SUBSET names no test taking backend: {missing}"
