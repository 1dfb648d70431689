"""MPOLinear against nn.Linear with the rebuilt weight (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tnlm_models import MPOLinear
from tnlm_models.mpo_linear import full_bond_dims, rebuild_weights


def _layer(seed: int = 0, **kw) -> MPOLinear:
    torch.manual_seed(seed)
    kw.setdefault("out_dims", (2, 3, 4))
    kw.setdefault("in_dims", (3, 2, 4))
    kw.setdefault("dtype", torch.float64)
    layer = MPOLinear(24, 24, **kw)
    with torch.no_grad():
        layer.bias.normal_()
        if layer.adapter_size:
            layer.adapter_up.normal_()
    return layer


@pytest.mark.parametrize("mode", ["dense", "cores"])
@pytest.mark.parametrize("adapter_size", [0, 3])
@pytest.mark.parametrize("bond_dim", [None, 3])
def test_matches_linear_values_and_gradients(mode, adapter_size, bond_dim):
    layer = _layer(adapter_size=adapter_size, bond_dim=bond_dim, forward_mode=mode)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 7, 24, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(5, 7, 24, generator=g, dtype=torch.float64)
    # Reference: nn.Linear semantics with the rebuilt weight (autograd through the rebuild).
    w = layer.rebuild_weight()
    ref = F.linear(x, w, layer.bias)
    grads_ref = torch.autograd.grad((ref * up).sum(), [x, *layer.parameters()])
    y = layer(x)
    grads = torch.autograd.grad((y * up).sum(), [x, *layer.parameters()])
    if mode == "dense":
        assert torch.equal(y, ref)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_rebuilt_weight_matches_explicit_core_product():
    layer = _layer(bond_dim=None)
    cores = [c.detach() for c in layer.cores]
    w = torch.einsum("aAxb,bByc,cCzd->ABCxyz", *cores).reshape(24, 24)
    torch.testing.assert_close(layer.mpo_weight().detach(), w)


def test_nn_linear_module_equivalence_float32():
    torch.manual_seed(0)
    layer = MPOLinear(32, 48, num_cores=3)
    lin = torch.nn.Linear(32, 48)
    with torch.no_grad():
        lin.weight.copy_(layer.rebuild_weight())
        lin.bias.copy_(layer.bias)
    x = torch.randn(4, 32)
    layer.forward_mode = "dense"
    assert torch.equal(layer(x), lin(x))
    layer.forward_mode = "cores"
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-6)


def test_rebuild_flops_formula():
    torch.manual_seed(0)
    layer = MPOLinear(24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4))
    r = layer.bond_dims  # (1, 6, 16, 1)
    # left block is core 0 alone; right block core 2 alone; then (L @ C) and (. @ R)
    expected = 2 * 6 * (r[1] * 6 * r[2]) + 2 * (6 * 6) * r[2] * 16
    assert layer.rebuild_flops() == expected


def test_bond_dims_formula():
    out_dims, in_dims = (2, 3, 4), (3, 2, 4)
    sizes = [6, 6, 16]
    expected = (1, min(6, 96), min(36, 16), 1)
    assert full_bond_dims(out_dims, in_dims) == expected
    assert full_bond_dims(out_dims, in_dims, 5) == (1, 5, 5, 1)
    assert math.prod(sizes) == 24 * 24


def test_auto_mode_picks_cheaper_strategy():
    torch.manual_seed(0)
    layer = MPOLinear(256, 256, num_cores=4, bond_dim=2)
    for rows in (1, 4096):
        cost = layer.cost(rows)
        weighted = layer.cores_flop_weight * cost["cores"]
        dense = cost["dense"] + layer.dense_element_cost * 256 * 256
        expected = "cores" if weighted < dense else "dense"
        assert layer.choose_mode(rows) == expected
    # A rank-2 MPO applied to one vector costs far less than rebuilding W.
    assert layer.choose_mode(1) == "cores"
    full = MPOLinear(256, 256, num_cores=4)
    assert full.choose_mode(4096) == "dense"


@pytest.mark.parametrize("bond_dim", [None, 8])
def test_init_std_of_rebuilt_weight(bond_dim):
    torch.manual_seed(0)
    layer = MPOLinear(64, 128, num_cores=3, bond_dim=bond_dim, std=0.05)
    w = layer.rebuild_weight().detach()
    assert abs(w.pow(2).mean().sqrt().item() - 0.05) < 0.05 * 0.1


def test_from_dense_full_rank_exact():
    pytest.importorskip("tnlm").mpo_decompose  # noqa: B018
    g = torch.Generator().manual_seed(3)
    w = torch.randn(24, 12, generator=g, dtype=torch.float64)
    b = torch.randn(24, generator=g, dtype=torch.float64)
    layer = MPOLinear.from_dense(w, b, out_dims=(2, 3, 4), in_dims=(2, 3, 2))
    torch.testing.assert_close(layer.rebuild_weight().detach(), w)
    torch.testing.assert_close(layer.bias.detach(), b)


def test_shared_central_is_same_storage():
    torch.manual_seed(0)
    a = MPOLinear(16, 16, num_cores=3)
    b = MPOLinear(16, 16, num_cores=3, central=a.central)
    assert b.central is a.central
    assert b.central.data_ptr() == a.central.data_ptr()
    x = torch.randn(2, 16)
    (a(x).sum() + b(x).sum()).backward()
    assert a.central.grad is not None


def test_bad_input():
    with pytest.raises(ValueError, match=r"multiplies to .*expected"):
        MPOLinear(24, 24, out_dims=(2, 3, 5), in_dims=(3, 2, 4))
    with pytest.raises(ValueError, match="same number of factors"):
        MPOLinear(24, 24, out_dims=(4, 6), in_dims=(3, 2, 4))
    with pytest.raises(ValueError, match="unknown forward_mode 'fast'.*auto, dense, cores"):
        MPOLinear(24, 24, num_cores=2, forward_mode="fast")
    with pytest.raises(ValueError, match="bond_dim must be"):
        MPOLinear(24, 24, num_cores=2, bond_dim=0)
    layer = MPOLinear(24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4))
    with pytest.raises(ValueError, match="shared central tensor has shape"):
        MPOLinear(24, 24, out_dims=(4, 3, 2), in_dims=(3, 2, 4), central=layer.central)
    with pytest.raises(ValueError, match="in_features=24"):
        layer(torch.randn(3, 23))
    with pytest.raises(ValueError, match=r"core 0 has shape \(1, 1, 1, 1\)"):
        layer.set_cores([torch.zeros(1, 1, 1, 1)] * 3)
    with pytest.raises(ValueError, match="expected 3 cores"):
        layer.set_cores([torch.zeros(1, 1, 1, 1)])


def test_batched_rebuild_equals_per_layer():
    torch.manual_seed(0)
    shared = MPOLinear(24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4), adapter_size=2)
    layers = [
        MPOLinear(24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4), adapter_size=2, central=c)
        for c in (shared.central, shared.central, None)
    ]
    with torch.no_grad():
        for layer in layers:
            layer.adapter_up.normal_()
    w = rebuild_weights(layers)
    assert w.shape == (3, 24, 24)
    for k, layer in enumerate(layers):
        torch.testing.assert_close(w[k], layer.rebuild_weight())
    g = torch.randn(3, 24, 24)
    (w * g).sum().backward()
    ref = torch.autograd.grad(
        sum((layer.rebuild_weight() * g[k]).sum() for k, layer in enumerate(layers)),
        shared.central,
    )[0]
    torch.testing.assert_close(shared.central.grad, ref)
    with pytest.raises(ValueError, match="one structure"):
        rebuild_weights([layers[0], MPOLinear(24, 24, out_dims=(4, 3, 2), in_dims=(3, 2, 4))])


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_rebuild_any_number_of_cores(n):
    torch.manual_seed(n)
    dims = (2,) * n
    layer = MPOLinear(2**n, 2**n, out_dims=dims, in_dims=dims, dtype=torch.float64)
    letters = "abcdefgh"
    terms = [f"{letters[k]}{'OPQRST'[k]}{'ijklmn'[k]}{letters[k + 1]}" for k in range(n)]
    eq = ",".join(terms) + "->" + "OPQRST"[:n] + "ijklmn"[:n]
    dense = torch.einsum(eq, *[c.detach() for c in layer.cores]).reshape(2**n, 2**n)
    torch.testing.assert_close(layer.mpo_weight().detach(), dense)


@pytest.mark.parametrize("mode", ["dense", "cores", "auto"])
@pytest.mark.parametrize("adapter_size", [0, 3])
def test_bf16_autocast_on_both_paths(mode, adapter_size):
    """Under CPU autocast both paths compute in bfloat16, give a bfloat16 output (as
    nn.Linear does) and agree with the float32 layer to bfloat16's precision, with grads."""
    layer = _layer(forward_mode=mode, adapter_size=adapter_size, dtype=torch.float32)
    x = torch.randn(4, 5, 24, generator=torch.Generator().manual_seed(1))
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    tol = 8 * torch.finfo(torch.bfloat16).eps * math.sqrt(layer.num_cores + 1)
    assert float((y.float() - ref).detach().norm() / ref.detach().norm()) < tol
    y.float().square().sum().backward()
    grads = [p.grad for p in layer.parameters() if p.requires_grad]
    assert all(
        g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads
    )


def test_bf16_training_on_the_cores_path():
    """precision="bf16" with the cores path forced (the trainer's own autocast)."""
    from tnlm_models import MPOBertForMaskedLM
    from tnlm_models.testing import tiny_config

    model = MPOBertForMaskedLM(tiny_config(forward_mode="cores"))
    ids = torch.randint(5, 50, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_shared_central_dtype_and_device():
    """A layer takes its dtype and device from a shared central tensor, and refuses others."""
    shape = _layer(dtype=torch.float32).central.shape
    central = torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))
    layer = MPOLinear(24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4), central=central)
    assert layer.central is central
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    with pytest.raises(ValueError, match=r"central tensor has dtype torch.float64, but the layer"):
        MPOLinear(
            24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4), central=central, dtype=torch.float32
        )
    with pytest.raises(ValueError, match=r"central tensor is on cpu, but the layer was asked"):
        MPOLinear(24, 24, out_dims=(2, 3, 4), in_dims=(3, 2, 4), central=central, device="meta")
