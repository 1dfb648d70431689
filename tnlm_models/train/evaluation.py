"""Evaluation: ``evaluate_model`` (in-loop, sharded over processes) and ``evaluate``
(a checkpoint or run directory from disk)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import KeyedDataset, TokenDataset, eval_batches
from ..metrics import classification_metrics, mlm_metrics
from ..tokenization import WordPieceTokenizer
from .checkpoint import read_checkpoint_json, resolve_checkpoint
from .config import DataArg, TrainConfig, as_paths, as_train_config
from .datasets import RawData, build_datasets, label_list_for, make_collator, read_raw_data
from .distributed import DistEnv, all_gather_objects, all_reduce_sum, distributed_run
from .models import check_model, device_batch, model_classes, trusted
from .precision import autocast_context
from .predict import has_labels

__all__ = ["evaluate", "evaluate_model", "regression_metrics"]


# ---------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: TokenDataset,
    cfg: TrainConfig,
    tokenizer: WordPieceTokenizer,
    env: DistEnv | None = None,
) -> dict[str, float]:
    """Validation metrics of ``model`` on ``dataset`` (sharded over processes, summed).

    Masked-LM: loss, perplexity and accuracy over masked tokens (fixed evaluation masks).
    Classification: loss, accuracy, F1 and Matthews correlation; regression: loss (MSE),
    Pearson and Spearman correlations (:func:`regression_metrics`).
    """
    env = env or DistEnv(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    collate = make_collator(cfg, tokenizer)
    batches = eval_batches(
        len(dataset), cfg.eval_batch_size, rank=env.rank, world_size=env.world_size
    )
    num_labels = 1 if cfg.regression else len(getattr(dataset, "label_list", None) or [0, 1])
    sums = torch.zeros(3, dtype=torch.float64)
    cm = torch.zeros(num_labels, num_labels, dtype=torch.float64)
    autocast = autocast_context(cfg, env.device)
    scores: list[float] = []  # regression: predictions and labels, for the correlations
    golds: list[float] = []
    for keys in batches:
        batch = device_batch(model, collate([KeyedDataset(dataset)[k] for k in keys]), env.device)
        labels = batch.pop("labels")
        with autocast, trusted(model):
            logits = model(**batch).logits.float()
        if cfg.task == "pretrain":
            mask = labels != -100
            sel, y = logits[mask], labels[mask]
            sums[0] += nn.functional.cross_entropy(sel, y, reduction="sum").item()
            sums[1] += (sel.argmax(-1) == y).sum().item()
            sums[2] += y.numel()
        elif cfg.regression:
            sums[0] += nn.functional.mse_loss(
                logits.view(-1), labels.float(), reduction="sum"
            ).item()
            sums[2] += labels.numel()
            scores.extend(logits.view(-1).tolist())
            golds.extend(labels.float().tolist())
        else:
            sums[0] += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            pred = logits.argmax(-1)
            cm.index_put_(
                (labels.cpu(), pred.cpu()),
                torch.ones(len(labels), dtype=torch.float64),
                accumulate=True,
            )
            sums[2] += labels.numel()
    all_reduce_sum(sums, env)
    if cfg.task == "finetune" and not cfg.regression:
        all_reduce_sum(cm, env)
    model.train(was_training)
    if cfg.task == "pretrain":
        return mlm_metrics(float(sums[0]), float(sums[1]), float(sums[2]))
    if sums[2] == 0:
        raise ValueError("the evaluation set is empty")
    out = {"loss": float(sums[0] / sums[2])}
    if cfg.regression:
        parts = all_gather_objects((scores, golds), env)
        out.update(
            regression_metrics(
                np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts]),
                np.concatenate([np.asarray(p[1], dtype=np.float64) for p in parts]),
            )
        )
    else:
        out.update(classification_metrics(cm.numpy().astype(np.int64)))
        out["mcc"] = float(np.clip(out["mcc"], -1.0, 1.0))  # rounding can step past +-1
    return out


def regression_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations of predictions and labels (GLUE's STS-B metrics).

    Spearman's is Pearson's of the ranks (ties share their mean rank). A correlation that
    is undefined (a constant input, fewer than two examples) is 0.0, as for MCC.

    Parameters
    ----------
    pred, gold : array, shape (n,)

    References
    ----------
    C. Spearman, Am. J. Psychol. 15 (1904) 72-101.
    """
    from scipy.stats import rankdata

    def pearson(x: np.ndarray, y: np.ndarray) -> float:
        x = x - x.mean()
        y = y - y.mean()
        den = float(np.sqrt((x @ x) * (y @ y)))
        return float(np.clip((x @ y) / den, -1.0, 1.0)) if den > 0 else 0.0

    if len(pred) < 2:
        return {"pearson": 0.0, "spearman": 0.0}
    return {
        "pearson": pearson(pred, gold),
        "spearman": pearson(rankdata(pred), rankdata(gold)),
    }


