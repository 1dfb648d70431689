"""Data pipeline: text corpora, GLUE-style TSV files, masked-LM and classification batches.

Everything random here is a pure function of a seed and a position, so that a run resumed
from a checkpoint sees exactly the batches and masks the uninterrupted run saw, and so that
one process and ``N`` data-parallel processes see the same global batches:

* the order of examples in epoch ``e`` is ``default_rng([seed, e]).permutation(n)``
  (:class:`StepBatcher`), and the batch of optimizer step ``s`` is a slice of it;
* the mask of example ``i`` in epoch ``e`` is drawn from ``default_rng([seed, e, i])``
  (:class:`MLMCollator`), whichever process or worker builds the batch.

Text layouts
------------
``"lines"``
    every non-empty line is one example, truncated to the sequence length;
``"blocks"``
    the token stream of all lines is packed into blocks of ``max_seq_length - 2`` tokens,
    each wrapped as ``[CLS] block [SEP]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tokenization import WordPieceTokenizer

__all__ = [
    "EVAL_EPOCH",
    "TEXT_FORMATS",
    "ClassificationCollator",
    "ClassificationDataset",
    "GlueExamples",
    "GlueLayout",
    "KeyedDataset",
    "MLMCollator",
    "StepBatcher",
    "TokenDataset",
    "build_mlm_dataset",
    "default_corpus",
    "detect_glue_layout",
    "encode_classification",
    "eval_batches",
    "read_glue_tsv",
    "read_text",
    "split_documents",
    "train_batches",
]

logger = logging.getLogger(__name__)

TEXT_FORMATS = ("lines", "blocks")
#: epoch key used for evaluation masks, so that evaluation masks never change between runs
EVAL_EPOCH = 1_000_003


# ---------------------------------------------------------------------------- text corpora
def default_corpus() -> list[str]:
    """The built-in corpus: the paragraphs of the standard library's ``pydoc_data.topics``.

    Every Python installation carries this text (the language reference's help topics,
    about 0.5 MB), so pre-training works with no data at all.

    Returns
    -------
    list of str
        Non-empty paragraphs, in a fixed order.
    """
    from pydoc_data.topics import topics

    paragraphs: list[str] = []
    for key in sorted(topics):
        for para in topics[key].split("\n\n"):
            para = " ".join(para.split())
            if para:
                paragraphs.append(para)
    return paragraphs


def _text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ValueError(f"data folder {path} holds no files")
        return files
    raise FileNotFoundError(f"data path not found: {path}")


def read_text(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Read the non-empty lines of text files, or of every file under folders.

    Parameters
    ----------
    paths : path or sequence of paths
        Files, or folders read recursively in sorted order (hidden files skipped).

    Returns
    -------
    list of str
        Stripped non-empty lines, one document each.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If no path is given, or the files hold no text.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError("no data files given")
    docs: list[str] = []
    for p in paths:
        for f in _text_files(Path(p)):
            with open(f, encoding="utf-8", errors="replace") as fh:
                n_before = len(docs)
                docs.extend(line.strip() for line in fh if line.strip())
            if len(docs) == n_before:
                logger.warning("data file %s holds no text", f)
    if not docs:
        raise ValueError(f"data files are empty (no non-blank line): {[str(p) for p in paths]}")
    return docs


def split_documents(
    docs: Sequence[str], valid_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split documents into train and validation sets by a seeded rule.

    Document ``i`` goes to validation when it is among the first
    ``ceil(valid_fraction * n)`` entries of ``default_rng(seed).permutation(n)``;
    the order within each part is the original order.

    Parameters
    ----------
    docs : sequence of str
    valid_fraction : float
        In ``[0, 1)``; 0 gives an empty validation set.
    seed : int

    Returns
    -------
    train, valid : list of str
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
    n = len(docs)
    n_valid = int(np.ceil(valid_fraction * n)) if valid_fraction > 0 else 0
    if n_valid and n - n_valid < 1:
        raise ValueError(f"cannot split {n} document(s) into non-empty train and validation sets")
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[:n_valid]] = True
    train = [d for d, c in zip(docs, chosen) if not c]
    valid = [d for d, c in zip(docs, chosen) if c]
    return train, valid


# ---------------------------------------------------------------------------- datasets
class TokenDataset(torch.utils.data.Dataset):
    """Encoded examples: each item is a dict with ``input_ids``, ``token_type_ids``
    and optionally ``label``."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def num_tokens(self) -> int:
        """Total number of tokens, special tokens included."""
        return sum(len(it["input_ids"]) for it in self.items)


