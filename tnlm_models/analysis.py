"""What ``tnlm analyze`` asks of this package: a checkpoint's MPO layers as named MPOs.

``tnlm`` knows nothing of models; when it is given a folder and ``tnlm_models`` can be
imported, it calls :func:`checkpoint_folder` and, for one of our checkpoints, analyses the
:func:`layer_mpos` besides the stored tensors. A checkpoint stores an MPO layer as cores (the
shared central tensor once, ``bert.encoder.central.<matrix>``, and each layer's auxiliary
cores), so its matrix is nowhere in the file; the model rebuilds the layer and
:meth:`MPOLinear.to_mpo` gives it to tnlm, which reads the bond spectra from the cores in
canonical form.

The MPO of a layer is its cores alone (``to_mpo().to_dense() == mpo_weight()``): a layer's
low-rank adapter (``adapter_up @ adapter_down``) and bias are stored tensors of their own and
analysed as such.
"""

from __future__ import annotations

from pathlib import Path

import tnlm

from .mpo_linear import MPOLinear
from .serialization import CONFIG_NAME, WEIGHTS_NAME, from_pretrained, read_json_object

__all__ = ["checkpoint_folder", "layer_mpos"]

#: ``model_type`` written by ``save_pretrained``.
_MODEL_TYPE = "mpobert"


def checkpoint_folder(path: str | Path) -> Path | None:
    """The checkpoint folder ``path`` stands for, or None when it is not one of ours.

    Parameters
    ----------
    path : str or Path
        A folder written by ``save_pretrained`` (``config.json`` with ``model_type``
        "mpobert" and ``model.safetensors``), or a training run (or its ``checkpoints``
        folder), which stands for its best checkpoint, else its latest.

    Raises
    ------
    ValueError
        ``config.json`` or the run's checkpoint index is not readable (the file is named).
    """
    p = Path(path)
    if not p.is_dir():
        return None
    if (p / CONFIG_NAME).is_file():
        raw = read_json_object(p / CONFIG_NAME)
        ours = raw.get("model_type") == _MODEL_TYPE and (p / WEIGHTS_NAME).is_file()
        return p if ours else None
    from .train.checkpoint import INDEX, resolve_checkpoint

    if not any((root / INDEX).is_file() for root in (p, p / "checkpoints")):
        return None
    ckpt = resolve_checkpoint(p, "best")
    return ckpt if (ckpt / CONFIG_NAME).is_file() else None


def layer_mpos(folder: str | Path) -> dict[str, tnlm.MPO]:
    """Every MPO layer of the checkpoint in ``folder``, named by its module.

    Parameters
    ----------
    folder : str or Path
        A checkpoint folder (see :func:`checkpoint_folder`).

    Returns
    -------
    dict of str to tnlm.MPO
        ``{"bert.encoder.layer.0.query": MPO, ...}`` in module order; each MPO of shape
        ``(out_features, in_features)`` with detached torch cores (a layer module shared by
        every layer under ``sharing="all"`` appears once).

    Raises
    ------
    ValueError
        The checkpoint's architecture is not one of this package's models, or its files do
        not load.

    Examples
    --------
    >>> import tempfile, torch
    >>> from tnlm_models import MPOBertForMaskedLM
    >>> from tnlm_models.testing import tiny_config
    >>> folder = tempfile.mkdtemp()
    >>> MPOBertForMaskedLM(tiny_config(num_hidden_layers=1)).save_pretrained(folder)
    >>> mpos = layer_mpos(folder)
    >>> list(mpos)[:2], mpos["bert.encoder.layer.0.intermediate"].shape
    (['bert.encoder.layer.0.query', 'bert.encoder.layer.0.key'], (64, 32))
    """
    import tnlm_models

    folder = Path(folder)
    arch = str(read_json_object(folder / CONFIG_NAME).get("architecture", ""))
    classes = ("MPOBertModel", "MPOBertForMaskedLM", "MPOBertForSequenceClassification")
    if arch not in classes:
        raise ValueError(
            f"{folder / CONFIG_NAME} names architecture {arch!r}; expected one of "
            f"{', '.join(classes)}"
        )
    model = from_pretrained(getattr(tnlm_models, arch), folder)
    return {
        name: tnlm.MPO([c.detach() for c in module.cores])
        for name, module in model.named_modules()
        if isinstance(module, MPOLinear)
    }
