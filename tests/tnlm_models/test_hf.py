"""MPOBERT inside transformers: Auto classes, shared tensors stored once and re-tied,
pipelines on a trained checkpoint, the transformers Trainer, bad folders."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5.0")

import tnlm_models  # noqa: E402  (registers "mpobert" with transformers' auto classes)
from tnlm_models import (  # noqa: E402
    MPOBertForMaskedLM,
    MPOBertForSequenceClassification,
    MPOBertModel,
)
from tnlm_models.data import default_corpus  # noqa: E402
from tnlm_models.testing import random_batch, tiny_config, tiny_model_settings  # noqa: E402
from tnlm_models.tokenization import WordPieceTokenizer  # noqa: E402
from tnlm_models.train import train  # noqa: E402

AUTO = {
    "AutoModel": MPOBertModel,
    "AutoModelForMaskedLM": MPOBertForMaskedLM,
    "AutoModelForSequenceClassification": MPOBertForSequenceClassification,
}


@pytest.fixture(autouse=True)
def _quiet():
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _hf():
    import tnlm_models.hf as hf

    return hf


def _logits(model, batch):
    ids, mask, types = batch
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _stored_keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        return list(fh.keys())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder``."""
    return {
        str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns)
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def _assert_shared(model, layers: int):
    enc = model.mpobert_model.encoder_module()
    for name, central in enc.central.items():
        assert all(getattr(enc.layer[i], name).central is central for i in range(layers))


