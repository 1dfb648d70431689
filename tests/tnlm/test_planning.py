"""The apply planner (``tnlm.planning``): FLOP counts against hand-computed ones, the chosen
contraction against the dense product, the cache key, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tnlm
from tnlm import planning
from tnlm.planning import CostModel, apply_equation, plan_apply

# W (10 x 18) as two cores, bond 4: core 0 (1, 2, 3, 4), core 1 (4, 5, 6, 1)
SMALL = [(1, 2, 3, 4), (4, 5, 6, 1)]


def test_flops_equal_hand_computed_counts():
    """opt_einsum counts a contraction that sums an index as 2 * (product of all its index
    sizes). Rebuild: 2*(2*3*4*5*6) = 1440; GEMM: 2*I*J*B = 2*10*18*B. Through the cores with
    one vector the cheapest order is core 0 with x (sums j_1: 2*2*3*4*6 = 288), then core 1
    (sums r_1, j_2: 2*2*4*6*5 = 480): 768."""
    plan = plan_apply(SMALL, 1)
    assert (plan.cores_flops, plan.dense_flops) == (288 + 480, 1440 + 2 * 10 * 18)
    assert plan.cores_cost == 3.0 * 768
    assert plan.dense_cost == 1800 + 600.0 * 10 * 18
    assert plan.method == "cores"
    assert plan.cost_model == CostModel()
    # an adapter of rank 2: the dense path adds up @ down to W (2 r I J), the cores path
    # applies it to the vector (2 B r (I + J)); a caller's rebuild count replaces opt_einsum's
    with_adapter = plan_apply(SMALL, 1, adapter_rank=2, rebuild_flops=100)
    assert with_adapter.cores_flops == 768 + 2 * 1 * 2 * (10 + 18)
    assert with_adapter.dense_flops == 100 + 2 * 2 * 10 * 18 + 2 * 10 * 18
    # with 7 vectors, rebuilding first is the cheapest order of the cores path too:
    # 1440 + 2*2*5*3*6*7 = 3960 (core 0 with x first: 2016 + 3360 = 5376)
    assert plan_apply(SMALL, 7).cores_flops == 3960
    assert plan_apply(SMALL, 7).dense_flops == 1440 + 2 * 10 * 18 * 7


def test_flops_do_not_depend_on_the_batch_layout():
    for batch in (1, 5, 64):
        a, b = plan_apply(SMALL, batch), plan_apply(SMALL, batch, batch_first=True)
        assert (a.cores_flops, a.dense_flops, a.method) == (b.cores_flops, b.dense_flops, b.method)
        assert a.equation != b.equation


def test_decision_rule():
    """ "cores" exactly when cores_flop_weight * cores_flops < dense_flops + e * I * J."""
    for batch in (1, 3, 40, 500):
        for model in (CostModel(), CostModel(1.0, 0.0), CostModel(50.0, 0.0), CostModel(2.0, 1.0)):
            plan = plan_apply(SMALL, batch, cost_model=model)
            weighted = model.cores_flop_weight * plan.cores_flops
            charged = plan.dense_flops + model.dense_element_cost * 180
            assert plan.method == ("cores" if weighted < charged else "dense")


def test_cache_key_includes_the_cost_model(monkeypatch):
    """A different calibration gives a different answer for the same structure and batch,
    also after the first answer was cached, and also through the default."""
    assert plan_apply(SMALL, 1).method == "cores"
    heavy = CostModel(cores_flop_weight=1000.0, dense_element_cost=0.0)
    assert plan_apply(SMALL, 1, cost_model=heavy).method == "dense"
    assert plan_apply(SMALL, 1).method == "cores"
    monkeypatch.setattr(planning, "DEFAULT_COST_MODEL", heavy)
    assert plan_apply(SMALL, 1).method == "dense"
    assert plan_apply(SMALL, 1).cost_model == heavy


def _random_cores(rng, shapes, dtype):
    out = []
    for s in shapes:
        c = rng.standard_normal(s)
        if np.dtype(dtype).kind == "c":
            c = c + 1j * rng.standard_normal(s)
        out.append(c.astype(dtype))
    return out


def _dense(cores):
    """Oracle: W from the cores by explicit matrix products over the bond (numpy)."""
    rows = math.prod(c.shape[1] for c in cores)
    cols = math.prod(c.shape[2] for c in cores)
    w = cores[0][0]  # (i, j, r)
    for c in cores[1:]:
        i, j, _ = w.shape
        w = np.einsum("ijr,rkls->ikjls", w, c).reshape(i * c.shape[1], j * c.shape[2], -1)
    return w.reshape(rows, cols)


# (core shapes, batch, the method the default cost model must pick for them)
CASES = [
    ([(1, 4, 4, 2), (2, 4, 4, 2), (2, 4, 4, 1)], 1, "cores"),  # thin bonds, one vector
    ([(1, 4, 4, 16), (16, 4, 4, 1)], 256, "dense"),  # full rank, many vectors
]


@pytest.mark.parametrize("shapes,batch,method", CASES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
def test_chosen_contraction_equals_the_dense_product(backend, tn, shapes, batch, method, dtype):
    """Both choices occur, and the plan's equation and path (either batch layout) and
    ``MPO.apply`` give ``W @ x``."""
    plan = plan_apply(shapes, batch)
    assert plan.method == method
    rng = np.random.default_rng(3)
    cores = _random_cores(rng, shapes, dtype)
    w = _dense(cores)
    x = rng.standard_normal((w.shape[1], batch)).astype(dtype)
    ref = w @ x
    scale = np.linalg.norm(w) * np.linalg.norm(x)
    bound = tn.atol(dtype, ref.size, scale, c=20)
    bcores = [backend.asarray(c, dtype) for c in cores]
    cols = tuple(s[2] for s in shapes)
    xs = backend.asarray(x.reshape(*cols, batch), dtype)
    y = tnlm.contract(plan.equation, *bcores, xs, optimize=list(plan.path))
    assert np.abs(backend.to_numpy(y).reshape(ref.shape) - ref).max() <= bound
    rows_first = plan_apply(shapes, batch, batch_first=True)
    xt = backend.asarray(np.ascontiguousarray(x.T).reshape(batch, *cols), dtype)
    yt = tnlm.contract(rows_first.equation, *bcores, xt, optimize=list(rows_first.path))
    assert np.abs(backend.to_numpy(yt).reshape(batch, -1).T - ref).max() <= bound
    mpo = tnlm.MPO(bcores)
    for how in ("auto", "cores", "dense"):
        out = mpo.apply(backend.asarray(x, dtype), method=how)
        backend.check(out, dtype)
        assert np.abs(backend.to_numpy(out) - ref).max() <= bound
    v = mpo.apply(backend.asarray(x[:, 0], dtype))
    assert np.abs(backend.to_numpy(v) - ref[:, 0]).max() <= bound


def test_mpo_apply_follows_the_plan(monkeypatch):
    """ "auto" in ``MPO.apply`` rebuilds W exactly when the planner says "dense" (also after a
    change of the default calibration)."""
    rng = np.random.default_rng(0)
    mpo = tnlm.MPO(_random_cores(rng, SMALL, "float64"))
    x = rng.standard_normal((18, 1))
    rebuilt = []
    to_dense = tnlm.MPO.to_dense
    monkeypatch.setattr(tnlm.MPO, "to_dense", lambda self: rebuilt.append(1) or to_dense(self))
    mpo.apply(x)
    assert rebuilt == []
    monkeypatch.setattr(planning, "DEFAULT_COST_MODEL", CostModel(1000.0, 0.0))
    y = mpo.apply(x)
    assert rebuilt == [1]
    np.testing.assert_allclose(y, _dense(mpo.cores) @ x, rtol=1e-12)
    assert mpo.apply_cost(1) == {"cores": 768, "dense": 1800}


def test_apply_equation_has_distinct_symbols_for_many_cores():
    eq = apply_equation(30)
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    assert len(terms) == 31 and len(out) == 31
    assert len(set(out)) == 31 and set(out) <= set("".join(terms))
    assert apply_equation(1) == "acdb,de->ce"


@pytest.mark.parametrize(
    "kwargs,exc,message",
    [
        ({"core_shapes": []}, ValueError, "core_shapes is empty"),
        ({"core_shapes": 3}, TypeError, r"core_shapes must be a sequence of \(r_left"),
        ({"core_shapes": [(1, 2, 3)]}, ValueError, r"core_shapes\[0\] is \(1, 2, 3\); expected"),
        ({"core_shapes": [(1, 2, 0, 1)]}, ValueError, r"four ints >= 1"),
        ({"core_shapes": [(1, 2, 2.0, 1)]}, ValueError, r"four ints >= 1"),
        ({"core_shapes": [(2, 2, 2, 1)]}, ValueError, "boundary ranks must be 1; got r_0 = 2"),
        (
            {"core_shapes": [(1, 2, 2, 3), (2, 2, 2, 1)]},
            ValueError,
            r"core_shapes\[0\] has r_right = 3 but core_shapes\[1\] has r_left = 2",
        ),
        ({"batch": 0}, ValueError, "batch must be an int >= 1; got 0"),
        ({"batch": 2.0}, TypeError, "batch must be an int"),
        ({"adapter_rank": -1}, ValueError, "adapter_rank must be an int >= 0"),
        ({"rebuild_flops": -5}, ValueError, "rebuild_flops must be an int >= 0"),
        ({"batch_first": 1}, TypeError, "batch_first must be a bool; got int"),
        ({"cost_model": (3.0, 600.0)}, TypeError, "cost_model must be a tnlm.planning.CostModel"),
    ],
)
def test_bad_planner_input(kwargs, exc, message):
    args = {"core_shapes": SMALL, "batch": 1, **kwargs}
    with pytest.raises(exc, match=message):
        plan_apply(args.pop("core_shapes"), args.pop("batch"), **args)


@pytest.mark.parametrize(
    "args,exc,message",
    [
        ((0.0, 1.0), ValueError, "cores_flop_weight must be a finite number > 0; got 0.0"),
        ((float("nan"), 1.0), ValueError, "cores_flop_weight must be a finite number > 0"),
        ((1.0, -1.0), ValueError, "dense_element_cost must be a finite number >= 0; got -1.0"),
        ((1.0, float("inf")), ValueError, "dense_element_cost must be a finite number >= 0"),
        ((True, 1.0), TypeError, "cores_flop_weight must be a finite number > 0; got bool"),
        ((1.0, "600"), TypeError, "dense_element_cost must be a finite number >= 0; got str"),
    ],
)
def test_bad_cost_model(args, exc, message):
    with pytest.raises(exc, match=message):
        CostModel(*args)


def test_cost_model_is_normalised_and_hashable():
    model = CostModel(np.float32(2), 0)
    assert type(model.cores_flop_weight) is float and model.dense_element_cost == 0.0
    assert hash(model) == hash(CostModel(2.0, 0.0)) and model == CostModel(2.0, 0.0)
