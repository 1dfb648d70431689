"""MPOBertConfig validation and (de)serialisation."""

from __future__ import annotations

import json

import pytest

from tnlm_models import MPOBertConfig
from tnlm_models.config import auto_factorize


def test_default_is_valid_and_round_trips():
    cfg = MPOBertConfig()
    again = MPOBertConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def test_explicit_factorization_round_trips():
    cfg = MPOBertConfig(
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_cores=2,
        factorizations={"intermediate": ((8, 4), (4, 4))},
    )
    assert cfg.factorization("intermediate") == ((8, 4), (4, 4))
    assert MPOBertConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("dim,n", [(768, 5), (3072, 5), (1024, 5), (30, 3), (7, 2)])
def test_auto_factorize_multiplies_back(dim, n):
    f = auto_factorize(dim, n)
    assert len(f) == n
    prod = 1
    for x in f:
        prod *= x
    assert prod == dim


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden_size": 30, "num_attention_heads": 4}, "num_attention_heads=4 does not divide"),
        ({"sharing": "layers"}, "unknown sharing mode 'layers'; expected one of central, all"),
        ({"init_scheme": "xavier"}, "unknown init_scheme 'xavier'; expected one of normal"),
        ({"forward_mode": "gpu"}, "unknown forward_mode 'gpu'"),
        ({"hidden_act": "swish"}, "unknown hidden_act 'swish'"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be an int >= 1, got 0"),
        ({"bond_dim": 0}, "bond_dim must be None or an int >= 1"),
        ({"adapter_size": -1}, "adapter_size must be an int >= 0"),
        ({"mpo_matrices": ("query", "ffn")}, "unknown matrix 'ffn' in mpo_matrices"),
        ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob must be in"),
        ({"pad_token_id": 40000}, "pad_token_id=40000 outside the vocabulary"),
        ({"mpo_matrices": (), "sharing": "central"}, "needs at least one MPO matrix"),
        (
            {"factorizations": {"query": ((4, 4, 4, 4, 2), (4, 4, 4, 2, 2))}},
            r"in_dims \(4, 4, 4, 2, 2\) multiply to 256, expected in_features=256|"
            r"out_dims \(4, 4, 4, 4, 2\) multiply to 512",
        ),
        (
            {"factorizations": {"query": ((16, 16), (16, 16))}},
            "has 2 factors, expected num_cores=5",
        ),
        ({"factorizations": {"ffn": ((16, 16), (16, 16))}}, "unknown matrix 'ffn' in factoriz"),
    ],
)
def test_invalid_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MPOBertConfig(**kwargs)


def test_from_dict_unknown_key_lists_valid():
    d = MPOBertConfig().to_dict()
    d["hidden_sise"] = 3
    with pytest.raises(
        ValueError, match=r"unknown MPOBertConfig keys \['hidden_sise'\].*hidden_size"
    ):
        MPOBertConfig.from_dict(d)
