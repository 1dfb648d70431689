"""The study's three ablations, each a set of ordinary run directories in the study folder.

``stability``
    From-scratch pre-training of the middle MPOBERT arm's shape at each of
    ``preset.stability_depths`` layers, for every from-scratch ``init_scheme`` of
    ``preset.stability_schemes`` and learning rate of ``preset.stability_learning_rates``,
    ``preset.stability`` overriding the pre-training settings (short runs). Each run logs
    every layer's gradient norm (``log_layer_grad_norms``); a run whose loss turns
    non-finite is recorded as diverged. Folders: ``OUT/stability/L<d>-<scheme>-lr<lr>/``.
``central-lr``
    The middle MPOBERT arm pre-trained for ``preset.ablation_steps`` steps at each
    ``central_lr_factor`` of ``preset.central_lr_factors``. Folders:
    ``OUT/central-lr/x<factor>/``.
``init``
    A dense BERT of the preset's width and ``preset.init_source_depth`` layers is
    pre-trained for ``preset.init_source_steps`` steps (``OUT/init/source/``); it is then
    converted to the middle MPOBERT arm's shape by each pre-trained initialisation
    (``"clone"``: the official code's method, ``"fit"``: the shared-central fit) and, as the
    control, initialised from scratch, and each continues pre-training for
    ``preset.ablation_steps`` steps with the source's tokenizer (``OUT/init/<method>/``).
    The criterion is the validation MLM loss after the same number of tokens.

Every ablation trains at the preset's pre-training learning rate (not a grid's choice: the
ablations may run in a process of their own, beside the arms).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .arms import Arm
    from .runner import _Context

__all__ = ["EXPERIMENTS", "run_central_lr", "run_init", "run_stability"]

logger = logging.getLogger(__name__)

#: The ablations, in the order a study runs them.
EXPERIMENTS: tuple[str, ...] = ("stability", "central-lr", "init")


def _short(cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """``cfg`` cut to ``steps`` steps, evaluated and saved at its end."""
    return {**cfg, "max_steps": steps, "eval_every": steps, "save_every": steps}


def _middle(arms: list[Arm]) -> Arm:
    """The middle-depth MPOBERT arm with adapters (the budget's reference)."""
    mpo = sorted(
        (a for a in arms if a.family == "mpo" and a.model.get("adapter_size", 0)),
        key=lambda a: a.depth,
    )
    if not mpo:
        raise ValueError("the preset has no MPOBERT arm with adapters to run the ablations on")
    return mpo[len(mpo) // 2]


def run_stability(ctx: _Context, arms: list[Arm], data: dict[str, Any]) -> None:
    """Run (or continue) the stable-initialisation comparison."""

    p = ctx.preset
    ref = _middle(arms)
    for depth in p.stability_depths:
        for scheme in p.stability_schemes:
            for lr in p.stability_learning_rates:
                name = f"L{depth}-{scheme}-lr{lr:g}"
                info = {
                    "preset": p.name,
                    "arm": f"stability-L{depth}-{scheme}",
                    "family": "mpo",
                    "depth": depth,
                    "phase": "stability",
                    "task": None,
                    "mode": None,
                    "seed": 0,
                    "variant": f"lr={lr:g}",
                    "init_scheme": scheme,
                    "learning_rate": float(lr),
                }
                if not ctx.todo(info):
                    continue
                model = {**ref.model, "num_hidden_layers": depth, "init_scheme": scheme}
                cfg = {**ref.pretrain_config(p), **p.stability, "model": model}
                cfg = _short(cfg, int(cfg["max_steps"]))
                cfg.update(learning_rate=float(lr), log_layer_grad_norms=True)
                run_dir = ctx.root / "stability" / name
                ctx.train_or_record_divergence(info, run_dir, cfg, data, ("loss",))


def run_central_lr(ctx: _Context, arms: list[Arm], data: dict[str, Any]) -> None:
    """Run (or continue) the central-tensor learning-rate sweep."""

    p = ctx.preset
    ref = _middle(arms)
    for factor in p.central_lr_factors:
        info = {
            "preset": p.name,
            "arm": ref.name,
            "family": ref.family,
            "depth": ref.depth,
            "phase": "central-lr",
            "task": None,
            "mode": None,
            "seed": 0,
            "variant": f"x{factor:g}",
            "central_lr_factor": float(factor),
        }
        if not ctx.todo(info):
            continue
        cfg = _short(ref.pretrain_config(p), p.ablation_steps)
        cfg["central_lr_factor"] = float(factor)
        info["learning_rate"] = float(cfg.get("learning_rate", 0.0))
        run_dir = ctx.root / "central-lr" / f"x{factor:g}"
        ctx.train_or_record_divergence(info, run_dir, cfg, data, ("loss", "accuracy"))


def _source_model(p: Any) -> dict[str, Any]:
    """The dense BERT the init comparison starts from: the preset's width and FFN."""
    return {
        **p.base_model(),
        "sharing": "none",
        "mpo_matrices": [],
        "adapter_size": 0,
        "num_hidden_layers": int(p.init_source_depth),
    }


def convert_source(source_dir: Path, ref: Arm, method: str) -> Any:
    """The ``ref``-shaped MPOBERT built from the source run's last checkpoint by ``method``
    (``"clone"`` or ``"fit"``) through its dense BERT state dict."""
    from ..convert import to_bert_state_dict
    from ..modeling import MPOBertForMaskedLM
    from ..train.checkpoint import resolve_checkpoint

    dense = MPOBertForMaskedLM.from_pretrained(resolve_checkpoint(source_dir, "latest"))
    m = ref.model
    return MPOBertForMaskedLM.from_bert(
        to_bert_state_dict(dense),
        num_hidden_layers=int(m["num_hidden_layers"]),
        init=method,
        num_attention_heads=int(m["num_attention_heads"]),
        sharing="central",
        num_cores=int(m["num_cores"]),
        adapter_size=int(m["adapter_size"]),
    )


def run_init(ctx: _Context, arms: list[Arm], data: dict[str, Any]) -> None:
    """Run (or continue) the initialisation comparison (source, then each method)."""
    from ..train.checkpoint import resolve_checkpoint
    from .runner import _records, _train_run

    p = ctx.preset
    ref = _middle(arms)
    common = {"preset": p.name, "task": None, "mode": None, "seed": 0, "phase": "init"}
    source_dir = ctx.root / "init" / "source"
    info = {
        **common,
        "arm": f"init-source-L{p.init_source_depth}",
        "family": "dense",
        "depth": int(p.init_source_depth),
        "variant": "source",
    }
    if ctx.todo(info):
        cfg = {**ref.pretrain_config(p), "model": _source_model(p)}
        cfg = _short(cfg, p.init_source_steps)
        result = _train_run(source_dir, cfg, data, ctx.callbacks, ctx.device)
        recs = _records(info, result, source_dir, ("loss", "accuracy"), cfg)
        ctx.finish(recs, {**info, "status": "done"})
    for method in p.init_methods:
        info = {
            **common,
            "arm": f"init-{method}-L{ref.depth}",
            "family": "mpo",
            "depth": ref.depth,
            "variant": method,
        }
        if not ctx.todo(info):
            continue
        run_dir = ctx.root / "init" / method
        cfg = _short(ref.pretrain_config(p), p.ablation_steps)
        model = None
        if method == "scratch":  # the control: same shape and tokenizer, random weights
            cfg["tokenizer"] = str(resolve_checkpoint(source_dir, "latest"))
        else:  # the source's tokenizer (init_from), weights converted from it
            cfg["init_from"] = str(source_dir)
            model = convert_source(source_dir, ref, method)
        result = _train_run(run_dir, cfg, data, ctx.callbacks, ctx.device, model=model)
        ctx.finish(
            _records(info, result, run_dir, ("loss", "accuracy"), cfg), {**info, "status": "done"}
        )
