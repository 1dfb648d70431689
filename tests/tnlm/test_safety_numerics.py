"""Issue 8, tnlm numerics: tolerances a dtype can honour, finite gradients at degenerate
spectra, extreme magnitudes, method="auto" and the error budget, and ``factorize``."""

from __future__ import annotations

import contextlib
import math
import signal
import warnings

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tnlm
from tnlm._tt_ops import rounding_allowance

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


@pytest.mark.parametrize("kind", ["eye", "zero"])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_gradients_are_finite_for_exact_decompositions_and_rounding(kind, dtype):
    """No cap: the sweep's QR steps on a rank-deficient unfolding (torch's QR backward
    divides by R's zero diagonal), and norm() / compress() of a degenerate MPO (QR sweeps
    and SVDs of TT-rounding)."""
    torch = pytest.importorskip("torch")
    dt = getattr(torch, dtype)
    a = torch.eye(64, dtype=dt) if kind == "eye" else torch.zeros(64, 64, dtype=dt)
    x = a.clone().requires_grad_(True)
    mpo = tnlm.mpo_decompose(x, 3)
    assert "qr" in [b.method for b in mpo.report.bonds]
    dense = mpo.to_dense()
    loss = (dense.abs() ** 2).sum() + dense.real.sum()
    loss = loss + sum((c.abs() ** 2).sum() for c in mpo.cores)
    loss = loss + (mpo.compress(2).to_dense().real.sum() if kind == "eye" else 0.0)
    loss.backward()
    assert bool(torch.isfinite(x.grad).all())
    cores = [c.detach().clone().requires_grad_(True) for c in mpo.cores]
    tnlm.MPO(cores).compress(2).to_dense().real.sum().backward()
    assert all(bool(torch.isfinite(c.grad).all()) for c in cores)


