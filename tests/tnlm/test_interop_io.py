"""quimb round trips and save/load (bit-exact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tnlm

qtn = pytest.importorskip("quimb.tensor")


# --------------------------------------------------------------------------------------------
# quimb
# --------------------------------------------------------------------------------------------


@given(data=st.data())
def test_quimb_round_trip(backend, dtype, tn, data):
    """to_quimb().to_dense() is our matrix (rectangular included); from_quimb inverts it."""
    shape = data.draw(tn.mpo_shapes(min_cores=2), label="shape")
    rows, cols = math.prod(shape[0]), math.prod(shape[1])
    w, wn = backend.spectral(rows, cols, data.draw(tn.seeds), data.draw(tn.decays), dtype)
    cap = data.draw(st.none() | st.integers(1, 4), label="bond_dim")
    mpo = tnlm.mpo_decompose(w, shape, cap)
    dense = backend.to_numpy(mpo.to_dense())

    q = mpo.to_quimb()
    assert isinstance(q, qtn.MatrixProductOperator) and q.L == len(shape[0])
    qd = q.to_dense()
    backend.check(qd, dtype)
    tol = tn.atol(dtype, wn.size, np.linalg.norm(wn))
    np.testing.assert_allclose(backend.to_numpy(qd), dense, rtol=0, atol=tol)

    back = tnlm.MPO.from_quimb(q)
    assert back.row_dims == mpo.row_dims and back.col_dims == mpo.col_dims
    assert back.bond_dims == mpo.bond_dims
    for a, b in zip(mpo.cores, back.cores):
        backend.check(b, dtype)
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


@pytest.mark.parametrize("seed", [0, 1])
def test_from_quimb_matches_quimbs_own_dense(seed):
    """An MPO built by quimb (not by us): from_quimb agrees with quimb's to_dense."""
    q = qtn.MPO_rand(4, bond_dim=3, phys_dim=2, seed=seed, dtype="complex128")
    mpo = tnlm.MPO.from_quimb(q)
    assert mpo.row_dims == (2, 2, 2, 2) and mpo.bond_dims == (3, 3, 3)
    qd = np.asarray(q.to_dense())
    np.testing.assert_allclose(
        mpo.to_dense(), qd, rtol=0, atol=1e3 * np.finfo(float).eps * np.linalg.norm(qd)
    )
    # and x -> W x agrees with quimb's operator applied to a vector
    x = np.random.default_rng(seed).standard_normal(16)
    np.testing.assert_allclose(mpo @ x, qd @ x, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _bits(backend, x):
    """The raw bytes of an array (bfloat16 viewed as int16)."""
    if backend.name == "torch":
        import torch

        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return t.numpy().tobytes(), str(x.dtype)
    return np.asarray(x).tobytes(), str(x.dtype)


def _assert_same(backend, a, b):
    assert type(a) is type(b)
    assert len(a.cores) == len(b.cores)
    for x, y in zip(a.cores, b.cores):
        assert type(x) is type(y)
        assert tuple(x.shape) == tuple(y.shape)
        assert _bits(backend, x) == _bits(backend, y)
    if a.report is None:
        assert b.report is None
        return
    assert b.report.norm == a.report.norm
    assert b.report.bond_errors == a.report.bond_errors
    for p, q in zip(a.report.bonds, b.report.bonds):
        assert (p.rank, p.method) == (q.rank, q.method)
        assert _bits(backend, p.kept) == _bits(backend, q.kept)
        assert (p.discarded is None) == (q.discarded is None)
        if p.discarded is not None:
            assert _bits(backend, p.discarded) == _bits(backend, q.discarded)


def _save_load_round_trip(backend, dtype, method, tmp_path):
    w, _ = backend.spectral(24, 30, seed=3, decay=0.3, dtype=dtype)
    mpo = tnlm.mpo_decompose(w, ((2, 3, 4), (3, 5, 2)), 3, method=method)
    path = tmp_path / "w.npz"
    tnlm.save(mpo, path)
    back = tnlm.load(path)
    _assert_same(backend, mpo, back)
    backend.check(back.cores[0], dtype)
    # the method form, and a path without the suffix
    mpo.save(tmp_path / "again")
    _assert_same(backend, mpo, tnlm.load(tmp_path / "again"))


@pytest.mark.parametrize("method", ["svd", "rsvd"])
def test_save_load_is_bit_exact(backend, dtype, method, tmp_path):
    _save_load_round_trip(backend, dtype, method, tmp_path)


@pytest.mark.parametrize("method", ["svd", "rsvd"])
def test_save_load_bfloat16_torch_is_bit_exact(method, tmp_path, tn):
    pytest.importorskip("torch")
    _save_load_round_trip(tn.Backend("torch"), "bfloat16", method, tmp_path)


def test_save_load_tensor_train_and_unreported(backend, tmp_path):
    t = backend.asarray(np.random.default_rng(4).standard_normal((3, 4, 5)), "float64")
    tt = tnlm.tt_decompose(t, 2)
    tnlm.save(tt, tmp_path / "t.npz")
    _assert_same(backend, tt, tnlm.load(tmp_path / "t.npz"))
    bare = tnlm.MPO([backend.asarray(np.ones((1, 2, 2, 1)), "float32")])
    tnlm.save(bare, tmp_path / "b.npz")
    _assert_same(backend, bare, tnlm.load(tmp_path / "b.npz"))


def test_load_into_another_backend(tmp_path):
    torch = pytest.importorskip("torch")
    w = np.random.default_rng(5).standard_normal((8, 9)).astype(np.float32)
    mpo = tnlm.mpo_decompose(w, ((2, 4), (3, 3)), 2)
    tnlm.save(mpo, tmp_path / "w.npz")
    back = tnlm.load(tmp_path / "w.npz", backend="torch")
    for a, b in zip(mpo.cores, back.cores):
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float32
        np.testing.assert_array_equal(a, b.numpy())
    assert isinstance(back.report.kept[0], torch.Tensor)

    bf = tnlm.mpo_decompose(torch.tensor(w, dtype=torch.bfloat16), ((2, 4), (3, 3)), 2)
    tnlm.save(bf, tmp_path / "bf.npz")
    with pytest.raises(ValueError, match="bfloat16 cores, which numpy cannot represent"):
        tnlm.load(tmp_path / "bf.npz", backend="numpy")


def test_load_rejects_foreign_files(tmp_path):
    np.savez(tmp_path / "x.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="is not a tnlm file"):
        tnlm.load(tmp_path / "x.npz")
    with pytest.raises(TypeError, match="save takes an MPO or a TensorTrain"):
        tnlm.save(np.ones(3), tmp_path / "y.npz")
    mpo = tnlm.MPO([np.ones((1, 2, 2, 1))])
    tnlm.save(mpo, tmp_path / "z.npz")
    with pytest.raises(ValueError, match="backend must be 'numpy', 'torch' or 'jax'"):
        tnlm.load(tmp_path / "z.npz", backend="mxnet")
