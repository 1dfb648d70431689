"""The arms of the MPOBERT study and its presets, matched at equal parameters.

A :class:`Preset` names the model width, the MPOBERT depths, the training budgets and the
parameter budget. :func:`build_arms` turns it into :class:`Arm` objects, each at the same
number of non-embedding parameters (within ``preset.tolerance``)::

    dense-L<d>         dense BERT (sharing="none"), depth and FFN width searched
    albert-L<deep>     whole-layer sharing (sharing="all") at the deepest depth, width searched
    mpo-L<d>           MPOBERT (sharing="central") at each of ``mpo_depths``, with adapters
    mpo-L<deep>-noad   MPOBERT at the deepest depth without adapters

The budget is the non-embedding parameter count of the MPOBERT arm at the middle depth with
the preset's shape (or ``preset.budget``). Parameters are counted on models built on the
``meta`` device (no memory, no initialisation): ``num_parameters(unique=True)`` and
``parameter_breakdown()``; *non-embedding* is everything but the ``embeddings`` part.

Each arm carries its pre-training run (one per study) and its fine-tuning runs (per task,
mode and seed): ``"full"`` fine-tuning, and for arms with central tensors ``"central"``
(``freeze="central"``, MPOP's lightweight fine-tuning).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FAMILIES",
    "PRESETS",
    "Arm",
    "Preset",
    "build_arms",
    "count_parameters",
    "finetune_modes",
    "get_preset",
]

#: The model families of the study: dense BERT, ALBERT-style sharing, MPOBERT.
FAMILIES = ("dense", "albert", "mpo")


@dataclass(frozen=True)
class Preset:
    """Everything a study run needs besides its data.

    Parameters
    ----------
    name : str
    hidden_size, num_attention_heads, intermediate_size, num_cores, adapter_size : int
        The MPOBERT arms' shape (dense and ALBERT arms keep the head count and search
        their width around ``hidden_size``).
    mpo_depths : tuple of int
        The MPOBERT depths, shallow to deep (three in the cpu and gpu presets).
    max_position_embeddings, vocab_size : int
        Shared by every arm (the vocabulary is trained on the pre-training text).
    budget : int, optional
        Non-embedding parameters of every arm; default: the middle MPOBERT arm's.
    tolerance : float
        Allowed relative distance from the budget.
    max_dense_depth : int
        Deepest dense BERT tried.
    pretrain, finetune : dict
        ``TrainConfig`` fields of the pre-training and fine-tuning runs.
    learning_rates : dict
        Per-family pre-training learning rate (``{"mpo": 1e-3}``), over ``pretrain``.
    seeds : int
        Fine-tuning seeds per task and mode.
    lr_grid : tuple of float
        Pre-training learning rates tried for every arm in short runs of ``lr_grid_steps``
        steps (a whole schedule each); the arm's pre-training uses the one with the lowest
        validation loss (over ``learning_rates`` and ``pretrain``). Empty: no grid.
    lr_grid_steps : int
    stability_depths, stability_schemes, stability_learning_rates, stability
        The stable-initialisation comparison (``tnlm_models.study.experiments``): depths,
        from-scratch ``init_scheme`` values, learning rates, and ``TrainConfig`` fields
        over ``pretrain`` (``max_steps`` at least). No depths: not run.
    central_lr_factors : tuple of float
        The central-tensor learning-rate sweep (runs of ``ablation_steps`` steps).
    ablation_steps : int
        Steps of each central-lr and init run.
    init_source_depth, init_source_steps : int
        The dense BERT the init comparison converts (0 layers: not run), and its
        pre-training steps.
    init_methods : tuple of str
        ``"clone"``, ``"fit"`` (``from_bert``) and ``"scratch"`` (the control).
    central_finetune_arms : tuple of str, optional
        The arms that are also fine-tuned with ``freeze="central"``; default every arm
        with central tensors.
    """

    name: str
    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    num_cores: int
    adapter_size: int
    mpo_depths: tuple[int, ...]
    max_position_embeddings: int = 128
    vocab_size: int = 4000
    budget: int | None = None
    tolerance: float = 0.05
    max_dense_depth: int = 48
    pretrain: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    learning_rates: dict[str, float] = field(default_factory=dict)
    seeds: int = 1
    lr_grid: tuple[float, ...] = ()
    lr_grid_steps: int = 0
    stability_depths: tuple[int, ...] = ()
    stability_schemes: tuple[str, ...] = ("depth_scaled", "deepnorm")
    stability_learning_rates: tuple[float, ...] = (1e-3,)
    stability: dict[str, Any] = field(default_factory=dict)
    central_lr_factors: tuple[float, ...] = ()
    ablation_steps: int = 0
    init_source_depth: int = 0
    init_source_steps: int = 0
    init_methods: tuple[str, ...] = ("clone", "fit", "scratch")
    central_finetune_arms: tuple[str, ...] | None = None

    def base_model(self) -> dict[str, Any]:
        """``MPOBertConfig`` fields common to every arm."""
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "num_cores": self.num_cores,
            "adapter_size": self.adapter_size,
        }


_COMMON_PRETRAIN = {"log_every": 5, "eval_every": 0, "keep_last": 1, "progress": False}
_COMMON_FINETUNE = {"log_every": 5, "eval_every": 0, "keep_last": 1, "progress": False}

PRESETS: dict[str, Preset] = {
    # plumbing only: tiny models, a few steps, one task and seed (well under 90 s on 2 cores)
    "smoke": Preset(
        name="smoke",
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        num_cores=2,
        adapter_size=2,
        mpo_depths=(2, 3, 4),
        max_position_embeddings=32,
        vocab_size=300,
        max_dense_depth=12,
        pretrain={
            **_COMMON_PRETRAIN,
            "max_steps": 6,
            "batch_size": 8,
            "max_seq_length": 32,
            "save_every": 3,
            "max_valid_examples": 16,
            "num_threads": 1,
        },
        finetune={
            **_COMMON_FINETUNE,
            "max_steps": 4,
            "batch_size": 8,
            "max_seq_length": 32,
            "max_train_examples": 64,
            "max_valid_examples": 32,
            "num_threads": 1,
        },
        seeds=1,
        lr_grid=(1e-3, 2e-3),
        lr_grid_steps=2,
        stability_depths=(3, 6),
        stability={"max_steps": 2, "log_every": 1},
        central_lr_factors=(1.0, 2.0),
        ablation_steps=2,
        init_source_depth=2,
        init_source_steps=3,
    ),
    # a real study on two CPU cores, sized for about two hours from step times measured on
    # the quiet 2-core machine (batch 32 x 64 tokens, 1 thread: dense-L2 0.29 s, mpo-L6
    # 0.55 s, mpo-L12 0.93 s, mpo-L24 1.30 s, mpo-L24-noad 1.71 s, albert-L24 2.16 s).
    # One thread per process: two processes on disjoint --arms use both cores, and a
    # one-thread run slows down in proportion when the machine is shared (two OpenMP
    # threads on a shared core stall at every barrier: measured 10x slower)
    "cpu": Preset(
        name="cpu",
        hidden_size=128,
        num_attention_heads=4,
        intermediate_size=512,
        num_cores=3,
        adapter_size=4,
        mpo_depths=(6, 12, 24),
        max_position_embeddings=128,
        vocab_size=4000,
        pretrain={
            **_COMMON_PRETRAIN,
            "max_steps": 400,
            "batch_size": 32,
            "max_seq_length": 64,
            "eval_every": 50,
            "save_every": 50,
            "learning_rate": 1e-3,
            "max_valid_examples": 512,
            "num_threads": 1,
        },
        finetune={
            **_COMMON_FINETUNE,
            "max_steps": 30,
            "batch_size": 32,
            "max_seq_length": 64,
            "max_train_examples": 2000,
            "max_valid_examples": 400,
            "learning_rate": 5e-4,
            "save_every": 30,
            "num_threads": 1,
        },
        seeds=3,
        lr_grid=(5e-4, 1e-3, 2e-3),
        lr_grid_steps=100,
        stability_depths=(24, 48, 96),
        stability_learning_rates=(1e-3, 4e-3),
        stability={"max_steps": 40, "batch_size": 16, "log_every": 2},
        central_lr_factors=(0.5, 1.0, 2.0, 4.0),
        ablation_steps=150,
        init_source_depth=4,
        init_source_steps=200,
        central_finetune_arms=("mpo-L12", "mpo-L24"),
    ),
    # BERT-base width for a GPU (untested on the project's machines)
    "gpu": Preset(
        name="gpu",
        hidden_size=768,
        num_attention_heads=12,
        intermediate_size=3072,
        num_cores=5,
        adapter_size=8,
        mpo_depths=(12, 24, 48),
        max_position_embeddings=512,
        vocab_size=30522,
        pretrain={
            **_COMMON_PRETRAIN,
            "max_steps": 20000,
            "batch_size": 128,
            "max_seq_length": 128,
            "eval_every": 1000,
            "save_every": 1000,
            "learning_rate": 1e-4,
            "log_every": 50,
        },
        finetune={
            **_COMMON_FINETUNE,
            "num_epochs": 3,
            "batch_size": 32,
            "max_seq_length": 128,
            "learning_rate": 2e-5,
            "save_every": 1000,
        },
        seeds=3,
    ),
}


def get_preset(preset: str | Preset) -> Preset:
    """The preset named ``preset`` (or ``preset`` itself).

    Raises
    ------
    ValueError
        If the name is not one of :data:`PRESETS` (they are listed).
    TypeError
        If ``preset`` is neither a string nor a :class:`Preset`.
    """
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str):
        raise TypeError(f"preset must be a name or a Preset, got {type(preset).__name__}")
    if preset not in PRESETS:
        raise ValueError(f"unknown study preset {preset!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[preset]


@dataclass(frozen=True)
class Arm:
    """One model of the study, with its parameter counts.

    Attributes
    ----------
    name : str
        ``dense-L2``, ``albert-L24``, ``mpo-L12``, ``mpo-L24-noad``, ...
    family : {"dense", "albert", "mpo"}
    model : dict
        ``MPOBertConfig`` fields (the trainer sets the vocabulary to the tokenizer's).
    unique_parameters, non_embedding_parameters : int
        Counted on the masked-LM model built on the meta device.
    budget : int
        The non-embedding budget the arm was matched to.
    """

    name: str
    family: str
    model: dict[str, Any]
    unique_parameters: int
    non_embedding_parameters: int
    budget: int

    @property
    def depth(self) -> int:
        """Number of transformer layers."""
        return int(self.model["num_hidden_layers"])

    @property
    def has_central(self) -> bool:
        """Whether the arm has central tensors (so ``freeze="central"`` applies)."""
        return bool(self.model.get("mpo_matrices", True)) and self.family == "mpo"

    def pretrain_config(self, preset: Preset, learning_rate: float | None = None) -> dict[str, Any]:
        """``TrainConfig`` fields of this arm's pre-training run (at ``learning_rate`` when
        given, e.g. the one the grid chose)."""
        cfg = {**preset.pretrain, "task": "pretrain", "model": dict(self.model)}
        cfg["vocab_size"] = preset.vocab_size
        if self.family in preset.learning_rates:
            cfg["learning_rate"] = preset.learning_rates[self.family]
        if learning_rate is not None:
            cfg["learning_rate"] = float(learning_rate)
        return cfg

    def lr_grid_config(self, preset: Preset, learning_rate: float) -> dict[str, Any]:
        """``TrainConfig`` fields of one learning-rate grid run: the pre-training run cut to
        ``preset.lr_grid_steps`` steps (a whole warm-up and decay), evaluated at its end."""
        steps = int(preset.lr_grid_steps)
        cfg = self.pretrain_config(preset, learning_rate)
        cfg.update(max_steps=steps, eval_every=steps, save_every=steps)
        return cfg

    def finetune_config(self, preset: Preset, mode: str, seed: int) -> dict[str, Any]:
        """``TrainConfig`` fields of one fine-tuning run (``mode``: "full" or "central")."""
        if mode not in finetune_modes(self, preset):
            raise ValueError(
                f"fine-tuning mode {mode!r} does not apply to arm {self.name!r}; expected one "
                f"of {', '.join(finetune_modes(self, preset))}"
            )
        return {
            **preset.finetune,
            "task": "finetune",
            "seed": seed,
            "freeze": "none" if mode == "full" else "central",
        }


def finetune_modes(arm: Arm, preset: Preset | None = None) -> tuple[str, ...]:
    """``("full", "central")`` for arms with central tensors (among the preset's
    ``central_finetune_arms`` when it names them), else ``("full",)``."""
    names = None if preset is None else preset.central_finetune_arms
    chosen = names is None or arm.name in names
    return ("full", "central") if arm.has_central and chosen else ("full",)


# ---------------------------------------------------------------------------- counting
def count_parameters(model: dict[str, Any]) -> tuple[int, int]:
    """``(unique, non_embedding)`` parameters of the masked-LM model of ``model`` fields.

    The model is built on the ``meta`` device: no memory is allocated and nothing is
    initialised, so BERT-base sizes count in about a second.

    Examples
    --------
    >>> count_parameters({"hidden_size": 32, "num_attention_heads": 2,
    ...     "intermediate_size": 64, "num_hidden_layers": 1, "vocab_size": 100,
    ...     "mpo_matrices": [], "sharing": "none", "max_position_embeddings": 16})
    (17060, 13092)
    """
    import torch

    from ..config import MPOBertConfig
    from ..modeling import MPOBertForMaskedLM

    with torch.device("meta"):
        m = MPOBertForMaskedLM(MPOBertConfig.from_dict(model))
    unique = int(m.num_parameters(unique=True))
    return unique, unique - int(m.parameter_breakdown()["embeddings"])


def _log_gap(a: float, b: float) -> float:
    return abs(math.log(a / b))


@dataclass
class _Candidate:
    model: dict[str, Any]
    estimate: float
    cost: float


def _pick(
    name: str,
    groups: Iterator[tuple[float, Callable[[], Iterator[_Candidate]]]],
    budget: int,
    tol: float,
) -> dict[str, Any]:
    """The cheapest candidate (by ``cost``) whose estimate is within ``tol`` of ``budget``.

    ``groups`` yields ``(floor, make)`` in increasing ``floor``, the lowest cost any
    candidate of ``make()`` can have; groups that cannot beat the best found are skipped
    (so most shapes are never built).
    """
    best: _Candidate | None = None
    closest: _Candidate | None = None
    for floor, make in groups:
        if best is not None and floor > best.cost:
            break
        for c in make():
            gap = abs(c.estimate - budget) / budget
            if closest is None or gap < abs(closest.estimate - budget) / budget:
                closest = c
            if gap <= tol and (best is None or c.cost < best.cost):
                best = c
    if best is None:
        near = "no candidate" if closest is None else f"the closest has {closest.estimate:,.0f}"
        raise ValueError(
            f"arm {name!r}: no shape within {tol:.0%} of the budget of {budget:,} non-embedding "
            f"parameters ({near}); change the preset's budget or widths"
        )
    return best.model


def _dense_like(preset: Preset, family: str, depth: int | None, budget: int) -> dict[str, Any]:
    """Width (and, when ``depth`` is None, depth) of a dense or ALBERT-style arm.

    Searches hidden sizes (multiples of ``8 * heads`` from half to four times the preset's),
    FFN widths (multiples of 32 up to 8x hidden) and depths; prefers the preset's width,
    then its FFN ratio, then the shallowest depth. Counts are linear in the FFN width and
    the depth, so two or four meta-device builds per hidden size suffice.
    """
    heads = preset.num_attention_heads
    h0, ratio0 = preset.hidden_size, preset.intermediate_size / preset.hidden_size
    base = {**preset.base_model(), "mpo_matrices": [], "adapter_size": 0}
    base["sharing"] = "none" if family == "dense" else "all"
    step = 8 * heads
    hiddens = range(max(step, (h0 // 2) // step * step), 4 * h0 + 1, step)

    def group(h: int) -> Iterator[_Candidate]:
        def at(f: int, layers: int) -> int:
            d = {**base, "hidden_size": h, "intermediate_size": f}
            return count_parameters({**d, "num_hidden_layers": layers})[1]

        f_lo, f_hi = 32, 8 * h
        depths = range(1, preset.max_dense_depth + 1) if depth is None else (depth,)
        # count(f, L) = a + b f + L (c + d f) for dense; no L term for "all"
        c11, c21 = at(f_lo, 1), at(f_hi, 1)
        c12, c22 = (at(f_lo, 2), at(f_hi, 2)) if family == "dense" else (c11, c21)
        for layers in depths:
            lo = c11 + (layers - 1) * (c12 - c11)
            hi = c21 + (layers - 1) * (c22 - c21)
            for f in range(f_lo, f_hi + 1, 32):
                est = lo + (hi - lo) * (f - f_lo) / (f_hi - f_lo)
                cost = 10 * _log_gap(h, h0) + _log_gap(f / h, ratio0) + 1e-3 * layers
                model = {**base, "hidden_size": h, "intermediate_size": f}
                yield _Candidate({**model, "num_hidden_layers": layers}, est, cost)

    ordered = sorted(hiddens, key=lambda h: _log_gap(h, h0))
    groups = ((10 * _log_gap(h, h0), lambda h=h: group(h)) for h in ordered)
    return _pick(family, groups, budget, preset.tolerance)


def _mpo(preset: Preset, depth: int, adapters: bool, budget: int) -> dict[str, Any]:
    """FFN width and adapter rank of an MPOBERT arm at ``depth`` (hidden size fixed).

    Prefers the preset's FFN width and adapter rank; counts are linear in the adapter
    rank and the depth (the central tensors are shared), so three builds per FFN width.
    """
    base = {**preset.base_model(), "sharing": "central"}
    f0, a0 = preset.intermediate_size, preset.adapter_size
    h = preset.hidden_size
    ranks = range(1, 4 * max(a0, 1) + 1) if adapters else (0,)

    def group(f: int) -> Iterator[_Candidate]:
        d = {**base, "intermediate_size": f}
        try:
            c1 = count_parameters({**d, "num_hidden_layers": 1, "adapter_size": 0})[1]
        except ValueError:  # a width whose factorization leaves trivial cores
            return
        c2 = count_parameters({**d, "num_hidden_layers": 2, "adapter_size": 0})[1]
        per_rank = count_parameters({**d, "num_hidden_layers": 1, "adapter_size": 1})[1] - c1
        for a in ranks:
            est = c1 + (depth - 1) * (c2 - c1) + depth * a * per_rank
            cost = _log_gap(f, f0) + (_log_gap(a, a0) if a else 0.0)
            yield _Candidate({**d, "num_hidden_layers": depth, "adapter_size": a}, est, cost)

    ordered = sorted(range(32, 8 * h + 1, 32), key=lambda f: _log_gap(f, f0))
    groups = ((_log_gap(f, f0), lambda f=f: group(f)) for f in ordered)
    return _pick(f"mpo-L{depth}", groups, budget, preset.tolerance)


def build_arms(preset: str | Preset) -> list[Arm]:
    """The arms of ``preset``, matched to its non-embedding budget.

    Returns
    -------
    list of Arm
        Dense, ALBERT-style, MPOBERT at each depth with adapters, and MPOBERT at the
        deepest depth without adapters; each within ``preset.tolerance`` of the budget
        (checked on the final model).

    Raises
    ------
    ValueError
        If an arm has no shape within the tolerance (the closest count is named).
    """
    p = get_preset(preset)
    if len(p.mpo_depths) < 1 or any(d < 1 for d in p.mpo_depths):
        raise ValueError(f"mpo_depths must be positive layer counts, got {p.mpo_depths!r}")
    depths = sorted(p.mpo_depths)
    deep, middle = depths[-1], depths[len(depths) // 2]
    budget = p.budget
    if budget is None:
        ref = {**p.base_model(), "sharing": "central", "num_hidden_layers": middle}
        budget = count_parameters(ref)[1]
    specs: list[tuple[str, str, dict[str, Any]]] = []
    dense = _dense_like(p, "dense", None, budget)
    specs.append((f"dense-L{dense['num_hidden_layers']}", "dense", dense))
    specs.append((f"albert-L{deep}", "albert", _dense_like(p, "albert", deep, budget)))
    for d in depths:
        specs.append((f"mpo-L{d}", "mpo", _mpo(p, d, True, budget)))
    specs.append((f"mpo-L{deep}-noad", "mpo", _mpo(p, deep, False, budget)))
    arms = []
    for name, family, model in specs:
        unique, non_emb = count_parameters(model)
        if abs(non_emb - budget) > p.tolerance * budget:  # the estimate was linear
            raise ValueError(
                f"arm {name!r} has {non_emb:,} non-embedding parameters, outside "
                f"{p.tolerance:.0%} of the budget {budget:,}"
            )
        arms.append(Arm(name, family, model, unique, non_emb, budget))
    return arms


def replace_preset(preset: Preset, **changes: Any) -> Preset:
    """A copy of ``preset`` with fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(preset, **changes)
