"""Mixed precision: the one place that turns ``TrainConfig.precision`` and a device into an
autocast context (training, evaluation and prediction all use it)."""

from __future__ import annotations

import contextlib

import torch

from .config import TrainConfig

__all__ = ["autocast_context"]


def autocast_context(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``cfg.precision`` on ``device``.

    ``"bf16"`` autocasts to bfloat16; ``"auto"`` does so on a CUDA device that supports it;
    otherwise (``"fp32"``, or ``"auto"`` elsewhere) the context does nothing.

    Raises
    ------
    ValueError
        If ``"bf16"`` is asked on a GPU without bfloat16.
    """
    use_bf16 = cfg.precision == "bf16" or (
        cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )
    if cfg.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision='bf16' requested but this GPU does not support bfloat16")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
