"""The random streams of a run: seeding, per-purpose seeds, and their state in checkpoints.

A run seeds Python, numpy and torch from ``seed`` (:func:`seed_all`) before it builds the
model, then re-seeds them per process with :func:`derived_seed` (purpose 1: the global
streams each process draws dropout from; purpose 2: the data loader's own generator). A
checkpoint stores every process's RNG state (:func:`capture_rng_state`), which resuming
restores (:func:`restore_rng_state`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "derived_seed", "restore_rng_state", "seed_all"]


def derived_seed(*parts: int) -> int:
    """A seed drawn from ``parts`` (e.g. the run seed, a purpose, the rank, a step) with
    numpy's ``SeedSequence``: different parts give independent streams."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's (global) and torch's generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - global state user code may rely on
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, as plain Python values.

    Plain values (no tensors) pickle the same way everywhere, so the states of all
    processes can be gathered to rank 0 and stored with ``torch.save``.
    """
    np_state: Any = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *(np_state[2:])),
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def _bytes_tensor(b: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(b), dtype=torch.uint8).clone()


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    torch.set_rng_state(_bytes_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes_tensor(b) for b in state["cuda"]])
