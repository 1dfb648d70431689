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
]
from .train import TrainConfig as TrainConfig, train as train  # noqa: E402, I001
