"""tnlm-train: predict, evaluate without labels, from_pretrained of a run, overrides never
eaten by an option, one-line errors, help, core-only installs, plots and summaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import numpy as np
import pytest
import torch

from tnlm_models import MPOBertForSequenceClassification, evaluate, predict
from tnlm_models.cli import _key_table, _list_keys, _metric_value, _parse, main
from tnlm_models.data import default_corpus
from tnlm_models.testing import tiny_model_settings
from tnlm_models.tokenization import WordPieceTokenizer
from tnlm_models.train import plot_run, resolve_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = [f"model.{k}={v}" for k, v in tiny_model_settings().items()]
ROWS = ["good value\tpos", "bad error\tneg", "fine result\tpos", "raises exception\tneg"]
TEST_ROWS = ["17\tgood value", "3\tbad error here", "5\tfine", "40\traises an exception"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """A tiny classifier fine-tuned for 2 steps, its files, and a GLUE test file."""
    d = tmp_path_factory.mktemp("safety")
    docs = default_corpus()[:200]
    WordPieceTokenizer.train(docs, vocab_size=200).save(d / "tok")
    (d / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS * 3) + "\n")
    (d / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS) + "\n")
    (d / "test.tsv").write_text("index\tsentence\n" + "\n".join(TEST_ROWS) + "\n")
    (d / "corpus.txt").write_text("\n".join(docs[:50]), encoding="utf-8")
    rc = main(
        [
            "finetune",
            "--data",
            str(d / "train.tsv"),
            "--valid-data",
            str(d / "dev.tsv"),
            "--tokenizer",
            str(d / "tok"),
            "-o",
            str(d / "fine"),
            "--max-steps",
            "2",
            "-q",
            "batch_size=4",
            "max_seq_length=32",
            *TINY,
        ]
    )
    assert rc == 0
    return {
        "dir": d,
        "fine": d / "fine",
        "tok": d / "tok",
        "train": d / "train.tsv",
        "dev": d / "dev.tsv",
        "test": d / "test.tsv",
        "text": d / "corpus.txt",
    }


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("tnlm-train: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------- 1. predict
def _oracle(ckpt: Path, texts: list[str]) -> list[str]:
    """Each example alone through the model (no batching, no padding)."""
    import json

    model = MPOBertForSequenceClassification.from_pretrained(ckpt).eval()
    tok = WordPieceTokenizer.load(ckpt)
    labels = json.loads((ckpt / "trainer_state.json").read_text())["label_list"]
    out = []
    with torch.no_grad():
        for ids, types in tok.encode_batch(texts, max_length=32):
            logits = model(
                input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types])
            ).logits  # (1, num_labels)
            out.append(labels[int(logits.argmax(-1))])
    return out


def test_predict_writes_the_glue_submission_format(run, tmp_path, capsys):
    out = tmp_path / "SST-2.tsv"
    assert main(["predict", str(run["fine"]), "--data", str(run["test"]), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    rows = [ln.split("\t") for ln in lines[1:]]
    assert [r[0] for r in rows] == ["17", "3", "5", "40"]  # the file's index, input order
    ckpt = resolve_checkpoint(run["fine"], "best")
    assert [r[1] for r in rows] == _oracle(ckpt, [r.split("\t")[1] for r in TEST_ROWS])
    # the Python function, on a checkpoint folder, returns the same predictions
    assert predict(ckpt, run["test"]) == [r[1] for r in rows]
    # columns given explicitly: the GLUE header's index column is still the id
    explicit = predict(ckpt, run["test"], tmp_path / "explicit.tsv", text_a_column=1)
    assert explicit.read_text() == out.read_text()
    # a labelled dev file is read too (labels ignored, index = row number)
    dev = predict(run["fine"], run["dev"], tmp_path / "dev_pred.tsv")
    assert [ln.split("\t")[0] for ln in dev.read_text().splitlines()[1:]] == ["0", "1", "2", "3"]


@pytest.mark.parametrize(("bias", "label"), [((10.0, -10.0), "neg"), ((-10.0, 10.0), "pos")])
def test_predict_names_the_class_of_the_largest_logit(bias, label, run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(run["fine"], "best"), ckpt)
    model = MPOBertForSequenceClassification.from_pretrained(ckpt)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(ckpt)
    assert predict(ckpt, run["test"]) == [label] * len(TEST_ROWS)


def test_predict_a_regression_writes_scores(run, tmp_path):
    """STS-B style: sentence pairs, real-valued labels; the output holds the model's score."""
    pairs = ["a cat\ta dog\t1.5", "the value\tthe value\t5.0", "it fails\tall good\t0.25"]
    train_tsv = tmp_path / "train.tsv"
    train_tsv.write_text("sentence1\tsentence2\tlabel\n" + "\n".join(pairs * 4) + "\n")
    test_tsv = tmp_path / "test.tsv"
    test_tsv.write_text("index\tsentence1\tsentence2\n7\ta cat\ta dog\n8\tit fails\tall good\n")
    out = tmp_path / "run"
    argv = ["finetune", "--data", str(train_tsv), "--tokenizer", str(run["tok"]), "-o", str(out)]
    argv += ["-q", "--max-steps", "1", "regression=true", "batch_size=4", "max_seq_length=32"]
    assert main(argv + TINY) == 0
    written = predict(out, test_tsv, tmp_path / "STS-B.tsv").read_text().splitlines()
    assert written[0] == "index\tprediction" and [r.split("\t")[0] for r in written[1:]] == [
        "7",
        "8",
    ]
    ckpt = resolve_checkpoint(out, "best")
    model = MPOBertForSequenceClassification.from_pretrained(ckpt).eval()
    tok = WordPieceTokenizer.load(ckpt)
    eps = torch.finfo(torch.float32).eps
    for row, (a, b) in zip(written[1:], [("a cat", "a dog"), ("it fails", "all good")]):
        ((ids, types),) = tok.encode_batch([a], [b], max_length=32)
        with torch.no_grad():
            score = model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
        expected = float(score.logits.view(-1)[0])
        assert float(row.split("\t")[1]) == pytest.approx(expected, rel=16 * eps, abs=16 * eps)
    # evaluate reports STS-B's GLUE metrics: Pearson and Spearman (oracle: scipy.stats)
    from scipy.stats import pearsonr, spearmanr

    metrics = evaluate(out, train_tsv)
    scores = [float(np.float32(v)) for v in predict(out, train_tsv)]  # the float32 logits
    gold = [float(r.split("\t")[2]) for r in pairs * 4]
    tol = float(np.sqrt(np.finfo(np.float64).eps))
    assert metrics["pearson"] == pytest.approx(pearsonr(scores, gold)[0], abs=tol)
    assert metrics["spearman"] == pytest.approx(spearmanr(scores, gold)[0], abs=tol)


