"""tnlm: tensor-train / MPO algebra with guaranteed truncation."""

from __future__ import annotations

from .contract import PATH_OPTIMIZERS, ContractionCost, clear_plan_cache, contract, contract_cost

__all__ = [
    "contract",
    "contract_cost",
    "ContractionCost",
    "PATH_OPTIMIZERS",
    "clear_plan_cache",
]
__version__ = "0.1.0"
