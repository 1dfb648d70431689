"""MPO BERT models: encoder, masked-LM head and sequence-classification head.

Every layer's six matrices (query, key, value, attention output, FFN in, FFN out) are
``MPOLinear`` (or ``nn.Linear`` for the matrices not listed in ``config.mpo_matrices``).
Sharing is explicit and lives in one code path, ``MPOBertEncoder``:

- ``"central"``: the encoder owns one central tensor per matrix type
  (``encoder.central.<name>``); every layer's ``MPOLinear`` registers that same parameter,
  and keeps its own auxiliary cores, adapter, biases and layer norms.
- ``"all"``: the encoder holds one layer and applies it ``num_hidden_layers`` times.
- ``"none"``: ``num_hidden_layers`` independent layers.

The forward pass reads top to bottom as in Hugging Face's ``modeling_bert.py`` (post-LN).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .config import MATRIX_NAMES, MPOBertConfig
from .init import deepnorm_alpha
from .mpo_linear import MPOLinear, full_bond_dims, rebuild_weights

__all__ = [
    "MPOBertModel",
    "MPOBertForMaskedLM",
    "MPOBertForSequenceClassification",
    "MPOBertPreTrainedModel",
    "MPOBertOutput",
    "MPOBertModelOutput",
    "PARAMETER_PARTS",
]

logger = logging.getLogger(__name__)

#: Keys of ``parameter_breakdown()``.
PARAMETER_PARTS: tuple[str, ...] = (
    "embeddings",
    "central",
    "auxiliary",
    "adapters",
    "dense",
    "norms_biases",
    "heads",
)

_ACTS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
}


@dataclass
class MPOBertModelOutput:
    """Encoder output.

    Attributes
    ----------
    last_hidden_state : Tensor, shape (batch, seq, hidden)
    pooler_output : Tensor, shape (batch, hidden), or None without a pooler
    hidden_states : tuple of Tensor, each (batch, seq, hidden), or None
        Embedding output then every layer's output (``num_hidden_layers + 1`` entries).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class MPOBertOutput:
    """Output of the task models.

    Attributes
    ----------
    loss : Tensor (scalar) or None
        None when no labels were given.
    logits : Tensor
        ``(batch, seq, vocab)`` for masked LM, ``(batch, num_labels)`` for classification.
    hidden_states : tuple of Tensor or None
        As in ``MPOBertModelOutput`` (only with ``output_hidden_states=True``).
    """

    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


def central_shape(config: MPOBertConfig, name: str) -> tuple[int, int, int, int]:
    """Shape ``(r_c, out_c, in_c, r_{c+1})`` of the central tensor of matrix ``name``."""
    out_dims, in_dims = config.factorization(name)
    bonds = full_bond_dims(out_dims, in_dims, config.bond_dim)
    c = config.num_cores // 2
    return (bonds[c], out_dims[c], in_dims[c], bonds[c + 1])


def _parameter_versions(modules: Sequence[nn.Module]) -> tuple[Any, ...]:
    """What identifies the current values of the modules' parameters: each tensor's storage,
    version counter (bumped by every in-place change), dtype and device."""
    return tuple(
        (p.data_ptr(), p._version, p.dtype, p.device, p.shape)
        for m in modules
        for p in m.parameters(recurse=False)
    )


def make_linear(config: MPOBertConfig, name: str, central: nn.Parameter | None = None) -> nn.Module:
    """The module for matrix ``name``: ``MPOLinear`` if it is an MPO, else ``nn.Linear``."""
    out_f, in_f = config.matrix_shape(name)
    if not config.is_mpo(name):
        return nn.Linear(in_f, out_f)
    out_dims, in_dims = config.factorization(name)
    return MPOLinear(
        in_f,
        out_f,
        out_dims=out_dims,
        in_dims=in_dims,
        bond_dim=config.bond_dim,
        central=central,
        adapter_size=config.adapter_size,
        forward_mode=config.forward_mode,
        std=config.initializer_range,
        initialize=False,  # the model's init_weights initialises every parameter once
    )


class MPOBertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout.

    With ``config.embedding_size`` set (ALBERT's factorised embedding) the tables have that
    width and a ``projection`` (ALBERT's ``embedding_hidden_mapping_in``) maps to hidden.
    """

    def __init__(self, config: MPOBertConfig) -> None:
        super().__init__()
        self.config = config
        e = config.embedding_width
        self.word_embeddings = nn.Embedding(config.vocab_size, e, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, e)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, e)
        self.norm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.projection = (
            nn.Linear(e, config.hidden_size) if config.embedding_size is not None else None
        )

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids``, ``token_type_ids`` : (B, T) -> (B, T, hidden)."""
        seq = input_ids.shape[1]
        pos = torch.arange(seq, device=input_ids.device)  # (T,)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(pos)[None]
            + self.token_type_embeddings(token_type_ids)
        )  # (B, T, embedding width)
        x = self.dropout(self.norm(x))
        if self.projection is not None:
            x = self.projection(x)  # (B, T, hidden)
        return x


class MPOBertLayer(nn.Module):
    """One post-LN transformer layer (self-attention, then feed-forward)."""

    query: nn.Module
    key: nn.Module
    value: nn.Module
    attention_output: nn.Module
    intermediate: nn.Module
    output: nn.Module

    def __init__(
        self, config: MPOBertConfig, centrals: dict[str, nn.Parameter] | None = None
    ) -> None:
        super().__init__()
        self.config = config
        centrals = centrals or {}
        for name in MATRIX_NAMES:
            setattr(self, name, make_linear(config, name, centrals.get(name)))
        h = config.hidden_size
        self.attention_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.output_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = _ACTS[config.hidden_act]
        #: DeepNorm's alpha under ``init_scheme="deepnorm"``, else 1 (no scaling)
        self.residual_scale = deepnorm_alpha(config)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual stream entering a sub-layer's sum: ``x``, or ``alpha * x`` (DeepNorm)."""
        return x if self.residual_scale == 1.0 else x * self.residual_scale

    def linear(self, name: str) -> nn.Module:
        """The module of matrix ``name``."""
        return getattr(self, name)

    def apply_linear(
        self, name: str, x: torch.Tensor, weights: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """Matrix ``name`` applied to ``x``, with a weight rebuilt in advance if given."""
        module = self.linear(name)
        if weights is not None and name in weights:
            return F.linear(x, weights[name], cast(torch.Tensor | None, module.bias))
        return module(x)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x`` : (B, T, hidden); ``mask`` : (B, 1, 1, T) additive or None.

        ``weights`` maps matrix names to weights ``(out, in)`` that the encoder rebuilt in
        advance for all layers at once (``rebuild_weights``); other matrices run their own
        forward.
        """
        b, t, h = x.shape
        nh, hd = self.config.num_attention_heads, self.config.head_dim
        lin = self.apply_linear
        q = lin("query", x, weights).view(b, t, nh, hd).transpose(1, 2)  # (B, heads, T, hd)
        k = lin("key", x, weights).view(b, t, nh, hd).transpose(1, 2)  # (B, heads, T, hd)
        v = lin("value", x, weights).view(b, t, nh, hd).transpose(1, 2)  # (B, heads, T, hd)
        p = self.config.attention_probs_dropout_prob if self.training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(b, t, h)  # (B, T, hidden)
        x = self.attention_norm(
            self.residual(x) + self.dropout(lin("attention_output", ctx, weights))
        )
        f = self.act(lin("intermediate", x, weights))  # (B, T, intermediate)
        out = self.dropout(lin("output", f, weights))  # (B, T, hidden)
        return self.output_norm(self.residual(x) + out)  # (B, T, hidden)


class _StepWeights:
    """The weights ``MPOBertEncoder.step_weights`` rebuilt once: the rebuild's outputs
    (with their graph to the cores) and the detached leaves the passes use."""

    def __init__(self) -> None:
        self.rebuilt: dict[str, torch.Tensor] = {}
        self.leaves: dict[str, torch.Tensor] = {}
        self.versions: tuple[Any, ...] | None = None

    def weights(self, encoder: MPOBertEncoder, rows: int) -> dict[str, torch.Tensor]:
        versions = _parameter_versions([m for m in encoder.modules() if isinstance(m, MPOLinear)])
        if self.versions is None:
            self.versions = versions
            self.rebuilt = encoder._rebuild_or_reuse(rows)  # as a plain training forward
            self.leaves = {
                name: w.detach().requires_grad_(w.requires_grad) for name, w in self.rebuilt.items()
            }
        elif versions != self.versions:
            raise RuntimeError(
                "parameters changed inside step_weights(): the weights rebuilt at its start "
                "would be stale; step the optimizer after leaving the block"
            )
        return self.leaves

    def backward(self) -> None:
        """Back-propagate the leaves' summed gradients through the rebuild, once."""
        pairs = [
            (self.rebuilt[name], leaf.grad)
            for name, leaf in self.leaves.items()
            if leaf.grad is not None and self.rebuilt[name].requires_grad
        ]
        if pairs:
            torch.autograd.backward([w for w, _ in pairs], [g for _, g in pairs])


class MPOBertEncoder(nn.Module):
    """The stack of layers, with the sharing mode in one place.

    ``layer_index(i)`` says which module computes layer ``i``: ``0`` for every ``i`` under
    ``"all"`` sharing, ``i`` otherwise.
    """

    def __init__(self, config: MPOBertConfig) -> None:
        super().__init__()
        self.config = config
        centrals: dict[str, nn.Parameter] = {}
        if config.sharing == "central":
            # Registered before the layers, so the first (canonical) name of each shared
            # tensor is encoder.central.<matrix name>.
            self.central = nn.ParameterDict(
                {
                    name: nn.Parameter(torch.empty(central_shape(config, name)))
                    for name in MATRIX_NAMES
                    if config.is_mpo(name)
                }
            )
            centrals = dict(self.central.items())
        n_modules = 1 if config.sharing == "all" else config.num_hidden_layers
        self.layer = nn.ModuleList(MPOBertLayer(config, centrals) for _ in range(n_modules))
        # inference only: {matrix name: (parameter versions, rebuilt weights)}
        self._weight_cache: dict[str, tuple[tuple[Any, ...], torch.Tensor]] = {}
        # inside step_weights(): the weights rebuilt once for every micro-batch of a step
        self._step: _StepWeights | None = None

    def rebuild_weights(self, rows: int) -> dict[str, torch.Tensor]:
        """Every layer module's MPO weights, rebuilt once per forward pass, in batches.

        For each MPO matrix whose layers take the dense path for ``rows`` input rows, one
        batched rebuild over the layer modules (``tnlm_models.mpo_linear.rebuild_weights``)
        replaces ``num_hidden_layers`` separate ones; under "all" sharing the one rebuilt
        weight serves every application of the shared layer.

        In inference (``eval()`` and no gradient recording) the rebuilt weights are kept and
        reused while the parameters stay the same version, so the model then costs what a
        dense BERT costs: every MPO matrix takes the dense path with its cached weight. Any
        change of a parameter (an optimizer step, ``load_state_dict``, an in-place edit under
        ``no_grad``, a new tensor assigned, a dtype or device move) or ``train()`` drops the
        cache. Edits through ``param.data`` bypass PyTorch's version counter: call
        :meth:`clear_weight_cache` after those.

        Returns
        -------
        dict
            ``{matrix name: Tensor (len(self.layer), out, in)}``.
        """
        if self._step is not None and torch.is_grad_enabled():
            return self._step.weights(self, rows)
        return self._rebuild_or_reuse(rows)

    def _rebuild_or_reuse(self, rows: int) -> dict[str, torch.Tensor]:
        """:meth:`rebuild_weights` outside ``step_weights()``: the inference cache, or a
        fresh rebuild of the matrices that take the dense path."""
        cached = not self.training and not torch.is_grad_enabled()
        if not cached:
            self._weight_cache.clear()
        out: dict[str, torch.Tensor] = {}
        for name in MATRIX_NAMES:
            modules = [cast(MPOBertLayer, layer).linear(name) for layer in self.layer]
            first = modules[0]
            if not isinstance(first, MPOLinear):
                continue
            mpo_modules = cast(list[MPOLinear], modules)
            if cached:
                key = _parameter_versions(mpo_modules)
                hit = self._weight_cache.get(name)
                if hit is None or hit[0] != key:
                    hit = (key, rebuild_weights(mpo_modules))
                    self._weight_cache[name] = hit
                out[name] = hit[1]
            elif first.choose_mode(rows) == "dense":
                out[name] = rebuild_weights(mpo_modules)
        return out

    def clear_weight_cache(self) -> None:
        """Drop the rebuilt weights kept for inference (see :meth:`rebuild_weights`)."""
        self._weight_cache.clear()

    @contextlib.contextmanager
    def step_weights(self) -> Iterator[None]:
        """Rebuild the MPO weights once for every forward and backward pass inside.

        For gradient accumulation: the first forward pass with gradients inside rebuilds
        the weights (:meth:`rebuild_weights`) and keeps them as leaf tensors; every pass
        uses those leaves, so each backward pass stops at them and sums the weights'
        gradient there; on leaving, that sum is back-propagated through the rebuild into
        the cores once. The cores' gradients are then what the passes would have given one
        by one, at one rebuild (forward and backward) per optimizer step instead of one per
        micro-batch. Matrices that take the cores path (few rows) are not rebuilt and
        back-propagate as usual.

        The parameters must not change inside (step the optimizer after leaving);
        a forward pass that finds them changed raises ``RuntimeError``. When the block
        raises, nothing is back-propagated. Not for ``DistributedDataParallel``, whose
        gradient hooks expect the cores' gradients during each backward pass.

        Raises
        ------
        RuntimeError
            If entered again before leaving (the blocks do not nest).

        Examples
        --------
        >>> import torch
        >>> from tnlm_models import MPOBertConfig, MPOBertForMaskedLM
        >>> model = MPOBertForMaskedLM(MPOBertConfig(vocab_size=50, hidden_size=16,
        ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        ...     num_cores=2))
        >>> ids = torch.randint(0, 50, (4, 48))
        >>> with model.bert.encoder.step_weights():
        ...     for part in ids.chunk(2):
        ...         model(part, labels=part).loss.backward()
        >>> model.bert.encoder.central["query"].grad is not None
        True
        """
        if self._step is not None:
            raise RuntimeError(
                "step_weights() is already active on this encoder; blocks do not nest"
            )
        step = _StepWeights()
        self._step = step
        ok = False
        try:
            yield
            ok = True
        finally:
            self._step = None
            if ok:
                step.backward()

    def train(self, mode: bool = True) -> MPOBertEncoder:
        self._weight_cache.clear()
        return super().train(mode)

    # ------------------------------------------------------------------ sharing map
    # Converters and initialisers ask these instead of reading the sharing mode.
    def layer_index(self, i: int) -> int:
        """Index into ``self.layer`` of the module that computes layer ``i``."""
        if not 0 <= i < self.config.num_hidden_layers:
            raise IndexError(
                f"layer {i} outside [0, {self.config.num_hidden_layers}) (num_hidden_layers)"
            )
        return 0 if self.config.sharing == "all" else i

    def layer_module(self, i: int) -> MPOBertLayer:
        """The module that computes layer ``i`` (one module for every layer under "all")."""
        return cast(MPOBertLayer, self.layer[self.layer_index(i)])

    def layer_groups(self) -> list[tuple[MPOBertLayer, list[int]]]:
        """Each distinct layer module with the layers it computes, in order: one module and
        every layer under "all", else one module per layer."""
        groups: dict[int, list[int]] = {}
        for i in range(self.config.num_hidden_layers):
            groups.setdefault(self.layer_index(i), []).append(i)
        return [(cast(MPOBertLayer, self.layer[j]), layers) for j, layers in groups.items()]

    def shared_central(self, name: str) -> nn.Parameter | None:
        """The central tensor of matrix ``name`` shared by every layer (``"central"``
        sharing and ``name`` an MPO), else None."""
        central = getattr(self, "central", None)
        return central[name] if central is not None and name in central else None

    def central_core_parameters(self) -> list[nn.Parameter]:
        """The central core of every MPO matrix, each distinct tensor once: the shared
        central tensors under "central" sharing, each layer module's own central cores
        otherwise."""
        seen: dict[int, nn.Parameter] = {}
        for module, _ in self.layer_groups():
            for name in MATRIX_NAMES:
                lin = module.linear(name)
                if isinstance(lin, MPOLinear):
                    seen.setdefault(id(lin.central), lin.central)
        return list(seen.values())

    @torch.no_grad()
    def layer_gradient_norms(self) -> list[float]:
        """Gradient norm of each layer module's own parameters (one entry per module: one
        under ``sharing="all"``), the shared central tensors excluded (they have one
        gradient for all layers); parameters without a gradient count as zero."""
        shared = {id(p) for p in self.central.values()} if hasattr(self, "central") else set()
        norms = []
        for module in self.layer:
            sq = torch.zeros((), dtype=torch.float64)
            for p in module.parameters():
                if id(p) not in shared and p.grad is not None:
                    sq += p.grad.detach().double().pow(2).sum().cpu()
            norms.append(float(sq.sqrt()))
        return norms

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """``x`` : (B, T, hidden) -> (B, T, hidden), and every layer's output if asked."""
        states = [x] if output_hidden_states else None
        # unbind (not w[j]): one backward node stacking the gradients, instead of a
        # full-size zero tensor per layer
        stacked = {
            name: w.unbind(0) for name, w in self.rebuild_weights(x.shape[0] * x.shape[1]).items()
        }
        for i in range(self.config.num_hidden_layers):
            j = self.layer_index(i)
            weights = {name: w[j] for name, w in stacked.items()}  # each (out, in)
            x = self.layer[j](x, mask, weights)
            if states is not None:
                states.append(x)
        return x, tuple(states) if states is not None else None


class MPOBertPreTrainedModel(nn.Module):
    """Base class: parameter counting, initialisation, save/load, conversion."""

    config: MPOBertConfig

    def __init__(self, config: MPOBertConfig) -> None:
        super().__init__()
        if not isinstance(config, MPOBertConfig):
            raise TypeError(f"config must be an MPOBertConfig, got {type(config).__name__}")
        self.config = config

    # ------------------------------------------------------------------ input checks
    @contextlib.contextmanager
    def trusted_inputs(self) -> Iterator[None]:
        """Inside, forward passes skip the checks that read input values back to the host.

        Outside, every forward pass checks that token ids are in the vocabulary, token types
        in ``type_vocab_size``, mask values 0 or 1 and labels in range, and drops an all-ones
        mask; each of those reads a tensor back to the host (a device synchronisation on a
        GPU, and a graph break for ``torch.compile``). Inside, only what the shapes and
        dtypes tell is checked, and the mask is used as given: for callers that validated
        the batch already with :meth:`validate_batch` (the trainer does, on the CPU, before
        moving each batch to the device), so the forward pass runs without host syncs.
        Blocks may nest; the previous setting is restored on leaving, also on error.
        """
        bert = cast(MPOBertModel, cast(Any, self).bert)
        before = bert.checks_values
        bert.checks_values = False
        try:
            yield
        finally:
            bert.checks_values = before

    def validate_batch(self, batch: dict[str, Any]) -> None:
        """Check a batch's values as the forward pass would (ids, types, mask, labels).

        ``batch`` holds ``input_ids`` and optionally ``attention_mask``, ``token_type_ids``
        and ``labels``, as passed to the forward. Cheap on CPU tensors: validate there, then
        move the batch and call the model inside :meth:`trusted_inputs`.

        Raises
        ------
        ValueError, TypeError
            With the forward pass's messages.
        """
        bert = cast(MPOBertModel, cast(Any, self).bert)
        bert.check_inputs(
            batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")
        )
        labels = batch.get("labels")
        if labels is not None:
            self.check_labels(labels, batch["input_ids"])

    def check_labels(self, labels: torch.Tensor, input_ids: torch.Tensor) -> None:
        """Raise for labels this model's loss cannot take (a model without a loss takes
        none)."""
        raise TypeError(f"{type(self).__name__} takes no labels")

    # ------------------------------------------------------------------ initialisation
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Initialise every parameter with ``config.init_scheme`` (see ``tnlm_models.init``)."""
        from .init import init_from_scratch

        init_from_scratch(self, generator=generator)

    # ------------------------------------------------------------------ parameters
    def unique_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Each distinct parameter once, under its first (canonical) name."""
        yield from self.named_parameters(remove_duplicate=True)

    def central_core_parameters(self) -> list[nn.Parameter]:
        """The central core of every MPO matrix, each distinct tensor once (for a separate
        learning-rate factor or ``freeze="central"``): the shared central tensors under
        ``sharing="central"``, every layer module's own central core under "none" and
        "all" (see ``MPOBertEncoder.central_core_parameters``)."""
        return self.encoder_module().central_core_parameters()

    def central_parameters(self) -> Iterator[nn.Parameter]:
        """Deprecated alias of :meth:`central_core_parameters` (the name suggested shared
        tensors only; it returns every MPO matrix's central core)."""
        warnings.warn(
            "central_parameters() is deprecated; use central_core_parameters() (the same "
            "tensors: every MPO matrix's central core, shared or not)",
            DeprecationWarning,
            stacklevel=2,
        )
        yield from self.central_core_parameters()

    def num_parameters(self, unique: bool = True) -> int:
        """Number of parameters.

        Parameters
        ----------
        unique : bool, default True
            True counts every distinct tensor once (a shared central tensor, the whole
            shared layer under "all" sharing and the tied decoder weight once). False counts
            shared encoder tensors once per layer that uses them (the size of the same model
            without cross-layer sharing; the tied decoder weight still counts once).
        """
        total = sum(p.numel() for _, p in self.unique_named_parameters())
        if unique:
            return total
        cfg = self.config
        extra_layers = cfg.num_hidden_layers - 1
        enc = self.encoder_module()
        for module, layers in enc.layer_groups():  # a module used by several layers
            total += (len(layers) - 1) * sum(p.numel() for p in module.parameters())
        shared = [enc.shared_central(name) for name in MATRIX_NAMES]
        total += extra_layers * sum(p.numel() for p in shared if p is not None)
        return total

    def encoder_module(self) -> MPOBertEncoder:
        """The ``MPOBertEncoder`` of this model."""
        bert: Any = self.bert  # type: ignore[attr-defined]
        return cast(MPOBertEncoder, bert.encoder)

    def parameter_breakdown(self) -> dict[str, int]:
        """Unique parameter counts per part.

        Returns
        -------
        dict
            ``{part: count}`` for the parts in ``PARAMETER_PARTS``: ``embeddings`` (word,
            position, token-type and their LayerNorm), ``central`` (shared central tensors,
            or the central cores of unshared MPOs), ``auxiliary`` (the other cores),
            ``adapters``, ``dense`` (weights of dense encoder matrices), ``norms_biases``
            (encoder biases and LayerNorms) and ``heads`` (pooler, MLM transform and bias,
            classifier). The values sum to ``num_parameters(unique=True)``.
        """
        out = dict.fromkeys(PARAMETER_PARTS, 0)
        for name, p in self.unique_named_parameters():
            out[_part_of(name)] += p.numel()
        return out

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (bit-exact; shared tensors once)."""
        from .serialization import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **config_overrides: Any) -> Any:
        """Load a model saved by ``save_pretrained`` (see ``tnlm_models.serialization``)."""
        from .serialization import from_pretrained

        return from_pretrained(cls, directory, **config_overrides)

    # ------------------------------------------------------------------ conversion
    @classmethod
    def from_bert(cls, source: Any, **kwargs: Any) -> Any:
        """Build from a pre-trained Hugging Face BERT (see ``tnlm_models.convert.from_bert``)."""
        from .convert import from_bert

        return from_bert(source, model_class=cls, **kwargs)

    def to_bert(self) -> Any:
        """The equivalent dense ``transformers`` model (see ``tnlm_models.convert.to_bert``)."""
        from .convert import to_bert

        return to_bert(self)


def _part_of(name: str) -> str:
    name = name.removeprefix("bert.")
    if name.startswith("embeddings."):
        return "embeddings"
    if not name.startswith("encoder."):
        return "heads"
    leaf = name.rsplit(".", 1)[-1]
    if "central" in name:
        return "central"
    if leaf.startswith("core"):
        return "auxiliary"
    if leaf.startswith("adapter"):
        return "adapters"
    if "norm" in name or leaf == "bias":
        return "norms_biases"
    return "dense"


def _check_attention_mask(mask: torch.Tensor) -> None:
    """A mask is bool, or integer or floating with every value 0 or 1 (1: attend)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool or not mask.numel():
        return
    if mask.dtype.is_complex:
        raise TypeError(f"attention_mask must be bool, integer or float, got dtype {mask.dtype}")
    bad = mask[(mask != 0) & (mask != 1)]
    if bad.numel():
        raise ValueError(
            f"attention_mask must hold only 0 (padding) and 1 (attend), or be bool; got the "
            f"value {bad.flatten()[0].item()!r} (dtype {mask.dtype})"
        )


def _check_labels(labels: torch.Tensor, num_classes: int, what: str, values: bool = True) -> None:
    """Class-id labels: an integer tensor with values in ``[0, num_classes)`` or -100
    (``values=False``: the dtype only)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(
            f"labels for {what} must be an integer tensor of class ids, got dtype "
            f"{labels.dtype} (a float would be truncated to a class); for real-valued "
            "targets use num_labels=1 (regression)"
        )
    if not values:
        return
    bad = labels[((labels < 0) | (labels >= num_classes)) & (labels != -100)]
    if bad.numel():
        raise ValueError(
            f"label {int(bad.flatten()[0])} outside [0, {num_classes}) for {what} "
            "(-100 marks an ignored position)"
        )


class MPOBertModel(MPOBertPreTrainedModel):
    """The encoder: embeddings, layers, optional pooler.

    Parameters
    ----------
    config : MPOBertConfig
    add_pooling_layer : bool, default True
        Add the ``tanh(dense(h[:, 0]))`` pooler used by the classification head.
    """

    def __init__(self, config: MPOBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = MPOBertEmbeddings(config)
        self.encoder = MPOBertEncoder(config)
        self.pooler = (
            nn.Linear(config.hidden_size, config.hidden_size) if add_pooling_layer else None
        )
        if type(self) is MPOBertModel:
            self.init_weights()

    #: whether forward passes check input values (off inside ``trusted_inputs()``)
    checks_values: bool = True

    @property
    def bert(self) -> MPOBertModel:
        return self

    def check_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        *,
        values: bool = True,
    ) -> None:
        """Raise ``ValueError``/``TypeError`` for inputs the model cannot take.

        ``values=False``: only what types, shapes and dtypes tell (no host sync).
        """
        cfg = self.config
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
        if input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must have shape (batch, seq), got shape {tuple(input_ids.shape)}"
            )
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
        seq = input_ids.shape[1]
        if seq > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {seq} exceeds max_position_embeddings="
                f"{cfg.max_position_embeddings} (the position table)"
            )
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and tuple(t.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"{name} has shape {tuple(t.shape)}, expected input_ids' shape "
                    f"{tuple(input_ids.shape)}"
                )
        if not values:
            return
        if input_ids.numel():
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= cfg.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(f"token id {bad} outside the vocabulary [0, {cfg.vocab_size})")
        if attention_mask is not None:
            _check_attention_mask(attention_mask)
        if token_type_ids is not None and token_type_ids.numel():
            lo, hi = int(token_type_ids.min()), int(token_type_ids.max())
            if lo < 0 or hi >= cfg.type_vocab_size:
                raise ValueError(
                    f"token type id {hi if hi >= cfg.type_vocab_size else lo} outside "
                    f"[0, type_vocab_size={cfg.type_vocab_size})"
                )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MPOBertModelOutput:
        """Encode a batch.

        Parameters
        ----------
        input_ids : LongTensor, shape (batch, seq)
        attention_mask : Tensor, shape (batch, seq), optional
            1 for tokens to attend to, 0 for padding.
        token_type_ids : LongTensor, shape (batch, seq), optional
            Segment ids (0 for the first sentence, 1 for the second); default zeros.
        output_hidden_states : bool, default False
        """
        checked = self.checks_values
        self.check_inputs(input_ids, attention_mask, token_type_ids, values=checked)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, hidden)
        mask = None
        # An all-ones mask changes nothing: drop it so SDPA can use its unmasked kernels
        # (a host read, so not under trusted_inputs(), whose callers drop it themselves).
        if attention_mask is not None and not (checked and bool(attention_mask.all())):
            keep = attention_mask[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
            mask = (1.0 - keep) * torch.finfo(x.dtype).min  # additive, (B, 1, 1, T)
        x, states = self.encoder(x, mask, output_hidden_states)
        pooled = (
            torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None
        )  # (B, hidden)
        return MPOBertModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=states)


class MPOBertLMHead(nn.Module):
    """Masked-LM head: dense + activation + LayerNorm, then the tied word-embedding decoder."""

    def __init__(self, config: MPOBertConfig) -> None:
        super().__init__()
        e = config.embedding_width
        self.transform = nn.Linear(config.hidden_size, e)
        self.act = _ACTS[config.hidden_act]
        self.norm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        """``x`` : (B, T, hidden) -> logits (B, T, vocab)."""
        x = self.norm(self.act(self.transform(x)))
        return F.linear(x, decoder_weight, self.bias)  # (B, T, vocab)


class MPOBertForMaskedLM(MPOBertPreTrainedModel):
    """MPO BERT with a masked-LM head tied to the word embeddings.

    Examples
    --------
    >>> import torch
    >>> from tnlm_models import MPOBertConfig, MPOBertForMaskedLM
    >>> cfg = MPOBertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                     num_attention_heads=2, intermediate_size=32, num_cores=2)
    >>> model = MPOBertForMaskedLM(cfg)
    >>> model(torch.randint(0, 50, (2, 7))).logits.shape
    torch.Size([2, 7, 50])
    """

    def __init__(self, config: MPOBertConfig) -> None:
        super().__init__(config)
        self.bert = MPOBertModel(config, add_pooling_layer=False)
        self.head = MPOBertLMHead(config)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MPOBertOutput:
        """Masked-LM logits, and the cross-entropy over labels != -100 if labels are given.

        Parameters
        ----------
        input_ids, attention_mask, token_type_ids : Tensor, shape (batch, seq)
        labels : LongTensor, shape (batch, seq), optional
            Target ids; -100 marks positions that do not count.
        output_hidden_states : bool, default False
        """
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.head(enc.last_hidden_state, self.bert.embeddings.word_embeddings.weight)
        loss = None
        if labels is not None:
            self.check_labels(labels, input_ids, values=self.bert.checks_values)
            loss = F.cross_entropy(
                logits.reshape(-1, self.config.vocab_size),  # (B*T, vocab)
                labels.reshape(-1),  # (B*T,)
                ignore_index=-100,
            )
        return MPOBertOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)

    def check_labels(
        self, labels: torch.Tensor, input_ids: torch.Tensor, *, values: bool = True
    ) -> None:
        """Target ids of input_ids' shape, in the vocabulary or -100 (``values=False``:
        the shape and dtype only, no host sync)."""
        if tuple(labels.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"labels have shape {tuple(labels.shape)}, expected input_ids' shape "
                f"{tuple(input_ids.shape)}"
            )
        _check_labels(labels, self.config.vocab_size, "masked-LM", values=values)


class MPOBertForSequenceClassification(MPOBertPreTrainedModel):
    """MPO BERT with a pooler and a linear classifier (single sentences or pairs).

    ``num_labels == 1`` is regression (MSE loss); otherwise cross-entropy.
    """

    def __init__(self, config: MPOBertConfig) -> None:
        super().__init__(config)
        self.bert = MPOBertModel(config, add_pooling_layer=True)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> MPOBertOutput:
        """Classification logits (batch, num_labels), and the loss if labels are given.

        Parameters
        ----------
        input_ids, attention_mask, token_type_ids : Tensor, shape (batch, seq)
            For sentence pairs, ``token_type_ids`` is 0 on the first sentence and 1 on
            the second.
        labels : Tensor, shape (batch,), optional
            Class ids (LongTensor), or float targets when ``num_labels == 1``.
        """
        enc = self.bert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(enc.pooler_output))  # (B, num_labels)
        loss = None
        if labels is not None:
            self.check_labels(labels, input_ids, values=self.bert.checks_values)
            if self.config.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).reshape(-1))
            else:
                loss = F.cross_entropy(logits, labels.reshape(-1).long())
        return MPOBertOutput(loss=loss, logits=logits, hidden_states=enc.hidden_states)

    def check_labels(
        self, labels: torch.Tensor, input_ids: torch.Tensor, *, values: bool = True
    ) -> None:
        """One label per example: class ids in range, or real targets when
        ``num_labels == 1`` (``values=False``: the shape and dtype only, no host sync)."""
        batch = input_ids.shape[0]
        if tuple(labels.shape) not in ((batch,), (batch, 1)):
            raise ValueError(
                f"labels have shape {tuple(labels.shape)}, expected (batch,) = ({batch},)"
            )
        if self.config.num_labels != 1:
            _check_labels(labels, self.config.num_labels, "a classifier", values=values)