def build_mlm_dataset(
    docs: Sequence[str],
    tokenizer: WordPieceTokenizer,
    max_seq_length: int,
    text_format: str = "blocks",
) -> TokenDataset:
    """Encode documents for masked-LM training.

    Parameters
    ----------
    docs : sequence of str
    tokenizer : WordPieceTokenizer
    max_seq_length : int
        Length of an example including ``[CLS]`` and ``[SEP]``.
    text_format : {"lines", "blocks"}

    Returns
    -------
    TokenDataset
    """
    if text_format not in TEXT_FORMATS:
        raise ValueError(f"text_format must be one of {TEXT_FORMATS}, got {text_format!r}")
    if max_seq_length < 8:
        raise ValueError(f"max_seq_length must be >= 8, got {max_seq_length}")
    items: list[dict[str, Any]] = []
    if text_format == "lines":
        for ids, types in tokenizer.encode_batch(list(docs), max_length=max_seq_length):
            if len(ids) > 2:
                items.append({"input_ids": ids, "token_type_ids": types})
    else:
        stream: list[int] = []
        for ids in tokenizer.encode_plain(list(docs)):
            stream.extend(ids)
        body = max_seq_length - 2
        for start in range(0, len(stream), body):
            chunk = stream[start : start + body]
            if len(chunk) < 2:
                continue
            ids = [tokenizer.cls_id, *chunk, tokenizer.sep_id]
            items.append({"input_ids": ids, "token_type_ids": [0] * len(ids)})
    if not items:
        raise ValueError("the text yields no example after tokenization")
    return TokenDataset(items)


# ---------------------------------------------------------------------------- GLUE TSV
@dataclass(frozen=True)
class GlueLayout:
    """Where the fields of a GLUE-style TSV file are.

    Columns are indices (int) or header names (str); ``text_b`` is None for single
    sentences.
    """

    name: str
    header: bool
    text_a: int | str
    text_b: int | str | None
    label: int | str | None


#: known layouts, recognised by :func:`detect_glue_layout`
KNOWN_LAYOUTS = {
    "sst-2": GlueLayout("sst-2", header=True, text_a="sentence", text_b=None, label="label"),
    "cola": GlueLayout("cola", header=False, text_a=3, text_b=None, label=1),
    "pair": GlueLayout("pair", header=True, text_a="sentence1", text_b="sentence2", label="label"),
}


def _read_tsv_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        rows = [line.rstrip("\r\n").split("\t") for line in fh]
    while rows and rows[-1] == [""]:
        rows.pop()
    if not rows:
        raise ValueError(f"data file is empty: {path}")
    return rows


def detect_glue_layout(path: str | os.PathLike) -> GlueLayout:
    """Recognise the SST-2 (``sentence\\tlabel`` header), CoLA (four columns, no header)
    and sentence-pair (``sentence1``, ``sentence2``, ``label`` header) layouts.

    Raises
    ------
    ValueError
        If the file matches none of them (then give the columns explicitly).
    """
    p = Path(path)
    first = _read_tsv_rows(p)[0]
    if "sentence" in first and "label" in first:
        return KNOWN_LAYOUTS["sst-2"]
    if {"sentence1", "sentence2", "label"} <= set(first):
        return KNOWN_LAYOUTS["pair"]
    if len(first) == 4 and first[1] in ("0", "1"):
        return KNOWN_LAYOUTS["cola"]
    raise ValueError(
        f"cannot recognise the layout of {p} (first row {first[:4]}); known layouts are "
        f"{sorted(KNOWN_LAYOUTS)}; set text_a_column, text_b_column and label_column"
    )


