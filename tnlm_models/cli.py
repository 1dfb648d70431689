"""``tnlm-train``: pre-train, fine-tune, evaluate, predict and plot from the command line.

Examples
--------
::

    tnlm-train pretrain                                   # built-in corpus, small model
    tnlm-train pretrain --data my_texts/ --max-steps 2000 model.num_hidden_layers=12
    tnlm-train finetune --init-from runs/pretrain-XXXX \\
        --data glue/SST-2/train.tsv --valid-data glue/SST-2/dev.tsv
    tnlm-train evaluate runs/finetune-XXXX --data glue/SST-2/dev.tsv
    tnlm-train predict runs/finetune-XXXX --data glue/SST-2/test.tsv --out SST-2.tsv
    tnlm-train plot runs/finetune-XXXX
    tnlm-train study --preset cpu --out runs/study        # resumable; see tnlm_models.study
    torchrun --nproc_per_node=2 -m tnlm_models pretrain --config examples/pretrain_small.toml

Settings come from ``--config FILE`` (TOML or YAML), then the flags, then ``key=value``
overrides (``model.<field>=value`` for model fields). Unknown keys are errors that list the
valid ones.

Bad input (a missing file, an unknown key, a device torch cannot use, a core-only install)
is answered with one line, ``tnlm-train: error: <message>``, on stderr and exit status 2.
This module imports nothing of torch at import time, so that it can say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import functools
import inspect
import json
import logging
import math
import os
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["UsageError", "main"]

PROG = "tnlm-train"
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")
#: top-level modules of the ``[models]`` extra (``import yaml`` is PyYAML)
_MODELS_EXTRA = ("torch", "safetensors", "tokenizers", "tqdm", "yaml", "matplotlib")


#: operating-system errors that describe the machine (reported in one line, exit status 1)
_ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
)


class UsageError(ValueError):
    """Bad command-line input found before any work is done (a path, a device, ...)."""


class _ArgumentError(Exception):
    """An argparse error, reported as one line instead of usage + message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------- overrides
def _is_override(token: str) -> bool:
    """``KEY=VALUE`` that is not an existing path (a file may be called ``a=b.txt``)."""
    return bool(_OVERRIDE.match(token)) and not os.path.exists(token)


class _PathsAction(argparse.Action):
    """``--data``/``--valid-data``: paths (repeatable). A ``KEY=VALUE`` token that the
    option's ``nargs`` took from the command line is handed back to the overrides."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        values = list(values) if isinstance(values, list) else [values]
        moved = [v for v in values if _is_override(v)]
        paths = [v for v in values if v not in moved]
        if not paths:
            parser.error(f"{option_string} expects a path, got only the override(s) {moved}")
        setattr(namespace, self.dest, list(getattr(namespace, self.dest) or []) + paths)
        namespace.moved_overrides = list(getattr(namespace, "moved_overrides", [])) + moved


class _ResumeAction(argparse.Action):
    """``--resume [CKPT]``: a ``KEY=VALUE`` token after it is an override, not CKPT."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if values is None or _is_override(values):
            if values is not None:
                moved = list(getattr(namespace, "moved_overrides", []))
                namespace.moved_overrides = moved + [values]
            values = True
        setattr(namespace, self.dest, values)


def _ordered_overrides(argv: Sequence[str], found: Sequence[str]) -> list[str]:
    """``found`` in the order the tokens appear on the command line (later wins)."""
    left = Counter(found)
    out = []
    for token in argv:
        if left[token] > 0:
            left[token] -= 1
            out.append(token)
    return out + list(left.elements())


