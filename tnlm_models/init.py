"""Initialisation schemes of the MPO BERT models.

From scratch (``config.init_scheme``):

``"normal"``
    BERT's scheme: every matrix has entries of std ``initializer_range`` (for an MPO, the
    *rebuilt* matrix has that std, see ``MPOLinear.reset_parameters``), embeddings
    ``N(0, initializer_range^2)`` with the padding row zero, biases zero, LayerNorms (1, 0),
    adapters zero.
``"depth_scaled"`` (default)
    As ``"normal"``, but the two matrices that write into the residual stream
    (``attention_output`` and ``output``) get std ``initializer_range / sqrt(2 L)`` for
    ``L = num_hidden_layers`` (the GPT-2 / Megatron residual scaling). Each of the ``2 L``
    residual branches then adds variance ``O(1 / (2 L))`` relative to the stream, so the
    post-LN renormalisations shrink activations and back-propagated gradients by at most
    ``prod (1 + c / 2L)^(-1/2) >= exp(-c / 4)`` over the whole stack, a bound independent of
    depth: a 48-layer model starts within a bounded factor of a 12-layer one.
``"deepnorm"``
    DeepNet's DeepNorm for post-LN encoders (Wang et al. 2022), which the official MPOBERT
    code offers: every residual connection becomes ``LN(alpha * x + f(x))`` with
    ``alpha = (2 L)^(1/4)`` (``MPOBertLayer.residual_scale``), and the matrices are
    Xavier-normal (std ``gain * sqrt(2 / (fan_in + fan_out))``) with gain
    ``beta = (8 L)^(-1/4)`` for the value, attention-output and both FFN matrices and gain 1
    for query and key. Embeddings, biases, LayerNorms and adapters as in ``"normal"``. It
    changes the forward pass, so a model converted from a pre-trained BERT cannot use it.

From a pre-trained model see ``tnlm_models.convert`` (``"clone"`` and ``"fit"``), which
uses ``fit_shared_central`` below.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from .config import INIT_SCHEMES, MATRIX_NAMES
from .mpo_linear import MPOLinear

__all__ = [
    "DEEPNORM_BETA_MATRICES",
    "INIT_FUNCTIONS",
    "RESIDUAL_MATRICES",
    "deepnorm_alpha",
    "deepnorm_beta",
    "init_from_scratch",
    "matrix_std",
]

logger = logging.getLogger(__name__)

#: Matrices whose output is added to the residual stream.
RESIDUAL_MATRICES: tuple[str, ...] = ("attention_output", "output")


#: Matrices DeepNorm initialises with gain ``beta`` (query and key keep gain 1).
DEEPNORM_BETA_MATRICES: tuple[str, ...] = ("value", "attention_output", "intermediate", "output")


def deepnorm_alpha(config: Any) -> float:
    """Residual scale of every sub-layer: ``(2 L)^(1/4)`` under ``"deepnorm"``, else 1."""
    if config.init_scheme != "deepnorm":
        return 1.0
    return float((2 * config.num_hidden_layers) ** 0.25)


def deepnorm_beta(config: Any) -> float:
    """DeepNorm's init gain ``(8 L)^(-1/4)`` for an encoder of ``L`` layers."""
    return float((8 * config.num_hidden_layers) ** -0.25)


def matrix_std(config: Any, name: str) -> float:
    """Target std of the rebuilt matrix ``name`` under ``config.init_scheme``."""
    std = config.initializer_range
    if config.init_scheme == "deepnorm":
        out_f, in_f = config.matrix_shape(name)
        gain = deepnorm_beta(config) if name in DEEPNORM_BETA_MATRICES else 1.0
        return gain * math.sqrt(2.0 / (in_f + out_f))
    if config.init_scheme == "depth_scaled" and name in RESIDUAL_MATRICES:
        std /= math.sqrt(2 * config.num_hidden_layers)
    return std


