"""Hugging Face BERT -> MPO BERT (clone / fit, same or greater depth) and back (export)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import tnlm  # noqa: E402
from tnlm_models import (  # noqa: E402
    MPOBertForMaskedLM,
    MPOBertForSequenceClassification,
    MPOBertModel,
)
from tnlm_models.convert import load_bert_state  # noqa: E402
from tnlm_models.init import layer_map  # noqa: E402
from tnlm_models.testing import random_batch, tiny_config  # noqa: E402

V = 97


def hf_config(**kw):
    base = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return transformers.BertConfig(**base)


@pytest.fixture(scope="module")
def hf_mlm():
    torch.manual_seed(0)
    return transformers.BertForMaskedLM(hf_config()).eval()


def _hf_logits(hf, ids, mask, types):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits


def test_full_rank_no_sharing_fit_reproduces_hf_logits(hf_mlm):
    """ "fit" under sharing="none" decomposes every layer on its own: exact at full rank."""
    ids, mask, types = random_batch(V)
    model = MPOBertForMaskedLM.from_bert(hf_mlm, sharing="none", num_cores=3, init="fit").eval()
    with torch.no_grad():
        ours = model(ids, mask, types).logits
    torch.testing.assert_close(ours, _hf_logits(hf_mlm, ids, mask, types), rtol=1e-4, atol=1e-5)
    assert model.conversion_report.mean_relative_error < 1e-5


def test_clone_copies_one_source_layer_to_every_layer(hf_mlm):
    """ "clone" (the official method) gives every layer the MPO of source layer clone_layer:
    at full rank each layer rebuilds exactly that layer's matrices."""
    model = MPOBertForMaskedLM.from_bert(
        hf_mlm, sharing="none", num_cores=3, init="clone", clone_layer=1
    )
    source = hf_mlm.bert.encoder.layer[1]
    expected = {
        "query": source.attention.self.query.weight,
        "output": source.output.dense.weight,
    }
    for layer in model.bert.encoder.layer:
        for name, w in expected.items():
            rebuilt = layer.linear(name).rebuild_weight().detach()
            torch.testing.assert_close(rebuilt, w.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("init", ["clone", "fit"])
def test_one_layer_central_sharing_reproduces_hf_logits(init):
    """With one source layer both initialisations are exact at full rank."""
    ids, mask, types = random_batch(V)
    torch.manual_seed(1)
    one = transformers.BertForMaskedLM(hf_config(num_hidden_layers=1)).eval()
    m1 = MPOBertForMaskedLM.from_bert(one, sharing="central", num_cores=3, init=init).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            m1(ids, mask, types).logits, _hf_logits(one, ids, mask, types), rtol=1e-4, atol=1e-5
        )


def test_sentence_pair_classifier_reproduces_hf_logits():
    torch.manual_seed(2)
    hf = transformers.BertForSequenceClassification(hf_config(num_labels=3)).eval()
    ids, mask, types = random_batch(V)
    model = MPOBertForSequenceClassification.from_bert(hf, sharing="none", num_cores=3).eval()
    assert model.config.num_labels == 3
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, mask, types).logits, _hf_logits(hf, ids, mask, types), rtol=1e-4, atol=1e-5
        )


def test_sources_directory_file_and_state_dict(hf_mlm, tmp_path):
    ids, mask, types = random_batch(V)
    ref = _hf_logits(hf_mlm, ids, mask, types)
    hf_mlm.save_pretrained(tmp_path / "hf")
    torch.save(hf_mlm.state_dict(), tmp_path / "weights.bin")
    sources = [
        (tmp_path / "hf", {}),
        (str(tmp_path / "hf" / "model.safetensors"), {}),
        (tmp_path / "weights.bin", {"num_attention_heads": 4}),
        (hf_mlm.state_dict(), {"num_attention_heads": 4}),
    ]
    for src, extra in sources:
        model = MPOBertForMaskedLM.from_bert(src, sharing="none", num_cores=2, **extra).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(ids, mask, types).logits, ref, rtol=1e-4, atol=1e-5)


