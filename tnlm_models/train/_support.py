"""Set-up helpers of the trainer: config and data arguments, seeding, autocast, datasets,
loaders and model construction (private; used by ``loop`` and ``evaluation``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import (
    ClassificationCollator,
    ClassificationDataset,
    GlueExamples,
    KeyedDataset,
    MLMCollator,
    TokenDataset,
    build_mlm_dataset,
    check_class_labels,
    check_label_list,
    default_corpus,
    encode_classification,
    infer_label_list,
    read_glue_tsv,
    read_text,
    split_documents,
)
from ..tokenization import WordPieceTokenizer
from .checkpoint import SHAPE_KEYS, check_same_shape
from .config import DEFAULT_MODEL, TrainConfig, load_config

logger = logging.getLogger("tnlm_models.train.loop")

DataArg = str | os.PathLike | Sequence[str | os.PathLike] | dict[str, Any] | None


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
        encoding=cfg.encoding,
    )


def _read_raw(cfg: TrainConfig, *, for_eval_only: bool = False) -> _Raw:
    """Raw text or TSV examples; ``for_eval_only`` skips training files not needed."""
    if cfg.task == "pretrain":
        if for_eval_only and cfg.valid_data:
            return _Raw(valid_texts=read_text(cfg.valid_data, encoding=cfg.encoding))
        docs = (
            read_text(cfg.train_data, encoding=cfg.encoding) if cfg.train_data else default_corpus()
        )
        if cfg.valid_data:
            valid = read_text(cfg.valid_data, encoding=cfg.encoding)
            train = docs
        else:
            train, valid = split_documents(docs, cfg.valid_fraction, cfg.seed)
        return _Raw(train_texts=train, valid_texts=valid or None)
    if not cfg.train_data and not for_eval_only:
        raise ValueError("fine-tuning needs train_data: one or more GLUE-style TSV files")
    return _Raw(
        train_glue=[] if for_eval_only else [_read_glue(cfg, p) for p in cfg.train_data],
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
        return check_label_list(cfg.label_list)
    labels: list[str] = []
    for ex in raw.train_glue:
        check_class_labels(ex)  # a real-valued label names its file and line
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
