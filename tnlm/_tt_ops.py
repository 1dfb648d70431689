"""Functional core of the tensor-train algebra, on lists of 3-D cores.

A tensor train of order n is a list of cores of shape ``(r_{k-1}, d_k, r_k)`` with
``r_0 = r_n = 1``. An MPO is the same train with each physical index ``d_k = i_k * j_k``
split into (row, col); the classes in :mod:`tnlm.mpo` merge and split that index and call
the functions here, so every identity is implemented (and tested) once.

References
----------
I. V. Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), 2011.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import autoray as ar
import numpy as np
import opt_einsum as oe

from . import backend as B
from ._types import Array
from .contract import contract
from .truncation import BondTruncation, TruncationReport, split_route, truncated_split

__all__ = [
    "tt_svd",
    "tt_to_dense",
    "tt_add",
    "tt_inner",
    "tt_orthogonalize",
    "tt_round",
    "tt_norm",
    "rounding_allowance",
    "warn_if_tol_unmet",
    "spectrum_entropy",
    "times_pow2",
    "dense_equation",
]


class _Budget:
    """Per-bond error allowance for a global relative tolerance.

    The total squared budget ``(tol * ||A||)**2`` is split evenly over the bonds still to be
    truncated, and what a bond leaves unused is passed on to the next ones. Because the bond
    errors are orthogonal, ``sum_k eps_k**2 <= budget`` guarantees
    ``||A - A'||_F <= tol * ||A||_F``; the even split alone is Oseledets' bound
    ``tol * ||A|| / sqrt(n - 1)`` per bond.

    Passing on never lowers a bond's allowance below that even share while every bond keeps
    to its allowance (``remaining / left`` can only grow). A binding ``bond_dim`` cap spends
    more than its allowance; the guarantee is then lost (the caller warns), and the overspend
    is *not* charged to the later bonds: their allowance stays at least the even share, so
    they keep truncating as much as Oseledets' split allows instead of keeping their full
    rank (which would add parameters without restoring the guarantee).
    """

    def __init__(self, tol: float | None, norm: float, n_bonds: int, reserve: float = 0.0) -> None:
        if tol is not None:  # keep room for rounding (rounding_allowance), at most half of tol
            tol = tol - min(reserve, tol / 2)
        self.remaining = None if tol is None else (tol * norm) ** 2
        self.share = None if tol is None else (tol * norm) ** 2 / max(n_bonds, 1)
        self.left = n_bonds

    def delta(self) -> float | None:
        if self.remaining is None or self.share is None:
            return None
        return math.sqrt(max(self.remaining / max(self.left, 1), self.share))

    def spend(self, err: float) -> None:
        self.left -= 1
        if self.remaining is not None:
            self.remaining -= err * err


def rounding_allowance(eps_compute: float, eps_store: float, dims: Sequence[int]) -> float:
    """Estimated relative rounding error ``||A - A'|| / ||A||`` of a train of ``n`` cores
    computed at precision ``eps_compute`` and stored at ``eps_store`` (the same, except for
    half precision, which is computed in float32), with no truncation.

    ``4 eps_compute sqrt(n r) + eps_store sqrt(n)``, with ``r`` the largest full-rank bond
    (``min`` of an unfolding's two sides). Measured, exact decompositions of Gaussian matrices
    (16 x 16 to 1024 x 1024, n = 2..5, real and complex, numpy SVD and every "auto" route)
    commit 5 to 23 eps, 0.06 to 0.45 of this estimate; half precision about 0.4 of its own
    epsilon. A tolerance is honoured with this much kept aside for rounding, so the smallest
    tolerance a dtype can honour is twice it (see :func:`tnlm.mpo_decompose`).
    """
    n = len(dims)
    if n < 2:
        return 0.0
    r = max(min(math.prod(dims[: k + 1]), math.prod(dims[k + 1 :])) for k in range(n - 1))
    return 4.0 * eps_compute * math.sqrt(n * r) + eps_store * math.sqrt(n)


def warn_if_tol_unmet(
    report: TruncationReport, tol: float | None, reserve: float, dtype: str, stacklevel: int
) -> None:
    """``UserWarning`` where ``tol`` cannot be guaranteed: below ``2 * reserve``, the
    smallest tolerance ``dtype`` can honour (:func:`rounding_allowance`), or where a
    ``bond_dim`` cap bound before ``tol`` was reached. ``stacklevel`` counts from here."""
    if tol is None:
        return
    import warnings

    if tol < 2.0 * reserve:
        warnings.warn(
            f"tol={tol} is below the smallest tolerance {dtype} can honour for "
            f"this shape ({2.0 * reserve:.1e}, twice the estimated rounding error of the "
            f"cores): the truncation was allowed tol/2 and rounding may add about "
            f"{reserve:.1e}; work in double precision for a smaller error",
            stacklevel=stacklevel,
        )
    if report.relative_error > tol * (1 + 1e-6):
        warnings.warn(
            f"bond_dim caps bound before tol={tol} was reached: relative error "
            f"{report.relative_error:.3e} (see .report)",
            stacklevel=stacklevel,
        )


def tt_svd(
    t: Array,
    dims: Sequence[int],
    caps: Sequence[int | None],
    tol: float | None,
    method: str = "auto",
    seed: int = 0,
    col_dims: Sequence[int] | None = None,
    norm: float | None = None,
    reserve: float = 0.0,
) -> tuple[list[Array], TruncationReport]:
    """TT-SVD: left-to-right sweep of truncated SVDs (Oseledets 2011, Alg. 1).

    Parameters
    ----------
    t : array with ``prod(dims) * prod(col_dims)`` elements
        A tensor of shape ``dims`` (flattened in C order); or, with ``col_dims``, a matrix
        of shape ``(prod(dims), prod(col_dims))``.
    dims : sequence of int, length n
        The tensor's dimensions; with ``col_dims``, the row factors ``i_1..i_n``.
    caps : sequence of (int or None), length n - 1
    tol : float or None
        Global relative Frobenius tolerance.
    col_dims : sequence of int, length n, optional
        Column factors ``j_1..j_n`` of an MPO: the train is that of the tensor with axes
        interleaved ``(i_1 j_1, ..., i_n j_n)``. The interleaving is never formed as a whole:
        each unfolding moves only the axes it needs (see :func:`_unfolding`).
    norm : float, optional
        ``||t||_F`` when the caller has it (computed otherwise).
    reserve : float
        Relative error kept aside from ``tol`` for rounding (:func:`rounding_allowance`;
        at most ``tol / 2``): the truncation spends ``tol - reserve``.

    Returns
    -------
    cores : list of array, shapes (r_{k-1}, d_k, r_k)
        ``d_k = dims[k] * col_dims[k]`` (row index major).
    report : TruncationReport
    """
    cols = [1] * len(dims) if col_dims is None else [int(j) for j in col_dims]
    method = _method_for(t, method)
    with B.blas_threads_for(B.uses_process_blas(t), math.prod(int(d) for d in t.shape)):
        return _tt_svd_sweep(
            t, [int(i) for i in dims], cols, caps, tol, method, seed, norm, reserve
        )


def _method_for(x: Array, method: str) -> str:
    """``method``, except that "auto" becomes "svd" on a backend without double precision
    (jax without x64): the Gram route's accuracy rests on a double-precision Gram matrix."""
    return "svd" if method == "auto" and not B.has_double(x) else method


def _unfolding(c: Array, r: int, ia: int, ja: int) -> Array:
    """The matrix ``(r ia ja) x (ib jb)`` of the remainder ``c`` of shape ``(r, ia ib, ja jb)``.

    Rows come out as ``(r, i-block, j-block)``, not interleaved; only the middle two axes of
    ``(r, ia, ib, ja, jb)`` are swapped, so the copy moves contiguous runs of ``jb`` elements
    (a full interleaving permutation of a matrix moves runs of one column factor).
    """
    _, i_all, j_all = (int(x) for x in c.shape)
    ib, jb = i_all // ia, j_all // ja
    if ja == 1 or ib == 1:
        return ar.do("reshape", c, (r * ia * ja, ib * jb))
    x = ar.do("reshape", c, (r, ia, ib, ja, jb))
    x = ar.do("transpose", x, (0, 1, 3, 2, 4))
    return ar.do("reshape", x, (r * ia * ja, ib * jb))


def _interleave_rows(x: Array, r: int, rows: Sequence[int], cols: Sequence[int]) -> Array:
    """Reorder axis 0 of ``x`` from ``(r, i_g..i_k, j_g..j_k)`` to ``(r, i_g, j_g, ..,
    i_k, j_k)``; the other axes are kept (flattened)."""
    n = len(rows)
    if all(j == 1 for j in cols) or n == 0:
        return x
    rest = tuple(int(d) for d in x.shape[1:])
    y = ar.do("reshape", x, (r, *rows, *cols, *rest))
    perm = [0] + [ax for q in range(n) for ax in (1 + q, 1 + n + q)]
    perm += list(range(1 + 2 * n, 1 + 2 * n + len(rest)))
    return ar.do("reshape", ar.do("transpose", y, perm), tuple(int(d) for d in x.shape))


def _tt_svd_sweep(
    t: Array,
    rows: list[int],
    cols: list[int],
    caps: Sequence[int | None],
    tol: float | None,
    method: str,
    seed: int,
    norm: float | None = None,
    reserve: float = 0.0,
) -> tuple[list[Array], TruncationReport]:
    n = len(rows)
    dims = [i * j for i, j in zip(rows, cols)]
    norm = B.fnorm(t) if norm is None else norm
    # Gram matrices square the data: keep it well inside the double-precision range by an
    # exact power-of-two scaling, undone on the last core and in the report
    if 0 < norm < math.inf and not _SAFE_NORM[0] < norm < _SAFE_NORM[1]:
        e = max(-1000, min(1000, -math.frexp(norm)[1]))
        out, report = _tt_svd_sweep(
            times_pow2(t, e), rows, cols, caps, tol, method, seed, math.ldexp(norm, e), reserve
        )
        out[-1] = times_pow2(out[-1], -e)
        return out, _scaled_report(report, -e)
    budget = _Budget(tol, norm, n - 1, reserve)
    cores: list[Array] = []
    bonds: list[BondTruncation | None] = []
    # remainder (r, i_g..i_n, j_g..j_n), never interleaved; sites g.. are not split yet
    c = ar.do("reshape", t, (1, math.prod(rows), math.prod(cols)))
    r, g = 1, 0
    for k in range(n - 1):
        m = r * math.prod(dims[g : k + 1])
        delta = budget.delta()
        route = split_route(m, r * math.prod(dims[g:]) // m, caps[k], delta, method)
        if route == "identity":
            # nothing to truncate: identity core, site k merges with the next one and the
            # data stays where it is; the bond's spectrum comes from a later Gram matrix
            bonds.append(None)
            cores.append(ar.do("reshape", B.eye_like(m, t), (m // dims[k], dims[k], m)))
            budget.spend(0.0)
            continue
        ia, ja = math.prod(rows[g : k + 1]), math.prod(cols[g : k + 1])
        mat = _unfolding(c, r, ia, ja)  # rows (r, i_g..i_k, j_g..j_k)
        gm = None
        if k > g:  # bonds g..k-1 are identity bonds
            gm = B.gram(mat) if route == "gram" else None
            _resolve_identity_bonds(bonds, c, r, rows, cols, g, k, gm)
        u, rest, info = truncated_split(mat, caps[k], delta, method, seed + k, gram=gm)
        # u: (m, r_k) left-orthonormal; rest = u^H mat: (r_k, i_{k+1}.. j_{k+1}..)
        budget.spend(info.error)
        bonds.append(info)
        u = _interleave_rows(u, r, rows[g : k + 1], cols[g : k + 1])
        cores.append(ar.do("reshape", u, (m // dims[k], dims[k], info.rank)))
        r, g = info.rank, k + 1
        c = ar.do("reshape", rest, (r, math.prod(rows[g:]), math.prod(cols[g:])))
    if g < n - 1:
        _resolve_identity_bonds(bonds, c, r, rows, cols, g, n - 1, None)
    last = _interleave_rows(ar.do("reshape", c, (-1, 1)), r, rows[g:], cols[g:])
    m = r * math.prod(dims[g:])
    cores.append(ar.do("reshape", last, (m // dims[-1], dims[-1], 1)))  # (r_{n-1}, d_n, 1)
    done = tuple(b for b in bonds if b is not None)
    return cores, TruncationReport(norm=norm, bonds=done)


#: Norms outside this range are rescaled before a sweep (their squares would leave the range
#: of double precision, or lose it to subnormals).
_SAFE_NORM = (2.0**-400, 2.0**400)


def times_pow2(x: Any, e: int) -> Any:
    """``x * 2**e`` for an array or a float, exact (barring under/overflow of the result) for
    any int ``e``: applied in steps that are each a representable power of two."""
    top = 1000 if isinstance(x, float) else B.real_dtype_max_exponent(x) - 2
    while e:
        step = max(-top, min(top, e))
        if isinstance(x, float):
            try:
                x = math.ldexp(x, step)
            except OverflowError:
                x = math.copysign(math.inf, x)
        else:
            x = x * math.ldexp(1.0, step)
        e -= step
    return x


def _scaled_report(report: TruncationReport, e: int) -> TruncationReport:
    """``report`` of data scaled by ``2**e``: every norm, error and singular value times
    ``2**e`` (exactly)."""
    bonds = tuple(
        BondTruncation(
            rank=b.rank,
            error=times_pow2(b.error, e),
            kept=times_pow2(b.kept, e),
            discarded=None if b.discarded is None else times_pow2(b.discarded, e),
            method=b.method,
        )
        for b in report.bonds
    )
    return TruncationReport(norm=times_pow2(report.norm, e), bonds=bonds)


def _balance(cores: Sequence[Array]) -> tuple[list[Array], int]:
    """Cores whose products and squares stay inside the double-precision range, and the
    exponent ``e`` with ``A = 2**e * A(balanced cores)``.

    Cores are returned unchanged (``e = 0``) when the sum of the magnitudes of their norms'
    binary exponents is at most ``3/8`` of the dtype's exponent range (384 for float64, 48
    for float32): every partial contraction then stays well within range, and so do its
    squares. Otherwise each core is scaled by an exact power of two to a norm in
    ``[1/2, 1)``, as :func:`tt_svd` does for dense data.
    """
    exps = []
    for c in cores:
        nrm = B.fnorm(c)
        exps.append(math.frexp(nrm)[1] if 0 < nrm < math.inf else 0)
    if 8 * sum(abs(x) for x in exps) <= 3 * B.real_dtype_max_exponent(cores[0]):
        return list(cores), 0
    return [times_pow2(c, -x) for c, x in zip(cores, exps)], sum(exps)


def spectrum_entropy(s: Array) -> float:
    """Von Neumann entropy ``-sum p log p``, ``p = s**2 / sum s**2``, of singular values
    ``s`` of any magnitude (scaled by the largest before squaring; 0 for a zero spectrum)."""
    v = np.abs(B.to_numpy(s).astype(np.float64))
    top = float(v.max()) if v.size else 0.0
    if not 0 < top < math.inf:
        return 0.0
    p = (v / top) ** 2
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def _resolve_identity_bonds(
    bonds: list[BondTruncation | None],
    c: Array,
    r: int,
    rows: Sequence[int],
    cols: Sequence[int],
    g: int,
    k: int,
    gm: Array | None,
) -> None:
    """Fill in the report of identity bonds ``g..k-1`` from one Gram matrix.

    No bond since ``g`` changed the data, so the unfolding at identity bond p is that of the
    remainder ``c`` with sites ``g..p`` as rows, and its Gram matrix is a partial trace of
    any later one: ``G_p[a, b] = sum_x G[(a, x), (b, x)]`` (rows interleaved). ``gm`` is the
    Gram matrix of bond k's unfolding when the sweep has it; otherwise that of bond k - 1
    (the widest identity bond, still no taller than wide) is formed.
    """
    top = k if gm is not None else k - 1
    if gm is None:
        ia, ja = math.prod(rows[g : top + 1]), math.prod(cols[g : top + 1])
        gm = B.gram(_unfolding(c, r, ia, ja))
    gn = B.to_numpy(gm)
    mg = gn.shape[0]
    idx = _interleave_rows(np.arange(mg), r, rows[g : top + 1], cols[g : top + 1])
    gn = gn[np.ix_(idx, idx)]  # rows and columns interleaved
    for p in range(g, k):
        mp = r * math.prod(rows[g : p + 1]) * math.prod(cols[g : p + 1])
        d = mg // mp
        gp = np.trace(gn.reshape(mp, d, mp, d), axis1=1, axis2=3)
        w = np.linalg.eigvalsh(gp)[::-1]
        s = B.like_real(np.sqrt(np.maximum(w.real, 0.0)), c)
        bonds[p] = BondTruncation(rank=mp, error=0.0, kept=s, discarded=s[:0], method="identity")


def dense_equation(n: int, legs: int = 1) -> str:
    """Einsum equation contracting n cores with ``legs`` physical indices each.

    For legs=2 (an MPO) the output lists all row indices, then all column indices:
    ``(b_0, i_1..i_n, j_1..j_n, b_n)``.
    """
    bond = [oe.get_symbol(k) for k in range(n + 1)]
    phys = [[oe.get_symbol(n + 1 + legs * k + m) for m in range(legs)] for k in range(n)]
    ins = ",".join(bond[k] + "".join(phys[k]) + bond[k + 1] for k in range(n))
    out = bond[0] + "".join("".join(p[m] for p in phys) for m in range(legs)) + bond[n]
    return f"{ins}->{out}"


def tt_to_dense(cores: Sequence[Array]) -> Array:
    """Contract a train into its full tensor, shape ``(d_1, ..., d_n)``."""
    dims = tuple(int(c.shape[1]) for c in cores)
    if len(cores) == 1:
        return ar.do("reshape", cores[0], dims)
    full = contract(dense_equation(len(cores)), *cores)  # (1, d_1, ..., d_n, 1)
    return ar.do("reshape", full, dims)


def tt_add(a: Sequence[Array], b: Sequence[Array]) -> list[Array]:
    """Cores of ``A + B``: block-diagonal cores, bond dims add (Oseledets 2011, Sec. 4.1)."""
    n = len(a)
    if n == 1:
        return [a[0] + b[0]]
    out = []
    for k, (x, y) in enumerate(zip(a, b)):
        ra, d, sa = x.shape
        rb, _, sb = y.shape
        if k == 0:
            out.append(ar.do("concatenate", (x, y), axis=2))  # (1, d, sa + sb)
        elif k == n - 1:
            out.append(ar.do("concatenate", (x, y), axis=0))  # (ra + rb, d, 1)
        else:
            top = ar.do("concatenate", (x, B.zeros_like_shape((ra, d, sb), x)), axis=2)
            bot = ar.do("concatenate", (B.zeros_like_shape((rb, d, sa), x), y), axis=2)
            z = ar.do("concatenate", (top, bot), axis=0)  # (ra + rb, d, sa + sb)
            out.append(z)
    return out


def tt_inner(a: Sequence[Array], b: Sequence[Array]) -> Array:
    """``<A, B> = sum conj(A) * B`` by a left-to-right sweep, never forming A or B.

    ::

        E_k = E_{k-1} . conj(a_k) . b_k      cost O(n d r^3)
    """
    conj_first = [x.conj() if B.is_complex(x) else x for x in a]
    env = contract("xdy,xdz->yz", conj_first[0], b[0])  # (ra_1, rb_1)
    for x, y in zip(conj_first[1:], b[1:]):
        env = contract("ab,adc,bde->ce", env, x, y)  # (ra_k, rb_k)
    return env[0, 0]


def tt_orthogonalize(cores: Sequence[Array], center: int) -> list[Array]:
    """Mixed-canonical form around ``center`` by QR sweeps.

    Cores left of ``center`` become left-orthonormal (reshaped to ``(r d, r')`` their columns
    are orthonormal), cores right of it right-orthonormal; the full tensor is unchanged.
    Bond dimensions may shrink to ``min(r d, r')`` where they exceeded it.
    """
    out = list(cores)
    n = len(out)
    for k in range(center):
        r, d, s = out[k].shape
        q, rr = B.qr(ar.do("reshape", out[k], (r * d, s)))  # (r d, m), (m, s)
        out[k] = ar.do("reshape", q, (r, d, q.shape[1]))
        out[k + 1] = contract("ab,bdc->adc", rr, out[k + 1])
    for k in range(n - 1, center, -1):
        r, d, s = out[k].shape
        mat = ar.do("reshape", out[k], (r, d * s))  # (r, d s)
        q, rr = B.qr(_herm(mat))  # q: (d s, m), rr: (m, r)
        out[k] = ar.do("reshape", _herm(q), (q.shape[1], d, s))
        out[k - 1] = contract("adb,bc->adc", out[k - 1], _herm(rr))
    return out


def _herm(x: Array) -> Array:
    return x.conj().T if B.is_complex(x) else x.T


def tt_norm(cores: Sequence[Array]) -> Array:
    """Frobenius norm via orthogonalisation (no cancellation, unlike sqrt(<A, A>)); cores of
    extreme magnitude are balanced by exact powers of two first (:func:`_balance`), so the
    norm neither over- nor underflows where it is representable."""
    balanced, e = _balance(cores)
    ortho = tt_orthogonalize(balanced, len(balanced) - 1)
    return times_pow2(ar.do("linalg.norm", ar.do("reshape", ortho[-1], (-1,))), e)


def tt_round(
    cores: Sequence[Array],
    caps: Sequence[int | None],
    tol: float | None,
    method: str = "auto",
    seed: int = 0,
) -> tuple[list[Array], TruncationReport]:
    """TT-rounding (Oseledets 2011, Alg. 2): right-orthogonalise, then truncate left to right.

    Gives the same tensor (in exact arithmetic) as :func:`tt_svd` of the dense tensor with the
    same caps and tolerance, at cost O(n d r^3) instead of O(prod d).
    """
    n = len(cores)
    method = _method_for(cores[0], method)
    # truncation squares singular values: cores of extreme magnitude are balanced by exact
    # powers of two first, and the scale restored on the last core and in the report
    balanced, e = _balance(cores)
    out = tt_orthogonalize(balanced, 0)
    norm = B.fnorm(out[0])
    eps = B.real_dtype_eps(out[0])
    reserve = rounding_allowance(eps, eps, [int(c.shape[1]) for c in out])
    budget = _Budget(tol, norm, n - 1, reserve)
    bonds: list[BondTruncation] = []
    for k in range(n - 1):
        r, d, s = out[k].shape
        u, rest, info = truncated_split(
            ar.do("reshape", out[k], (r * d, s)), caps[k], budget.delta(), method, seed + k
        )  # u: (r d, r'), rest = u^H core: (r', s)
        budget.spend(info.error)
        bonds.append(info)
        out[k] = ar.do("reshape", u, (r, d, info.rank))
        out[k + 1] = contract("ab,bdc->adc", rest, out[k + 1])
    report = TruncationReport(norm=norm, bonds=tuple(bonds))
    if e:
        out[-1] = times_pow2(out[-1], e)
        report = _scaled_report(report, e)
    # called by MPO.compress / TensorTrain.compress: the user's frame is three levels up
    warn_if_tol_unmet(report, tol, reserve, B.dtype_name(out[0]), stacklevel=4)
    return out, report
