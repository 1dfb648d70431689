"""Issue 8 (H7): MPOLinear at any number of cores, configs that refuse what they should,
and defaults that learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tnlm_models import MPOBertConfig, MPOLinear, TrainConfig
from tnlm_models.config import check_factorization


# ---------------------------------------------------------------------------- MPOLinear
def _dense_oracle(cores: list[np.ndarray]) -> np.ndarray:
    """``W`` (out, in) from cores ``(r_l, out_k, in_k, r_r)`` by sequential contraction."""
    t = np.ones((1, 1, 1))  # (O, I, r)
    for core in cores:
        _, o, i, r_r = core.shape
        t = np.einsum("abr,rcds->acbds", t, core)  # (O, o, I, i, r_r)
        t = t.reshape(t.shape[0] * o, t.shape[2] * i, r_r)
    return t[:, :, 0]


def _alternating_layer(n: int, mode: str) -> MPOLinear:
    """``n`` cores, each with one leg of size 2 (out on even cores, in on odd ones)."""
    out_dims = tuple(2 if k % 2 == 0 else 1 for k in range(n))
    in_dims = tuple(1 if k % 2 == 0 else 2 for k in range(n))
    if n == 1:
        in_dims = (3,)
    torch.manual_seed(n)
    layer = MPOLinear(
        math.prod(in_dims),
        math.prod(out_dims),
        out_dims=out_dims,
        in_dims=in_dims,
        bond_dim=3,
        adapter_size=2,
        forward_mode=mode,
        dtype=torch.float64,
    )
    with torch.no_grad():
        layer.bias.normal_()
        layer.adapter_up.normal_()
        for c in layer.cores:
            c.normal_()
    return layer


@pytest.mark.parametrize("mode", ["auto", "dense", "cores"])
@pytest.mark.parametrize("n", range(1, 21))
def test_mpo_linear_matches_dense_oracle_for_1_to_20_cores(n, mode):
    layer = _alternating_layer(n, mode)
    g = torch.Generator().manual_seed(100 + n)
    x = torch.randn(2, 3, layer.in_features, generator=g, dtype=torch.float64)
    w = _dense_oracle([c.detach().numpy() for c in layer.cores])
    down, up = layer.adapter_down.detach().numpy(), layer.adapter_up.detach().numpy()
    xn = x.numpy()
    ref = xn @ w.T + (xn @ down.T) @ up.T + layer.bias.detach().numpy()  # (2, 3, out)
    with torch.no_grad():
        y = layer(x).numpy()
    tol = 64 * n * np.finfo(np.float64).eps
    err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
    assert err <= tol, (n, mode, layer.choose_mode(6), err)
    if mode == "auto" and n >= 17:
        # the defect hid in the path "auto" picks for few rows at a small bond cap
        assert layer.choose_mode(6) == "cores"


def test_mpo_linear_refuses_too_many_cores_and_bad_arguments():
    with pytest.raises(ValueError, match=r"core 0 has out_0 = in_0 = 1.*use fewer cores"):
        MPOLinear(256, 256, num_cores=40)
    with pytest.raises(TypeError, match="MPOLinear argument 'in_features' must be int, got float"):
        MPOLinear(8.9, 8, num_cores=2)
    with pytest.raises(TypeError, match="'num_cores' must be int, got bool True"):
        MPOLinear(8, 8, num_cores=True)
    with pytest.raises(TypeError, match=r"out_dims must be a non-empty sequence of ints.*8\.9"):
        MPOLinear(16, 16, out_dims=(2, 8.9), in_dims=(4, 4))
    assert MPOLinear(16, 16, num_cores=np.int64(2)).num_cores == 2


# ---------------------------------------------------------------------------- MPOBertConfig
def test_num_cores_is_checked_against_the_factorisations():
    with pytest.raises(
        ValueError,
        match=r"num_cores=40 is too many for the 256 x 256 matrix 'query'.*num_cores <= 8",
    ):
        MPOBertConfig(num_cores=40)
    with pytest.raises(ValueError, match=r"num_cores=9 is too many .*num_cores <= 8"):
        MPOBertConfig(num_cores=9)
    assert MPOBertConfig(num_cores=8).factorization("query") == ((2,) * 8, (2,) * 8)
    # a dense matrix is never factorised, so it does not limit num_cores
    cfg = MPOBertConfig(
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=2**12,
        num_cores=6,
        mpo_matrices=("intermediate", "output"),
    )
    assert cfg.factorization("intermediate")[0] == (4, 4, 4, 4, 4, 4)
    with pytest.raises(ValueError, match=r"factorizations\['query'\] \(4, 1, 64\) x .*core 1"):
        MPOBertConfig(num_cores=3, factorizations={"query": ((4, 1, 64), (4, 1, 64))})
    with pytest.raises(ValueError, match=r"out_dims \(4, 4\) and in_dims \(16,\) must have"):
        check_factorization((4, 4), (16,))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"initializer_range": float("nan")}, ValueError, "initializer_range must be a finite"),
        ({"initializer_range": float("inf")}, ValueError, "initializer_range must be a finite"),
        ({"layer_norm_eps": 0.0}, ValueError, r"layer_norm_eps must be a number > 0, got 0\.0"),
        ({"layer_norm_eps": -1e-5}, ValueError, "layer_norm_eps must be a number > 0"),
        ({"hidden_dropout_prob": "0.1"}, TypeError, "'hidden_dropout_prob' must be float, got str"),
        ({"num_hidden_layers": True}, TypeError, "'num_hidden_layers' must be int, got bool True"),
        ({"hidden_size": 256.0}, TypeError, "'hidden_size' must be int, got float 256.0"),
        ({"bond_dim": False}, TypeError, "'bond_dim' must be int or None, got bool False"),
        (
            {"classifier_dropout": 1.0},
            ValueError,
            r"classifier_dropout must be None or in \[0, 1\)",
        ),
        ({"num_cores": 0}, ValueError, "num_cores must be an int >= 1, got 0"),
        (
            {"factorizations": {"query": ((8.9, 4, 4, 2, 1), (4, 4, 4, 2, 2))}},
            TypeError,
            r"factorizations\['query'\] out_dims must be a non-empty sequence of ints, got "
            r"\(8\.9,",
        ),
        (
            {"factorizations": {"query": ((4, 4, 4, 2, 2), (4, 4, 4, 2, 2), (1,))}},
            TypeError,
            r"factorizations\['query'\] must be a pair \(out_dims, in_dims\)",
        ),
        (
            {"factorizations": {"query": ((4, 4, 4, 2, True), (4, 4, 4, 2, 2))}},
            TypeError,
            "out_dims must be a non-empty sequence of ints",
        ),
        ({"mpo_matrices": "query"}, TypeError, r"'mpo_matrices' must be tuple\[str, \.\.\.\]"),
    ],
)
def test_model_config_refuses_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        MPOBertConfig(**kwargs)


def test_model_config_accepts_numpy_numbers_and_ints_for_floats():
    cfg = MPOBertConfig(
        hidden_size=np.int64(64),
        num_attention_heads=np.int32(4),
        intermediate_size=128,
        num_cores=3,
        hidden_dropout_prob=0,
        initializer_range=np.float32(0.5),
        factorizations={"query": (np.array([4, 4, 4]), [4, 4, 4])},
    )
    assert type(cfg.hidden_size) is int and cfg.hidden_size == 64
    assert type(cfg.hidden_dropout_prob) is float and cfg.hidden_dropout_prob == 0.0
    assert type(cfg.initializer_range) is float
    assert cfg.factorizations["query"] == ((4, 4, 4), (4, 4, 4))
    assert MPOBertConfig.from_dict(cfg.to_dict()) == cfg


def test_from_bert_with_zero_layers_is_refused():
    transformers = pytest.importorskip("transformers")
    from tnlm_models import MPOBertForMaskedLM

    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        )
    )
    with pytest.raises(ValueError, match="num_hidden_layers must be an int >= 1, got 0"):
        MPOBertForMaskedLM.from_bert(bert, num_hidden_layers=0, num_cores=2)


# ---------------------------------------------------------------------------- TrainConfig
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a finite number"),
        ({"learning_rate": float("inf")}, ValueError, "learning_rate must be a finite number"),
        ({"weight_decay": float("inf")}, ValueError, "weight_decay must be a finite number"),
        ({"central_lr_factor": float("nan")}, ValueError, "central_lr_factor must be a finite"),
        ({"learning_rate": 0.0}, ValueError, r"learning_rate must be a number > 0, got 0\.0"),
        ({"central_lr_factor": -1}, ValueError, "central_lr_factor must be a number >= 0"),
        ({"adam_beta2": 1.0}, ValueError, r"adam_beta2 must be in \[0, 1\), got 1\.0"),
        (
            {"learning_rate": "1e-3"},
            TypeError,
            r"'learning_rate' must be float, got str '1e-3' \(write numbers without quotes; "
            r"YAML reads 1e-3",
        ),
        ({"num_epochs": True}, TypeError, "'num_epochs' must be int, got bool True"),
        ({"batch_size": 32.0}, TypeError, "'batch_size' must be int, got float 32.0"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
        ({"max_steps": 0}, ValueError, "max_steps must be None or an int >= 1, got 0"),
        ({"progress": 1}, TypeError, "'progress' must be bool, got int 1"),
    ],
)
def test_train_config_refuses_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_train_config_accepts_numpy_numbers():
    cfg = TrainConfig(batch_size=np.int64(16), learning_rate=np.float32(0.5), max_steps=3)
    assert type(cfg.batch_size) is int and cfg.batch_size == 16
    assert type(cfg.learning_rate) is float and cfg.learning_rate == 0.5
