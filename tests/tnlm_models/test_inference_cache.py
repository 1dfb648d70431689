"""Inference reuses the rebuilt MPO weights while the parameters stay the same version, and
never answers with stale weights: every way a parameter can change drops the cache."""

from __future__ import annotations

import pytest
import torch

from tnlm_models import MPOBertForMaskedLM
from tnlm_models.testing import random_batch, tiny_config

V = 97


@pytest.fixture
def model() -> MPOBertForMaskedLM:
    torch.manual_seed(0)
    return MPOBertForMaskedLM(tiny_config(vocab_size=V)).double().eval()


def logits(model: MPOBertForMaskedLM, *, cached: bool) -> torch.Tensor:
    ids, mask, types = random_batch(V, 2, 7, 0)
    if cached:
        with torch.no_grad():
            return model(ids, mask, types).logits
    with torch.enable_grad():  # the uncached oracle: recomputed from the cores
        return model(ids, mask, types).logits.detach()


def assert_fresh(model: MPOBertForMaskedLM) -> None:
    torch.testing.assert_close(
        logits(model, cached=True), logits(model, cached=False), rtol=1e-10, atol=1e-10
    )


def test_weights_are_rebuilt_once_per_parameter_version(model, rebuilds):
    first = logits(model, cached=True)
    n = len(rebuilds)
    assert n == 6  # one batched rebuild per matrix type
    torch.testing.assert_close(logits(model, cached=True), first, rtol=0, atol=0)
    assert len(rebuilds) == n  # the second pass reused them
    assert_fresh(model)


def test_training_mode_and_grad_never_use_the_cache(model):
    cache = model.bert.encoder._weight_cache
    logits(model, cached=True)
    assert len(cache) == 6
    logits(model, cached=False)  # eval, but recording gradients: no cache
    assert not cache
    logits(model, cached=True)
    model.train()  # train() drops it, and a no_grad forward in training mode keeps none
    assert not cache
    with torch.no_grad():
        ids, mask, types = random_batch(V, 2, 7, 0)
        model(ids, mask, types)
    assert not cache


def test_an_optimizer_step_drops_the_cache(model):
    logits(model, cached=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    ids, mask, types = random_batch(V, 2, 7, 1)
    model(ids, mask, types, labels=ids).loss.backward()
    opt.step()
    model.eval()
    assert_fresh(model)
    # also without the train()/eval() round trip (the step alone changes the versions)
    logits(model, cached=True)
    with torch.enable_grad():
        model.zero_grad()
        model(ids, mask, types, labels=ids).loss.backward()
    opt.step()
    assert_fresh(model)


def test_load_state_dict_drops_the_cache(model):
    before = logits(model, cached=True)
    torch.manual_seed(1)
    other = MPOBertForMaskedLM(tiny_config(vocab_size=V)).double()
    model.load_state_dict(other.state_dict())
    assert_fresh(model)
    assert not torch.allclose(logits(model, cached=True), before)


@pytest.mark.parametrize("which", ["central", "auxiliary", "adapter"])
def test_in_place_edits_drop_the_cache(model, which):
    before = logits(model, cached=True)
    lin = model.bert.encoder.layer[1].linear("query")
    p = {"central": lin.central, "auxiliary": lin.core0, "adapter": lin.adapter_up}[which]
    with torch.no_grad():
        p.add_(0.5)
    assert_fresh(model)
    assert not torch.allclose(logits(model, cached=True), before)


def test_a_new_tensor_and_a_dtype_move_drop_the_cache(model):
    logits(model, cached=True)
    lin = model.bert.encoder.layer[0].linear("value")
    lin.core0 = torch.nn.Parameter(lin.core0.detach() * 3)
    assert_fresh(model)
    model.float()
    ids, mask, types = random_batch(V, 2, 7, 0)
    with torch.no_grad():
        cached = model(ids, mask, types).logits
    assert cached.dtype == torch.float32
    with torch.enable_grad():
        fresh = model(ids, mask, types).logits.detach()
    torch.testing.assert_close(cached, fresh, rtol=1e-4, atol=1e-5)


def test_edits_through_data_need_clear_weight_cache(model):
    """``param.data`` does not share the version counter (a PyTorch rule): documented, and
    clear_weight_cache() is the way out."""
    logits(model, cached=True)
    model.bert.encoder.layer[0].linear("key").core0.data.mul_(2)
    model.bert.encoder.clear_weight_cache()
    assert_fresh(model)
