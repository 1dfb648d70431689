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
from pathlib import Path
from typing import Any

import torch

from .config import MPOBertConfig

__all__ = ["save_pretrained", "from_pretrained", "CONFIG_NAME", "WEIGHTS_NAME", "load_state"]

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
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(directory / WEIGHTS_NAME)
    cfg = {
        "architecture": type(model).__name__,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
    }
    (directory / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
    logger.info("saved %s to %s", type(model).__name__, directory)


def _read_config(directory: Path) -> tuple[str, MPOBertConfig]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    raw = json.loads(path.read_text())
    if "config" not in raw:
        raise ValueError(f"{path} is not an MPO BERT config (no 'config' entry)")
    return str(raw.get("architecture", "")), MPOBertConfig.from_dict(raw["config"])


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
    **config_overrides
        Config fields to change (e.g. ``num_labels=3``, ``hidden_dropout_prob=0.0``).
        Fields that change parameter shapes of the stored encoder fail on load.
    """
    directory = Path(directory)
    arch, config = _read_config(directory)
    if config_overrides:
        config = config.replace(**config_overrides)
    model = cls(config)
    from safetensors.torch import load_file

    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {directory}")
    tensors = load_file(str(weights))
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