# ---------------------------------------------------------------------------- help texts
_TSV_HELP = """\
TSV files (tab-separated; encoding=... if not UTF-8). Every GLUE task's layout is
recognised by its first row:
  CoLA     4 columns, no header (source, label, author's label, sentence)
  SST-2    sentence<TAB>label
  MRPC     Quality<TAB>#1 ID<TAB>#2 ID<TAB>#1 String<TAB>#2 String
  STS-B    ...<TAB>sentence1<TAB>sentence2<TAB>score      (regression=true)
  QQP      id<TAB>qid1<TAB>qid2<TAB>question1<TAB>question2<TAB>is_duplicate
  MNLI     index<TAB>...<TAB>sentence1<TAB>sentence2<TAB>...<TAB>gold_label
  QNLI     index<TAB>question<TAB>sentence<TAB>label
  RTE/WNLI index<TAB>sentence1<TAB>sentence2<TAB>label
  test files: the same header without the label (SST-2/CoLA: index<TAB>sentence)
Other files: give the columns explicitly, by 0-based index or header name:
  text_a_column=... [text_b_column=...] label_column=... [has_header=true]
Labels are the sorted distinct labels of the training file (label_list=[...] to fix them);
regression=true reads real-valued labels."""

_WHERE_HELP = """\
A run directory RUN_DIR (-o, default runs/<task>-<time>) holds metrics.jsonl (one JSON
record per logged step and per validation), checkpoints/ (index.json names the latest and
the best) and, after `tnlm-train plot RUN_DIR`, the curves in RUN_DIR/plots."""


def _fill(text: str) -> str:
    return textwrap.fill(text, width=88)


_DESCRIPTIONS = {
    "pretrain": _fill(
        "Masked-LM pre-training on plain text, one document per line (files or folders; "
        "default: the built-in corpus)."
    )
    + "\n\n"
    + _WHERE_HELP,
    "finetune": _fill(
        "Sequence classification (or regression) on GLUE-style TSV files, usually from a "
        "pre-trained run (--init-from)."
    )
    + "\n\n"
    + _TSV_HELP
    + "\n\n"
    + _WHERE_HELP,
    "evaluate": _fill(
        "Evaluate a checkpoint, or the best checkpoint of a run directory, on labelled data "
        "(default: the run's validation files) and print the metrics as GLUE names them "
        "(--json: a JSON object). Files without labels (GLUE test files) are for `predict`."
    )
    + "\n\n"
    + _TSV_HELP,
    "predict": _fill(
        "Write predictions for a TSV file in GLUE's submission format: a header "
        "'index<TAB>prediction', then one row per example in input order (the label string, "
        "or the score for regression). The input may be a GLUE test file (index<TAB>sentence, "
        "index<TAB>sentence1<TAB>sentence2, ...) or any layout `finetune` accepts (its labels "
        "are ignored). CHECKPOINT is a checkpoint folder or a run directory (its best "
        "checkpoint, else its latest). --out is never overwritten without --force."
    ),
    "plot": _fill(
        "Plot a run's curves from RUN_DIR/metrics.jsonl: loss.png (train and validation), "
        "lr.png and metrics.png (validation metrics), in RUN_DIR/plots unless --out is given."
        " Curves whose values the records lack are skipped and named."
    ),
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("tnlm")
    except Exception:  # not installed (a source checkout on sys.path)
        import tnlm

        return str(tnlm.__version__)


def _parser() -> _Parser:
    p = _Parser(
        prog=PROG,
        description="Pre-train and fine-tune MPOBERT (parameter-shared deep MPO BERT).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Settings: `tnlm-train pretrain --list-keys`; docs/training.md.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter
    for name, short in (
        ("pretrain", "masked-LM pre-training on text (default: the built-in corpus)"),
        ("finetune", "sequence classification on GLUE-style TSV files"),
    ):
        s = sub.add_parser(name, help=short, description=_DESCRIPTIONS[name], formatter_class=raw)
        _add_overrides(s)
        s.add_argument("--config", "-c", help="TOML or YAML config file")
        s.add_argument(
            "--data", nargs="+", action=_PathsAction, metavar="PATH", help="training files/folders"
        )
        s.add_argument(
            "--valid-data", nargs="+", action=_PathsAction, metavar="PATH", help="validation files"
        )
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
            action=_ResumeAction,
            default=None,
            metavar="CKPT",
            help="continue the run in --output-dir (or from CKPT)",
        )
        _add_device(s)
        s.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="a KEY=VALUE override"
        )
        s.add_argument("--quiet", "-q", action="store_true", help="no progress bar or log")
        s.add_argument(
            "--list-keys",
            action="store_true",
            help="list the config keys (type, default, description) and exit",
        )
    e = _checkpoint_command(
        sub, "evaluate", "evaluate a checkpoint or run directory on labelled data"
    )
    e.add_argument(
        "--data",
        nargs="+",
        action=_PathsAction,
        metavar="PATH",
        help="labelled evaluation files (default: the run's validation data)",
    )
    _add_device(e)
    e.add_argument("--json", action="store_true", help="print the metrics as a JSON object")
    e.add_argument("--quiet", "-q", action="store_true")
    pr = _checkpoint_command(
        sub, "predict", "write GLUE submission predictions (index, prediction) for a TSV file"
    )
    pr.add_argument("--data", required=True, metavar="TSV", help="the examples to label")
    pr.add_argument("--out", required=True, metavar="TSV", help="the predictions file to write")
    pr.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _add_device(pr)
    pr.add_argument("--quiet", "-q", action="store_true")
    pl = sub.add_parser(
        "plot",
        help="write PNG curves of a run's loss, learning rate, metrics",
        description=_DESCRIPTIONS["plot"],
        formatter_class=raw,
    )
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding metrics.jsonl)")
    pl.add_argument("--out", help="output folder (default RUN_DIR/plots)")
    pl.add_argument("--quiet", "-q", action="store_true", help="do not list the files written")
    st = sub.add_parser(
        "study",
        help="the MPOBERT study: every arm pre-trained and fine-tuned, resumable",
        description=(
            "Pre-train dense BERT, ALBERT-style and MPOBERT arms at equal non-embedding\n"
            "parameters, fine-tune each on every task folder (full and freeze=central) and\n"
            "write OUT/results.jsonl, OUT/report.md and plots. Run it again to continue.\n"
            "Data default: $TNLM_DATA or ../shared/data when present (tinyshakespeare,\n"
            "wikitext-2, glue/SST-2, CoLA, STS-B), else the built-in corpus and no task."
        ),
        formatter_class=raw,
    )
    st.add_argument("--preset", required=True, help="smoke, cpu or gpu")
    st.add_argument("--out", required=True, metavar="DIR", help="the study folder")
    st.add_argument(
        "--pretrain-data", nargs="+", action=_PathsAction, metavar="PATH", help="text files"
    )
    st.add_argument(
        "--valid-data", nargs="+", action=_PathsAction, metavar="PATH", help="validation text"
    )
    st.add_argument(
        "--task", action="append", default=None, metavar="DIR", help="a GLUE folder (repeat)"
    )
    st.add_argument("--seeds", type=int, help="fine-tuning seeds (default: the preset's)")
    st.add_argument(
        "--arms",
        nargs="+",
        metavar="NAME",
        help="only these arms (e.g. mpo-L12); processes on disjoint arms can share one --out",
    )
    st.add_argument(
        "--phases",
        nargs="+",
        metavar="NAME",
        help="main (the arms), stability, central-lr, init (default: all)",
    )
    _add_device(st)
    st.add_argument("--quiet", "-q", action="store_true", help="no log")
    return p


