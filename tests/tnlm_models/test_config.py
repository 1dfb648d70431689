"""MPOBertConfig validation and (de)serialisation."""

from __future__ import annotations

import json
import math

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


def test_paper_factorization_table_is_the_default_for_its_dimensions():
    from tnlm_models.config import PAPER_FACTORIZATIONS, rule_factorize

    expected = {
        768: (4, 4, 4, 4, 3),
        3072: (4, 4, 8, 6, 4),
        1024: (4, 4, 4, 4, 4),
        4096: (4, 4, 8, 8, 4),
        2048: (4, 4, 8, 4, 4),
        2304: (4, 4, 8, 6, 3),
    }
    assert PAPER_FACTORIZATIONS == expected
    for dim, dims in expected.items():
        assert rule_factorize(dim, 5) == dims
        assert math.prod(dims) == dim
    assert rule_factorize(768, 5, "balanced") == (3, 4, 4, 4, 4)
    assert rule_factorize(768, 4) == auto_factorize(768, 4)  # the table is for 5 cores
    assert rule_factorize(640, 5) == auto_factorize(640, 5)  # and for its dimensions
    cfg = MPOBertConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
    assert cfg.factorization("intermediate") == ((4, 4, 8, 6, 4), (4, 4, 4, 4, 3))
    old = cfg.replace(factorization_rule="balanced")
    assert old.factorization("query") == ((3, 4, 4, 4, 4), (3, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="unknown factorization_rule 'tt'; expected one of paper"):
        MPOBertConfig(factorization_rule="tt")
    with pytest.raises(ValueError, match="unknown factorization_rule 'tt'; expected one of paper"):
        rule_factorize(768, 5, "tt")


def test_config_files_without_factorization_rule_load_as_balanced(tmp_path):
    """A model saved before the paper's table was the default keeps its shapes."""
    import json

    import torch

    from tnlm_models import MPOBertForMaskedLM

    cfg = MPOBertConfig(
        hidden_size=768,
        intermediate_size=768,
        num_attention_heads=12,
        num_hidden_layers=1,
        vocab_size=50,
        num_cores=5,
        factorization_rule="balanced",
        adapter_size=0,
        max_position_embeddings=16,
        mpo_matrices=("query",),
    )
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(cfg)
    model.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    raw = json.loads(path.read_text())
    del raw["config"]["factorization_rule"]  # as written before the field existed
    path.write_text(json.dumps(raw))
    loaded = MPOBertForMaskedLM.from_pretrained(tmp_path / "old")
    assert loaded.config.factorization_rule == "balanced"
    assert loaded.config.factorization("query")[0] == (3, 4, 4, 4, 4)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