@dataclass
class GlueExamples:
    """Raw classification examples read from a TSV file."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: list[str]
    lines: list[int]
    path: str


def read_glue_tsv(
    path: str | os.PathLike,
    *,
    text_a: int | str | None = None,
    text_b: int | str | None = None,
    label: int | str | None = None,
    header: bool | None = None,
) -> GlueExamples:
    """Read a GLUE-format TSV file with single sentences or sentence pairs.

    Parameters
    ----------
    path : path
    text_a, text_b, label : int or str, optional
        Column index or header name of the first text, the second text (pairs only) and
        the label. When ``text_a`` is None the layout is detected
        (:func:`detect_glue_layout`).
    header : bool, optional
        Whether the first row is a header; default: True when a column is given by name.

    Returns
    -------
    GlueExamples

    Raises
    ------
    ValueError
        On an empty file, an unknown column name, or a row with too few columns
        (the message names the file and line).
    """
    p = Path(path)
    if text_a is None:
        layout = detect_glue_layout(p)
        text_a, text_b, label, header = layout.text_a, layout.text_b, layout.label, layout.header
    if label is None:
        raise ValueError(f"label_column must be given for {p}")
    cols = [text_a, label] + ([text_b] if text_b is not None else [])
    if header is None:
        header = any(isinstance(c, str) for c in cols)
    rows = _read_tsv_rows(p)
    start = 0
    names: list[str] = []
    if header:
        names, start = rows[0], 1
    idx: list[int] = []
    for c in cols:
        if isinstance(c, bool) or not isinstance(c, int | str):
            raise TypeError(f"a column must be an int index or a str name, got {c!r}")
        if isinstance(c, str):
            if not header:
                raise ValueError(f"column {c!r} given by name but {p} is read without header")
            if c not in names:
                raise ValueError(f"column {c!r} not in the header of {p}; columns are {names}")
            idx.append(names.index(c))
        else:
            idx.append(c)
    need = max(idx) + 1
    a_list: list[str] = []
    b_list: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if row == [""]:
            continue
        if len(row) < need:
            raise ValueError(
                f"{p}:{lineno}: malformed row, expected at least {need} tab-separated "
                f"columns, got {len(row)}"
            )
        a_list.append(row[idx[0]])
        labels.append(row[idx[1]].strip())
        if text_b is not None:
            b_list.append(row[idx[2]])
        lines.append(lineno)
    if not a_list:
        raise ValueError(f"data file holds no example: {p}")
    return GlueExamples(a_list, b_list if text_b is not None else None, labels, lines, str(p))


class ClassificationDataset(TokenDataset):
    """Encoded classification examples with their label set."""

    def __init__(self, items: list[dict[str, Any]], label_list: list[str] | None) -> None:
        super().__init__(items)
        self.label_list = label_list


def encode_classification(
    examples: GlueExamples,
    tokenizer: WordPieceTokenizer,
    max_seq_length: int,
    label_list: Sequence[str] | None,
) -> ClassificationDataset:
    """Tokenize examples and map labels to indices.

    Parameters
    ----------
    label_list : sequence of str or None
        The label set, index ``k`` for ``label_list[k]``; None means regression
        (labels parsed as floats).

    Raises
    ------
    ValueError
        If a label is outside the label set or not a number (file and line named).
    """
    enc = tokenizer.encode_batch(examples.texts_a, examples.texts_b, max_length=max_seq_length)
    items: list[dict[str, Any]] = []
    lookup = None if label_list is None else {lab: k for k, lab in enumerate(label_list)}
    for (ids, types), lab, line in zip(enc, examples.labels, examples.lines):
        if lookup is None:
            try:
                y: float | int = float(lab)
            except ValueError:
                raise ValueError(
                    f"{examples.path}:{line}: label {lab!r} is not a number (regression)"
                ) from None
        else:
            if lab not in lookup:
                raise ValueError(
                    f"{examples.path}:{line}: label {lab!r} is outside the label set "
                    f"{list(label_list or [])}"
                )
            y = lookup[lab]
        items.append({"input_ids": ids, "token_type_ids": types, "label": y})
    return ClassificationDataset(items, None if label_list is None else list(label_list))


def infer_label_list(labels: Sequence[str]) -> list[str]:
    """Sorted distinct labels (numerically when all are integers)."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


# ---------------------------------------------------------------------------- batching
def _pad(seqs: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(seqs), length), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


