"""Conversion to and from quimb's ``MatrixProductOperator`` (optional dependency)."""

from __future__ import annotations

from typing import Any

import autoray as ar

from .mpo import MPO

__all__ = ["mpo_to_quimb", "mpo_from_quimb"]


def _quimb() -> Any:
    try:
        import quimb.tensor as qtn
    except ImportError as e:  # pragma: no cover - exercised only without quimb
        raise ImportError("quimb interop needs quimb: pip install 'tnlm[quimb]'") from e
    return qtn


def mpo_to_quimb(mpo: MPO) -> Any:
    """``tnlm.MPO`` -> ``quimb.tensor.MatrixProductOperator``.

    quimb's upper index ``k{i}`` is our row index ``i_k``, its lower index ``b{i}`` our column
    index ``j_k``; quimb's ``to_dense()`` therefore returns the same matrix. Rectangular
    operators are supported. The cores are passed in quimb's ``"lrud"`` order, dropping the
    boundary bonds of size 1.
    """
    qtn = _quimb()
    n = len(mpo.cores)
    if n == 1:
        raise ValueError("quimb's MatrixProductOperator needs at least 2 sites; got 1 core")
    arrays = []
    for k, c in enumerate(mpo.cores):
        a = ar.do("transpose", c, (0, 3, 1, 2))  # (l, r, row, col)
        if k == 0:
            a = a[0]  # (r, row, col)
        elif k == n - 1:
            a = a[:, 0]  # (l, row, col)
        arrays.append(a)
    return qtn.MatrixProductOperator(arrays, shape="lrud")


def mpo_from_quimb(qmpo: Any) -> MPO:
    """``quimb.tensor.MatrixProductOperator`` -> ``tnlm.MPO`` (row = quimb's upper index)."""
    qtn = _quimb()
    if not isinstance(qmpo, qtn.MatrixProductOperator):
        raise TypeError(f"expected a quimb MatrixProductOperator; got {type(qmpo).__name__}")
    n = qmpo.L
    cores = []
    for k in range(n):
        t = qmpo[k]
        up, lo = qmpo.upper_ind(k), qmpo.lower_ind(k)
        left = [qmpo.bond(k - 1, k)] if k > 0 else []
        right = [qmpo.bond(k, k + 1)] if k < n - 1 else []
        order = left + [up, lo] + right
        data = t.transpose(*order).data
        if k == 0:
            data = data[None]
        if k == n - 1:
            data = data[..., None]
        cores.append(data)
    return MPO(cores)
