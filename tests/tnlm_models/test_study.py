"""The study runner (tnlm_models.study) and the trainer's ``freeze`` setting."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tnlm_models import MPOBertConfig, MPOBertForMaskedLM, train
from tnlm_models.cli import main
from tnlm_models.study import build_arms, count_parameters, finetune_modes, get_preset
from tnlm_models.study.report import PLOTS, STABILITY_PLOTS, write_report
from tnlm_models.study.runner import (
    CURVE_KEY,
    RESULTS_FILE,
    read_results,
    run_study,
    task_spec,
)
from tnlm_models.train.config import TrainConfig

WORDS = "the a film plot actor scene story music light dark good bad long short new old".split()


def _text(path: Path, n: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(n)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sst(folder: Path, seed: int = 0) -> Path:
    """A GLUE SST-2-style folder (sentence, label) with a separable label."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", 64), ("dev.tsv", 24)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            y = rng.randint(0, 1)
            word = rng.choice(["good", "new", "light"] if y else ["bad", "old", "dark"])
            rows.append(f"the film was {word} and the {rng.choice(WORDS)}\t{y}")
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------- freeze
def _tiny(**kw: Any) -> MPOBertForMaskedLM:
    cfg = MPOBertConfig(
        vocab_size=200,
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        num_hidden_layers=2,
        max_position_embeddings=32,
        num_cores=2,
        adapter_size=2,
        **kw,
    )
    torch.manual_seed(0)
    model = MPOBertForMaskedLM(cfg)
    model.init_weights(torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        if "adapter" in name:  # zero at init: give them a value so that gradients reach all
            torch.nn.init.normal_(p, std=0.02)
    return model


def test_freeze_central_keeps_central_tensors_and_embeddings(tmp_path: Path) -> None:
    data = _text(tmp_path / "t.txt")
    model = _tiny()
    before = {n: p.detach().clone() for n, p in model.unique_named_parameters()}
    result = train(
        model,
        str(data),
        max_steps=3,
        batch_size=4,
        max_seq_length=32,
        freeze="central",
        output_dir=str(tmp_path / "run"),
        progress=False,
        vocab_size=200,
        device="cpu",
        num_threads=1,
    )
    frozen_parts = ("central", "word_embeddings", "position_embeddings", "token_type_embeddings")
    changed = []
    for name, p in result.model.unique_named_parameters():
        same = torch.equal(p.detach().cpu(), before[name])
        if any(s in name for s in frozen_parts):
            assert same, f"{name} changed under freeze='central'"
            assert not p.requires_grad
        else:
            changed.append(not same)
    assert any("central" in n for n in before)
    assert changed and all(changed), "every trainable tensor should move in 3 AdamW steps"
    assert 0 < result.num_trainable_parameters < result.num_parameters


def test_freeze_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="freeze must be one of"):
        TrainConfig(freeze="adapters")
    with pytest.raises(TypeError, match="'freeze' must be str"):
        TrainConfig(freeze=True)  # type: ignore[arg-type]
    dense = _tiny(mpo_matrices=(), sharing="none")
    with pytest.raises(ValueError, match="freeze='central' needs a model with central tensors"):
        train(
            dense,
            str(_text(tmp_path / "t.txt")),
            max_steps=1,
            batch_size=4,
            max_seq_length=32,
            freeze="central",
            output_dir=str(tmp_path / "run"),
            progress=False,
            device="cpu",
        )


# ---------------------------------------------------------------------------- arms
def test_smoke_arms_are_matched_within_five_percent() -> None:
    preset = get_preset("smoke")
    arms = build_arms(preset)
    names = [a.name for a in arms]
    assert [a.family for a in arms] == ["dense", "albert", "mpo", "mpo", "mpo", "mpo"]
    deep = max(preset.mpo_depths)
    assert f"albert-L{deep}" in names and f"mpo-L{deep}-noad" in names
    for arm in arms:
        assert abs(arm.non_embedding_parameters - arm.budget) <= 0.05 * arm.budget, arm
        assert count_parameters(arm.model) == (arm.unique_parameters, arm.non_embedding_parameters)
    by_name = {a.name: a for a in arms}
    assert by_name[f"mpo-L{deep}-noad"].model["adapter_size"] == 0
    assert by_name[f"albert-L{deep}"].model["sharing"] == "all"
    assert by_name[f"albert-L{deep}"].depth == deep
    assert all(by_name[f"mpo-L{d}"].model["adapter_size"] > 0 for d in preset.mpo_depths)


