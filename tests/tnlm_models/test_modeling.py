"""Tiny-config model tests: shapes, losses, sharing, parameter counts, training, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from tnlm_models import (
    MATRIX_NAMES,
    MPOBertConfig,
    MPOBertForMaskedLM,
    MPOBertForSequenceClassification,
    MPOBertModel,
)
from tnlm_models.modeling import PARAMETER_PARTS
from tnlm_models.testing import random_batch, tiny_config

V, H, L, F_ = 97, 32, 3, 64


def tiny(**kw) -> MPOBertConfig:
    return tiny_config(**kw)


def batch(seed: int = 0, b: int = 3, t: int = 11):
    return random_batch(V, b, t, seed)


# ---------------------------------------------------------------- closed-form counts
def _bonds(out_dims, in_dims, cap):
    sizes = [o * i for o, i in zip(out_dims, in_dims)]
    r = [1]
    for k in range(1, len(sizes)):
        left, right = math.prod(sizes[:k]), math.prod(sizes[k:])
        r.append(min(left, right, cap if cap else left))
    return r + [1]


def _mpo_counts(cfg, name):
    out_dims, in_dims = cfg.factorization(name)
    r = _bonds(out_dims, in_dims, cfg.bond_dim)
    sizes = [r[k] * out_dims[k] * in_dims[k] * r[k + 1] for k in range(len(out_dims))]
    c = len(sizes) // 2
    return sizes[c], sum(sizes) - sizes[c]


def expected_unique(cfg: MPOBertConfig, head: str) -> int:
    h, v = cfg.hidden_size, cfg.vocab_size
    emb = v * h + cfg.max_position_embeddings * h + cfg.type_vocab_size * h + 2 * h
    central = per_layer = 0
    for name in MATRIX_NAMES:
        out_f, in_f = cfg.matrix_shape(name)
        per_layer += out_f  # bias
        if cfg.is_mpo(name):
            cen, aux = _mpo_counts(cfg, name)
            central += cen
            per_layer += aux + cfg.adapter_size * (in_f + out_f)
        else:
            per_layer += out_f * in_f
    per_layer += 4 * h  # two LayerNorms
    n = cfg.num_hidden_layers
    if cfg.sharing == "central":
        enc = central + n * per_layer
    elif cfg.sharing == "all":
        enc = central + per_layer
    else:
        enc = n * (central + per_layer)
    heads = (
        h * h + h + 2 * h + v if head == "mlm" else h * h + h + h * cfg.num_labels + cfg.num_labels
    )
    return emb + enc + heads


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
@pytest.mark.parametrize("bond_dim", [None, 4])
def test_parameter_count_formula(sharing, bond_dim):
    cfg = tiny(sharing=sharing, bond_dim=bond_dim)
    mlm = MPOBertForMaskedLM(cfg)
    assert mlm.num_parameters(unique=True) == expected_unique(cfg, "mlm")
    breakdown = mlm.parameter_breakdown()
    assert set(breakdown) == set(PARAMETER_PARTS)
    assert sum(breakdown.values()) == mlm.num_parameters()
    cls = MPOBertForSequenceClassification(cfg.replace(num_labels=3))
    assert cls.num_parameters() == expected_unique(cls.config, "cls")
    no_share = tiny(sharing="none", bond_dim=bond_dim)
    assert mlm.num_parameters(unique=False) == expected_unique(no_share, "mlm")


def test_dense_none_matches_bert_count():
    cfg = tiny(sharing="none", mpo_matrices=())
    model = MPOBertForMaskedLM(cfg)
    assert model.num_parameters() == expected_unique(cfg, "mlm")
    assert model.parameter_breakdown()["dense"] == L * (4 * H * H + 2 * H * F_)


def test_central_sharing_shares_storage_and_gradients():
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny(sharing="central"))
    enc = model.bert.encoder
    for name in MATRIX_NAMES:
        ptrs = {enc.layer[i].linear(name).central.data_ptr() for i in range(L)}
        assert ptrs == {enc.central[name].data_ptr()}
        aux = {enc.layer[i].linear(name).core0.data_ptr() for i in range(L)}
        assert len(aux) == L
    names = [n for n, _ in model.unique_named_parameters() if "central" in n]
    assert sorted(names) == sorted(f"bert.encoder.central.{n}" for n in MATRIX_NAMES)
    assert len(list(model.central_core_parameters())) == len(MATRIX_NAMES)
    # The shared gradient is the sum of the per-layer gradients of unshared copies: the
    # same weights under sharing="none" (every layer its own copy of the central tensor).
    model = model.double().eval()  # no dropout: both models compute the same function
    copies = MPOBertForMaskedLM(tiny(sharing="none")).double().eval()
    missing, unexpected = copies.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and all(k.startswith("bert.encoder.central.") for k in unexpected)
    ids, mask, types = batch()
    model(ids, mask, types, labels=ids).loss.backward()
    copies(ids, mask, types, labels=ids).loss.backward()
    for name in MATRIX_NAMES:
        per_layer = sum(copies.bert.encoder.layer[i].linear(name).central.grad for i in range(L))
        shared = enc.central[name].grad
        assert shared is not None and shared.abs().sum() > 0
        torch.testing.assert_close(shared, per_layer, rtol=1e-10, atol=1e-12)


def test_all_sharing_applies_one_layer():
    torch.manual_seed(0)
    model = MPOBertModel(tiny(sharing="all"), add_pooling_layer=False).eval()
    assert len(model.encoder.layer) == 1
    ids, mask, types = batch()
    out = model(ids, mask, types, output_hidden_states=True)
    assert len(out.hidden_states) == L + 1
    x = out.hidden_states[0]
    ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    for i in range(L):
        x = model.encoder.layer[0](x, ext)
        torch.testing.assert_close(x, out.hidden_states[i + 1])
    torch.testing.assert_close(x, out.last_hidden_state)


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_shapes_and_finite_losses(sharing):
    torch.manual_seed(0)
    cfg = tiny(sharing=sharing)
    ids, mask, types = batch()
    labels = ids.clone()
    labels[:, ::2] = -100
    out = MPOBertForMaskedLM(cfg)(ids, mask, types, labels=labels, output_hidden_states=True)
    assert out.logits.shape == (3, 11, V)
    assert torch.isfinite(out.loss)
    assert len(out.hidden_states) == L + 1
    assert MPOBertForMaskedLM(cfg)(ids).loss is None
    cls = MPOBertForSequenceClassification(cfg.replace(num_labels=3))
    out = cls(ids, mask, types, labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3) and torch.isfinite(out.loss)
    reg = MPOBertForSequenceClassification(cfg.replace(num_labels=1))
    target = torch.tensor([0.5, -1.0, 2.0])
    out = reg(ids, labels=target)
    torch.testing.assert_close(out.loss, ((out.logits.squeeze(-1) - target) ** 2).mean())


def test_mlm_loss_ignores_minus_100():
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny()).eval()
    ids, _, _ = batch()
    labels = torch.full_like(ids, -100)
    labels[1, 4] = 7
    out = model(ids, labels=labels)
    expected = -torch.log_softmax(out.logits[1, 4], -1)[7]
    torch.testing.assert_close(out.loss, expected)


def test_padding_mask_hides_padded_tokens():
    torch.manual_seed(0)
    model = MPOBertModel(tiny()).eval()
    ids, mask, _ = batch()
    a = model(ids, mask).last_hidden_state
    ids2 = ids.clone()
    ids2[0, -3:] = 5  # change only masked positions
    b = model(ids2, mask).last_hidden_state
    torch.testing.assert_close(a[0, :-3], b[0, :-3])


def test_mlm_decoder_tied_to_word_embeddings():
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny()).eval()
    ids, _, _ = batch()
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[5].add_(1.0)
    h = model.bert(ids).last_hidden_state
    head = model.head
    x = head.norm(head.act(head.transform(h)))
    expected = x @ model.bert.embeddings.word_embeddings.weight.T + head.bias
    torch.testing.assert_close(model(ids).logits, expected)


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_few_steps_lower_loss(sharing):
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny(sharing=sharing))
    ids, mask, types = batch(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(ids, mask, types, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_bad_inputs():
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny())
    with pytest.raises(ValueError, match=r"token id 97 outside the vocabulary \[0, 97\)"):
        model(torch.tensor([[1, 2, 97]]))
    with pytest.raises(ValueError, match=r"token id -1 outside the vocabulary"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="sequence length 25 exceeds max_position_embeddings=24"):
        model(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, seq\)"):
        model(torch.ones(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.ones(1, 5))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.ones(1, 5, dtype=torch.long), attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="token type id 2 outside"):
        model(torch.ones(1, 5, dtype=torch.long), token_type_ids=torch.full((1, 5), 2))
    with pytest.raises(ValueError, match="labels have shape"):
        model(torch.ones(1, 5, dtype=torch.long), labels=torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="config must be an MPOBertConfig"):
        MPOBertForMaskedLM({"hidden_size": 16})


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_batched_layer_weights_match_per_layer_forward(sharing, monkeypatch):
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny(sharing=sharing, forward_mode="dense")).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adapter_up" in name:
                p.normal_(0, 0.1)
    ids, mask, types = batch()
    assert set(model.bert.encoder.rebuild_weights(ids.numel())) == set(MATRIX_NAMES)
    batched = model(ids, mask, types).logits
    monkeypatch.setattr(model.bert.encoder, "rebuild_weights", lambda rows: {})
    per_layer = model(ids, mask, types).logits
    torch.testing.assert_close(batched, per_layer)


@pytest.mark.parametrize(
    "rule, unique, auxiliary",
    [("paper", 68_246_778, 30_921_408), ("balanced", 71_687_418, 34_362_048)],
)
def test_bert_base_width_48_layer_count_is_pinned(rule, unique, auxiliary):
    """Known numbers, not the formula again: 48 layers at hidden 768 (BERT-base widths,
    5 cores, adapters of rank 8), built on the meta device. The paper's factorisation table
    (the default) gives its 68.2M; tnlm's balanced split puts 3.44M more parameters in the
    auxiliary tensors. docs/models.md reports the same numbers."""
    cfg = MPOBertConfig(
        num_hidden_layers=48,
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        adapter_size=8,
        factorization_rule=rule,
    )
    with torch.device("meta"):
        model = MPOBertForMaskedLM(cfg)
    assert model.num_parameters(unique=True) == unique
    assert model.parameter_breakdown() == {
        "embeddings": 23_837_184,
        "central": 7_077_888,
        "auxiliary": auxiliary,
        "adapters": 5_308_416,
        "dense": 0,
        "norms_biases": 479_232,
        "heads": 622_650,
    }


@pytest.mark.parametrize("sharing", ["none", "central", "all"])
def test_layer_gradient_norms_match_a_manual_sum(sharing):
    """Oracle: each entry is the norm over that layer module's parameters' gradients,
    computed by hand; shared central tensors are left out, one entry per module."""
    torch.manual_seed(0)
    cfg = tiny_config(num_hidden_layers=3, sharing=sharing)
    model = MPOBertForMaskedLM(cfg)
    ids, mask, types = random_batch(cfg.vocab_size, 2, 8, seed=0)
    model(ids, mask, types, labels=ids).loss.backward()
    enc = model.bert.encoder
    central = {id(p) for p in getattr(enc, "central", {}).values()}
    expected = [
        math.sqrt(
            sum(float(p.grad.double().pow(2).sum()) for p in m.parameters() if id(p) not in central)
        )
        for m in enc.layer
    ]
    got = enc.layer_gradient_norms()
    assert len(got) == (1 if sharing == "all" else 3)
    assert got == pytest.approx(expected, rel=1e-12)
    assert all(g > 0 for g in got)
    if sharing == "central":  # the central tensors have gradients but are not counted
        with_central = math.sqrt(
            sum(float(p.grad.double().pow(2).sum()) for p in enc.layer[0].parameters())
        )
        assert with_central > got[0] * (1 + 1e-6)
