"""Issue 8 (H2): scalar promotion, conjugate views leaving torch, clear errors in the algebra,
``tnlm.contract`` and ``tnlm.load``, and a ``tnlm.save`` that touches nothing but its file."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import tnlm

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

ROWS = {1: (6,), 2: (2, 3), 3: (1, 2, 3)}
COLS = {1: (4,), 2: (2, 2), 3: (2, 1, 2)}


def random_mpo(backend, dtype, n, seed=0, rows=None, cols=None):
    """An MPO with random cores (bond 2) of ``n`` cores in ``backend`` and ``dtype``."""
    rng = np.random.default_rng(seed)
    rows, cols = rows or ROWS[n], cols or COLS[n]
    ranks = [1] + [2] * (n - 1) + [1]
    cores = []
    for k in range(n):
        shape = (ranks[k], rows[k], cols[k], ranks[k + 1])
        c = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        cores.append(backend.asarray(c, dtype))
    return tnlm.MPO(cores)


def dtype_of(x) -> str:
    return str(x.dtype).replace("torch.", "")


def assert_close(got, want, backend, source=None):
    """``got`` equals ``want`` within rounding of the result's dtype (np.finfo), or of the
    ``source`` dtype the data was rounded to before a promotion, whichever is coarser."""
    g, w = backend.to_numpy(got), backend.to_numpy(want)
    eps = max(np.finfo(np.dtype(d)).eps for d in (dtype_of(got), source or dtype_of(got)))
    assert np.allclose(g, w, rtol=0, atol=50 * eps * max(1.0, np.abs(w).max()))


def scalars(backend):
    """Scalars of every kind a user writes, including 0-d arrays of the MPO's backend."""
    out = [2, 2.5, 1j, 0.5 - 2j, np.float64(2), np.float32(3), np.int64(3)]
    out += [np.complex128(1j), np.complex64(2j)]
    out += [backend.asarray(np.float64(1.5), "float64"), backend.asarray(2j, "complex128")]
    out += [backend.asarray(np.float64(1.5), "float32")]
    return out


SCALAR_IDS = [
    "int",
    "float",
    "1j",
    "complex",
    "np.float64",
    "np.float32",
    "np.int64",
    "np.complex128",
    "np.complex64",
    "0d-float64",
    "0d-complex128",
    "0d-float32",
]

# --------------------------------------------------------------------------------------------
# 1. scalars that change the dtype
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("which", range(len(SCALAR_IDS)), ids=SCALAR_IDS)
def test_scalar_times_mpo_promotes_like_the_dense_matrix(backend, dtype, n, which):
    """``alpha * A``, ``A * alpha`` and ``A / alpha`` have the dtype and value of the same
    operation on ``A.to_dense()`` in the cores' backend (its promotion rule), for every n."""
    a = random_mpo(backend, dtype, n)
    alpha = scalars(backend)[which]
    dense = a.to_dense()
    if backend.name == "torch" and isinstance(alpha, np.generic):
        alpha_dense = alpha.item()  # torch would drop the imaginary part of np.complex64
    else:
        alpha_dense = alpha
    for got, want in [
        (alpha * a, dense * alpha_dense),
        (a * alpha, dense * alpha_dense),
        (a / alpha, dense / alpha_dense),
    ]:
        assert isinstance(got, tnlm.MPO)
        assert dtype_of(got) == dtype_of(want), (dtype_of(got), dtype_of(want))
        assert {dtype_of(c) for c in got.cores} == {dtype_of(want)}
        assert got.backend == backend.name
        assert_close(got.to_dense(), want, backend, source=dtype)


def test_documented_promotions(backend):
    """The rule spelled out: Python scalars keep float32, ``1j`` makes complex, numpy's
    float64 scalar promotes a numpy float32 MPO (numpy 2) but not a torch one."""
    a32 = random_mpo(backend, "float32", 2)
    assert dtype_of(2.0 * a32) == "float32"
    assert dtype_of(1j * a32) == "complex64"
    assert dtype_of(1j * random_mpo(backend, "float64", 3)) == "complex128"
    want = "float64" if backend.name == "numpy" else "float32"
    assert dtype_of(np.float64(2) * a32) == want
    assert dtype_of(a32 / np.float64(2)) == want