@pytest.mark.parametrize("method", ["auto", "svd"])
@pytest.mark.parametrize(
    ("rows", "cols", "shape", "cap"),
    [
        (16, 16, ((4, 4), (4, 4)), 3),
        (12, 16, ((2, 3, 2), (2, 4, 2)), (3, 2)),
        (16, 8, 2, 2),
        (8, 8, ((2, 2, 2), (2, 2, 2)), None),  # exact: identity and QR steps
    ],
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


# --------------------------------------------------------------------------------------------
# factorize: the most balanced split, quickly, of numpy integers too
# --------------------------------------------------------------------------------------------


def _oracle_most_balanced(dim, n):
    """Brute force: every non-increasing n-tuple with product dim, the smallest one."""

    def splits(d, k, cap):
        if k == 1:
            if d <= cap:
                yield (d,)
            return
        for f in range(min(d, cap), 0, -1):
            if d % f == 0:
                for rest in splits(d // f, k - 1, f):
                    yield (f, *rest)

    return min(splits(dim, n, dim))


@given(dim=st.integers(1, 2000), n=st.integers(1, 5))
@example(dim=72, n=2)  # a greedy split gives (6, 12), not (8, 9)
@example(dim=360, n=3)
@example(dim=1, n=4)
@example(dim=1999, n=3)  # prime
def test_factorize_is_the_most_balanced_split(dim, n):
    f = tnlm.factorize(dim, n)
    assert math.prod(f) == dim and len(f) == n
    assert tuple(sorted(f, reverse=True)) == _oracle_most_balanced(dim, n)
    assert f[n // 2] == max(f)


def test_factorize_3456_into_three():
    """The issue's example: 12 x 16 x 18 exists, so (12, 24, 12) is not the most balanced."""
    assert sorted(tnlm.factorize(3456, 3)) == [12, 16, 18]


class _Deadline(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds):
    """Interrupt a pure-Python loop that runs past ``seconds`` (a hang guard, not a timing
    measurement: the work takes microseconds)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(*_):
        raise _Deadline(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize(
    ("dim", "n", "expected"),
    [
        (2**61 - 1, 2, (1, 2**61 - 1)),
        (2**64 - 59, 3, (1, 2**64 - 59, 1)),  # the largest prime below 2**64
        (4294967279 * 4294967291, 2, (4294967279, 4294967291)),  # two 32-bit primes
        (3 * (2**61 - 1), 3, (1, 2**61 - 1, 3)),
        (999983 * 1000003 * 1000033, 3, (999983, 1000033, 1000003)),
    ],
)
def test_factorize_large_primes_at_once(dim, n, expected):
    with _deadline(20.0):
        assert tnlm.factorize(dim, n) == expected


def test_factorize_refuses_dims_longer_than_any_array_axis():
    with pytest.raises(
        ValueError, match=r"dim must be at most 2\*\*64 - 1 .*; got 18446744073709551616"
    ):
        tnlm.factorize(2**64, 2)
    with _deadline(5.0), pytest.raises(ValueError, match=r"got 618970019642690137449562111"):
        tnlm.factorize(2**89 - 1, 2)


@pytest.mark.parametrize("make", [np.int64, np.int32, np.uint16, int])
def test_factorize_accepts_numpy_integers(make):
    f = tnlm.factorize(make(12), make(2))
    assert f == (3, 4)
    assert all(type(x) is int for x in f)


@pytest.mark.parametrize(
    ("dim", "n", "message"),
    [
        (8.9, 2, r"dim must be a positive int; got 8\.9"),
        (8.0, 2, r"dim must be a positive int; got 8\.0"),
        (np.float64(8.0), 2, r"dim must be a positive int; got np\.float64\(8\.0\)"),
        (True, 2, "dim must be a positive int; got True"),
        (np.bool_(True), 2, r"dim must be a positive int; got np\.True_"),
        (np.int64(-4), 2, r"dim must be a positive int; got np\.int64\(-4\)"),
        (12, 2.0, r"n \(number of factors\) must be a positive int; got 2\.0"),
        (12, np.bool_(False), r"n \(number of factors\) must be a positive int; got np\.False_"),
    ],
)
def test_factorize_refuses_bools_and_floats(dim, n, message):
    with pytest.raises(ValueError, match=message):
        tnlm.factorize(dim, n)


def test_decompose_accepts_numpy_integers_for_cores_and_bond_dim():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 16))
    ref = tnlm.mpo_decompose(w, 2, 3)
    mpo = tnlm.mpo_decompose(w, np.int64(2), np.int64(3))
    assert mpo.row_dims == ref.row_dims == (3, 4) and mpo.col_dims == ref.col_dims
    assert mpo.bond_dims == ref.bond_dims == (3,)
    assert all(type(d) is int for d in (*mpo.row_dims, *mpo.col_dims, *mpo.bond_dims))
    tt = tnlm.tt_decompose(rng.standard_normal((3, 4, 5)), [np.int16(2), np.int64(3)])
    assert tt.bond_dims == (2, 3)


@pytest.mark.parametrize(
    ("shape", "bond_dim", "error", "message"),
    [
        (2.0, None, TypeError, r"shape must be an int n .* got 2\.0"),
        (np.bool_(True), None, TypeError, r"shape must be an int n .* got np\.True_"),
        (True, None, TypeError, r"shape must be an int n .* got True"),
        (np.int64(0), None, ValueError, r"number of cores and must be >= 1; got 0"),
        (2, 8.9, TypeError, r"bond_dim .* got 8\.9"),
        (2, True, TypeError, r"bond_dim .* got True"),
    ],
)
def test_decompose_refuses_bools_and_floats_for_cores_and_bond_dim(shape, bond_dim, error, message):
    w = np.random.default_rng(3).standard_normal((12, 16))
    with pytest.raises(error, match=message):
        tnlm.mpo_decompose(w, shape, bond_dim)


# --------------------------------------------------------------------------------------------
# extreme magnitudes: rounding, norm, entropies and the report's spectra
# --------------------------------------------------------------------------------------------


def _rel_to(x, ref):
    return abs(x - ref) / abs(ref)


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [
        ("float64", 1e-170),
        ("float64", 1e170),
        ("float64", 1e-300),
        ("float64", 1e300),
        ("float32", 1e-36),
        ("float32", 1e36),
    ],
)
def test_compress_norm_and_entropies_at_extreme_magnitudes(backend, dtype, scale):
    """W * scale rounds, measures and reports like W, times the scale (the issue: at
    1e-170 compress(tol=0.3) kept bonds (1, 1) and reported 0 error, norm() was 0 and the
    entropies [0, 0]; at 1e170 compress raised and norm() was inf)."""
    w, wn = backend.spectral(64, 48, seed=4, decay=0.1, dtype=dtype)
    eps = float(np.finfo(dtype).eps)
    ref = tnlm.mpo_decompose(w, 3)
    big = tnlm.mpo_decompose(w * scale, 3)
    a, b = ref.compress(tol=0.3), big.compress(tol=0.3)
    assert b.bond_dims == a.bond_dims and min(a.bond_dims) > 1
    assert _rel_to(b.report.relative_error, a.report.relative_error) < 1e3 * eps
    measured = np.linalg.norm(backend.to_numpy(b.to_dense()) / scale - wn) / np.linalg.norm(wn)
    assert measured <= 0.3
    assert abs(measured - b.report.relative_error) < 1e2 * eps
    assert _rel_to(float(backend.to_numpy(big.norm())) / scale, np.linalg.norm(wn)) < 1e2 * eps
    np.testing.assert_allclose(big.bond_entropies(), ref.bond_entropies(), rtol=1e3 * eps)
    assert min(ref.bond_entropies()) > 0.5


def test_cores_of_extreme_and_opposite_magnitudes(backend):
    """The tensor is of ordinary size but its cores are not: 1e250, 1e-280 and 1e180
    (products and squares of partial contractions leave the float64 range)."""
    w, wn = backend.spectral(64, 48, seed=5, decay=0.2, dtype="float64")
    ref = tnlm.mpo_decompose(w, 3)
    c = ref.cores
    odd = tnlm.MPO([c[0] * 1e250, c[1] * 1e-280, c[2] * 1e180])
    scale = 1e150
    assert _rel_to(float(backend.to_numpy(odd.norm())) / scale, np.linalg.norm(wn)) < 1e-13
    a, b = ref.compress(tol=0.2), odd.compress(tol=0.2)
    assert b.bond_dims == a.bond_dims
    measured = np.linalg.norm(backend.to_numpy(b.to_dense()) / scale - wn) / np.linalg.norm(wn)
    assert abs(measured - b.report.relative_error) < 1e-12
    assert measured <= 0.2
    np.testing.assert_allclose(odd.bond_entropies(), ref.bond_entropies(), rtol=1e-12)


@pytest.mark.parametrize("scale", [2.0**700, 2.0**-700, 1e300, 1e-300])
@pytest.mark.parametrize("route", ["decompose", "compress"])
def test_reported_spectra_are_rescaled(backend, scale, route):
    """Kept and discarded singular values, bond errors and the norm in the report of huge or
    tiny data are those of the unscaled data times the scale (a rescale of the kept values
    only would leave the discarded ones off by the scale)."""
    w, wn = backend.spectral(64, 48, seed=6, decay=0.3, dtype="float64")
    if route == "decompose":
        ref = tnlm.mpo_decompose(w, 3, 4, method="svd").report
        rep = tnlm.mpo_decompose(w * scale, 3, 4, method="svd").report
    else:
        full = tnlm.mpo_decompose(w, 3)
        ref = full.compress(4, method="svd").report
        rep = tnlm.MPO([full.cores[0] * scale, *full.cores[1:]]).compress(4, method="svd").report
    assert rep.norm / scale == pytest.approx(ref.norm, rel=1e-12)
    assert rep.error / scale == pytest.approx(ref.error, rel=1e-10)
    for x, y in zip(rep.bonds, ref.bonds):
        assert x.rank == y.rank
        assert x.error / scale == pytest.approx(y.error, rel=1e-10)
        np.testing.assert_allclose(
            backend.to_numpy(x.kept) / scale, backend.to_numpy(y.kept), 1e-10
        )
        assert y.discarded is not None and len(y.discarded) > 0
        np.testing.assert_allclose(
            backend.to_numpy(x.discarded) / scale, backend.to_numpy(y.discarded), rtol=1e-9
        )


# --------------------------------------------------------------------------------------------
# method="auto" finds the exact method's rank; the budget under a binding cap
# --------------------------------------------------------------------------------------------


def _kronecker_sum(d, n, seed):
    """``sum_k I x .. x A_k x .. x I``: an MPO of bond dimension exactly 2."""
    rng = np.random.default_rng(seed)
    total = np.zeros((d**n, d**n))
    for k in range(n):
        term = np.ones((1, 1))
        for j in range(n):
            term = np.kron(term, rng.standard_normal((d, d)) if j == k else np.eye(d))
        total += term
    return total


@pytest.mark.parametrize(("d", "n"), [(4, 3), (4, 4), (2, 6), (8, 3)])
@pytest.mark.parametrize("tol", [1e-4, 1e-8, 1e-12])
def test_auto_finds_the_exact_low_rank_at_small_tolerances(backend, d, n, tol):
    """A rank-2 Kronecker sum: "svd" finds bonds of 2 at every tolerance, and "auto" (whose
    Gram route cannot resolve tolerances near float64's epsilon) finds the same, not 16."""
    k = _kronecker_sum(d, n, seed=d + n)
    w = backend.asarray(k, "float64")
    shape = ((d,) * n, (d,) * n)
    exact = tnlm.mpo_decompose(w, shape, tol=tol, method="svd")
    auto = tnlm.mpo_decompose(w, shape, tol=tol)
    assert exact.bond_dims == (2,) * (n - 1)
    assert auto.bond_dims == exact.bond_dims
    measured = np.linalg.norm(backend.to_numpy(auto.to_dense()) - k) / np.linalg.norm(k)
    assert measured <= tol


@pytest.mark.parametrize("method", ["svd", "auto"])
@pytest.mark.parametrize("case", ["spectral", "kronecker"])
def test_bonds_after_a_binding_cap_still_truncate(backend, method, case):
    """With tol and a cap that binds at bond 0 (the guarantee is lost, with a warning), every
    later bond still cuts as much as Oseledets' even share ``tol ||W|| / sqrt(n - 1)`` allows
    (it used to keep its full rank: the cap's overspend left it no budget)."""
    if case == "spectral":
        w, wn = backend.spectral(64, 64, seed=9, decay=0.15, dtype="float64")
        shape, caps = 3, (2, None)
    else:  # rank 2 plus a little noise: the later bonds can cut the noise
        k = _kronecker_sum(4, 4, seed=1)
        noise = np.random.default_rng(2).standard_normal(k.shape)
        wn = k + 1e-3 * noise * np.linalg.norm(k) / np.linalg.norm(noise)
        w, shape, caps = backend.asarray(wn, "float64"), ((4,) * 4, (4,) * 4), (1, None, None)
    tol = 0.1
    with pytest.warns(UserWarning, match=r"bond_dim caps bound before tol=0\.1 was reached"):
        mpo = tnlm.mpo_decompose(w, shape, caps, tol=tol, method=method)
    share = tol * mpo.report.norm / math.sqrt(len(caps))
    free = tnlm.mpo_decompose(w, shape, tol=tol, method=method)
    assert mpo.bond_dims[0] == caps[0]
    for k, b in enumerate(mpo.report.bonds[1:], start=1):
        assert b.error <= share * (1 + 1e-12)
        # the smallest rank for the share: one less would cut more than the share
        one_less = math.hypot(b.error, float(backend.to_numpy(b.kept)[-1]))
        assert one_less > share * (1 - 1e-9)
        assert b.rank <= free.bond_dims[k]
    measured = np.linalg.norm(backend.to_numpy(mpo.to_dense()) - wn)
    assert measured == pytest.approx(mpo.report.error, rel=1e-9)


# --------------------------------------------------------------------------------------------
# the smallest tolerance a dtype can honour
# --------------------------------------------------------------------------------------------


def _eps(dtype):
    return float(np.finfo(np.dtype(dtype)).eps)


def _two_core_matrix(sigma, k_small, dtype, seed):
    """A 64 x 64 matrix whose 2-core unfolding ((8, 8), (8, 8)) has four singular values 1
    and ``k_small`` equal to ``sigma``: cutting j of them commits exactly sqrt(j) sigma."""
    rng = np.random.default_rng(seed)
    s = np.zeros(64)
    s[:4], s[4 : 4 + k_small] = 1.0, sigma
    cplx = np.dtype(dtype).kind == "c"
    u = np.linalg.qr(
        rng.standard_normal((64, 64)) + (1j * rng.standard_normal((64, 64)) if cplx else 0)
    )[0]
    v = np.linalg.qr(
        rng.standard_normal((64, 64)) + (1j * rng.standard_normal((64, 64)) if cplx else 0)
    )[0]
    m = (u * s) @ v.conj().T  # rows (i1, j1), cols (i2, j2)
    return m.reshape(8, 8, 8, 8).transpose(0, 2, 1, 3).reshape(64, 64).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "sigma"),
    [("float32", 1e-5), ("complex64", 1e-5), ("float64", 1e-13), ("complex128", 1e-13)],
)
@pytest.mark.parametrize("method", ["auto", "svd"])
def test_tol_is_honoured_by_the_computed_cores(backend, dtype, sigma, method):
    """Tolerances that the truncation alone would spend to the last bit (tol just above
    sqrt(j) sigma / ||W||, where cutting j of the small singular values fits): the cores,
    computed and stored in ``dtype``, still reconstruct W within tol, because the budget
    keeps the rounding allowance aside (float32 measured up to 1.0017 tol without it)."""
    wn = _two_core_matrix(sigma, 60, dtype, seed=3)
    ref = wn.astype(np.complex128)
    w = backend.asarray(wn, dtype)
    reserve = rounding_allowance(_eps(dtype), _eps(dtype), [64, 64])
    checked = 0
    for j in range(4, 41, 4):
        for slack in (1e-9, 1e-3):
            tol = math.sqrt(j) * sigma / np.linalg.norm(ref) * (1 + slack)
            if tol <= 2 * reserve:  # below what the dtype can honour (warns, tested below)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no warning at a tolerance the dtype honours
                mpo = tnlm.mpo_decompose(w, ((8, 8), (8, 8)), tol=tol, method=method)
            measured = np.linalg.norm(backend.to_numpy(mpo.to_dense()) - ref) / np.linalg.norm(ref)
            assert measured <= tol, (j, slack)
            assert mpo.report.relative_error <= tol - reserve
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tolerance_below_what_the_dtype_can_honour_warns(backend, dtype):
    """float32 tol=1e-7 measured 6.8e-7 without a word: below twice the rounding allowance
    the decomposition warns, naming the smallest tolerance the dtype can honour."""
    w, wn = backend.spectral(64, 64, seed=1, decay=0.01, dtype=dtype)
    tol = 1e-7 if dtype == "float32" else 1e-16
    floor = 2 * rounding_allowance(_eps(dtype), _eps(dtype), [16, 16, 16])
    with pytest.warns(
        UserWarning,
        match=rf"tol={tol} is below the smallest tolerance {dtype} can honour for this "
        rf"shape \({floor:.1e}",
    ):
        mpo = tnlm.mpo_decompose(w, ((4, 4, 4), (4, 4, 4)), tol=tol)
    measured = np.linalg.norm(backend.to_numpy(mpo.to_dense()) - wn) / np.linalg.norm(wn)
    assert measured <= floor
    with pytest.warns(UserWarning, match=rf"tol={tol} is below the smallest tolerance {dtype}"):
        tnlm.tt_decompose(backend.asarray(wn.reshape(16, 16, 16), dtype), tol=tol)


def test_half_precision_floor_uses_its_own_epsilon():
    torch = pytest.importorskip("torch")
    w = torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    floor16 = 2 * rounding_allowance(
        _eps("float32"), float(torch.finfo(torch.bfloat16).eps), [16, 16, 16]
    )
    assert floor16 > 0.02
    with pytest.warns(UserWarning, match=r"tol=0\.01 is below the smallest tolerance bfloat16"):
        tnlm.mpo_decompose(w.to(torch.bfloat16), 3, tol=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tnlm.mpo_decompose(w, 3, tol=0.01)


def test_compress_warns_like_decompose(backend):
    """compress(tol=...) keeps the same rounding allowance and says when tol cannot be met:
    below the dtype's floor, or where a cap binds first (it used to be silent)."""
    w, _ = backend.spectral(64, 64, seed=2, decay=0.05, dtype="float32")
    mpo = tnlm.mpo_decompose(w, 3)
    with pytest.warns(UserWarning, match=r"tol=1e-07 is below the smallest tolerance float32"):
        mpo.compress(tol=1e-7)
    with pytest.warns(UserWarning, match=r"bond_dim caps bound before tol=0\.01 was reached"):
        out = mpo.compress(2, tol=0.01)
    assert out.report.relative_error > 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mpo.compress(tol=0.01)
        mpo.bond_entropies()
