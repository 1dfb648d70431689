"""Multi-process data parallelism: set-up from ``torchrun``'s environment and reductions.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; the trainer
then joins a process group (gloo on CPU, NCCL on GPU), wraps the model in
``DistributedDataParallel``, gives each process its shard of every global batch, and lets
rank 0 alone log and write checkpoints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "distributed_run",
    "setup_distributed",
]

logger = logging.getLogger(__name__)


@dataclass
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, which logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def close(self, *, clean: bool = True) -> None:
        """Leave the process group if this object created it.

        ``clean=True`` (the run ended normally): every process first meets at a barrier, so
        that none closes its connections while a peer still exchanges data with it, then the
        group is destroyed and its communication threads joined.

        ``clean=False`` (the run is ending with an exception): nothing is exchanged and the
        group is left as it is. A peer may be blocked in a collective, and a barrier or the
        group's destructor would then wait for the full timeout; the launcher (``torchrun``)
        ends the other processes. ``torch.distributed`` stays initialised in this process.
        """
        if not (self.owns_group and dist.is_initialized()):
            return
        self.owns_group = False
        if not clean:
            logger.debug("rank %d: process group left to the launcher after an error", self.rank)
            return
        dist.barrier()
        dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU."""
    if name == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    available = ["cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(n_cuda)] if n_cuda else [])
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        # "meta" and other torch device types hold no data or are not supported by the
        # trainer; training there fails much later with an obscure error
        raise ValueError(
            f"device {name!r} cannot train a model; expected 'auto' or one of this "
            f"machine's devices: {available}"
        )
    if dev.type == "cuda":
        if not n_cuda:
            raise ValueError(
                f"device {name!r} requested but CUDA is not available; available: {available}"
            )
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
        if dev.index >= n_cuda:
            raise ValueError(f"device {name!r} does not exist; available: {available}")
    return dev


def setup_distributed(device: str = "auto") -> DistEnv:
    """Join the process group described by ``torchrun``'s environment variables.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) this is a single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, owns_group=False)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        # DistributedDataParallel imports torch.distributed.nn.functional on first use, whose
        # functions take ``group=group.WORLD`` as a default argument. Imported after
        # init_process_group, those defaults hold the live default group, so
        # destroy_process_group cannot free it: its threads then outlive the run and the group
        # is destructed during interpreter shutdown, which can abort the process ("terminate
        # called without an active exception"). Imported first, the defaults are None.
        import torch.distributed.nn.functional  # noqa: F401

        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        owns = True
        logger.info("rank %d/%d joined the %s process group", rank, world, backend)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=owns)


@contextmanager
def distributed_run(device: str = "auto") -> Iterator[DistEnv]:
    """:func:`setup_distributed` for the length of a ``with`` block.

    On a normal exit the group this created is closed cleanly (barrier, then destroyed); on an
    exception it is left to the launcher (see :meth:`DistEnv.close`), unless every process
    raised it at the same point (an exception with ``raised_on_every_process = True``, such
    as a set-up error rank 0 found and shared), where the clean close is safe.
    """
    env = setup_distributed(device)
    try:
        yield env
    except BaseException as e:
        env.close(clean=bool(getattr(e, "raised_on_every_process", False)))
        raise
    env.close()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of ``t`` over processes (in place; ``t`` itself when single-process)."""
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not env.distributed:
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    """Wait for every process."""
    if env.distributed:
        dist.barrier()
