"""Two CPU processes under torchrun (gloo) give the single-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tnlm_models import MPOBertForMaskedLM
from tnlm_models.data import default_corpus
from tnlm_models.testing import tiny_model_settings
from tnlm_models.tokenization import WordPieceTokenizer
from tnlm_models.train import train

# dropout streams differ per process; nothing else may
TINY = tiny_model_settings(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    docs = default_corpus()[:300]
    (tmp_path / "corpus.txt").write_text("\n".join(docs), encoding="utf-8")
    WordPieceTokenizer.train(docs, vocab_size=200).save(tmp_path / "tok")
    settings = {
        "tokenizer": str(tmp_path / "tok"),
        "max_seq_length": 32,
        "batch_size": 8,
        "gradient_accumulation_steps": 2,
        "max_steps": 4,
        "max_valid_examples": 16,
        "progress": False,
        "log_every": 1,
    }
    one = train(
        None,
        str(tmp_path / "corpus.txt"),
        dict(settings, model=TINY, output_dir=str(tmp_path / "one")),
    )

    overrides = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
    overrides += [f"model.{k}={json.dumps(v)}" for k, v in TINY.items()]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tnlm_models",
        "pretrain",
        "--data",
        str(tmp_path / "corpus.txt"),
        "-o",
        str(tmp_path / "two"),
        *overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout

    two = MPOBertForMaskedLM.from_pretrained(tmp_path / "two/checkpoints/step-00000004")
    a = dict(one.model.named_parameters())
    b = dict(two.named_parameters())
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].detach(), b[k], rtol=1e-5, atol=1e-6, msg=k)
    # rank 0 alone logged: one record per step, losses equal within tolerance
    recs = [json.loads(ln) for ln in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    assert [r["step"] for r in train_recs] == [1, 2, 3, 4]
    ref = [json.loads(ln) for ln in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    ref_loss = [r["loss"] for r in ref if r["split"] == "train"]
    assert [r["loss"] for r in train_recs] == pytest.approx(ref_loss, rel=1e-5)