def test_a_perfect_classifier_has_mcc_exactly_one(run):
    """1 example of class 0 and 3 of class 1, all right: the MCC formula rounds to
    1.0000000000000002 (metrics.matthews_corrcoef); evaluation reports 1.0."""
    from types import SimpleNamespace

    from tnlm_models.data import ClassificationDataset
    from tnlm_models.train import TrainConfig, evaluate_model

    class Oracle(torch.nn.Module):  # reads the class off the second token
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, **kwargs):
            cls = input_ids[:, 1]  # (B,)
            return SimpleNamespace(logits=torch.nn.functional.one_hot(cls, 2).float() * 50)

    tok = WordPieceTokenizer.load(run["tok"])
    items = [
        {"input_ids": [2, y, 3], "token_type_ids": [0, 0, 0], "label": y} for y in [0, 1, 1, 1]
    ]
    cfg = TrainConfig(task="finetune", eval_batch_size=2)
    metrics = evaluate_model(Oracle(), ClassificationDataset(items, ["0", "1"]), cfg, tok)
    assert metrics["accuracy"] == 1.0 and metrics["mcc"] == 1.0


def test_regression_metrics_are_clamped_and_defined():
    from tnlm_models.train.evaluation import regression_metrics

    x = np.array([1.0, 2.0, 3.0])
    assert regression_metrics(x, 2 * x + 1) == {"pearson": 1.0, "spearman": 1.0}
    assert regression_metrics(x, np.ones(3)) == {"pearson": 0.0, "spearman": 0.0}
    assert regression_metrics(x[:1], x[:1]) == {"pearson": 0.0, "spearman": 0.0}