def test_fit_beats_clone_on_mean_layer_error(hf_mlm):
    reports = {}
    for init in ("clone", "fit"):
        model = MPOBertForMaskedLM.from_bert(hf_mlm, sharing="central", num_cores=3, init=init)
        reports[init] = model.conversion_report
    assert reports["fit"].mean_relative_error < reports["clone"].mean_relative_error
    slack = 1e3 * torch.finfo(torch.float32).eps  # the fit runs in the weights' float32
    for name, history in reports["fit"].objectives.items():
        assert all(b <= a + slack * history[0] for a, b in zip(history, history[1:])), name
        assert history[-1] < reports["clone"].objectives[name][0], name
    # Every per-layer error of "clone" outside the cloned layer is large; "fit" spreads it.
    errs = reports["clone"].relative_errors["query"]
    assert errs[0] < 1e-6 and min(errs[1:]) > 0.1


def test_shared_fit_exact_for_identical_layers():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(24, 36, generator=g, dtype=torch.float64)
    _, fit = tnlm.shared_mpo_decompose([w, w.clone()], ((2, 3, 4), (3, 4, 3)))
    assert max(fit.relative_errors) < 1e-10


def test_deeper_target_layer_map(hf_mlm):
    assert layer_map(12, 48)[:8] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert layer_map(12, 48)[-1] == 11
    assert layer_map(3, 3) == [0, 1, 2]
    model = MPOBertForMaskedLM.from_bert(
        hf_mlm, num_hidden_layers=6, sharing="central", num_cores=3, init="fit"
    )
    rep = model.conversion_report
    assert rep.layer_map == [0, 0, 1, 1, 2, 2]
    assert len(rep.relative_errors["query"]) == 6
    enc = model.bert.encoder
    assert torch.equal(enc.layer[2].query.bias, enc.layer[3].query.bias)
    torch.testing.assert_close(
        enc.layer[2].query.bias, hf_mlm.bert.encoder.layer[1].attention.self.query.bias
    )
    ids, mask, types = random_batch(V)
    assert torch.isfinite(model(ids, mask, types, labels=ids).loss)


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_export_round_trip_same_logits(sharing, tmp_path):
    torch.manual_seed(3)
    cfg = tiny_config(sharing=sharing, bond_dim=3)
    model = MPOBertForMaskedLM(cfg).eval()
    with torch.no_grad():  # make the adapters non-zero, so export must include them
        for name, p in model.named_parameters():
            if "adapter_up" in name:
                p.normal_(0, 0.05)
    ids, mask, types = random_batch(V)
    hf = model.to_bert()
    assert isinstance(hf, transformers.BertForMaskedLM)
    with torch.no_grad():
        ours = model(ids, mask, types).logits
        torch.testing.assert_close(_hf_logits(hf, ids, mask, types), ours, rtol=1e-4, atol=1e-5)
    hf.save_pretrained(tmp_path)
    reloaded = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_hf_logits(reloaded, ids, mask, types), ours, rtol=1e-4, atol=1e-5)
    # And back again, at full rank: the same logits.
    again = MPOBertForMaskedLM.from_bert(tmp_path, sharing="none", num_cores=3).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask, types).logits, ours, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("num_labels", [1, 3])
