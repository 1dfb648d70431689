"""Analysis of a set of matrices as MPOs: bond spectra, entropies, error-versus-bond curves,
parameter shares, and the table, JSON and figures of ``tnlm analyze``.

Everything here works on names and arrays; it knows nothing of neural networks. Names are
grouped by one rule (:func:`group_name`: every numeric path component becomes ``*``), so the
layers of a stack fall into one group whatever the model.

How the numbers are computed
----------------------------
A dense matrix is decomposed once, exactly (``bond_dim=None``, LAPACK SVD, float64 or
complex128). Its report's kept singular values at bond ``k`` are those of the unfolding
``W^{<k>}`` (the left factors of the sweep are isometries). An MPO (a model's layer) is
analysed from its cores: :meth:`tnlm.MPO.bond_singular_values` brings it to canonical form and
reads every bond's Schmidt spectrum, without rebuilding the dense matrix.

The error at a bond cap ``r`` is that of TT-SVD with every bond capped at ``r``. It is computed
exactly, by TT-rounding the exact MPO to ``r`` (:meth:`tnlm.MPO.compress`, which in exact
arithmetic equals TT-SVD of the dense matrix with the same caps, and whose reported error is
the committed one by the error identity of docs/theory.md, Section 2); this works on the cores,
with no second pass over the dense matrix. The spectra alone give two bounds on it, also
reported: with ``eps_k(r)`` the norm of bond ``k``'s singular values beyond the ``r``-th,
``max_k eps_k(r)`` is a lower bound on the error of *every* MPO with bonds at most ``r``
(its unfolding ``k`` has rank at most ``r``; Eckart-Young) and ``sqrt(sum_k eps_k(r)**2)`` is
an upper bound on TT-SVD's error (Oseledets 2011, Thm. 2.2). With one bond (two cores) the
three coincide.

References
----------
I. V. Oseledets, "Tensor-Train Decomposition", SIAM J. Sci. Comput. 33(5), 2011.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend as B
from ._tt_ops import spectrum_entropy
from ._types import Array, MatrixShape
from .decompose import mpo_decompose
from .mpo import MPO

__all__ = [
    "DEFAULT_SHARED",
    "CurvePoint",
    "MatrixAnalysis",
    "GroupShare",
    "ParameterShares",
    "analyze_matrix",
    "default_caps",
    "error_bounds",
    "error_curve",
    "group_name",
    "group_key",
    "parameter_shares",
    "format_analysis",
    "format_shares",
    "analysis_to_json",
    "plot_group",
]

#: Default ``shared`` pattern: a name with a path component ``central``.
DEFAULT_SHARED = r"(^|[./])central([./]|$)"

_NUMERIC_COMPONENT = re.compile(r"(?<![^./])\d+(?![^./])")


@dataclass(frozen=True)
class CurvePoint:
    """The error of capping every bond at ``bond_dim``.

    Attributes
    ----------
    bond_dim : int
        The cap.
    relative_error : float
        ``||W - W_r||_F / ||W||_F`` of TT-SVD at this cap (exact: TT-rounding of the exact MPO).
    lower_bound, upper_bound : float
        ``max_k eps_k(r) / ||W||`` (no MPO with these bonds does better) and
        ``sqrt(sum_k eps_k(r)**2) / ||W||`` (TT-SVD does no worse), from the spectra.
    """

    bond_dim: int
    relative_error: float
    lower_bound: float
    upper_bound: float


@dataclass(frozen=True)
class MatrixAnalysis:
    """Spectra, entropies and the error curve of one matrix at one factorisation.

    Attributes
    ----------
    name : str
    kind : str
        ``"dense"`` (a 2-D array decomposed exactly) or ``"mpo"`` (cores analysed as stored).
    shape : (int, int)
    dtype : str
        The input's dtype (the analysis runs in float64 or complex128).
    row_dims, col_dims : tuple of int
        The factorisation.
    bond_dims : tuple of int
        Bond dimensions of the exact MPO (dense input) or of the stored MPO.
    norm : float
        ``||W||_F``.
    spectra : tuple of array, shape (bond_dims[k],)
        Singular values across each bond, descending (numpy float64).
    entropies : tuple of float
        ``-sum p log p``, ``p = s**2 / sum s**2``, per bond (natural log).
    curve : tuple of CurvePoint
        Ascending caps.
    """

    name: str
    kind: str
    shape: tuple[int, int]
    dtype: str
    row_dims: tuple[int, ...]
    col_dims: tuple[int, ...]
    bond_dims: tuple[int, ...]
    norm: float
    spectra: tuple[np.ndarray, ...]
    entropies: tuple[float, ...]
    curve: tuple[CurvePoint, ...] = field(default_factory=tuple)

    @property
    def group(self) -> str:
        return group_name(self.name)

    @property
    def factorization(self) -> str:
        """``"4,4,2x2,4,4"``: row factors x column factors."""
        return f"{','.join(map(str, self.row_dims))}x{','.join(map(str, self.col_dims))}"

    def relative_error_at(self, bond_dim: int) -> float | None:
        """The curve's relative error at cap ``bond_dim`` (None when it is not on the curve)."""
        return next((p.relative_error for p in self.curve if p.bond_dim == bond_dim), None)


