"""Datasets and batches: encoded examples, masked-LM and classification collators, and the
seeded step batcher (every random choice a pure function of seed, epoch and position)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..tokenization import WordPieceTokenizer

__all__ = [
    "EVAL_EPOCH",
    "ClassificationCollator",
    "eval_batches",
    "KeyedDataset",
    "MLMCollator",
    "StepBatcher",
    "TokenDataset",
    "train_batches",
]

logger = logging.getLogger(__name__)

#: epoch key used for evaluation masks, so that evaluation masks never change between runs
EVAL_EPOCH = 1_000_003


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