def test_numpy_complex_scalar_times_a_torch_mpo(tn):
    """torch alone reads ``np.complex64(2j)`` as 0 (its real part); the MPO gets 2j."""
    pytest.importorskip("torch")
    be = tn.Backend("torch")
    a = random_mpo(be, "float64", 2)
    got = a * np.complex64(2j)
    assert dtype_of(got) == "complex128"
    assert_close(got.to_dense(), 2j * be.to_numpy(a.to_dense()), be)


def test_negation_and_subtraction_keep_the_dtype(backend, dtype):
    a = random_mpo(backend, dtype, 3)
    b = random_mpo(backend, dtype, 3, seed=1)
    assert dtype_of(-a) == dtype
    assert_close((a - b).to_dense(), a.to_dense() - b.to_dense(), backend)


# --------------------------------------------------------------------------------------------
# 2. conjugate views leaving torch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "cols"), [((1,), (4,)), ((3,), (1,)), ((1, 2), (2, 3)), ((2, 3), (1, 1))]
)
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_save_conjugate_transpose_of_a_complex_torch_mpo(tmp_path, rows, cols, dtype, tn):
    """A row or column factor of 1 makes the transposed core contiguous, so only the
    conjugate bit stood between it and ``.numpy()``."""
    torch = pytest.importorskip("torch")
    be = tn.Backend("torch")
    a = random_mpo(be, dtype, len(rows), rows=rows, cols=cols)
    ah = a.H
    assert any(c.is_conj() for c in ah.cores)
    tnlm.save(ah, tmp_path / "h.npz")
    back = tnlm.load(tmp_path / "h.npz")
    for c, d in zip(ah.cores, back.cores):
        assert torch.equal(c.resolve_conj(), d)
    want = be.to_numpy(a.to_dense()).conj().T
    assert np.array_equal(be.to_numpy(back.to_dense()), be.to_numpy(ah.to_dense()))
    assert_close(back.to_dense(), want, be)


