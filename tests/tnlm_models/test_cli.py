"""tnlm-train command line: pretrain -> finetune -> evaluate -> plot, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tnlm_models.cli import main
from tnlm_models.data import default_corpus
from tnlm_models.tokenization import WordPieceTokenizer

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.hidden_size=16",
    "model.num_hidden_layers=2",
    "model.num_attention_heads=2",
    "model.intermediate_size=32",
    "model.max_position_embeddings=32",
    "model.num_cores=2",
    "model.adapter_size=2",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    docs = default_corpus()[:200]
    (d / "corpus.txt").write_text("\n".join(docs), encoding="utf-8")
    WordPieceTokenizer.train(docs, vocab_size=200).save(d / "tok")
    rows = ["good value\t1", "bad error\t0", "fine result\t1", "raises exception\t0"] * 3
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:4]) + "\n")
    (d / "pre.toml").write_text(
        "max_steps = 3\nbatch_size = 8\nmax_seq_length = 32\nmax_valid_examples = 8\n"
        "[model]\n" + "\n".join(t.removeprefix("model.") for t in TINY) + "\n"
    )
    return {
        "dir": d,
        "text": d / "corpus.txt",
        "tok": d / "tok",
        "train": d / "train.tsv",
        "dev": d / "dev.tsv",
        "toml": d / "pre.toml",
    }


def test_pretrain_finetune_evaluate_plot(files, tmp_path, capsys):
    pre = tmp_path / "pre"
    rc = main(
        [
            "pretrain",
            "-c",
            str(files["toml"]),
            "--tokenizer",
            str(files["tok"]),
            "-o",
            str(pre),
            "-q",
            "--data",
            str(files["text"]),
            "learning_rate=2e-3",  # after --data: still an override
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "pre-trained MPOBertForMaskedLM: 2 layers, hidden 16" in out
    assert "steps: 3 (batch 8, 1 process(es))" in out and f"run dir: {pre}" in out
    saved = json.loads((pre / "checkpoints/step-00000003/train_config.json").read_text())
    assert saved["learning_rate"] == 2e-3 and saved["model"]["hidden_size"] == 16

    fine = tmp_path / "fine"
    rc = main(
        [
            "finetune",
            "--init-from",
            str(pre),
            "--data",
            str(files["train"]),
            "--valid-data",
            str(files["dev"]),
            "-o",
            str(fine),
            "--max-steps",
            "2",
            "-q",
            "batch_size=4",
            "max_seq_length=32",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "fine-tuned MPOBertForSequenceClassification" in out
    assert "valid Matthews corr." in out

    assert main(["evaluate", str(fine), "--data", str(files["dev"]), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"loss", "accuracy", "f1", "mcc"}

    assert main(["plot", str(fine), "--out", str(tmp_path / "png")]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["loss.png", "lr.png", "metrics.png"]

    # resume a finished run: nothing left to do, same checkpoint
    rc = main(
        [
            "pretrain",
            "-c",
            str(files["toml"]),
            "--data",
            str(files["text"]),
            "-o",
            str(pre),
            "-q",
            "--resume",
        ]
    )
    assert rc == 0 and "steps: 3" in capsys.readouterr().out


def test_cli_errors_are_clear(files, tmp_path, capsys):
    assert main(["pretrain", "lr=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown training config key(s) ['lr']; valid keys are: task, output_dir" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: many\n")
    assert main(["pretrain", "-c", str(bad)]) == 2
    assert "training config key 'batch_size' must be int, got str 'many'" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(tmp_path / "none.txt"), "-q"]) == 2
    assert "data path not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "neither a checkpoint" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main(["pretrain", "--list-keys"]) == 0
    keys = capsys.readouterr().out.split()
    assert "central_lr_factor" in keys and "model" in keys


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "tnlm_models", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0 and "pretrain" in proc.stdout and "finetune" in proc.stdout
