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
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from tokenizers import Tokenizer
from torch import nn

from ..data import StepBatcher, train_batches
from ..tokenization import WordPieceTokenizer
from ._support import (
    DataArg,
    _apply_data_arg,
    _as_config,
    _autocast,
    _build_datasets,
    _build_model,
    _check_model,
    _collator,
    _count,
    _default_run_name,
    _derived_seed,
    _KeyBatches,
    _label_list,
    _loader,
    _read_raw,
    _seed_all,
    _unique_parameters,
)
from .checkpoint import (
    capture_rng_state,
    check_finite,
    load_model_weights,
    load_training_state,
    read_index,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .config import TrainConfig
from .distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    distributed_run,
)
from .evaluation import evaluate_model
from .optim import build_optimizer, freeze_parameters, trainable_parameters
from .runs import (
    METRICS_FILE,
    append_metrics,
    find_resume_checkpoint,
    prepare_run_dir,
    truncate_metrics,
)
from .schedule import lr_factor

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)


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
        Unique parameters (a shared tensor counted once).
    tokens_seen : int
        Non-padding tokens processed in this call (all processes).
    elapsed_s : float
    num_train_examples, num_valid_examples : int
    world_size : int
        Number of data-parallel processes.
    num_trainable_parameters : int
        Unique parameters that train (fewer than ``num_parameters`` under ``freeze``).
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
    num_trainable_parameters: int = 0
    config: TrainConfig = field(repr=False, default_factory=TrainConfig)


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
    undo: list[Callable[[], None]] = []
    with distributed_run(cfg.device) as env:
        try:
            return _train(model_or_config, cfg, env, callbacks, undo)
        except BaseException:
            for take_back in undo:  # a run that failed before writing: no empty run folder
                take_back()
            raise


# what rank 0's set-up error is raised as on the other processes (most specific first)
_ERRORS: dict[str, type[Exception]] = {
    "FileNotFoundError": FileNotFoundError,
    "ValueError": ValueError,
    "OSError": OSError,
}


def _prepare_run(
    run_dir: Path, cfg: TrainConfig, env: DistEnv, undo: list[Callable[[], None]]
) -> tuple[Path | None, tuple[dict[str, Any], dict[str, Any]] | None]:
    """Check and mark the run folder, find the checkpoint to resume from (rank 0 decides).

    Returns the checkpoint and its ``(trainer_state, optimizer and RNG state)``, or
    ``(None, None)`` for a new run. Rank 0's error is raised on every process. A new mark's
    undo (see :func:`prepare_run_dir`) is appended to ``undo``.
    """
    found: tuple[Path, dict[str, Any], dict[str, Any]] | None = None
    verdict: tuple[str, str] = ("ok", "")
    if env.is_main:
        try:
            unmark = prepare_run_dir(run_dir, resume=cfg.resume, task=cfg.task)
            if unmark is not None:
                undo.append(unmark)
            if cfg.resume:
                target = run_dir if cfg.resume is True else Path(str(cfg.resume))
                if not target.exists():
                    raise FileNotFoundError(f"resume requested but no checkpoint found in {target}")
                found = find_resume_checkpoint(target, env.device)
                verdict = ("ok", str(found[0]))
        except (ValueError, OSError) as e:
            if not env.distributed:
                raise
            kind = next(k for k, t in _ERRORS.items() if isinstance(e, t))
            verdict = (kind, str(e))
    verdict = broadcast_object(verdict, env)
    if verdict[0] != "ok":
        error = _ERRORS[verdict[0]](verdict[1])
        error.raised_on_every_process = True  # type: ignore[attr-defined]
        raise error
    if not verdict[1]:
        return None, None
    ckpt = Path(verdict[1])
    if found is not None:
        return ckpt, (found[1], found[2])
    return ckpt, load_training_state(ckpt, env.device)


def _new_window() -> dict[str, float]:
    """Accumulators of one logging window (wall and process CPU clocks started now)."""
    return {
        "loss": 0.0,
        "n": 0,
        "tokens": 0,
        "data": 0.0,
        "compute": 0.0,
        "t0": time.perf_counter(),
        "cpu0": time.process_time(),
    }