@torch.no_grad()
def _init_common(model: Any, generator: torch.Generator | None) -> None:
    cfg = model.config
    std = cfg.initializer_range
    seen_central: set[int] = set()
    # Encoder matrices first (they need their name for the depth scaling).
    for module in model.modules():
        if module.__class__.__name__ != "MPOBertLayer":
            continue
        for name in MATRIX_NAMES:
            lin = module.linear(name)
            s = matrix_std(cfg, name)
            if isinstance(lin, MPOLinear):
                first = id(lin.central) not in seen_central
                seen_central.add(id(lin.central))
                lin.reset_parameters(s, init_central=first, generator=generator)
            else:
                nn.init.normal_(lin.weight, 0.0, s, generator=generator)
                nn.init.zeros_(lin.bias)
    encoder_linears = {
        id(m)
        for layer in model.modules()
        if layer.__class__.__name__ == "MPOBertLayer"
        for m in layer.modules()
    }
    for module in model.modules():
        if id(module) in encoder_linears and not isinstance(module, nn.LayerNorm):
            continue
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, std, generator=generator)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    head = getattr(model, "head", None)
    if head is not None and isinstance(getattr(head, "bias", None), nn.Parameter):
        head.bias.zero_()


#: Registry of from-scratch schemes (all share one function; the scheme only changes
#: ``matrix_std``).
INIT_FUNCTIONS: dict[str, Callable[[Any, torch.Generator | None], None]] = {
    name: _init_common for name in INIT_SCHEMES
}


def init_from_scratch(model: Any, generator: torch.Generator | None = None) -> None:
    """Initialise ``model`` in place with ``model.config.init_scheme``.

    Parameters
    ----------
    model : MPOBertPreTrainedModel
    generator : torch.Generator, optional
        Source of randomness (default: torch's global generator).

    Raises
    ------
    ValueError
        If the scheme is unknown (the valid names are listed).
    """
    scheme = model.config.init_scheme
    if scheme not in INIT_FUNCTIONS:
        raise ValueError(
            f"unknown init scheme {scheme!r}; expected one of {', '.join(INIT_FUNCTIONS)}"
        )
    INIT_FUNCTIONS[scheme](model, generator)


# ====================================================================== from pre-trained
#: Initialisations from a pre-trained model (see ``tnlm_models.convert.from_bert``).
PRETRAINED_INITS: tuple[str, ...] = ("clone", "fit")


