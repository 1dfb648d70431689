"""MPOLinear's forward strategy comes from tnlm's planner: the same answer as
``tnlm.planning.plan_apply``, a changed cost model takes effect, every mode equals the dense
product, and the deprecated ``weight`` alias."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tnlm.planning import CostModel, plan_apply
from tnlm_models import MPOLinear


def _layer(adapter_size: int = 0, bond_dim: int | None = 2, **kw) -> MPOLinear:
    torch.manual_seed(0)
    layer = MPOLinear(
        64,
        48,
        out_dims=(3, 4, 4),
        in_dims=(4, 4, 4),
        bond_dim=bond_dim,
        adapter_size=adapter_size,
        dtype=torch.float64,
        **kw,
    )
    with torch.no_grad():
        layer.bias.normal_()
        if layer.adapter_size:
            layer.adapter_up.normal_()
    return layer


@pytest.mark.parametrize("adapter_size", [0, 3])
def test_choice_and_costs_are_the_planners(adapter_size):
    layer = _layer(adapter_size)
    shapes = [layer.core_shape(k) for k in range(layer.num_cores)]
    for rows in (1, 7, 300, 5000):
        plan = plan_apply(
            shapes,
            rows,
            adapter_rank=adapter_size,
            rebuild_flops=layer.rebuild_flops(),
            batch_first=True,
        )
        assert layer.choose_mode(rows) == plan.method
        assert layer.cost(rows) == {"dense": plan.dense_flops, "cores": plan.cores_flops}
    # both answers occur at bond 2: one row streams through the cores, many rows rebuild W
    assert (layer.choose_mode(1), layer.choose_mode(5000)) == ("cores", "dense")
    assert (layer.cores_flop_weight, layer.dense_element_cost) == (3.0, 600.0)


def test_a_new_cost_model_takes_effect_after_the_first_choice():
    layer = _layer()
    assert layer.choose_mode(1) == "cores"
    layer.cost_model = CostModel(cores_flop_weight=1e9, dense_element_cost=0.0)
    assert layer.choose_mode(1) == "dense"
    assert layer.cores_flop_weight == 1e9
    other = _layer()  # the class default is untouched
    assert other.choose_mode(1) == "cores"
    layer.cost_model = None
    assert layer.choose_mode(1) == "cores"


def test_a_wrong_cost_model_is_refused():
    layer = _layer()
    layer.cost_model = {"cores_flop_weight": 2.0}  # type: ignore[assignment]
    with pytest.raises(TypeError, match="cost_model must be a tnlm.planning.CostModel"):
        layer(torch.zeros(1, 64, dtype=torch.float64))


def test_negative_rows_are_refused():
    with pytest.raises(ValueError, match="rows must be an int >= 0; got -1"):
        _layer().choose_mode(-1)


@pytest.mark.parametrize("adapter_size", [0, 3])
@pytest.mark.parametrize("rows", [1, 6, 600])
def test_every_mode_equals_the_dense_product(adapter_size, rows):
    """ "auto" (whichever path it picks), "dense" and "cores" give ``x @ W.T + b`` with W
    rebuilt explicitly from the cores (an einsum oracle independent of the layer's rebuild)
    plus the adapter."""
    layer = _layer(adapter_size)
    c = [t.detach() for t in layer.cores]
    w = torch.einsum("aAxb,bByc,cCzd->ABCxyz", *c).reshape(48, 64)
    if adapter_size:
        w = w + layer.adapter_up.detach() @ layer.adapter_down.detach()
    x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = x @ w.T + layer.bias.detach()
    eps = torch.finfo(torch.float64).eps
    bound = 50 * eps * math.sqrt(64) * float(x.abs().max() * w.abs().max() * 64 + 1)
    picked = layer.choose_mode(rows)
    for mode in ("auto", "dense", "cores"):
        layer.forward_mode = mode
        y = layer(x.reshape(1, rows, 64)).detach().reshape(rows, 48)
        assert float((y - ref).abs().max()) <= bound, (mode, picked)


def test_empty_input():
    layer = _layer()
    for mode in ("auto", "dense", "cores"):
        layer.forward_mode = mode
        assert layer(torch.zeros(0, 64, dtype=torch.float64)).shape == (0, 48)


def test_weight_is_a_deprecated_alias_of_rebuild_weight():
    layer = _layer(adapter_size=3)
    with pytest.warns(DeprecationWarning, match=r"MPOLinear.weight rebuilds .* rebuild_weight\(\)"):
        w = layer.weight
    assert torch.equal(w, layer.rebuild_weight())
    ref = F.linear(torch.ones(2, 64, dtype=torch.float64), w, layer.bias)
    layer.forward_mode = "dense"
    assert torch.equal(layer(torch.ones(2, 64, dtype=torch.float64)), ref)
