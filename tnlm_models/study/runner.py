"""``run_study``: pre-train and fine-tune every arm of a preset, resumably.

Layout of a study folder ``OUT``::

    OUT/study.json                          marks the folder as a study (and its preset)
    OUT/results.jsonl                       one record per arm, seed, phase and metric,
                                            a "curve" record and a "done" record per
                                            finished run
    OUT/<arm>/pretrain/                     an ordinary run directory (tnlm_models.train)
    OUT/<arm>/<task>-<mode>-s<seed>/        a fine-tuning run (mode: full | central)
    OUT/report.md, OUT/*.png                written by tnlm_models.study.report

A run with a "done" record is skipped; a run folder with checkpoints and no "done" record
was interrupted and continues with the trainer's ``resume=True``; so a study can span
several sittings. Tokens, wall and CPU time are read back from each run's
``metrics.jsonl`` (which the trainer cuts back on resume), so they cover every sitting.
Wall and CPU time are those of the training steps (evaluation excluded). Training FLOPs per
token (``train_flops_per_token``) are counted by ``torch.utils.flop_counter`` on one
forward and backward pass of a micro-batch, on the trained model.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .arms import Arm, Preset, build_arms, finetune_modes, get_preset

__all__ = ["RESULTS_FILE", "STUDY_FILE", "TaskSpec", "read_results", "run_study", "task_spec"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
#: written first into a study folder: marks it as one (and names its preset)
STUDY_FILE = "study.json"
#: the key of a run's curve record in results.jsonl: validation loss against tokens, and the
#: logged training loss and per-layer gradient norms against steps, so that the report and
#: its plots need nothing but results.jsonl (run folders may be deleted or lost)
CURVE_KEY = "curve"

#: The metrics GLUE reports for each layout (tnlm_models.data.GLUE_LAYOUTS); the first is
#: the one the report plots and the checkpoint selection uses.
_GLUE_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "sts-b": ("pearson", "spearman"),
}
_DEV_FILES = ("dev.tsv", "dev_matched.tsv")


@dataclass(frozen=True)
class TaskSpec:
    """A GLUE-format task folder: its files, layout and the metrics GLUE reports."""

    name: str
    train: Path
    dev: Path
    layout: str
    metrics: tuple[str, ...]

    @property
    def regression(self) -> bool:
        """Whether labels are real numbers (STS-B)."""
        return self.layout == "sts-b"


def task_spec(folder: str | os.PathLike) -> TaskSpec:
    """Read a task folder (``train.tsv`` and ``dev.tsv``), detecting its GLUE layout.

    Raises
    ------
    FileNotFoundError
        If the folder or one of its files is missing.
    ValueError
        If ``train.tsv`` has none of the GLUE layouts.
    """
    from ..data import detect_glue_layout

    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"task folder {path} does not exist (expected a GLUE folder)")
    train = path / "train.tsv"
    if not train.is_file():
        raise FileNotFoundError(f"task folder {path} has no train.tsv")
    dev = next((path / n for n in _DEV_FILES if (path / n).is_file()), None)
    if dev is None:
        raise FileNotFoundError(f"task folder {path} has no {' or '.join(_DEV_FILES)}")
    layout = detect_glue_layout(train).name
    return TaskSpec(path.name, train, dev, layout, _GLUE_METRICS.get(layout, ("accuracy",)))


# ---------------------------------------------------------------------------- results
def read_results(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``out/results.jsonl`` (a torn last line is skipped)."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                logger.warning("%s:%d: incomplete last record skipped", path, n)
                continue
            raise ValueError(f"{path}:{n}: not a JSON record") from None
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _append(out: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append records in one ``write`` on an ``O_APPEND`` descriptor, then fsync."""
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode("utf-8")
    fd = os.open(out / RESULTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _key(rec: dict[str, Any]) -> tuple[Any, ...]:
    return (
        rec.get("arm"),
        rec.get("phase"),
        rec.get("task"),
        rec.get("mode"),
        rec.get("seed"),
        rec.get("variant"),
    )


def _run_totals(run_dir: Path) -> dict[str, Any]:
    """Tokens, wall and CPU seconds of training, the last validation record, and the
    run's curves (see :func:`_curve_record`)."""
    from ..train.plot import read_metrics

    tokens, wall, cpu = 0, 0.0, 0.0
    valid: dict[str, Any] = {}
    curve: dict[str, list[Any]] = {
        "valid_tokens": [],
        "valid_loss": [],
        "train_steps": [],
        "train_loss": [],
        "layer_grad_norms": [],
    }
    for r in read_metrics(run_dir):
        if r.get("split") == "train" and "tokens" in r:
            tokens += int(r["tokens"])
            wall += r["tokens"] / max(float(r.get("tokens_per_s") or 0.0), 1e-9)
            cpu += float(r.get("cpu_time_s", 0.0))
            if "layer_grad_norms" in r:
                curve["train_steps"].append(int(r["step"]))
                curve["train_loss"].append(float(r["loss"]))
                curve["layer_grad_norms"].append([float(x) for x in r["layer_grad_norms"]])
        elif r.get("split") == "valid":
            valid = r
            if "loss" in r:
                curve["valid_tokens"].append(tokens)
                curve["valid_loss"].append(float(r["loss"]))
    return {"tokens": tokens, "wall_s": wall, "cpu_s": cpu, "valid": valid, "curve": curve}


def _claim(root: Path, preset: str) -> None:
    """Mark ``root`` as a study of ``preset``, or check that it is one.

    Raises
    ------
    ValueError
        If ``root`` is a non-empty folder that is not a study (nothing is written into
        it), or a study of another preset.
    """
    if root.exists() and not root.is_dir():
        raise ValueError(f"study folder {root} is a file; a folder was expected")
    marker = root / STUDY_FILE
    if marker.is_file():
        try:
            found = json.loads(marker.read_text(encoding="utf-8")).get("preset")
        except (json.JSONDecodeError, AttributeError):
            raise ValueError(f"{marker} is not a study marker (a JSON object)") from None
        if found != preset:
            raise ValueError(
                f"{root} holds a study of preset {found!r}, not {preset!r}; choose another --out"
            )
        return
    if root.is_dir() and any(root.iterdir()):
        raise ValueError(
            f"study folder {root} is not empty and holds no {STUDY_FILE}; nothing in it was "
            "changed. Choose a new or empty folder, or an earlier study's"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{STUDY_FILE}.tmp"
    tmp.write_text(json.dumps({"format": "tnlm-study", "preset": preset}) + "\n", "utf-8")
    os.replace(tmp, marker)


def _has_checkpoint(run_dir: Path) -> bool:
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir())


# ---------------------------------------------------------------------------- runs
def _discard_start_without_checkpoint(run_dir: Path) -> None:
    """Remove a run the study started that stopped before its first checkpoint, so that it
    starts again (the trainer refuses to write over its metrics without a checkpoint to
    resume from). Only a folder holding nothing but what the trainer writes first is removed:
    its ``run.json``, ``metrics.jsonl``, and in ``checkpoints/`` unfinished ``.tmp-step-*``
    folders; anything else is an error naming the folder, and nothing is touched."""
    from ..train.runs import METRICS_FILE, RUN_FILE

    names = {p.name for p in run_dir.iterdir()}
    ckpts = run_dir / "checkpoints"
    partial = [] if not ckpts.is_dir() else [p.name for p in ckpts.iterdir()]
    ours = RUN_FILE in names and names <= {RUN_FILE, METRICS_FILE, "checkpoints"}
    if not ours or not all(n.startswith(".tmp-step-") for n in partial):
        raise ValueError(
            f"{run_dir} is a study run folder but holds files the trainer did not write or no "
            f"{RUN_FILE} ({sorted(names)}); move them away to let the study run it"
        )
    logger.warning("%s stopped before its first checkpoint: starting it again", run_dir)
    for name in partial:
        shutil.rmtree(ckpts / name)
    if ckpts.is_dir():
        ckpts.rmdir()
    for name in (METRICS_FILE, RUN_FILE):
        (run_dir / name).unlink(missing_ok=True)
    run_dir.rmdir()


def _train_run(
    run_dir: Path,
    config: dict[str, Any],
    data: Any,
    callbacks: Sequence[Callable[[dict[str, Any]], None]],
    device: str,
    model: Any = None,
) -> Any:
    """Train (or resume) one run of the study in ``run_dir``; ``model``: a model to train
    instead of a new one from ``config`` (a converted one; a resumed run loads its
    checkpoint over it)."""
    from ..train import train

    resume = _has_checkpoint(run_dir)
    if resume:
        logger.info("resuming %s", run_dir)
    elif run_dir.exists():
        _discard_start_without_checkpoint(run_dir)
    return train(
        model,
        data,
        {**config, "output_dir": str(run_dir), "resume": resume, "device": device},
        callbacks=callbacks,
    )


def _flops_per_token(model: Any, cfg: dict[str, Any]) -> float | None:
    """Training FLOPs per token: one forward and backward pass of a micro-batch of
    ``max_seq_length`` tokens, counted by ``torch.utils.flop_counter`` (matrix products and
    attention; frozen tensors get no weight gradient, so ``freeze`` costs less). None when
    it cannot be counted."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    seq = int(cfg.get("max_seq_length", 64))
    batch = max(1, int(cfg.get("batch_size", 8)) // int(cfg.get("gradient_accumulation_steps", 1)))
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    ids = torch.randint(5, vocab, (batch, seq), generator=gen).to(device)  # (B, T)
    mask = torch.ones_like(ids)  # (B, T)
    if cfg.get("task") == "pretrain":
        labels = ids.clone()  # (B, T); the head computes every position's logits anyway
    elif int(model.config.num_labels) == 1:
        labels = torch.zeros(batch, device=device)  # (B,)
    else:
        labels = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
    was_training = model.training
    model.train()
    try:
        with FlopCounterMode(display=False) as counter:
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    except (RuntimeError, ValueError, TypeError) as e:  # pragma: no cover - an exotic model
        logger.warning("FLOPs per token not counted: %s", e)
        return None
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return float(counter.get_total_flops()) / (batch * seq)


def _records(
    base: dict[str, Any],
    result: Any,
    run_dir: Path,
    metrics: Sequence[str],
    cfg: dict[str, Any],
) -> list[dict[str, Any]]:
    model = result.model
    unique = int(model.num_parameters(unique=True))
    non_emb = unique - int(model.parameter_breakdown()["embeddings"])
    totals = _run_totals(run_dir)
    common = {
        **base,
        "unique_parameters": unique,
        "non_embedding_parameters": non_emb,
        "trainable_parameters": int(result.num_trainable_parameters),
        "tokens": totals["tokens"],
        "steps": int(result.step),
        "wall_s": totals["wall_s"],
        "cpu_s": totals["cpu_s"],
        "run_dir": str(run_dir),
    }
    flops = _flops_per_token(model, cfg)
    if flops is not None:
        common["train_flops_per_token"] = flops
    out = []
    for name in metrics:
        value = totals["valid"].get(name, result.metrics.get(name))
        if value is None:
            raise ValueError(f"run {run_dir} reported no validation {name!r}")
        out.append({**common, "metric": name, "value": float(value)})
    out.append({**base, "run_dir": str(run_dir), CURVE_KEY: totals["curve"]})
    return out


@dataclass
class _Context:
    """What every phase of a study needs: its folder, preset, finished runs and options."""

    root: Path
    preset: Preset
    done: set[tuple[Any, ...]]
    callbacks: Sequence[Callable[[dict[str, Any]], None]]
    device: str

    def todo(self, rec: dict[str, Any]) -> bool:
        """Whether the run ``rec`` names has no "done" record yet."""
        return _key(rec) not in self.done

    def finish(self, records: Sequence[dict[str, Any]], done: dict[str, Any]) -> None:
        """Append a run's records and its "done" record (one write)."""
        _append(self.root, [*records, done])
        self.done.add(_key(done))

    def train_or_record_divergence(
        self,
        info: dict[str, Any],
        run_dir: Path,
        cfg: dict[str, Any],
        data: Any,
        metrics: Sequence[str],
    ) -> None:
        """Train (or resume) the run ``info`` names and record it as done with its
        ``metrics``; a run that diverges (non-finite loss or gradient) is recorded as done
        with the reason under ``"diverged"`` and no metrics, so it is not tried again."""
        try:
            result = _train_run(run_dir, cfg, data, self.callbacks, self.device)
        except FloatingPointError as e:
            logger.warning("%s (%s) diverged: %s", info.get("arm"), info.get("variant"), e)
            self.finish([], {**info, "status": "done", "diverged": str(e)})
            return
        records = _records(info, result, run_dir, metrics, cfg)
        self.finish(records, {**info, "status": "done", "run_dir": str(run_dir)})


BUILTIN_CORPUS_FILE = "builtin-corpus.txt"


def _write_builtin_corpus(root: Path) -> Path:
    """``root/builtin-corpus.txt``: the built-in corpus, one paragraph per line (written
    once, through a temporary file; an existing file is the study's own and is kept)."""
    from ..data import default_corpus

    path = root / BUILTIN_CORPUS_FILE
    if not path.is_file():
        tmp = root / f".{BUILTIN_CORPUS_FILE}.{os.getpid()}.tmp"
        tmp.write_text("\n".join(default_corpus()) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return path


def _base(p: Preset, arm: Arm) -> dict[str, Any]:
    return {
        "preset": p.name,
        "arm": arm.name,
        "family": arm.family,
        "depth": arm.depth,
        "budget": arm.budget,
    }


def _lr_grid(ctx: _Context, arm: Arm, base: dict[str, Any], data: dict[str, Any]) -> float:
    """Run the arm's learning-rate grid (skipping finished runs) and return the rate with
    the lowest validation loss. A run that diverges (non-finite loss) is recorded as such
    and loses; ties go to the smaller rate."""
    p = ctx.preset
    for lr in p.lr_grid:
        key = {"phase": "lr-grid", "task": None, "mode": None, "seed": 0, "variant": f"{lr:g}"}
        info = {**base, **key, "learning_rate": float(lr)}
        if not ctx.todo(info):
            continue
        run_dir = ctx.root / arm.name / "lr-grid" / f"lr-{lr:g}"
        ctx.train_or_record_divergence(info, run_dir, arm.lr_grid_config(p, lr), data, ("loss",))
    losses = {
        float(r["learning_rate"]): float(r["value"])
        for r in read_results(ctx.root)
        if r.get("arm") == arm.name and r.get("phase") == "lr-grid" and r.get("metric") == "loss"
    }
    finite = {lr: v for lr, v in losses.items() if math.isfinite(v)}
    if not finite:
        raise FloatingPointError(
            f"every learning rate of the grid {list(p.lr_grid)} diverged for arm {arm.name!r}; "
            "give the preset smaller rates"
        )
    return min(sorted(finite), key=lambda lr: finite[lr])


def run_study(
    preset: str | Preset,
    out: str | os.PathLike,
    pretrain_data: Sequence[str | os.PathLike] | None = None,
    valid_data: Sequence[str | os.PathLike] | None = None,
    tasks: Sequence[str | os.PathLike] = (),
    seeds: int | None = None,
    *,
    arms: Sequence[str] | None = None,
    device: str = "cpu",
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    report: bool = True,
    builtin_corpus: bool = False,
    phases: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Run (or continue) a study: pre-train every arm, fine-tune it per task, mode and seed.

    Parameters
    ----------
    preset : {"smoke", "cpu", "gpu"} or Preset
    out : path
        The study folder (created; an existing one is continued).
    pretrain_data, valid_data : list of paths, optional
        Text for masked-LM pre-training (default: the built-in corpus) and its held-out
        validation text (default: a seeded 5 % of the documents).
    tasks : list of paths
        GLUE-format folders (``train.tsv``, ``dev.tsv``), any GLUE layout.
    seeds : int, optional
        Fine-tuning seeds per task and mode (default: the preset's).
    arms : list of str, optional
        Only these arms (by name, e.g. ``"mpo-L12"``).
    device : str
        Training device (``TrainConfig.device``).
    callbacks : list of callable
        Passed to every ``train`` call (called after each optimizer step).
    report : bool
        Write ``report.md`` and the plots at the end.
    phases : list of str, optional
        What to run: ``"main"`` (the arms' pre-training and fine-tuning) and the ablations
        of ``tnlm_models.study.experiments.EXPERIMENTS`` (``"stability"``,
        ``"central-lr"``, ``"init"``); default all, in the order pre-training, ablations,
        fine-tuning. A process running only the ablations can share the folder with
        processes running disjoint ``arms``.
    builtin_corpus : bool
        Also pre-train on the built-in corpus (``tnlm_models.data.default_corpus``), written
        once to ``out/builtin-corpus.txt``, one paragraph per line.

    Returns
    -------
    list of dict
        Every record of ``out/results.jsonl``.

    Raises
    ------
    TypeError, ValueError, FileNotFoundError
        On a bad preset, seed count, arm name or task folder (named in the message).
    """
    p = get_preset(preset)
    if seeds is None:
        seeds = p.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise TypeError(f"seeds must be an int, got {type(seeds).__name__} {seeds!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if isinstance(tasks, str | os.PathLike):
        tasks = [tasks]
    specs = [task_spec(t) for t in tasks]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"task folders must have distinct names, got {names}")
    from .experiments import EXPERIMENTS, run_central_lr, run_init, run_stability

    known_phases = ("main", *EXPERIMENTS)
    if phases is None:
        phases = known_phases
    if isinstance(phases, str) or not all(isinstance(x, str) for x in phases):
        raise TypeError(f"phases must be a list of names, got {phases!r}")
    unknown_phases = [x for x in phases if x not in known_phases]
    if unknown_phases:
        raise ValueError(
            f"unknown phase(s) {unknown_phases}; expected names from {', '.join(known_phases)}"
        )
    all_arms = build_arms(p)
    chosen: list[Arm] = all_arms
    if arms is not None:
        known = {a.name: a for a in all_arms}
        unknown = [a for a in arms if a not in known]
        if unknown:
            raise ValueError(f"unknown arm(s) {unknown}; expected names from {', '.join(known)}")
        chosen = [known[a] for a in arms]
    root = Path(out)
    _claim(root, p.name)
    done = {_key(r) for r in read_results(root) if r.get("status") == "done"}
    train_files = [str(x) for x in pretrain_data or []]
    if builtin_corpus:
        train_files.append(str(_write_builtin_corpus(root)))
    data_pre = {
        "train": train_files,
        "valid": [str(x) for x in valid_data or []],
    }
    ctx = _Context(root, p, done, callbacks, device)

    main = "main" in phases
    # 1. pre-training: every arm, after its learning-rate grid
    for arm in chosen if main else []:
        base = _base(p, arm)
        lr = _lr_grid(ctx, arm, base, data_pre) if p.lr_grid else None
        pre_dir = root / arm.name / "pretrain"
        key = {"phase": "pretrain", "task": None, "mode": None, "seed": 0}
        cfg = arm.pretrain_config(p, lr)
        if ctx.todo({**base, **key}):
            result = _train_run(pre_dir, cfg, data_pre, callbacks, device)
            info = {**base, **key, "learning_rate": float(cfg.get("learning_rate", 0.0))}
            recs = _records(info, result, pre_dir, ("loss", "accuracy"), cfg)
            ctx.finish(recs, {**info, "status": "done"})

    # 2. the ablations
    runners = {"stability": run_stability, "central-lr": run_central_lr, "init": run_init}
    for name in EXPERIMENTS:
        if name in phases:
            runners[name](ctx, all_arms, data_pre)

    # 3. fine-tuning, seed by seed (so a study stopped early has every arm at equal seeds)
    for seed in range(seeds if main else 0):
        for arm in chosen:
            base = _base(p, arm)
            pre_dir = root / arm.name / "pretrain"
            for spec in specs:
                for mode in finetune_modes(arm, p):
                    key = {"phase": "finetune", "task": spec.name, "mode": mode, "seed": seed}
                    if not ctx.todo({**base, **key}):
                        continue
                    run_dir = root / arm.name / f"{spec.name}-{mode}-s{seed}"
                    cfg = {
                        **arm.finetune_config(p, mode, seed),
                        "init_from": str(pre_dir),
                        "regression": spec.regression,
                        "metric_for_best": spec.metrics[0],
                    }
                    data = {"train": [str(spec.train)], "valid": [str(spec.dev)]}
                    result = _train_run(run_dir, cfg, data, callbacks, device)
                    recs = _records({**base, **key}, result, run_dir, spec.metrics, cfg)
                    ctx.finish(recs, {**base, **key, "status": "done"})
    records = read_results(root)
    bad = [r for r in records if "value" in r and not math.isfinite(float(r["value"]))]
    for r in bad:
        logger.warning("non-finite %s of %s (%s)", r["metric"], r["arm"], r["run_dir"])
    if report:
        from .report import write_report

        write_report(root)
    return records
