"""AdamW with an explicit weight-decay policy and a learning-rate factor for central tensors."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "build_optimizer",
    "central_parameter_ids",
    "freeze_parameters",
    "parameter_groups",
    "trainable_parameters",
]

logger = logging.getLogger(__name__)


def central_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the central tensors: ``model.central_core_parameters()`` when the model has
    it, else parameters whose name contains ``"central"``."""
    getter = getattr(model, "central_core_parameters", None)
    if callable(getter):
        return {id(p) for p in getter()}
    return {id(p) for n, p in model.named_parameters() if "central" in n}


#: name fragments of the embedding tables that ``freeze="central"`` also freezes
_EMBEDDING_TABLES = ("word_embeddings.", "position_embeddings.", "token_type_embeddings.")


def freeze_parameters(model: nn.Module, mode: str) -> int:
    """Set ``requires_grad=False`` on the parameters that ``mode`` freezes; return how many
    tensors were frozen.

    ``"none"`` freezes nothing. ``"central"`` (MPOP's lightweight fine-tuning, Liu et al.,
    ACL 2021) freezes the central tensors and the embedding tables; auxiliary tensors,
    adapters, dense matrices, norms, biases and heads keep training.

    Raises
    ------
    ValueError
        If ``mode`` is unknown, or ``"central"`` is asked of a model without central tensors.
    """
    if mode == "none":
        return 0
    if mode != "central":
        raise ValueError(f"freeze must be one of ['none', 'central'], got {mode!r}")
    central = central_parameter_ids(model)
    if not central:
        raise ValueError(
            "freeze='central' needs a model with central tensors (MPO matrices); this model "
            "has none (a dense model: use freeze='none')"
        )
    frozen = 0
    for name, p in model.named_parameters():
        if id(p) in central or any(s in name for s in _EMBEDDING_TABLES):
            p.requires_grad_(False)
            frozen += 1
    return frozen


def trainable_parameters(model: nn.Module) -> int:
    """Number of distinct parameters with ``requires_grad`` (a shared tensor counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Sequence[str],
    central_lr_factor: float,
) -> list[dict]:
    """Split trainable parameters into (decay?, central?) groups.

    A parameter is decayed when it has two or more dimensions and its name contains none
    of ``no_decay``. Each group carries ``lr_scale`` (``central_lr_factor`` for central
    tensors, 1 otherwise) and ``names`` for inspection. Shared tensors appear once.
    """
    central = central_parameter_ids(model)
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and not any(s in name for s in no_decay)
        is_central = id(p) in central
        g = groups.setdefault(
            (decay, is_central),
            {
                "params": [],
                "names": [],
                "weight_decay": weight_decay if decay else 0.0,
                "lr_scale": central_lr_factor if is_central else 1.0,
                "central": is_central,
            },
        )
        g["params"].append(p)
        g["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: nn.Module,
    learning_rate: float,
    *,
    weight_decay: float = 0.01,
    no_decay: Sequence[str] = ("bias", "LayerNorm", "layer_norm", "norm"),
    central_lr_factor: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`; the trainer sets each group's ``lr`` to
    ``learning_rate * schedule(step) * lr_scale`` before every update."""
    groups = parameter_groups(model, weight_decay, no_decay, central_lr_factor)
    for g in groups:
        g["lr"] = learning_rate * g["lr_scale"]
        logger.debug(
            "param group decay=%s central=%s: %d tensors",
            g["weight_decay"] > 0,
            g["central"],
            len(g["params"]),
        )
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)
