"""Trainer data safety: nothing outside a run is touched, nothing inside a run is lost.

Crashes are real: a subprocess is SIGKILLed at a named point of the trainer through the test
hook ``TNLM_TEST_KILL_AT`` (never by timing), and the test checks what it left on disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tnlm_models import MPOBertConfig, MPOBertForMaskedLM
from tnlm_models.data import default_corpus
from tnlm_models.testing import tiny_model_settings
from tnlm_models.tokenization import WordPieceTokenizer
from tnlm_models.train import checkpoint as ckpt_module
from tnlm_models.train import resolve_checkpoint, train

TINY = tiny_model_settings()
REPO = Path(__file__).resolve().parents[2]
DRIVER = """\
import json, sys
from tnlm_models.train import train
train(None, None, json.loads(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, str]:
    """A small text file and a fixed tokenizer."""
    d = tmp_path_factory.mktemp("corpus")
    docs = default_corpus()[:300]
    (d / "corpus.txt").write_text("\n".join(docs), encoding="utf-8")
    WordPieceTokenizer.train(docs, vocab_size=200).save(d / "tok")
    return {"text": str(d / "corpus.txt"), "tok": str(d / "tok")}


def base(corpus: dict[str, str], out: Path, **kw) -> dict:
    cfg = dict(
        train_data=[corpus["text"]],
        tokenizer=corpus["tok"],
        max_seq_length=32,
        batch_size=8,
        max_steps=4,
        save_every=2,
        progress=False,
        log_every=1,
        eval_batch_size=16,
        max_valid_examples=16,
        output_dir=str(out),
        model=dict(TINY),
        num_threads=1,
    )
    cfg.update(kw)
    return cfg


def run_killed_at(point: str, cfg: dict) -> None:
    """Run ``train(None, None, cfg)`` in a subprocess that SIGKILLs itself at ``point``."""
    env = {**os.environ, "TNLM_TEST_KILL_AT": point, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: file contents, None for folders."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def metric_steps(run: Path, split: str = "train") -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if r["split"] == split]


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------- 1. the index
@pytest.mark.parametrize("entry", ["../../elsewhere", "ABSOLUTE"])
def test_index_entries_outside_the_run_are_never_followed(corpus, tmp_path, entry):
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    run = tmp_path / "run"
    train(None, None, base(corpus, run, max_steps=2, save_every=1, keep_last=1))
    index_file = run / "checkpoints" / "index.json"
    index = json.loads(index_file.read_text())
    bad = str(victim) if entry == "ABSOLUTE" else entry
    index["all"] = [bad, *index["all"]]
    index_file.write_text(json.dumps(index))
    before = snapshot(victim)

    with pytest.raises(ValueError, match=r"index\.json: 'all' entry .* is not a checkpoint folder"):
        train(None, None, base(corpus, run, max_steps=4, save_every=1, keep_last=1, resume=True))
    assert snapshot(victim) == before

    index["all"] = index["all"][1:]
    index["best"] = bad
    index_file.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"'best' entry .* refusing to follow it"):
        resolve_checkpoint(run, "best")
    with pytest.raises(ValueError, match=r"'best' entry"):
        train(None, None, base(corpus, run, max_steps=4, save_every=1, keep_last=1, resume=True))
    assert snapshot(victim) == before

    index["best"], index["latest"] = None, bad
    index_file.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"'latest' entry .* delete index\.json and resume"):
        train(None, None, base(corpus, run, max_steps=4, save_every=1, keep_last=1, resume=True))
    assert snapshot(victim) == before


def test_pruning_spares_step_folders_the_trainer_did_not_write(corpus, tmp_path):
    run = tmp_path / "run"
    train(None, None, base(corpus, run, max_steps=1, save_every=1, keep_last=1))
    root = run / "checkpoints"
    mine = root / "step-00000000"  # a folder of the user's, named like a checkpoint
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    index = json.loads((root / "index.json").read_text())
    index["all"] = ["step-00000000", *index["all"]]
    (root / "index.json").write_text(json.dumps(index))
    train(None, None, base(corpus, run, max_steps=3, save_every=1, keep_last=1, resume=True))
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (root / "step-00000001").exists()  # ours: pruned as before


