"""AdamW with an explicit weight-decay policy and a learning-rate factor for central tensors."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["build_optimizer", "central_parameter_ids", "parameter_groups"]

logger = logging.getLogger(__name__)


def central_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the central tensors: ``model.central_parameters()`` when the model has it,
    else parameters whose name contains ``"central"``."""
    getter = getattr(model, "central_parameters", None)
    if callable(getter):
        return {id(p) for p in getter()}
    return {id(p) for n, p in model.named_parameters() if "central" in n}


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