def test_torch_svd_fallback_takes_conjugate_views(monkeypatch):
    """The LAPACK fallback of the torch SVD goes through numpy: a lazy conjugate (an
    ``MPO.H`` core) must be resolved on the way."""
    torch = pytest.importorskip("torch")
    from tnlm.backend import dispatch

    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3)))
    real_svd = torch.linalg.svd

    def failing_svd(a, *args, **kwargs):
        if "driver" not in kwargs:
            raise RuntimeError("did not converge (test)")
        return real_svd(a, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", failing_svd)
    u, s, vh = dispatch._torch_svd(x.conj())
    rebuilt = (u * s[None, :]) @ vh
    eps = np.finfo(np.float64).eps
    assert np.allclose(rebuilt.numpy(), x.numpy().conj(), rtol=0, atol=50 * eps * 4)


# --------------------------------------------------------------------------------------------
# 3a. operands of the algebra
# --------------------------------------------------------------------------------------------


def test_matmul_with_a_non_array(backend):
    a = random_mpo(backend, "float64", 2)
    with pytest.raises(TypeError, match="x must be an array .*; got list"):
        a @ [1.0] * 4
    with pytest.raises(TypeError, match="x must be an array .*; got list"):
        a @ [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(TypeError, match="x must be an array .*; got tuple"):
        (1.0,) * 6 @ a
    with pytest.raises(TypeError, match="x must be an array .*; got str"):
        a.apply("abcd")


def test_matmul_across_backends(tn):
    torch = pytest.importorskip("torch")
    t = random_mpo(tn.Backend("torch"), "float64", 2)
    n = random_mpo(tn.Backend("numpy"), "float64", 2)
    with pytest.raises(TypeError, match="x is a numpy array but the MPO's cores are torch"):
        t @ np.ones(4)
    x = torch.ones(4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match="x is a torch array but the MPO's cores are numpy"):
        n @ x
    with pytest.raises(TypeError, match="x is a torch array but the MPO's cores are numpy"):
        torch.ones(6, dtype=torch.float64) @ n
    with pytest.raises(TypeError, match="cannot multiply a numpy MPO and a torch MPO"):
        n @ t.T


@pytest.mark.parametrize(
    ("mpo_dtype", "x_dtype"),
    [
        ("float32", "float64"),
        ("complex64", "complex128"),
        ("float64", "complex128"),
        ("float32", "complex64"),
    ],
)
def test_matmul_refuses_a_vector_that_would_promote_the_mpo(backend, mpo_dtype, x_dtype):
    a = random_mpo(backend, mpo_dtype, 2)
    x = backend.asarray(np.ones(4), x_dtype)
    message = f"x has dtype {x_dtype} but the MPO has dtype {mpo_dtype}; expected {mpo_dtype} or"
    for method in ("auto", "cores", "dense"):
        with pytest.raises(TypeError, match=message):
            a.apply(x, method=method)
    with pytest.raises(TypeError, match=message):
        a @ x
    with pytest.raises(TypeError, match=message):
        backend.asarray(np.ones(6), x_dtype) @ a


@pytest.mark.parametrize(
    ("mpo_dtype", "x_dtype"),
    [("float64", "float32"), ("complex128", "float64"), ("complex64", "float32")],
)
def test_matmul_casts_a_vector_that_promotes_to_the_mpo(backend, mpo_dtype, x_dtype):
    """What numpy would compute anyway (the result keeps the MPO's dtype), on both backends
    (torch alone would refuse mixed dtypes)."""
    a = random_mpo(backend, mpo_dtype, 2)
    xn = np.random.default_rng(1).standard_normal((4, 3))
    x = backend.asarray(xn, x_dtype)
    dense = backend.to_numpy(a.to_dense())
    for method in ("cores", "dense"):
        y = a.apply(x, method=method)
        backend.check(y, mpo_dtype)
        assert_close(y, dense @ backend.to_numpy(x), backend)
    xl = np.random.default_rng(2).standard_normal((2, 6))
    yl = backend.asarray(xl, x_dtype) @ a
    backend.check(yl, mpo_dtype)
    assert_close(yl, xl.astype(x_dtype) @ dense, backend)


def test_sum_with_a_tensor_or_array(tn):
    torch = pytest.importorskip("torch")
    n = random_mpo(tn.Backend("numpy"), "float64", 2)
    g = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match="cannot add MPO and Tensor; expected an MPO"):
        n + g
    with pytest.raises(TypeError, match="cannot add MPO and Tensor; expected an MPO"):
        g + n
    with pytest.raises(TypeError, match=r"cannot subtract MPO and ndarray; expected an MPO \(use"):
        np.ones((6, 4)) - n
    with pytest.raises(TypeError, match="cannot add MPO and int; expected an MPO"):
        sum([n, n])


def test_trains_of_different_backend_or_dtype(backend, tn):
    torch = pytest.importorskip("torch")
    del torch
    a = random_mpo(backend, "float64", 2)
    other = "numpy" if backend.name == "torch" else "torch"
    b = random_mpo(tn.Backend(other), "float64", 2)
    for op, name in [
        (lambda x, y: x + y, "add"),
        (lambda x, y: x - y, "subtract"),
        (lambda x, y: x.inner(y), "take the inner product of"),
    ]:
        with pytest.raises(TypeError, match=f"cannot {name} a {backend.name} MPO and a {other}"):
            op(a, b)
        with pytest.raises(TypeError, match=f"cannot {name} MPOs of dtype float64 and float32"):
            op(a, random_mpo(backend, "float32", 2))
    with pytest.raises(TypeError, match="cannot multiply MPOs of dtype float64 and complex128"):
        a @ random_mpo(backend, "complex128", 2).T


@pytest.mark.parametrize(
    ("alpha", "message"),
    [
        ("2", r"\* takes a scalar \(int, float, complex or a 0-d array\); got str"),
        (None, r"\* takes a scalar \(int, float, complex or a 0-d array\); got NoneType"),
        ([2.0], r"\* takes a scalar \(int, float, complex or a 0-d array\); got list"),
        (np.ones(3), r"\* takes a scalar; got ndarray of shape \(3,\) \(use @ for products\)"),
        (np.array("a"), r"\* takes a numeric scalar; got a 0-d array of dtype <U1"),
    ],
)
def test_multiplying_by_a_non_scalar(alpha, message, tn):
    a = random_mpo(tn.Backend("numpy"), "float64", 2)
    with pytest.raises(TypeError, match=message):
        a * alpha
    with pytest.raises(TypeError, match=message):
        alpha * a
    with pytest.raises(TypeError, match=message.replace(r"\*", "/")):
        a / alpha


def test_zero_d_arrays_of_another_backend_are_refused(tn):
    torch = pytest.importorskip("torch")
    n = random_mpo(tn.Backend("numpy"), "float64", 2)
    t = random_mpo(tn.Backend("torch"), "float64", 2)
    with pytest.raises(TypeError, match=r"\* got a 0-d torch array for a numpy MPO; expected"):
        n * torch.tensor(2.0)
    with pytest.raises(TypeError, match=r"/ got a 0-d numpy array for a torch MPO; expected"):
        t / np.array(2.0)


# --------------------------------------------------------------------------------------------
# 3b. np.matrix: refused everywhere, with the conversion named
# --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_numpy_matrix_is_refused():
    w = np.matrix(np.random.default_rng(0).standard_normal((6, 8)))
    with pytest.raises(
        TypeError, match=r"W is a numpy.matrix; expected a numpy.ndarray .*np.asarray\(W\)"
    ):
        tnlm.mpo_decompose(w, ((2, 3), (2, 4)))
    with pytest.raises(TypeError, match=r"T is a numpy.matrix; expected a numpy.ndarray"):
        tnlm.tt_decompose(w)
    with pytest.raises(TypeError, match=r"core 0 is a numpy.matrix; expected a numpy.ndarray"):
        tnlm.MPO([np.matrix(np.ones((1, 1)))])
    with pytest.raises(TypeError, match=r"core 0 is a numpy.matrix; expected a numpy.ndarray"):
        tnlm.TensorTrain([np.matrix(np.ones((1, 1)))])
    a = tnlm.mpo_decompose(np.asarray(w), ((2, 3), (2, 4)))
    with pytest.raises(TypeError, match=r"x is a numpy.matrix; expected a numpy.ndarray"):
        a @ np.matrix(np.ones((8, 1)))
    with pytest.raises(TypeError, match=r"x is a numpy.matrix; expected a numpy.ndarray"):
        np.matrix(np.ones((1, 6))) @ a
    with pytest.raises(TypeError, match=r"operand 1 is a numpy.matrix; expected a numpy.ndarray"):
        tnlm.contract("ij,jk->ik", np.ones((2, 2)), np.matrix(np.ones((2, 2))))


# --------------------------------------------------------------------------------------------
# 3c. integer parameters: numpy (and torch) integers accepted, bools and floats refused
# --------------------------------------------------------------------------------------------


def test_numpy_integers_are_ints(backend):
    a = random_mpo(backend, "float64", 3)
    b = a.compress(bond_dim=np.int64(1))
    assert b.bond_dims == (1, 1)
    assert a.compress(bond_dim=[np.int32(2), np.uint8(1)]).bond_dims == (2, 1)
    for center in (np.int64(1), np.int32(-1), np.uint8(0)):
        c = a.canonicalize(center)
        assert_close(c.to_dense(), a.to_dense(), backend)
    assert a.apply_cost(np.int64(5)) == a.apply_cost(5)
    w = backend.asarray(np.random.default_rng(0).standard_normal((6, 4)), "float64")
    assert tnlm.mpo_decompose(w, ((2, 3), (2, 2)), np.int64(2)).bond_dims == (2,)


def test_torch_integer_scalars_are_ints(tn):
    torch = pytest.importorskip("torch")
    a = random_mpo(tn.Backend("torch"), "float64", 3)
    assert a.canonicalize(torch.tensor(2)).n_cores == 3


@pytest.mark.parametrize(
    ("center", "exc", "message"),
    [
        (True, TypeError, "center must be an int; got the bool True"),
        (np.True_, TypeError, "center must be an int; got the bool np.True_"),
        (1.5, TypeError, r"center must be an int; got 1.5 \(float\)"),
        (np.float64(1.0), TypeError, r"center must be an int; got np.float64\(1.0\) \(float64\)"),
        ("1", TypeError, r"center must be an int; got '1' \(str\)"),
        (3, ValueError, r"center must be an int in \[0, 3\); got 3"),
        (np.int64(-4), ValueError, r"center must be an int in \[0, 3\); got -4"),
    ],
)
def test_bad_center(backend, center, exc, message):
    with pytest.raises(exc, match=message):
        random_mpo(backend, "float64", 3).canonicalize(center)


@pytest.mark.parametrize(
    ("batch", "exc", "message"),
    [
        (True, TypeError, "batch must be an int >= 1; got the bool True"),
        (2.5, TypeError, r"batch must be an int >= 1; got 2.5 \(float\)"),
        (0, ValueError, "batch must be an int >= 1; got 0"),
    ],
)
def test_bad_apply_cost_batch(backend, batch, exc, message):
    with pytest.raises(exc, match=message):
        random_mpo(backend, "float64", 2).apply_cost(batch)


@pytest.mark.parametrize("bond_dim", [np.True_, np.float64(2.0)])
def test_bond_dim_bool_and_float_scalars(backend, bond_dim):
    with pytest.raises(TypeError, match="bond_dim must be None, an int or a sequence of 2 ints"):
        random_mpo(backend, "float64", 3).compress(bond_dim)


# --------------------------------------------------------------------------------------------
# 3d. tnlm.contract / contract_cost
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("eq", "shapes", "exc", "message"),
    [
        (
            3,
            [(2, 3)],
            TypeError,
            "eq must be an einsum equation string such as 'ij,jk->ik'; got int",
        ),
        (None, [(2, 3)], TypeError, "eq must be an einsum equation string .*; got NoneType"),
        (
            "ij,jk->ik",
            [(2, 3)],
            ValueError,
            r"equation 'ij,jk->ik' has 2 operand term\(s\) but 1 operand\(s\) were given",
        ),
        (
            "ij->i",
            [(2, 3), (3,)],
            ValueError,
            r"equation 'ij->i' has 1 operand term\(s\) but 2 operand",
        ),
        (
            "ij,jk->ik",
            [(2, 3), (3,)],
            ValueError,
            r"operand 1 has shape \(3,\) \(1 axes\) but the term 'jk' of equation 'ij,jk->ik' "
            "names 2 axes",
        ),
        (
            "...ij->i",
            [(2,)],
            ValueError,
            r"operand 0 has shape \(2,\) \(1 axes\) but the term '...ij' .* names 2 or more axes",
        ),
        (
            "ij,jk->ik",
            [(2, 3), (4, 5)],
            ValueError,
            r"label 'j' of equation 'ij,jk->ik' has size 4 in operand 1 \(shape \(4, 5\)\) but 3 "
            "in operand 0",
        ),
        (
            "ii->i",
            [(2, 3)],
            ValueError,
            r"label 'i' of equation 'ii->i' has size 3 in operand 0 .* but 2 in operand 0",
        ),
        (
            "ij->ik",
            [(2, 3)],
            ValueError,
            "output label 'k' of equation 'ij->ik' is not in any input term",
        ),
        ("ij->ii", [(2, 3)], ValueError, "output label 'i' of equation 'ij->ii' appears twice"),
        ("ij->i->j", [(2, 3)], ValueError, "equation 'ij->i->j' has more than one '->'"),
    ],
)
def test_bad_contract_equations(backend, eq, shapes, exc, message):
    arrays = [backend.asarray(np.ones(s), "float64") for s in shapes]
    with pytest.raises(exc, match=message):
        tnlm.contract(eq, *arrays)
    with pytest.raises(exc, match=message):
        tnlm.contract_cost(eq, *shapes)


