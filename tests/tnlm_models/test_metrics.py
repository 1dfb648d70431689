"""Metrics against direct formulas (numpy's Pearson correlation for binary MCC)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tnlm_models.metrics import (
    classification_metrics,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    mlm_metrics,
    perplexity,
)


def test_binary_metrics_match_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    cm = confusion_matrix(y, p, 2)
    tp = np.sum((y == 1) & (p == 1))
    fp = np.sum((y == 0) & (p == 1))
    fn = np.sum((y == 1) & (p == 0))
    m = classification_metrics(cm)
    assert m["accuracy"] == pytest.approx(np.mean(y == p))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    # binary MCC equals Pearson correlation of the 0/1 vectors
    assert m["mcc"] == pytest.approx(np.corrcoef(y, p)[0, 1])


def test_multiclass_mcc_perfect_and_degenerate():
    y = [0, 1, 2, 2, 1]
    assert matthews_corrcoef(confusion_matrix(y, y, 3)) == pytest.approx(1.0)
    # constant prediction: MCC undefined -> 0
    assert matthews_corrcoef(confusion_matrix(y, [1] * 5, 3)) == 0.0
    assert f1_score(confusion_matrix([0, 0], [0, 0], 2)) == 0.0
    macro = classification_metrics(confusion_matrix(y, y, 3))["f1"]
    assert macro == pytest.approx(1.0)


def test_mlm_metrics_and_perplexity():
    m = mlm_metrics(loss_sum=20.0, correct=3, num_tokens=10)
    assert m == {"loss": 2.0, "perplexity": pytest.approx(math.exp(2.0)), "accuracy": 0.3}
    assert perplexity(1e6) == math.inf
    with pytest.raises(ValueError, match="no masked token"):
        mlm_metrics(0.0, 0, 0)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="1-D of equal length"):
        confusion_matrix([0, 1], [0], 2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match=r"predictions must lie in \[0, 2\)"):
        confusion_matrix([0, 1], [0, -1], 2)