def layer_map(source_layers: int, target_layers: int) -> list[int]:
    """Source layer used for each target layer: ``t -> floor(t * S / T)``.

    For a deeper target (e.g. 12 -> 48) every source layer is repeated ``T / S`` times in
    place (``[0, 0, 0, 0, 1, 1, 1, 1, ...]``), so the order of the pre-trained computation
    is kept; for ``T == S`` it is the identity.

    Examples
    --------
    >>> layer_map(2, 6)
    [0, 0, 0, 1, 1, 1]
    """
    if source_layers < 1 or target_layers < 1:
        raise ValueError(
            f"layer counts must be >= 1, got source={source_layers}, target={target_layers}"
        )
    return [t * source_layers // target_layers for t in range(target_layers)]


def interleave(w: torch.Tensor, out_dims: Sequence[int], in_dims: Sequence[int]) -> torch.Tensor:
    """``W`` (out, in) as the 2n-way tensor ``(out_1, in_1, ..., out_n, in_n)``."""
    n = len(out_dims)
    t = w.reshape(*out_dims, *in_dims)  # (out_1..out_n, in_1..in_n)
    perm = [p for k in range(n) for p in (k, n + k)]
    return t.permute(perm)  # (out_1, in_1, ..., out_n, in_n)


def _svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        return torch.linalg.svd(a, full_matrices=False)
    except RuntimeError:  # pragma: no cover - gesdd failure: fall back to gesvd
        return torch.linalg.svd(a, full_matrices=False, driver="gesvd")


def _top_left_vectors(a: torch.Tensor, r: int) -> torch.Tensor:
    """``r`` orthonormal columns spanning ``a``'s top-``r`` left singular subspace.

    ``a`` is short and wide here (rows <= a few hundred, columns up to ~10^4), so the
    eigen-decomposition of the small Gram matrix ``a a^T`` replaces a full SVD (25x faster
    on the matrices of BERT-base); in float64 its leading eigenvectors are accurate, and
    when ``r`` equals the number of rows the result is a complete orthonormal basis.
    """
    if a.shape[0] > a.shape[1]:
        u, _, _ = _svd(a)
        return _take(u, r, 1)
    _, vecs = torch.linalg.eigh(a @ a.T)  # ascending eigenvalues, (rows, rows)
    return vecs.flip(-1)[:, :r]  # (rows, r)


def _take(u: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """The first ``r`` slices of ``u`` along ``dim``, zero-padded if there are fewer."""
    if u.shape[dim] >= r:
        return u.narrow(dim, 0, r)
    pad = list(u.shape)
    pad[dim] = r - u.shape[dim]
    return torch.cat([u, u.new_zeros(pad)], dim=dim)


def split_left(
    block: torch.Tensor, sizes: Sequence[int], bonds: Sequence[int]
) -> list[torch.Tensor]:
    """Split a left block ``(s_1 ... s_m, r)`` into m left-orthonormal cores by TT-SVD.

    Core ``k`` has shape ``(bonds[k], sizes[k], bonds[k+1])`` with ``bonds[0] = 1`` and
    ``bonds[m] = r``; bonds below the numerical rank truncate (optimally per bond).
    """
    cores = []
    x = block.reshape(sizes[0], -1)  # (s_1, rest)
    for k in range(len(sizes) - 1):
        u, s, vh = _svd(x)
        r = bonds[k + 1]
        u, sv = _take(u, r, 1), _take(s[:, None] * vh, r, 0)  # (rows, r), (r, rest)
        cores.append(u.reshape(bonds[k], sizes[k], r))
        x = sv.reshape(r * sizes[k + 1], -1)  # (r s_{k+1}, rest)
    cores.append(x.reshape(bonds[-2], sizes[-1], bonds[-1]))
    return cores


def split_right(
    block: torch.Tensor, sizes: Sequence[int], bonds: Sequence[int]
) -> list[torch.Tensor]:
    """Split a right block ``(r, s_1 ... s_m)`` into m right-orthonormal cores."""
    flipped = block.reshape(bonds[0], *sizes).permute(*range(len(sizes), 0, -1), 0)
    cores = split_left(flipped, list(sizes)[::-1], list(bonds)[::-1])
    return [c.permute(2, 1, 0) for c in cores[::-1]]


@dataclass
class SharedFit:
    """A central tensor shared by several matrices, and each matrix's auxiliary cores.

    Attributes
    ----------
    central : Tensor, shape (r_c, out_c, in_c, r_{c+1})
    auxiliary : list of list of Tensor
        ``auxiliary[l][k]`` is core ``k`` of matrix ``l`` (``None`` at the central index);
        layout ``(r_left, out_k, in_k, r_right)``.
    relative_errors : list of float
        ``||W_l - W'_l||_F / ||W_l||_F`` of each matrix, measured on the rebuilt cores.
    objective : list of float
        "fit": ``sum_l ||W_l - W'_l||_F^2`` (before splitting the blocks into cores) at the
        clone start, after the first central update and after each alternating-least-squares
        sweep; the sequence does not increase. "clone": one entry, the summed squared error
        of the rebuilt cores.
    """

    central: torch.Tensor
    auxiliary: list[list[torch.Tensor | None]]
    relative_errors: list[float]
    objective: list[float]


def _cores_of(
    left: torch.Tensor,
    central: torch.Tensor,
    right: torch.Tensor,
    out_dims: Sequence[int],
    in_dims: Sequence[int],
    bonds: Sequence[int],
) -> list[torch.Tensor | None]:
    n, c = len(out_dims), len(out_dims) // 2
    sizes = [o * i for o, i in zip(out_dims, in_dims)]
    cores: list[torch.Tensor | None] = []
    if c:
        for k, core in enumerate(split_left(left, sizes[:c], bonds[: c + 1])):
            cores.append(core.reshape(bonds[k], out_dims[k], in_dims[k], bonds[k + 1]))
    cores.append(None)
    if c + 1 < n:
        for j, core in enumerate(split_right(right, sizes[c + 1 :], bonds[c + 1 :])):
            k = c + 1 + j
            cores.append(core.reshape(bonds[k], out_dims[k], in_dims[k], bonds[k + 1]))
    return cores


def rebuild(cores: Sequence[torch.Tensor], out_dims: Sequence[int], in_dims: Sequence[int]):
    """Dense ``(out, in)`` matrix of cores ``(r_l, out_k, in_k, r_r)`` (for reports)."""
    t = cores[0].reshape(-1, cores[0].shape[-1])  # (out_1 in_1, r_1)
    for core in cores[1:]:
        t = (t @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])  # (P o i, r)
    n = len(out_dims)
    inter = [d for k in range(n) for d in (out_dims[k], in_dims[k])]
    perm = [2 * k for k in range(n)] + [2 * k + 1 for k in range(n)]
    w = t.reshape(inter).permute(perm)  # (out_1..out_n, in_1..in_n)
    return w.reshape(math.prod(out_dims), math.prod(in_dims))  # (out, in)


def fit_shared_central(
    weights: Sequence[torch.Tensor],
    out_dims: Sequence[int],
    in_dims: Sequence[int],
    bond_dim: int | None = None,
    *,
    init: str = "fit",
    clone_layer: int = 0,
    iterations: int = 20,
    rtol: float = 1e-6,
) -> SharedFit:
    """Fit MPOs with one shared central tensor to several matrices.

    Each matrix ``W_l`` (out, in) is viewed as a 3-way tensor ``A_l`` of shape
    ``(P_left, out_c in_c, P_right)`` (its interleaved indices grouped left of, at, and right
    of the central core) and modelled as ``A_l = L_l . C . R_l`` with ``L_l`` of shape
    ``(P_left, r_c)`` having orthonormal columns and ``R_l`` of shape ``(r_{c+1}, P_right)``
    orthonormal rows (their cores are left/right-orthonormal), and ``C`` shared.

    ``init="clone"``: ``L, C, R`` from the truncated higher-order SVD of ``W_{clone_layer}``
    alone (exact for that matrix at full bond dimension), the same ``L, R`` for every
    matrix. ``init="fit"``: start from the clone and run alternating least squares,
    minimising ``sum_l ||A_l - L_l C R_l||_F^2``:

    - ``C = mean_l L_l^T A_l R_l^T`` (exact minimiser given isometric ``L_l, R_l``),
    - ``L_l`` and ``R_l`` by orthogonal Procrustes (SVD of ``A_l X_l^T``),

    each step exact given the others, so the objective never increases and "fit" is never
    worse than "clone" in the summed squared error. The blocks are then split into cores by
    TT-SVD at the layer's bond dimensions (exact at full rank; with a cap the split
    truncates, and the reported errors include that).

    Parameters
    ----------
    weights : sequence of Tensor, each (out, in)
    out_dims, in_dims : sequence of int
        The factorisation (length n >= 1).
    bond_dim : int, optional
    init : {"clone", "fit"}
    clone_layer : int, default 0
        The matrix decomposed by "clone" and the start of "fit".
    iterations : int, default 20
        Maximum ALS sweeps.
    rtol : float, default 1e-6
        Stop when a sweep lowers the objective by less than ``rtol`` times its value.

    Returns
    -------
    SharedFit
    """
    from .mpo_linear import full_bond_dims

    if init not in PRETRAINED_INITS:
        raise ValueError(f"unknown init {init!r}; expected one of {', '.join(PRETRAINED_INITS)}")
    if not 0 <= clone_layer < len(weights):
        raise ValueError(f"clone_layer={clone_layer} outside [0, {len(weights)})")
    n, c = len(out_dims), len(out_dims) // 2
    sizes = [o * i for o, i in zip(out_dims, in_dims)]
    bonds = full_bond_dims(out_dims, in_dims, bond_dim)
    p_left, m, p_right = math.prod(sizes[:c]), sizes[c], math.prod(sizes[c + 1 :])
    r_l, r_r = bonds[c], bonds[c + 1]
    blocks = [
        interleave(w.to(torch.float64), out_dims, in_dims).reshape(p_left, m, p_right)
        for w in weights
    ]  # each (P_left, m, P_right)

    a0 = blocks[clone_layer]
    left0 = _top_left_vectors(a0.reshape(p_left, m * p_right), r_l)  # (P_left, r_c)
    right0 = _top_left_vectors(a0.reshape(p_left * m, p_right).T, r_r).T  # (r_{c+1}, P_right)
    lefts = [left0.clone() for _ in blocks]
    rights = [right0.clone() for _ in blocks]

    def gram(i: int) -> torch.Tensor:
        # L_i^T A_i R_i^T: the best central tensor for matrix i alone, (r_c, m, r_{c+1})
        return torch.einsum("pa,pmq,bq->amb", lefts[i], blocks[i], rights[i])

    # With isometric L_i, R_i: ||A_i - L_i C R_i||^2 = ||A_i||^2 - 2 <G_i, C> + ||C||^2,
    # so the objective costs nothing beyond the G_i that the C-update needs anyway.
    sq_norms = sum(float(a.pow(2).sum()) for a in blocks)

    def objective(cen: torch.Tensor, grams: list[torch.Tensor]) -> float:
        cross = sum(float((g * cen).sum()) for g in grams)
        return sq_norms - 2.0 * cross + len(grams) * float(cen.pow(2).sum())

    central = gram(clone_layer)
    history: list[float] = []
    if init == "fit":
        grams = [gram(i) for i in range(len(blocks))]
        history.append(objective(central, grams))  # the clone's
        central = torch.stack(grams).mean(0)
        history.append(objective(central, grams))
        for _ in range(iterations):
            for i, a in enumerate(blocks):
                x = torch.einsum("amb,bq->amq", central, rights[i]).reshape(r_l, m * p_right)
                uu, _, vv = _svd(a.reshape(p_left, m * p_right) @ x.T)  # (P_left, r_c)
                lefts[i] = uu @ vv
                y = torch.einsum("pa,amb->pmb", lefts[i], central).reshape(p_left * m, r_r)
                uu, _, vv = _svd(a.reshape(p_left * m, p_right).T @ y)  # (P_right, r_{c+1})
                rights[i] = (uu @ vv).T
            grams = [gram(i) for i in range(len(blocks))]
            central = torch.stack(grams).mean(0)
            history.append(objective(central, grams))
            if history[-2] - history[-1] <= rtol * max(history[-2], 1e-300):
                break
    central_core = central.reshape(r_l, out_dims[c], in_dims[c], r_r)
    auxiliary, errors = [], []
    shared_cores: list[torch.Tensor | None] | None = None
    for w, lft, rgt in zip(weights, lefts, rights):
        if init == "clone":  # every matrix has the clone's blocks: split them once
            if shared_cores is None:
                shared_cores = _cores_of(lft, central_core, rgt, out_dims, in_dims, bonds)
            cores = shared_cores
        else:
            cores = _cores_of(lft, central_core, rgt, out_dims, in_dims, bonds)
        full = [central_core if k == c else cast(torch.Tensor, cores[k]) for k in range(n)]
        w64 = w.to(torch.float64)
        err = torch.linalg.norm(w64 - rebuild(full, out_dims, in_dims)) / torch.linalg.norm(w64)
        auxiliary.append(cores)
        errors.append(float(err))
    if init == "clone":
        history = [sum(e**2 * float(w.double().pow(2).sum()) for e, w in zip(errors, weights))]
    logger.info(
        "fit_shared_central(%s): objective %.4g -> %.4g in %d sweeps; mean rel. error %.4g",
        init,
        history[0],
        history[-1],
        len(history) - 1,
        sum(errors) / len(errors),
    )
    return SharedFit(central_core, auxiliary, errors, history)