def test_contract_broadcasts_size_one_labels_like_opt_einsum(backend):
    """The shape check refuses what opt_einsum refuses, no more: a size-1 axis broadcasts."""
    a = backend.asarray(np.ones((2, 1)), "float64")
    b = backend.asarray(np.ones((1, 4)), "float64")
    assert np.array_equal(backend.to_numpy(tnlm.contract("ij,jk->ik", a, b)), np.ones((2, 4)))
    assert tnlm.contract_cost("ij,jk->ik", (2, 1), (3, 4)).flops > 0


@pytest.mark.parametrize(
    ("optimize", "exc", "message"),
    [
        ("fastest", ValueError, r"unknown optimize='fastest'; expected one of .*greedy"),
        (3, TypeError, "optimize must be a path optimiser name .* or an explicit path .*; got 3"),
        (None, TypeError, "optimize must be a path optimiser name .*; got None"),
        ([(0, "a")], TypeError, r"optimize must be .*; got \[\(0, 'a'\)\]"),
        ([()], TypeError, r"optimize must be .*; got \[\(\)\]"),
        (
            [(0, 5)],
            ValueError,
            r"optimize path step 0 \(0, 5\) is invalid: expected distinct operand indices in "
            r"\[0, 3\)",
        ),
        ([(0, 1), (1, 2)], ValueError, r"optimize path step 1 \(1, 2\) is invalid: .*in \[0, 2\)"),
        ([(1, 1)], ValueError, r"optimize path step 0 \(1, 1\) is invalid: expected distinct"),
    ],
)
def test_bad_optimize(backend, optimize, exc, message):
    shapes = [(2, 3), (3, 4), (4, 5)]
    arrays = [backend.asarray(np.ones(s), "float64") for s in shapes]
    with pytest.raises(exc, match=message):
        tnlm.contract("ij,jk,kl->il", *arrays, optimize=optimize)
    with pytest.raises(exc, match=message):
        tnlm.contract_cost("ij,jk,kl->il", *shapes, optimize=optimize)