def test_a_run_of_an_older_version_without_markers_resumes(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    train(None, None, base(corpus, run))
    (run / "run.json").unlink()
    for marker in run.glob("checkpoints/step-*/tnlm_checkpoint.json"):
        marker.unlink()
    with pytest.raises(ValueError, match="already holds checkpoints; pass resume=True"):
        train(None, None, base(corpus, run, max_steps=6))
    with caplog.at_level(logging.WARNING, logger="tnlm_models"):
        res = train(None, None, base(corpus, run, max_steps=6, resume=True))
    assert "has no run.json (an older tnlm run); marking it as a run" in caplog.text
    assert res.step == 6 and (run / "run.json").is_file()
    # its unmarked folders are not pruned: the trainer cannot tell them from the user's
    assert (run / "checkpoints" / "step-00000002").is_dir()


# ---------------------------------------------------------------------------- 2. the folder
def test_foreign_output_dir_is_refused_and_left_byte_for_byte(corpus, tmp_path):
    out = tmp_path / "mine"
    (out / "checkpoints" / "step-00000002").mkdir(parents=True)
    (out / "checkpoints" / "step-00000002" / "data.csv").write_text("a,b\n1,2\n")
    (out / "metrics.jsonl").write_text('{"my": "own metrics"}\n')
    (out / "README").write_text("my project")
    before = snapshot(out)
    for resume in (False, True):
        with pytest.raises(
            ValueError,
            match=rf"output_dir {out} is not empty and is not a tnlm run \(no run\.json\); "
            r"nothing in it was changed\. Choose a new or empty output_dir, or the folder of an "
            r"earlier tnlm run with resume=True",
        ):
            train(None, None, base(corpus, out, resume=resume))
        assert snapshot(out) == before


@pytest.mark.slow
def test_every_process_stops_on_a_foreign_output_dir(corpus, tmp_path):
    # rank 0 alone decides about the folder; rank 1 must get its error, not wait for it.
    # Two plain processes (no torchrun, which would end rank 1 once rank 0 has failed).
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "tnlm_models", "pretrain", "--data", corpus["text"]]
    cmd += [
        "-o",
        str(out),
        f"tokenizer={json.dumps(corpus['tok'])}",
        "max_steps=2",
        "max_seq_length=32",
    ]
    cmd += [f"model.{k}={json.dumps(v)}" for k, v in TINY.items()]
    procs = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), RANK=str(rank))
        env.update(WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
        env.update(MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
            )
        )
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=180)
            assert proc.returncode == 2, err[-3000:]
            assert f"output_dir {out} is not empty and is not a tnlm run" in err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert snapshot(out) == {"notes.txt": b"mine"}


