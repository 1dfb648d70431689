"""The model a run trains: built new from a config, loaded from a checkpoint, or given;
checked against the run's tokenizer, sequence length and labels."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..tokenization import WordPieceTokenizer
from .checkpoint import SHAPE_KEYS, check_same_shape
from .config import DEFAULT_MODEL, TrainConfig

__all__ = ["build_model", "check_model", "model_classes", "unique_parameters"]

logger = logging.getLogger(__name__)


def model_classes() -> tuple[Any, Any, Any]:
    """``(MPOBertConfig, MPOBertForMaskedLM, MPOBertForSequenceClassification)``, imported
    when first needed."""
    from .. import MPOBertConfig, MPOBertForMaskedLM, MPOBertForSequenceClassification

    return MPOBertConfig, MPOBertForMaskedLM, MPOBertForSequenceClassification


def unique_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``, a shared tensor counted once where the model can
    say so (``num_parameters(unique=True)``)."""
    counter = getattr(model, "num_parameters", None)
    if callable(counter):
        try:
            return int(counter(unique=True))
        except TypeError:
            pass
    return sum(p.numel() for p in model.parameters())


def build_model(
    model_or_config: Any,
    cfg: TrainConfig,
    tok: WordPieceTokenizer,
    num_labels: int,
    source: Path | None,
) -> nn.Module:
    """The model to train: ``model_or_config`` itself when it is a module; else loaded from
    checkpoint ``source`` when given; else new from a config (``model_or_config``: an
    ``MPOBertConfig`` or a dict of its fields; None: ``cfg.model``), with the tokenizer's
    vocabulary and ``num_labels``."""
    if isinstance(model_or_config, nn.Module):
        return model_or_config
    MPOBertConfig, ForMLM, ForCls = model_classes()
    cls = ForMLM if cfg.task == "pretrain" else ForCls
    if source is not None:
        return _from_checkpoint(cls, source, model_or_config, cfg, num_labels)
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


def _from_checkpoint(
    cls: Any, source: Path, model_or_config: Any, cfg: TrainConfig, num_labels: int
) -> nn.Module:
    """``cls.from_pretrained(source)``; model fields given explicitly (a config, a dict or
    ``cfg.model``) must match the checkpoint's shape, the others (dropout, ...) apply."""
    if model_or_config is None:
        given = dict(cfg.model)
    elif isinstance(model_or_config, dict):
        given = dict(model_or_config)
    elif hasattr(model_or_config, "to_dict"):
        given = model_or_config.to_dict()
    else:
        raise TypeError(
            "model_or_config must be a model, an MPOBertConfig, a dict of its fields, a "
            f"checkpoint path or None, got {type(model_or_config).__name__}"
        )
    for key in ("vocab_size", "pad_token_id", "num_labels"):
        given.pop(key, None)
    raw = json.loads((source / "config.json").read_text(encoding="utf-8"))
    stored = raw.get("config", raw)
    check_same_shape(stored, given, str(source))
    overrides = {k: v for k, v in given.items() if k not in SHAPE_KEYS and stored.get(k) != v}
    if cfg.task == "finetune":
        overrides["num_labels"] = num_labels
    return cls.from_pretrained(source, **overrides)


def check_model(
    model: nn.Module, cfg: TrainConfig, tok: WordPieceTokenizer, num_labels: int
) -> None:
    """Refuse a model that cannot take the run's data.

    Raises
    ------
    ValueError
        If ``max_seq_length`` exceeds the model's positions, the tokenizer has more tokens
        than the model's vocabulary, or (fine-tuning) the model's ``num_labels`` differs from
        the data's.
    """
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


def device_batch(model: nn.Module, batch: dict[str, torch.Tensor], device: Any) -> dict[str, Any]:
    """``batch`` checked where it is, its mask dropped if it masks nothing, then moved.

    The collator's batches are CPU tensors: checking their values there
    (``model.validate_batch``) reads nothing back from the device, and neither does
    dropping an all-ones ``attention_mask`` (it changes nothing; without it attention runs
    its unmasked kernels). Call the model on the result inside ``model.trusted_inputs()``,
    so that the forward pass does not repeat those checks with host syncs.

    Raises
    ------
    ValueError, TypeError
        From ``validate_batch``, for values the model cannot take.
    """
    validate = getattr(model, "validate_batch", None)
    if validate is not None:  # an MPOBERT model (another module checks in its forward)
        validate(batch)
        mask = batch.get("attention_mask")
        if mask is not None and bool(mask.all()):
            batch = {k: v for k, v in batch.items() if k != "attention_mask"}
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def trusted(model: nn.Module) -> contextlib.AbstractContextManager:
    """``model.trusted_inputs()`` (for a batch from :func:`device_batch`), or nothing for
    a model without it."""
    inputs = getattr(model, "trusted_inputs", None)
    return inputs() if inputs is not None else contextlib.nullcontext()