def test_explicit_path_is_honoured(backend):
    arrays = [backend.asarray(np.ones(s), "float64") for s in [(2, 3), (3, 4), (4, 5)]]
    out = tnlm.contract("ij,jk,kl->il", *arrays, optimize=[(1, 2), (0, 1)])
    assert np.array_equal(backend.to_numpy(out), np.full((2, 5), 12.0))
    assert tnlm.contract_cost(
        "ij,jk,kl->il", (2, 3), (3, 4), (4, 5), optimize=[(1, 2), (0, 1)]
    ).path == ((1, 2), (0, 1))


@pytest.mark.parametrize(("operand", "name"), [([[1.0]], "list"), (2.0, "float"), ("ab", "str")])
def test_contract_non_array_operand(backend, operand, name):
    a = backend.asarray(np.ones((1, 1)), "float64")
    with pytest.raises(TypeError, match=rf"operand 1 is a {name}; expected an array"):
        tnlm.contract("ij,jk->ik", a, operand)


@pytest.mark.parametrize("shape", [3, "ab", (2.0, 3), (2, -1)])
def test_contract_cost_bad_shape(shape):
    with pytest.raises(TypeError, match=r"shape 1 must be a tuple of non-negative ints; got"):
        tnlm.contract_cost("ij,jk->ik", (2, 3), shape)


