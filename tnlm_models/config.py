"""Configuration of the MPO BERT models.

``MPOBertConfig`` keeps Hugging Face BERT's hyper-parameter names and adds the MPO settings:
how many cores each matrix is split into, how each dimension is factorised, the bond cap,
which matrices are MPOs, the sharing mode and the adapter size. It validates itself at
construction, so a bad value fails early with a message naming it and the valid options.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MPOBertConfig",
    "MATRIX_NAMES",
    "SHARING_MODES",
    "INIT_SCHEMES",
    "FORWARD_MODES",
    "HIDDEN_ACTS",
    "auto_factorize",
]

#: The six matrices of a transformer layer, in the order they are applied.
MATRIX_NAMES: tuple[str, ...] = (
    "query",
    "key",
    "value",
    "attention_output",
    "intermediate",
    "output",
)
#: ``"central"``: MPOBERT (shared central tensors, per-layer auxiliary tensors and adapters);
#: ``"all"``: ALBERT-style (one layer applied ``num_hidden_layers`` times);
#: ``"none"``: independent layers (dense or MPO weights).
SHARING_MODES: tuple[str, ...] = ("central", "all", "none")
#: From-scratch initialisation schemes (see ``tnlm_models.init``).
INIT_SCHEMES: tuple[str, ...] = ("normal", "depth_scaled")
#: MPOLinear forward strategies.
FORWARD_MODES: tuple[str, ...] = ("auto", "dense", "cores")
HIDDEN_ACTS: tuple[str, ...] = ("gelu", "gelu_new", "relu", "tanh")


def auto_factorize(dim: int, n: int) -> tuple[int, ...]:
    """The balanced factorisation of ``dim`` into ``n`` factors that tnlm uses.

    A thin wrapper of ``tnlm.factorize`` (so models and ``tnlm.mpo_decompose(W, n)`` agree).

    Examples
    --------
    >>> auto_factorize(768, 5)
    (3, 4, 4, 4, 4)
    """
    import tnlm

    return tuple(int(f) for f in tnlm.factorize(dim, n))


@dataclass
class MPOBertConfig:
    """Hyper-parameters of an MPO BERT model.

    The first block of fields are Hugging Face ``BertConfig``'s; the second are the MPO
    settings. ``MPOBertConfig()`` is a small valid model (4 layers, hidden 256).

    Parameters
    ----------
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
    hidden_act, hidden_dropout_prob, attention_probs_dropout_prob, max_position_embeddings,
    type_vocab_size, initializer_range, layer_norm_eps, pad_token_id, classifier_dropout :
        As in ``transformers.BertConfig``.
    embedding_size : int, optional
        ALBERT's factorised embedding: tables of this width and a projection to
        ``hidden_size`` (None: BERT's embedding, tables of width ``hidden_size``).
    num_labels : int, default 2
        Outputs of the sequence-classification head; 1 means regression (MSE loss).
    num_cores : int, default 5
        Cores per MPO matrix.
    factorizations : dict, optional
        ``{matrix_name: (out_dims, in_dims)}`` for any of ``MATRIX_NAMES``; matrices not
        named use ``auto_factorize(dim, num_cores)`` for each side. ``out_dims`` factor the
        rows of the ``nn.Linear`` weight (``out_features``), ``in_dims`` its columns.
    bond_dim : int, optional
        Cap on every bond; ``None`` keeps the full (exact) rank.
    mpo_matrices : sequence of str
        Which of ``MATRIX_NAMES`` are MPOs; the rest are dense ``nn.Linear``.
    sharing : {"central", "all", "none"}
        Parameter sharing across layers (see ``SHARING_MODES``).
    adapter_size : int, default 8
        Rank of the per-layer low-rank adapter ``U V`` added to each MPO matrix
        (0 disables it). It is zero at initialisation, so it never changes a converted model.
    init_scheme : {"normal", "depth_scaled"}
        From-scratch initialisation (see ``tnlm_models.init``).
    forward_mode : {"auto", "dense", "cores"}
        How MPO layers compute their output (see ``MPOLinear``).
    """

    vocab_size: int = 30522
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    classifier_dropout: float | None = None
    embedding_size: int | None = None
    # MPO settings
    num_cores: int = 5
    factorizations: dict[str, Any] = field(default_factory=dict)
    bond_dim: int | None = None
    mpo_matrices: tuple[str, ...] = MATRIX_NAMES
    sharing: str = "central"
    adapter_size: int = 8
    init_scheme: str = "depth_scaled"
    forward_mode: str = "auto"

    def __post_init__(self) -> None:
        self.mpo_matrices = tuple(self.mpo_matrices)
        fz: dict[str, Any] = {}
        if not isinstance(self.factorizations, Mapping):
            raise TypeError(
                "factorizations must be a dict {matrix_name: (out_dims, in_dims)}, got "
                f"{type(self.factorizations).__name__}"
            )
        for k, v in self.factorizations.items():
            fz[k] = (tuple(int(d) for d in v[0]), tuple(int(d) for d in v[1]))
        self.factorizations = fz
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; raise ``ValueError``/``TypeError`` naming the bad one."""
        positive = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
            "num_cores",
        )
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.embedding_size is not None and (
            not isinstance(self.embedding_size, int) or self.embedding_size < 1
        ):
            raise ValueError(
                f"embedding_size must be None or a positive int, got {self.embedding_size!r}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} does not divide "
                f"hidden_size={self.hidden_size}"
            )
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} outside the vocabulary [0, {self.vocab_size})"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {v!r}")
        if self.classifier_dropout is not None and not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(
                f"classifier_dropout must be None or in [0, 1), got {self.classifier_dropout!r}"
            )
        if self.hidden_act not in HIDDEN_ACTS:
            raise ValueError(
                f"unknown hidden_act {self.hidden_act!r}; expected one of {', '.join(HIDDEN_ACTS)}"
            )
        if self.sharing not in SHARING_MODES:
            raise ValueError(
                f"unknown sharing mode {self.sharing!r}; expected one of {', '.join(SHARING_MODES)}"
            )
        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(
                f"unknown init_scheme {self.init_scheme!r}; expected one of "
                f"{', '.join(INIT_SCHEMES)}"
            )
        if self.forward_mode not in FORWARD_MODES:
            raise ValueError(
                f"unknown forward_mode {self.forward_mode!r}; expected one of "
                f"{', '.join(FORWARD_MODES)}"
            )
        if self.bond_dim is not None and (not isinstance(self.bond_dim, int) or self.bond_dim < 1):
            raise ValueError(f"bond_dim must be None or an int >= 1, got {self.bond_dim!r}")
        if not isinstance(self.adapter_size, int) or self.adapter_size < 0:
            raise ValueError(f"adapter_size must be an int >= 0, got {self.adapter_size!r}")
        if self.initializer_range <= 0:
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range!r}")
        for m in self.mpo_matrices:
            if m not in MATRIX_NAMES:
                raise ValueError(
                    f"unknown matrix {m!r} in mpo_matrices; expected names from "
                    f"{', '.join(MATRIX_NAMES)}"
                )
        if self.sharing == "central" and not self.mpo_matrices:
            raise ValueError(
                "sharing='central' needs at least one MPO matrix (mpo_matrices is empty); "
                "use sharing='none' or 'all' for a dense model"
            )
        for m, fac in self.factorizations.items():
            if m not in MATRIX_NAMES:
                raise ValueError(
                    f"unknown matrix {m!r} in factorizations; expected names from "
                    f"{', '.join(MATRIX_NAMES)}"
                )
            out_f, in_f = self.matrix_shape(m)
            out_dims, in_dims = fac
            for side, dims, full in (("out", out_dims, out_f), ("in", in_dims, in_f)):
                if len(dims) != self.num_cores:
                    raise ValueError(
                        f"factorizations[{m!r}] {side}_dims {dims} has {len(dims)} factors, "
                        f"expected num_cores={self.num_cores}"
                    )
                if math.prod(dims) != full or min(dims) < 1:
                    raise ValueError(
                        f"factorizations[{m!r}] {side}_dims {dims} multiply to "
                        f"{math.prod(dims)}, expected {side}_features={full}"
                    )

    # ------------------------------------------------------------------ helpers
    @property
    def embedding_width(self) -> int:
        """Width of the embedding tables (``embedding_size`` or ``hidden_size``)."""
        return self.embedding_size if self.embedding_size is not None else self.hidden_size

    @property
    def head_dim(self) -> int:
        """``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    def matrix_shape(self, name: str) -> tuple[int, int]:
        """``(out_features, in_features)`` of one of ``MATRIX_NAMES``."""
        h, f = self.hidden_size, self.intermediate_size
        shapes = {
            "query": (h, h),
            "key": (h, h),
            "value": (h, h),
            "attention_output": (h, h),
            "intermediate": (f, h),
            "output": (h, f),
        }
        if name not in shapes:
            raise ValueError(f"unknown matrix {name!r}; expected one of {', '.join(MATRIX_NAMES)}")
        return shapes[name]

    def factorization(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(out_dims, in_dims)`` used for matrix ``name`` (explicit or automatic)."""
        if name in self.factorizations:
            return self.factorizations[name]
        out_f, in_f = self.matrix_shape(name)
        return auto_factorize(out_f, self.num_cores), auto_factorize(in_f, self.num_cores)

    def is_mpo(self, name: str) -> bool:
        """Whether matrix ``name`` is an MPO in this configuration."""
        return name in self.mpo_matrices

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field (``from_dict`` inverts it)."""
        d = dataclasses.asdict(self)
        d["mpo_matrices"] = list(self.mpo_matrices)
        d["factorizations"] = {k: [list(v[0]), list(v[1])] for k, v in self.factorizations.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MPOBertConfig:
        """Build a config from ``to_dict()`` output.

        Raises
        ------
        ValueError
            If ``d`` has keys that are not fields (the valid ones are listed).
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(
                f"unknown MPOBertConfig keys {unknown}; valid keys are {', '.join(names)}"
            )
        kw = dict(d)
        if "mpo_matrices" in kw:
            kw["mpo_matrices"] = tuple(kw["mpo_matrices"])
        if "factorizations" in kw:
            kw["factorizations"] = {
                k: (tuple(v[0]), tuple(v[1])) for k, v in dict(kw["factorizations"]).items()
            }
        return cls(**kw)

    def replace(self, **changes: Any) -> MPOBertConfig:
        """A copy with some fields changed (validated)."""
        d = self.to_dict()
        d.update(changes)
        return MPOBertConfig.from_dict(d)
