"""Trainer: exact resume, pre-train -> fine-tune, checkpoints, bad input, schedule, optimizer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tnlm_models import MPOBertConfig, MPOBertForMaskedLM
from tnlm_models.data import default_corpus
from tnlm_models.testing import tiny_model_settings
from tnlm_models.tokenization import WordPieceTokenizer
from tnlm_models.train import (
    TrainConfig,
    evaluate,
    load_config,
    lr_factor,
    parameter_groups,
    plot_run,
    resolve_checkpoint,
    train,
)
from tnlm_models.train import checkpoint as ckpt_module

TINY = tiny_model_settings()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    """A small text file, a fixed tokenizer, and GLUE-style TSV files."""
    d = tmp_path_factory.mktemp("corpus")
    docs = default_corpus()[:300]
    (d / "corpus.txt").write_text("\n".join(docs), encoding="utf-8")
    WordPieceTokenizer.train(docs, vocab_size=200).save(d / "tok")
    pos = ["a good and fine statement", "the best value is true", "it works well"]
    neg = ["a bad error was raised", "the worst exception", "it fails badly"]
    rows = [f"{s}\t1" for s in pos] + [f"{s}\t0" for s in neg]
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 4) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return {
        k: str(d / v)
        for k, v in {
            "text": "corpus.txt",
            "tok": "tok",
            "train": "train.tsv",
            "dev": "dev.tsv",
        }.items()
    }


def base(corpus: dict[str, str], tmp_path: Path, **kw) -> dict:
    cfg = dict(
        train_data=[corpus["text"]],
        tokenizer=corpus["tok"],
        max_seq_length=32,
        batch_size=8,
        max_steps=6,
        progress=False,
        log_every=2,
        eval_batch_size=16,
        max_valid_examples=16,
        output_dir=str(tmp_path / "run"),
        model=dict(TINY),
    )
    cfg.update(kw)
    return cfg


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- resume
def test_interrupted_and_resumed_run_ends_bit_identical(corpus, tmp_path):
    kw = dict(
        save_every=3,
        gradient_accumulation_steps=2,
        max_steps=6,
        warmup_steps=2,
        lr_schedule="cosine",
        learning_rate=3e-3,
    )
    straight = train(None, None, base(corpus, tmp_path / "a", **kw))

    def interrupt(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(None, None, base(corpus, tmp_path / "b", **kw), callbacks=[interrupt])
    index = json.loads((tmp_path / "b/run/checkpoints/index.json").read_text())
    assert index["latest"] == "step-00000003"
    torch.manual_seed(1234)  # the global RNG state must come from the checkpoint
    resumed = train(None, None, base(corpus, tmp_path / "b", resume=True, **kw))
    assert resumed.step == straight.step == 6
    a, b = _state(straight.model), _state(resumed.model)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # dropout was active, so equality needed the restored RNG state
    assert straight.model.config.hidden_dropout_prob > 0
    lines = (tmp_path / "b/run/metrics.jsonl").read_text().splitlines()
    steps = [json.loads(ln)["step"] for ln in lines if json.loads(ln)["split"] == "train"]
    assert steps == [2, 4, 6]  # records after the checkpoint were dropped on resume


def test_resume_without_checkpoint_and_overwrite_guard(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="resume requested but no checkpoint found"):
        train(None, None, base(corpus, tmp_path, resume=True))
    train(None, None, base(corpus, tmp_path, max_steps=1))
    with pytest.raises(ValueError, match="already holds checkpoints; pass resume=True"):
        train(None, None, base(corpus, tmp_path, max_steps=1))


# ---------------------------------------------------------------------------- end to end
def test_pretrain_then_finetune_then_evaluate(corpus, tmp_path):
    pre = train(None, None, base(corpus, tmp_path / "pre", max_steps=4))
    assert set(pre.metrics) == {"loss", "perplexity", "accuracy"}
    assert pre.metrics["perplexity"] == pytest.approx(math.exp(pre.metrics["loss"]))
    ck = pre.checkpoint
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "vocab.txt",
        "train_config.json",
        "trainer_state.json",
        "optimizer.pt",
    ):
        assert (ck / name).is_file(), name
    assert evaluate(pre.run_dir) == pytest.approx(pre.metrics)

    train_copy = tmp_path / "train.tsv"
    train_copy.write_text(Path(corpus["train"]).read_text())
    fine = train(
        str(pre.run_dir),
        {"train": str(train_copy), "valid": corpus["dev"]},
        dict(
            task="finetune",
            max_steps=6,
            batch_size=4,
            learning_rate=5e-3,
            progress=False,
            max_seq_length=32,
            output_dir=str(tmp_path / "fine"),
            eval_every=3,
        ),
    )
    assert set(fine.metrics) == {"loss", "accuracy", "f1", "mcc"}
    # the encoder came from the pre-trained checkpoint, the tokenizer too
    assert fine.tokenizer.vocab_size == pre.tokenizer.vocab_size
    assert fine.model.config.hidden_size == 16
    train_copy.unlink()  # evaluation needs neither the training file nor re-reading it
    assert evaluate(fine.run_dir, corpus["dev"]) == pytest.approx(fine.metrics)
    records = [json.loads(ln) for ln in (fine.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6]
    pngs = plot_run(fine.run_dir)
    assert [p.name for p in pngs] == ["loss.png", "lr.png", "metrics.png"]
    assert all(p.stat().st_size > 1000 for p in pngs)


def test_finetune_learns_a_separable_task(corpus, tmp_path):
    res = train(
        MPOBertConfig.from_dict({**TINY, "vocab_size": 200, "hidden_dropout_prob": 0.0}),
        {"train": corpus["train"], "valid": corpus["dev"]},
        dict(
            task="finetune",
            tokenizer=corpus["tok"],
            max_steps=40,
            batch_size=8,
            learning_rate=1e-2,
            progress=False,
            max_seq_length=32,
            output_dir=str(tmp_path / "f"),
        ),
    )
    assert res.metrics["accuracy"] == 1.0 and res.metrics["mcc"] == pytest.approx(1.0)


def test_keep_last_and_best(corpus, tmp_path):
    res = train(
        None, None, base(corpus, tmp_path, max_steps=5, save_every=1, eval_every=1, keep_last=2)
    )
    root = res.run_dir / "checkpoints"
    index = json.loads((root / "index.json").read_text())
    kept = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert index["latest"] == "step-00000005"
    assert kept == sorted({"step-00000004", "step-00000005", index["best"]})
    metrics = [json.loads(ln) for ln in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = {r["step"]: r["loss"] for r in metrics if r["split"] == "valid"}
    assert index["best"] == f"step-{min(valid, key=valid.get):08d}"
    assert resolve_checkpoint(res.run_dir, "best") == root / index["best"]


def test_interrupted_save_keeps_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_module.torch, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        train(None, None, base(corpus, tmp_path, max_steps=4, save_every=2))
    root = tmp_path / "run" / "checkpoints"
    index = json.loads((root / "index.json").read_text())
    assert index["latest"] == "step-00000002" and index["all"] == ["step-00000002"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "step-00000002"
    ]
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    res = train(None, None, base(corpus, tmp_path, max_steps=4, save_every=2, resume=True))
    assert res.step == 4 and not list(root.glob(".tmp-*"))


def test_non_finite_loss_stops_with_clear_error(corpus, tmp_path):
    model = MPOBertForMaskedLM(MPOBertConfig.from_dict({**TINY, "vocab_size": 200}))
    calls = {"n": 0}
    emb = next(m for m in model.modules() if isinstance(m, torch.nn.Embedding))

    def poison(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 3 else output

    emb.register_forward_hook(poison)
    before = None
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite training loss \(nan\).* step 4.*"
        r"Last good checkpoint: .*step-00000002",
    ):
        train(model, None, base(corpus, tmp_path, save_every=2))
    root = tmp_path / "run" / "checkpoints"
    assert json.loads((root / "index.json").read_text())["latest"] == "step-00000002"
    before = MPOBertForMaskedLM.from_pretrained(root / "step-00000002")
    assert all(torch.isfinite(p).all() for p in before.parameters())


def test_bf16_autocast_on_cpu(corpus, tmp_path):
    res = train(None, None, base(corpus, tmp_path, precision="bf16", max_steps=2))
    assert math.isfinite(res.train_loss)
    assert next(res.model.parameters()).dtype == torch.float32  # master weights stay fp32


# ---------------------------------------------------------------------------- bad input
def test_sequence_longer_than_positions(corpus, tmp_path):
    with pytest.raises(
        ValueError, match="max_seq_length=64 exceeds the model's max_position_embeddings=32"
    ):
        train(None, None, base(corpus, tmp_path, max_seq_length=64))


def test_checkpoint_from_another_model_shape(corpus, tmp_path):
    train(None, None, base(corpus, tmp_path, max_steps=2))
    other = MPOBertForMaskedLM(
        MPOBertConfig.from_dict(
            {**TINY, "hidden_size": 32, "intermediate_size": 64, "vocab_size": 200}
        )
    )
    with pytest.raises(ValueError, match=r"another shape \(hidden_size: checkpoint 16 vs model 32"):
        train(other, None, base(corpus, tmp_path, max_steps=4, resume=True))


def test_missing_and_empty_data(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="data path not found"):
        train(None, str(tmp_path / "nope.txt"), base(corpus, tmp_path))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="data files are empty"):
        train(None, str(empty), base(corpus, tmp_path))
    with pytest.raises(ValueError, match="fine-tuning needs train_data"):
        train(None, None, base(corpus, tmp_path, task="finetune", train_data=[]))


def test_labels_outside_label_set_and_malformed_rows(corpus, tmp_path):
    bad = tmp_path / "dev.tsv"
    bad.write_text("sentence\tlabel\nfine\t1\nodd\t2\n")
    with pytest.raises(ValueError, match=r"dev.tsv:3: label '2' is outside the label set"):
        train(
            None,
            {"train": corpus["train"], "valid": str(bad)},
            base(corpus, tmp_path, task="finetune", train_data=[]),
        )
    broken = tmp_path / "broken.tsv"
    broken.write_text("sentence\tlabel\nfine\t1\nno label here\n")
    with pytest.raises(ValueError, match=r"broken.tsv:3: malformed row"):
        train(None, str(broken), base(corpus, tmp_path, task="finetune"))


def test_more_bad_configuration(corpus, tmp_path):
    with pytest.raises(ValueError, match="not divisible by gradient_accumulation_steps"):
        TrainConfig(batch_size=6, gradient_accumulation_steps=4)
    with pytest.raises(ValueError, match="fewer than one batch"):
        train(None, None, base(corpus, tmp_path, batch_size=4096))
    with pytest.raises(TypeError, match="model_or_config must be"):
        train(3.5, None, base(corpus, tmp_path))
    with pytest.raises(ValueError, match=r"unknown data keys \['test'\]"):
        train(None, {"test": "x"}, base(corpus, tmp_path))


# ---------------------------------------------------------------------------- config
def test_config_validation_messages(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"unknown training config key\(s\) \['lr'\]; valid keys "
        r"are: task, output_dir",
    ):
        TrainConfig.from_dict({"lr": 1e-3})
    with pytest.raises(TypeError, match="'batch_size' must be int, got str '32'"):
        TrainConfig(batch_size="32")
    with pytest.raises(TypeError, match="'learning_rate' must be float, got bool"):
        TrainConfig(learning_rate=True)
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['linear', 'cosine', "):
        TrainConfig(lr_schedule="step")
    assert TrainConfig(learning_rate=1).learning_rate == 1.0
    assert TrainConfig(train_data="a.txt", valid_data=[tmp_path]).train_data == ["a.txt"]
    assert TrainConfig(valid_data=[tmp_path]).valid_data == [str(tmp_path)]
    with pytest.raises(TypeError, match="'no_decay' must be list"):
        TrainConfig(no_decay="bias")
    f = tmp_path / "c.toml"
    f.write_text('max_steps = "ten"\n')
    with pytest.raises(
        TypeError,
        match=r"c.toml:1: training config key 'max_steps' must be int or "
        r"None, got str",
    ):
        load_config(f)
    y = tmp_path / "c.yaml"
    y.write_text("max_steps: 5\nmodel:\n  hidden_size: 32\n")
    cfg = load_config(y, ["learning_rate=2e-3", "model.num_hidden_layers=3", "run_name=x"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.run_name) == (5, 2e-3, "x")
    assert cfg.model == {"hidden_size": 32, "num_hidden_layers": 3}
    with pytest.raises(ValueError, match="config file must end in .toml, .yaml or .yml"):
        (tmp_path / "c.json").write_text("{}")
        load_config(tmp_path / "c.json")
    with pytest.raises(ValueError, match="an override must look like key=value"):
        load_config(None, ["max_steps"])


# ---------------------------------------------------------------------------- schedule, optimizer
def test_lr_schedule_shapes():
    assert [lr_factor(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]
    assert lr_factor(2, 10, 2) == 1.0 and lr_factor(10, 10, 2) == 0.0
    assert lr_factor(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(4, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(10, 10, 0, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'"):
        lr_factor(0, 10, 0, "step")


def test_parameter_groups_policy():
    model = MPOBertForMaskedLM(MPOBertConfig.from_dict({**TINY, "vocab_size": 100}))
    groups = parameter_groups(model, 0.01, ["bias", "LayerNorm", "norm"], central_lr_factor=0.5)
    central = {id(p) for p in model.central_core_parameters()}
    assert central
    seen = set()
    for g in groups:
        for name, p in zip(g["names"], g["params"]):
            seen.add(id(p))
            assert (id(p) in central) == g["central"]
            assert g["lr_scale"] == (0.5 if g["central"] else 1.0)
            if name.endswith("bias") or p.ndim < 2:
                assert g["weight_decay"] == 0.0, name
    assert seen == {id(p) for p in model.parameters()}
    assert sum(p.numel() for g in groups for p in g["params"]) == model.num_parameters(unique=True)


@pytest.mark.slow
def test_real_sst2_finetune_smoke(tmp_path, shared_data):
    res = train(
        MPOBertConfig.from_dict({**TINY, "max_position_embeddings": 64}),
        {
            "train": str(shared_data / "glue/SST-2/dev.tsv"),
            "valid": str(shared_data / "glue/SST-2/dev.tsv"),
        },
        dict(
            task="finetune",
            tokenizer=str(shared_data / "bert-base-uncased/vocab.txt"),
            max_steps=3,
            batch_size=8,
            max_seq_length=64,
            progress=False,
            max_valid_examples=64,
            output_dir=str(tmp_path / "sst"),
        ),
    )
    assert res.model.config.vocab_size == 30522
    assert set(res.metrics) == {"loss", "accuracy", "f1", "mcc"}


def test_dataloader_workers_do_not_change_the_result(corpus, tmp_path):
    kw = dict(max_steps=2, log_every=0)
    a = train(None, None, base(corpus, tmp_path / "w0", num_workers=0, **kw))
    b = train(None, None, base(corpus, tmp_path / "w2", num_workers=2, **kw))
    sa, sb = _state(a.model), _state(b.model)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.train_loss == b.train_loss
    assert not (a.run_dir / "metrics.jsonl").exists() or all(
        json.loads(ln)["split"] == "valid"
        for ln in (a.run_dir / "metrics.jsonl").read_text().splitlines()
    )


def test_init_from_checks_shape_and_applies_other_model_fields(corpus, tmp_path):
    pre = train(None, None, base(corpus, tmp_path / "pre", max_steps=1))
    fine = dict(
        task="finetune",
        train_data=[corpus["train"]],
        max_steps=1,
        batch_size=4,
        progress=False,
        max_seq_length=32,
        init_from=str(pre.run_dir),
    )
    with pytest.raises(ValueError, match=r"another shape \(hidden_size: checkpoint 16 vs model 32"):
        train(None, None, dict(fine, model={"hidden_size": 32}, output_dir=str(tmp_path / "x")))
    res = train(
        None,
        None,
        dict(
            fine,
            model={"hidden_dropout_prob": 0.0, "hidden_size": 16},
            output_dir=str(tmp_path / "y"),
        ),
    )
    assert res.model.config.hidden_dropout_prob == 0.0 and res.model.config.num_labels == 2


def test_log_layer_grad_norms_adds_one_norm_per_layer_to_logged_records(corpus, tmp_path):
    seen: list[dict] = []
    cfg = base(corpus, tmp_path, max_steps=4, log_layer_grad_norms=True)
    cfg["model"] = {**cfg["model"], "num_hidden_layers": 3}
    train(None, None, cfg, callbacks=[seen.append])
    logged = [r for r in seen if r["step"] % 2 == 0]
    assert [r["step"] for r in logged] == [2, 4]
    for r in logged:
        norms = r["layer_grad_norms"]
        assert len(norms) == 3 and all(math.isfinite(x) and x > 0 for x in norms)
    assert all("layer_grad_norms" not in r for r in seen if r["step"] % 2)
    # and they reach metrics.jsonl
    lines = (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert sum("layer_grad_norms" in json.loads(line) for line in lines) == 2
    off: list[dict] = []
    train(None, None, base(corpus, tmp_path / "off", max_steps=2), callbacks=[off.append])
    assert all("layer_grad_norms" not in r for r in off)