class MLMCollator:
    """Masked-LM batches with dynamic padding.

    Of the non-special tokens, each is chosen with probability ``mlm_probability``
    (at least one per example); a chosen token becomes ``[MASK]`` with probability 0.8,
    a random token with probability 0.1, and stays with probability 0.1. Labels are the
    original ids at chosen positions and -100 elsewhere.

    Items are ``(epoch, index, example)`` triples (see :class:`KeyedDataset`); the mask of
    an example is drawn from ``numpy.random.default_rng([seed, epoch, index])``.

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask``, ``token_type_ids``, ``labels``: int64 tensors of
        shape ``(batch, longest)``.
    """

    def __init__(
        self,
        tokenizer: WordPieceTokenizer,
        mlm_probability: float = 0.15,
        seed: int = 0,
        pad_to_multiple_of: int = 1,
    ) -> None:
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}")
        self.pad_id = tokenizer.pad_id
        self.mask_id = tokenizer.mask_id
        self.vocab_size = tokenizer.vocab_size
        self.special = np.array(sorted(tokenizer.special_ids))
        self.mlm_probability = mlm_probability
        self.seed = seed
        self.multiple = pad_to_multiple_of

    def mask_one(self, ids: Sequence[int], epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Masked ids and labels for one example."""
        rng = np.random.default_rng([self.seed, epoch, index])
        x = np.asarray(ids, dtype=np.int64)
        candidates = ~np.isin(x, self.special)
        u = rng.random(len(x))
        chosen = candidates & (u < self.mlm_probability)
        if not chosen.any() and candidates.any():
            pos = np.flatnonzero(candidates)
            chosen[pos[rng.integers(len(pos))]] = True
        labels = np.where(chosen, x, -100)
        action = rng.random(len(x))
        random_tokens = rng.integers(0, self.vocab_size, len(x))
        x = np.where(chosen & (action < 0.8), self.mask_id, x)
        x = np.where(chosen & (action >= 0.8) & (action < 0.9), random_tokens, x)
        return x, labels

    def __call__(self, batch: Sequence[tuple[int, int, dict[str, Any]]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for _, _, item in batch)
        length = -(-length // self.multiple) * self.multiple
        masked, labels = zip(*(self.mask_one(it["input_ids"], e, i) for e, i, it in batch))
        return {
            "input_ids": _pad(masked, self.pad_id, length),
            "attention_mask": _pad([[1] * len(m) for m in masked], 0, length),
            "token_type_ids": _pad([it["token_type_ids"] for _, _, it in batch], 0, length),
            "labels": _pad(labels, -100, length),
        }


class ClassificationCollator:
    """Classification batches with dynamic padding; ``labels`` is int64 (classes) or
    float32 (regression), shape ``(batch,)``."""

    def __init__(self, tokenizer: WordPieceTokenizer, pad_to_multiple_of: int = 1) -> None:
        self.pad_id = tokenizer.pad_id
        self.multiple = pad_to_multiple_of

    def __call__(self, batch: Sequence[tuple[int, int, dict[str, Any]]]) -> dict[str, torch.Tensor]:
        items = [it for _, _, it in batch]
        length = max(len(it["input_ids"]) for it in items)
        length = -(-length // self.multiple) * self.multiple
        labels = [it["label"] for it in items]
        dtype = torch.float32 if isinstance(labels[0], float) else torch.long
        return {
            "input_ids": _pad([it["input_ids"] for it in items], self.pad_id, length),
            "attention_mask": _pad([[1] * len(it["input_ids"]) for it in items], 0, length),
            "token_type_ids": _pad([it["token_type_ids"] for it in items], 0, length),
            "labels": torch.tensor(labels, dtype=dtype),
        }


class KeyedDataset(torch.utils.data.Dataset):
    """Wraps a dataset so that ``ds[(epoch, i)]`` returns ``(epoch, i, base[i])``."""

    def __init__(self, base: torch.utils.data.Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, Any]:
        epoch, i = key
        return epoch, i, self.base[i]


class StepBatcher:
    """The global batch of every optimizer step, as a pure function of the step.

    Epoch ``e`` visits the examples in the order ``default_rng([seed, e]).permutation(n)``
    (or in file order when ``shuffle`` is False), dropping the last incomplete batch.

    Parameters
    ----------
    num_examples : int
    global_batch_size : int
        Examples per optimizer step, over all processes and accumulation steps.
    seed : int
    shuffle : bool
    """

    def __init__(
        self, num_examples: int, global_batch_size: int, seed: int, shuffle: bool = True
    ) -> None:
        if global_batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {global_batch_size}")
        if num_examples < global_batch_size:
            raise ValueError(
                f"the training set has {num_examples} examples, fewer than one batch "
                f"(batch_size={global_batch_size}); lower batch_size or add data"
            )
        self.n = num_examples
        self.batch_size = global_batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.steps_per_epoch = num_examples // global_batch_size
        self._perm_epoch = -1
        self._perm = np.arange(num_examples)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def batch(self, step: int) -> tuple[int, np.ndarray]:
        """Epoch and example indices, shape ``(global_batch_size,)``, of step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        return epoch, order[pos * self.batch_size : (pos + 1) * self.batch_size]


def train_batches(
    batcher: StepBatcher,
    start_step: int,
    end_step: int,
    *,
    accumulation_steps: int = 1,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[list[tuple[int, int]]]:
    """Keys ``(epoch, index)`` of this process's micro-batches, steps ``start..end-1``.

    The global batch of a step is cut into ``accumulation_steps`` micro-steps, and each
    micro-step into ``world_size`` equal shards; process ``rank`` gets shard ``rank``.
    """
    per = batcher.batch_size // (accumulation_steps * world_size)
    if per * accumulation_steps * world_size != batcher.batch_size:
        raise ValueError(
            f"batch_size={batcher.batch_size} is not divisible by gradient_accumulation_steps"
            f" * world_size = {accumulation_steps} * {world_size}"
        )
    for step in range(start_step, end_step):
        epoch, idx = batcher.batch(step)
        for m in range(accumulation_steps):
            lo = (m * world_size + rank) * per
            yield [(epoch, int(i)) for i in idx[lo : lo + per]]


def eval_batches(
    num_examples: int, batch_size: int, *, rank: int = 0, world_size: int = 1
) -> list[list[tuple[int, int]]]:
    """Keys of this process's evaluation batches: examples ``rank, rank + W, ...`` in order."""
    mine = list(range(rank, num_examples, world_size))
    return [
        [(EVAL_EPOCH, i) for i in mine[k : k + batch_size]] for k in range(0, len(mine), batch_size)
    ]
