"""``MPOLinear.to_mpo`` / ``MPOLinear.from_mpo``: the layer seen as a ``tnlm.MPO`` and back.

Oracles: the layer's own rebuilt weight, an entry-by-entry product of core slices (the
convention written out), ``nn.Linear`` with a dense weight, and numpy's SVD of the interleaved
weight for tnlm's spectra, entropies and truncation errors on a trained layer.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tnlm
from tnlm_models import MPOLinear
from tnlm_models.mpo_linear import full_bond_dims

#: (out_dims, in_dims, bond_dim): 1 to 6 cores, full rank, one cap, per-bond caps
STRUCTURES = [
    ((6,), (4,), None),
    ((4, 6), (3, 8), None),
    ((2, 3, 4), (3, 2, 2), None),
    ((2, 3, 4), (3, 2, 2), 4),
    ((2, 2, 3, 2), (3, 2, 2, 2), (2, 5, 3)),
    ((4, 4, 8, 6, 4), (3, 4, 4, 4, 4), 8),
    ((2,) * 6, (2,) * 6, None),
]
DTYPES = [torch.float32, torch.float64]


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _layer(out_dims, in_dims, bond_dim=None, *, dtype=torch.float64, seed=0, **kw) -> MPOLinear:
    """A layer with random cores, a random bias and (if any) a non-zero adapter."""
    g = torch.Generator().manual_seed(seed)
    layer = MPOLinear(
        math.prod(in_dims),
        math.prod(out_dims),
        out_dims=out_dims,
        in_dims=in_dims,
        bond_dim=bond_dim,
        dtype=dtype,
        initialize=False,
        **kw,
    )
    layer.reset_parameters(0.5, generator=g)
    assert layer.bias is not None
    with torch.no_grad():
        layer.bias.copy_(torch.randn(layer.out_features, generator=g, dtype=dtype))
        if layer.adapter_up is not None:
            layer.adapter_up.copy_(torch.randn(layer.adapter_up.shape, generator=g, dtype=dtype))
    return layer


def _assert_close_fro(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, c: float) -> None:
    """``||a - b||_F <= c * eps(dtype) * ||b||_F``."""
    assert a.shape == b.shape
    err = float(torch.linalg.norm((a - b).detach().double()))
    bound = c * _eps(dtype) * float(torch.linalg.norm(b.detach().double()))
    assert err <= bound, f"||a - b||_F = {err:.3e} > {bound:.3e}"


# ------------------------------------------------------------------------------ to_mpo


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("out_dims", "in_dims", "bond_dim"), STRUCTURES)
def test_to_mpo_dense_equals_rebuilt_weight(out_dims, in_dims, bond_dim, dtype):
    layer = _layer(out_dims, in_dims, bond_dim, dtype=dtype)
    mpo = layer.to_mpo()
    assert isinstance(mpo, tnlm.MPO)
    assert mpo.row_dims == layer.out_dims and mpo.col_dims == layer.in_dims
    assert mpo.shape == (layer.out_features, layer.in_features)
    assert (1, *mpo.bond_dims, 1) == layer.bond_dims
    assert mpo.dtype == dtype and mpo.backend == "torch"
    dense = mpo.to_dense()
    _assert_close_fro(dense, layer.rebuild_weight(), dtype, c=10 * layer.num_cores)
    # and the layer computes x @ dense.T + b
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(1), dtype=dtype)
    _assert_close_fro(layer(x), F.linear(x, dense, layer.bias), dtype, c=10 * layer.num_cores)


def test_to_mpo_leg_order_entry_by_entry():
    """The convention written out: ``W[(o_1..o_n), (i_1..i_n)] = prod_k core_k[:, o_k, i_k, :]``
    with row-major multi-indices, against the MPO's and the layer's dense weight."""
    out_dims, in_dims = (2, 3, 2), (3, 1, 2)
    layer = _layer(out_dims, in_dims, 3)
    mpo = layer.to_mpo()
    cores = [c.detach() for c in layer.cores]
    oracle = torch.empty(layer.out_features, layer.in_features, dtype=torch.float64)
    for o in itertools.product(*(range(d) for d in out_dims)):
        for i in itertools.product(*(range(d) for d in in_dims)):
            m = torch.ones(1, 1, dtype=torch.float64)
            for k, core in enumerate(cores):
                m = m @ core[:, o[k], i[k], :]  # (1, r_k)
            row = int(np.ravel_multi_index(o, out_dims))
            col = int(np.ravel_multi_index(i, in_dims))
            oracle[row, col] = m[0, 0]
    _assert_close_fro(mpo.to_dense().detach(), oracle, torch.float64, c=10)
    _assert_close_fro(layer.mpo_weight().detach(), oracle, torch.float64, c=10)


def test_to_mpo_is_the_cores_alone_without_the_adapter():
    layer = _layer((2, 3, 4), (3, 2, 2), adapter_size=2)
    assert layer.adapter_up is not None and layer.adapter_down is not None
    adapter = (layer.adapter_up @ layer.adapter_down).detach()  # (out, in), non-zero
    assert float(adapter.abs().max()) > 0.1
    dense = layer.to_mpo().to_dense()
    _assert_close_fro(dense, layer.mpo_weight(), torch.float64, c=30)
    _assert_close_fro(layer.rebuild_weight() - dense, adapter, torch.float64, c=100)


def test_to_mpo_cores_are_the_parameters():
    layer = _layer((2, 3, 4), (3, 2, 2))
    mpo = layer.to_mpo()
    params = dict(layer.named_parameters())
    for k, core in enumerate(mpo.cores):
        assert core is params[layer.core_name(k)]
    # an in-place update of the layer (an optimizer step) shows in the view
    before = mpo.to_dense().detach().clone()
    with torch.no_grad():
        layer.central.mul_(3.0)
    _assert_close_fro(mpo.to_dense().detach(), 3.0 * before, torch.float64, c=30)


def test_to_mpo_gradients_reach_the_parameters():
    layer = _layer((2, 3, 4), (3, 2, 2), 4)
    params = layer.cores
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref_loss = (layer.mpo_weight() @ x).sin().sum() + torch.linalg.norm(layer.mpo_weight())
    ref = torch.autograd.grad(ref_loss, params)
    mpo = layer.to_mpo()
    for method in ("cores", "dense"):
        loss = mpo.apply(x, method=method).sin().sum() + mpo.norm()
        got = torch.autograd.grad(loss, params)
        for k, (g, r) in enumerate(zip(got, ref)):
            assert float(r.abs().max()) > 0, f"core {k} has a zero reference gradient"
            _assert_close_fro(g, r, torch.float64, c=100)


def test_to_mpo_shares_the_central_tensor_between_layers():
    first = _layer((2, 3, 4), (3, 2, 2), seed=0)
    second = MPOLinear(12, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 2), central=first.central)
    second = second.to(torch.float64)
    assert second.central is first.central
    m1, m2 = first.to_mpo(), second.to_mpo()
    c = m1.central_index
    assert m1.cores[c] is first.central and m2.cores[c] is first.central
    assert m1.cores[c].data_ptr() == m2.cores[c].data_ptr()
    probe = torch.randn(24, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g1 = torch.autograd.grad((m1.to_dense() * probe).sum(), first.central)[0]
    g2 = torch.autograd.grad((m2.to_dense() * probe).sum(), first.central)[0]
    first.central.grad = None
    ((m1.to_dense() * probe).sum() + (m2.to_dense() * probe).sum()).backward()
    assert first.central.grad is not None
    _assert_close_fro(first.central.grad, g1 + g2, torch.float64, c=30)
    assert float(g2.abs().max()) > 0 and not torch.allclose(g1, g2)


# ------------------------------------------------------------------------------ from_mpo


@pytest.mark.parametrize("mode", ["dense", "cores"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("out_dims", "in_dims", "bond_dim"), STRUCTURES)
def test_from_mpo_round_trip_same_forward(out_dims, in_dims, bond_dim, dtype, mode):
    layer = _layer(out_dims, in_dims, bond_dim, dtype=dtype, forward_mode=mode)
    back = MPOLinear.from_mpo(layer.to_mpo(), layer.bias, forward_mode=mode)
    assert (back.out_dims, back.in_dims, back.bond_dims) == (
        layer.out_dims,
        layer.in_dims,
        layer.bond_dims,
    )
    assert back.central.dtype == dtype and back.bias is not None
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(3), dtype=dtype)
    assert torch.equal(back(x), layer(x))
    # the cores were copied: training the new layer leaves the old one alone
    for a, b in zip(back.cores, layer.cores):
        assert a.data_ptr() != b.data_ptr()
    before = layer.mpo_weight().detach().clone()
    with torch.no_grad():
        back.central.add_(1.0)
    assert torch.equal(layer.mpo_weight().detach(), before)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_from_mpo_numpy_cores_with_uneven_bonds(dtype):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((24, 36)).astype(dtype)
    b = rng.standard_normal(24).astype(dtype)
    mpo = tnlm.mpo_decompose(w, ((2, 3, 4), (3, 3, 4)), bond_dim=(5, 7))
    assert mpo.bond_dims == (5, 7)
    layer = MPOLinear.from_mpo(mpo, b)
    assert layer.bond_dims == (1, 5, 7, 1) and layer.bond_dim == (5, 7)
    assert layer.central.dtype == getattr(torch, dtype)
    assert layer.central.device == torch.device("cpu")
    tdtype = getattr(torch, dtype)
    dense = torch.from_numpy(mpo.to_dense())
    _assert_close_fro(layer.rebuild_weight().detach(), dense, tdtype, c=30)
    x = torch.from_numpy(rng.standard_normal((3, 36)).astype(dtype))
    ref = x @ dense.T + torch.from_numpy(b)  # nn.Linear with the MPO's dense matrix
    _assert_close_fro(layer(x).detach(), ref, tdtype, c=30)


def test_from_mpo_keeps_the_bonds_of_a_compressed_mpo():
    layer = _layer((2, 2, 3, 2), (3, 2, 2, 2))
    small = layer.to_mpo().compress(tol=0.5)
    assert small.bond_dims != tuple(layer.bond_dims[1:-1])
    back = MPOLinear.from_mpo(small)
    assert back.bond_dims == (1, *small.bond_dims, 1)
    assert back.bias is None
    _assert_close_fro(back.rebuild_weight(), small.to_dense().detach(), torch.float64, c=30)


def test_from_mpo_with_a_shared_central_uses_it():
    layer = _layer((2, 3, 4), (3, 2, 2))
    back = MPOLinear.from_mpo(layer.to_mpo(), layer.bias, central=layer.central)
    assert back.central is layer.central
    x = torch.randn(2, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(back(x), layer(x))
    # equal values (not the same tensor) are accepted too: numpy cores of the same matrix
    mpo_np = tnlm.MPO([c.detach().numpy() for c in layer.cores])
    again = MPOLinear.from_mpo(mpo_np, central=layer.central)
    assert again.central is layer.central


def test_from_mpo_adapter_starts_at_zero_and_trains():
    layer = _layer((2, 3, 4), (3, 2, 2))
    back = MPOLinear.from_mpo(layer.to_mpo(), layer.bias, adapter_size=3, std=0.1)
    assert back.adapter_up is not None and back.adapter_down is not None
    assert float(back.adapter_up.detach().abs().max()) == 0.0
    assert float(back.adapter_down.detach().abs().max()) > 0.0
    _assert_close_fro(back.rebuild_weight(), layer.rebuild_weight(), torch.float64, c=30)
    back(torch.ones(2, 12, dtype=torch.float64)).square().sum().backward()
    assert float(back.adapter_up.grad.abs().max()) > 0.0  # not a saddle at zero


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_from_mpo_takes_the_device_of_the_cores():
    layer = _layer((2, 3, 4), (3, 2, 2)).to("cuda")
    back = MPOLinear.from_mpo(layer.to_mpo(), layer.bias)
    assert back.central.device == layer.central.device
    x = torch.randn(2, 12, dtype=torch.float64, device="cuda")
    assert torch.equal(back(x), layer(x))


# ------------------------------------------------------------------------------ bad input


def _small_mpo() -> tnlm.MPO:
    w = np.random.default_rng(6).standard_normal((4, 6))
    return tnlm.mpo_decompose(w, ((2, 2), (3, 2)))


def test_from_mpo_refuses_a_non_mpo():
    mpo = _small_mpo()
    with pytest.raises(TypeError, match=r"takes a tnlm\.MPO; got list \(wrap a list of cores"):
        MPOLinear.from_mpo(list(mpo.cores))
    with pytest.raises(TypeError, match=r"takes a tnlm\.MPO; got ndarray \(for a dense weight"):
        MPOLinear.from_mpo(mpo.to_dense())
    with pytest.raises(TypeError, match=r"takes a tnlm\.MPO; got MPOLinear$"):
        MPOLinear.from_mpo(MPOLinear(6, 4, num_cores=2))


def test_from_mpo_refuses_non_real_floating_cores():
    w = np.random.default_rng(7).standard_normal((4, 6)) + 1j
    with pytest.raises(TypeError, match=r"real floating dtype .* have dtype complex128"):
        MPOLinear.from_mpo(tnlm.mpo_decompose(w, ((2, 2), (3, 2))))
    with pytest.raises(TypeError, match=r"real floating dtype .* have dtype int64"):
        MPOLinear.from_mpo(tnlm.MPO([np.ones((1, 2, 2, 1), dtype=np.int64)]))


def test_from_mpo_refuses_a_trivial_core():
    w = np.random.default_rng(8).standard_normal((4, 6))
    mpo = tnlm.mpo_decompose(w, ((2, 1, 2), (3, 1, 2)))
    with pytest.raises(ValueError, match=r"from_mpo: the MPO's factorisation .* core 1 has out_1"):
        MPOLinear.from_mpo(mpo)


def test_from_mpo_refuses_a_bond_above_full_rank():
    mpo = _small_mpo()
    with pytest.raises(ValueError, match=r"bond 0 has dimension 8, above its full rank 4"):
        MPOLinear.from_mpo(mpo + mpo)
    MPOLinear.from_mpo((mpo + mpo).compress())  # the remedy the message names works


def test_from_mpo_refuses_a_bad_bias():
    mpo = _small_mpo()
    with pytest.raises(ValueError, match=r"bias has shape \(5,\), expected \(out_features,\)"):
        MPOLinear.from_mpo(mpo, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"bias has shape \(4, 1\), expected \(out_features,\)"):
        MPOLinear.from_mpo(mpo, np.zeros((4, 1)))
    with pytest.raises(TypeError, match=r"bias must be None or a tensor/array of shape \(4,\)"):
        MPOLinear.from_mpo(mpo, [0.0] * 4)


def test_from_mpo_refuses_a_central_of_another_structure():
    """A central tensor from a 5-core layer for a 3-core MPO (wrong number of cores)."""
    five = MPOLinear(32, 32, num_cores=5, dtype=torch.float64)
    w = torch.randn(32, 32, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    three = tnlm.mpo_decompose(w, 3)
    with pytest.raises(ValueError, match=r"central core \(core 1 of 3\) has shape"):
        MPOLinear.from_mpo(three, central=five.central)


def test_from_mpo_refuses_a_central_with_other_values():
    layer = _layer((2, 3, 4), (3, 2, 2))
    other = _layer((2, 3, 4), (3, 2, 2), seed=1)
    with pytest.raises(ValueError, match=r"central does not hold the MPO's central core"):
        MPOLinear.from_mpo(layer.to_mpo(), central=other.central)
    with pytest.raises(ValueError, match=r"shared central tensor has dtype torch.float32"):
        MPOLinear.from_mpo(layer.to_mpo(), central=nn_param(other.central.float()))


def nn_param(t: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(t.detach().clone())


# ------------------------------------------------------------------------------ per-bond caps


def test_per_bond_caps():
    assert full_bond_dims((2, 2, 2), (2, 2, 2), (3, 100)) == (1, 3, 4, 1)
    assert full_bond_dims((2, 2, 2), (2, 2, 2), (3, 100)) == tuple(
        min(a, b) for a, b in zip(full_bond_dims((2, 2, 2), (2, 2, 2)), (1, 3, 100, 1))
    )
    layer = MPOLinear(8, 8, out_dims=(2, 2, 2), in_dims=(2, 2, 2), bond_dim=[3, 2])
    assert layer.bond_dims == (1, 3, 2, 1)
    assert [tuple(c.shape) for c in layer.cores] == [(1, 2, 2, 3), (3, 2, 2, 2), (2, 2, 2, 1)]
    with pytest.raises(ValueError, match=r"bond_dim has 1 caps \(3,\), expected one per internal"):
        MPOLinear(8, 8, out_dims=(2, 2, 2), in_dims=(2, 2, 2), bond_dim=(3,))
    with pytest.raises(ValueError, match=r"bond_dim\[1\] must be an int >= 1, got 0"):
        MPOLinear(8, 8, out_dims=(2, 2, 2), in_dims=(2, 2, 2), bond_dim=(3, 0))
    with pytest.raises(
        ValueError, match=r"bond_dim has 3 entries; expected one per internal bond \(2\)"
    ):
        full_bond_dims((2, 2, 2), (2, 2, 2), (3, 3, 3))


# ------------------------------------------------------------------ tnlm on a trained layer


def _trained_layer(dtype: torch.dtype) -> MPOLinear:
    """A layer fitted for a few Adam steps to a random linear map (weights off the init)."""
    g = torch.Generator().manual_seed(10)
    layer = _layer((2, 3, 4), (3, 2, 2), 4, dtype=dtype, seed=10)
    target = torch.randn(24, 12, generator=g, dtype=dtype)
    x = torch.randn(64, 12, generator=g, dtype=dtype)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss = (layer(x) - x @ target.T).square().mean()
        losses.append(float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]  # it did train
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
def test_tnlm_spectra_and_entropies_of_a_trained_layer_match_numpy_svd(tn, dtype):
    layer = _trained_layer(dtype)
    mpo = layer.to_mpo()
    w = layer.mpo_weight().detach().double().numpy()
    oracle = tn.unfolding_spectra(tn.interleave(w, layer.out_dims, layer.in_dims))
    eps = _eps(dtype)
    spectra = mpo.bond_singular_values()
    assert len(spectra) == len(oracle) == layer.num_cores - 1
    for k, (s, ref) in enumerate(zip(spectra, oracle)):
        s = s.detach().double().numpy()
        r = layer.bond_dims[k + 1]
        assert len(s) <= r
        # rank <= r: the oracle's tail beyond the bond is rounding only
        np.testing.assert_allclose(s, ref[: len(s)], rtol=0, atol=20 * eps * ref[0])
        assert np.all(ref[len(s) :] <= 20 * eps * ref[0])
    entropies = mpo.bond_entropies()
    for k, (h, ref) in enumerate(zip(entropies, oracle)):
        p = ref**2 / np.sum(ref**2)
        p = p[p > 0]
        h_ref = float(-(p * np.log(p)).sum())
        assert abs(h - h_ref) <= 50 * eps, f"bond {k}: {h} vs {h_ref}"
    assert max(entropies) > 0.1  # a non-trivial spectrum


@pytest.mark.parametrize("dtype", DTYPES)
def test_tnlm_compress_of_a_trained_layer_reports_its_dense_error(tn, dtype):
    layer = _trained_layer(dtype)
    w = layer.mpo_weight().detach()
    small = layer.to_mpo().compress(bond_dim=2)
    assert small.bond_dims == (2, 2)
    err = float(torch.linalg.norm((w - small.to_dense().detach()).double()))
    tol = 100 * _eps(dtype) * float(torch.linalg.norm(w.double()))
    assert abs(small.report.error - err) <= tol
    # Eckart-Young at every bond: no rank-2 cut does better than the discarded tail
    for ref in tn.unfolding_spectra(tn.interleave(w.double().numpy(), (2, 3, 4), (3, 2, 2))):
        assert err >= math.sqrt(float(np.sum(ref[2:] ** 2))) - tol
    # and the compressed MPO is a layer again
    smaller = MPOLinear.from_mpo(small, layer.bias)
    _assert_close_fro(smaller.rebuild_weight().detach(), small.to_dense().detach(), dtype, c=30)


def test_tnlm_save_load_canonicalize_of_a_trained_layer(tmp_path):
    layer = _trained_layer(torch.float64)
    path = tmp_path / "layer.npz"
    layer.to_mpo().save(path)
    loaded = tnlm.load(path)
    for a, b in zip(loaded.cores, layer.cores):
        assert torch.equal(a, b.detach())  # bit-exact
    back = MPOLinear.from_mpo(loaded, layer.bias)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    assert torch.equal(back(x), layer(x))
    canon = layer.to_mpo().canonicalize()
    _assert_close_fro(canon.to_dense().detach(), layer.mpo_weight().detach(), torch.float64, 100)
    moved = MPOLinear.from_mpo(canon, layer.bias)
    _assert_close_fro(moved(x).detach(), layer(x).detach(), torch.float64, 100)
