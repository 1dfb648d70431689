"""Joint decomposition of several matrices into MPOs that share one core.

``shared_mpo_decompose`` fits, to matrices ``W_1 .. W_L`` of one shape, MPOs that have the
same core at one site (by default the central one, as MPOBERT shares its central tensors
across layers) and their own cores everywhere else. docs/theory.md, Section 8, derives the
algorithm.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import autoray as ar
import numpy as np

from . import backend as B
from ._checks import check_array, check_bond_dims, check_int
from ._types import Array, BondDim, MatrixShape
from .decompose import mpo_decompose, resolve_matrix_shape, tt_decompose
from .mpo import MPO

__all__ = [
    "SHARED_INITS",
    "SHARED_SITES",
    "SharedFitReport",
    "full_bond_dims",
    "shared_mpo_decompose",
]

log = logging.getLogger(__name__)

#: Names accepted by ``shared=`` besides a core index.
SHARED_SITES: tuple[str, ...] = ("central",)


@dataclass(frozen=True)
class SharedFitReport:
    """What :func:`shared_mpo_decompose` did.

    Attributes
    ----------
    shared_index : int
        The core shared by every MPO.
    init : str
        The start taken: "clone" or "aligned".
    relative_errors : tuple of float
        ``||W_l - W'_l||_F / ||W_l||_F`` of each matrix, measured on the returned cores
        (so it includes any truncation of the bonds inside the non-shared cores).
    objective : tuple of float
        ``sum_l ||W_l - W'_l||_F^2`` of the block model (before the non-shared blocks are
        split into cores): entry 0 at the start (every matrix with the start matrix's
        non-shared cores, MPOBERT's "clone"), then one entry after each sweep. The sequence
        does not increase (up to rounding).
    sweeps : int
        Alternating-least-squares sweeps run.
    converged : bool
        Whether a sweep lowered the objective by at most ``rtol`` times its previous value
        (or the objective reached rounding level) within ``max_sweeps`` sweeps.
    rtol : float
        The tolerance the stop was judged with.
    """

    shared_index: int
    init: str
    relative_errors: tuple[float, ...]
    objective: tuple[float, ...]
    sweeps: int
    converged: bool
    rtol: float


def _check_matrices(Ws: Sequence[Array]) -> list[float]:
    if isinstance(Ws, (str, bytes)) or not isinstance(Ws, Sequence):
        raise TypeError(
            f"Ws must be a sequence of 2-D arrays of one shape; got {type(Ws).__name__}"
        )
    if len(Ws) == 0:
        raise ValueError("Ws is empty; expected at least one matrix")
    norms = [check_array(w, f"Ws[{i}]", ndim=2) for i, w in enumerate(Ws)]
    first = Ws[0]
    for i, w in enumerate(Ws[1:], start=1):
        if tuple(w.shape) != tuple(first.shape):
            raise ValueError(
                f"Ws[{i}] has shape {tuple(w.shape)}, but Ws[0] has {tuple(first.shape)}; "
                "expected matrices of one shape"
            )
        if B.backend_name(w) != B.backend_name(first) or w.dtype != first.dtype:
            raise TypeError(
                f"Ws[{i}] is a {B.backend_name(w)} array of dtype {B.dtype_name(w)}, but Ws[0] "
                f"is {B.backend_name(first)} {B.dtype_name(first)}; expected one backend and "
                "dtype"
            )
    if B.dtype_name(first).startswith("complex"):
        raise TypeError(
            f"Ws have the complex dtype {B.dtype_name(first)}; shared_mpo_decompose expects "
            "real floating matrices"
        )
    return norms


#: Starts of the fit (see :func:`shared_mpo_decompose`).
SHARED_INITS: tuple[str, ...] = ("auto", "clone", "aligned")

#: Dtypes computed in float32 (their cores are returned in the input dtype).
_HALF = ("float16", "bfloat16")


def _compute_view(x: Array) -> Array:
    """``x`` without autograd history, half precision as float32."""
    x = B.stop_gradient(x)
    return ar.astype(x, "float32") if B.dtype_name(x) in _HALF else x


def _shared_index(shared: str | int, n: int) -> int:
    if isinstance(shared, str):
        if shared not in SHARED_SITES:
            raise ValueError(
                f"unknown shared site {shared!r}; expected one of {', '.join(SHARED_SITES)} "
                f"or a core index in [0, {n})"
            )
        return n // 2
    return check_int(shared, "shared", 0, n)


def full_bond_dims(
    out_dims: Sequence[int], in_dims: Sequence[int], bond_dim: BondDim = None
) -> tuple[int, ...]:
    """Bond dimensions ``(r_0, ..., r_n)`` of an MPO with the given factorisation.

    ``r_k = min(prod_{m<k} out_m in_m, prod_{m>=k} out_m in_m, cap_k)`` with boundary
    ranks 1: the exact (full) rank when ``bond_dim`` is None; ``bond_dim`` is one cap for
    every internal bond or a sequence of ``n - 1`` caps, as for :func:`tnlm.mpo_decompose`.
    The bonds :func:`shared_mpo_decompose` gives its cores, and those of
    ``tnlm_models.MPOLinear``.

    Examples
    --------
    >>> full_bond_dims((4, 4), (4, 4))
    (1, 16, 1)
    >>> full_bond_dims((2, 2, 2), (2, 2, 2), (3, 100))
    (1, 3, 4, 1)
    """
    if len(out_dims) != len(in_dims):
        raise ValueError(
            f"out_dims and in_dims must have one entry per core; got {len(out_dims)} and "
            f"{len(in_dims)}"
        )
    sizes = [int(o) * int(i) for o, i in zip(out_dims, in_dims)]
    caps = check_bond_dims(bond_dim, len(sizes) - 1)
    bonds = [1]
    for k in range(1, len(sizes)):
        r = min(math.prod(sizes[:k]), math.prod(sizes[k:]))
        cap = caps[k - 1]
        bonds.append(r if cap is None else min(r, cap))
    return (*bonds, 1)


def _interleaved(
    w: Array, rows: Sequence[int], cols: Sequence[int], p: int, m: int, q: int
) -> Array:
    """``W`` (I, J) as the 3-way block ``(P, m, Q)`` of its interleaved indices around the
    shared site (``P`` the sites before it, ``m`` its own, ``Q`` those after it)."""
    n = len(rows)
    t = ar.do("reshape", w, (*rows, *cols))  # (i_1..i_n, j_1..j_n)
    t = ar.do("transpose", t, [a for k in range(n) for a in (k, n + k)])  # (i_1, j_1, ..)
    return ar.do("reshape", t, (p, m, q))  # (P, m, Q)


def _polar(a: Array) -> Array:
    """The isometry ``U V^T`` of ``a = U S V^T``: the maximiser of ``<X, a>`` over ``X``
    with orthonormal columns (orthogonal Procrustes)."""
    u, _, vh = B.svd(a)
    return u @ vh


def _complete_columns(q: Array, r: int) -> Array:
    """``q`` (P, c) with orthonormal columns, completed to ``r`` orthonormal columns."""
    c = int(q.shape[1])
    if c >= r:
        return q
    eye = B.eye_like(int(q.shape[0]), q)
    u, _, _ = B.svd(eye - q @ q.T)  # the complement's projector, (P, P)
    return ar.do("concatenate", (q, u[:, : r - c]), axis=1)  # (P, r)


def _start(
    w: Array, rows: Sequence[int], cols: Sequence[int], caps: list[int | None], k: int
) -> tuple[Array, Array]:
    """Isometries ``L`` (P, r_k) and ``R^T`` (Q, r_{k+1}) of ``w``'s TT-SVD
    (:func:`mpo_decompose`) in mixed-canonical form around core ``k``."""
    cores = mpo_decompose(w, (rows, cols), cast(BondDim, caps)).canonicalize(k).cores
    left = B.eye_like(1, w)
    for c in cores[:k]:
        r0, i, j, r1 = (int(d) for d in c.shape)
        left = ar.do("reshape", left @ ar.do("reshape", c, (r0, i * j * r1)), (-1, r1))
    right = B.eye_like(1, w)
    for c in cores[:k:-1]:
        r0, i, j, r1 = (int(d) for d in c.shape)
        right = ar.do("reshape", ar.do("reshape", c, (r0 * i * j, r1)) @ right, (r0, -1))
    return left, right.T  # (P, r_k'), (Q, r_{k+1}')


def _own_blocks(a: Array, r: int, s: int) -> tuple[Array, Array]:
    """The truncated HOSVD bases of a block ``a`` (P, m, Q): the top-``r`` left singular
    vectors of its unfolding ``(P, m Q)`` and top-``s`` right ones of ``(P m, Q)``, from
    the eigenvectors of the smaller Gram matrix, as ``L`` (P, r) and ``R^T`` (Q, s)."""
    p, m, q = (int(d) for d in a.shape)
    a1 = ar.do("reshape", a, (p, m * q))
    u = B.eigh_desc(a1 @ a1.T)[1] if p <= m * q else B.svd(a1)[0]  # (P, >= r)
    a3 = ar.do("reshape", a, (p * m, q))
    v = B.eigh_desc(a3.T @ a3)[1] if q <= p * m else B.svd(a3)[2].T  # (Q, >= s)
    return _fix_column_signs(u[:, :r]), _fix_column_signs(v[:, :s])


def _fix_column_signs(u: Array) -> Array:
    """``u`` with each column's largest-magnitude entry made positive (eigenvectors carry no
    sign of their own; this makes every backend return the same ones)."""
    un = B.to_numpy(u)
    top = un[np.argmax(np.abs(un), axis=0), np.arange(un.shape[1])]
    return u * B.like(np.where(top < 0, -1.0, 1.0), u)[None, :]


def _sign_alignment(
    g: Array, ref: Array, left_free: bool = True, right_free: bool = True
) -> tuple[Array, Array]:
    """Signs ``d`` (r,), ``e`` (s,) that make ``d_a e_b g[a, x, b]`` agree with ``ref``:
    a local maximiser of ``sum_ab d_a e_b H[a, b]``, ``H[a, b] = sum_x g[a,x,b] ref[a,x,b]``
    (exact when ``g`` is ``ref`` with flipped signs, where ``H`` has rank one in sign).
    A side with no cores to carry a sign (the shared core at an end of the chain) keeps
    its signs at +1."""
    h = B.to_numpy(ar.do("sum", g * ref, axis=1)).astype(float)  # (r, s)

    def sign(x: Any) -> Any:
        return np.where(x < 0, -1.0, 1.0)

    d, e = np.ones(h.shape[0]), np.ones(h.shape[1])
    if right_free:
        e = sign(h[int(np.argmax((h * h).sum(axis=1)))])
    for _ in range(4):
        if left_free:
            d = sign(h @ e)
        if right_free:
            e = sign(h.T @ d)
    return B.like(d, g), B.like(e, g)


def _pad(core: Array, shape: tuple[int, ...]) -> Array:
    """``core`` zero-padded on its bonds to ``shape`` (the represented matrix is unchanged)."""
    for axis, target in enumerate(shape):
        have = int(core.shape[axis])
        if have < target:
            fill = tuple(target - have if a == axis else int(d) for a, d in enumerate(core.shape))
            core = ar.do("concatenate", (core, B.zeros_like_shape(fill, core)), axis=axis)
    return core


def _split_left(
    left: Array, rows: Sequence[int], cols: Sequence[int], bonds: Sequence[int]
) -> list[Array]:
    """``L`` (P, r_k) as ``k`` cores ``(r_j, i_j, j_j, r_{j+1})`` by TT-SVD
    (:func:`tt_decompose`), the inner bonds capped at ``bonds``."""
    k = len(rows)
    if k == 0:
        return []
    sizes = [i * j for i, j in zip(rows, cols)]
    r = int(left.shape[1])
    caps = cast(BondDim, [*bonds[1:k], None])  # the last bond is r: never cut
    tt = tt_decompose(ar.do("reshape", left, (*sizes, r)), caps).cores
    last = ar.do("reshape", tt[-1], (int(tt[-1].shape[0]), r))  # (b, r): merged into core k-1
    b0, d, b1 = (int(x) for x in tt[-2].shape)
    tt = [*tt[:-2], ar.do("reshape", ar.do("reshape", tt[-2], (b0 * d, b1)) @ last, (b0, d, r))]
    out = []
    for j, c in enumerate(tt):
        c = ar.do("reshape", c, (int(c.shape[0]), rows[j], cols[j], int(c.shape[2])))
        out.append(_pad(c, (bonds[j], rows[j], cols[j], bonds[j + 1])))
    return out


def _split_right(
    right_t: Array, rows: Sequence[int], cols: Sequence[int], bonds: Sequence[int]
) -> list[Array]:
    """``R^T`` (Q, r) as right-orthonormal cores: the mirror image of :func:`_split_left`."""
    k = len(rows)
    if k == 0:
        return []
    sizes = [i * j for i, j in zip(rows, cols)]
    r = int(right_t.shape[1])
    t = ar.do("reshape", right_t, (*sizes, r))  # (s_1..s_k, r)
    t = ar.do("transpose", t, list(range(k - 1, -1, -1)) + [k])  # (s_k..s_1, r)
    t = ar.do("reshape", t, (math.prod(sizes), r))
    mirrored = _split_left(t, rows[::-1], cols[::-1], list(bonds[::-1]))
    return [ar.do("transpose", c, (3, 1, 2, 0)) for c in mirrored[::-1]]


def shared_mpo_decompose(
    Ws: Sequence[Array],
    shape: MatrixShape,
    bond_dim: BondDim = None,
    *,
    shared: str | int = "central",
    init: str = "auto",
    start: int = 0,
    max_sweeps: int = 100,
    rtol: float = 1e-4,
) -> tuple[list[MPO], SharedFitReport]:
    """Decompose several matrices of one shape into MPOs that share one core.

    Every ``W_l`` is viewed, with its indices interleaved as in :func:`mpo_decompose`, as a
    3-way block ``A_l`` of shape ``(P, m, Q)``: the sites before the shared core ``k``, the
    shared site, the sites after it. The model is ``A_l = L_l C R_l``::

        A_l[p, x, q] = sum_{a,b} L_l[p, a] C[a, x, b] R_l[b, q]

            P ──[L_l]── r_k ──[ C ]── r_{k+1} ──[R_l]── Q       C shared by every l
                                 |
                                 x (i_k j_k)

    with ``L_l`` (P, r_k) orthonormal columns and ``R_l`` (r_{k+1}, Q) orthonormal rows.
    It minimises ``f = sum_l ||A_l - L_l C R_l||_F^2`` by alternating least squares, each
    step exact given the others:

    - ``C = mean_l L_l^T A_l R_l^T`` (with isometric ``L_l``, ``R_l``);
    - ``L_l``, then ``R_l``: orthogonal Procrustes, the polar factor of
      ``A_l (C R_l)^T`` resp. ``A_l^T (L_l C)`` (one SVD of a ``(P, r_k)`` resp.
      ``(Q, r_{k+1})`` matrix), ``C`` refreshed after each matrix (Gauss-Seidel).

    So ``f`` never increases. The start is the TT-SVD of ``Ws[start]`` in mixed-canonical
    form around ``k``, its non-shared blocks given to every matrix (MPOBERT's "clone";
    ``max_sweeps=0`` returns it). Finally ``L_l`` and ``R_l`` are split into cores by
    :func:`tt_decompose` (exact unless ``bond_dim`` caps a bond inside them).

    Parameters
    ----------
    Ws : sequence of array, each shape (I, J)
        One backend and real floating dtype (float16/bfloat16 computed in float32).
    shape : int or (sequence of int, sequence of int)
        As in :func:`mpo_decompose`.
    bond_dim : None, int or sequence of n-1 ints
        As in :func:`mpo_decompose`; every bond has ``min(left size, right size, cap)``.
    shared : "central" or int
        The shared core: ``"central"`` is ``n // 2`` (``MPO.central_index``).
    start : int
        The matrix whose decomposition starts the fit.
    max_sweeps : int
        Most sweeps (one sweep updates every ``L_l``, ``R_l`` and ``C``).
    rtol : float
        Stop when a sweep lowers ``f`` by at most ``rtol * f`` (``report.converged``).

    Returns
    -------
    mpos : list of MPO
        One per matrix, in ``Ws``' backend, dtype and device; ``mpos[l].cores[k]`` is the
        same array object for every ``l``.
    report : SharedFitReport

    References
    ----------
    J. C. Gower, "Generalized Procrustes analysis", Psychometrika 40, 1975.
    L. De Lathauwer, B. De Moor, J. Vandewalle, "On the best rank-(R1, ..., RN)
    approximation of higher-order tensors", SIAM J. Matrix Anal. Appl. 21(4), 2000.
    P. Liu et al., "Scaling Pre-trained Language Models to Deeper via Parameter-efficient
    Architecture", arXiv:2303.16753, 2023 (the shared central tensors).

    Examples
    --------
    >>> import numpy as np, tnlm
    >>> rng = np.random.default_rng(0)
    >>> Ws = [rng.standard_normal((8, 12)) for _ in range(3)]
    >>> mpos, report = tnlm.shared_mpo_decompose(Ws, ((2, 2, 2), (2, 3, 2)))
    >>> mpos[0].cores[1] is mpos[2].cores[1], report.shared_index
    (True, 1)
    >>> report.converged, report.objective[-1] <= report.objective[0]
    (True, True)
    """
    norms = _check_matrices(Ws)
    rows, cols = resolve_matrix_shape(shape, int(Ws[0].shape[0]), int(Ws[0].shape[1]))
    n = len(rows)
    caps = check_bond_dims(bond_dim, n - 1)
    k = _shared_index(shared, n)
    if init not in SHARED_INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(SHARED_INITS)}")
    start = check_int(start, "start", 0, len(Ws))
    max_sweeps = check_int(max_sweeps, "max_sweeps", 0)
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be a float in [0, 1); got {rtol!r}")
    sizes = [i * j for i, j in zip(rows, cols)]
    bonds = full_bond_dims(rows, cols, caps)
    p, m, q = math.prod(sizes[:k]), sizes[k], math.prod(sizes[k + 1 :])
    r, s = bonds[k], bonds[k + 1]
    count = len(Ws)

    views = [_compute_view(w) for w in Ws]
    dtype = B.dtype_name(Ws[0])

    def cast_back(x: Array) -> Array:
        return ar.astype(x, dtype) if dtype in _HALF else x

    blocks = [_interleaved(v, rows, cols, p, m, q) for v in views]  # each (P, m, Q)
    total = sum(x * x for x in norms)

    def project(a: Array, left: Array, right: Array) -> Array:
        """``L^T A R^T`` as (r m, s)."""
        t = ar.do("reshape", left.T @ ar.do("reshape", a, (p, m * q)), (r * m, q))
        return t @ right.T

    def objective(cen: Array, grams: list[Array]) -> float:
        # with isometric L_l, R_l: f = sum_l ||A_l||^2 - 2 <G_l, C> + ||C||^2
        cross = sum(float(ar.do("sum", g * cen)) for g in grams)
        return max(total - 2.0 * cross + count * float(ar.do("sum", cen * cen)), 0.0)

    def mean(grams: list[Array]) -> Array:
        return sum(grams[1:], grams[0]) / count

    # "clone": the start matrix's TT-SVD blocks for every matrix, its own core shared
    left0, right0 = _start(views[start], rows, cols, caps, k)
    left0, right0 = _complete_columns(left0, r), _complete_columns(right0, s)
    lefts, rights = [left0] * count, [right0.T] * count  # (P, r), (s, Q)
    grams = [project(a, left0, right0.T) for a in blocks]  # each (r m, s)
    core, taken = grams[start], "clone"
    history = [objective(core, grams)]
    if init != "clone" and count > 1:
        # "aligned": each matrix's own HOSVD bases, signs matched to the start matrix's
        own = [_own_blocks(a, r, s) for a in blocks]
        own_grams = [project(a, u, v.T) for a, (u, v) in zip(blocks, own)]
        for i, (u, v) in enumerate(own):
            if i != start:
                g = ar.do("reshape", own_grams[i], (r, m, s))
                ref = ar.do("reshape", own_grams[start], (r, m, s))
                d, e = _sign_alignment(g, ref, k > 0, k < len(sizes) - 1)
                own[i] = (u * d[None, :], v * e[None, :])
                g = g * ar.do("reshape", d, (r, 1, 1)) * ar.do("reshape", e, (1, 1, s))
                own_grams[i] = ar.do("reshape", g, (r * m, s))
        value = objective(mean(own_grams), own_grams)
        if init == "aligned" or value < objective(mean(grams), grams):
            lefts, rights = [u for u, _ in own], [v.T for _, v in own]
            grams, taken, history = own_grams, "aligned", [value]
    if taken == "aligned":
        core = mean(grams)
    floor = 100.0 * total * B.real_dtype_eps(blocks[0])  # rounding level of f
    # one matrix: its TT-SVD (the clone) is the answer; sweeps optimise the block objective,
    # which under inner bond caps is not the reconstruction error and could worsen it
    converged = history[0] <= floor or count == 1
    sweeps = 0
    while not converged and sweeps < max_sweeps:
        core = mean(grams)  # the best C for the current L_l, R_l (after a clone: a step)
        for i, a in enumerate(blocks):
            c_rm_s = core  # (r m, s)
            sr = ar.do("reshape", ar.do("reshape", a, (p * m, q)) @ rights[i].T, (p, m * s))
            if k > 0:  # an end of the chain has no cores to hold a basis: it stays 1
                lefts[i] = _polar(sr @ ar.do("reshape", c_rm_s, (r, m * s)).T)  # (P, r)
            t = ar.do("reshape", lefts[i].T @ ar.do("reshape", a, (p, m * q)), (r * m, q))
            if k < len(sizes) - 1:
                rights[i] = _polar(t.T @ c_rm_s).T  # (s, Q)
            g = t @ rights[i].T  # (r m, s)
            core = core + (g - grams[i]) / count
            grams[i] = g
        core = mean(grams)  # the exact mean, free of accumulated rounding
        sweeps += 1
        history.append(objective(core, grams))
        drop = history[-2] - history[-1]
        converged = drop <= rtol * history[-2] or history[-1] <= floor

    shared_core = cast_back(ar.do("reshape", core, (r, rows[k], cols[k], s)))
    mpos, errors = [], []
    aux: list[Array] = []
    for i in range(count):
        if i == 0 or sweeps or taken == "aligned":  # a clone without sweeps: blocks shared
            left_cores = _split_left(lefts[i], rows[:k], cols[:k], bonds[: k + 1])
            right_cores = _split_right(rights[i].T, rows[k + 1 :], cols[k + 1 :], bonds[k + 1 :])
            aux = [cast_back(c) for c in left_cores + right_cores]
        mpo = MPO([*aux[:k], shared_core, *aux[k:]])
        mpos.append(mpo)
        diff = B.upcast(views[i]) - B.upcast(_compute_view(mpo.to_dense()))
        errors.append(math.sqrt(B.sq_norm(diff)) / norms[i] if norms[i] else 0.0)
    log.info(
        "shared_mpo_decompose: %d matrices, core %d shared; objective %.4g -> %.4g in %d "
        "sweeps (converged: %s)",
        count,
        k,
        history[0],
        history[-1],
        sweeps,
        converged,
    )
    report = SharedFitReport(
        k, taken, tuple(errors), tuple(history), sweeps, converged, float(rtol)
    )
    return mpos, report
