"""Bad input gets a ValueError/TypeError naming what was wrong and what was expected."""

from __future__ import annotations

import numpy as np
import pytest

import tnlm


@pytest.fixture
def w(backend):
    """A valid 6 x 8 float64 matrix in the backend under test."""
    return backend.asarray(np.random.default_rng(0).standard_normal((6, 8)), "float64")


@pytest.fixture
def mpo(w):
    return tnlm.mpo_decompose(w, ((2, 3), (2, 4)))


# --------------------------------------------------------------------------------------------
# mpo_decompose / tt_decompose
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "exc", "message"),
    [
        (((2, 2), (2, 4)), ValueError, r"row_dims \(2, 2\) multiply to 4, but W has 6 rows"),
        (((2, 3), (3, 3)), ValueError, r"col_dims \(3, 3\) multiply to 9, but W has 8 columns"),
        (((2, 3), (8,)), ValueError, r"have different lengths \(2 vs 1\)"),
        (((6,), (2, 2, 2)), ValueError, r"have different lengths \(1 vs 3\)"),
        (((2, 0, 3), (2, 4, 1)), ValueError, "row_dims must be a non-empty sequence of positive"),
        (((), ()), ValueError, "row_dims must be a non-empty sequence of positive ints"),
        (((2, 3.0), (2, 4)), ValueError, "row_dims must be a non-empty sequence of positive"),
        (((2, 3), 8), TypeError, "col_dims must be a sequence of positive ints; got 8"),
        (((2, 3), (2, 4), (1, 1)), TypeError, r"shape must be an int n \(number of cores\)"),
        ("3", TypeError, r"shape must be an int n \(number of cores\) or a pair"),
        (0, ValueError, "shape as an int is the number of cores and must be >= 1; got 0"),
    ],
)
def test_bad_shape(w, shape, exc, message):
    with pytest.raises(exc, match=message):
        tnlm.mpo_decompose(w, shape)


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        ((2, 3, 4), r"W must be 2-D; got a 3-D array of shape \(2, 3, 4\)"),
        ((48,), r"W must be 2-D; got a 1-D array of shape \(48,\)"),
        ((), r"W must be 2-D; got a 0-D array of shape \(\)"),
    ],
)
def test_non_2d_matrix(backend, dims, message):
    x = backend.asarray(np.ones(dims), "float64")
    with pytest.raises(ValueError, match=message):
        tnlm.mpo_decompose(x, 2)


