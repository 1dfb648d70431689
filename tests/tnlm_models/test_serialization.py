"""save_pretrained / from_pretrained: bit-exact round trips, fine-tuning from MLM, errors."""

from __future__ import annotations

import json

import pytest
import torch

from tnlm_models import MPOBertForMaskedLM, MPOBertForSequenceClassification, MPOBertModel
from tnlm_models.testing import random_batch as batch
from tnlm_models.testing import tiny_config as tiny


@pytest.mark.parametrize("sharing", ["central", "all", "none"])
def test_round_trip_bit_exact(tmp_path, sharing):
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(tiny(sharing=sharing)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "model.safetensors").is_file()
    loaded = MPOBertForMaskedLM.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ids, mask, types = batch()
    assert torch.equal(model(ids, mask, types).logits, loaded(ids, mask, types).logits)
    if sharing == "central":
        enc = loaded.bert.encoder
        assert enc.layer[1].query.central is enc.central["query"]


def test_classifier_from_mlm_checkpoint(tmp_path):
    torch.manual_seed(0)
    mlm = MPOBertForMaskedLM(tiny())
    mlm.save_pretrained(tmp_path)
    cls = MPOBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    assert cls.config.num_labels == 4
    assert cls.classifier.out_features == 4
    for name, p in mlm.bert.unique_named_parameters():
        assert torch.equal(p, dict(cls.bert.unique_named_parameters())[name]), name
    enc = MPOBertModel.from_pretrained(tmp_path)
    assert torch.equal(
        enc.embeddings.word_embeddings.weight, mlm.bert.embeddings.word_embeddings.weight
    )


def test_fine_tuned_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    cls = MPOBertForSequenceClassification(tiny(num_labels=3)).eval()
    cls.save_pretrained(tmp_path)
    again = MPOBertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask, types = batch()
    assert torch.equal(cls(ids, mask, types).logits, again(ids, mask, types).logits)


def test_load_errors(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(FileNotFoundError, match="is neither a model folder .config.json"):
        MPOBertForMaskedLM.from_pretrained(tmp_path)
    MPOBertForMaskedLM(tiny()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="stored shape .* does not match"):
        MPOBertForMaskedLM.from_pretrained(tmp_path, bond_dim=2)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["config"]["hidden_sise"] = 1
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"unknown MPOBertConfig keys \['hidden_sise'\]"):
        MPOBertForMaskedLM.from_pretrained(tmp_path)


def test_missing_keys_named(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    MPOBertForMaskedLM(tiny()).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    del tensors["bert.encoder.layer.1.key.core0"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['bert.encoder.layer.1.key.core0'\]"):
        MPOBertForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="lacks encoder keys.*layer.1.key.core0"):
        MPOBertForSequenceClassification.from_pretrained(tmp_path)