def test_run_killed_before_its_first_index_write(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    run_killed_at("checkpoint-index@2", base(corpus, run))
    root = run / "checkpoints"
    assert (root / "step-00000002").is_dir() and not (root / "index.json").exists()
    assert (run / "run.json").is_file()

    before = snapshot(run)
    with pytest.raises(ValueError, match="already holds checkpoints; pass resume=True"):
        train(None, None, base(corpus, run))
    assert snapshot(run) == before

    with caplog.at_level(logging.WARNING, logger="tnlm_models"):
        resumed = train(None, None, base(corpus, run, resume=True))
    assert "index.json is missing" in caplog.text and "rebuilding" in caplog.text
    assert resumed.step == 4
    index = json.loads((root / "index.json").read_text())
    assert index["latest"] == "step-00000004" and index["all"] == ["step-00000002", "step-00000004"]
    assert metric_steps(run) == [1, 2, 3, 4]
    straight = train(None, None, base(corpus, tmp_path / "straight"))
    a, b = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_killed_mid_checkpoint_leaves_the_previous_one(corpus, tmp_path):
    run = tmp_path / "run"
    run_killed_at("checkpoint-write@4", base(corpus, run))
    root = run / "checkpoints"
    assert json.loads((root / "index.json").read_text())["latest"] == "step-00000002"
    assert not (root / "step-00000004").exists()
    res = train(None, None, base(corpus, run, resume=True))
    assert res.step == 4 and not list(root.glob(".tmp-*"))


def test_a_run_that_stopped_before_any_checkpoint_is_not_overwritten(corpus, tmp_path):
    run = tmp_path / "run"
    run_killed_at("checkpoint-write@2", base(corpus, run))
    assert metric_steps(run) == [1, 2]
    before = snapshot(run)
    with pytest.raises(ValueError, match="stopped before its first checkpoint"):
        train(None, None, base(corpus, run))
    assert snapshot(run) == before
    with pytest.raises(FileNotFoundError, match="resume requested but no checkpoint found"):
        train(None, None, base(corpus, run, resume=True))


# ---------------------------------------------------------------------------- 3. metrics
def test_kill_while_rewriting_metrics_keeps_the_old_file(corpus, tmp_path):
    run = tmp_path / "run"
    train(None, None, base(corpus, run))
    before = (run / "metrics.jsonl").read_bytes()
    assert before
    run_killed_at("metrics-rewrite", base(corpus, run, max_steps=6, resume=True))
    assert (run / "metrics.jsonl").read_bytes() == before
    train(None, None, base(corpus, run, max_steps=6, resume=True))
    assert metric_steps(run) == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_torn_last_metrics_line_is_dropped_with_a_warning(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    run_killed_at("metrics-append@3", base(corpus, run))
    text = (run / "metrics.jsonl").read_text()
    assert not text.endswith("\n")  # killed half-way through the record of step 3
    with caplog.at_level(logging.WARNING, logger="tnlm_models"):
        res = train(None, None, base(corpus, run, resume=True))
    assert "metrics.jsonl, line 3 is incomplete" in caplog.text
    assert res.step == 4 and metric_steps(run) == [1, 2, 3, 4]


def test_non_json_metrics_line_names_file_and_line(corpus, tmp_path):
    run = tmp_path / "run"
    train(None, None, base(corpus, run))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = "garbage"
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl, line 2: not a JSON record \(Expecting"):
        train(None, None, base(corpus, run, max_steps=6, resume=True))


# ---------------------------------------------------------------------------- 4. NaN
def test_non_finite_weights_are_never_checkpointed(corpus, tmp_path):
    model = MPOBertForMaskedLM(MPOBertConfig.from_dict({**TINY, "vocab_size": 200}))
    # poison a weight after it was used: the loss of that step is still finite
    emb = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)][-1]
    calls = {"n": 0}

    def poison(module, inputs, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 4:
                module.weight.data[0, 0] = float("nan")

    emb.register_forward_hook(poison)
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite weights in \S+ at step 4; checkpoint not written\. "
        r"Last good checkpoint: \S+step-00000002",
    ):
        train(model, None, base(corpus, tmp_path / "run", max_steps=6))
    root = tmp_path / "run" / "checkpoints"
    assert json.loads((root / "index.json").read_text())["latest"] == "step-00000002"
    assert not (root / "step-00000004").exists()


# ---------------------------------------------------------------------------- 5. damage
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":  # a copy or a write cut short
        path.write_bytes(data[: len(data) // 2])
    else:  # same length, other bytes: only the file's own structure tells
        path.write_bytes(b"\x00" * len(data))


@pytest.mark.parametrize("how", ["truncate", "overwrite"])
@pytest.mark.parametrize(
    "damaged", ["model.safetensors", "optimizer.pt", "config.json", "trainer_state.json"]
)
def test_resume_falls_back_to_the_newest_intact_checkpoint(corpus, tmp_path, caplog, damaged, how):
    run = tmp_path / "run"
    train(None, None, base(corpus, run))
    bad = run / "checkpoints" / "step-00000004" / damaged
    _damage(bad, how)
    one_line = rf"^{bad} (is truncated or corrupt|is not UTF-8 text|is not valid JSON)[^\n]*$"
    with pytest.raises(ValueError, match=one_line):
        if damaged == "optimizer.pt":
            ckpt_module.load_training_state(bad.parent)
        else:
            resolve_checkpoint(run, "latest")  # what evaluate and init_from use
    with caplog.at_level(logging.WARNING, logger="tnlm_models"):
        res = train(None, None, base(corpus, run, max_steps=6, resume=True))
    assert f"checkpoint {bad.parent} is damaged and skipped: {bad}" in caplog.text
    assert f"resuming from {bad.parent.parent / 'step-00000002'}" in caplog.text
    assert res.step == 6 and metric_steps(run) == [1, 2, 3, 4, 5, 6]
    index = json.loads((run / "checkpoints" / "index.json").read_text())
    assert index["latest"] == "step-00000006"


def test_corrupt_index_is_rebuilt_on_resume_and_named_otherwise(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    train(None, None, base(corpus, run))
    index_file = run / "checkpoints" / "index.json"
    index_file.write_text('{"latest": "step-000')
    with pytest.raises(ValueError, match=rf"^{index_file} is not valid JSON \(.*truncated"):
        resolve_checkpoint(run)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train(None, None, base(corpus, run))
    with caplog.at_level(logging.WARNING, logger="tnlm_models"):
        res = train(None, None, base(corpus, run, max_steps=6, resume=True))
    assert f"rebuilding {index_file}" in caplog.text
    assert res.step == 6 and metric_steps(run) == [1, 2, 3, 4, 5, 6]


def test_a_deleted_latest_checkpoint_is_replaced_by_the_newest_left(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    train(None, None, base(corpus, run))
    root = run / "checkpoints"
    for f in (root / "step-00000004").iterdir():
        f.unlink()
    (root / "step-00000004").rmdir()
    with caplog.at_level(logging.WARNING, logger="tnlm_models"):
        res = train(None, None, base(corpus, run, max_steps=6, resume=True))
    assert "names step-00000004, which is missing" in caplog.text
    assert f"resuming from {root / 'step-00000002'}" in caplog.text
    assert res.step == 6 and metric_steps(run) == [1, 2, 3, 4, 5, 6]


def test_full_disk_names_the_file_and_leaves_nothing_half_written(corpus, tmp_path, monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *a, **k):  # writes a part, then the disk is full
        with open(f, "ab") if isinstance(f, str | os.PathLike) else contextlib.nullcontext(f) as fh:
            fh.write(b"PK\x03\x04 half an archive")
            fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    run = tmp_path / "run"
    train(None, None, base(corpus, run, max_steps=2))
    before = snapshot(run / "checkpoints")
    monkeypatch.setattr(ckpt_module.torch, "save", full_disk)
    target = run / "checkpoints" / "step-00000004" / "optimizer.pt"
    with pytest.raises(OSError, match=rf"no space left on device while writing: '{target}'"):
        train(None, None, base(corpus, run, resume=True))
    assert snapshot(run / "checkpoints") == before
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    assert train(None, None, base(corpus, run, resume=True)).step == 4


def test_weights_written_short_without_an_error_are_caught(corpus, tmp_path, monkeypatch):
    # safetensors' Rust writer drops the error of its last buffered write (a full disk)
    import safetensors.torch

    real = safetensors.torch.save_file

    def silently_short(tensors, filename, *a, **k):
        real(tensors, filename, *a, **k)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) - 100])

    run = tmp_path / "run"
    train(None, None, base(corpus, run, max_steps=2))
    before = snapshot(run / "checkpoints")
    monkeypatch.setattr(safetensors.torch, "save_file", silently_short)
    target = run / "checkpoints" / "step-00000004" / "model.safetensors"
    with pytest.raises(OSError, match=rf"written incompletely \(is the disk full\?\): '{target}'"):
        train(None, None, base(corpus, run, resume=True))
    assert snapshot(run / "checkpoints") == before


def test_full_disk_while_logging_names_metrics_file(corpus, tmp_path, monkeypatch):
    from tnlm_models.train import runs as runs_module

    real_open = open

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def full_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return FullDisk(fh) if "a" in mode else fh

    monkeypatch.setattr(runs_module, "open", full_open, raising=False)
    run = tmp_path / "run"
    with pytest.raises(
        OSError, match=rf"no space left on device while writing: '{run / 'metrics.jsonl'}'"
    ):
        train(None, None, base(corpus, run))


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path):
    target = tmp_path / "index.json"
    target.write_text("old")

    def half_then_full(fh):
        fh.write(b"new, but only ha")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=rf"no space left on device while writing: '{target}'"):
        ckpt_module.write_atomic(target, half_then_full)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]


