"""The encoder owns the sharing map: layer -> module, shared central tensors, central cores."""

from __future__ import annotations

import pytest
import torch

from tnlm_models import MPOBertForMaskedLM
from tnlm_models.config import MATRIX_NAMES
from tnlm_models.testing import tiny_config


def _model(sharing: str, **kw) -> MPOBertForMaskedLM:
    torch.manual_seed(0)
    return MPOBertForMaskedLM(tiny_config(sharing=sharing, **kw))


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_layer_modules_and_groups(sharing):
    model = _model(sharing)
    enc = model.bert.encoder
    layers = model.config.num_hidden_layers
    groups = enc.layer_groups()
    # every layer in exactly one group, in order
    assert sorted(t for _, ts in groups for t in ts) == list(range(layers))
    for module, ts in groups:
        assert all(enc.layer_module(t) is module for t in ts)
    if sharing == "all":
        assert len(groups) == 1 and groups[0][0] is enc.layer[0]
    else:
        assert [ts for _, ts in groups] == [[t] for t in range(layers)]
        assert [m for m, _ in groups] == list(enc.layer)
    with pytest.raises(IndexError, match=rf"layer {layers} outside \[0, {layers}\)"):
        enc.layer_module(layers)


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_shared_central_and_central_cores(sharing):
    model = _model(sharing)
    enc = model.bert.encoder
    cores = model.central_core_parameters()
    for name in MATRIX_NAMES:
        shared = enc.shared_central(name)
        per_layer = {
            id(enc.layer_module(t).linear(name).central)
            for t in range(model.config.num_hidden_layers)
        }
        if sharing == "central":
            assert shared is enc.central[name]
            assert per_layer == {id(shared)}
        else:
            assert shared is None
    # one tensor per matrix type that is shared; one per module otherwise
    modules = len(enc.layer_groups())
    expected = len(MATRIX_NAMES) * (1 if sharing == "central" else modules)
    assert len(cores) == len({id(p) for p in cores}) == expected
    named = {id(p) for n, p in model.unique_named_parameters() if "central" in n.split(".")}
    assert {id(p) for p in cores} == named


def test_dense_model_has_no_central_cores():
    model = _model("none", mpo_matrices=())
    assert model.central_core_parameters() == []
    assert all(model.bert.encoder.shared_central(n) is None for n in MATRIX_NAMES)


def test_central_parameters_is_a_deprecated_alias():
    model = _model("central")
    with pytest.warns(DeprecationWarning, match="use central_core_parameters"):
        old = list(model.central_parameters())
    assert [id(p) for p in old] == [id(p) for p in model.central_core_parameters()]


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_parameter_count_without_sharing(sharing):
    """``num_parameters(unique=False)`` counts a shared tensor once per layer using it."""
    model = _model(sharing)
    enc = model.bert.encoder
    by_layer = 0
    for t in range(model.config.num_hidden_layers):
        by_layer += sum(p.numel() for p in enc.layer_module(t).parameters())
    outside = sum(
        p.numel() for n, p in model.unique_named_parameters() if not n.startswith("bert.encoder.")
    )
    assert model.num_parameters(unique=False) == by_layer + outside