def test_predict_never_overwrites_without_force(run, tmp_path, capsys):
    out = tmp_path / "mine.tsv"
    out.write_text("precious\n")
    argv = ["predict", str(run["fine"]), "--data", str(run["test"]), "--out", str(out)]
    assert main(argv) == 2
    assert "exists; pass force=True (--force)" in _one_line_error(capsys)
    assert out.read_text() == "precious\n"
    with pytest.raises(FileExistsError, match="mine.tsv exists"):
        predict(run["fine"], run["test"], out)
    assert main([*argv, "--force"]) == 0
    assert out.read_text().startswith("index\tprediction\n")
    with pytest.raises(ValueError, match="is the input file"):
        predict(run["fine"], run["test"], run["test"], force=True)


def test_predict_write_is_atomic(run, tmp_path):
    """A process killed between writing and renaming leaves the old file intact."""
    out = tmp_path / "pred.tsv"
    out.write_text("old predictions\n")
    code = (
        "import sys; from tnlm_models.cli import main; "
        f"sys.exit(main(['predict', {str(run['fine'])!r}, '--data', {str(run['test'])!r}, "
        f"'--out', {str(out)!r}, '--force']))"
    )
    env = {**os.environ, "TNLM_TEST_HOOK": "predict-before-rename", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, timeout=300
    )
    assert proc.returncode == 75, proc.stderr  # stopped at the hook
    assert out.read_text() == "old predictions\n"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["pred.tsv"]


def test_predict_refuses_torchrun(run, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="predict runs in one process"):
        predict(run["fine"], run["test"])


def test_predict_needs_a_classifier(run, tmp_path):
    pre = tmp_path / "pre"
    assert (
        main(
            ["pretrain", "--data", str(run["text"]), "--tokenizer", str(run["tok"]), "-o", str(pre)]
            + ["-q", "--max-steps", "1", "batch_size=4", "max_seq_length=32", *TINY]
        )
        == 0
    )
    with pytest.raises(ValueError, match=r"masked-LM \(pretrain\) checkpoint; predict needs"):
        predict(pre, run["test"])


# ---------------------------------------------------------------------------- 2. evaluate
def test_evaluate_a_file_without_labels_points_to_predict(run, tmp_path, capsys):
    assert main(["evaluate", str(run["fine"]), "--data", str(run["test"])]) == 2
    err = _one_line_error(capsys)
    assert f"{run['test']} has no labels" in err and "tnlm-train predict" in err
    # a test file read with a training file's column numbers: the label column is 'index'
    test01 = tmp_path / "test01.tsv"
    test01.write_text("index\tsentence\n0\tgood value\n1\tbad error\n")
    argv = ["evaluate", str(run["fine"]), "--data", str(test01)]
    assert main([*argv, "text_a_column=1", "label_column=0", "has_header=true"]) == 2
    assert "has no labels" in _one_line_error(capsys)


# ---------------------------------------------------------------------------- 3. from_pretrained
def test_from_pretrained_accepts_a_run_directory(run, tmp_path):
    ckpt = resolve_checkpoint(run["fine"], "best")
    a = MPOBertForSequenceClassification.from_pretrained(run["fine"])
    b = MPOBertForSequenceClassification.from_pretrained(ckpt)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is neither a model folder"):
        MPOBertForSequenceClassification.from_pretrained(tmp_path)


