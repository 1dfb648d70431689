"""``MPOBertEncoder.step_weights``: one rebuild per optimizer step under gradient
accumulation, with the cores' gradients of the micro-batches taken one by one (the oracle)."""

from __future__ import annotations

import pytest
import torch

from tnlm_models import MPOBertForMaskedLM
from tnlm_models.testing import random_batch, tiny_config

V = 97


def make(sharing: str = "central", forward_mode: str = "dense") -> MPOBertForMaskedLM:
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=V, sharing=sharing, forward_mode=forward_mode)
    return MPOBertForMaskedLM(cfg).double().train()


def micro_batches(k: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for m in range(k):
        ids, mask, types = random_batch(V, 2, 9, seed=m)
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
        out.append(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "labels": labels}
        )
    return out


def grads(model: MPOBertForMaskedLM) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def accumulate(model: MPOBertForMaskedLM, batches, *, once: bool) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    enc = model.bert.encoder
    ctx = enc.step_weights() if once else torch.enable_grad()
    with ctx:
        for m, batch in enumerate(batches):
            (model(**batch).loss * (m + 1)).backward()  # unequal weights, as the trainer's
    return grads(model)


@pytest.mark.parametrize("sharing", ["central", "none", "all"])
def test_gradients_equal_the_micro_batches_one_by_one(sharing, rebuilds):
    model = make(sharing)
    batches = micro_batches(4)
    oracle = accumulate(model, batches, once=False)
    per_pass = len(rebuilds)
    assert per_pass == 4 * 6  # every micro-batch rebuilt all six matrices
    rebuilds.clear()
    got = accumulate(model, batches, once=True)
    assert len(rebuilds) == 6  # once per matrix type for the whole step
    assert got.keys() == oracle.keys()
    cores = [n for n in oracle if ".core" in n or "central" in n]
    assert cores, "the model has MPO cores"
    for name in oracle:
        torch.testing.assert_close(got[name], oracle[name], rtol=1e-10, atol=1e-12, msg=name)


def test_the_cores_path_is_left_alone(rebuilds):
    """Matrices that contract the input with the cores are not rebuilt; gradients agree."""
    model = make(forward_mode="cores")
    batches = micro_batches(3)
    oracle = accumulate(model, batches, once=False)
    got = accumulate(model, batches, once=True)
    assert rebuilds == []
    for name in oracle:
        torch.testing.assert_close(got[name], oracle[name], rtol=1e-10, atol=1e-12, msg=name)


def test_the_cores_get_their_gradient_only_on_leaving():
    model = make()
    central = model.bert.encoder.central["query"]
    with model.bert.encoder.step_weights():
        model(**micro_batches(1)[0]).loss.backward()
        assert central.grad is None  # the pass stopped at the rebuilt weight
        assert model.head.bias.grad is not None  # other parameters as usual
    assert central.grad is not None and torch.count_nonzero(central.grad) > 0


def test_a_parameter_changed_inside_is_refused():
    model = make()
    batches = micro_batches(2)
    enc = model.bert.encoder
    with pytest.raises(RuntimeError, match=r"parameters changed inside step_weights\(\)"):
        with enc.step_weights():
            model(**batches[0]).loss.backward()
            with torch.no_grad():
                enc.layer[1].query.core0.add_(1.0)
            model(**batches[1])
    assert enc._step is None  # left cleanly: the next step works
    assert enc.central["query"].grad is None  # nothing back-propagated on error
    model.zero_grad(set_to_none=True)
    with enc.step_weights():
        model(**batches[0]).loss.backward()
    assert enc.central["query"].grad is not None


def test_blocks_do_not_nest():
    enc = make().bert.encoder
    with enc.step_weights():
        with pytest.raises(RuntimeError, match="already active"):
            with enc.step_weights():
                pass


def test_evaluation_inside_uses_fresh_weights():
    """A no-grad pass inside (e.g. an evaluation) takes the ordinary path."""
    model = make()
    batch = micro_batches(1)[0]
    with torch.no_grad():
        expected = model(**batch).logits
    with model.bert.encoder.step_weights():
        with torch.no_grad():
            got = model(**batch).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
