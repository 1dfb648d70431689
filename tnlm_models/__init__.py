"""tnlm_models: parameter-shared deep MPO BERT models built on tnlm."""

from __future__ import annotations

from typing import Any

try:
    from ._hf_registration import register_when_imported
    from .config import MATRIX_NAMES, SHARING_MODES, MPOBertConfig
    from .modeling import (
        MPOBertForMaskedLM,
        MPOBertForSequenceClassification,
        MPOBertModel,
        MPOBertModelOutput,
        MPOBertOutput,
    )
    from .mpo_linear import MPOLinear

    # ``tnlm_models.train`` is the function (the subpackage of the same name stays importable
    # as ``from tnlm_models.train import ...``).
    from .train import TrainConfig, evaluate, predict, train

    # transformers' auto classes learn "mpobert" (tnlm_models.hf) when they are imported
    register_when_imported()
except ModuleNotFoundError as _missing:
    # A core-only install (no ``tnlm[models]``): the package stays importable, so that the
    # ``tnlm-train`` command (tnlm_models.cli) can say what to install; every name below then
    # raises the same advice.
    _MODELS_EXTRA = ("torch", "safetensors", "tokenizers", "tqdm", "yaml", "matplotlib")
    if (_missing.name or "").split(".")[0] not in _MODELS_EXTRA:
        raise
    _MISSING_NAME = _missing.name

    def __getattr__(name: str) -> Any:
        raise ModuleNotFoundError(
            f"tnlm_models.{name} needs {_MISSING_NAME!r}, part of the models extra: "
            "pip install 'tnlm[models]'",
            name=_MISSING_NAME,
        )


__all__ = [
    "MPOLinear",
    "MPOBertConfig",
    "MPOBertModel",
    "MPOBertForMaskedLM",
    "MPOBertForSequenceClassification",
    "MPOBertOutput",
    "MPOBertModelOutput",
    "MATRIX_NAMES",
    "SHARING_MODES",
    "train",
    "evaluate",
    "predict",
    "TrainConfig",
]
