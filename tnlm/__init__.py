"""tnlm: tensor-train / MPO algebra with guaranteed truncation.

Users import from here::

    import tnlm
    mpo = tnlm.mpo_decompose(W, shape=5, bond_dim=64)
"""

from __future__ import annotations

from .backend.threads import blas_threads_unchanged
from .contract import PATH_OPTIMIZERS, ContractionCost, clear_plan_cache, contract, contract_cost
from .decompose import mpo_decompose, tt_decompose
from .factorize import factorize
from .io import load, save
from .mpo import APPLY_METHODS, MPO, TensorTrain
from .planning import ApplyPlan, CostModel, plan_apply
from .shared_decompose import SharedFitReport, full_bond_dims, shared_mpo_decompose
from .truncation import SVD_METHODS, BondTruncation, TruncationReport

__all__ = [
    "mpo_decompose",
    "tt_decompose",
    "shared_mpo_decompose",
    "SharedFitReport",
    "factorize",
    "full_bond_dims",
    "plan_apply",
    "ApplyPlan",
    "CostModel",
    "MPO",
    "TensorTrain",
    "TruncationReport",
    "BondTruncation",
    "contract",
    "contract_cost",
    "ContractionCost",
    "clear_plan_cache",
    "save",
    "load",
    "PATH_OPTIMIZERS",
    "SVD_METHODS",
    "APPLY_METHODS",
    "blas_threads_unchanged",
]
__version__ = "0.1.0"
