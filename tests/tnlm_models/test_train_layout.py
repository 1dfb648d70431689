"""The trainer's modules: no private name crosses a module boundary, and the argument
errors of ``train`` name what was wrong."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tnlm_models.train import train

TRAIN_DIR = Path(importlib.import_module("tnlm_models.train.loop").__file__).parent


def _private_imports(path: Path) -> list[str]:
    """``module.name`` for every underscore name imported from a tnlm_models module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        inside = node.level > 0 or (node.module or "").startswith("tnlm_models")
        if not inside:
            continue
        for alias in node.names:
            if alias.name.startswith("_"):
                found.append(f"{'.' * node.level}{node.module or ''}.{alias.name}")
    return found


def test_no_private_name_is_imported_across_trainer_modules():
    offenders = {
        p.name: names for p in sorted(TRAIN_DIR.glob("*.py")) if (names := _private_imports(p))
    }
    assert offenders == {}


def test_the_private_import_check_finds_one(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from .datasets import RawData\nfrom .checkpoint import _x, y\n")
    assert _private_imports(module) == [".checkpoint._x"]


def test_a_config_of_another_type_is_refused():
    with pytest.raises(TypeError, match="config must be a TrainConfig, dict or TOML/YAML path"):
        train(config=42)


def test_data_of_another_type_is_refused():
    with pytest.raises(TypeError, match=r"^data must be a path or a list of paths, got int"):
        train(data=3)
    with pytest.raises(TypeError, match=r"data\['valid'\] must be a path or a list of paths"):
        train(data={"train": "a.txt", "valid": 5})
