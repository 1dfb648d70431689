"""Save and load MPO BERT models: ``config.json`` + ``model.safetensors``.

Every distinct parameter is stored once, under its canonical name (the first name
``named_parameters()`` gives it: ``bert.encoder.central.<matrix>`` for a shared central
tensor, ``bert.encoder.layer.0.*`` for the shared layer under "all" sharing). Loading copies
the stored tensors into a freshly built model, so a round trip is bit-exact and sharing is
re-established by construction.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from .config import MPOBertConfig

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "from_pretrained",
    "load_state",
    "read_json_object",
    "save_pretrained",
]

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


def save_pretrained(model: Any, directory: str | Path) -> None:
    """Write ``model`` to ``directory`` (created if needed).

    Parameters
    ----------
    model : MPOBertPreTrainedModel
    directory : str or Path
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().contiguous().cpu() for name, p in model.unique_named_parameters()}
    meta = {"format": "pt", "architecture": type(model).__name__}
    tmp = directory / f".{WEIGHTS_NAME}.tmp-{os.getpid()}"
    save_file(tensors, str(tmp), metadata=meta)
    _fsync(tmp)
    os.replace(tmp, directory / WEIGHTS_NAME)
    cfg = {
        "architecture": type(model).__name__,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        # lets transformers' AutoConfig find the "mpobert" classes (tnlm_models.hf)
        "model_type": "mpobert",
    }
    tmp = directory / f".{CONFIG_NAME}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(cfg, indent=2, sort_keys=True))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / CONFIG_NAME)
    logger.info("saved %s to %s", type(model).__name__, directory)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _model_dir(path: Path) -> Path:
    """The folder holding ``config.json``: ``path`` itself, or the checkpoint that a run
    directory (or its ``checkpoints`` folder) names as best, else latest."""
    if not path.exists():
        raise FileNotFoundError(f"model path not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{path} is a file; expected a model folder or a run directory")
    if (path / CONFIG_NAME).is_file():
        return path
    from .train.checkpoint import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(path, "best")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is neither a model folder ({CONFIG_NAME} and {WEIGHTS_NAME}) nor a run "
            "directory with checkpoints/index.json"
        ) from None
    # the index is a file we read: follow the name it gives only to a folder inside the run
    # (lexically: a step folder that is a symbolic link to another disk is the user's choice)
    roots = {os.path.normpath(path), os.path.normpath(path / "checkpoints")}
    inside = os.path.dirname(os.path.normpath(ckpt)) in roots
    if not (inside and (ckpt / CONFIG_NAME).is_file()):
        raise ValueError(
            f"the checkpoint index of {path} names {str(ckpt)!r}, which is not a checkpoint "
            f"folder of the run holding {CONFIG_NAME}"
        )
    return ckpt


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; ``ValueError`` naming the file when it is not one."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file may be truncated") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def _read_config(directory: Path) -> tuple[str, MPOBertConfig]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    raw = read_json_object(path)
    if not isinstance(raw.get("config"), dict):
        raise ValueError(f"{path} is not an MPO BERT config (no 'config' entry)")
    return str(raw.get("architecture", "")), MPOBertConfig.from_dict(legacy_config(raw["config"]))


def legacy_config(fields: dict[str, Any]) -> dict[str, Any]:
    """Config fields read from a file, with the defaults it was written under: a file
    without ``factorization_rule`` predates the paper's table and used ``"balanced"``."""
    return {"factorization_rule": "balanced", **fields}


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path.parent}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated or corrupt"
        ) from None


def load_state(model: Any, tensors: dict[str, torch.Tensor], *, strict: bool = True) -> None:
    """Copy ``tensors`` (canonical names) into ``model``'s parameters.

    Raises
    ------
    ValueError
        With ``strict``, if keys are missing or unexpected (named), or a shape differs.
    """
    params = dict(model.unique_named_parameters())
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if strict and (missing or unexpected):
        raise ValueError(
            f"state does not match {type(model).__name__}: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    with torch.no_grad():
        for name, t in tensors.items():
            if name not in params:
                continue
            p = params[name]
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(
                    f"{name}: stored shape {tuple(t.shape)} does not match the model's "
                    f"{tuple(p.shape)} (does the config match the checkpoint?)"
                )
            p.copy_(t.to(dtype=p.dtype, device=p.device))
    if missing:
        logger.info("initialised new parameters: %s", missing)
    if unexpected:
        logger.info("ignored stored parameters: %s", unexpected)


def from_pretrained(cls: Any, directory: str | Path, **config_overrides: Any) -> Any:
    """Build ``cls`` from a directory written by ``save_pretrained``.

    Loading into another task class is allowed: an MLM checkpoint loaded as
    ``MPOBertForSequenceClassification`` keeps the encoder and initialises the pooler and
    classifier (the MLM head is dropped). Within one class, every key must match.

    Parameters
    ----------
    cls : type
        The model class to build.
    directory : str or Path
        A folder written by ``save_pretrained`` (a checkpoint), or a run directory of the
        trainer: its best checkpoint, else its latest.
    **config_overrides
        Config fields to change (e.g. ``num_labels=3``, ``hidden_dropout_prob=0.0``).
        Fields that change parameter shapes of the stored encoder fail on load.

    Raises
    ------
    FileNotFoundError
        If ``directory`` does not exist or is neither a model folder nor a run directory.
    ValueError
        If ``config.json`` is not JSON or ``model.safetensors`` is truncated or corrupt (the
        file is named), or the stored tensors do not fit ``cls``.
    """
    directory = _model_dir(Path(directory))
    arch, config = _read_config(directory)
    if config_overrides:
        config = config.replace(**config_overrides)
    tensors = _load_weights(directory / WEIGHTS_NAME)
    model = cls(config)
    same_class = arch == cls.__name__
    if not same_class:
        # Keep only what the new class has in common with the stored one: the encoder.
        prefix = "bert."
        if cls.__name__ == "MPOBertModel":
            tensors = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        elif arch == "MPOBertModel":
            tensors = {prefix + k: v for k, v in tensors.items()}
        params = dict(model.unique_named_parameters())
        encoder = {k for k in params if k.startswith(prefix + "embeddings.")}
        encoder |= {k for k in params if k.startswith(prefix + "encoder.")}
        if cls.__name__ == "MPOBertModel":
            encoder = {k for k in params if k.startswith(("embeddings.", "encoder."))}
        absent = sorted(encoder - set(tensors))
        if absent:
            raise ValueError(f"checkpoint {directory} lacks encoder keys {absent}")
    load_state(model, tensors, strict=same_class)
    return model
