"""Checkpoints: one format, written atomically, checked when read, the last ``k`` and the
best kept.

Layout of a run directory::

    runs/<name>/
      run.json                      marks the folder as a run (written first; see ``runs``)
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
          tnlm_checkpoint.json      marker, written last: step, metric and each file's size

A checkpoint is written into a hidden temporary directory, flushed to disk, and renamed into
place; ``index.json`` is replaced atomically afterwards. An interrupted save therefore leaves
the previous checkpoint and index untouched, and a failed one (a full disk) leaves nothing
half-written. Weights are checked finite first. Names read from ``index.json`` must be
``step-NNNNNNNN`` folders of the same ``checkpoints`` folder, and only folders carrying the
marker are ever replaced or pruned. Reading checks the recorded sizes, the JSON files and
the safetensors header; a damaged file is a one-line ``ValueError`` naming it.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..serialization import read_json_object
from .files import (
    disk_error,
    fault_point,
    fsync_dir,
    fsync_tree,
    read_json,
    write_atomic,
    write_json,
)

__all__ = [
    "IndexEntryError",
    "check_finite",
    "is_checkpoint_dir",
    "list_checkpoints",
    "load_model_weights",
    "load_training_state",
    "read_checkpoint_json",
    "read_index",
    "read_json",
    "resolve_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
    "write_atomic",
    "write_index",
]

logger = logging.getLogger(__name__)

INDEX = "index.json"
MODEL_FILE = "model.safetensors"
MARKER = "tnlm_checkpoint.json"
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


# ---------------------------------------------------------------------------- index
STEP_PATTERN = re.compile(r"step-\d{8}")
_TMP_PATTERN = re.compile(r"\.tmp-step-\d{8}-\d+")


class IndexEntryError(ValueError):
    """An ``index.json`` entry that is not the name of a checkpoint folder of its run.

    Such an entry (a path such as ``../../elsewhere`` or ``/home``) is never followed, and
    resuming does not paper over it by rebuilding the index: someone wrote it there.
    """


def _check_name(value: Any, key: str, index_path: Path) -> str:
    if not (isinstance(value, str) and STEP_PATTERN.fullmatch(value)):
        raise IndexEntryError(
            f"{index_path}: {key} entry {value!r} is not a checkpoint folder name "
            f"step-NNNNNNNN inside {index_path.parent}; refusing to follow it (remove the "
            "entry, or delete index.json and resume to rebuild it from the step folders)"
        )
    return value


def read_index(ckpt_root: str | os.PathLike) -> dict[str, Any]:
    """The ``index.json`` of a ``checkpoints`` folder ({} when absent), checked.

    Raises
    ------
    ValueError
        If the file is not JSON.
    IndexEntryError
        A ``ValueError``: an entry (``latest``, ``best``, ``all``) is anything but the name
        of a ``step-NNNNNNNN`` folder (a path is never followed).
    """
    p = Path(ckpt_root) / INDEX
    if not p.is_file():
        return {}
    raw = read_json(p)
    if not isinstance(raw, dict):
        raise ValueError(f"{p} is not a checkpoint index (a JSON object was expected)")
    for key in ("latest", "best"):
        if raw.get(key) is not None:
            _check_name(raw[key], repr(key), p)
    names = raw.get("all", [])
    if not isinstance(names, list):
        raise IndexEntryError(
            f"{p}: 'all' must be a list of checkpoint folder names, got {names!r}"
        )
    for n in names:
        _check_name(n, "'all'", p)
    best_metric = raw.get("best_metric")
    if best_metric is not None and (
        isinstance(best_metric, bool) or not isinstance(best_metric, int | float)
    ):
        raise ValueError(f"{p}: 'best_metric' must be a number, got {best_metric!r}")
    return raw


def write_index(
    ckpt_root: Path, latest: str, best: str | None, best_metric: float | None, names: list[str]
) -> None:
    """Replace ``index.json`` atomically."""
    write_json(
        ckpt_root / INDEX,
        {"latest": latest, "best": best, "best_metric": best_metric, "all": names},
    )


def is_checkpoint_dir(p: Path) -> bool:
    """True for a ``step-NNNNNNNN`` folder (not a link) that carries our marker file."""
    return (
        STEP_PATTERN.fullmatch(p.name) is not None
        and p.is_dir()
        and not p.is_symlink()
        and (p / MARKER).is_file()
    )


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """The checkpoint folders written by :func:`save_checkpoint`, oldest first."""
    if not ckpt_root.is_dir():
        return []
    return sorted(p for p in ckpt_root.iterdir() if is_checkpoint_dir(p))


# ---------------------------------------------------------------------------- checks
def _check_safetensors(path: Path) -> None:
    """Raise ``ValueError`` if ``path`` is not a complete safetensors file (header and size)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little")
            if len(head) < 8 or n > size - 8:
                raise ValueError("no complete header")
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        expected = 8 + n + max(ends, default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise ValueError(
            f"{path} is truncated or corrupt (unreadable safetensors header)"
        ) from None
    if expected != size:
        raise ValueError(
            f"{path} is truncated or corrupt ({size} bytes; its header describes {expected})"
        )


def verify_checkpoint(ckpt: str | os.PathLike) -> None:
    """Check a checkpoint folder's files without loading the weights.

    The sizes recorded in the marker file (when present), the JSON files and the
    safetensors header and length are checked.

    Raises
    ------
    ValueError
        Naming the first missing, truncated or corrupt file.
    """
    ckpt = Path(ckpt)
    marker = ckpt / MARKER
    if marker.is_file():
        info = read_json(marker)
        files = info.get("files") if isinstance(info, dict) else None
        if not isinstance(files, dict):
            raise ValueError(f"{marker} is corrupt (no 'files' entry)")
        for name, size in files.items():
            f = ckpt / str(name)
            if Path(str(name)).name != name or not f.is_file():
                raise ValueError(f"{f} is missing; the checkpoint {ckpt} is incomplete")
            actual = f.stat().st_size
            if actual != size:
                raise ValueError(f"{f} is truncated or corrupt ({actual} bytes, {size} written)")
    for name in ("config.json", "trainer_state.json", "train_config.json", "tokenizer.json"):
        if (ckpt / name).is_file() and not isinstance(read_json(ckpt / name), dict):
            raise ValueError(f"{ckpt / name} is corrupt (a JSON object was expected)")
    if not (ckpt / MODEL_FILE).is_file():
        raise ValueError(f"no {MODEL_FILE} in {ckpt}")
    _check_safetensors(ckpt / MODEL_FILE)


def load_training_state(
    ckpt: Path, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainer_state, {"optimizer": ..., "rng": ...})`` of a checkpoint, for resuming.

    Raises
    ------
    ValueError
        Naming ``trainer_state.json`` or ``optimizer.pt`` when missing, truncated or corrupt.
    """
    state_file, opt_file = ckpt / "trainer_state.json", ckpt / "optimizer.pt"
    for f in (state_file, opt_file):
        if not f.is_file():
            raise ValueError(f"{f} is missing; the checkpoint {ckpt} is incomplete")
    state = read_json(state_file)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{state_file} is corrupt (no integer 'step')")
    try:
        saved = torch.load(opt_file, map_location=device, weights_only=True)
    except Exception as e:  # torch reports a damaged archive with many exception types
        first = (str(e).splitlines() or [""])[0][:200]
        raise ValueError(
            f"{opt_file} is truncated or corrupt ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(saved, dict) or "optimizer" not in saved or "rng" not in saved:
        raise ValueError(f"{opt_file} is corrupt (no optimizer and RNG state)")
    return state, saved


def read_checkpoint_json(ckpt: Path, name: str) -> dict[str, Any]:
    """The JSON object in file ``name`` of checkpoint ``ckpt`` ({} when the file is absent).

    Raises
    ------
    ValueError
        If the file is not a JSON object (the file named).
    """
    path = ckpt / name
    return read_json_object(path) if path.is_file() else {}


def check_finite(model: nn.Module, step: int, loss: float | None = None) -> None:
    """Raise ``FloatingPointError`` if ``loss`` or a weight of ``model`` is NaN or infinite."""
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(f"non-finite loss ({loss}) at step {step}; checkpoint not written")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                raise FloatingPointError(
                    f"non-finite weights in {name} at step {step}; checkpoint not written"
                )


# ---------------------------------------------------------------------------- save
def _save_model(model: nn.Module, directory: Path) -> None:
    save = getattr(model, "save_pretrained", None)
    if callable(save):
        save(directory)
        return
    from safetensors.torch import save_model  # fallback for plain modules

    save_model(model, str(directory / MODEL_FILE))


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


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

    Only folders this function wrote (``step-NNNNNNNN`` with the marker file
    ``tnlm_checkpoint.json``) are ever replaced or pruned.

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

    Raises
    ------
    FloatingPointError
        If a weight (or the training loss in ``trainer_state``) is not finite; nothing is
        written.
    OSError
        When writing fails (a full disk says "no space left on device" and names the file);
        nothing half-written is left behind.
    """
    loss = trainer_state.get("train_loss")
    check_finite(model, step, loss if isinstance(loss, int | float) else None)
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():
        if _TMP_PATTERN.fullmatch(stale.name) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    name = f"step-{step:08d}"
    final = root / name
    if final.is_symlink() or (final.exists() and not is_checkpoint_dir(final)):
        raise ValueError(
            f"{final} exists but was not written by tnlm (no {MARKER}); it is left untouched: "
            "move it away or choose another output_dir"
        )
    tmp = root / f".tmp-{name}-{os.getpid()}"
    current = MODEL_FILE
    try:
        tmp.mkdir()
        _save_model(model, tmp)
        current = "tokenizer.json"
        tokenizer.save(tmp)
        current = "train_config.json"
        _write_text(tmp / current, json.dumps(train_config, indent=2))
        current = "trainer_state.json"
        _write_text(
            tmp / current, json.dumps({**trainer_state, "step": step, "metric": metric}, indent=2)
        )
        fault_point("checkpoint-write", step)
        current = "optimizer.pt"
        with open(tmp / current, "wb") as fh:
            torch.save({"optimizer": optimizer.state_dict(), "rng": rng_states}, fh)
        # the Rust writers of safetensors and tokenizers can drop a write error: read back
        for current, check in ((MODEL_FILE, _check_safetensors), ("tokenizer.json", read_json)):
            if current == MODEL_FILE or (tmp / current).is_file():
                try:
                    check(tmp / current)
                except ValueError:
                    raise OSError(
                        errno.EIO, "written incompletely (is the disk full?)", str(final / current)
                    ) from None
        # safetensors creates its file with mode 0600; give it the mode (umask) of the others
        os.chmod(tmp / MODEL_FILE, stat.S_IMODE((tmp / "train_config.json").stat().st_mode))
        files = {f.name: f.stat().st_size for f in sorted(tmp.iterdir()) if f.is_file()}
        current = MARKER
        marker = {
            "format": "tnlm-checkpoint",
            "version": 1,
            "step": step,
            "metric": metric,
            "greater_is_better": greater_is_better,
            "files": files,
        }
        _write_text(tmp / MARKER, json.dumps(marker, indent=2))
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise disk_error(e, final / current) from None
    fault_point("checkpoint-index", step)

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
        if old not in keep and is_checkpoint_dir(root / old):
            shutil.rmtree(root / old)
    names = [n for n in names if n in keep or (root / n).is_dir()]
    write_index(root, name, best, best_metric, names)
    logger.info("saved checkpoint %s", final)
    return final


def resolve_checkpoint(path: str | os.PathLike, which: str = "latest") -> Path:
    """A checkpoint directory from itself, a ``checkpoints`` folder or a run directory.

    Parameters
    ----------
    which : {"latest", "best"}
        Which checkpoint of a run to take ("best" falls back to "latest").

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no checkpoint.
    ValueError
        If the index or a file of the checkpoint is truncated or corrupt (named).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    if (p / MODEL_FILE).is_file():
        verify_checkpoint(p)
        return p
    for root in (p, p / "checkpoints"):
        index = read_index(root)
        if index:
            name = index.get(which) or index.get("latest")
            if name:
                ckpt = root / str(name)
                if not ckpt.is_dir():
                    raise FileNotFoundError(f"{root / INDEX} names {name} but {ckpt} is missing")
                verify_checkpoint(ckpt)
                return ckpt
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
        raw = read_json(cfg_file)
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
