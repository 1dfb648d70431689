"""A run's data: the raw text or TSV examples its config names, the label list, the
tokenised training and validation sets, the collator, and the loader of the step loop.

Pre-training reads plain text (``train_data``, else the built-in corpus; ``valid_data``,
else a held-out share of the documents) into masked-LM sequences. Fine-tuning reads
GLUE-style TSV files into classification examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

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
from .config import TrainConfig

__all__ = [
    "KeyBatches",
    "RawData",
    "build_datasets",
    "count_targets",
    "label_list_for",
    "make_collator",
    "make_loader",
    "read_raw_data",
]


# ---------------------------------------------------------------------------- raw data
@dataclass
class RawData:
    """The examples of a run before tokenisation: texts (pre-training) or GLUE-style TSV
    examples, one entry per file (fine-tuning)."""

    train_texts: list[str] | None = None
    valid_texts: list[str] | None = None
    train_glue: list[GlueExamples] = field(default_factory=list)
    valid_glue: list[GlueExamples] = field(default_factory=list)

    def tokenizer_texts(self) -> list[str]:
        """The training texts a new tokenizer learns its vocabulary from."""
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


def read_raw_data(cfg: TrainConfig, *, for_eval_only: bool = False) -> RawData:
    """Raw text or TSV examples; ``for_eval_only`` skips training files not needed."""
    if cfg.task == "pretrain":
        if for_eval_only and cfg.valid_data:
            return RawData(valid_texts=read_text(cfg.valid_data, encoding=cfg.encoding))
        docs = (
            read_text(cfg.train_data, encoding=cfg.encoding) if cfg.train_data else default_corpus()
        )
        if cfg.valid_data:
            valid = read_text(cfg.valid_data, encoding=cfg.encoding)
            train = docs
        else:
            train, valid = split_documents(docs, cfg.valid_fraction, cfg.seed)
        return RawData(train_texts=train, valid_texts=valid or None)
    if not cfg.train_data and not for_eval_only:
        raise ValueError("fine-tuning needs train_data: one or more GLUE-style TSV files")
    return RawData(
        train_glue=[] if for_eval_only else [_read_glue(cfg, p) for p in cfg.train_data],
        valid_glue=[_read_glue(cfg, p) for p in cfg.valid_data],
    )


def label_list_for(cfg: TrainConfig, raw: RawData) -> list[str] | None:
    """The class labels of a fine-tuning run: ``cfg.label_list``, else those of the training
    files in sorted order; None for pre-training and regression.

    Raises
    ------
    ValueError
        If the training data holds a single label, or a real-valued one (file and line
        named).
    """
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


# ---------------------------------------------------------------------------- datasets
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


def build_datasets(
    cfg: TrainConfig, raw: RawData, tok: WordPieceTokenizer, label_list: list[str] | None
) -> tuple[TokenDataset | None, TokenDataset | None]:
    """The tokenised ``(train, valid)`` sets (None where ``raw`` has no such examples), cut
    to ``max_train_examples``/``max_valid_examples``."""
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


# ---------------------------------------------------------------------------- batches
def make_collator(cfg: TrainConfig, tok: WordPieceTokenizer) -> Callable:
    """Masked-LM collator (masks drawn from ``cfg.seed``) or classification collator."""
    if cfg.task == "pretrain":
        return MLMCollator(tok, cfg.mlm_probability, seed=cfg.seed)
    return ClassificationCollator(tok)


def count_targets(batch: dict[str, torch.Tensor], task: str) -> int:
    """What the loss of ``batch`` averages over: masked tokens (pre-training) or examples."""
    if task == "pretrain":
        return int((batch["labels"] != -100).sum())
    return int(batch["labels"].shape[0])


class KeyBatches:
    """A batch sampler over precomputed key lists (lazy): ``make()`` yields the key lists,
    ``n`` is how many there are."""

    def __init__(self, make: Callable[[], Iterator[list[tuple[int, int]]]], n: int) -> None:
        self.make, self.n = make, n

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return self.make()

    def __len__(self) -> int:
        return self.n


def make_loader(ds: TokenDataset, batches: Any, collate: Callable, workers: int, seed: int) -> Any:
    """A ``DataLoader`` over ``ds`` taking its batches of keys from ``batches``."""
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