def test_not_an_array():
    with pytest.raises(TypeError, match="W must be an array .*; got list"):
        tnlm.mpo_decompose([[1.0, 2.0]], ((1,), (2,)))
    with pytest.raises(TypeError, match="T must be an array .*; got list"):
        tnlm.tt_decompose([1.0, 2.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_entries(backend, dtype, bad):
    a = np.ones((4, 4))
    a[1, 2] = bad
    x = backend.asarray(a, dtype)
    with pytest.raises(ValueError, match="W contains NaN or Inf entries; expected finite"):
        tnlm.mpo_decompose(x, ((2, 2), (2, 2)))
    with pytest.raises(ValueError, match="T contains NaN or Inf entries; expected finite"):
        tnlm.tt_decompose(x)


@pytest.mark.parametrize("int_dtype", ["int64", "int32", "uint8", "bool"])
def test_integer_and_boolean_dtypes_are_not_promoted(backend, int_dtype):
    x = backend.asarray(np.ones((4, 6)), int_dtype)
    with pytest.raises(TypeError, match=f"W has dtype {int_dtype}; expected a floating or"):
        tnlm.mpo_decompose(x, ((2, 2), (2, 3)))
    with pytest.raises(TypeError, match=f"T has dtype {int_dtype}; expected a floating or"):
        tnlm.tt_decompose(x)


@pytest.mark.parametrize("dims", [(0, 4), (3, 0), (0, 0)])
def test_empty_arrays(backend, dims):
    x = backend.asarray(np.ones(dims), "float32")
    with pytest.raises(ValueError, match=r"W is empty \(shape \(\d, \d\)\); expected no zero"):
        tnlm.mpo_decompose(x, ((1,), (1,)))
    with pytest.raises(ValueError, match=r"T is empty \(shape \(\d, \d\)\)"):
        tnlm.tt_decompose(x)


def test_zero_dimensional_tensor(backend):
    with pytest.raises(ValueError, match="T must have at least one axis; got a 0-d array"):
        tnlm.tt_decompose(backend.asarray(np.float64(1.0), "float64"))


@pytest.mark.parametrize(
    ("bond_dim", "exc", "message"),
    [
        (0, ValueError, "bond_dim must be >= 1; got 0"),
        (-3, ValueError, "bond_dim must be >= 1; got -3"),
        ([2, 0], ValueError, r"bond_dim entries must be ints >= 1 \(or None\); got 0"),
        ([2, 1.5], ValueError, r"bond_dim entries must be ints >= 1 \(or None\); got 1.5"),
        ([2, 2, 2], ValueError, r"bond_dim has 3 entries; expected one per internal bond \(2\)"),
        ([2], ValueError, r"bond_dim has 1 entries; expected one per internal bond \(2\)"),
        (2.5, TypeError, "bond_dim must be None, an int or a sequence of 2 ints; got 2.5"),
        (True, TypeError, "bond_dim must be None, an int or a sequence of 2 ints; got True"),
    ],
)
def test_bad_bond_dim(w, bond_dim, exc, message):
    shape = ((1, 2, 3), (2, 2, 2))
    with pytest.raises(exc, match=message):
        tnlm.mpo_decompose(w, shape, bond_dim)
    with pytest.raises(exc, match=message):
        tnlm.mpo_decompose(w, shape).compress(bond_dim)
    with pytest.raises(exc, match=message):
        tnlm.tt_decompose(w.reshape(2, 3, 8), bond_dim)


@pytest.mark.parametrize("tol", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_tol_outside_the_open_unit_interval(w, mpo, tol):
    message = r"tol must lie in the open interval \(0, 1\); got"
    with pytest.raises(ValueError, match=message):
        tnlm.mpo_decompose(w, ((2, 3), (2, 4)), tol=tol)
    with pytest.raises(ValueError, match=message):
        tnlm.tt_decompose(w, tol=tol)
    with pytest.raises(ValueError, match=message):
        mpo.compress(tol=tol)


@pytest.mark.parametrize("tol", ["0.1", True, 0.5j])
def test_tol_of_the_wrong_type(w, tol):
    with pytest.raises(TypeError, match=r"tol must be a float in \(0, 1\); got"):
        tnlm.mpo_decompose(w, ((2, 3), (2, 4)), tol=tol)


def test_unknown_svd_method(w, mpo):
    message = "unknown method='fast'; expected one of auto, svd, rsvd"
    with pytest.raises(ValueError, match=message):
        tnlm.mpo_decompose(w, ((2, 3), (2, 4)), method="fast")
    with pytest.raises(ValueError, match=message):
        tnlm.tt_decompose(w, method="fast")
    with pytest.raises(ValueError, match=message):
        mpo.compress(2, method="fast")


def test_tol_missed_because_a_cap_binds_warns(w):
    with pytest.warns(UserWarning, match=r"bond_dim caps bound before tol=0.001 was reached"):
        m = tnlm.mpo_decompose(w, ((2, 3), (2, 4)), 1, tol=1e-3)
    assert m.report.relative_error > 1e-3


# --------------------------------------------------------------------------------------------
# MPO / TensorTrain construction
# --------------------------------------------------------------------------------------------


def test_mismatched_neighbouring_cores(backend):
    cores = [backend.asarray(np.ones(s), "float64") for s in [(1, 2, 2, 2), (3, 2, 2, 1)]]
    with pytest.raises(
        ValueError,
        match="mismatched neighbouring cores: core 0 has r_right = 2 but core 1 has r_left = 3",
    ):
        tnlm.MPO(cores)
    tt = [backend.asarray(np.ones(s), "float64") for s in [(1, 2, 2), (2, 2, 4), (3, 2, 1)]]
    with pytest.raises(ValueError, match="core 1 has r_right = 4 but core 2 has r_left = 3"):
        tnlm.TensorTrain(tt)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ([(2, 2, 2, 1)], r"boundary ranks must be 1; got r_0 = 2 and r_n = 1"),
        ([(1, 2, 2, 2), (2, 2, 2, 3)], r"boundary ranks must be 1; got r_0 = 1 and r_n = 3"),
        ([(1, 2, 2, 2), (2, 2, 1)], r"core 1 has shape \(2, 2, 1\); expected 4-D cores"),
    ],
)
def test_bad_mpo_cores(backend, shapes, message):
    with pytest.raises(ValueError, match=message):
        tnlm.MPO([backend.asarray(np.ones(s), "float64") for s in shapes])


def test_mpo_cores_must_agree_in_kind(backend):
    a = backend.asarray(np.ones((1, 2, 2, 1)), "float64")
    with pytest.raises(ValueError, match="MPO needs at least one core; got an empty list"):
        tnlm.MPO([])
    with pytest.raises(TypeError, match="core 1 is a list; expected an array"):
        tnlm.MPO([a, [[1.0]]])
    b = backend.asarray(np.ones((1, 2, 2, 1)), "float32")
    with pytest.raises(TypeError, match="core 1 has dtype float32 but core 0 has float64"):
        tnlm.MPO([a, b])
    if backend.name == "torch":
        with pytest.raises(TypeError, match="core 1 is a numpy array but core 0 is torch"):
            tnlm.MPO([a, np.ones((1, 2, 2, 1))])


# --------------------------------------------------------------------------------------------
# operations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_shape", "message"),
    [
        ((6,), r"x has shape \(6,\); expected \(8,\) or \(8, batch\) for an MPO of shape \(6, 8\)"),
        ((6, 3), r"x has shape \(6, 3\); expected \(8,\) or \(8, batch\)"),
        ((8, 3, 2), r"x has shape \(8, 3, 2\); expected \(8,\) or \(8, batch\)"),
        ((), r"x has shape \(\); expected \(8,\)"),
    ],
)
def test_apply_with_wrong_x_shape(backend, mpo, x_shape, message):
    x = backend.asarray(np.ones(x_shape), "float64")
    for method in ("auto", "cores", "dense"):
        with pytest.raises(ValueError, match=message):
            mpo.apply(x, method=method)
    with pytest.raises(ValueError, match=message):
        mpo @ x


