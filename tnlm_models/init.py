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
decomposes with ``tnlm.mpo_decompose`` and ``tnlm.shared_mpo_decompose``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

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
    # Encoder matrices first (they need their name for the depth scaling); the encoder says
    # which modules compute its layers, and a shared central tensor is initialised once.
    layer_modules = [module for module, _ in model.encoder_module().layer_groups()]
    for module in layer_modules:
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
    encoder_linears = {id(m) for layer in layer_modules for m in layer.modules()}
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
