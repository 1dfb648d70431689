"""tnlm_models: parameter-shared deep MPO BERT models built on tnlm."""

from __future__ import annotations

from .config import MATRIX_NAMES, SHARING_MODES, MPOBertConfig
from .modeling import (
    MPOBertForMaskedLM,
    MPOBertForSequenceClassification,
    MPOBertModel,
    MPOBertModelOutput,
    MPOBertOutput,
)
from .mpo_linear import MPOLinear

# ``tnlm_models.train`` is the function (the subpackage of the same name stays importable as
# ``from tnlm_models.train import ...``).
from .train import TrainConfig, evaluate, train

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
    "TrainConfig",
]