def test_export_classifier(num_labels):
    torch.manual_seed(4)
    model = MPOBertForSequenceClassification(tiny_config(num_labels=num_labels)).eval()
    hf = model.to_bert()
    assert isinstance(hf, transformers.BertForSequenceClassification)
    ids, mask, types = random_batch(V)
    labels = torch.tensor([0.5, 1.0, -1.0]) if num_labels == 1 else torch.tensor([0, 2, 1])
    with torch.no_grad():
        ours = model(ids, mask, types, labels=labels)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    torch.testing.assert_close(theirs.logits, ours.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(theirs.loss, ours.loss, rtol=1e-4, atol=1e-6)


def test_export_encoder():
    torch.manual_seed(5)
    model = MPOBertModel(tiny_config()).eval()
    hf = model.to_bert()
    ids, mask, types = random_batch(V)
    with torch.no_grad():
        ours = model(ids, mask, types)
        theirs = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(
        theirs.last_hidden_state, ours.last_hidden_state, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(theirs.pooler_output, ours.pooler_output, atol=1e-5, rtol=1e-4)


def test_bad_pretrained_input(hf_mlm, tmp_path):
    state = hf_mlm.state_dict()
    broken = {k: v for k, v in state.items() if "layer.1.attention.self.key.weight" not in k}
    with pytest.raises(ValueError, match=r"missing keys \['encoder.layer.1.attention.self.key"):
        MPOBertForMaskedLM.from_bert(broken, num_attention_heads=4, num_cores=3)
    extra = dict(state)
    extra["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"unexpected keys \['encoder.layer.0.attention.self.rot"):
        MPOBertForMaskedLM.from_bert(extra, num_attention_heads=4, num_cores=3)
    MPOBertForMaskedLM.from_bert(extra, num_attention_heads=4, num_cores=3, strict=False)
    with pytest.raises(ValueError, match="num_attention_heads cannot be inferred"):
        MPOBertForMaskedLM.from_bert(state, num_cores=3)
    with pytest.raises(ValueError, match=r"'encoder.layer.0.intermediate.dense.weight' has shape"):
        MPOBertForMaskedLM.from_bert(hf_mlm, intermediate_size=48, num_cores=3)
    with pytest.raises(ValueError, match=r"hidden_size=64 does not match the source's 32"):
        MPOBertForMaskedLM.from_bert(hf_mlm, hidden_size=64, num_cores=3)
    with pytest.raises(ValueError, match="unknown init 'svd'; expected one of clone, fit"):
        MPOBertForMaskedLM.from_bert(hf_mlm, init="svd")
    with pytest.raises(ValueError, match="unknown sharing mode 'layer'"):
        MPOBertForMaskedLM.from_bert(hf_mlm, sharing="layer", num_cores=3)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_bert_state("bert-base-uncased")
    with pytest.raises(TypeError, match="source must be"):
        load_bert_state(42)
    with pytest.raises(ValueError, match=r"num_hidden_layers=2 is fewer than the source's 3 "):
        MPOBertForMaskedLM.from_bert(hf_mlm, num_hidden_layers=2, num_cores=3)
    with pytest.raises(ValueError, match=r"clone_layer=5 outside \[0, 3\)"):
        MPOBertForMaskedLM.from_bert(hf_mlm, init="clone", clone_layer=5, num_cores=3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.safetensors or pytorch_model.bin"):
        load_bert_state(tmp_path / "empty")


def _albert_config(**kw):
    base = dict(
        vocab_size=V,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(kw)
    return transformers.AlbertConfig(**base)


@pytest.mark.parametrize("sharing", ["all", "central"])
def test_albert_reproduces_logits(sharing, tmp_path):
    torch.manual_seed(6)
    hf = transformers.AlbertForMaskedLM(_albert_config()).eval()
    ids, mask, types = random_batch(V)
    model = MPOBertForMaskedLM.from_bert(hf, sharing=sharing, num_cores=3).eval()
    assert model.config.embedding_size == 16 and model.config.num_hidden_layers == 3
    assert model.conversion_report.layer_map == [0, 0, 0]
    with torch.no_grad():
        ours = model(ids, mask, types).logits
    torch.testing.assert_close(ours, _hf_logits(hf, ids, mask, types), rtol=1e-4, atol=1e-5)
    model.save_pretrained(tmp_path)
    again = MPOBertForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(ids, mask, types).logits, ours)
    with pytest.raises(ValueError, match="factorised embedding .*no dense BERT equivalent"):
        model.to_bert()


def test_albert_classifier_and_deeper_target():
    torch.manual_seed(7)
    hf = transformers.AlbertForSequenceClassification(_albert_config(num_labels=3)).eval()
    ids, mask, types = random_batch(V)
    model = MPOBertForSequenceClassification.from_bert(hf, sharing="central", num_cores=3)
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(ids, mask, types).logits,
            _hf_logits(hf, ids, mask, types),
            rtol=1e-4,
            atol=1e-5,
        )
    deep = MPOBertForMaskedLM.from_bert(hf, num_hidden_layers=6, num_cores=3)
    assert deep.config.num_hidden_layers == 6
    assert deep.conversion_report.mean_relative_error < 1e-6


def test_albert_unsupported_groups():
    torch.manual_seed(8)
    hf = transformers.AlbertForMaskedLM(_albert_config(num_hidden_groups=2))
    with pytest.raises(ValueError, match=r"albert_layer_groups.1.*only num_hidden_groups=1"):
        MPOBertForMaskedLM.from_bert(hf, num_cores=3)