# --------------------------------------------------------------------------- names


def group_name(name: str) -> str:
    """``name`` with every numeric path component (between ``.`` or ``/``) replaced by ``*``.

    Examples
    --------
    >>> group_name("encoder.layer.3.attention.self.query.weight")
    'encoder.layer.*.attention.self.query.weight'
    >>> group_name("h.11.mlp.c_fc.weight"), group_name("layer3.weight")
    ('h.*.mlp.c_fc.weight', 'layer3.weight')
    """
    return _NUMERIC_COMPONENT.sub("*", name)


def group_key(name: str) -> tuple[Any, ...]:
    """A sort key putting ``layer.2`` before ``layer.10`` (numeric components as numbers)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"([./])", name))


# --------------------------------------------------------------------------- spectra and errors


def _sq_tails(s: np.ndarray) -> np.ndarray:
    """``tails[r] = sum_{i >= r} s_i**2`` for ``r = 0..len(s)``, in float64."""
    sq = np.abs(np.asarray(s, dtype=np.float64)) ** 2
    return np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])


def error_bounds(spectra: Sequence[Array], bond_dim: int) -> tuple[float, float]:
    """Absolute bounds ``(max_k eps_k, sqrt(sum_k eps_k**2))`` on the error of capping every
    bond at ``bond_dim``, ``eps_k`` the norm of bond ``k``'s singular values past the cap.

    The lower bound holds for every MPO with bonds at most ``bond_dim``; the upper one for
    TT-SVD (Oseledets 2011, Thm. 2.2).

    Parameters
    ----------
    spectra : sequence of array, shape (m_k,)
        The exact singular values across each bond of the matrix.
    bond_dim : int >= 1
    """
    if isinstance(bond_dim, bool) or not isinstance(bond_dim, (int, np.integer)) or bond_dim < 1:
        raise ValueError(f"bond_dim must be an int >= 1; got {bond_dim!r}")
    eps_sq = [float(_sq_tails(B.to_numpy(s))[min(int(bond_dim), len(s))]) for s in spectra]
    if not eps_sq:
        return 0.0, 0.0
    return math.sqrt(max(eps_sq)), math.sqrt(sum(eps_sq))


def default_caps(bond_dims: Sequence[int]) -> list[int]:
    """Powers of two below the largest bond, and the largest bond itself (error 0 there).

    >>> default_caps((9, 144, 256, 16))
    [1, 2, 4, 8, 16, 32, 64, 128, 256]
    """
    top = max(bond_dims, default=1)
    caps = [2**i for i in range(top.bit_length()) if 2**i < top]
    return caps + [top]


def error_curve(
    mpo: MPO, bond_dims: Iterable[int], spectra: Sequence[Array] | None = None
) -> list[CurvePoint]:
    """Relative error of capping every bond of ``mpo`` at each of ``bond_dims``.

    ``mpo`` must be exact (the matrix itself, not an approximation of it): the error at cap r
    is the one TT-rounding ``mpo`` to r commits, which equals TT-SVD of the dense matrix at
    that cap (in exact arithmetic) and is exact by the error identity (docs/theory.md,
    Section 2). The bounds come from ``spectra`` (default: ``mpo.bond_singular_values()``).

    Parameters
    ----------
    mpo : MPO
    bond_dims : iterable of int >= 1
    spectra : sequence of array, optional
        ``mpo``'s exact bond spectra, when already known.

    Returns
    -------
    list of CurvePoint, ascending and without repeats.
    """
    caps = sorted(set(bond_dims))
    for r in caps:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"bond dimensions of the curve must be ints >= 1; got {r!r}")
    if spectra is None:
        spectra = mpo.bond_singular_values()
    norm = float(mpo.norm())
    top = max(mpo.bond_dims, default=1)
    points = []
    for r in caps:
        lower, upper = error_bounds(spectra, int(r))
        if r >= top:
            err = 0.0  # nothing to cut: the exact MPO itself
        else:
            err = float(mpo.compress(int(r), method="svd").report.error)
        scale = 1.0 / norm if norm > 0 else 0.0
        points.append(CurvePoint(int(r), err * scale, lower * scale, upper * scale))
    return points


def _as_float64(W: Array) -> np.ndarray:
    a = np.asarray(B.to_numpy(W))
    if np.iscomplexobj(a):
        return a.astype(np.complex128)
    if not (np.issubdtype(a.dtype, np.floating)):
        raise TypeError(
            f"the matrix has dtype {a.dtype}; expected a floating or complex matrix (integer "
            "and boolean tensors are not weights)"
        )
    return a.astype(np.float64)


def _numpy_mpo(mpo: MPO) -> MPO:
    """``mpo`` with numpy float64 (or complex128) cores: the analysis's precision."""
    return MPO([_as_float64(c) for c in mpo.cores])


