"""Tiny configurations and batches for tests and examples."""

from __future__ import annotations

from typing import Any

import torch

from .config import MPOBertConfig

__all__ = ["tiny_config", "tiny_model_settings", "random_batch"]


def tiny_config(**overrides: Any) -> MPOBertConfig:
    """A tiny, fast ``MPOBertConfig`` (vocab 97, hidden 32, 3 layers, 3 cores, no dropout).

    Examples
    --------
    >>> tiny_config(num_hidden_layers=2).num_hidden_layers
    2
    """
    base: dict[str, Any] = dict(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
        num_cores=3,
        adapter_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    base.update(overrides)
    return MPOBertConfig(**base)


def tiny_model_settings(**overrides: Any) -> dict[str, Any]:
    """The ``model`` section of a training config for a tiny MPOBERT (hidden 16, 2 layers,
    2 cores; the vocabulary size comes from the tokenizer), as the trainer tests use it.

    Examples
    --------
    >>> tiny_model_settings(num_cores=3)["num_cores"]
    3
    """
    base: dict[str, Any] = dict(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_cores=2,
        adapter_size=2,
    )
    base.update(overrides)
    return base


def random_batch(
    vocab_size: int = 97, batch: int = 3, seq: int = 11, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, token_type_ids)``, each ``(batch, seq)``.

    Row 0 has its last 3 tokens padded (mask 0); the second half of every row has token
    type 1 (a sentence pair).
    """
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, seq), generator=g)  # (B, T)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -3:] = 0
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 2 :] = 1
    return ids, mask, types
