"""The runnable examples in docs/models.md and in tnlm_models' model docstrings."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[2] / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
MODULES = (
    "tnlm_models.config",
    "tnlm_models.mpo_linear",
    "tnlm_models.modeling",
    "tnlm_models.init",
    "tnlm_models.convert",
    "tnlm_models.serialization",
    "tnlm_models.testing",
    "tnlm_models.analysis",
)


def test_models_guide_examples_run():
    pytest.importorskip("transformers")
    result = doctest.testfile(
        str(DOCS / "models.md"), module_relative=False, optionflags=FLAGS, verbose=False
    )
    assert result.attempted > 30
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
    assert result.failed == 0