def _checkpoint_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A subcommand that reads one CHECKPOINT (or run directory) and takes KEY=VALUE
    overrides (``evaluate``, ``predict``)."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=_DESCRIPTIONS[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="checkpoint or run directory (best, else latest)"
    )
    _add_overrides(p)
    return p


def _add_overrides(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. learning_rate=3e-4 model.num_hidden_layers=12 "
        "(anywhere on the line)",
    )


def _add_device(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--device", help="auto (CUDA when available), cpu, cuda or cuda:N; same as device=..."
    )


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [t for t in extra if not _is_override(t)]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    found = (
        list(getattr(args, "set", []))
        + list(getattr(args, "overrides", []))
        + list(getattr(args, "moved_overrides", []))
        + extra
    )
    bad = [t for t in getattr(args, "overrides", []) if not _OVERRIDE.match(t)]
    if bad:
        parser.error(f"expected KEY=VALUE overrides, got {bad}")
    args.overrides = _ordered_overrides(argv, found)
    if getattr(args, "device", None):
        args.overrides.append(f"device={json.dumps(args.device)}")
    return args


# ---------------------------------------------------------------------------- --list-keys
def _doc_parameters(cls: type) -> dict[str, str]:
    """``{name: first sentence}`` from the numpydoc ``Parameters`` section of ``cls``."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = doc.splitlines()
    try:
        start = lines.index("Parameters") + 2
    except ValueError:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    header = ""
    body: list[str] = []

    def flush() -> None:
        text = " ".join(body).strip()
        first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0] if text else ""
        for n in names:
            out[n] = first
        body.clear()

    end = next(  # the line before the next section's underline
        (i - 1 for i in range(start, len(lines)) if lines[i] and set(lines[i]) <= {"-"}),
        len(lines),
    )
    for line in lines[start:end]:
        if line and not line.startswith(" "):
            if header.endswith(","):  # a list of names going on
                header += " " + line
            else:
                flush()
                header = line
            if not header.endswith(","):
                names = [n.strip() for n in header.split(" :")[0].split(",") if n.strip()]
        elif line.strip():
            body.append(line.strip())
    flush()
    return out


def _type_text(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return str(text).replace("typing.", "").replace(" ", "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


@functools.lru_cache(maxsize=1)
def _key_table() -> list[tuple[str, str, str, str]]:
    """``(key, type, default, description)`` of every config key, from the docstrings."""
    from .config import MPOBertConfig
    from .train.config import DEFAULT_MODEL, TrainConfig

    rows = []
    docs = _doc_parameters(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        rows.append((f.name, _type_text(f.type), repr(_default(f)), docs.get(f.name, "")))
    mdocs = _doc_parameters(MPOBertConfig)
    for f in dataclasses.fields(MPOBertConfig):
        default = DEFAULT_MODEL.get(f.name, _default(f))
        if f.name in ("vocab_size", "pad_token_id", "num_labels"):
            continue  # set by the trainer from the tokenizer and the label set
        rows.append((f"model.{f.name}", _type_text(f.type), repr(default), mdocs.get(f.name, "")))
    return rows


def _list_keys() -> str:
    rows = _key_table()
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = min(max(len(r[2]) for r in rows), 24)
    return "\n".join(f"{k:<{w0}}  {t:<{w1}}  {d:<{w2}}  {desc}".rstrip() for k, t, d, desc in rows)


# ---------------------------------------------------------------------------- summaries
def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_time(s: float) -> str:
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m else f"{s:.1f}s"


#: metric keys as the GLUE leaderboard names them
GLUE_NAMES = {
    "accuracy": "Accuracy",
    "f1": "F1",
    "mcc": "Matthews corr.",
    "pearson": "Pearson corr.",
    "spearman": "Spearman corr.",
    "loss": "loss",
    "perplexity": "perplexity",
}


def _metric_value(name: str, value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return str(value)
    if name in ("mcc", "pearson", "spearman") and math.isfinite(value):
        value = min(1.0, max(-1.0, float(value)))  # rounding can step past +-1
    return f"{value:.4f}"


def _metrics_line(metrics: dict[str, Any], prefix: str = "", *, glue: bool = True) -> str:
    """``"Accuracy 0.8000, ..."``: classification metrics named as GLUE reports them."""
    names = GLUE_NAMES if glue else {}
    return ", ".join(f"{prefix}{names.get(k, k)} {_metric_value(k, v)}" for k, v in metrics.items())


def _trainable_note(result: Any, shared: int) -> str:
    """``", 123 train (freeze='central')"`` when fewer than all parameters train, else ``""``."""
    trainable = getattr(result, "num_trainable_parameters", 0)
    if not trainable or trainable >= shared:
        return ""
    return f", {_fmt_int(trainable)} train (freeze={result.config.freeze!r})"


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
        f"{_fmt_int(shared)} parameters ({_fmt_int(unshared)} without cross-layer sharing)"
        + _trainable_note(result, shared),
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
    if result.metrics:
        final.append(_metrics_line(result.metrics, "valid ", glue=task != "pretrain"))
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
        lines.append(
            f"next: tnlm-train predict {result.run_dir} --data TEST.tsv --out predictions.tsv"
            f"   |   tnlm-train plot {result.run_dir}"
        )
    return "\n".join(lines)


def _configure_logging(quiet: bool) -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.WARNING if quiet or rank != 0 else logging.INFO
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tnlm_models").setLevel(level)


# ---------------------------------------------------------------------------- pre-flight
def _check_paths(cfg: Any) -> None:
    """Every path of a training config, checked before any work (tokenizer, data, model)."""
    from .train.distributed import resolve_device

    resolve_device(cfg.device)
    for key in ("train_data", "valid_data"):
        for p in getattr(cfg, key):
            if not os.path.exists(p):
                raise FileNotFoundError(f"data path not found: {p} ({key})")
    for key in ("tokenizer", "init_from"):
        p = getattr(cfg, key)
        if p is not None and not os.path.exists(p):
            raise FileNotFoundError(f"{key} path not found: {p}")
    if isinstance(cfg.resume, str) and not os.path.exists(cfg.resume):
        raise FileNotFoundError(f"resume checkpoint not found: {cfg.resume}")
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir)
        for parent in (out, *out.parents):
            if parent.exists():
                if not parent.is_dir():
                    raise UsageError(
                        f"output_dir {out} cannot be a run directory: {parent} is a file, "
                        "not a folder"
                    )
                break


def _absolute_paths(cfg: Any) -> Any:
    """The input paths made absolute, so that the config saved with the run still names
    the same files when ``evaluate`` reads it from another working directory."""
    return cfg.replace(
        train_data=[os.path.abspath(p) for p in cfg.train_data],
        valid_data=[os.path.abspath(p) for p in cfg.valid_data],
        tokenizer=None if cfg.tokenizer is None else os.path.abspath(cfg.tokenizer),
        init_from=None if cfg.init_from is None else os.path.abspath(cfg.init_from),
    )


def _parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    from .train.config import parse_override

    out: dict[str, Any] = {}
    for item in overrides:
        key, value = parse_override(item)
        if key.startswith("model."):
            raise UsageError(
                f"{item!r}: model settings come from the checkpoint; only training config "
                "keys can be overridden here"
            )
        out[key] = value
    return out


# ---------------------------------------------------------------------------- commands
def _run_training(args: argparse.Namespace) -> int:
    from .train import load_config, train

    if args.list_keys:
        print(_list_keys())
        return 0
    cfg = load_config(args.config, list(args.overrides))
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
    _check_paths(cfg)
    cfg = _absolute_paths(cfg)
    result = train(None, None, cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(_summary(result, args.command))
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from .train import evaluate
    from .train.distributed import resolve_device

    overrides = _parse_overrides(args.overrides)
    resolve_device(str(overrides.get("device", "auto")))
    for p in args.data or []:
        if not os.path.exists(p):
            raise FileNotFoundError(f"data path not found: {p}")
    metrics = evaluate(args.checkpoint, args.data, None, **overrides)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    task = _glue_task(args.data[0]) if args.data and "perplexity" not in metrics else None
    if task is not None and all(k in metrics for k in GLUE_TASK_METRICS[task][1]):
        name, keys = GLUE_TASK_METRICS[task]
        print(f"{name}, as GLUE reports it: {_metrics_line({k: metrics[k] for k in keys})}")
    print(_metrics_line(metrics, glue="perplexity" not in metrics))
    return 0


#: the metrics the GLUE leaderboard reports per task, by data.GLUE_LAYOUTS name
GLUE_TASK_METRICS = {
    "cola": ("CoLA", ("mcc",)),
    "sst-2": ("SST-2", ("accuracy",)),
    "mrpc": ("MRPC", ("f1", "accuracy")),
    "qqp": ("QQP", ("f1", "accuracy")),
    "sts-b": ("STS-B", ("pearson", "spearman")),
    "mnli": ("MNLI", ("accuracy",)),
    "qnli": ("QNLI", ("accuracy",)),
    "pair": ("RTE/WNLI", ("accuracy",)),
}


def _glue_task(path: str) -> str | None:
    """The GLUE task whose layout ``path`` has (by its header), or None."""
    from .data import detect_glue_layout

    try:
        name = detect_glue_layout(path).name
    except (ValueError, OSError):
        return None
    return name if name in GLUE_TASK_METRICS else None


def _run_predict(args: argparse.Namespace) -> int:
    from .train import predict

    overrides = _parse_overrides(args.overrides)
    out = predict(args.checkpoint, args.data, args.out, force=args.force, **overrides)
    if not args.quiet:
        print(out)
    return 0


def _run_plot(args: argparse.Namespace) -> int:
    from .train import plot_run

    def note(message: str) -> None:
        print(f"{PROG}: note: {message}", file=sys.stderr)

    for path in plot_run(args.run_dir, args.out, report=note):
        if not args.quiet:
            print(path)
    return 0


def _study_defaults() -> tuple[list[str], list[str]]:
    """Pre-training files and task folders of the data folder ($TNLM_DATA, else
    ../shared/data), or ``([], [])`` (the built-in corpus, no task) when it is absent."""
    from .train.config import DATA_ENV

    root = Path(os.environ.get(DATA_ENV) or "../shared/data")
    if not root.is_dir():
        return [], []
    texts = [root / "tinyshakespeare" / "input.txt", root / "wikitext-2" / "valid.txt"]
    tasks = [root / "glue" / t for t in ("SST-2", "CoLA", "STS-B")]
    return [str(t) for t in texts if t.is_file()], [str(t) for t in tasks if t.is_dir()]


def _run_study(args: argparse.Namespace) -> int:
    from .study.arms import PRESETS
    from .study.runner import run_study

    if args.preset not in PRESETS:
        raise UsageError(f"unknown --preset {args.preset!r}; expected one of {', '.join(PRESETS)}")
    given = args.overrides[:-1] if args.device else args.overrides  # less --device's own
    if given:
        raise UsageError(f"study takes no KEY=VALUE overrides, got {given}")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    texts, tasks = _study_defaults()
    pretrain = args.pretrain_data if args.pretrain_data is not None else texts
    builtin = args.pretrain_data is None  # the default corpora include the built-in text
    task_dirs = args.task if args.task is not None else tasks
    run_study(
        args.preset,
        args.out,
        pretrain_data=pretrain,
        valid_data=args.valid_data,
        tasks=task_dirs,
        seeds=args.seeds,
        arms=args.arms,
        phases=args.phases,
        device=args.device or "auto",
        builtin_corpus=builtin,
    )
    if not args.quiet:
        print(Path(args.out) / "report.md")
    return 0


def _require(*modules: str) -> None:
    """Import the ``[models]`` modules a command needs, before it does any work."""
    import importlib

    for name in modules:
        importlib.import_module(name)


def _missing_extra(e: ModuleNotFoundError) -> str | None:
    root = (e.name or "").split(".")[0]
    return root if root in _MODELS_EXTRA else None


def _error(message: object) -> None:
    text = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"{PROG}: error: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tnlm-train`` (and ``python -m tnlm_models``).

    Returns
    -------
    int
        0 on success, 2 on bad input (one line on stderr), 1 when the machine refuses a
        write (a full disk, no permission; one line), 3 on a non-finite loss, 130 when
        interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse(argv)
    except _ArgumentError as e:
        _error(e)
        return 2
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else 0
    _configure_logging(getattr(args, "quiet", False))
    commands = {
        "pretrain": _run_training,
        "finetune": _run_training,
        "evaluate": _run_evaluate,
        "predict": _run_predict,
        "plot": _run_plot,
        "study": _run_study,
    }
    needs = {"plot": ("matplotlib",)}.get(
        args.command, ("torch", "safetensors", "tokenizers", "tqdm")
    )
    try:
        _require(*needs)
        return commands[args.command](args)
    except KeyboardInterrupt:
        if args.command in ("pretrain", "finetune"):
            print(
                f"{PROG}: interrupted; the last checkpoint is intact (resume with --resume)",
                file=sys.stderr,
            )
        else:
            print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except FloatingPointError as e:
        _error(e)
        return 3
    except ModuleNotFoundError as e:
        missing = _missing_extra(e)
        if missing is None:
            raise
        _error(
            f"`tnlm-train {args.command}` needs the optional dependency {missing!r}; "
            "install the models extra: pip install 'tnlm[models]'"
        )
        return 2
    except (UsageError, ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        _error(e)
        return 2
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        _error(e)  # a full disk, a read-only folder: the machine's state, not a bug
        return 1
