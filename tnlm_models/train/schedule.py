"""Learning-rate schedule: a pure function of the step (nanoGPT style)."""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "linear",
    min_ratio: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate for the update made at ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` updates,
    then linear or cosine decay from 1 to ``min_ratio`` at ``total_steps``, or constant.

    Examples
    --------
    >>> [round(lr_factor(s, 4, 2), 2) for s in range(4)]
    [0.5, 1.0, 1.0, 0.5]
    """
    if schedule not in ("linear", "cosine", "constant"):
        raise ValueError(
            f"unknown lr_schedule {schedule!r}; expected one of ['linear', 'cosine', 'constant']"
        )
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
