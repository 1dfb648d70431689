"""Checkpoints: one format, written atomically, the last ``k`` and the best kept.

Layout of a run directory::

    runs/<name>/
      metrics.jsonl                 one JSON record per log/eval event
      checkpoints/
        index.json                  {"latest": ..., "best": ..., "best_metric": ..., "all": [...]}
        step-00000100/
          model.safetensors         weights (the model's save_pretrained)
          config.json               model config
          tokenizer.json, vocab.txt
          train_config.json         the TrainConfig of the run
          trainer_state.json        step, epoch, metrics, label list
          optimizer.pt              optimizer state and every process's RNG states

A checkpoint is written into a hidden temporary directory, flushed to disk, and renamed into
place; ``index.json`` is replaced atomically afterwards. An interrupted save therefore leaves
the previous checkpoint and index untouched.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "capture_rng_state",
    "load_model_weights",
    "read_index",
    "resolve_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

INDEX = "index.json"
MODEL_FILE = "model.safetensors"
SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "num_cores",
    "factorizations",
    "bond_dim",
    "mpo_matrices",
    "sharing",
    "adapter_size",
)


# ---------------------------------------------------------------------------- RNG state
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


# ---------------------------------------------------------------------------- files
def _fsync_tree(d: Path) -> None:
    for f in d.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_index(ckpt_root: str | os.PathLike) -> dict[str, Any]:
    """The ``index.json`` of a ``checkpoints`` folder ({} when absent)."""
    p = Path(ckpt_root) / INDEX
    if not p.is_file():
        return {}
    return json.loads(p.read_text(encoding="utf-8"))


def _save_model(model: nn.Module, directory: Path) -> None:
    save = getattr(model, "save_pretrained", None)
    if callable(save):
        save(directory)
        return
    from safetensors.torch import save_model  # fallback for plain modules

    save_model(model, str(directory / MODEL_FILE))


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    train_config: dict[str, Any],
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    metric: float | None = None,
    greater_is_better: bool = False,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, update the index, prune old checkpoints.

    Parameters
    ----------
    metric : float, optional
        Validation metric of this checkpoint; the best one is never pruned.
    keep_last : int
        Number of most recent checkpoints kept besides the best.

    Returns
    -------
    Path
        The checkpoint directory.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{step:08d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    _save_model(model, tmp)
    tokenizer.save(tmp)
    (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2), encoding="utf-8")
    (tmp / "trainer_state.json").write_text(
        json.dumps({**trainer_state, "step": step, "metric": metric}, indent=2), encoding="utf-8"
    )
    torch.save({"optimizer": optimizer.state_dict(), "rng": rng_states}, tmp / "optimizer.pt")
    _fsync_tree(tmp)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)

    index = read_index(root)
    names = [n for n in index.get("all", []) if n != name and (root / n).is_dir()] + [name]
    best, best_metric = index.get("best"), index.get("best_metric")
    if metric is not None and (
        best is None
        or best_metric is None
        or (metric > best_metric if greater_is_better else metric < best_metric)
    ):
        best, best_metric = name, metric
    keep = set(names[-keep_last:]) if keep_last > 0 else {name}
    keep.add(name)
    if best is not None:
        keep.add(best)
    for old in names:
        if old not in keep:
            shutil.rmtree(root / old, ignore_errors=True)
    names = [n for n in names if n in keep]
    _write_json(
        root / INDEX, {"latest": name, "best": best, "best_metric": best_metric, "all": names}
    )
    logger.info("saved checkpoint %s", final)
    return final


def resolve_checkpoint(path: str | os.PathLike, which: str = "latest") -> Path:
    """A checkpoint directory from itself, a ``checkpoints`` folder or a run directory.

    Parameters
    ----------
    which : {"latest", "best"}
        Which checkpoint of a run to take ("best" falls back to "latest").
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if (p / MODEL_FILE).is_file():
        return p
    for root in (p, p / "checkpoints"):
        index = read_index(root)
        if index:
            name = index.get(which) or index.get("latest")
            if name:
                return root / str(name)
    raise FileNotFoundError(
        f"{p} is neither a checkpoint (no {MODEL_FILE}) nor a run directory with "
        f"checkpoints/{INDEX}"
    )


def check_same_shape(ckpt_config: dict[str, Any], model_config: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` listing the shape fields in which two model configs differ."""
    diffs = [
        f"{k}: checkpoint {ckpt_config.get(k)!r} vs model {model_config.get(k)!r}"
        for k in SHAPE_KEYS
        if k in ckpt_config and k in model_config and ckpt_config[k] != model_config[k]
    ]
    if diffs:
        raise ValueError(
            f"checkpoint {where} was written by a model of another shape ({'; '.join(diffs)})"
        )


def load_model_weights(model: nn.Module, ckpt: str | os.PathLike) -> None:
    """Load a checkpoint's weights into ``model``, which must have the same shape.

    Raises
    ------
    ValueError
        If the checkpoint comes from a model of another shape (the differences are listed).
    """
    from safetensors.torch import load_file, load_model

    ckpt = Path(ckpt)
    cfg_file = ckpt / "config.json"
    model_cfg = getattr(model, "config", None)
    if cfg_file.is_file() and model_cfg is not None and hasattr(model_cfg, "to_dict"):
        raw = json.loads(cfg_file.read_text())
        check_same_shape(raw.get("config", raw), model_cfg.to_dict(), str(ckpt))
    try:
        if hasattr(model, "unique_named_parameters"):
            from ..serialization import load_state

            load_state(model, load_file(str(ckpt / MODEL_FILE)), strict=True)
        else:
            load_model(model, str(ckpt / MODEL_FILE), strict=True)
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"checkpoint {ckpt} was written by a model of another shape: {e}"
        ) from None
