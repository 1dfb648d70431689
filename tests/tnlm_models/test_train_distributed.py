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
DRIVER = """\
import os
import sys
from pathlib import Path

from tnlm_models.cli import main

rc = main(sys.argv[1:])
tasks = Path("/proc/self/task")
if tasks.is_dir():
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()]
    left = [n for n in names if "gloo" in n]
    print(f"rank {os.environ['RANK']}: gloo threads left: {len(left)}", flush=True)
raise SystemExit(rc)
"""


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

    # the command line of `python -m tnlm_models`, then a count of the communication threads
    # still running once training has returned (Linux: /proc/self/task)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    overrides = [f"{k}={json.dumps(v)}" for k, v in settings.items()]
    overrides += [f"model.{k}={json.dumps(v)}" for k, v in TINY.items()]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(driver),
        "pretrain",
        "--data",
        str(tmp_path / "corpus.txt"),
        "-o",
        str(tmp_path / "two"),
        *overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), PYTHONFAULTHANDLER="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 process(es)" in proc.stdout
    # the process group was really destroyed: no gloo thread outlives the run (a group kept
    # alive is destructed during interpreter shutdown, where it can abort the process)
    if Path("/proc/self/task").is_dir():
        for rank in (0, 1):
            assert f"rank {rank}: gloo threads left: 0" in proc.stdout, proc.stdout[-2000:]

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


def _one_process_group(tmp_path):
    """A real gloo group of one process, owned by the returned DistEnv."""
    import torch.distributed as dist

    from tnlm_models.train.distributed import DistEnv

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    return DistEnv(0, 1, 0, torch.device("cpu"), owns_group=True)


def test_close_destroys_the_group_after_a_normal_end(tmp_path):
    import torch.distributed as dist

    env = _one_process_group(tmp_path)
    env.close()
    assert not dist.is_initialized()
    assert not env.owns_group
    env.close()  # a second close is a no-op


def test_close_after_an_error_leaves_the_group_to_the_launcher(tmp_path):
    import torch.distributed as dist

    env = _one_process_group(tmp_path)
    try:
        env.close(clean=False)
        assert dist.is_initialized()  # no barrier, no destructor that could wait on a peer
        assert not env.owns_group
        env.close()  # and it does not destroy it later either: it no longer owns it
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
