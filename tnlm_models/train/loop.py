"""The training loop: ``train`` (pre-training and fine-tuning) and ``evaluate``.

One step of :func:`train`::

    global batch of step s  (StepBatcher: pure function of seed and s)
      -> accumulation micro-batches -> one shard per process
      -> forward under autocast, loss weighted by this shard's share of the step's
         masked tokens (or examples), backward (DDP averages across processes)
      -> all-reduce of the loss; stop on NaN/Inf before the update
      -> clip, set lr = peak * schedule(s) * group scale, AdamW step
      -> log / evaluate / checkpoint (rank 0 writes)

Because batches, masks and the schedule are pure functions of the seed and the step, and the
RNG states travel in the checkpoint, a resumed run ends with the weights of an uninterrupted
one (bit for bit on CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from ..data import (
    ClassificationCollator,
    ClassificationDataset,
    GlueExamples,
    KeyedDataset,
    MLMCollator,
    StepBatcher,
    TokenDataset,
    build_mlm_dataset,
    default_corpus,
    encode_classification,
    eval_batches,
    infer_label_list,
    read_glue_tsv,
    read_text,
    split_documents,
    train_batches,
)
from ..metrics import classification_metrics, mlm_metrics
from ..tokenization import WordPieceTokenizer
from .checkpoint import (
    capture_rng_state,
    load_model_weights,
    read_index,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import DEFAULT_MODEL, TrainConfig, load_config
from .distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    setup_distributed,
)
from .optim import build_optimizer
from .schedule import lr_factor

__all__ = ["TrainResult", "evaluate", "evaluate_model", "train"]

logger = logging.getLogger(__name__)

DataArg = str | os.PathLike | Sequence[str | os.PathLike] | dict[str, Any] | None


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    model : nn.Module
        The trained model (not wrapped in DDP), on the training device.
    tokenizer : WordPieceTokenizer
    run_dir : Path
    step : int
        Optimizer steps done in total (resumed runs included).
    train_loss : float or None
        Mean training loss over the last logging window.
    metrics : dict
        Final validation metrics (empty without validation data).
    checkpoint, best_checkpoint : Path or None
        Last and best checkpoint directories.
    num_parameters : int
        Unique trainable parameters.
    tokens_seen : int
        Non-padding tokens processed in this call (all processes).
    elapsed_s : float
    num_train_examples, num_valid_examples : int
    world_size : int
        Number of data-parallel processes.
    """

    model: nn.Module
    tokenizer: WordPieceTokenizer
    run_dir: Path
    step: int
    train_loss: float | None
    metrics: dict[str, float]
    checkpoint: Path | None
    best_checkpoint: Path | None
    num_parameters: int
    tokens_seen: int
    elapsed_s: float
    num_train_examples: int = 0
    num_valid_examples: int = 0
    world_size: int = 1
    config: TrainConfig = field(repr=False, default_factory=TrainConfig)


# ---------------------------------------------------------------------------- helpers
def _as_config(
    config: TrainConfig | dict | str | os.PathLike | None, overrides: dict
) -> TrainConfig:
    if config is None:
        cfg = TrainConfig.from_dict({})
    elif isinstance(config, TrainConfig):
        cfg = config
    elif isinstance(config, dict):
        cfg = TrainConfig.from_dict(dict(config))
    elif isinstance(config, str | os.PathLike):
        cfg = load_config(config)
    else:
        raise TypeError(
            f"config must be a TrainConfig, dict or TOML/YAML path, got {type(config).__name__}"
        )
    return cfg.replace(**overrides) if overrides else cfg


def _paths(x: Any, name: str) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str | os.PathLike):
        return [os.fspath(x)]
    if isinstance(x, list | tuple) and all(isinstance(p, str | os.PathLike) for p in x):
        return [os.fspath(p) for p in x]
    raise TypeError(f"{name} must be a path or a list of paths, got {type(x).__name__}")