def test_x_at_mpo_with_wrong_shape(backend, mpo):
    x = backend.asarray(np.ones((3, 8)), "float64")  # needs (batch, 6)
    with pytest.raises(ValueError, match=r"x has shape \(8, 3\); expected \(6,\) or \(6, batch\)"):
        x @ mpo


def test_unknown_apply_method(backend, mpo):
    x = backend.asarray(np.ones(8), "float64")
    with pytest.raises(
        ValueError, match=r"unknown method='fast'; expected one of \('auto', 'dense', 'cores'\)"
    ):
        mpo.apply(x, method="fast")


def test_combining_mpos_of_different_structure(backend, w, mpo):
    other = tnlm.mpo_decompose(w, ((3, 2), (2, 4)))
    for op, name in [
        (lambda a, b: a + b, "add"),
        (lambda a, b: a - b, "subtract"),
        (lambda a, b: a.inner(b), "take the inner product of"),
    ]:
        with pytest.raises(ValueError, match=f"cannot {name}: structures differ"):
            op(mpo, other)
    three = tnlm.mpo_decompose(w, ((1, 2, 3), (2, 2, 2)))
    with pytest.raises(ValueError, match=r"cannot add: structures differ \(\(\(2, 3\), \(2, 4\)"):
        mpo + three
    tt = tnlm.tt_decompose(w)
    with pytest.raises(TypeError, match="cannot add MPO and TensorTrain"):
        mpo + tt
    with pytest.raises(TypeError, match="cannot subtract MPO and int"):
        mpo - 1


def test_products_of_incompatible_mpos(w, mpo):
    with pytest.raises(ValueError, match=r"cannot multiply: left col_dims \(2, 4\) != right"):
        mpo @ mpo
    with pytest.raises(TypeError, match="matmul takes an MPO; got TensorTrain"):
        mpo.matmul(tnlm.tt_decompose(w))
    with pytest.raises(TypeError, match=r"\* takes a scalar; got MPO \(use @ for products\)"):
        mpo * mpo
    with pytest.raises(TypeError, match=r"\* takes a scalar"):
        mpo * w


@pytest.mark.parametrize("center", [2, -3])
def test_canonicalize_center_out_of_range(mpo, center):
    with pytest.raises(ValueError, match=r"center must be an int in \[0, 2\); got"):
        mpo.canonicalize(center)


@pytest.mark.parametrize("center", [1.0, True])
def test_canonicalize_center_of_the_wrong_type(mpo, center):
    with pytest.raises(TypeError, match=r"center must be an int; got (the bool True|1\.0)"):
        mpo.canonicalize(center)


def test_quimb_conversion_errors(backend):
    pytest.importorskip("quimb")
    one = tnlm.MPO([backend.asarray(np.ones((1, 2, 2, 1)), "float64")])
    with pytest.raises(ValueError, match="needs at least 2 sites; got 1 core"):
        one.to_quimb()
    with pytest.raises(TypeError, match="expected a quimb MatrixProductOperator; got MPO"):
        tnlm.MPO.from_quimb(one)


# --------------------------------------------------------------------------------------------
# contract
# --------------------------------------------------------------------------------------------


def test_unknown_optimize_name(backend):
    a = backend.asarray(np.ones((2, 3)), "float64")
    message = r"unknown optimize='fastest'; expected one of .*greedy.* or an explicit path"
    with pytest.raises(ValueError, match=message):
        tnlm.contract("ij->i", a, optimize="fastest")
    with pytest.raises(ValueError, match=message):
        tnlm.contract_cost("ij->i", (2, 3), optimize="fastest")
