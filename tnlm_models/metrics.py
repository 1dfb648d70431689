"""Evaluation metrics: masked-LM loss/perplexity/accuracy and classification scores.

Classification metrics are computed from a confusion matrix, so that data-parallel
processes can sum their matrices and get exactly the single-process value.

Examples
--------
>>> cm = confusion_matrix([1, 0, 1, 1], [1, 0, 0, 1], num_labels=2)
>>> classification_metrics(cm)["accuracy"]
0.75
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "classification_metrics",
    "confusion_matrix",
    "f1_score",
    "matthews_corrcoef",
    "mlm_metrics",
    "perplexity",
]


def confusion_matrix(
    labels: Sequence[int] | np.ndarray, predictions: Sequence[int] | np.ndarray, num_labels: int
) -> np.ndarray:
    """Counts ``cm[true, predicted]``.

    Parameters
    ----------
    labels, predictions : array of int, shape (n,)
    num_labels : int

    Returns
    -------
    array of int64, shape (num_labels, num_labels)
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(
            f"labels and predictions must be 1-D of equal length, got {y.shape}, {p.shape}"
        )
    for name, v in (("labels", y), ("predictions", p)):
        if v.size and (v.min() < 0 or v.max() >= num_labels):
            raise ValueError(
                f"{name} must lie in [0, {num_labels}), got range [{v.min()}, {v.max()}]"
            )
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def f1_score(cm: np.ndarray, positive: int = 1) -> float:
    """F1 of class ``positive``; 0.0 when it is never predicted nor present."""
    tp = float(cm[positive, positive])
    fp = float(cm[:, positive].sum() - tp)
    fn = float(cm[positive, :].sum() - tp)
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom > 0 else 0.0


def matthews_corrcoef(cm: np.ndarray) -> float:
    """Matthews correlation (multi-class form, Gorodkin 2004); 0.0 when undefined.

    References
    ----------
    B. W. Matthews, Biochim. Biophys. Acta 405 (1975) 442-451.
    """
    cm = cm.astype(np.float64)
    t = cm.sum(axis=1)  # true counts per class
    p = cm.sum(axis=0)  # predicted counts per class
    c = np.trace(cm)
    s = cm.sum()
    num = c * s - float(t @ p)
    den = math.sqrt(max(s * s - float(p @ p), 0.0)) * math.sqrt(max(s * s - float(t @ t), 0.0))
    return num / den if den > 0 else 0.0


def classification_metrics(cm: np.ndarray) -> dict[str, float]:
    """Accuracy, Matthews correlation and F1 (binary: class 1; else macro-average)."""
    total = cm.sum()
    acc = float(np.trace(cm) / total) if total else 0.0
    k = cm.shape[0]
    f1 = f1_score(cm, 1) if k == 2 else float(np.mean([f1_score(cm, c) for c in range(k)]))
    return {"accuracy": acc, "f1": f1, "mcc": matthews_corrcoef(cm)}


def perplexity(loss: float) -> float:
    """``exp(loss)``, or inf when it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def mlm_metrics(loss_sum: float, correct: float, num_tokens: float) -> dict[str, Any]:
    """Masked-LM loss, perplexity and accuracy from sums over masked tokens."""
    if num_tokens <= 0:
        raise ValueError("no masked token was evaluated")
    loss = loss_sum / num_tokens
    return {"loss": loss, "perplexity": perplexity(loss), "accuracy": correct / num_tokens}