# --------------------------------------------------------------------------------------------
# 3e. tnlm.load of malformed files; tnlm.save writes only its own file
# --------------------------------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    """A valid saved MPO (with a truncation report) and its entries as a dict."""
    w = np.random.default_rng(0).standard_normal((6, 8))
    mpo = tnlm.mpo_decompose(w, ((2, 3), (2, 4)), 3)
    path = tmp_path / "m.npz"
    tnlm.save(mpo, path)
    with np.load(path) as f:
        entries = {k: f[k] for k in f.files}
    return path, entries


def _meta(entries):
    return json.loads(entries["__meta__"].tobytes().decode())


def _rewrite(path, entries, meta=None, **changes):
    out = dict(entries)
    if meta is not None:
        out["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    np.savez(path, **out)
    return path


def _with(meta, path_keys, value):
    d = meta
    for k in path_keys[:-1]:
        d = d[k]
    if value is KeyError:
        del d[path_keys[-1]]
    else:
        d[path_keys[-1]] = value
    return meta


@pytest.mark.parametrize(
    ("keys", "value", "message"),
    [
        (("class",), "Tensor", "metadata 'class' is 'Tensor'; expected 'MPO' or 'TensorTrain'"),
        (("class",), KeyError, "metadata has no 'class' entry"),
        (("class",), 3, "metadata 'class' is 3; expected 'MPO' or 'TensorTrain'"),
        (
            ("backend",),
            "mxnet",
            "metadata 'backend' is 'mxnet'; expected 'numpy', 'torch' or 'jax'",
        ),
        (("dtypes",), "float64", "metadata 'dtypes' is 'float64'; expected a list of dtype names"),
        (("dtypes",), [], r"metadata 'dtypes' is \[\]; expected a non-empty list of dtype names"),
        (("dtypes",), ["float64", 5], r"metadata 'dtypes' is \['float64', 5\]; expected a non"),
        (("dtypes",), ["float64"] * 3, "entry 'core_2' is missing"),
        (
            ("dtypes",),
            ["float32", "float64"],
            "entry 'core_0' has dtype float64 but the metadata says float32",
        ),
        (
            ("format",),
            "tnlm-train/9",
            r"unsupported format 'tnlm-train/9' \(this version reads tnlm-train/1\)",
        ),
        (("report",), 3, "metadata 'report' is 3; expected an object or null"),
        (("report", "norm"), "big", "metadata report 'norm' is 'big'; expected a number"),
        (("report", "bonds"), {}, r"metadata report 'bonds' is \{\}; expected a list"),
        (
            ("report", "bonds", 0, "rank"),
            "3",
            "metadata report bond 0 'rank' is '3'; expected an int",
        ),
        (
            ("report", "bonds", 0, "rank"),
            True,
            "metadata report bond 0 'rank' is True; expected an int",
        ),
        (
            ("report", "bonds", 0, "error"),
            None,
            "metadata report bond 0 'error' is None; expected a number",
        ),
        (
            ("report", "bonds", 0, "discarded"),
            1,
            "metadata report bond 0 'discarded' is 1; expected true or false",
        ),
        (
            ("report", "bonds", 0, "sv_dtype"),
            KeyError,
            "metadata report bond 0 has no 'sv_dtype' entry",
        ),
        (
            ("report", "bonds", 0, "sv_dtype"),
            "float32",
            "entry 'kept_0' has dtype float64 but the metadata says float32",
        ),
    ],
)
def test_load_malformed_metadata(saved, keys, value, message):
    path, entries = saved
    _rewrite(path, entries, _with(_meta(entries), keys, value))
    with pytest.raises(ValueError, match=message + ".*; expected a file written by tnlm.save"):
        tnlm.load(path)


@pytest.mark.parametrize("key", ["core_1", "kept_0", "discarded_0"])
def test_load_missing_entries(saved, key):
    path, entries = saved
    _rewrite(path, entries, **{key: None})
    with pytest.raises(ValueError, match=f"entry '{key}' is missing; expected a file written"):
        tnlm.load(path)


def test_load_entries_of_the_wrong_kind(saved):
    path, entries = saved
    _rewrite(path, entries, core_1=np.ones((5, 3, 4, 1)))
    with pytest.raises(ValueError, match="the cores do not form a valid MPO .*mismatched"):
        tnlm.load(path)
    _rewrite(path, entries, core_0=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"entry 'core_0' cannot be read \(Object arrays cannot"):
        tnlm.load(path)
    _rewrite(path, entries, __meta__=np.ones(3))
    with pytest.raises(ValueError, match="entry '__meta__' has dtype float64 but the metadata"):
        tnlm.load(path)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", r"the metadata is not JSON \(Expecting property name"),
        (b"\xff\xfe", r"the metadata is not JSON \('utf-8' codec"),
        (b"[1, 2]", "the metadata is a JSON list, not an object"),
    ],
)
def test_load_metadata_that_is_not_a_json_object(saved, raw, message):
    path, entries = saved
    _rewrite(path, entries, __meta__=np.frombuffer(raw, dtype=np.uint8))
    with pytest.raises(ValueError, match=message):
        tnlm.load(path)