def test_from_pretrained_names_a_corrupt_file(run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(run["fine"], "best"), ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors"):
        MPOBertForSequenceClassification.from_pretrained(ckpt)
    (ckpt / "config.json").write_text('{"config": {"hidden_size": 16,')
    with pytest.raises(ValueError, match=r"ckpt/config.json is not valid JSON"):
        MPOBertForSequenceClassification.from_pretrained(ckpt)


def test_cli_names_a_non_json_config(run, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(run["fine"], "best"), ckpt)
    (ckpt / "config.json").write_text("not json\n")
    assert main(["evaluate", str(ckpt), "--data", str(run["dev"])]) == 2
    err = _one_line_error(capsys)  # named, whichever check finds it first
    assert str(ckpt / "config.json") in err and ("not valid JSON" in err or "corrupt" in err)


# ---------------------------------------------------------------------------- 4. overrides
@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["pretrain", "--data", "{f}", "max_steps=52"], "data", ["{f}"]),
        (["finetune", "--valid-data", "{f}", "max_steps=52"], "valid_data", ["{f}"]),
        (["evaluate", "ckpt", "--data", "{f}", "max_steps=52"], "data", ["{f}"]),
        (["pretrain", "--resume", "max_steps=52"], "resume", True),
        (["pretrain", "--resume", "{f}", "max_steps=52"], "resume", "{f}"),
        (["predict", "ckpt", "--data", "{f}", "--out", "o.tsv", "max_steps=52"], "data", "{f}"),
        (["pretrain", "-q", "max_steps=52", "--data", "{f}"], "data", ["{f}"]),
    ],
)
def test_no_option_eats_an_override(argv, dest, value, run):
    f = str(run["train"])
    args = _parse([a.format(f=f) for a in argv])
    want = [v.format(f=f) for v in value] if isinstance(value, list) else value
    want = want.format(f=f) if isinstance(want, str) else want
    assert getattr(args, dest) == want
    assert args.overrides == ["max_steps=52"]


def test_overrides_keep_command_line_order(run):
    f = str(run["train"])
    args = _parse(["pretrain", "seed=1", "--data", f, "seed=2", "-q", "seed=3", "--set", "seed=4"])
    assert args.overrides == ["seed=1", "seed=2", "seed=3", "seed=4"]
    assert _parse(["pretrain", "--device", "cpu"]).overrides == ['device="cpu"']


def test_resume_then_override_reaches_the_config(run, tmp_path, capsys):
    out = tmp_path / "pre"
    common = ["--data", str(run["text"]), "--tokenizer", str(run["tok"]), "-o", str(out), "-q"]
    tiny = ["batch_size=4", "max_seq_length=32", *TINY]
    assert main(["pretrain", *common, "max_steps=1", *tiny]) == 0
    capsys.readouterr()
    assert main(["pretrain", *common, *tiny, "--resume", "max_steps=2"]) == 0
    assert "steps: 2 " in capsys.readouterr().out


def test_a_run_remembers_its_files_from_any_working_directory(run, tmp_path, monkeypatch):
    """Relative paths given to the CLI are saved absolute: evaluate (which reads the run's
    validation files by default) finds the same files from another folder."""
    monkeypatch.chdir(run["dir"])
    argv = ["finetune", "--data", "train.tsv", "--valid-data", "dev.tsv", "--tokenizer", "tok"]
    argv += ["-o", str(tmp_path / "run"), "-q", "--max-steps", "1", "batch_size=4"]
    assert main(argv + ["max_seq_length=32", *TINY]) == 0
    saved = (resolve_checkpoint(tmp_path / "run") / "train_config.json").read_text()
    assert str(run["dev"]) in saved and str(run["tok"]) in saved
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nanother file\tneg\n")
    assert evaluate(tmp_path / "run") == evaluate(tmp_path / "run", run["dev"])


# ---------------------------------------------------------------------------- 5. errors
def test_unusable_devices_are_one_line_errors(run, capsys):
    base = ["pretrain", "--data", str(run["text"]), "-q"]
    assert main([*base, "device=meta"]) == 2
    err = _one_line_error(capsys)
    assert "device 'meta' cannot train a model" in err and "'cpu'" in err
    assert main([*base, "--device", "meta"]) == 2
    assert "device 'meta'" in _one_line_error(capsys)
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        err = _one_line_error(capsys)
        assert "device 'cuda' requested but CUDA is not available; available: ['cpu']" in err