def _apply_data_arg(cfg: TrainConfig, data: DataArg) -> TrainConfig:
    if data is None:
        return cfg
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"train", "valid"})
        if unknown:
            raise ValueError(f"unknown data keys {unknown}; valid keys are ['train', 'valid']")
        return cfg.replace(
            train_data=_paths(data.get("train"), "data['train']") or cfg.train_data,
            valid_data=_paths(data.get("valid"), "data['valid']") or cfg.valid_data,
        )
    return cfg.replace(train_data=_paths(data, "data"))


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state user code may rely on
    torch.manual_seed(seed)


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``cfg.precision`` (device and precision handled here only)."""
    use_bf16 = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16' requested but this GPU does not support bfloat16")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _model_classes() -> tuple[Any, Any, Any]:
    from .. import MPOBertConfig, MPOBertForMaskedLM, MPOBertForSequenceClassification

    return MPOBertConfig, MPOBertForMaskedLM, MPOBertForSequenceClassification


def _unique_parameters(model: nn.Module) -> int:
    counter = getattr(model, "num_parameters", None)
    if callable(counter):
        try:
            return int(counter(unique=True))
        except TypeError:
            pass
    return sum(p.numel() for p in model.parameters())


def _default_run_name(task: str) -> str:
    return f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------------------- data
@dataclass
class _Raw:
    train_texts: list[str] | None = None
    valid_texts: list[str] | None = None
    train_glue: list[GlueExamples] = field(default_factory=list)
    valid_glue: list[GlueExamples] = field(default_factory=list)

    def tokenizer_texts(self) -> list[str]:
        if self.train_texts is not None:
            return self.train_texts
        out: list[str] = []
        for ex in self.train_glue:
            out.extend(ex.texts_a)
            out.extend(ex.texts_b or [])
        return out


def _read_glue(cfg: TrainConfig, path: str) -> GlueExamples:
    text_a = cfg.text_a_column
    if text_a is None and (cfg.label_column is not None or cfg.text_b_column is not None):
        raise ValueError("set text_a_column along with text_b_column/label_column")
    return read_glue_tsv(
        path,
        text_a=text_a,
        text_b=cfg.text_b_column,
        label=cfg.label_column,
        header=cfg.has_header,
    )


def _read_raw(cfg: TrainConfig, *, for_eval_only: bool = False) -> _Raw:
    if cfg.task == "pretrain":
        docs = read_text(cfg.train_data) if cfg.train_data else default_corpus()
        if cfg.valid_data:
            valid = read_text(cfg.valid_data)
            train = docs
        else:
            train, valid = split_documents(docs, cfg.valid_fraction, cfg.seed)
        return _Raw(train_texts=train, valid_texts=valid or None)
    if not cfg.train_data and not for_eval_only:
        raise ValueError("fine-tuning needs train_data: one or more GLUE-style TSV files")
    return _Raw(
        train_glue=[_read_glue(cfg, p) for p in cfg.train_data],
        valid_glue=[_read_glue(cfg, p) for p in cfg.valid_data],
    )


def _limit(ds: TokenDataset, n: int | None) -> TokenDataset:
    if n is None or n >= len(ds):
        return ds
    if isinstance(ds, ClassificationDataset):
        return ClassificationDataset(ds.items[:n], ds.label_list)
    return TokenDataset(ds.items[:n])


def _encode_glue(
    parts: list[GlueExamples], tok: WordPieceTokenizer, cfg: TrainConfig, labels: list[str] | None
) -> ClassificationDataset:
    items: list[dict[str, Any]] = []
    for ex in parts:
        items.extend(encode_classification(ex, tok, cfg.max_seq_length, labels).items)
    return ClassificationDataset(items, labels)


def _build_datasets(
    cfg: TrainConfig, raw: _Raw, tok: WordPieceTokenizer, label_list: list[str] | None
) -> tuple[TokenDataset | None, TokenDataset | None]:
    if cfg.task == "pretrain":
        train = (
            build_mlm_dataset(raw.train_texts or [], tok, cfg.max_seq_length, cfg.text_format)
            if raw.train_texts
            else None
        )
        valid = (
            build_mlm_dataset(raw.valid_texts, tok, cfg.max_seq_length, cfg.text_format)
            if raw.valid_texts
            else None
        )
    else:
        train = _encode_glue(raw.train_glue, tok, cfg, label_list) if raw.train_glue else None
        valid = _encode_glue(raw.valid_glue, tok, cfg, label_list) if raw.valid_glue else None
    return (
        None if train is None else _limit(train, cfg.max_train_examples),
        None if valid is None else _limit(valid, cfg.max_valid_examples),
    )


def _label_list(cfg: TrainConfig, raw: _Raw) -> list[str] | None:
    if cfg.task != "finetune" or cfg.regression:
        return None
    if cfg.label_list is not None:
        return list(cfg.label_list)
    labels: list[str] = []
    for ex in raw.train_glue:
        labels.extend(ex.labels)
    found = infer_label_list(labels)
    if len(found) < 2:
        raise ValueError(
            f"the training data has a single label {found}; set label_list to the full label set"
        )
    return found


def _collator(cfg: TrainConfig, tok: WordPieceTokenizer) -> Callable:
    if cfg.task == "pretrain":
        return MLMCollator(tok, cfg.mlm_probability, seed=cfg.seed)
    return ClassificationCollator(tok)


def _count(batch: dict[str, torch.Tensor], task: str) -> int:
    if task == "pretrain":
        return int((batch["labels"] != -100).sum())
    return int(batch["labels"].shape[0])


class _KeyBatches:
    """A batch sampler over precomputed key lists (lazy)."""

    def __init__(self, make: Callable[[], Iterator[list[tuple[int, int]]]], n: int) -> None:
        self.make, self.n = make, n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.make()

    def __len__(self) -> int:
        return self.n


def _loader(ds: TokenDataset, batches: Any, collate: Callable, workers: int, seed: int) -> Any:
    # a private generator: creating the iterator must not consume the global RNG, whose
    # state (dropout) is restored exactly on resume
    gen = torch.Generator()
    gen.manual_seed(seed)
    return torch.utils.data.DataLoader(
        KeyedDataset(ds),
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=workers,
        generator=gen,
    )


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
    Classification: loss, accuracy, F1 and Matthews correlation; regression: loss (MSE).
    """
    env = env or DistEnv(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    collate = _collator(cfg, tokenizer)
    batches = eval_batches(
        len(dataset), cfg.eval_batch_size, rank=env.rank, world_size=env.world_size
    )
    num_labels = 1 if cfg.regression else len(getattr(dataset, "label_list", None) or [0, 1])
    sums = torch.zeros(3, dtype=torch.float64)
    cm = torch.zeros(num_labels, num_labels, dtype=torch.float64)
    autocast = _autocast(cfg, env.device)
    for keys in batches:
        batch = {
            k: v.to(env.device)
            for k, v in collate([KeyedDataset(dataset)[k] for k in keys]).items()
        }
        labels = batch.pop("labels")
        with autocast:
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
    if not cfg.regression:
        out.update(classification_metrics(cm.numpy().astype(np.int64)))
    return out


# ---------------------------------------------------------------------------- model set-up
def _build_model(
    model_or_config: Any,
    cfg: TrainConfig,
    tok: WordPieceTokenizer,
    num_labels: int,
    source: Path | None,
) -> nn.Module:
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    MPOBertConfig, ForMLM, ForCls = _model_classes()
    cls = ForMLM if cfg.task == "pretrain" else ForCls
    if source is not None:
        if cfg.task == "pretrain":
            return cls.from_pretrained(source)
        return cls.from_pretrained(source, num_labels=num_labels)
    if isinstance(model_or_config, MPOBertConfig):
        base = model_or_config.to_dict()
    elif isinstance(model_or_config, dict):
        base = {**DEFAULT_MODEL, **model_or_config}
    elif model_or_config is None:
        base = {**DEFAULT_MODEL, **cfg.model}
    else:
        raise TypeError(
            "model_or_config must be a model, an MPOBertConfig, a dict of its fields, a "
            f"checkpoint path or None, got {type(model_or_config).__name__}"
        )
    if base.get("vocab_size") not in (None, tok.vocab_size):
        logger.info("model vocab_size set to the tokenizer's %d", tok.vocab_size)
    base.update(vocab_size=tok.vocab_size, pad_token_id=tok.pad_id, num_labels=num_labels)
    return cls(MPOBertConfig.from_dict(base))


def _check_model(
    model: nn.Module, cfg: TrainConfig, tok: WordPieceTokenizer, num_labels: int
) -> None:
    mc = getattr(model, "config", None)
    if mc is None:
        return
    max_pos = getattr(mc, "max_position_embeddings", None)
    if max_pos is not None and cfg.max_seq_length > max_pos:
        raise ValueError(
            f"max_seq_length={cfg.max_seq_length} exceeds the model's "
            f"max_position_embeddings={max_pos}; lower max_seq_length or build a model with "
            "more positions"
        )
    vocab = getattr(mc, "vocab_size", None)
    if vocab is not None and tok.vocab_size > vocab:
        raise ValueError(
            f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {vocab}"
        )
    if cfg.task == "finetune" and getattr(mc, "num_labels", num_labels) != num_labels:
        raise ValueError(
            f"the model has num_labels={mc.num_labels} but the data has {num_labels} label(s)"
        )


# ---------------------------------------------------------------------------- train
def train(
    model_or_config: Any = None,
    data: DataArg = None,
    config: TrainConfig | dict | str | os.PathLike | None = None,
    *,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    **overrides: Any,
) -> TrainResult:
    """Pre-train (masked LM) or fine-tune (sequence classification) an MPOBERT model.

    Parameters
    ----------
    model_or_config : nn.Module, MPOBertConfig, dict, path or None
        A model to train; a model config (or dict of ``MPOBertConfig`` fields) for a new
        model; a checkpoint or run directory to start from; None: ``config.init_from`` or a
        new model from ``config.model`` over :data:`DEFAULT_MODEL`.
    data : path, list of paths, {"train": ..., "valid": ...} or None
        Training (and validation) files; overrides ``config.train_data``. None keeps the
        config's (pre-training with neither uses the built-in corpus).
    config : TrainConfig, dict, TOML/YAML path or None
        Hyper-parameters (:class:`TrainConfig`).
    callbacks : sequence of callable
        Each is called as ``cb(record)`` after every optimizer step with the step's
        record (step, loss, lr, ...) on every process.
    **overrides
        TrainConfig fields, applied last.

    Returns
    -------
    TrainResult

    Raises
    ------
    FloatingPointError
        If the loss or gradient norm becomes NaN/Inf (checked before the update; the last
        checkpoint on disk is left as it was).
    ValueError, TypeError, FileNotFoundError
        On bad configuration or data, named in the message.

    Examples
    --------
    >>> result = train(max_steps=20, progress=False)  # doctest: +SKIP
    """
    cfg = _apply_data_arg(_as_config(config, overrides), data)
    env = setup_distributed(cfg.device)
    try:
        return _train(model_or_config, cfg, env, callbacks)
    finally:
        env.close()


def _train(
    model_or_config: Any, cfg: TrainConfig, env: DistEnv, callbacks: Sequence[Callable]
) -> TrainResult:
    t_start = time.perf_counter()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    run_name = cfg.run_name or _default_run_name(cfg.task)
    run_dir = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / run_name
    run_dir = Path(all_gather_objects(str(run_dir), env)[0])

    # ---- where the weights come from
    resume_ckpt: Path | None = None
    if cfg.resume:
        target = run_dir if cfg.resume is True else Path(str(cfg.resume))
        try:
            resume_ckpt = resolve_checkpoint(target, "latest")
        except FileNotFoundError:
            raise FileNotFoundError(
                f"resume requested but no checkpoint found in {target}"
            ) from None
    elif read_index(run_dir / "checkpoints"):
        raise ValueError(
            f"{run_dir} already holds checkpoints; pass resume=True to continue that run or "
            "choose another output_dir"
        )
    source: Path | None = resume_ckpt
    if source is None and isinstance(model_or_config, str | os.PathLike):
        source = resolve_checkpoint(model_or_config, "best")
    if source is None and cfg.init_from and not isinstance(model_or_config, nn.Module):
        source = resolve_checkpoint(cfg.init_from, "best")
    if isinstance(model_or_config, str | os.PathLike):
        model_or_config = None

    _seed_all(cfg.seed)

    # ---- data and tokenizer
    raw = _read_raw(cfg)
    if cfg.tokenizer:
        tok = WordPieceTokenizer.load(cfg.tokenizer, lowercase=cfg.lowercase)
    elif source is not None:
        tok = WordPieceTokenizer.load(source)
    elif resume_ckpt is None and isinstance(model_or_config, nn.Module) and cfg.init_from:
        tok = WordPieceTokenizer.load(resolve_checkpoint(cfg.init_from, "best"))
    else:
        # tokenizers' WordPiece trainer breaks frequency ties in hash-map order
        # (huggingface/tokenizers#1794): train on rank 0 only and share the result
        tok_json = None
        if env.is_main:
            tok_json = WordPieceTokenizer.train(
                raw.tokenizer_texts(), cfg.vocab_size, lowercase=cfg.lowercase
            ).backend.to_str()
        tok = WordPieceTokenizer(Tokenizer.from_str(broadcast_object(tok_json, env)))
    label_list = _label_list(cfg, raw)
    num_labels = 1 if cfg.regression else len(label_list or [0, 0])
    train_ds, valid_ds = _build_datasets(cfg, raw, tok, label_list)
    if train_ds is None:
        raise ValueError("no training data")

    # ---- model and optimizer
    model = _build_model(model_or_config, cfg, tok, num_labels, source)
    if resume_ckpt is not None and isinstance(model_or_config, nn.Module):
        load_model_weights(model, resume_ckpt)
    _check_model(model, cfg, tok, num_labels)
    model.to(env.device)
    optimizer = build_optimizer(
        model,
        cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        no_decay=cfg.no_decay,
        central_lr_factor=cfg.central_lr_factor,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_eps,
    )
    if env.distributed:
        ddp_kwargs: dict[str, Any] = {"find_unused_parameters": True}
        if env.device.type == "cuda":
            ddp_kwargs["device_ids"] = [env.device.index]
        runner: nn.Module = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
    else:
        runner = model

    batcher = StepBatcher(len(train_ds), cfg.batch_size, cfg.seed)
    total_steps = cfg.max_steps or cfg.num_epochs * batcher.steps_per_epoch
    accum = cfg.gradient_accumulation_steps
    metric_name = cfg.metric_for_best or (
        "accuracy" if cfg.task == "finetune" and not cfg.regression else "loss"
    )
    greater = metric_name not in ("loss", "perplexity")

    # ---- resume state
    start_step = 0
    best_ckpt: Path | None = None
    if resume_ckpt is not None:
        state = json.loads((resume_ckpt / "trainer_state.json").read_text())
        saved = torch.load(resume_ckpt / "optimizer.pt", map_location=env.device, weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        start_step = int(state["step"])
        rng = saved["rng"]
        if len(rng) == env.world_size:
            restore_rng_state(rng[env.rank])
        else:
            logger.warning(
                "checkpoint written by %d process(es), resuming with %d: RNG streams re-seeded",
                len(rng),
                env.world_size,
            )
            _seed_all(_derived_seed(cfg.seed, 1, env.rank, start_step))
        logger.info("resuming from %s at step %d", resume_ckpt, start_step)
    else:
        _seed_all(_derived_seed(cfg.seed, 1, env.rank))
    if start_step >= total_steps:
        logger.warning("nothing to do: step %d >= total steps %d", start_step, total_steps)

    metrics_path = run_dir / "metrics.jsonl"
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_ckpt is not None and metrics_path.is_file():
            kept = [
                ln
                for ln in metrics_path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= start_step
            ]
            metrics_path.write_text("".join(ln + "\n" for ln in kept))
    barrier(env)

    def log_record(rec: dict[str, Any]) -> None:
        if env.is_main:
            with open(metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")

    train_cfg_record = {
        **cfg.to_dict(),
        "output_dir": str(run_dir),
        "run_name": run_name,
        "label_list": label_list,
        "resume": False,
    }

    last_ckpt: Path | None = None

    def save(step: int, metrics: dict[str, float] | None, train_loss: float | None) -> Path | None:
        nonlocal best_ckpt, last_ckpt
        rng_states = all_gather_objects(capture_rng_state(), env)
        path = None
        if env.is_main:
            path = save_checkpoint(
                run_dir,
                step,
                model=model,
                tokenizer=tok,
                optimizer=optimizer,
                train_config=train_cfg_record,
                trainer_state={
                    "task": cfg.task,
                    "total_steps": total_steps,
                    "world_size": env.world_size,
                    "train_loss": train_loss,
                    "metrics": metrics or {},
                    "label_list": label_list,
                },
                rng_states=rng_states,
                metric=None if metrics is None else metrics.get(metric_name),
                greater_is_better=greater,
                keep_last=cfg.keep_last,
            )
            idx = read_index(run_dir / "checkpoints")
            best_ckpt = run_dir / "checkpoints" / idx["best"] if idx.get("best") else None
            last_ckpt = path
        barrier(env)
        return path

    collate = _collator(cfg, tok)
    n_batches = (total_steps - start_step) * accum
    loader = _loader(
        train_ds,
        _KeyBatches(
            lambda: train_batches(
                batcher,
                start_step,
                total_steps,
                accumulation_steps=accum,
                rank=env.rank,
                world_size=env.world_size,
            ),
            n_batches,
        ),
        collate,
        cfg.num_workers,
        _derived_seed(cfg.seed, 2, env.rank),
    )
    autocast = _autocast(cfg, env.device)
    params = [p for p in model.parameters() if p.requires_grad]

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=start_step,
        disable=not (cfg.progress and env.is_main),
        dynamic_ncols=True,
        file=sys.stderr,
        desc=cfg.task,
    )
    logger.info(
        "%s: %d unique parameters, %d train / %d valid examples, steps %d..%d, %d process(es)",
        cfg.task,
        _unique_parameters(model),
        len(train_ds),
        0 if valid_ds is None else len(valid_ds),
        start_step,
        total_steps,
        env.world_size,
    )

    it = iter(loader)
    window = {
        "loss": 0.0,
        "n": 0,
        "tokens": 0,
        "data": 0.0,
        "compute": 0.0,
        "t0": time.perf_counter(),
    }
    tokens_seen = 0
    train_loss: float | None = None
    final_metrics: dict[str, float] = {}
    runner.train()
    step = start_step
    for step in range(start_step, total_steps):
        t0 = time.perf_counter()
        micro = [next(it) for _ in range(accum)]
        t1 = time.perf_counter()
        counts = [_count(b, cfg.task) for b in micro]
        total = all_reduce_sum(torch.tensor([float(sum(counts))], dtype=torch.float64), env)
        n_global = float(total[0])
        if n_global <= 0:
            raise ValueError(f"step {step}: the global batch has no target token")
        factor = lr_factor(step, total_steps, cfg.warmup_steps, cfg.lr_schedule, cfg.min_lr_ratio)
        lr = cfg.learning_rate * factor
        for g in optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        loss_sum = torch.zeros((), dtype=torch.float64)
        n_tokens = 0
        for m, batch in enumerate(micro):
            n_tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
            sync = (
                runner.no_sync() if env.distributed and m < accum - 1 else contextlib.nullcontext()
            )
            with sync:
                with autocast:
                    out = runner(**batch)
                weight = counts[m] * env.world_size / n_global
                (out.loss * weight).backward()
            loss_sum += out.loss.detach().double().cpu() * counts[m]
        if cfg.max_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        else:
            grad_norm = float(
                torch.linalg.vector_norm(
                    torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])
                )
            )
        stats = all_reduce_sum(
            torch.tensor([float(loss_sum), float(n_tokens)], dtype=torch.float64), env
        )
        loss = float(stats[0]) / n_global
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            idx = read_index(run_dir / "checkpoints")
            last = run_dir / "checkpoints" / idx["latest"] if idx.get("latest") else None
            raise FloatingPointError(
                f"non-finite training loss ({loss}) or gradient norm ({grad_norm}) at step "
                f"{step + 1}; training stopped before the update. Last good checkpoint: "
                f"{last if last else 'none written yet'}. Lower learning_rate, enable "
                "max_grad_norm or check the data"
            )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        done = step + 1
        tokens_seen += int(stats[1])
        window["loss"] += loss
        window["n"] += 1
        window["tokens"] += int(stats[1])
        window["data"] += t1 - t0
        window["compute"] += t2 - t1
        record = {"step": done, "split": "train", "loss": loss, "lr": lr, "grad_norm": grad_norm}
        bar.update(1)
        if cfg.log_every and (done % cfg.log_every == 0 or done == total_steps):
            elapsed = time.perf_counter() - window["t0"]
            train_loss = window["loss"] / window["n"]
            record.update(
                loss=train_loss,
                tokens_per_s=window["tokens"] / max(elapsed, 1e-9),
                data_time_s=window["data"],
                compute_time_s=window["compute"],
                epoch=step // batcher.steps_per_epoch,
            )
            log_record(record)
            bar.set_postfix(
                loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}"
            )
            window = {
                "loss": 0.0,
                "n": 0,
                "tokens": 0,
                "data": 0.0,
                "compute": 0.0,
                "t0": time.perf_counter(),
            }
        elif train_loss is None:
            train_loss = loss
        is_last = done == total_steps
        metrics = None
        if valid_ds is not None and ((cfg.eval_every and done % cfg.eval_every == 0) or is_last):
            metrics = evaluate_model(model, valid_ds, cfg, tok, env)
            final_metrics = metrics
            log_record({"step": done, "split": "valid", **metrics})
            logger.info("step %d validation: %s", done, metrics)
        if (cfg.save_every and done % cfg.save_every == 0) or is_last:
            save(done, metrics, train_loss)
        for cb in callbacks:
            cb(record)
    bar.close()
    if start_step >= total_steps and last_ckpt is None and resume_ckpt is not None:
        last_ckpt = resume_ckpt
    if env.distributed:
        last_s, best_s = broadcast_object((str(last_ckpt or ""), str(best_ckpt or "")), env)
        last_ckpt = Path(last_s) if last_s else None
        best_ckpt = Path(best_s) if best_s else None
    return TrainResult(
        model=model,
        tokenizer=tok,
        run_dir=run_dir,
        step=max(step + 1, start_step) if total_steps > start_step else start_step,
        train_loss=train_loss,
        metrics=final_metrics,
        checkpoint=last_ckpt,
        best_checkpoint=best_ckpt,
        num_parameters=_unique_parameters(model),
        tokens_seen=tokens_seen,
        elapsed_s=time.perf_counter() - t_start,
        num_train_examples=len(train_ds),
        num_valid_examples=0 if valid_ds is None else len(valid_ds),
        world_size=env.world_size,
        config=cfg,
    )


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
    saved: dict[str, Any] = {}
    if (ckpt / "train_config.json").is_file():
        saved = json.loads((ckpt / "train_config.json").read_text())
        saved.pop("label_list", None)
    base = TrainConfig.from_dict(saved) if saved else TrainConfig()
    if config is not None:
        extra = _as_config(config, {}).to_dict()
        base = base.replace(**extra)
    cfg = base.replace(resume=False, **overrides)
    state = (
        json.loads((ckpt / "trainer_state.json").read_text())
        if (ckpt / "trainer_state.json").is_file()
        else {}
    )
    if data is not None:
        cfg = cfg.replace(valid_data=_paths(data, "data"))
    env = setup_distributed(cfg.device)
    try:
        tok = WordPieceTokenizer.load(ckpt)
        raw = _read_raw(cfg, for_eval_only=True)
        label_list = state.get("label_list") if cfg.task == "finetune" else None
        if cfg.task == "finetune" and label_list is None and not cfg.regression:
            label_list = cfg.label_list or _label_list(cfg, raw)
        _, valid = _build_datasets(
            cfg, _Raw(valid_texts=raw.valid_texts, valid_glue=raw.valid_glue), tok, label_list
        )
        if valid is None:
            raise ValueError(f"no evaluation data: pass data=... (the run {ckpt} kept none)")
        _, ForMLM, ForCls = _model_classes()
        if cfg.task == "pretrain":
            model = ForMLM.from_pretrained(ckpt)
        else:
            model = ForCls.from_pretrained(
                ckpt, num_labels=1 if cfg.regression else len(label_list)
            )
        _check_model(model, cfg, tok, 1 if cfg.regression else len(label_list or [0, 0]))
        model.to(env.device)
        return evaluate_model(model, valid, cfg, tok, env)
    finally:
        env.close()
