"""Configuration of the MPO BERT models.

``MPOBertConfig`` keeps Hugging Face BERT's hyper-parameter names and adds the MPO settings:
how many cores each matrix is split into, how each dimension is factorised, the bond cap,
which matrices are MPOs, the sharing mode and the adapter size. It validates itself at
construction, so a bad value fails early with a message naming it and the valid options.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._fields import POSITIVE, PROBABILITY, Bounds, check_fields

__all__ = [
    "MPOBertConfig",
    "MATRIX_NAMES",
    "SHARING_MODES",
    "INIT_SCHEMES",
    "FORWARD_MODES",
    "HIDDEN_ACTS",
    "FACTORIZATION_RULES",
    "PAPER_FACTORIZATIONS",
    "auto_factorize",
    "check_factorization",
    "rule_factorize",
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
INIT_SCHEMES: tuple[str, ...] = ("normal", "depth_scaled", "deepnorm")
#: MPOLinear forward strategies.
FORWARD_MODES: tuple[str, ...] = ("auto", "dense", "cores")
HIDDEN_ACTS: tuple[str, ...] = ("gelu", "gelu_new", "relu", "tanh")

#: Numeric ranges of ``MPOBertConfig`` fields (types come from the annotations).
_BOUNDS: dict[str, Bounds] = {
    **dict.fromkeys(
        (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
            "num_labels",
            "num_cores",
            "embedding_size",
            "bond_dim",
        ),
        POSITIVE,
    ),
    **dict.fromkeys(
        ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"),
        PROBABILITY,
    ),
    "pad_token_id": Bounds(0),
    "adapter_size": Bounds(0),
    "initializer_range": Bounds(0, lo_open=True),
    "layer_norm_eps": Bounds(0, lo_open=True),
}


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


#: The official MPOBERT code's factorisations (5 cores), largest factors mid-chain; used
#: by ``factorization_rule="paper"`` for these dimensions.
PAPER_FACTORIZATIONS: dict[int, tuple[int, ...]] = {
    768: (4, 4, 4, 4, 3),
    1024: (4, 4, 4, 4, 4),
    2048: (4, 4, 8, 4, 4),
    2304: (4, 4, 8, 6, 3),
    3072: (4, 4, 8, 6, 4),
    4096: (4, 4, 8, 8, 4),
}
#: How dimensions without explicit ``factorizations`` are split (see ``rule_factorize``).
FACTORIZATION_RULES: tuple[str, ...] = ("paper", "balanced")


def rule_factorize(dim: int, n: int, rule: str = "paper") -> tuple[int, ...]:
    """The factorisation of ``dim`` into ``n`` factors under ``rule``.

    ``"paper"``: the official MPOBERT table (:data:`PAPER_FACTORIZATIONS`) when ``n == 5``
    and ``dim`` is in it, else :func:`auto_factorize`. ``"balanced"``: always
    :func:`auto_factorize` (tnlm's most balanced split; the rule of checkpoints written
    before the table was the default).

    Examples
    --------
    >>> rule_factorize(768, 5), rule_factorize(768, 5, "balanced"), rule_factorize(768, 3)
    ((4, 4, 4, 4, 3), (3, 4, 4, 4, 4), (8, 12, 8))
    """
    if rule not in FACTORIZATION_RULES:
        raise ValueError(
            f"unknown factorization_rule {rule!r}; expected one of {', '.join(FACTORIZATION_RULES)}"
        )
    if rule == "paper" and n == 5 and dim in PAPER_FACTORIZATIONS:
        return PAPER_FACTORIZATIONS[dim]
    return auto_factorize(dim, n)


def _int_factors(dims: Any, what: str) -> tuple[int, ...]:
    """``dims`` as a tuple of ints >= 1 (numpy ints accepted; floats and bools refused)."""
    if isinstance(dims, np.ndarray) and dims.ndim == 1:
        dims = dims.tolist()
    if (
        isinstance(dims, str | bytes)
        or not isinstance(dims, Sequence)
        or not dims
        or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims)
    ):
        raise TypeError(f"{what} must be a non-empty sequence of ints, got {dims!r}")
    out = tuple(int(d) for d in dims)
    if min(out) < 1:
        raise ValueError(f"{what} must hold ints >= 1, got {out}")
    return out


def _trivial_cores(out_dims: Sequence[int], in_dims: Sequence[int]) -> list[int]:
    """Indices of cores with ``out_k == in_k == 1`` in an MPO of two or more cores."""
    if len(out_dims) < 2:
        return []
    return [k for k, (o, i) in enumerate(zip(out_dims, in_dims)) if o == 1 and i == 1]


def check_factorization(
    out_dims: Any, in_dims: Any, what: str = "factorization"
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check the factors of an MPO matrix; return them as two tuples of int.

    Each side is a non-empty sequence of ints >= 1, both sides have the same length ``n``,
    and when ``n >= 2`` every core has a leg larger than 1: a core with
    ``out_k == in_k == 1`` would only multiply two bonds (parameters without structure).
    That rule also bounds ``n``: a matrix with ``p`` prime factors on its larger side has at
    most ``p`` useful cores. Products are checked by the caller, which knows the shape.

    Raises
    ------
    TypeError
        If a side is not a sequence of ints (``8.9``, ``True`` and strings are refused).
    ValueError
        If a factor is < 1, the lengths differ, or a core is trivial.

    Examples
    --------
    >>> check_factorization((4, 2), (2, 4))
    ((4, 2), (2, 4))
    >>> check_factorization((4, 1, 2), (2, 1, 4))
    Traceback (most recent call last):
    ...
    ValueError: factorization (4, 1, 2) x (2, 1, 4): core 1 has out_1 = in_1 = 1; ...
    """
    out = _int_factors(out_dims, f"{what} out_dims")
    inn = _int_factors(in_dims, f"{what} in_dims")
    if len(out) != len(inn):
        raise ValueError(
            f"{what} out_dims {out} and in_dims {inn} must have the same number of factors"
        )
    bad = _trivial_cores(out, inn)
    if bad:
        k = bad[0]
        raise ValueError(
            f"{what} {out} x {inn}: core {k} has out_{k} = in_{k} = 1; every core needs a leg "
            "larger than 1 (use fewer cores)"
        )
    return out, inn