# ---------------------------------------------------------------------------- registration
def test_import_registers_lazily_without_importing_transformers():
    code = (
        "import sys, time; t = time.perf_counter(); import tnlm_models; "
        "dt = time.perf_counter() - t; "
        "assert 'transformers' not in sys.modules and 'tnlm_models.hf' not in sys.modules; "
        "from transformers import AutoConfig; "
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING; "
        "import transformers.models.auto.configuration_auto as m; "
        "assert m.__loader__.get_source(m.__name__); "
        "assert not any('_Finder' in type(f).__name__ for f in sys.meta_path); "
        "print(CONFIG_MAPPING['mpobert'].__name__, round(dt, 2))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split()[0] == "MPOBertHFConfig"


def test_import_without_transformers_registers_nothing():
    code = (
        "import sys; sys.modules['transformers'] = None; import tnlm_models; "
        "assert 'tnlm_models.hf' not in sys.modules; print(tnlm_models.MPOBertConfig.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "MPOBertConfig"


# ---------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("auto_name", sorted(AUTO))
def test_auto_classes_load_project_and_hf_folders(tmp_path, auto_name):
    torch.manual_seed(0)
    project_cls = AUTO[auto_name]
    model = project_cls(tiny_config()).eval()
    model.save_pretrained(tmp_path / "project")
    batch = random_batch()
    ref = _logits(model, batch)
    auto = getattr(transformers, auto_name)

    loaded = auto.from_pretrained(tmp_path / "project")
    assert type(loaded.mpobert_model) is project_cls
    assert (_logits(loaded, batch) - ref).abs().max() <= 1e-6
    loaded.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["model_type"] == "mpobert"

    again = auto.from_pretrained(tmp_path / "hf")
    assert (_logits(again, batch) - ref).abs().max() <= 1e-6
    assert again.mpobert_model.num_parameters() == model.num_parameters()
    assert sum(p.numel() for p in again.parameters()) == model.num_parameters()
    _assert_shared(again, 3)
    # one copy of each shared tensor, under the project's names
    keys = _stored_keys(tmp_path / "hf")
    assert sorted(keys) == sorted(n for n, _ in model.unique_named_parameters())
    assert not any(".central" in k and ".layer." in k for k in keys)


def test_loading_ties_the_central_tensors_without_rebuilding_matrices(tmp_path, monkeypatch):
    """transformers re-ties shared tensors on load; our ties sit inside MPOLinear layers, whose
    (deprecated) ``weight`` rebuilds the matrix: loading must never touch it."""
    from tnlm_models import MPOLinear

    torch.manual_seed(0)
    tiny_model = AUTO["AutoModelForMaskedLM"](tiny_config())
    tiny_model.save_pretrained(tmp_path)
    rebuilds: list[int] = []
    real = MPOLinear.rebuild_weight
    monkeypatch.setattr(MPOLinear, "rebuild_weight", lambda self: rebuilds.append(1) or real(self))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
        loaded.tie_weights()
    assert rebuilds == []
    _assert_shared(loaded, 3)


@pytest.mark.parametrize("sharing", ["all", "none"])
def test_other_sharing_modes_round_trip(tmp_path, sharing):
    hf = _hf()
    torch.manual_seed(4)
    config = hf.MPOBertHFConfig.from_mpobert_config(tiny_config(sharing=sharing))
    model = hf.MPOBertHFForMaskedLM(config).eval()
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(_logits(loaded, random_batch()), _logits(model, random_batch()))
    assert loaded.num_parameters() == model.mpobert_model.num_parameters()


def test_hf_layout_folder_keeps_one_parameter_and_one_gradient(tmp_path):
    hf = _hf()
    torch.manual_seed(1)
    config = hf.MPOBertHFConfig.from_mpobert_config(tiny_config())
    model = transformers.AutoModelForMaskedLM.from_config(config)
    assert isinstance(model, hf.MPOBertHFForMaskedLM)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    enc = loaded.bert.encoder
    a, b = enc.layer[0].query.central, enc.layer[2].query.central
    assert a is b is enc.central["query"] and a.data_ptr() == b.data_ptr()
    ids, mask, types = random_batch()
    loaded(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    grads = [p.grad for p in loaded.parameters() if p.grad is not None]
    assert len(grads) == len(list(loaded.parameters()))  # each parameter once, with a gradient
    assert enc.central["query"].grad is not None
    # the bare encoder from the masked-LM folder (transformers strips the "bert." prefix)
    encoder = transformers.AutoModel.from_pretrained(tmp_path)
    with torch.no_grad():
        ref = loaded.mpobert_model.bert(ids, mask).last_hidden_state
        assert torch.equal(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, ref)


def test_checkpoint_without_model_type_loads_through_the_auto_classes(tmp_path):
    hf = _hf()
    torch.manual_seed(2)
    model = MPOBertForMaskedLM(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    del raw["model_type"]  # as written before tnlm_models.hf
    (tmp_path / "config.json").write_text(json.dumps(raw))
    before = _snapshot(tmp_path)
    ref = _logits(model, random_batch())
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, hf.MPOBertHFConfig) and config.to_mpobert_config() == tiny_config()
    for loaded in (
        hf.MPOBertHFForMaskedLM.from_pretrained(tmp_path),
        transformers.AutoModelForMaskedLM.from_pretrained(tmp_path),
    ):
        assert torch.equal(_logits(loaded, random_batch()), ref)
        _assert_shared(loaded, 3)
    assert _snapshot(tmp_path) == before  # read, never written


def test_config_reader_is_wrapped_once_and_leaves_other_folders_alone(tmp_path):
    hf = _hf()
    hf.register()  # again: idempotent
    reader = transformers.PretrainedConfig._get_config_dict.__func__
    assert reader.reads_project_folders
    assert not getattr(reader.__wrapped__, "reads_project_folders", False)
    bert = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1)
    bert.save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert type(transformers.AutoConfig.from_pretrained(tmp_path)) is transformers.BertConfig
    assert json.loads((tmp_path / "config.json").read_text()) == raw


# ---------------------------------------------------------------------------- trained checkpoint
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny pre-trained run and a fine-tuned one (the project's trainer)."""
    d = tmp_path_factory.mktemp("trained")
    docs = default_corpus()[:200]
    (d / "corpus.txt").write_text("\n".join(docs), encoding="utf-8")
    WordPieceTokenizer.train(docs, vocab_size=200).save(d / "tok")
    pre = train(
        None,
        None,
        dict(
            train_data=[str(d / "corpus.txt")],
            tokenizer=str(d / "tok"),
            max_seq_length=32,
            batch_size=8,
            max_steps=4,
            progress=False,
            eval_batch_size=16,
            max_valid_examples=16,
            output_dir=str(d / "pre"),
            model=tiny_model_settings(),
        ),
    )
    rows = ["a good and fine statement\t1", "it works well\t1", "a bad error\t0", "it fails\t0"]
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 3) + "\n")
    fine = train(
        str(pre.run_dir),
        {"train": str(d / "train.tsv"), "valid": str(d / "train.tsv")},
        dict(
            task="finetune",
            max_steps=3,
            batch_size=4,
            progress=False,
            max_seq_length=32,
            output_dir=str(d / "fine"),
        ),
    )
    return {"pre": Path(pre.checkpoint), "fine": Path(fine.checkpoint), "data": d}


@pytest.mark.parametrize("kind", ["pre", "fine"])
def test_auto_classes_load_a_run_folder(trained, kind):
    hf = _hf()
    run = trained[kind].parent.parent
    assert (run / "checkpoints").is_dir() and not (run / "config.json").exists()
    before = _snapshot(run)
    project_classes = [MPOBertModel]
    project_classes.append(
        MPOBertForMaskedLM if kind == "pre" else MPOBertForSequenceClassification
    )
    batch = random_batch(vocab_size=200)
    config = transformers.AutoConfig.from_pretrained(run)
    assert isinstance(config, hf.MPOBertHFConfig)
    assert config.to_mpobert_config() == MPOBertModel.from_pretrained(run).config
    for project_cls in project_classes:
        auto_name = next(name for name, cls in AUTO.items() if cls is project_cls)
        loaded = getattr(transformers, auto_name).from_pretrained(run)
        assert type(loaded.mpobert_model) is project_cls
        ref = project_cls.from_pretrained(run).eval()  # the project's own loader
        assert torch.equal(_logits(loaded, batch), _logits(ref, batch))
        assert sum(p.numel() for p in loaded.parameters()) == ref.num_parameters()
        _assert_shared(loaded, 2)
    tok = transformers.AutoTokenizer.from_pretrained(run)
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert (
        tok("the cat")["input_ids"] == WordPieceTokenizer.load(trained[kind]).encode("the cat")[0]
    )
    assert _snapshot(run) == before  # nothing written into the run


def test_pipelines_take_a_run_folder(trained):
    fill = transformers.pipeline("fill-mask", model=str(trained["pre"].parent.parent))
    out = fill("the [MASK] is here", top_k=2)
    assert len(out) == 2 and {"score", "token", "token_str", "sequence"} <= set(out[0])
    clf = transformers.pipeline("text-classification", model=str(trained["fine"].parent.parent))
    res = clf(["a good statement", "a bad error"])
    assert all(r["label"] in ("0", "1") and 0.5 <= r["score"] <= 1 for r in res)


def test_run_folder_without_a_checkpoint_index_names_what_is_missing(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for load in (
        transformers.AutoConfig.from_pretrained,
        transformers.AutoModelForMaskedLM.from_pretrained,
        transformers.AutoTokenizer.from_pretrained,
    ):
        with pytest.raises(FileNotFoundError, match="nor a run directory with checkpoints/index"):
            load(tmp_path)


def test_run_folder_loads_through_the_helper_and_the_wrapper(trained):
    hf = _hf()
    run = trained["pre"].parent.parent
    assert hf.model_folder(run) == trained["pre"]
    ref = _logits(MPOBertForMaskedLM.from_pretrained(run).eval(), random_batch(vocab_size=200))
    via_helper = transformers.AutoModelForMaskedLM.from_pretrained(hf.model_folder(run))
    direct = hf.MPOBertHFForMaskedLM.from_pretrained(run)
    for model in (via_helper, direct):
        assert torch.equal(_logits(model, random_batch(vocab_size=200)), ref)


def test_checkpoint_tokenizer_loads_as_fast_tokenizer(trained, tmp_path):
    hf = _hf()
    tok = transformers.AutoTokenizer.from_pretrained(trained["pre"])
    assert isinstance(tok, transformers.PreTrainedTokenizerFast)
    assert tok.mask_token == "[MASK]" and tok.pad_token == "[PAD]"
    project = WordPieceTokenizer.load(trained["pre"])
    assert tok("the cat")["input_ids"] == project.encode("the cat")[0]
    helper = hf.load_tokenizer(trained["pre"].parent.parent)  # a run folder
    assert helper("the cat")["input_ids"] == project.encode("the cat")[0]
    assert helper.model_max_length == 32
    # the HF save path writes tokenizer_config.json; AutoTokenizer reads it back
    model = transformers.AutoModelForMaskedLM.from_pretrained(trained["pre"])
    model.save_pretrained(tmp_path)
    helper.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer_config.json").is_file()
    again = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert again("the cat")["input_ids"] == project.encode("the cat")[0]


def test_fill_mask_and_text_classification_pipelines(trained):
    fill = transformers.pipeline(
        "fill-mask",
        model=transformers.AutoModelForMaskedLM.from_pretrained(trained["pre"]),
        tokenizer=transformers.AutoTokenizer.from_pretrained(trained["pre"]),
    )
    out = fill("the [MASK] is here", top_k=3)
    assert len(out) == 3
    assert {"score", "token", "token_str", "sequence"} <= set(out[0])
    assert all(0 <= r["score"] <= 1 for r in out)
    assert out[0]["score"] >= out[1]["score"] >= out[2]["score"]

    # by path: the pipeline's own Auto classes load the model and the tokenizer
    clf = transformers.pipeline("text-classification", model=str(trained["fine"]))
    res = clf(["a good statement", "a bad error"])
    assert len(res) == 2 and all(set(r) == {"label", "score"} for r in res)
    # the classes are named after the fine-tuning labels (trainer_state.json)
    assert all(r["label"] in ("0", "1") and 0.5 <= r["score"] <= 1 for r in res)
    # an MLM checkpoint loads into the classifier (encoder kept, head initialised)
    fresh = transformers.AutoModelForSequenceClassification.from_pretrained(
        trained["pre"], num_labels=3, dtype=torch.float64
    )
    assert fresh.config.num_labels == 3 and fresh.classifier.weight.dtype == torch.float64
    pre = MPOBertForMaskedLM.from_pretrained(trained["pre"])
    assert torch.equal(
        fresh.bert.encoder.central["query"].float(), pre.bert.encoder.central["query"]
    )


# ---------------------------------------------------------------------------- HF Trainer
class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, torch.Tensor]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.rows[i]


def _trainer_losses(model, rows, out_dir: Path) -> list[float]:
    args = transformers.TrainingArguments(
        output_dir=str(out_dir),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        dataloader_num_workers=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Rows(rows))
    trainer.train()
    return [r["loss"] for r in trainer.state.log_history if "loss" in r]


@pytest.mark.parametrize("task", ["mlm", "classification"])
def test_hf_trainer_lowers_the_loss_and_keeps_sharing(tmp_path, task):
    # transformers.Trainer needs accelerate (transformers[torch])
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    hf = _hf()
    torch.manual_seed(3)
    config = hf.MPOBertHFConfig.from_mpobert_config(tiny_config(num_labels=2))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 97, (4, 12), generator=g)
    if task == "mlm":
        model = hf.MPOBertHFForMaskedLM(config)
        rows = [{"input_ids": ids[i], "labels": ids[i]} for i in range(4)]
    else:
        model = hf.MPOBertHFForSequenceClassification(config)
        rows = [{"input_ids": ids[i], "labels": torch.tensor(i % 2)} for i in range(4)]
    losses = _trainer_losses(model, rows, tmp_path / "out")
    assert len(losses) == 8 and losses[-1] < losses[0]
    _assert_shared(model, 3)
    model.save_pretrained(tmp_path / "saved")
    auto = getattr(
        transformers,
        "AutoModelForMaskedLM" if task == "mlm" else "AutoModelForSequenceClassification",
    )
    loaded = auto.from_pretrained(tmp_path / "saved")
    _assert_shared(loaded, 3)
    batch = random_batch()
    assert (_logits(loaded, batch) - _logits(model.eval(), batch)).abs().max() <= 1e-6