def analyze_matrix(
    matrix: Array | MPO,
    shape: MatrixShape | None = None,
    *,
    bond_dims: Iterable[int] = (),
    name: str = "matrix",
) -> MatrixAnalysis:
    """Bond spectra, entropies and the error-versus-bond-dimension curve of one matrix.

    Parameters
    ----------
    matrix : array, shape (I, J), or MPO
        A dense matrix of any backend (decomposed exactly at ``shape``, in float64 or
        complex128), or an MPO, analysed from its cores as it is (``shape`` must be None).
    shape : int or (row_dims, col_dims)
        The factorisation, as for :func:`tnlm.mpo_decompose`; required for a dense matrix.
    bond_dims : iterable of int, optional
        Caps added to the error curve's :func:`default_caps` of the exact bonds (powers of
        two below the largest bond, and the largest bond).
    name : str
        The matrix's name (its group is :func:`group_name` of it).

    Returns
    -------
    MatrixAnalysis

    Examples
    --------
    >>> import numpy as np
    >>> W = np.diag([4.0, 0.0, 0.0, 3.0])   # 4 E11 (x) E11 + 3 E22 (x) E22: spectrum (4, 3)
    >>> a = analyze_matrix(W, ((2, 2), (2, 2)))
    >>> [round(float(s), 12) for s in a.spectra[0]]
    [4.0, 3.0, 0.0, 0.0]
    >>> [(p.bond_dim, round(p.relative_error, 12)) for p in a.curve]   # 3 / 5 at cap 1
    [(1, 0.6), (2, 0.0), (4, 0.0)]
    """
    if isinstance(matrix, MPO):
        if shape is not None:
            raise ValueError(
                f"{name} is an MPO, whose factorisation is its own; expected shape=None, got "
                f"{shape!r}"
            )
        dtype = B.dtype_name(matrix.cores[0])
        mpo = _numpy_mpo(matrix)
        spectra = [np.asarray(s, dtype=np.float64) for s in mpo.bond_singular_values()]
        kind = "mpo"
    else:
        if shape is None:
            raise ValueError(f"{name} is a dense matrix; expected a shape (an int n or factors)")
        dims = tuple(int(d) for d in getattr(matrix, "shape", ()))
        if len(dims) != 2:
            raise ValueError(f"{name} has shape {dims}; expected a 2-D matrix")
        dtype = B.dtype_name(matrix)
        mpo = mpo_decompose(_as_float64(matrix), shape, None, method="svd")
        kept = mpo.report.kept if mpo.report is not None else ()  # every decomposition has one
        spectra = [np.asarray(B.to_numpy(s), dtype=np.float64) for s in kept]
        kind = "dense"
    caps = default_caps(mpo.bond_dims) + list(bond_dims)
    return MatrixAnalysis(
        name=name,
        kind=kind,
        shape=(int(mpo.shape[0]), int(mpo.shape[1])),
        dtype=dtype,
        row_dims=tuple(mpo.row_dims),
        col_dims=tuple(mpo.col_dims),
        bond_dims=tuple(mpo.bond_dims),
        norm=float(mpo.norm()),
        spectra=tuple(spectra),
        entropies=tuple(spectrum_entropy(s) for s in spectra),
        curve=tuple(error_curve(mpo, caps, spectra)),
    )


# --------------------------------------------------------------------------- parameter shares