def _normalise_factorizations(value: dict[str, Any], num_cores: int) -> dict[str, Any]:
    """``{matrix: (out_dims, in_dims)}`` with tuples of ints, each of ``num_cores`` factors."""
    out: dict[str, Any] = {}
    for m, pair in value.items():
        if m not in MATRIX_NAMES:
            raise ValueError(
                f"unknown matrix {m!r} in factorizations; expected names from "
                f"{', '.join(MATRIX_NAMES)}"
            )
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(
                f"factorizations[{m!r}] must be a pair (out_dims, in_dims), got {pair!r}"
            )
        sides = []
        for side, dims in zip(("out", "in"), pair):
            dims = _int_factors(dims, f"factorizations[{m!r}] {side}_dims")
            if len(dims) != num_cores:
                raise ValueError(
                    f"factorizations[{m!r}] {side}_dims {dims} has {len(dims)} factors, "
                    f"expected num_cores={num_cores}"
                )
            sides.append(dims)
        out[m] = (sides[0], sides[1])
    return out


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
        named use ``rule_factorize(dim, num_cores, factorization_rule)`` for each side.
        ``out_dims`` factor the rows of the ``nn.Linear`` weight (``out_features``),
        ``in_dims`` its columns.
    factorization_rule : {"paper", "balanced"}, default "paper"
        The official code's table for 768, 1024, 2048, 2304, 3072 and 4096 at 5 cores
        (balanced elsewhere), or tnlm's balanced split everywhere. At 48 layers, hidden 768
        and adapter rank 8 the table gives 68,246,778 unique parameters against 71,687,418
        (the paper reports 68.2M). Configs read from files written before this field existed
        get ``"balanced"``, the rule they were written with.
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
    factorization_rule: str = "paper"
    bond_dim: int | None = None
    mpo_matrices: tuple[str, ...] = MATRIX_NAMES
    sharing: str = "central"
    adapter_size: int = 8
    init_scheme: str = "depth_scaled"
    forward_mode: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every field; raise ``ValueError``/``TypeError`` naming the bad one.

        Types and numeric ranges are checked from the field annotations and ``_BOUNDS``
        (``tnlm_models._fields``); the rest are rules between fields.
        """
        check_fields(self, _BOUNDS, "MPOBertConfig field")
        self.factorizations = _normalise_factorizations(self.factorizations, self.num_cores)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} does not divide "
                f"hidden_size={self.hidden_size}"
            )
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"pad_token_id={self.pad_token_id} outside the vocabulary [0, {self.vocab_size})"
            )
        for name, value, options in (
            ("hidden_act", self.hidden_act, HIDDEN_ACTS),
            ("sharing mode", self.sharing, SHARING_MODES),
            ("init_scheme", self.init_scheme, INIT_SCHEMES),
            ("forward_mode", self.forward_mode, FORWARD_MODES),
            ("factorization_rule", self.factorization_rule, FACTORIZATION_RULES),
        ):
            if value not in options:
                raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(options)}")
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
        for m in MATRIX_NAMES:
            if m in self.factorizations:
                self._check_explicit_factorization(m)
            elif m in self.mpo_matrices:
                self._check_auto_factorization(m)

    def _check_explicit_factorization(self, m: str) -> None:
        out_dims, in_dims = self.factorizations[m]
        check_factorization(out_dims, in_dims, f"factorizations[{m!r}]")
        for side, dims, full in zip(("out", "in"), (out_dims, in_dims), self.matrix_shape(m)):
            if math.prod(dims) != full:
                raise ValueError(
                    f"factorizations[{m!r}] {side}_dims {dims} multiply to "
                    f"{math.prod(dims)}, expected {side}_features={full}"
                )

    def _check_auto_factorization(self, m: str) -> None:
        """``num_cores`` must give every core of matrix ``m`` a leg larger than one."""
        out_f, in_f = self.matrix_shape(m)
        n, rule = self.num_cores, self.factorization_rule
        out_dims, in_dims = rule_factorize(out_f, n, rule), rule_factorize(in_f, n, rule)
        if not _trivial_cores(out_dims, in_dims):
            return
        fits = [
            k
            for k in range(1, n)
            if not _trivial_cores(rule_factorize(out_f, k, rule), rule_factorize(in_f, k, rule))
        ]
        limit = max(fits)
        raise ValueError(
            f"num_cores={n} is too many for the {out_f} x {in_f} matrix {m!r}: its factors "
            f"{out_dims} x {in_dims} leave cores with no leg larger than 1 (they would add "
            f"parameters and no structure); use num_cores <= {limit} or give factorizations"
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
        n, rule = self.num_cores, self.factorization_rule
        return rule_factorize(out_f, n, rule), rule_factorize(in_f, n, rule)

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
        return cls(**d)

    def replace(self, **changes: Any) -> MPOBertConfig:
        """A copy with some fields changed (validated)."""
        d = self.to_dict()
        d.update(changes)
        return MPOBertConfig.from_dict(d)
