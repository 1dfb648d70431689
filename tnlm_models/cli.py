"""``tnlm-train``: pre-train, fine-tune, evaluate and plot from the command line.

Examples
--------
::

    tnlm-train pretrain                                   # built-in corpus, small model
    tnlm-train pretrain --data my_texts/ --max-steps 2000 model.num_hidden_layers=12
    tnlm-train finetune --init-from runs/pretrain-XXXX \\
        --data glue/SST-2/train.tsv --valid-data glue/SST-2/dev.tsv
    tnlm-train evaluate runs/finetune-XXXX --data glue/SST-2/dev.tsv
    tnlm-train plot runs/finetune-XXXX
    torchrun --nproc_per_node=2 -m tnlm_models pretrain --config examples/pretrain_small.toml

Settings come from ``--config FILE`` (TOML or YAML), then the flags, then ``key=value``
overrides (``model.<field>=value`` for model fields). Unknown keys are errors that list the
valid ones.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]

_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tnlm-train",
        description="Pre-train and fine-tune MPOBERT (parameter-shared deep MPO BERT).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings: see `tnlm-train pretrain --list-keys`; docs/training.md.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("pretrain", "masked-LM pre-training on text (default: the built-in corpus)"),
        ("finetune", "sequence classification on GLUE-style TSV files"),
    ):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="training config overrides, e.g. learning_rate=3e-4 model.num_hidden_layers=12",
        )
        s.add_argument("--config", "-c", help="TOML or YAML config file")
        s.add_argument("--data", nargs="+", metavar="PATH", help="training files or folders")
        s.add_argument("--valid-data", nargs="+", metavar="PATH", help="validation files")
        s.add_argument("--output-dir", "-o", help="run directory (default runs/<run_name>)")
        s.add_argument(
            "--init-from", metavar="CKPT", help="checkpoint or run directory to start from"
        )
        s.add_argument(
            "--tokenizer", metavar="PATH", help="vocab.txt, tokenizer.json or checkpoint"
        )
        s.add_argument("--max-steps", type=int, help="optimizer steps")
        s.add_argument(
            "--resume",
            nargs="?",
            const=True,
            default=None,
            metavar="CKPT",
            help="continue the run in --output-dir (or from CKPT)",
        )
        s.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="same as a positional KEY=VALUE",
        )
        s.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log")
        s.add_argument("--list-keys", action="store_true", help="list the config keys and exit")
    e = sub.add_parser("evaluate", help="evaluate a checkpoint or run directory")
    e.add_argument("checkpoint", help="checkpoint or run directory (its best checkpoint)")
    e.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    e.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="evaluation files (default: the run's validation data)",
    )
    e.add_argument("--quiet", "-q", action="store_true")
    pl = sub.add_parser("plot", help="write PNG curves of a run's loss, learning rate, metrics")
    pl.add_argument("run_dir")
    pl.add_argument("--out", help="output folder (default RUN_DIR/plots)")
    return p


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_time(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m else f"{s:.1f}s"


def _summary(result: Any, task: str) -> str:
    cfg = result.config
    model = result.model
    mc = model.config
    shared = result.num_parameters
    try:
        unshared = int(model.num_parameters(unique=False))
    except (AttributeError, TypeError):
        unshared = shared
    data = ", ".join(cfg.train_data) if cfg.train_data else "built-in corpus (pydoc_data.topics)"
    verb = "pre-trained" if task == "pretrain" else "fine-tuned"
    lines = [
        f"{verb} {type(model).__name__}: {mc.num_hidden_layers} layers, hidden "
        f"{mc.hidden_size}, sharing={getattr(mc, 'sharing', '?')}, "
        f"{_fmt_int(shared)} parameters ({_fmt_int(unshared)} without cross-layer sharing)",
        f"data: {data}: {_fmt_int(result.num_train_examples)} train / "
        f"{_fmt_int(result.num_valid_examples)} validation examples of <= {cfg.max_seq_length} "
        f"tokens; tokenizer: {result.tokenizer.vocab_size} WordPiece tokens",
        f"steps: {result.step} (batch {cfg.batch_size}, {result.world_size} process(es)); "
        f"{_fmt_int(result.tokens_seen)} tokens in {_fmt_time(result.elapsed_s)} "
        f"({result.tokens_seen / max(result.elapsed_s, 1e-9):,.0f} tokens/s overall)",
    ]
    final = []
    if result.train_loss is not None:
        final.append(f"train loss {result.train_loss:.4f}")
    for k, v in result.metrics.items():
        final.append(f"valid {k} {v:.4f}")
    lines.append("final: " + (", ".join(final) or "-"))
    lines.append(f"run dir: {result.run_dir}")
    if result.checkpoint is not None:
        lines.append(f"checkpoint: {result.checkpoint}")
    if result.best_checkpoint is not None and result.best_checkpoint != result.checkpoint:
        lines.append(f"best checkpoint: {result.best_checkpoint}")
    if task == "pretrain":
        lines.append(
            f"next: tnlm-train finetune --init-from {result.run_dir} --data TRAIN.tsv "
            "--valid-data DEV.tsv   |   tnlm-train plot " + str(result.run_dir)
        )
    else:
        lines.append(f"next: tnlm-train plot {result.run_dir}")
    return "\n".join(lines)


def _configure_logging(quiet: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if quiet or rank != 0 else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tnlm_models").setLevel(level)


def _run_training(args: argparse.Namespace) -> int:
    from .train import TrainConfig, load_config, train

    if args.list_keys:
        print("\n".join(TrainConfig.field_names()))
        return 0
    # "--data a.txt max_steps=5": nargs="+" also takes the override; give it back
    for name in ("data", "valid_data"):
        paths = getattr(args, name) or []
        taken = [p for p in paths if _OVERRIDE.match(p) and not os.path.exists(p)]
        setattr(args, name, [p for p in paths if p not in taken] or None)
        args.overrides = taken + list(args.overrides)
    overrides = list(args.set) + list(args.overrides)
    cfg = load_config(args.config, overrides)
    changes: dict[str, Any] = {"task": args.command}
    if args.data:
        changes["train_data"] = list(args.data)
    if args.valid_data:
        changes["valid_data"] = list(args.valid_data)
    if args.output_dir:
        changes["output_dir"] = args.output_dir
    if args.init_from:
        changes["init_from"] = args.init_from
    if args.tokenizer:
        changes["tokenizer"] = args.tokenizer
    if args.max_steps is not None:
        changes["max_steps"] = args.max_steps
    if args.resume is not None:
        changes["resume"] = args.resume
    if args.quiet:
        changes["progress"] = False
    cfg = cfg.replace(**changes)
    result = train(None, None, cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(_summary(result, args.command))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tnlm-train`` (and ``python -m tnlm_models``).

    Returns
    -------
    int
        0 on success, 2 on bad input, 3 on a non-finite loss, 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    _configure_logging(getattr(args, "quiet", False))
    try:
        if args.command in ("pretrain", "finetune"):
            return _run_training(args)
        if args.command == "evaluate":
            from .train import evaluate, load_config

            cfg = load_config(None, list(args.overrides))
            extra = {k: v for k, v in cfg.to_dict().items() if v != getattr(type(cfg)(), k)}
            metrics = evaluate(args.checkpoint, args.data, None, **extra)
            print(json.dumps(metrics, indent=2))
            return 0
        from .train import plot_run

        for path in plot_run(args.run_dir, args.out):
            print(path)
        return 0
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is intact (resume with --resume)", file=sys.stderr)
        return 130
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