def test_hf_trainer_checkpoint_resumes_exactly_with_sharing(tmp_path):
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    hf = _hf()
    ids = torch.randint(5, 97, (4, 12), generator=torch.Generator().manual_seed(0))
    rows = [{"input_ids": ids[i], "labels": ids[i]} for i in range(4)]

    def run(resume: str | None):
        torch.manual_seed(0)
        model = hf.MPOBertHFForMaskedLM(hf.MPOBertHFConfig.from_mpobert_config(tiny_config()))
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=4,
            per_device_train_batch_size=4,
            learning_rate=3e-3,
            save_strategy="steps",
            save_steps=2,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        transformers.Trainer(model=model, args=args, train_dataset=_Rows(rows)).train(
            resume_from_checkpoint=resume
        )
        return model

    straight = run(None)
    resumed = run(str(tmp_path / "checkpoint-2"))  # Trainer's own save and load
    _assert_shared(resumed, 3)
    assert all(torch.equal(a, b) for a, b in zip(straight.parameters(), resumed.parameters()))


# ---------------------------------------------------------------------------- PEFT
def test_peft_lora_on_the_dense_layers_trains_saves_and_merges(tmp_path):
    peft = pytest.importorskip("peft", reason="LoRA through PEFT needs peft (the hf extra)")
    hf = _hf()
    torch.manual_seed(5)
    # query/key/value/attention_output are MPO; intermediate and output stay dense nn.Linear
    cfg = tiny_config(mpo_matrices=("query", "key", "value", "attention_output"))
    hf.MPOBertHFForSequenceClassification(
        hf.MPOBertHFConfig.from_mpobert_config(cfg)
    ).save_pretrained(tmp_path / "base")
    base = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base")
    ids, mask, types = random_batch()
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    with torch.no_grad():
        ref = base(**inputs).logits
    central = {k: v.detach().clone() for k, v in base.bert.encoder.central.items()}
    n_params = base.mpobert_model.num_parameters()
    head = base.classifier.weight.detach().clone()

    lora = peft.LoraConfig(
        task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["intermediate", "output", "pooler"]
    )
    model = peft.get_peft_model(base, lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or ".classifier." in n for n in trainable)
    assert any("bert.pooler.lora_A" in n for n in trainable)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, ref)  # LoRA's B starts at zero
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([0, 1, 0])
    losses = []
    for _ in range(8):
        loss = model(**inputs, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    # the MPO encoder is frozen and still shared
    enc = base.bert.encoder
    assert all(torch.equal(enc.central[k], v) for k, v in central.items())
    assert all(enc.layer[i].query.central is enc.central["query"] for i in range(3))
    model.eval()
    with torch.no_grad():
        tuned = model(**inputs).logits
    assert not torch.equal(tuned, ref)
    # PEFT's trainable copy of the classifier is the one the project model's forward runs
    assert base.mpobert_model.classifier is base.classifier
    assert not torch.equal(base.classifier.modules_to_save["default"].weight, head)

    model.save_pretrained(tmp_path / "adapter")
    # merging LoRA into a weight reorders float32 sums through 3 layers
    tol = 100 * torch.finfo(torch.float32).eps * max(1.0, tuned.abs().max().item())
    # the adapter folder names the base folder: the auto class loads both
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        assert (again(**inputs).logits - tuned).abs().max() <= tol
    reloaded = peft.PeftModel.from_pretrained(
        transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "base"),
        tmp_path / "adapter",
    ).eval()
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, hf.MPOBertHFForSequenceClassification)
    assert merged.mpobert_model.num_parameters() == n_params  # LoRA folded into the dense
    assert not torch.equal(merged.classifier.weight, head)
    with torch.no_grad():
        assert (merged(**inputs).logits - tuned).abs().max() <= tol
    # LoRA takes nn.Linear layers; an MPO layer is refused by PEFT itself
    with pytest.raises(ValueError, match="Target module MPOLinear.* is not supported"):
        peft.get_peft_model(
            hf.MPOBertHFForSequenceClassification(hf.MPOBertHFConfig.from_mpobert_config(cfg)),
            peft.LoraConfig(task_type="SEQ_CLS", target_modules=["query"]),
        )


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A saved tiny dense ``BertForMaskedLM`` (model_type "bert")."""
    d = tmp_path_factory.mktemp("bert")
    bert = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    transformers.BertForMaskedLM(bert).save_pretrained(d)
    return d


@pytest.mark.parametrize(
    "name", ["MPOBertHFModel", "MPOBertHFForMaskedLM", "MPOBertHFForSequenceClassification"]
)
def test_folder_of_another_model_type_is_refused(bert_folder, name):
    hf = _hf()
    cls = getattr(hf, name)
    with pytest.raises(ValueError, match="model_type 'bert', expected 'mpobert'"):
        cls.from_pretrained(bert_folder)
    # also when a config is given (the folder's weights would be silently ignored)
    config = hf.MPOBertHFConfig.from_mpobert_config(tiny_config(vocab_size=50))
    with pytest.raises(ValueError, match="model_type 'bert', expected 'mpobert'"):
        cls.from_pretrained(bert_folder, config=config)


def test_folder_of_another_model_type_through_config_and_project_loader(bert_folder):
    hf = _hf()
    with pytest.raises(ValueError, match="model_type 'bert', expected 'mpobert'"):
        hf.MPOBertHFConfig.from_pretrained(bert_folder)
    with pytest.raises(ValueError, match="is not an MPO BERT config"):
        MPOBertForMaskedLM.from_pretrained(bert_folder)
    # the auto classes read it as the dense BERT it is
    assert type(transformers.AutoModelForMaskedLM.from_pretrained(bert_folder)).__name__ == (
        "BertForMaskedLM"
    )


def _edit_config(folder: Path, **changes) -> None:
    """Change settings in a ``config.json`` (flat, or the project's ``{"config": ...}``)."""
    raw = json.loads((folder / "config.json").read_text())
    (raw["config"] if "format_version" in raw else raw).update(changes)
    (folder / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("layout", ["project", "hf"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_cores": 2}, r"has shape \(4, 4, 4, 16\).*num_cores=2.*gives \(16, 8, 8, 1\)"),
        ({"bond_dim": 2}, r"has shape \(4, 4, 4, 16\).*bond_dim=2.*gives \(2, 4, 4, 2\)"),
        ({"num_hidden_layers": 4}, r"num_hidden_layers=4.*: 34 missing \['encoder.layer.3"),
        ({"num_hidden_layers": 2}, r"0 missing \[\], 34 unexpected \['bert.encoder.layer.2"),
        ({"sharing": "none"}, r"sharing='none'.*18 missing.*6 unexpected \['bert.encoder.cen"),
        ({"mpo_matrices": ["query"]}, r"mpo_matrices=\['query'\]\) gives: 15 missing"),
        ({"adapter_size": 3}, r"adapter_down has shape \(2, 32\).*adapter_size=3"),
        ({"hidden_size": 16}, r"embeddings.norm.bias has shape \(32,\).*hidden_size=16"),
    ],
)
def test_config_that_does_not_match_the_weights_is_refused(tmp_path, layout, changes, message):
    hf = _hf()
    if layout == "project":
        MPOBertForMaskedLM(tiny_config()).save_pretrained(tmp_path)
    else:
        config = hf.MPOBertHFConfig.from_mpobert_config(tiny_config())
        hf.MPOBertHFForMaskedLM(config).save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    full = message + ".*the config does not match the weights"
    for load in (
        transformers.AutoModelForMaskedLM.from_pretrained,
        transformers.AutoModelForSequenceClassification.from_pretrained,
        hf.MPOBertHFForMaskedLM.from_pretrained,
    ):
        with pytest.raises(ValueError, match=full):
            load(tmp_path)


def test_sharded_folder_is_checked_and_loads(tmp_path):
    hf = _hf()
    torch.manual_seed(6)
    model = hf.MPOBertHFForMaskedLM(hf.MPOBertHFConfig.from_mpobert_config(tiny_config())).eval()
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    loaded = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert torch.equal(_logits(loaded, random_batch()), _logits(model, random_batch()))
    _assert_shared(loaded, 3)
    _edit_config(tmp_path, num_hidden_layers=2)
    with pytest.raises(
        ValueError, match=r"index.json: the stored encoder tensors .* 34 unexpected"
    ):
        transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(ValueError, match="has no 'weight_map' object; expected a shard index"):
        transformers.AutoModelForMaskedLM.from_pretrained(tmp_path)


def test_settings_that_do_not_match_the_weights_are_refused(tmp_path):
    hf = _hf()
    config = hf.MPOBertHFConfig.from_mpobert_config(tiny_config())
    MPOBertForMaskedLM(tiny_config()).save_pretrained(tmp_path / "project")
    with pytest.raises(ValueError, match=r"num_cores=2.*the config does not match the weights"):
        transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "project", num_cores=2)
    with pytest.raises(ValueError, match=r"bond_dim=2.*the config does not match the weights"):
        hf.MPOBertHFForMaskedLM.from_pretrained(
            tmp_path / "project",
            config=hf.MPOBertHFConfig.from_mpobert_config(tiny_config(bond_dim=2)),
        )
    with pytest.raises(ValueError, match="unknown sharing mode 'layers'"):
        hf.MPOBertHFConfig(sharing="layers")
    with pytest.raises(TypeError, match="config must be an MPOBertHFConfig, got BertConfig"):
        hf.MPOBertHFForMaskedLM(transformers.BertConfig())
    with pytest.raises(ValueError, match="differs from config.to_mpobert_config"):
        hf.MPOBertHFForMaskedLM(config, model=MPOBertForMaskedLM(tiny_config(bond_dim=2)))
    with pytest.raises(TypeError, match="model must be a MPOBertForMaskedLM, got MPOBertModel"):
        hf.MPOBertHFForMaskedLM(config, model=MPOBertModel(tiny_config()))


def test_unsupported_forward_arguments_are_refused():
    hf = _hf()
    model = hf.MPOBertHFForMaskedLM(hf.MPOBertHFConfig.from_mpobert_config(tiny_config()))
    ids = random_batch()[0]
    # None (as transformers and PEFT pass them) is accepted
    assert model(input_ids=ids, inputs_embeds=None, output_attentions=False).logits.ndim == 3
    with pytest.raises(ValueError, match="inputs_embeds is not supported"):
        model(input_ids=ids, inputs_embeds=torch.zeros(3, 11, 32))
    with pytest.raises(ValueError, match="output_attentions must be None or False"):
        model(input_ids=ids, output_attentions=True)


def test_module_examples_run():
    import doctest

    result = doctest.testmod(_hf(), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted >= 1 and result.failed == 0


def test_config_converts_both_ways():
    hf = _hf()
    cfg = tiny_config(bond_dim=4, mpo_matrices=("query", "output"), num_labels=3)
    hf_cfg = hf.MPOBertHFConfig.from_mpobert_config(cfg)
    assert hf_cfg.num_labels == 3 and hf_cfg.to_mpobert_config() == cfg
    assert hf.MPOBertHFConfig.from_dict(hf_cfg.to_dict()).to_mpobert_config() == cfg
    assert set(hf._SHARED_FIELDS) | {"num_labels"} == set(cfg.to_dict())
    assert tnlm_models.MPOBertConfig is type(cfg)
