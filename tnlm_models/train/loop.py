"""The trainer: ``train`` (pre-training and fine-tuning), in phases.

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

:func:`_train` runs the phases in order, each a function of this module: open the run
folder (and find the checkpoint to resume from), load the data and tokenizer, build the
model and optimizer, plan the steps, restore the resumed state, run the step loop (which
evaluates and checkpoints), and report.
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

from ..data import StepBatcher, TokenDataset, train_batches
from ..modeling import MPOBertEncoder
from ..tokenization import WordPieceTokenizer
from .checkpoint import (
    check_finite,
    load_model_weights,
    load_training_state,
    read_index,
    resolve_checkpoint,
    save_checkpoint,
)
from .config import DataArg, TrainConfig, as_train_config, with_data
from .datasets import (
    KeyBatches,
    RawData,
    build_datasets,
    count_targets,
    label_list_for,
    make_collator,
    make_loader,
    read_raw_data,
)
from .distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    distributed_run,
)
from .evaluation import evaluate_model
from .models import build_model, check_model, device_batch, trusted, unique_parameters
from .optim import build_optimizer, freeze_parameters, trainable_parameters
from .precision import autocast_context
from .randomness import capture_rng_state, derived_seed, restore_rng_state, seed_all
from .runs import (
    METRICS_FILE,
    append_metrics,
    default_run_name,
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
    cfg = with_data(as_train_config(config, overrides), data)
    undo: list[Callable[[], None]] = []
    with distributed_run(cfg.device) as env:
        try:
            return _train(model_or_config, cfg, env, callbacks, undo)
        except BaseException:
            for take_back in undo:  # a run that failed before writing: no empty run folder
                take_back()
            raise


# ---------------------------------------------------------------------------- the phases
def _train(
    model_or_config: Any,
    cfg: TrainConfig,
    env: DistEnv,
    callbacks: Sequence[Callable],
    undo: list[Callable[[], None]],
) -> TrainResult:
    """One run, in phases; each phase is a function below, in this order."""
    t_start = time.perf_counter()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    # 1. the run folder, the checkpoint to resume from, the checkpoint the weights come from
    run = _open_run(model_or_config, cfg, env, undo)
    seed_all(cfg.seed)
    # 2. the data and the tokenizer
    data = _load_data(model_or_config, cfg, env, run)
    # 3. the model and the optimizer
    model, optimizer, runner = _build_model_and_optimizer(model_or_config, cfg, env, run, data)
    # 4. the global batch of every step, and how many steps
    plan = _plan_steps(cfg, data)
    # 5. a resumed run's state (optimizer, RNG streams, start step); metrics cut back
    start_step, best = _resume(cfg, env, run, optimizer, plan)
    # 6. evaluation and checkpointing (called by the step loop)
    checkpoints = _Checkpoints(cfg, env, run, model, optimizer, data, plan, best)
    # 7. the step loop
    progress = _run_steps(
        cfg, env, run, model, runner, optimizer, data, plan, start_step, checkpoints, callbacks
    )
    # 8. what the run did
    return _report(cfg, env, run, model, data, plan, start_step, checkpoints, progress, t_start)


# ---------------------------------------------------------------------------- 1. run folder
@dataclass
class _RunFolder:
    """Where a run writes, and what it starts from."""

    path: Path
    name: str
    resume_ckpt: Path | None  # the checkpoint this run resumes (None: a new run)
    resume_state: tuple[dict[str, Any], dict[str, Any]] | None  # its trainer, optimizer state
    source: Path | None  # the checkpoint the weights and tokenizer come from


def _open_run(
    model_or_config: Any, cfg: TrainConfig, env: DistEnv, undo: list[Callable[[], None]]
) -> _RunFolder:
    """Phase 1: the run folder (checked and marked by rank 0), the checkpoint to resume
    from, and the checkpoint the weights come from (resumed, given as a path, or
    ``init_from``)."""
    name = cfg.run_name or default_run_name(cfg.task)
    run_dir = Path(cfg.output_dir) if cfg.output_dir else Path("runs") / name
    run_dir = Path(all_gather_objects(str(run_dir), env)[0])
    resume_ckpt, resume_state = _prepare_run(run_dir, cfg, env, undo)
    source: Path | None = resume_ckpt
    if source is None and isinstance(model_or_config, str | os.PathLike):
        source = resolve_checkpoint(model_or_config, "best")
    if source is None and cfg.init_from and not isinstance(model_or_config, nn.Module):
        source = resolve_checkpoint(cfg.init_from, "best")
    return _RunFolder(run_dir, name, resume_ckpt, resume_state, source)


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


# ---------------------------------------------------------------------------- 2. data
@dataclass
class _RunData:
    """The tokenizer, labels and tokenised datasets of a run."""

    tokenizer: WordPieceTokenizer
    label_list: list[str] | None
    num_labels: int
    train: TokenDataset
    valid: TokenDataset | None


def _load_data(model_or_config: Any, cfg: TrainConfig, env: DistEnv, run: _RunFolder) -> _RunData:
    """Phase 2: read the data, load or train the tokenizer, find the labels, tokenise."""
    raw = read_raw_data(cfg)
    tok = _tokenizer(model_or_config, cfg, env, run, raw)
    label_list = label_list_for(cfg, raw)
    num_labels = 1 if cfg.regression else len(label_list or [0, 0])
    train_ds, valid_ds = build_datasets(cfg, raw, tok, label_list)
    if train_ds is None:
        raise ValueError("no training data")
    return _RunData(tok, label_list, num_labels, train_ds, valid_ds)


def _tokenizer(
    model_or_config: Any, cfg: TrainConfig, env: DistEnv, run: _RunFolder, raw: RawData
) -> WordPieceTokenizer:
    """``cfg.tokenizer``, else the weights' checkpoint's, else ``init_from``'s (a model given
    with it), else one trained on the training texts."""
    if cfg.tokenizer:
        return WordPieceTokenizer.load(cfg.tokenizer, lowercase=cfg.lowercase)
    if run.source is not None:
        return WordPieceTokenizer.load(run.source)
    if run.resume_ckpt is None and isinstance(model_or_config, nn.Module) and cfg.init_from:
        return WordPieceTokenizer.load(resolve_checkpoint(cfg.init_from, "best"))
    # tokenizers' WordPiece trainer breaks frequency ties in hash-map order
    # (huggingface/tokenizers#1794): train on rank 0 only and share the result
    tok_json = None
    if env.is_main:
        tok_json = WordPieceTokenizer.train(
            raw.tokenizer_texts(), cfg.vocab_size, lowercase=cfg.lowercase
        ).backend.to_str()
    return WordPieceTokenizer(Tokenizer.from_str(broadcast_object(tok_json, env)))


# ---------------------------------------------------------------------------- 3. model
def _build_model_and_optimizer(
    model_or_config: Any, cfg: TrainConfig, env: DistEnv, run: _RunFolder, data: _RunData
) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module]:
    """Phase 3: the model (checked, on the device, frozen where asked), its AdamW optimizer,
    and what the steps call: the model, or its DistributedDataParallel wrapper."""
    given = None if isinstance(model_or_config, str | os.PathLike) else model_or_config
    model = build_model(given, cfg, data.tokenizer, data.num_labels, run.source)
    if run.resume_ckpt is not None and isinstance(given, nn.Module):
        load_model_weights(model, run.resume_ckpt)
    check_model(model, cfg, data.tokenizer, data.num_labels)
    model.to(env.device)
    if freeze_parameters(model, cfg.freeze):
        logger.info(
            "freeze=%r: %d of %d parameters train",
            cfg.freeze,
            trainable_parameters(model),
            unique_parameters(model),
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
    if not env.distributed:
        return model, optimizer, model
    ddp_kwargs: dict[str, Any] = {}
    if env.device.type == "cuda":
        ddp_kwargs["device_ids"] = [env.device.index]
    return model, optimizer, nn.parallel.DistributedDataParallel(model, **ddp_kwargs)


# ---------------------------------------------------------------------------- 4. steps
@dataclass
class _StepPlan:
    """The global batch of every step, and how many steps the run has."""

    batcher: StepBatcher
    total_steps: int


def _plan_steps(cfg: TrainConfig, data: _RunData) -> _StepPlan:
    """Phase 4: the batches of every step and the number of steps (``max_steps``, else
    ``num_epochs`` epochs)."""
    batcher = StepBatcher(len(data.train), cfg.batch_size, cfg.seed)
    return _StepPlan(batcher, cfg.max_steps or cfg.num_epochs * batcher.steps_per_epoch)


# ---------------------------------------------------------------------------- 5. resume
def _resume(
    cfg: TrainConfig,
    env: DistEnv,
    run: _RunFolder,
    optimizer: torch.optim.Optimizer,
    plan: _StepPlan,
) -> tuple[int, Path | None]:
    """Phase 5: the step to start at and the best checkpoint so far; the optimizer and RNG
    states restored from the resumed checkpoint (else each process's RNG seeded), and
    ``metrics.jsonl`` cut back to the start step."""
    start_step = 0
    best: Path | None = None
    if run.resume_ckpt is not None and run.resume_state is not None:
        state, saved = run.resume_state
        run.resume_state = None  # the optimizer state is not kept twice
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
            seed_all(derived_seed(cfg.seed, 1, env.rank, start_step))
        index = read_index(run.resume_ckpt.parent)
        if index.get("best"):
            best = run.resume_ckpt.parent / str(index["best"])
        logger.info("resuming from %s at step %d", run.resume_ckpt, start_step)
    else:
        seed_all(derived_seed(cfg.seed, 1, env.rank))
    if start_step >= plan.total_steps:
        logger.warning("nothing to do: step %d >= total steps %d", start_step, plan.total_steps)
    if env.is_main and run.resume_ckpt is not None:
        truncate_metrics(run.path / METRICS_FILE, start_step)
    barrier(env)
    return start_step, best


# ---------------------------------------------------------------------------- 6. checkpoints
class _Checkpoints:
    """Phase 6: writes the run's checkpoints (rank 0) and knows the last, the best and the
    last good one (finite weights) on every process."""

    def __init__(
        self,
        cfg: TrainConfig,
        env: DistEnv,
        run: _RunFolder,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: _RunData,
        plan: _StepPlan,
        best: Path | None,
    ) -> None:
        self.cfg, self.env, self.run, self.model, self.optimizer = cfg, env, run, model, optimizer
        self.data, self.plan = data, plan
        self.metric_name = cfg.metric_for_best or (
            "accuracy" if cfg.task == "finetune" and not cfg.regression else "loss"
        )
        self.greater = self.metric_name not in ("loss", "perplexity")
        self.train_config = {
            **cfg.to_dict(),
            "output_dir": str(run.path),
            "run_name": run.name,
            "label_list": data.label_list,
            "resume": False,
        }
        self.best = best
        self.last: Path | None = None
        self.good: Path | None = run.resume_ckpt  # the last checkpoint known to be finite

    def save(self, step: int, metrics: dict[str, float] | None, train_loss: float | None) -> None:
        """Write checkpoint ``step`` (rank 0) after checking the weights on every process.

        Raises
        ------
        FloatingPointError
            If a weight or ``train_loss`` is not finite (on every process, so that all stop
            together), naming the last good checkpoint.
        """
        cfg, env = self.cfg, self.env
        try:
            check_finite(self.model, step, train_loss)
        except FloatingPointError as e:
            raise FloatingPointError(
                f"{e}. Last good checkpoint: {self.good or 'none written yet'}. Lower "
                "learning_rate, enable max_grad_norm or check the data"
            ) from None
        rng_states = all_gather_objects(capture_rng_state(), env)
        root = self.run.path / "checkpoints"
        if env.is_main:
            self.last = save_checkpoint(
                self.run.path,
                step,
                model=self.model,
                tokenizer=self.data.tokenizer,
                optimizer=self.optimizer,
                train_config=self.train_config,
                trainer_state={
                    "task": cfg.task,
                    "total_steps": self.plan.total_steps,
                    "world_size": env.world_size,
                    "train_loss": train_loss,
                    "metrics": metrics or {},
                    "label_list": self.data.label_list,
                },
                rng_states=rng_states,
                metric=None if metrics is None else metrics.get(self.metric_name),
                greater_is_better=self.greater,
                keep_last=cfg.keep_last,
            )
            index = read_index(root)
            self.best = root / index["best"] if index.get("best") else None
        barrier(env)
        # known on every process, so that any of them can name it in a NaN stop
        self.good = root / f"step-{step:08d}"


# ---------------------------------------------------------------------------- 7. step loop
@dataclass
class _Window:
    """Accumulators of one logging window (wall and process CPU clocks started at creation)."""

    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    data_s: float = 0.0
    compute_s: float = 0.0
    t0: float = field(default_factory=time.perf_counter)
    cpu0: float = field(default_factory=time.process_time)


@dataclass
class _StepOutcome:
    """What one optimizer step measured (loss and token count over all processes)."""

    loss: float
    lr: float
    grad_norm: float
    tokens: int
    layer_norms: Any = None  # per-layer gradient norms, on the steps that log them


@dataclass
class _Progress:
    """What the step loop leaves: the last logged training loss, the last validation
    metrics, and the tokens seen."""

    train_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tokens_seen: int = 0


def _run_steps(
    cfg: TrainConfig,
    env: DistEnv,
    run: _RunFolder,
    model: nn.Module,
    runner: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: _RunData,
    plan: _StepPlan,
    start_step: int,
    checkpoints: _Checkpoints,
    callbacks: Sequence[Callable],
) -> _Progress:
    """Phase 7: the steps from ``start_step``: train, log, evaluate, checkpoint, call back."""
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    total_steps, steps_per_epoch = plan.total_steps, plan.batcher.steps_per_epoch
    metrics_path = run.path / METRICS_FILE

    def log(record: dict[str, Any]) -> None:
        if env.is_main:
            append_metrics(metrics_path, record)

    micro_batches = _micro_batches(cfg, env, data, plan, start_step)
    autocast = autocast_context(cfg, env.device)
    params = [p for p in model.parameters() if p.requires_grad]
    logger.info(
        "%s: %d unique parameters, %d train / %d valid examples, steps %d..%d, %d process(es)",
        cfg.task,
        unique_parameters(model),
        len(data.train),
        0 if data.valid is None else len(data.valid),
        start_step,
        total_steps,
        env.world_size,
    )
    it = iter(micro_batches)
    window = _Window()
    progress = _Progress()
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
    with bar, redirect:
        for step in range(start_step, total_steps):
            t0 = time.perf_counter()
            micro = [next(it) for _ in range(cfg.gradient_accumulation_steps)]
            t1 = time.perf_counter()
            out = _train_step(
                step,
                micro,
                cfg,
                env,
                model,
                runner,
                optimizer,
                params,
                autocast,
                plan,
                checkpoints.good,
            )
            t2 = time.perf_counter()
            done = step + 1
            progress.tokens_seen += out.tokens
            window.loss += out.loss
            window.steps += 1
            window.tokens += out.tokens
            window.data_s += t1 - t0
            window.compute_s += t2 - t1
            record = {
                "step": done,
                "split": "train",
                "loss": out.loss,
                "lr": out.lr,
                "grad_norm": out.grad_norm,
            }
            bar.update(1)
            if cfg.log_every and (done % cfg.log_every == 0 or done == total_steps):
                elapsed = time.perf_counter() - window.t0
                progress.train_loss = window.loss / window.steps
                if out.layer_norms is not None:
                    record["layer_grad_norms"] = out.layer_norms
                record.update(
                    loss=progress.train_loss,
                    tokens_per_s=window.tokens / max(elapsed, 1e-9),
                    data_time_s=window.data_s,
                    compute_time_s=window.compute_s,
                    cpu_time_s=time.process_time() - window.cpu0,
                    tokens=window.tokens,
                    epoch=step // steps_per_epoch,
                )
                log(record)
                bar.set_postfix(
                    loss=f"{progress.train_loss:.3f}",
                    lr=f"{out.lr:.2e}",
                    tok_s=f"{record['tokens_per_s']:.0f}",
                )
                window = _Window()
            elif not cfg.log_every or progress.train_loss is None:
                progress.train_loss = out.loss
            metrics = _evaluate_and_checkpoint(
                done, cfg, env, model, data, plan, checkpoints, progress.train_loss, log
            )
            if metrics is not None:
                progress.metrics = metrics
            for cb in callbacks:
                cb(record)
    return progress


def _micro_batches(
    cfg: TrainConfig, env: DistEnv, data: _RunData, plan: _StepPlan, start_step: int
) -> Any:
    """The loader of this process's shards of the accumulation micro-batches, steps
    ``start_step`` to the end, in order."""
    accum = cfg.gradient_accumulation_steps
    n_batches = (plan.total_steps - start_step) * accum
    return make_loader(
        data.train,
        KeyBatches(
            lambda: train_batches(
                plan.batcher,
                start_step,
                plan.total_steps,
                accumulation_steps=accum,
                rank=env.rank,
                world_size=env.world_size,
            ),
            n_batches,
        ),
        make_collator(cfg, data.tokenizer),
        cfg.num_workers,
        derived_seed(cfg.seed, 2, env.rank),
    )


def _train_step(
    step: int,
    micro: list[dict[str, torch.Tensor]],
    cfg: TrainConfig,
    env: DistEnv,
    model: nn.Module,
    runner: nn.Module,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    autocast: contextlib.AbstractContextManager,
    plan: _StepPlan,
    last_good: Path | None,
) -> _StepOutcome:
    """One optimizer step over the micro-batches of step ``step`` (0-based): forward and
    backward, each loss weighted by its share of the global batch's targets; then clip, stop
    on a non-finite loss or gradient norm before the update, set the learning rate, update.

    Raises
    ------
    ValueError
        If the global batch has no target token.
    FloatingPointError
        If the loss or the gradient norm is not finite (``last_good`` named).
    """
    accum = len(micro)
    counts = [count_targets(b, cfg.task) for b in micro]
    total = all_reduce_sum(torch.tensor([float(sum(counts))], dtype=torch.float64), env)
    n_global = float(total[0])
    if n_global <= 0:
        raise ValueError(f"step {step}: the global batch has no target token")
    factor = lr_factor(
        step,
        plan.total_steps,
        cfg.warmup_for(plan.total_steps),
        cfg.lr_schedule,
        cfg.min_lr_ratio,
    )
    lr = cfg.learning_rate * factor
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
    loss_sum = torch.zeros((), dtype=torch.float64)
    n_tokens = 0
    with _rebuild_once(model, env):  # the MPO weights: one rebuild for all micro-batches
        for m, batch in enumerate(micro):
            n_tokens += int(batch["attention_mask"].sum())
            batch = device_batch(model, batch, env.device)
            sync = (
                cast(Any, runner).no_sync()
                if env.distributed and m < accum - 1
                else contextlib.nullcontext()
            )
            with sync:
                with autocast, trusted(model):
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
            f"{last_good or 'none written yet'}. Lower learning_rate, enable "
            "max_grad_norm or check the data"
        )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return _StepOutcome(loss, lr, grad_norm, int(stats[1]), layer_norms)


def _rebuild_once(model: nn.Module, env: DistEnv) -> contextlib.AbstractContextManager:
    """``encoder.step_weights()`` of an MPOBERT model (the MPO weights rebuilt once per
    optimizer step, their gradient summed over the micro-batches and back-propagated into
    the cores once), or a no-op: under DistributedDataParallel, whose gradient hooks expect
    every parameter's gradient during each backward pass, the rebuild runs per micro-batch."""
    encoder = getattr(getattr(model, "bert", None), "encoder", None)
    if env.distributed or not isinstance(encoder, MPOBertEncoder):
        return contextlib.nullcontext()
    return encoder.step_weights()


def _evaluate_and_checkpoint(
    done: int,
    cfg: TrainConfig,
    env: DistEnv,
    model: nn.Module,
    data: _RunData,
    plan: _StepPlan,
    checkpoints: _Checkpoints,
    train_loss: float | None,
    log: Callable[[dict[str, Any]], None],
) -> dict[str, float] | None:
    """After step ``done`` (1-based): the validation metrics when this step evaluates (else
    None), logged; a checkpoint when this step saves (``save_every``, and the last step)."""
    metrics = None
    if data.valid is not None and cfg.evaluates_after(
        done, plan.total_steps, plan.batcher.steps_per_epoch
    ):
        metrics = evaluate_model(model, data.valid, cfg, data.tokenizer, env)
        log({"step": done, "split": "valid", **metrics})
        logger.info("step %d validation: %s", done, metrics)
    if (cfg.save_every and done % cfg.save_every == 0) or done == plan.total_steps:
        checkpoints.save(done, metrics, train_loss)
    return metrics


# ---------------------------------------------------------------------------- 8. report
def _report(
    cfg: TrainConfig,
    env: DistEnv,
    run: _RunFolder,
    model: nn.Module,
    data: _RunData,
    plan: _StepPlan,
    start_step: int,
    checkpoints: _Checkpoints,
    progress: _Progress,
    t_start: float,
) -> TrainResult:
    """Phase 8: what the run did, with the last and best checkpoints known on every
    process."""
    last, best = checkpoints.last, checkpoints.best
    if start_step >= plan.total_steps and last is None and run.resume_ckpt is not None:
        last = run.resume_ckpt
    if env.distributed:
        last_s, best_s = broadcast_object((str(last or ""), str(best or "")), env)
        last = Path(last_s) if last_s else None
        best = Path(best_s) if best_s else None
    return TrainResult(
        model=model,
        tokenizer=data.tokenizer,
        run_dir=run.path,
        step=max(start_step, plan.total_steps),
        train_loss=progress.train_loss,
        metrics=progress.metrics,
        checkpoint=last,
        best_checkpoint=best,
        num_parameters=unique_parameters(model),
        tokens_seen=progress.tokens_seen,
        elapsed_s=time.perf_counter() - t_start,
        num_train_examples=len(data.train),
        num_valid_examples=0 if data.valid is None else len(data.valid),
        world_size=env.world_size,
        num_trainable_parameters=trainable_parameters(model),
        config=cfg,
    )