def test_load_what_is_not_a_tnlm_archive(tmp_path, saved):
    path, _ = saved
    np.save(tmp_path / "x.npy", np.ones(3))
    with pytest.raises(
        ValueError, match=r"x.npy holds a single array \(a .npy file\); expected a .npz"
    ):
        tnlm.load(tmp_path / "x.npy")
    with pytest.raises(ValueError, match="is a directory; expected a .npz file written by"):
        tnlm.load(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no such file: .*nope.npz; expected a .npz"):
        tnlm.load(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"no such file: .*nope; expected"):
        tnlm.load(tmp_path / "nope")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike; got int"):
        tnlm.load(3)
    with pytest.raises(
        ValueError, match=r"backend must be 'numpy', 'torch' or 'jax' \(or None\); got 'mxnet'"
    ):
        tnlm.load(path, backend="mxnet")
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"core_0": 1}))
    with pytest.raises(ValueError, match=r"p.npz is not a readable .npz archive \(.*pickle"):
        tnlm.load(tmp_path / "p.npz")
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e.npz is not a readable .npz archive"):
        tnlm.load(tmp_path / "e.npz")


def test_load_truncated_and_corrupt_archives(tmp_path, saved):
    path, _ = saved
    data = path.read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(
        ValueError, match=r"t.npz is not a readable .npz archive \(File is not a zip"
    ):
        tnlm.load(tmp_path / "t.npz")
    # flip bytes inside one member's data: the zip directory is intact, the CRC is not
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("core_1.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    bad = bytearray(data)
    bad[start : start + 8] = bytes(8)
    (tmp_path / "c.npz").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"entry 'core_1' cannot be read \(Bad CRC-32"):
        tnlm.load(tmp_path / "c.npz")