# ---------------------------------------------------------------------------- 6. small
def test_model_file_has_the_permissions_of_the_other_files(corpus, tmp_path):
    old = os.umask(0o027)
    try:
        res = train(None, None, base(corpus, tmp_path / "run", max_steps=1))
    finally:
        os.umask(old)
    ckpt = res.checkpoint
    assert ckpt is not None
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in ckpt.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o640, modes


def test_log_lines_do_not_tear_the_progress_bar(corpus, tmp_path, capsys):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("LOG %(message)s"))
    root, pkg = logging.getLogger(), logging.getLogger("tnlm_models")
    root.addHandler(handler)
    level = pkg.level
    pkg.setLevel(logging.INFO)
    try:
        train(None, None, base(corpus, tmp_path / "run", progress=True, eval_every=1))
    finally:
        root.removeHandler(handler)
        pkg.setLevel(level)
    err = capsys.readouterr().err
    logs = [i for i in range(len(err)) if err.startswith("LOG step", i)]
    assert len(logs) >= 4
    # each log line starts a line of its own: no half-drawn bar before it
    assert all(err[i - 1] in "\r\n" for i in logs), [err[max(0, i - 60) : i + 20] for i in logs]


# ------------------------------------------------------------ a failed set-up leaves nothing
def test_a_run_that_fails_in_set_up_leaves_no_run_folder(corpus, tmp_path):
    """An error found after the folder was marked (a bad model setting, no fine-tuning data)
    takes the mark back: no empty run folders pile up under runs/."""
    out = tmp_path / "runs" / "new-run"
    bad_model = dict(TINY, num_cores=40)
    with pytest.raises(ValueError, match="num_cores=40"):
        train(None, None, base(corpus, out, model=bad_model))
    assert not (tmp_path / "runs").exists()
    no_data = base(corpus, out, task="finetune")
    del no_data["train_data"]
    with pytest.raises(ValueError, match="train_data"):
        train(None, None, no_data)
    assert not (tmp_path / "runs").exists()
    # a folder the user made stays, empty, and a rerun with a good setting then works in it
    out.mkdir(parents=True)
    with pytest.raises(ValueError, match="num_cores=40"):
        train(None, None, base(corpus, out, model=bad_model))
    assert out.is_dir() and not any(out.iterdir())
    result = train(None, None, base(corpus, out, max_steps=2))
    assert result.step == 2 and (out / "run.json").is_file()