def _train(
    model_or_config: Any,
    cfg: TrainConfig,
    env: DistEnv,
    callbacks: Sequence[Callable],
    undo: list[Callable[[], None]],
) -> TrainResult:
    t_start = time.perf_counter()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    run_name = cfg.run_name or _default_run_name(cfg.task)
    run_dir = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / run_name
    run_dir = Path(all_gather_objects(str(run_dir), env)[0])

    # ---- the run folder (checked and marked by rank 0), where the weights come from
    resume_ckpt, resume_state = _prepare_run(run_dir, cfg, env, undo)
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
    if freeze_parameters(model, cfg.freeze):
        logger.info(
            "freeze=%r: %d of %d parameters train",
            cfg.freeze,
            trainable_parameters(model),
            _unique_parameters(model),
        )
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
        ddp_kwargs: dict[str, Any] = {}
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
    if resume_ckpt is not None and resume_state is not None:
        state, saved = resume_state
        resume_state = None
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
        index = read_index(resume_ckpt.parent)
        if index.get("best"):
            best_ckpt = resume_ckpt.parent / str(index["best"])
        logger.info("resuming from %s at step %d", resume_ckpt, start_step)
    else:
        _seed_all(_derived_seed(cfg.seed, 1, env.rank))
    if start_step >= total_steps:
        logger.warning("nothing to do: step %d >= total steps %d", start_step, total_steps)

    metrics_path = run_dir / METRICS_FILE
    if env.is_main and resume_ckpt is not None:
        truncate_metrics(metrics_path, start_step)
    barrier(env)

    def log_record(rec: dict[str, Any]) -> None:
        if env.is_main:
            append_metrics(metrics_path, rec)

    train_cfg_record = {
        **cfg.to_dict(),
        "output_dir": str(run_dir),
        "run_name": run_name,
        "label_list": label_list,
        "resume": False,
    }

    last_ckpt: Path | None = None
    good_ckpt: Path | None = resume_ckpt  # the last checkpoint known to hold finite weights

    def save(step: int, metrics: dict[str, float] | None, train_loss: float | None) -> Path | None:
        nonlocal best_ckpt, last_ckpt, good_ckpt
        try:  # on every process (their weights are equal), so that all stop together
            check_finite(model, step, train_loss)
        except FloatingPointError as e:
            raise FloatingPointError(
                f"{e}. Last good checkpoint: {good_ckpt or 'none written yet'}. Lower "
                "learning_rate, enable max_grad_norm or check the data"
            ) from None
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
        # known on every process, so that any of them can name it in a NaN stop
        good_ckpt = run_dir / "checkpoints" / f"step-{step:08d}"
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
    from tqdm.contrib.logging import logging_redirect_tqdm

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
    window = _new_window()
    tokens_seen = 0
    train_loss: float | None = None
    final_metrics: dict[str, float] = {}
    runner.train()
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        disable=not (cfg.progress and env.is_main),
        dynamic_ncols=True,
        file=sys.stderr,
        desc=cfg.task,
    )
    # while the bar is shown, log lines go through tqdm.write, so they do not tear it
    redirect = (
        logging_redirect_tqdm(tqdm_class=tqdm) if not bar.disable else contextlib.nullcontext()
    )
    step = start_step
    with bar, redirect:
        for step in range(start_step, total_steps):
            t0 = time.perf_counter()
            micro = [next(it) for _ in range(accum)]
            t1 = time.perf_counter()
            counts = [_count(b, cfg.task) for b in micro]
            total = all_reduce_sum(torch.tensor([float(sum(counts))], dtype=torch.float64), env)
            n_global = float(total[0])
            if n_global <= 0:
                raise ValueError(f"step {step}: the global batch has no target token")
            factor = lr_factor(
                step, total_steps, cfg.warmup_for(total_steps), cfg.lr_schedule, cfg.min_lr_ratio
            )
            lr = cfg.learning_rate * factor
            for g in optimizer.param_groups:
                g["lr"] = lr * g["lr_scale"]
            loss_sum = torch.zeros((), dtype=torch.float64)
            n_tokens = 0
            for m, batch in enumerate(micro):
                n_tokens += int(batch["attention_mask"].sum())
                batch = {k: v.to(env.device, non_blocking=True) for k, v in batch.items()}
                sync = (
                    cast(Any, runner).no_sync()
                    if env.distributed and m < accum - 1
                    else contextlib.nullcontext()
                )
                with sync:
                    with autocast:
                        out = runner(**batch)
                    weight = counts[m] * env.world_size / n_global
                    (out.loss * weight).backward()
                loss_sum += out.loss.detach().double().cpu() * counts[m]
            layer_norms = None
            if cfg.log_layer_grad_norms and cfg.log_every and (step + 1) % cfg.log_every == 0:
                layer_norms = cast(Any, model).bert.encoder.layer_gradient_norms()
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
                raise FloatingPointError(
                    f"non-finite training loss ({loss}) or gradient norm ({grad_norm}) at step "
                    f"{step + 1}; training stopped before the update. Last good checkpoint: "
                    f"{good_ckpt or 'none written yet'}. Lower learning_rate, enable "
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
            record = {
                "step": done,
                "split": "train",
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
            }
            bar.update(1)
            if cfg.log_every and (done % cfg.log_every == 0 or done == total_steps):
                elapsed = time.perf_counter() - window["t0"]
                train_loss = window["loss"] / window["n"]
                if layer_norms is not None:
                    record["layer_grad_norms"] = layer_norms
                record.update(
                    loss=train_loss,
                    tokens_per_s=window["tokens"] / max(elapsed, 1e-9),
                    data_time_s=window["data"],
                    compute_time_s=window["compute"],
                    cpu_time_s=time.process_time() - window["cpu0"],
                    tokens=window["tokens"],
                    epoch=step // batcher.steps_per_epoch,
                )
                log_record(record)
                bar.set_postfix(
                    loss=f"{train_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}"
                )
                window = _new_window()
            elif not cfg.log_every or train_loss is None:
                train_loss = loss
            is_last = done == total_steps
            metrics = None
            if valid_ds is not None and cfg.evaluates_after(
                done, total_steps, batcher.steps_per_epoch
            ):
                metrics = evaluate_model(model, valid_ds, cfg, tok, env)
                final_metrics = metrics
                log_record({"step": done, "split": "valid", **metrics})
                logger.info("step %d validation: %s", done, metrics)
            if (cfg.save_every and done % cfg.save_every == 0) or is_last:
                save(done, metrics, train_loss)
            for cb in callbacks:
                cb(record)
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
        num_trainable_parameters=trainable_parameters(model),
        config=cfg,
    )