def test_preset_and_arm_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown study preset 'huge'; expected one of smoke"):
        get_preset("huge")
    with pytest.raises(TypeError, match="preset must be a name or a Preset, got int"):
        get_preset(3)  # type: ignore[arg-type]
    arm = build_arms("smoke")[0]  # dense: no central tensors
    with pytest.raises(ValueError, match="fine-tuning mode 'central' does not apply"):
        arm.finetune_config(get_preset("smoke"), "central", 0)
    tight = get_preset("smoke")
    import dataclasses

    with pytest.raises(ValueError, match="no shape within 5% of the budget of 10 non-embedding"):
        build_arms(dataclasses.replace(tight, budget=10))


def test_task_folder_and_run_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="task folder .*nope does not exist"):
        task_spec(tmp_path / "nope")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.tsv").write_text("sentence\tlabel\nok\t1\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="has no dev.tsv or dev_matched.tsv"):
        task_spec(tmp_path / "t")
    cola = tmp_path / "CoLA"
    cola.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (cola / name).write_text("src\t1\t\tit works\nsrc\t0\t*\tworks it\n", encoding="utf-8")
    spec = task_spec(cola)
    assert (spec.layout, spec.metrics) == ("cola", ("mcc",))
    with pytest.raises(ValueError, match="seeds must be >= 1, got 0"):
        run_study("smoke", tmp_path / "s", seeds=0)
    with pytest.raises(TypeError, match="seeds must be an int, got str '2'"):
        run_study("smoke", tmp_path / "s", seeds="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['bert'\]"):
        run_study("smoke", tmp_path / "s", arms=["bert"])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n", encoding="utf-8")
    with pytest.raises(ValueError, match="is not empty and holds no study.json"):
        run_study("smoke", mine, arms=[])
    assert sorted(p.name for p in mine.iterdir()) == ["report.md"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text('{"preset": "cpu"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="holds a study of preset 'cpu', not 'smoke'"):
        run_study("smoke", other, arms=[])


# ---------------------------------------------------------------------------- end to end
class _Stop(Exception):
    pass


def test_smoke_study_end_to_end_skips_and_resumes(tmp_path: Path) -> None:
    text = _text(tmp_path / "corpus.txt", n=200)
    valid = _text(tmp_path / "valid.txt", n=30, seed=1)
    task = _sst(tmp_path / "SST-2")
    out = tmp_path / "study"
    kwargs: dict[str, Any] = {
        "pretrain_data": [text],
        "valid_data": [valid],
        "tasks": [task],
        "device": "cpu",
    }

    # 1. interrupted in the first arm's pre-training after its step-3 checkpoint
    def stop(record: dict[str, Any]) -> None:
        if record["step"] == 4:
            raise _Stop

    with pytest.raises(_Stop):
        run_study("smoke", out, callbacks=[stop], **kwargs)
    first = out / "dense-L2" / "pretrain"
    assert (first / "checkpoints" / "step-00000003").is_dir()
    # only the first arm's learning-rate grid (two 2-step runs) finished
    grid = [r for r in read_results(out) if r.get("status") == "done"]
    assert [(r["arm"], r["phase"], r["learning_rate"]) for r in grid] == [
        ("dense-L2", "lr-grid", 1e-3),
        ("dense-L2", "lr-grid", 2e-3),
    ]

    # 2. the next sitting resumes it at step 4 and runs every other arm
    steps: list[int] = []
    records = run_study("smoke", out, callbacks=[lambda r: steps.append(r["step"])], **kwargs)
    assert steps[:3] == [4, 5, 6]  # dense-L2 pretrain resumed, not restarted
    arms = build_arms("smoke")
    done = [r for r in records if r.get("status") == "done"]
    smoke = get_preset("smoke")
    grid = smoke.lr_grid
    expected_runs = sum(len(grid) + 1 + (2 if a.family == "mpo" else 1) for a in arms)
    stability = len(smoke.stability_depths) * len(smoke.stability_schemes)
    stability *= len(smoke.stability_learning_rates)
    ablations = stability + len(smoke.central_lr_factors) + 1 + len(smoke.init_methods)
    assert len(done) == expected_runs + ablations
    assert {r["phase"] for r in done} == {
        "lr-grid",
        "pretrain",
        "finetune",
        "stability",
        "central-lr",
        "init",
    }
    metrics = [r for r in records if "value" in r]
    assert metrics and all(math.isfinite(r["value"]) for r in metrics)
    for arm in arms:
        pre = [r for r in metrics if r["arm"] == arm.name and r["phase"] == "pretrain"]
        assert {r["metric"] for r in pre} == {"loss", "accuracy"}
        # pre-training ran at the grid's best rate (lowest validation loss)
        tried = [r for r in metrics if r["arm"] == arm.name and r["phase"] == "lr-grid"]
        assert sorted(r["learning_rate"] for r in tried) == sorted(grid)
        best = min(tried, key=lambda r: (r["value"], r["learning_rate"]))
        assert pre[0]["learning_rate"] == best["learning_rate"]
        assert pre[0]["tokens"] > 0 and pre[0]["wall_s"] > 0 and pre[0]["cpu_s"] > 0
        assert (
            math.isfinite(pre[0]["train_flops_per_token"]) and pre[0]["train_flops_per_token"] > 0
        )
        # the trained vocabulary may be smaller than the preset's (the MLM bias shrinks)
        assert abs(pre[0]["non_embedding_parameters"] - arm.budget) <= 0.05 * arm.budget
        fine = [r for r in metrics if r["arm"] == arm.name and r["phase"] == "finetune"]
        assert {r["mode"] for r in fine} == ({"full", "central"} if arm.has_central else {"full"})
        for r in fine:
            assert r["metric"] == "accuracy"
            if r["mode"] == "central":
                assert r["trainable_parameters"] < r["unique_parameters"]
            else:
                assert r["trainable_parameters"] == r["unique_parameters"]
            assert Path(r["run_dir"]).name == f"SST-2-{r['mode']}-s0"
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Pre-training" in report and "## Fine-tuning: SST-2, accuracy" in report
    for title in (
        "## Learning-rate grid",
        "## Stability from scratch",
        "## Central-tensor learning rate",
        "## Initialisation from a pre-trained",
    ):
        assert title in report
    stab = report.split("## Stability from scratch")[1].split("##")[0]
    rows = [
        line for line in stab.splitlines() if line.startswith("| 3 ") or line.startswith("| 6 ")
    ]
    assert len(rows) == stability and all("| - |" not in line for line in rows)  # norms logged
    for name in PLOTS + STABILITY_PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for line in (out / RESULTS_FILE).read_text(encoding="utf-8").splitlines():
        json.loads(line)

    # 3. a third sitting trains nothing
    before = (out / RESULTS_FILE).read_bytes()
    mtime = (first / "metrics.jsonl").stat().st_mtime_ns
    calls: list[int] = []
    again = run_study("smoke", out, callbacks=[lambda r: calls.append(r["step"])], **kwargs)
    assert calls == []
    assert (out / RESULTS_FILE).read_bytes() == before
    assert (first / "metrics.jsonl").stat().st_mtime_ns == mtime
    assert len(again) == len(records)

    # 4. results.jsonl alone rebuilds the report: curves included, run folders not needed
    curves = [r for r in records if CURVE_KEY in r]
    assert len(curves) == len(done)  # one curve record per finished run
    pre_curve = next(
        r[CURVE_KEY] for r in curves if r["arm"] == "dense-L2" and r["phase"] == "pretrain"
    )
    assert pre_curve["valid_tokens"][-1] == next(
        r["tokens"] for r in metrics if r["arm"] == "dense-L2" and r["phase"] == "pretrain"
    )
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (RESULTS_FILE, "study.json"):
        shutil.copy(out / name, copy / name)
    gone = out.rename(tmp_path / "moved")  # the records' run folders no longer exist
    write_report(copy)
    rebuilt = (copy / "report.md").read_text(encoding="utf-8")
    assert rebuilt.split("\n")[1:] == report.split("\n")[1:]  # all but the title (folder name)
    for name in PLOTS + STABILITY_PLOTS:
        assert (copy / name).read_bytes() == (gone / name).read_bytes()


def test_cli_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "--preset", "tiny", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown --preset 'tiny'" in err
    assert main(["study", "--preset", "smoke", "--out", str(tmp_path / "s"), "--seeds", "0"]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    bad = ["study", "--preset", "smoke", "--out", str(tmp_path / "s"), "--task", "missing"]
    assert main(bad) == 2
    assert "task folder missing does not exist" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_cli_study_runs_on_the_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    (data / "tinyshakespeare").mkdir(parents=True)
    _text(data / "tinyshakespeare" / "input.txt", n=200)
    _sst(data / "glue" / "SST-2")
    monkeypatch.setenv("TNLM_DATA", str(data))
    out = tmp_path / "study"
    assert main(["study", "--preset", "smoke", "--out", str(out), "--device", "cpu", "-q"]) == 0
    runs = sorted(p.name for p in (out / "mpo-L3").iterdir())
    assert runs == ["SST-2-central-s0", "SST-2-full-s0", "lr-grid", "pretrain"]
    assert (out / "report.md").is_file()
    # the default corpora are the data folder's texts and the built-in one
    builtin = out / "builtin-corpus.txt"
    assert builtin.read_text(encoding="utf-8").count("\n") > 1000
    ckpt = next((out / "mpo-L3" / "pretrain" / "checkpoints").glob("step-*"))
    used = json.loads((ckpt / "train_config.json").read_text(encoding="utf-8"))["train_data"]
    assert used[-1] == str(builtin) and used[0].endswith("input.txt")


def test_cpu_preset_arms_and_run_configs_are_valid() -> None:
    preset = get_preset("cpu")
    arms = build_arms(preset)
    assert [a.depth for a in arms if a.family == "mpo"] == [6, 12, 24, 24]
    for arm in arms:
        assert abs(arm.non_embedding_parameters - arm.budget) <= 0.05 * arm.budget
        TrainConfig.from_dict(arm.pretrain_config(preset))
        for mode in finetune_modes(arm, preset):
            assert TrainConfig.from_dict(arm.finetune_config(preset, mode, 2)).seed == 2
        for cfg in (arm.lr_grid_config(preset, 2e-3),):
            assert TrainConfig.from_dict(cfg).max_steps == preset.lr_grid_steps


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path: Path) -> None:
    """The study removes only what the trainer wrote first (run.json, metrics.jsonl, an
    unfinished checkpoint folder); a folder with anything else is refused untouched."""
    from tnlm_models.study.runner import _discard_start_without_checkpoint

    def started(run: Path) -> None:
        (run / "checkpoints" / ".tmp-step-00000002-99").mkdir(parents=True)
        (run / "checkpoints" / ".tmp-step-00000002-99" / "model.safetensors").write_bytes(b"x")
        (run / "run.json").write_text('{"format": "tnlm-run", "version": 1}\n')
        (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')

    run = tmp_path / "arm" / "pretrain"
    started(run)
    _discard_start_without_checkpoint(run)
    assert not run.exists() and (tmp_path / "arm").is_dir()
    started(run)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files the trainer did not write"):
        _discard_start_without_checkpoint(run)
    assert (run / "notes.txt").read_text() == "mine" and (run / "metrics.jsonl").is_file()


def test_phases_are_checked_and_select_what_runs(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown phase\(s\) \['warmup'\]; expected names from main"
    ):
        run_study("smoke", tmp_path / "a", phases=["warmup"])
    with pytest.raises(TypeError, match="phases must be a list of names"):
        run_study("smoke", tmp_path / "a", phases="main")  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()
    text = _text(tmp_path / "corpus.txt", n=120)
    out = tmp_path / "s"
    records = run_study("smoke", out, pretrain_data=[text], phases=["central-lr"], device="cpu")
    done = [r for r in records if r.get("status") == "done"]
    assert [(r["phase"], r["variant"]) for r in done] == [
        ("central-lr", "x1"),
        ("central-lr", "x2"),
    ]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["central-lr"]


def test_cli_study_rejects_an_unknown_phase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["study", "--preset", "smoke", "--out", str(tmp_path / "s"), "--phases", "nope"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown phase(s) ['nope']" in err


def _mrpc(folder: Path, seed: int = 0) -> Path:
    """A GLUE MRPC-style folder (Quality, ids, two strings), a layout the study has no code for."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", 48), ("dev.tsv", 16)):
        rows = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
        for i in range(n):
            y = rng.randint(0, 1)
            a = " ".join(rng.choice(WORDS) for _ in range(6))
            b = a if y else " ".join(rng.choice(WORDS) for _ in range(6))
            rows.append(f"{y}\t{i}\t{i + 1000}\t{a}\t{b}")
        (folder / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_task_specs_follow_glue_layouts_and_metrics(tmp_path: Path) -> None:
    mrpc = task_spec(_mrpc(tmp_path / "MRPC"))
    assert (mrpc.layout, mrpc.metrics, mrpc.regression) == ("mrpc", ("f1", "accuracy"), False)
    sst = task_spec(_sst(tmp_path / "SST-2"))
    assert (sst.layout, sst.metrics) == ("sst-2", ("accuracy",))
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    row = "0\t1\t2\tfiction\ta b\tc d\tneutral\tneutral\n"
    (mnli / "train.tsv").write_text(header + row * 3, encoding="utf-8")
    (mnli / "dev_matched.tsv").write_text(header + row, encoding="utf-8")
    spec = task_spec(mnli)
    assert (spec.layout, spec.dev.name, spec.metrics) == ("mnli", "dev_matched.tsv", ("accuracy",))


def test_study_fine_tunes_a_task_layout_it_has_no_code_for(tmp_path: Path) -> None:
    """An MRPC-format folder: sentence pairs, F1 and accuracy reported as GLUE does."""
    text = _text(tmp_path / "corpus.txt", n=120)
    task = _mrpc(tmp_path / "MRPC")
    records = run_study(
        "smoke",
        tmp_path / "s",
        pretrain_data=[text],
        tasks=[task],
        arms=["dense-L2"],
        phases=["main"],
        device="cpu",
    )
    fine = [r for r in records if r.get("phase") == "finetune" and "value" in r]
    assert sorted(r["metric"] for r in fine) == ["accuracy", "f1"]
    assert all(0.0 <= r["value"] <= 1.0 and r["task"] == "MRPC" for r in fine)
    report = (tmp_path / "s" / "report.md").read_text(encoding="utf-8")
    assert "## Fine-tuning: MRPC, f1" in report and "## Fine-tuning: MRPC, accuracy" in report


def test_central_finetune_arms_limit_the_frozen_mode() -> None:
    cpu = get_preset("cpu")
    arms = {a.name: a for a in build_arms(cpu)}
    assert finetune_modes(arms["mpo-L12"], cpu) == ("full", "central")
    assert finetune_modes(arms["mpo-L6"], cpu) == ("full",)
    assert finetune_modes(arms["mpo-L6"]) == ("full", "central")  # no preset: every MPO arm
    assert finetune_modes(arms["dense-L2"], cpu) == ("full",)
    with pytest.raises(ValueError, match="mode 'central' does not apply to arm 'mpo-L6'"):
        arms["mpo-L6"].finetune_config(cpu, "central", 0)


def test_report_tells_a_diverged_grid_rate_from_one_not_run_yet(tmp_path: Path) -> None:
    from tnlm_models.study.report import write_report

    base = {"preset": "cpu", "phase": "lr-grid", "task": None, "mode": None, "seed": 0}

    def rec(arm: str, lr: float, **kw: Any) -> dict[str, Any]:
        return {**base, "arm": arm, "variant": f"{lr:g}", "learning_rate": lr, **kw}

    metric = {"metric": "loss", "tokens": 10, "wall_s": 1.0, "cpu_s": 1.0}
    records = [
        rec("mpo-L6", 1e-3, value=6.5, **metric),
        rec("mpo-L6", 1e-3, status="done"),
        rec("mpo-L6", 2e-3, status="done", diverged="non-finite training loss (nan)"),
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    grid = report.split("## Learning-rate grid")[1].split("\n\n")[1].splitlines()
    assert grid[0] == "| arm | 0.001 | 0.002 |"
    assert grid[2] == "| mpo-L6 | 6.5000 | diverged |"
    records.append(rec("mpo-L12", 1e-3, value=6.4, **metric))
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_report(tmp_path)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| mpo-L12 | 6.4000 | - |" in report