@dataclass(frozen=True)
class GroupShare:
    """Parameters of one group of tensors (:func:`group_name`)."""

    group: str
    tensors: int
    parameters: int
    share: float


@dataclass(frozen=True)
class ParameterShares:
    """Where the parameters are: per group, and in the tensors matching ``shared_pattern``."""

    total: int
    groups: tuple[GroupShare, ...]
    shared_pattern: str
    shared_tensors: tuple[str, ...]
    shared_parameters: int

    @property
    def shared_share(self) -> float:
        return self.shared_parameters / self.total if self.total else 0.0


def parameter_shares(sizes: Mapping[str, int], shared: str = DEFAULT_SHARED) -> ParameterShares:
    """Parameter counts and shares per tensor group and of the shared tensors.

    Parameters
    ----------
    sizes : mapping of str to int
        Every stored tensor's name and number of entries (each stored tensor once).
    shared : str
        A regular expression searched in each name; the matching tensors are reported as the
        shared ones (default: a path component ``central``).

    Examples
    --------
    >>> s = parameter_shares({"enc.central.q": 60, "enc.layer.0.q.core0": 20,
    ...                       "enc.layer.1.q.core0": 20})
    >>> s.shared_share, [(g.group, g.parameters) for g in s.groups]
    (0.6, [('enc.central.q', 60), ('enc.layer.*.q.core0', 40)])
    """
    pattern = re.compile(shared)
    total = sum(int(v) for v in sizes.values())
    by_group: dict[str, list[int]] = {}
    for name, n in sizes.items():
        by_group.setdefault(group_name(name), []).append(int(n))
    groups = sorted(
        (
            GroupShare(g, len(v), sum(v), sum(v) / total if total else 0.0)
            for g, v in by_group.items()
        ),
        key=lambda g: (-g.parameters, g.group),
    )
    matched = tuple(sorted((k for k in sizes if pattern.search(k)), key=group_key))
    return ParameterShares(
        total=total,
        groups=tuple(groups),
        shared_pattern=shared,
        shared_tensors=matched,
        shared_parameters=sum(int(sizes[k]) for k in matched),
    )


# --------------------------------------------------------------------------- reporting


def _fmt_err(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.2e}"


def format_analysis(analyses: Sequence[MatrixAnalysis], table_caps: Sequence[int]) -> str:
    """One line per matrix: name, kind, shape, factorisation, exact bonds, entropy per bond
    and the relative error at each of ``table_caps`` (``-`` where the cap is not on its
    curve)."""
    width = max([len(a.name) for a in analyses] + [6])
    head = (
        f"{'matrix':<{width}} {'kind':<5} {'shape':>11} {'factorisation':>17} "
        f"{'bonds':>15} {'entropy per bond':>22}"
    )
    head += "".join(f" {'err@' + str(r):>9}" for r in table_caps)
    lines = [head]
    for a in analyses:
        shape = f"{a.shape[0]}x{a.shape[1]}"
        ent = " ".join(f"{e:.2f}" for e in a.entropies) or "-"
        bonds = ",".join(map(str, a.bond_dims)) or "-"
        line = (
            f"{a.name:<{width}} {a.kind:<5} {shape:>11} {a.factorization:>17} {bonds:>15} {ent:>22}"
        )
        line += "".join(f" {_fmt_err(a.relative_error_at(r)):>9}" for r in table_caps)
        lines.append(line)
    return "\n".join(lines)


def format_shares(shares: ParameterShares) -> str:
    """The parameter table: one line per group, then the shared tensors' share."""
    width = max([len(g.group) for g in shares.groups] + [5])
    lines = [f"{'group':<{width}} {'tensors':>7} {'parameters':>12} {'share':>7}"]
    for g in shares.groups:
        lines.append(
            f"{g.group:<{width}} {g.tensors:>7} {g.parameters:>12,} {100 * g.share:>6.2f}%"
        )
    lines.append(
        f"total {shares.total:,} parameters; shared central tensors (names matching "
        f"{shares.shared_pattern!r}): {len(shares.shared_tensors)} tensor(s), "
        f"{shares.shared_parameters:,} parameters ({100 * shares.shared_share:.2f}%)"
    )
    return "\n".join(lines)


