"""tnlm.contract against numpy.einsum, its plan cache, contract_cost against opt_einsum; and
tnlm.factorize."""

from __future__ import annotations

import importlib
import math

import numpy as np
import opt_einsum as oe
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tnlm

# ``tnlm.contract`` is the function; the module holds the cache
contract_module = importlib.import_module("tnlm.contract")

OPTIMIZERS = ["auto", "greedy", "optimal", "dp", "branch-2"]


@st.composite
def equations(draw):
    """A random einsum equation over up to 6 indices of size 1..4 and 1..4 operands: any
    index may be shared, summed, or kept in the output (outer products included)."""
    letters = "abcdef"[: draw(st.integers(1, 6), label="indices")]
    sizes = {c: draw(st.integers(1, 4)) for c in letters}
    n = draw(st.integers(1, 4), label="operands")
    terms = [
        "".join(draw(st.lists(st.sampled_from(letters), min_size=0, max_size=4, unique=True)))
        for _ in range(n)
    ]
    used = sorted(set("".join(terms)))
    out = "".join(draw(st.permutations(used))[: draw(st.integers(0, len(used)))])
    return f"{','.join(terms)}->{out}", [tuple(sizes[c] for c in t) for t in terms]


@given(data=st.data())
def test_contract_matches_numpy_einsum(backend, dtype, tn, data):
    eq, shapes = data.draw(equations(), label="equation")
    optimize = data.draw(st.sampled_from(OPTIMIZERS), label="optimize")
    rng = np.random.default_rng(data.draw(tn.seeds, label="seed"))
    ops = [
        backend.asarray(rng.standard_normal(s) + 1j * rng.standard_normal(s), dtype) for s in shapes
    ]
    ops_np = [backend.to_numpy(o) for o in ops]
    out = tnlm.contract(eq, *ops, optimize=optimize)
    backend.check(out, dtype)
    ref = np.einsum(eq, *ops_np)
    assert tuple(out.shape) == ref.shape
    scale = math.prod(np.linalg.norm(o) for o in ops_np)
    size = max(ref.size, 1) * max((max(s) if s else 1) for s in shapes) ** 2
    np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=0, atol=tn.atol(dtype, size, scale))


def test_contract_explicit_path_and_spaces(backend):
    rng = np.random.default_rng(0)
    a, b, c = (backend.asarray(rng.standard_normal(s), "float64") for s in [(2, 3), (3, 4), (4, 5)])
    ref = np.einsum("ij,jk,kl->il", *(backend.to_numpy(x) for x in (a, b, c)))
    for path in ([(1, 2), (0, 1)], [(0, 1), (0, 1)]):
        out = tnlm.contract("ij,jk,kl->il", a, b, c, optimize=path)
        backend.check(out, "float64")
        np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=1e-12)
    out = tnlm.contract("ij, jk, kl -> il", a, b, c)
    np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=1e-12)


def test_plan_is_computed_once_and_reused():
    tnlm.clear_plan_cache()
    assert len(contract_module._cache) == 0
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5))
    tnlm.contract("ij,jk->ik", a, b)
    assert len(contract_module._cache) == 1
    (expr,) = contract_module._cache.values()
    # same equation and shapes (even with other values, or spaces): the same plan object
    tnlm.contract("ij,jk->ik", 2 * a, b)
    tnlm.contract("ij, jk -> ik", a, b)
    assert len(contract_module._cache) == 1
    assert next(iter(contract_module._cache.values())) is expr
    shapes = ((3, 4), (4, 5))
    assert contract_module._expression("ij,jk->ik", shapes, "auto") is expr
    # other shapes, or another optimizer: a new plan
    tnlm.contract("ij,jk->ik", a[:2], b)
    tnlm.contract("ij,jk->ik", a, b, optimize="greedy")
    assert len(contract_module._cache) == 3
    tnlm.clear_plan_cache()
    assert len(contract_module._cache) == 0


def test_plan_cache_is_bounded(monkeypatch):
    tnlm.clear_plan_cache()
    monkeypatch.setattr(contract_module, "_CACHE_SIZE", 3)
    for k in range(1, 6):
        tnlm.contract("ij->", np.ones((k, 2)))
    assert len(contract_module._cache) == 3
    # least recently used went first
    assert [key[1][0][0] for key in contract_module._cache] == [3, 4, 5]
    tnlm.clear_plan_cache()


@given(data=st.data())
def test_contract_cost_matches_opt_einsum(data):
    eq, shapes = data.draw(equations(), label="equation")
    optimize = data.draw(st.sampled_from(OPTIMIZERS), label="optimize")
    cost = tnlm.contract_cost(eq, *shapes, optimize=optimize)
    path, info = oe.contract_path(eq, *shapes, optimize=optimize, shapes=True)
    assert cost.flops == int(info.opt_cost)
    assert cost.largest_intermediate == int(info.largest_intermediate)
    assert cost.path == tuple(tuple(p) for p in path)
    assert isinstance(cost, tnlm.ContractionCost)


@given(a=st.integers(1, 30), b=st.integers(1, 30), c=st.integers(1, 30))
def test_contract_cost_of_a_matrix_product(a, b, c):
    """A product of (a, b) and (b, c): 2 a b c FLOPs when b is summed, output a c entries."""
    cost = tnlm.contract_cost("ij,jk->ik", (a, b), (b, c))
    assert cost.flops == 2 * a * b * c
    assert cost.largest_intermediate == a * c


def test_path_optimizers_are_listed():
    assert {"auto", "greedy", "optimal", "dp"} <= set(tnlm.PATH_OPTIMIZERS)


# --------------------------------------------------------------------------------------------
# factorize
# --------------------------------------------------------------------------------------------


def _largest_prime_factor(d):
    p, out = 2, 1
    while p * p <= d:
        while d % p == 0:
            out, d = p, d // p
        p += 1
    return max(out, d) if d > 1 else out


@given(dim=st.integers(1, 10**6), n=st.integers(1, 6))
def test_factorize_properties(dim, n):
    f = tnlm.factorize(dim, n)
    assert isinstance(f, tuple) and len(f) == n
    assert all(isinstance(x, int) and x >= 1 for x in f)
    assert math.prod(f) == dim
    # balanced: no factor exceeds the smallest one by more than one prime factor of dim
    assert max(f) <= min(f) * _largest_prime_factor(dim)
    # the largest factor sits at the central index n // 2
    assert f[n // 2] == max(f)


@given(p=st.sampled_from([2, 3, 5, 7]), a=st.integers(0, 20), n=st.integers(1, 6))
def test_factorize_prime_powers_split_evenly(p, a, n):
    exps = sorted(round(math.log(x, p)) for x in tnlm.factorize(p**a, n))
    assert exps == sorted([a // n + (1 if k < a % n else 0) for k in range(n)])


@pytest.mark.parametrize(
    ("dim", "n", "message"),
    [
        (0, 3, "dim must be a positive int; got 0"),
        (2.5, 3, "dim must be a positive int; got 2.5"),
        (True, 3, "dim must be a positive int; got True"),
        (12, 0, r"n \(number of factors\) must be a positive int; got 0"),
        (12, "2", r"n \(number of factors\) must be a positive int; got '2'"),
    ],
)
def test_factorize_rejects_bad_input(dim, n, message):
    with pytest.raises(ValueError, match=message):
        tnlm.factorize(dim, n)
