"""A forward pass without host syncs: ``trusted_inputs()`` skips the value checks (which read
tensors back to the host), ``validate_batch`` makes them once where the batch lives, and the
trainer does both; inside, the masked-LM step traces as one graph (``fullgraph=True``)."""

from __future__ import annotations

import pytest
import torch

from tnlm_models import MPOBertForMaskedLM, MPOBertForSequenceClassification
from tnlm_models.testing import random_batch, tiny_config
from tnlm_models.train.models import device_batch

V = 97


def mlm() -> MPOBertForMaskedLM:
    torch.manual_seed(0)
    return MPOBertForMaskedLM(tiny_config(vocab_size=V)).train()


def batch(seed: int = 0, *, padded: bool = True) -> dict[str, torch.Tensor]:
    ids, mask, types = random_batch(V, 2, 9, seed)
    if not padded:
        mask = torch.ones_like(mask)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "labels": ids.clone(),
    }


@pytest.mark.parametrize("forward_mode", ["auto", "dense", "cores"])
def test_the_trusted_step_compiles_as_one_graph(forward_mode):
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny_config(vocab_size=V, forward_mode=forward_mode)).train()
    b = batch()

    def loss(ids, mask, types, labels):
        return model(ids, mask, types, labels=labels).loss

    expected = loss(*b.values())
    with model.trusted_inputs():
        got = torch.compile(loss, fullgraph=True, backend="eager")(*b.values())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


def test_outside_the_value_checks_are_graph_breaks():
    """The oracle for the test above: the checks it skips really read values back."""
    torch._dynamo.reset()
    model = mlm()

    def loss(ids, mask, types, labels):
        return model(ids, mask, types, labels=labels).loss

    with pytest.raises(Exception, match="data-dependent|Data-dependent|graph break"):
        torch.compile(loss, fullgraph=True, backend="eager")(*batch().values())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b["input_ids"].__setitem__((0, 0), V), r"token id 97 outside the vocabulary"),
        (lambda b: b["labels"].__setitem__((1, 2), V), r"label 97 outside \[0, 97\) for masked-LM"),
        (
            lambda b: b.__setitem__("attention_mask", b["attention_mask"] * 2),
            r"attention_mask must hold only 0 \(padding\) and 1",
        ),
        (
            lambda b: b["token_type_ids"].__setitem__((0, 0), 2),
            r"token type id 2 outside \[0, type_vocab_size=2\)",
        ),
    ],
)
def test_validate_batch_says_what_the_forward_says(change, message):
    model = mlm()
    b = batch()
    change(b)
    with pytest.raises(ValueError, match=message):
        model(**b)
    with pytest.raises(ValueError, match=message):
        model.validate_batch(b)
    with pytest.raises(ValueError, match=message):
        device_batch(model, b, "cpu")


def test_classifier_labels_are_validated():
    torch.manual_seed(0)
    model = MPOBertForSequenceClassification(tiny_config(vocab_size=V, num_labels=3))
    b = batch()
    b["labels"] = torch.tensor([0, 3])
    with pytest.raises(ValueError, match=r"label 3 outside \[0, 3\) for a classifier"):
        model.validate_batch(b)
    b["labels"] = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"labels have shape \(3,\), expected \(batch,\)"):
        model.validate_batch(b)
    b["labels"] = torch.tensor([0.5, 1.0])
    with pytest.raises(TypeError, match="must be an integer tensor of class ids"):
        model.validate_batch(b)


def test_shapes_and_dtypes_are_checked_inside_too():
    model = mlm()
    b = batch()
    with model.trusted_inputs():
        with pytest.raises(ValueError, match="attention_mask has shape"):
            model(b["input_ids"], b["attention_mask"][:, :4])
        with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
            model(b["input_ids"].float())
        with pytest.raises(ValueError, match="labels have shape"):
            model(b["input_ids"], labels=b["labels"][:1])


def test_the_setting_is_restored_on_error_and_nests():
    model = mlm()
    with pytest.raises(KeyError):
        with model.trusted_inputs():
            assert not model.bert.checks_values
            raise KeyError("x")
    assert model.bert.checks_values
    with model.trusted_inputs():
        with model.trusted_inputs():
            pass
        assert not model.bert.checks_values
    assert model.bert.checks_values
    bad = batch()
    bad["input_ids"][0, 0] = V
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(**bad)  # checked again after leaving


def test_device_batch_drops_only_a_mask_that_masks_nothing():
    model = mlm()
    full = device_batch(model, batch(padded=False), "cpu")
    assert "attention_mask" not in full
    padded = device_batch(model, batch(padded=True), "cpu")
    assert "attention_mask" in padded
    with torch.no_grad():
        model.eval()
        plain = batch(padded=False)
        with model.trusted_inputs():
            a = model(**full).logits
            b = model(**plain).logits  # the all-ones mask kept: same answer
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