# ---------------------------------------------------------------------------- evaluate
def evaluate(
    checkpoint: str | os.PathLike,
    data: DataArg = None,
    config: TrainConfig | dict | str | os.PathLike | None = None,
    **overrides: Any,
) -> dict[str, float]:
    """Evaluate a checkpoint (or a run's best checkpoint) on validation data.

    Parameters
    ----------
    checkpoint : path
        Checkpoint directory or run directory (its best checkpoint).
    data : path or list of paths, optional
        Evaluation files (text for masked-LM checkpoints, TSV for classifiers); default:
        the run's own validation data.
    config, **overrides
        Settings over the run's saved ``train_config.json`` (e.g. ``eval_batch_size``).

    Returns
    -------
    dict
        Metrics (see :func:`evaluate_model`).
    """
    ckpt = resolve_checkpoint(checkpoint, "best")
    saved = read_checkpoint_json(ckpt, "train_config.json")
    saved.pop("label_list", None)
    base = TrainConfig.from_dict(saved) if saved else TrainConfig()
    if config is not None:
        extra = as_train_config(config, {}).to_dict()
        base = base.replace(**extra)
    cfg = base.replace(resume=False, **overrides)
    state = read_checkpoint_json(ckpt, "trainer_state.json")
    if data is not None:
        cfg = cfg.replace(valid_data=as_paths(data, "data"))
    if cfg.task == "finetune":
        for path in cfg.valid_data:
            if not has_labels(cfg, path):
                raise ValueError(
                    f"{path} has no labels (an index column, as in GLUE test files), so it "
                    f"cannot be evaluated; to label it run: tnlm-train predict {checkpoint} "
                    f"--data {path} --out predictions.tsv"
                )
    with distributed_run(cfg.device) as env:
        tok = WordPieceTokenizer.load(ckpt)
        raw = read_raw_data(cfg, for_eval_only=True)
        label_list = state.get("label_list") if cfg.task == "finetune" else None
        if cfg.task == "finetune" and label_list is None and not cfg.regression:
            label_list = cfg.label_list or label_list_for(cfg, RawData(train_glue=raw.valid_glue))
        _, valid = build_datasets(
            cfg, RawData(valid_texts=raw.valid_texts, valid_glue=raw.valid_glue), tok, label_list
        )
        if valid is None:
            raise ValueError(f"no evaluation data: pass data=... (the run {ckpt} kept none)")
        _, ForMLM, ForCls = model_classes()
        if cfg.task == "pretrain":
            model = ForMLM.from_pretrained(ckpt)
        else:
            model = ForCls.from_pretrained(
                ckpt, num_labels=1 if cfg.regression else len(label_list or [])
            )
        check_model(model, cfg, tok, 1 if cfg.regression else len(label_list or [0, 0]))
        model.to(env.device)
        return evaluate_model(model, valid, cfg, tok, env)