def analysis_to_json(
    analyses: Sequence[MatrixAnalysis], shares: ParameterShares | None = None
) -> dict[str, Any]:
    """A JSON-ready dict of the analyses (and parameter shares)."""
    out: dict[str, Any] = {
        "error_definition": (
            "relative_error: ||W - W_r||_F / ||W||_F of TT-SVD with every bond capped at "
            "bond_dim (exact, by TT-rounding the exact MPO); lower_bound: max_k eps_k / ||W||_F "
            "(no MPO with these bonds does better); upper_bound: sqrt(sum_k eps_k^2) / ||W||_F; "
            "eps_k: norm of bond k's singular values beyond bond_dim"
        ),
        "entropy_definition": "-sum p log p (natural log), p = s^2 / sum s^2, per bond",
        "matrices": [
            {
                "name": a.name,
                "group": a.group,
                "kind": a.kind,
                "shape": list(a.shape),
                "dtype": a.dtype,
                "row_dims": list(a.row_dims),
                "col_dims": list(a.col_dims),
                "bond_dims": list(a.bond_dims),
                "norm": a.norm,
                "entropies": list(a.entropies),
                "spectra": [[float(v) for v in s] for s in a.spectra],
                "curve": [
                    {
                        "bond_dim": p.bond_dim,
                        "relative_error": p.relative_error,
                        "lower_bound": p.lower_bound,
                        "upper_bound": p.upper_bound,
                    }
                    for p in a.curve
                ],
            }
            for a in analyses
        ],
    }
    if shares is not None:
        out["parameters"] = {
            "total": shares.total,
            "groups": [
                {
                    "group": g.group,
                    "tensors": g.tensors,
                    "parameters": g.parameters,
                    "share": g.share,
                }
                for g in shares.groups
            ],
            "shared_central": {
                "pattern": shares.shared_pattern,
                "tensors": list(shares.shared_tensors),
                "parameters": shares.shared_parameters,
                "share": shares.shared_share,
            },
        }
    return out


#: Most layers drawn side by side in one row of a group's figure.
_FIGURE_COLUMNS = 8


def plot_group(analyses: Sequence[MatrixAnalysis], path: str, *, title: str | None = None) -> None:
    """One figure for a group: each matrix (layer) a column, its bond spectra on top and its
    error-versus-bond-dimension curve (with the spectral bounds shaded) below.

    Parameters
    ----------
    analyses : sequence of MatrixAnalysis
        The group's matrices, in the order to draw them (more than 8 wrap onto further rows).
    path : str
        Written in the format its extension names (png without one).
    title : str, optional
        Default: the group name of the first matrix.
    """
    from matplotlib.figure import Figure

    if not analyses:
        raise ValueError("plot_group needs at least one analysis")
    m = len(analyses)
    cols = min(m, _FIGURE_COLUMNS)
    blocks = math.ceil(m / cols)
    fig = Figure(figsize=(2.6 * cols + 0.6, 4.6 * blocks + 0.4))
    axes = fig.subplots(2 * blocks, cols, squeeze=False, sharey="row")  # layers comparable
    for i in range(blocks * cols):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        if i >= m:
            top.set_visible(False)
            bottom.set_visible(False)
            continue
        a = analyses[i]
        for k, s in enumerate(a.spectra):
            s = np.maximum(np.asarray(s, dtype=float), 1e-300)
            top.semilogy(np.arange(1, len(s) + 1), s, label=f"bond {k + 1}", lw=1)
        top.set_title(a.name, fontsize=7)
        top.tick_params(labelsize=7)
        top.grid(True, which="both", alpha=0.3)
        if i % cols == 0:
            top.set_ylabel("singular value", fontsize=8)
        if i == 0:
            top.legend(fontsize=6)
        curve = [p for p in a.curve if p.relative_error > 0]  # 0 (nothing cut) is off the log
        if curve:
            r = [p.bond_dim for p in curve]
            bottom.fill_between(
                r,
                [max(p.lower_bound, 1e-300) for p in curve],
                [p.upper_bound for p in curve],
                color="0.85",
                label="spectral bounds",
            )
            bottom.plot(r, [p.relative_error for p in curve], "o-", ms=3, label="TT-SVD")
            bottom.set_xscale("log", base=2)
            bottom.set_yscale("log")
        bottom.set_xlabel("bond dimension cap", fontsize=8)
        bottom.tick_params(labelsize=7)
        bottom.grid(True, which="both", alpha=0.3)
        if i % cols == 0:
            bottom.set_ylabel("relative error", fontsize=8)
        if i == 0 and curve:
            bottom.legend(fontsize=6)
    fig.suptitle(title or analyses[0].group, fontsize=10)
    fig.tight_layout()
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else "png"
    fig.savefig(path, format=fmt, dpi=100)
