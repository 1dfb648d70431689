"""Type aliases shared by tnlm's public signatures.

Arrays are ``Any``-typed: tnlm accepts any backend autoray understands (numpy, torch, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Array", "Shape", "BondDim", "MatrixShape"]

#: An array of any supported backend (numpy.ndarray, torch.Tensor, ...).
Array = Any
#: A tuple of ints.
Shape = tuple[int, ...]
#: ``None`` (no cap), one cap for every bond, or one cap per bond.
BondDim = None | int | Sequence[int]
#: ``(row_dims, col_dims)`` or an int n (automatic balanced factorisation into n cores).
MatrixShape = int | tuple[Sequence[int], Sequence[int]]