def test_save_touches_nothing_but_its_file(tmp_path, monkeypatch):
    """The temporary file gets a fresh name (a user's file that happens to carry the old
    fixed temporary name survives), and a failed write leaves the previous file and no
    debris behind."""
    a = tnlm.mpo_decompose(np.eye(8), ((2, 4), (2, 4)))
    path = tmp_path / "w.npz"
    mine = tmp_path / "w.npz.tmp.npz"
    mine.write_bytes(b"the user's own file")
    tnlm.save(a, path)
    assert mine.read_bytes() == b"the user's own file"
    assert sorted(os.listdir(tmp_path)) == ["w.npz", "w.npz.tmp.npz"]
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full (test)")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        tnlm.save(2.0 * a, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["w.npz", "w.npz.tmp.npz"]
    with pytest.raises(ValueError, match="is a directory; expected a file path"):
        tnlm.save(a, tmp_path / "d.npz") if (tmp_path / "d.npz").mkdir() is None else None


def test_saved_and_loaded_objects_round_trip(backend, dtype, tmp_path):
    a = random_mpo(backend, dtype, 3)
    tnlm.save(a, tmp_path / "a")
    back = tnlm.load(tmp_path / "a")
    assert back.backend == backend.name
    for c, d in zip(a.cores, back.cores):
        assert np.array_equal(backend.to_numpy(c), backend.to_numpy(d))


class _Canary:
    """Unpickling this creates a folder: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_load_never_unpickles(saved, tmp_path):
    path, entries = saved
    marker = tmp_path / "unpickled"
    canary = np.empty(1, dtype=object)
    canary[0] = _Canary(marker)
    _rewrite(path, entries, kept_0=canary)
    with pytest.raises(ValueError, match=r"entry 'kept_0' cannot be read \(Object arrays"):
        tnlm.load(path)
    assert not marker.exists()
    (tmp_path / "p.npz").write_bytes(pickle.dumps(_Canary(marker)))
    with pytest.raises(ValueError, match="is not a readable .npz archive"):
        tnlm.load(tmp_path / "p.npz")
    assert not marker.exists()


def test_load_device_without_torch(saved):
    path, _ = saved
    with pytest.raises(ValueError, match=r"device='cuda' needs backend='torch'; the file holds"):
        tnlm.load(path, device="cuda")
    with pytest.raises(ValueError, match=r"device='cuda:1' needs backend='torch'; numpy arrays"):
        tnlm.load(path, backend="numpy", device="cuda:1")
    assert tnlm.load(path, device="cpu").backend == "numpy"


def test_save_into_a_missing_folder(tmp_path):
    a = tnlm.mpo_decompose(np.eye(4), ((2, 2), (2, 2)))
    with pytest.raises(FileNotFoundError, match=r"cannot write .*w.npz: the folder .*nope does"):
        tnlm.save(a, tmp_path / "nope" / "w.npz")
    assert sorted(os.listdir(tmp_path)) == []