def test_device_names_are_checked_against_this_machine(monkeypatch):
    from tnlm_models.train.distributed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"device 'tpu' cannot train a model.*\['cpu'"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a one-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("auto") == torch.device("cuda:0")
    with pytest.raises(
        ValueError, match=r"device 'cuda:3' does not exist; available: \['cpu', 'cuda', 'cuda:0'\]"
    ):
        resolve_device("cuda:3")


def test_paths_are_checked_before_any_work(run, tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the tokenizer was trained before the paths were checked")

    monkeypatch.setattr(WordPieceTokenizer, "train", no_work)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x\n")
    base = ["pretrain", "--data", str(run["text"]), "-q"]
    assert main([*base, "-o", str(a_file)]) == 2
    assert f"{a_file} is a file, not a folder" in _one_line_error(capsys)
    assert main([*base, "-o", str(a_file / "run")]) == 2
    assert f"{a_file} is a file" in _one_line_error(capsys)
    assert main([*base, "--valid-data", str(tmp_path / "missing.txt")]) == 2
    assert "data path not found" in _one_line_error(capsys)
    assert a_file.read_text() == "x\n"


def test_bad_config_file_names_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("max_steps = 3\nbatch_size = = 4\n")
    assert main(["pretrain", "-c", str(bad)]) == 2
    err = _one_line_error(capsys)
    assert str(bad) in err and "line 2" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: 3\nbatch_size: [4\n")
    assert main(["pretrain", "-c", str(bad)]) == 2
    err = _one_line_error(capsys)
    assert str(bad) in err and "line" in err
    bad.write_text("max_steps: 3\n\nbatch_size: many\n")  # parses, but a value is wrong
    assert main(["pretrain", "-c", str(bad)]) == 2
    assert f"{bad}:3: training config key 'batch_size' must be int" in _one_line_error(capsys)


def test_argparse_errors_are_one_line(capsys):
    assert main(["pretrain", "--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in _one_line_error(capsys)
    assert main(["predict", "ckpt"]) == 2
    assert "required" in _one_line_error(capsys)


def test_real_bugs_still_raise(monkeypatch, tmp_path):
    import sys as _sys

    train_pkg = _sys.modules["tnlm_models.train"]  # the subpackage (the name is the function)

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(train_pkg, "plot_run", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["plot", str(tmp_path)])


def test_a_full_disk_is_one_line_not_a_traceback(monkeypatch, tmp_path, capsys):
    import errno

    train_pkg = sys.modules["tnlm_models.train"]

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "loss.png"))

    monkeypatch.setattr(train_pkg, "plot_run", full)
    assert main(["plot", str(tmp_path)]) == 1
    assert "No space left on device" in _one_line_error(capsys)


def test_plot_without_loss_plots_what_exists(tmp_path, capsys):
    records = [
        '{"step": 1, "split": "train", "lr": 0.1}',
        '{"step": 2, "split": "train", "lr": 0.2}',
        '{"step": 2, "split": "valid", "accuracy": 0.5}',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(records) + "\n")
    assert main(["plot", str(tmp_path)]) == 0
    out = capsys.readouterr()
    assert [Path(p).name for p in out.out.split()] == ["lr.png", "metrics.png"]
    assert "no 'loss' in the train records" in out.err
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n')
    assert main(["plot", str(tmp_path)]) == 2
    assert "nothing to plot" in _one_line_error(capsys)


def test_plot_never_replaces_a_picture_it_did_not_make(run, tmp_path, capsys):
    out = tmp_path / "pictures"
    out.mkdir()
    (out / "lr.png").write_bytes(b"\x89PNG\r\n\x1a\n a holiday photo")
    assert main(["plot", str(run["fine"]), "--out", str(out)]) == 2
    assert f"{out / 'lr.png'} exists and was not written by tnlm-train plot" in (
        _one_line_error(capsys)
    )
    assert (out / "lr.png").read_bytes().endswith(b"a holiday photo")
    assert sorted(p.name for p in out.iterdir()) == ["lr.png"]  # checked before any work
    mine = tmp_path / "mine"
    assert main(["plot", str(run["fine"]), "--out", str(mine)]) == 0
    assert main(["plot", str(run["fine"]), "--out", str(mine)]) == 0  # its own: replaced
    assert sorted(p.name for p in mine.iterdir()) == ["loss.png", "lr.png", "metrics.png"]


def test_plot_names_a_broken_metrics_line(tmp_path, capsys):
    good = '{"step": 1, "split": "train", "loss": 2.0, "lr": 0.1}'
    (tmp_path / "metrics.jsonl").write_text(f"{good}\nnot json\n{good}\n")
    assert main(["plot", str(tmp_path)]) == 2
    assert f"{tmp_path / 'metrics.jsonl'}:2: not a JSON record" in _one_line_error(capsys)
    (tmp_path / "metrics.jsonl").write_text(f"{good}\n" + good[:20])  # cut short by a crash
    assert main(["plot", str(tmp_path), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["loss.png", "lr.png"]


# ---------------------------------------------------------------------------- 6. help
@pytest.mark.parametrize("command", ["finetune", "evaluate", "predict", "plot"])
def test_each_command_has_its_own_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    wanted = {
        "finetune": ["sentence1<TAB>sentence2<TAB>label", "label_column=", "metrics.jsonl"],
        "evaluate": ["text_a_column=", "`predict`", "GLUE"],
        "predict": ["index<TAB>prediction", "--force", "best checkpoint, else its latest"],
        "plot": ["metrics.jsonl", "RUN_DIR/plots"],
    }[command]
    for text in wanted:
        assert text in " ".join(out.split()).replace("\n", " ") or text in out, text


def test_list_keys_shows_type_default_and_description(capsys):
    assert main(["pretrain", "--list-keys"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines["learning_rate"].split()[1:4] == ["float", "0.001", "Peak"]
    assert lines["learning_rate"].endswith("Peak learning rate.")
    assert "int|None" in lines["max_steps"] and "Optimizer steps" in lines["max_steps"]
    assert "Cores per MPO matrix." in lines["model.num_cores"]
    assert _list_keys() == _list_keys()
    undocumented = [k for k, _, _, desc in _key_table() if not desc]
    assert undocumented == []  # every key has a line in a config docstring


def test_version(capsys):
    from tnlm import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tnlm-train {__version__}"


# ---------------------------------------------------------------------------- 7. core only
@pytest.mark.parametrize("missing", ["torch", "safetensors"])
def test_core_only_install_names_the_extra(missing):
    code = (
        f"import sys; sys.modules[{missing!r}] = None; "
        "from tnlm_models.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "pretrain", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"needs the optional dependency {missing!r}" in proc.stderr
    assert "pip install 'tnlm[models]'" in proc.stderr
    helped = subprocess.run(
        [sys.executable, "-c", code, "predict", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and "index<TAB>prediction" in helped.stdout


# ---------------------------------------------------------------------------- 8. small
def test_plots_carry_the_run_name(run, tmp_path, monkeypatch):
    titles = []
    save = matplotlib.figure.Figure.savefig

    def spy(self, *args, **kwargs):
        titles.append(self._suptitle.get_text() if self._suptitle else "")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    written = plot_run(run["fine"], tmp_path)
    assert len(titles) == len(written) == 3
    assert all(t.startswith("fine") for t in titles), titles


def test_mcc_is_printed_clamped_and_named_as_glue_does(run, capsys):
    assert _metric_value("mcc", 1.00007) == "1.0000"
    assert _metric_value("mcc", -1.00007) == "-1.0000"
    assert _metric_value("accuracy", 0.5) == "0.5000"
    assert main(["evaluate", str(run["fine"]), "--data", str(run["dev"])]) == 0
    out = capsys.readouterr().out
    assert "Matthews corr. " in out and "Accuracy " in out and "F1 " in out
    assert out.splitlines()[0].startswith("SST-2, as GLUE reports it: Accuracy ")
